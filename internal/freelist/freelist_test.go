package freelist

import (
	"runtime"
	"sync"
	"testing"
)

func TestGetPutBounded(t *testing.T) {
	l := New[*[]byte](2)
	if _, ok := l.Get(); ok {
		t.Fatal("empty list handed out a value")
	}
	a, b, c := new([]byte), new([]byte), new([]byte)
	if !l.Put(a) || !l.Put(b) {
		t.Fatal("put into a list with room failed")
	}
	if l.Put(c) {
		t.Fatal("put into a full list succeeded")
	}
	if l.Len() != 2 {
		t.Fatalf("Len = %d, want 2", l.Len())
	}
	got1, _ := l.Get()
	got2, _ := l.Get()
	if got1 != a || got2 != b {
		t.Fatal("did not get back the values put")
	}
	if _, ok := l.Get(); ok {
		t.Fatal("drained list handed out a value")
	}
}

// Unlike a sync.Pool, idle values outlive collections.
func TestSurvivesCollections(t *testing.T) {
	l := New[*[]byte](1)
	b := make([]byte, 1<<16)
	l.Put(&b)
	runtime.GC()
	runtime.GC()
	runtime.GC()
	got, ok := l.Get()
	if !ok || got != &b {
		t.Fatal("idle value lost across collections")
	}
}

// A value is handed to one taker at a time: concurrent takers that write
// their own mark into what they got never see another's mark.
func TestNoSharedValues(t *testing.T) {
	l := New[*[8]int](4)
	for range 4 {
		l.Put(new([8]int))
	}
	var wg sync.WaitGroup
	for g := 1; g <= 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				v, ok := l.Get()
				if !ok {
					v = new([8]int)
				}
				for i := range v {
					v[i] = g
				}
				runtime.Gosched()
				for i := range v {
					if v[i] != g {
						t.Errorf("value shared: slot %d holds %d, want %d", i, v[i], g)
						return
					}
				}
				l.Put(v)
			}
		}()
	}
	wg.Wait()
}

package priority

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond, failing the test if it never holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

func TestSlotsCapWaitsAndHandsOnInOrder(t *testing.T) {
	s := NewSlots(func() int { return 2 })
	ctx := context.Background()
	_, r1, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, r2, _ := s.Acquire(ctx)
	var order []int
	got := make(chan int, 2)
	for i := 3; i <= 4; i++ {
		go func() {
			_, r, err := s.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- i
			_ = r // held until the test ends
		}()
		waitFor(t, "the goroutine over the cap waits", func() bool { return s.Waiting() == i-2 })
	}
	if n := s.InUse(); n != 2 {
		t.Fatalf("%d slots in use with a cap of 2", n)
	}
	r1()
	order = append(order, <-got)
	if s.Waiting() != 1 || s.InUse() != 2 {
		t.Fatalf("after one release: %d waiting, %d in use; want 1 and 2", s.Waiting(), s.InUse())
	}
	r2()
	r2() // a second call gives nothing back
	order = append(order, <-got)
	if order[0] != 3 || order[1] != 4 {
		t.Fatalf("slots granted in order %v, want the longest waiter first [3 4]", order)
	}
	if n := s.InUse(); n != 2 {
		t.Fatalf("%d in use after two hand-overs, want 2", n)
	}
}

func TestSlotsUncappedWhenTheLimitGoes(t *testing.T) {
	var lim atomic.Int64
	lim.Store(1)
	s := NewSlots(func() int { return int(lim.Load()) })
	_, r1, _ := s.Acquire(context.Background())
	done := make(chan struct{}, 3)
	for range 3 {
		go func() {
			if _, _, err := s.Acquire(context.Background()); err != nil {
				t.Error(err)
			}
			done <- struct{}{}
		}()
	}
	waitFor(t, "three waiters", func() bool { return s.Waiting() == 3 })
	lim.Store(0) // the queries went: no cap
	r1()
	for range 3 {
		<-done
	}
	if n := s.InUse(); n != 3 {
		t.Fatalf("%d in use, want the 3 woken when the cap went", n)
	}
}

func TestSlotsWaitEndsWithTheContext(t *testing.T) {
	s := NewSlots(func() int { return 1 })
	_, r1, _ := s.Acquire(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := s.Acquire(ctx)
		errc <- err
	}()
	waitFor(t, "a waiter", func() bool { return s.Waiting() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
	}
	r1()
	if n, w := s.InUse(), s.Waiting(); n != 0 || w != 0 {
		t.Fatalf("%d in use, %d waiting after the holder left; the cancelled waiter leaked", n, w)
	}
}

func TestBlockedLendsTheSlotWhileWaiting(t *testing.T) {
	s := NewSlots(func() int { return 1 })
	ctx, release, _ := s.Acquire(context.Background())
	other := make(chan func(), 1)
	go func() {
		_, r, err := s.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		other <- r
	}()
	waitFor(t, "a waiter", func() bool { return s.Waiting() == 1 })
	resume := Blocked(ctx)
	r := <-other // granted the lent slot
	// Taking it back does not wait, even over the cap: the holder may hold
	// locks the other needs.
	resume()
	if n := s.InUse(); n != 2 {
		t.Fatalf("%d in use after resume, want 2 (the cap is exceeded until a release)", n)
	}
	r()
	release()
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use after both released", n)
	}
	// Without a slot in the context, Blocked does nothing.
	Blocked(context.Background())()
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use after Blocked on a context without a slot", n)
	}
}

func TestBlockedAfterReleaseGivesNothingBack(t *testing.T) {
	s := NewSlots(func() int { return 1 })
	ctx, release, _ := s.Acquire(context.Background())
	release()
	Blocked(ctx)()
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use: Blocked on a released slot took one", n)
	}
}

// The process's cap leaves one P free while queries run, and none when
// there are none.
func TestProcessSlotsCappedOnlyWhileQueriesRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	last := lastInteractive.Load()
	defer lastInteractive.Store(last)
	lastInteractive.Store(0)
	if n := processLimit(); n != 0 {
		t.Fatalf("cap %d without queries, want none", n)
	}
	var g Gate
	end := g.Begin()
	if n := processLimit(); n != 3 {
		t.Fatalf("cap %d with 4 Ps while a query runs, want 3", n)
	}
	end()
	if n := processLimit(); n != 3 {
		t.Fatalf("cap %d right after a query, want 3 for the hold", n)
	}
	lastInteractive.Store(time.Now().Add(-2 * ProcsHold).UnixNano())
	if n := processLimit(); n != 0 {
		t.Fatalf("cap %d a hold after the last query, want none", n)
	}
	runtime.GOMAXPROCS(1)
	end = g.Begin()
	defer end()
	if n := processLimit(); n != 0 {
		t.Fatalf("cap %d with one P, want none", n)
	}
}

// Goroutines of one request that block at once share the lend: the slot
// stays lent until the last of them resumes.
func TestBlockedSharedByConcurrentWaits(t *testing.T) {
	s := NewSlots(func() int { return 1 })
	ctx, release, _ := s.Acquire(context.Background())
	first, second := Blocked(ctx), Blocked(ctx)
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use while two waits lend the slot", n)
	}
	first()
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use while one wait still lends the slot", n)
	}
	second()
	if n := s.InUse(); n != 1 {
		t.Fatalf("%d in use after both waits, want the slot back", n)
	}
	release()
	if n := s.InUse(); n != 0 {
		t.Fatalf("%d in use after release", n)
	}
}

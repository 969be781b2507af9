package priority

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeProcs records the GOMAXPROCS values a Procs sets.
type fakeProcs struct {
	mu  sync.Mutex
	now int
	set chan int
}

func newFakeProcs(p *Procs) *fakeProcs {
	f := &fakeProcs{now: p.base, set: make(chan int, 16)}
	p.set = func(n int) int {
		f.mu.Lock()
		before := f.now
		f.now = n
		f.mu.Unlock()
		f.set <- n
		return before
	}
	return f
}

func (f *fakeProcs) wait(t *testing.T, want int) {
	t.Helper()
	select {
	case got := <-f.set:
		if got != want {
			t.Fatalf("GOMAXPROCS set to %d, want %d", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("GOMAXPROCS never set to %d", want)
	}
}

func TestProcsRaisedWhileQueriesRunAndLoweredAfterTheHold(t *testing.T) {
	p := &Procs{floor: 4, base: 1, hold: time.Minute}
	f := newFakeProcs(p)
	Install(p)
	defer Install(nil)
	var g Gate
	end := g.Begin()
	f.wait(t, 4)
	end()
	end2 := g.Begin() // already raised: no second change
	end2()
	if p.lowerIdle(time.Now()) {
		t.Fatal("lowered right after a query; the hold must pass first")
	}
	if !p.lowerIdle(time.Now().Add(2 * time.Minute)) {
		t.Fatal("not lowered after a quiet hold")
	}
	f.wait(t, 1)
	if p.lowerIdle(time.Now().Add(4 * time.Minute)) {
		t.Fatal("lowered twice")
	}
	g.Begin()()
	f.wait(t, 4)
	if n := p.Changes(); n != 3 {
		t.Fatalf("%d changes, want 3 (raise, lower, raise)", n)
	}
}

func TestProcsRunPutsThemBackAtTheEnd(t *testing.T) {
	p := &Procs{floor: 4, base: 1, hold: time.Hour}
	f := newFakeProcs(p)
	p.touch()
	f.wait(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	cancel()
	<-done
	f.wait(t, 1)
}

func TestNewProcsLeavesAnExplicitGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	if p := NewProcs(CPUs()+1, time.Second); p != nil {
		t.Fatal("GOMAXPROCS set by the operator, yet a Procs would change it")
	}
	t.Setenv("GOMAXPROCS", "")
	if p := NewProcs(CPUs(), time.Second); p != nil {
		t.Fatal("the floor is already met by the CPUs, yet a Procs would change GOMAXPROCS")
	}
	if p := NewProcs(CPUs()+1, time.Second); p == nil || p.base != CPUs() {
		t.Fatalf("NewProcs(%d) = %+v, want one that returns to %d", CPUs()+1, p, CPUs())
	}
}

func TestCPUsIgnoresRaisedProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	want := CPUs()
	runtime.GOMAXPROCS(want + 3)
	if CPUs() != want {
		t.Fatalf("CPUs() = %d after raising GOMAXPROCS to %d, want %d (what the runtime found at start)", CPUs(), want+3, want)
	}
}

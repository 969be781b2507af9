package priority

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Slots caps the goroutines doing CPU-bound ingest and background work
// (decoding and storing export requests, analysing traces) so that, while
// queries are being answered, one Go processor (P) stays free of it. With
// every P busy, a query the network poller has ready waits until a
// goroutine blocks or is preempted, and when none does only the runtime's
// monitor polls the network (every 10 ms): in the live-server runs most
// by-id probes over 5 ms lost their time before the server even woke for
// them (docs/performance.md). Spare Ps alone (Procs) do not keep one idle:
// at 30k spans/s eight concurrent export requests take every P there is.
//
// A capped goroutine waits for a slot; it is never refused, so ingest
// back-pressure stays what it was (acknowledged data is written as
// before, only a little later). Work that blocks while holding a slot
// (a WAL sync) lends it back with Blocked.
//
// A nil *Slots caps nothing.
type Slots struct {
	// limit is the cap now; 0 means none.
	limit func() int

	mu      sync.Mutex
	inUse   int
	waiters []chan struct{} // FIFO; closed when granted a slot
	waited  atomic.Int64    // nanoseconds spent waiting, for metrics
}

// NewSlots returns Slots whose cap is what limit says at each acquisition
// (0: no cap).
func NewSlots(limit func() int) *Slots { return &Slots{limit: limit} }

// process is the process's Slots: Ps are the process's, and every
// tenant's ingest server and analysis worker share them.
var process = NewSlots(processLimit)

// Process returns the process's Slots, capped at GOMAXPROCS−1 while
// interactive requests run and for ProcsHold after the last one (queries
// come in bursts, and the P must be free before the next one arrives),
// uncapped otherwise or with a single P.
func Process() *Slots { return process }

// interactive counts the requests of every Gate in flight, and
// lastInteractive is when the last one began or ended (unix ns): the cap
// applies whether or not a Procs is installed (a machine with 4 CPUs
// needs no raise but still wants its free P).
var (
	interactive     atomic.Int64
	lastInteractive atomic.Int64
)

func noteInteractive(delta int64) {
	interactive.Add(delta)
	lastInteractive.Store(time.Now().UnixNano())
}

// QueriesRecently reports whether interactive requests run now or ran
// within ProcsHold.
func QueriesRecently() bool {
	return interactive.Load() > 0 || time.Now().UnixNano()-lastInteractive.Load() < int64(ProcsHold)
}

func processLimit() int {
	if !QueriesRecently() {
		return 0
	}
	if n := runtime.GOMAXPROCS(0); n > 1 {
		return n - 1
	}
	return 0
}

// holder is the slot a context carries, so that code far below the
// acquisition (the WAL) can lend it while it blocks.
type holder struct {
	s *Slots
	// held: the slot is counted in s.inUse; lenders: the goroutines of
	// the request blocked in Blocked while it is lent (a request may wait
	// on several things at once, such as forwards to several peers). Both
	// guarded by s.mu.
	held    bool
	lenders int
}

type holderKey struct{}

// Acquire waits for a slot and returns a context that carries it and the
// function that gives it back (call it once). It fails only when ctx ends
// first.
func (s *Slots) Acquire(ctx context.Context) (context.Context, func(), error) {
	if s == nil {
		return ctx, func() {}, nil
	}
	if err := s.take(ctx); err != nil {
		return ctx, nil, err
	}
	h := &holder{s: s, held: true}
	var once sync.Once
	return context.WithValue(ctx, holderKey{}, h), func() {
		once.Do(func() {
			s.mu.Lock()
			held := h.held
			h.held = false
			s.mu.Unlock()
			if held {
				s.release()
			}
		})
	}, nil
}

// take waits for a slot.
func (s *Slots) take(ctx context.Context) error {
	s.mu.Lock()
	if lim := s.limit(); lim <= 0 || s.inUse < lim {
		s.inUse++
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, ch)
	s.mu.Unlock()
	start := time.Now()
	defer func() { s.waited.Add(int64(time.Since(start))) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for i, w := range s.waiters {
			if w == ch {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				s.mu.Unlock()
				return ctx.Err()
			}
		}
		s.mu.Unlock()
		// Granted meanwhile: hand it on.
		s.release()
		return ctx.Err()
	}
}

// release gives a slot back and grants it, and any the cap now allows
// (it may have risen or gone), to the longest waiters.
func (s *Slots) release() {
	s.mu.Lock()
	s.inUse--
	lim := s.limit()
	for len(s.waiters) > 0 && (lim <= 0 || s.inUse < lim) {
		close(s.waiters[0])
		s.waiters[0] = nil
		s.waiters = s.waiters[1:]
		s.inUse++
	}
	s.mu.Unlock()
}

// InUse is the number of slots held.
func (s *Slots) InUse() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inUse
}

// Waiting is the number of goroutines waiting for a slot.
func (s *Slots) Waiting() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}

// Waited is the total time goroutines waited for a slot.
func (s *Slots) Waited() time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(s.waited.Load())
}

// Blocked lends the slot ctx carries (if any) while its goroutine blocks
// on something other than the CPU; the returned function takes it back.
// Goroutines of one request that block at the same time share the lend:
// the slot comes back when the last of them resumes. Taking it back never
// waits: the caller may hold locks that a slot holder needs next, and a
// wait there could deadlock. The cap is then exceeded until the next
// release, by the goroutines that came back at once.
func Blocked(ctx context.Context) (resume func()) {
	h, _ := ctx.Value(holderKey{}).(*holder)
	if h == nil {
		return func() {}
	}
	h.s.mu.Lock()
	switch {
	case h.held:
		h.held, h.lenders = false, 1
		h.s.mu.Unlock()
		h.s.release()
	case h.lenders > 0:
		h.lenders++
		h.s.mu.Unlock()
	default: // given back already
		h.s.mu.Unlock()
		return func() {}
	}
	return func() {
		h.s.mu.Lock()
		if h.lenders--; h.lenders == 0 {
			h.s.inUse++
			h.held = true
		}
		h.s.mu.Unlock()
	}
}

package priority

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// MinProcs is the number of Go processors (Ps) a server runs with while
// queries are being answered, even on one CPU. With a single P a query
// that the network poller wakes waits until the goroutine holding the P
// blocks, is preempted (every 10 ms) or, when that goroutine sits in a
// blocking system call (the WAL's fdatasync, a block write), until the
// runtime's monitor takes the P back, which it checks every 20 µs to
// 10 ms: at 30k spans/s on one core that put trace by id at 25–300 ms p99.
// With spare Ps the query runs at once and the kernel's scheduler, which
// favours a thread that just woke, shares the CPU between the threads.
// Four rather than two because a WAL sync and a long CPU-bound stretch (a
// cut, a block conversion) can hold two Ps at the same moment.
const MinProcs = 4

// ProcsHold is how long spare Ps stay after the last query: long enough
// that a person clicking through the UI keeps them, short enough that
// ingest alone runs on the CPUs it has.
const ProcsHold = 10 * time.Second

// cpus is what the runtime chose at start: the CPUs the process may run
// on (affinity, cgroup limit) or the GOMAXPROCS environment variable.
var cpus = runtime.GOMAXPROCS(0)

// CPUs is the number of CPUs the process may use, as the runtime found
// them at start, whatever Procs did since. Work that sizes itself to the
// hardware (parallel reads, CPU shares) uses it, not GOMAXPROCS.
func CPUs() int { return cpus }

// Procs raises GOMAXPROCS to a floor while queries run and for a hold
// after the last one, and puts it back to the CPUs the runtime found
// otherwise. Spare Ps are not free on one CPU: at the maximum ingest rate
// they cost ~15 % more CPU per span and ~45 MB more peak RSS (idle Ps
// woken to look for work, one more GC worker thread), so they are held
// only while someone waits for an answer (docs/performance.md).
// GOMAXPROCS is process-wide: only the process's owner makes and
// installs one.
type Procs struct {
	floor, base int
	hold        time.Duration
	set         func(int) int // runtime.GOMAXPROCS; a fake in tests

	mu      sync.Mutex
	raised  bool // asked for floor (the change itself runs in the background)
	last    time.Time
	changes int
}

// installed is the process's Procs, touched by every Gate: tenants' own
// servers have their own gates, and the processors are the process's.
var installed atomic.Pointer[Procs]

// Install makes p the Procs every Gate's requests raise (nil: none).
func Install(p *Procs) { installed.Store(p) }

// NewProcs returns nil (nothing to do; a nil *Procs is ready) when the
// process already has floor CPUs or the GOMAXPROCS environment variable
// fixes the count: an operator's explicit choice, and the way to keep one
// P always (GOMAXPROCS=1).
func NewProcs(floor int, hold time.Duration) *Procs {
	if cpus >= floor || os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	return &Procs{floor: floor, base: cpus, hold: hold, set: runtime.GOMAXPROCS}
}

// touch records interactive work now and raises the Ps if they are not.
// The change runs on its own goroutine: GOMAXPROCS stops the world and
// waits for a running garbage collection to finish, which the query that
// asked must not wait for.
func (p *Procs) touch() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.last = time.Now()
	raise := !p.raised
	p.raised = true
	if raise {
		p.changes++
	}
	p.mu.Unlock()
	if raise {
		go p.set(p.floor)
	}
}

// lowerIdle puts the Ps back when no query came for the hold. It reports
// whether it did.
func (p *Procs) lowerIdle(now time.Time) bool {
	p.mu.Lock()
	lower := p.raised && now.Sub(p.last) >= p.hold
	if lower {
		p.raised = false
		p.changes++
		// Under the lock, so a raise that follows cannot be overtaken.
		p.set(p.base)
	}
	p.mu.Unlock()
	return lower
}

// Run lowers the Ps after each quiet hold until ctx ends, then leaves
// them as the runtime found them.
func (p *Procs) Run(ctx context.Context) {
	if p == nil {
		return
	}
	t := time.NewTicker(p.hold / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.raised = false
			p.set(p.base)
			p.mu.Unlock()
			return
		case now := <-t.C:
			p.lowerIdle(now)
		}
	}
}

// Changes is how many times the Ps were raised or lowered.
func (p *Procs) Changes() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changes
}

package server

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/ratelog"
	"github.com/tracedx/tracedx/internal/store"
)

// errMemory and errAnalysisQueue are admission refusals; like the store's
// they wrap store.ErrOverloaded, which clients are told to retry.
var (
	errMemory        = fmt.Errorf("memory over budget (admission.heap_fraction of memory_limit): %w", store.ErrOverloaded)
	errAnalysisQueue = fmt.Errorf("analysis queue full (analysis.queue_spans): %w", store.ErrOverloaded)
)

// admission decides, before an ingest request is read, whether the server
// can take it. Without it, load beyond what the server sustains went into
// latency and memory (decoded requests queueing for the store) and into
// traces skipped by the detectors, and exporters never saw a retryable
// answer. Refusals are retryable (503 + Retry-After, UNAVAILABLE +
// RetryInfo), counted by reason, and logged at most every logEvery.
type admission struct {
	store     interface{ Admit() error }
	heap      func() heapStats
	fraction  float64
	queueFull func() bool // nil: the queue does not gate ingest

	// memoryWait is how long a request over the memory budget waits for
	// the heap to come back under it (admission.memory_wait); at most
	// maxMemoryWaiters wait at once, the others are refused at once.
	memoryWait time.Duration
	waiters    atomic.Int32
	// gcEnded waits at most d for a collection to end; false if none did.
	gcEnded func(d time.Duration) bool
	// collect runs a collection (runtime.GC) for a wait that found the
	// live heap figure stale; collecting keeps it to one at a time and
	// lastCollect (unix ns) to one per minCollectEvery.
	collect     func()
	collecting  atomic.Bool
	lastCollect atomic.Int64
	now         func() time.Time

	refused *prometheus.CounterVec
	waited  *prometheus.CounterVec
	// forced and forcedSeconds count the collections collectStale ran
	// and the time they took.
	forced, forcedSeconds prometheus.Counter
	log                   *slog.Logger
	logged                ratelog.Limiter
}

const admissionLogEvery = 10 * time.Second

func newAdmission(cfg config.Admission, st interface{ Admit() error }, queueFull func() bool, log *slog.Logger, reg prometheus.Registerer) *admission {
	a := &admission{store: st, heap: newHeapReader().read, fraction: cfg.HeapFraction, log: log.With("component", "admission"),
		memoryWait: cfg.MemoryWait, gcEnded: collections.wait, collect: runtime.GC, now: time.Now,
		logged: ratelog.Limiter{Every: admissionLogEvery},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_admission_refused_total",
			Help: "Ingest requests refused with a retryable status, by the budget that was exceeded (memory, analysis_queue, head, disk_full, disk_budget)."},
			[]string{"reason"}),
		waited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_admission_memory_waits_total",
			Help: "Ingest requests that found the heap over the memory budget and waited (admission.memory_wait), by outcome (admitted, refused)."},
			[]string{"outcome"}),
		forced: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_admission_forced_gcs_total",
			Help: "Garbage collections run by ingest requests waiting for memory, when the live heap figure was older than 100 ms."}),
		forcedSeconds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_admission_forced_gc_seconds_total",
			Help: "Time the forced garbage collections (tracedx_admission_forced_gcs_total) took, summed."})}
	if cfg.AnalysisQueue {
		a.queueFull = queueFull
	}
	reg.MustRegister(a.refused, a.waited, a.forced, a.forcedSeconds)
	return a
}

// maxMemoryWaiters bounds the requests waiting for memory at once. An
// OTLP/HTTP request waits unread (its body stays in the socket), but gRPC
// has received a waiting request's message into its buffers already.
const maxMemoryWaiters = 64

// staleAfter is how long a wait lets the live heap figure stand before it
// runs a collection itself. The figure is the last collection's, and the
// next one comes only after enough allocation: with every request
// waiting and background work done, nothing allocates, and requests
// waited out memory_wait on a figure 50 MB above what a collection then
// found. minCollectEvery bounds what a heap truly over budget costs in
// forced collections (at the maximum rate the collector marks ~5 % of
// the core at 2-3 collections a second, ~20 ms each).
const (
	staleAfter      = 100 * time.Millisecond
	minCollectEvery = 250 * time.Millisecond
)

// Admit returns nil, or why the request is refused.
func (a *admission) Admit() error {
	err := a.check()
	if err == nil {
		return nil
	}
	if errors.Is(err, errMemory) && a.memoryWait > 0 {
		err = a.waitForMemory()
		if err == nil {
			return nil
		}
	}
	reason := refusalReason(err)
	a.refused.WithLabelValues(reason).Inc()
	if held, ok := a.logged.Allow(time.Now()); ok {
		attrs := []any{"reason", reason, "err", err, "refused_since_last_log", held}
		if reason == "memory" {
			// Which of the two heap figures was over tells a live set too
			// large from a collector that lags behind the allocations.
			h := a.heap()
			attrs = append(attrs, "live_heap_bytes", h.live, "heap_in_use_bytes", h.inUse, "memory_limit_bytes", h.limit)
		}
		a.log.Warn("refusing ingest, clients are asked to retry", attrs...)
	}
	return err
}

// waitForMemory holds a request that found the heap over budget until a
// collection brings it back under, at most memoryWait, and returns what
// admission then says. Refused at once, a sender retries at once or after
// Retry-After: at the maximum rate most requests were refused, and
// reading their bodies to keep the connections open took a tenth of the
// server's CPU while the heap was released a collection later anyway.
func (a *admission) waitForMemory() error {
	if a.waiters.Add(1) > maxMemoryWaiters {
		a.waiters.Add(-1)
		return errMemory
	}
	defer a.waiters.Add(-1)
	err := errMemory
	for deadline := a.now().Add(a.memoryWait); errors.Is(err, errMemory); {
		left := deadline.Sub(a.now())
		if left <= 0 {
			break
		}
		if !a.gcEnded(min(left, staleAfter)) && left > staleAfter {
			a.collectStale()
		}
		err = a.check()
	}
	outcome := "admitted"
	if err != nil {
		outcome = "refused"
	}
	a.waited.WithLabelValues(outcome).Inc()
	return err
}

// collectStale runs a collection unless one is running for another
// waiting request or one was forced less than minCollectEvery ago.
func (a *admission) collectStale() {
	now := a.now().UnixNano()
	if now-a.lastCollect.Load() < int64(minCollectEvery) || !a.collecting.CompareAndSwap(false, true) {
		return
	}
	defer a.collecting.Store(false)
	a.lastCollect.Store(now)
	a.collect()
	a.forced.Inc()
	a.forcedSeconds.Add(time.Duration(a.now().UnixNano() - now).Seconds())
}

func (a *admission) check() error {
	if a.store != nil {
		if err := a.store.Admit(); err != nil {
			return err
		}
	}
	if a.fraction > 0 && a.heap().overBudget(a.fraction) {
		return errMemory
	}
	if a.queueFull != nil && a.queueFull() {
		return errAnalysisQueue
	}
	return nil
}

func refusalReason(err error) string {
	switch {
	case errors.Is(err, errMemory):
		return "memory"
	case errors.Is(err, errAnalysisQueue):
		return "analysis_queue"
	case errors.Is(err, store.ErrDiskFull):
		return "disk_full"
	case errors.Is(err, store.ErrDiskBudget):
		return "disk_budget"
	}
	return "head"
}

// heapStats are the runtime's heap figures admission compares.
type heapStats struct {
	live  uint64 // marked live by the last collection
	inUse uint64 // heap objects now, garbage not yet swept included
	limit uint64 // the soft memory limit; 0: none
}

// overBudget reports whether the live heap is over fraction of the memory
// limit, or the heap in use over the limit itself; never without a limit.
func (h heapStats) overBudget(fraction float64) bool {
	return h.limit > 0 && (float64(h.live) > fraction*float64(h.limit) || h.inUse > h.limit)
}

// conversionReserve is the share of the memory limit kept free below
// admission's budget for a level-0 conversion (~40-50 MB at 64 inputs,
// a fifth of the default 256 MiB limit).
const conversionReserve = 0.2

// memoryTight tells the engine when its conversions should wait: while
// the live heap is over admission's budget less conversionReserve (128
// MiB of the default 256 MiB limit), so a conversion started at the end of
// a burst waits for the head and the cold tier to be released instead of
// adding to them. Nil when admission has no memory budget.
func memoryTight(cfg config.Admission) func() bool {
	if cfg.HeapFraction <= 0 {
		return nil
	}
	fraction := max(cfg.HeapFraction-conversionReserve, cfg.HeapFraction/2)
	read := newHeapReader().read
	return func() bool { return read().overBudget(fraction) }
}

// heapReader reads runtime/metrics at most every heapReadEvery: requests
// arrive by the thousand per second, the heap moves slower.
type heapReader struct {
	mu      sync.Mutex
	at      time.Time
	gen     uint64 // collections.count() when last read
	last    heapStats
	samples []metrics.Sample
}

const heapReadEvery = 10 * time.Millisecond

func newHeapReader() *heapReader {
	return &heapReader{samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/gomemlimit:bytes"}}}
}

func (h *heapReader) read() heapStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now, gen := time.Now(), collections.count(); now.Sub(h.at) >= heapReadEvery || gen != h.gen {
		h.at, h.gen = now, gen
		metrics.Read(h.samples)
		h.last = heapStats{live: uint64Of(h.samples[0]), inUse: uint64Of(h.samples[1]), limit: uint64Of(h.samples[2])}
		if h.last.limit == math.MaxInt64 {
			h.last.limit = 0
		}
	}
	return h.last
}

func uint64Of(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// collections tells waiting requests when a garbage collection has ended,
// so that one over the memory budget is admitted as soon as a collection
// finds the heap back under it, rather than at its next poll: a sender
// refused at once retries within a millisecond, and a wait that polled
// every 10 ms took 5-8 % fewer spans than those retries.
var collections = newGCWatch()

// gcWatch hears of each collection through the finalizer of an
// unreachable sentinel, which re-arms itself: the finalizer runs once the
// collection that found the sentinel unreachable has marked, when
// /gc/heap/live holds its figure.
type gcWatch struct {
	mu    sync.Mutex
	ended chan struct{} // closed when the next collection ends
	n     atomic.Uint64
}

// gcSentinel has a pointer so that it is not a tiny allocation, whose
// finalizer may wait for its neighbours'.
type gcSentinel struct {
	_ *byte
	_ [16]byte
}

func newGCWatch() *gcWatch {
	w := &gcWatch{ended: make(chan struct{})}
	w.arm()
	return w
}

func (w *gcWatch) arm() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		w.n.Add(1)
		w.mu.Lock()
		close(w.ended)
		w.ended = make(chan struct{})
		w.mu.Unlock()
		w.arm()
	})
}

// count is the number of collections heard of.
func (w *gcWatch) count() uint64 { return w.n.Load() }

// wait waits at most d for the next collection to end.
func (w *gcWatch) wait(d time.Duration) bool {
	w.mu.Lock()
	ended := w.ended
	w.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ended:
		return true
	case <-t.C:
		return false
	}
}

package server

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/metrics"
	"sync"
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

	refused *prometheus.CounterVec
	log     *slog.Logger
	logged  ratelog.Limiter
}

const admissionLogEvery = 10 * time.Second

func newAdmission(cfg config.Admission, st interface{ Admit() error }, queueFull func() bool, log *slog.Logger, reg prometheus.Registerer) *admission {
	a := &admission{store: st, heap: newHeapReader().read, fraction: cfg.HeapFraction, log: log.With("component", "admission"),
		logged: ratelog.Limiter{Every: admissionLogEvery},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_admission_refused_total",
			Help: "Ingest requests refused with a retryable status, by the budget that was exceeded (memory, analysis_queue, head, disk_full, disk_budget)."},
			[]string{"reason"})}
	if cfg.AnalysisQueue {
		a.queueFull = queueFull
	}
	reg.MustRegister(a.refused)
	return a
}

// Admit returns nil, or why the request is refused.
func (a *admission) Admit() error {
	err := a.check()
	if err == nil {
		return nil
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
	if now := time.Now(); now.Sub(h.at) >= heapReadEvery {
		h.at = now
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

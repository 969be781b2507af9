// Package sampling decides, once a trace is complete and diagnosed,
// whether its spans are worth keeping (tail sampling): every trace with an
// error, with a finding of a chosen severity, or slower than its
// endpoint's usual percentile, and of the rest a share per endpoint with a
// floor per minute, so rare endpoints keep examples. The metrics,
// baselines and findings have already counted the trace by then; only its
// spans go.
package sampling

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Reason says why a trace was kept, or that it was dropped.
type Reason string

const (
	Error Reason = "error"
	// Finding: a detector found a problem of at least the configured severity.
	Finding Reason = "finding"
	// Slow: slower than its endpoint's usual percentile.
	Slow Reason = "slow"
	// Unanalysed: the detectors skipped the trace (load shedding), so it
	// is kept rather than judged blind.
	Unanalysed Reason = "unanalysed"
	// EndpointMinimum: kept so its endpoint has its examples this minute.
	EndpointMinimum Reason = "endpoint_minimum"
	// Rate: in the configured share of healthy traces.
	Rate Reason = "rate"
	// Dropped: not kept; the spans leave storage.
	Dropped Reason = "dropped"
)

// Policy is what keeps a trace.
type Policy struct {
	KeepErrors bool
	// KeepFindings is the lowest severity of a finding that keeps its
	// trace ("": findings keep nothing).
	KeepFindings analyze.Severity
	// KeepSlowerThan is "p50" or "p95": a trace whose root took longer
	// than that percentile of its endpoint's baseline is kept ("": off).
	KeepSlowerThan string
	// Rate is the share of the other traces kept, decided by trace id so
	// every node would agree.
	Rate float64
	// EndpointRates overrides Rate per endpoint, keyed "service operation"
	// of the root span.
	EndpointRates map[string]float64
	// MinPerMinute keeps at least this many traces per endpoint (root
	// service and operation) per minute.
	MinPerMinute int
	// MaxFindingTracesPerMinute, when > 0, caps the traces a finding kind
	// keeps per endpoint per minute: a standing problem (an N+1 on every
	// request) keeps examples, not every trace. The findings themselves are
	// all stored either way. 0: every trace with a finding is kept.
	MaxFindingTracesPerMinute int
}

// Baselines gives an endpoint's usual duration (baseline.Baselines).
type Baselines interface {
	OperationDuration(service, operation string) (analyze.Baseline, bool)
}

// minBaselineSamples is how many traces a baseline needs before "slower
// than usual" means anything.
const minBaselineSamples = 20

// Trace is what the decision looks at.
type Trace struct {
	ID                 model.TraceID
	Service, Operation string // of the root span
	Duration           time.Duration
	Errors             int
	// Analysed: the detectors ran; Findings are theirs.
	Analysed bool
	Findings []analyze.Finding
}

// Sampler decides and remembers recent decisions. Safe for concurrent use.
type Sampler struct {
	policy    Policy
	baselines Baselines
	decisions *prometheus.CounterVec

	mu       sync.Mutex
	minute   int64
	perEP    map[string]int // traces kept this minute per endpoint
	perKind  map[string]int // traces kept this minute per endpoint and finding kind
	recent   map[model.TraceID]Reason
	ring     []model.TraceID // recent's ids, oldest evicted first
	ringNext int
}

// New returns a sampler remembering the reasons of the last remember
// traces, and registers its counter with reg (nil: none).
func New(p Policy, b Baselines, remember int, reg prometheus.Registerer) *Sampler {
	s := &Sampler{policy: p, baselines: b, perEP: map[string]int{}, perKind: map[string]int{},
		recent: make(map[model.TraceID]Reason, remember), ring: make([]model.TraceID, max(remember, 1)),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_sampling_decisions_total",
			Help: "Completed traces by tail-sampling decision: the reason a trace was kept, or dropped."}, []string{"reason"})}
	for _, r := range []Reason{Error, Finding, Slow, Unanalysed, EndpointMinimum, Rate, Dropped} {
		s.decisions.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(s.decisions)
	}
	return s
}

// Decide returns why t is kept, or Dropped.
func (s *Sampler) Decide(t Trace, now time.Time) Reason {
	r := s.judge(t)
	ep := t.Service + "\x00" + t.Operation
	s.mu.Lock()
	if m := now.Unix() / 60; m != s.minute {
		s.minute, s.perEP, s.perKind = m, map[string]int{}, map[string]int{}
	}
	if r == Finding && s.policy.MaxFindingTracesPerMinute > 0 && !s.takeFindingSlot(ep, t.Findings) {
		r = Dropped
	}
	switch {
	case r != Dropped:
	case s.perEP[ep] < s.policy.MinPerMinute:
		r = EndpointMinimum
	case s.inRate(t.ID, s.rateOf(t)):
		r = Rate
	}
	if r != Dropped {
		s.perEP[ep]++
	}
	s.remember(t.ID, r)
	s.mu.Unlock()
	s.decisions.WithLabelValues(string(r)).Inc()
	return r
}

// takeFindingSlot reports whether one of the trace's qualifying finding
// kinds still has room this minute on its endpoint, and takes it.
func (s *Sampler) takeFindingSlot(ep string, findings []analyze.Finding) bool {
	for _, f := range findings {
		if f.Severity.Rank() < s.policy.KeepFindings.Rank() {
			continue
		}
		k := ep + "\x00" + f.Kind
		if s.perKind[k] < s.policy.MaxFindingTracesPerMinute {
			s.perKind[k]++
			return true
		}
	}
	return false
}

// judge applies the reasons that hold whatever else was kept.
func (s *Sampler) judge(t Trace) Reason {
	p := s.policy
	if p.KeepErrors && t.Errors > 0 {
		return Error
	}
	if !t.Analysed {
		return Unanalysed
	}
	if p.KeepFindings != "" {
		for _, f := range t.Findings {
			if f.Severity.Rank() >= p.KeepFindings.Rank() {
				return Finding
			}
		}
	}
	if p.KeepSlowerThan != "" && s.baselines != nil {
		if b, ok := s.baselines.OperationDuration(t.Service, t.Operation); ok && b.Count >= minBaselineSamples {
			limit := b.P95MS
			if p.KeepSlowerThan == "p50" {
				limit = b.P50MS
			}
			if limit > 0 && float64(t.Duration)/1e6 > limit {
				return Slow
			}
		}
	}
	return Dropped
}

// inRate uses the random low half of a W3C trace id, so the choice is
// uniform and the same wherever it is made.
func (s *Sampler) inRate(id model.TraceID, rate float64) bool {
	return rate > 0 && float64(binary.LittleEndian.Uint64(id[8:]))/(1<<64) < rate
}

func (s *Sampler) rateOf(t Trace) float64 {
	if r, ok := s.policy.EndpointRates[t.Service+" "+t.Operation]; ok {
		return r
	}
	return s.policy.Rate
}

func (s *Sampler) remember(id model.TraceID, r Reason) {
	if _, ok := s.recent[id]; !ok {
		if old := s.ring[s.ringNext]; old != (model.TraceID{}) {
			delete(s.recent, old)
		}
		s.ring[s.ringNext] = id
		s.ringNext = (s.ringNext + 1) % len(s.ring)
	}
	s.recent[id] = r
}

// Reason returns the decision about a recent trace ("" when not among the
// remembered ones).
func (s *Sampler) Reason(id model.TraceID) Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recent[id]
}

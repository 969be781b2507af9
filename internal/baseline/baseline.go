// Package baseline learns what is usual from completed traces: the duration
// of each operation (service, span name) and of each statement shape
// (db.system + normalised statement), the span count of traces per entry
// operation, the error share per operation, the calls an operation
// usually makes (its children) and which of them ran at the same time or
// in either order. Detectors read it through analyze.History;
// the cross-trace pattern detectors use the extra methods (SpanCount,
// OperationErrorRate).
//
// Figures are exponentially decayed by trace time (half-life HalfLife,
// default 24 h), so a baseline never needs raw data. Decay is applied lazily
// per key, in steps of 1/64 half-life, so an update costs O(1) almost
// always. Durations use the same log-linear histogram as RED metrics
// (quantiles within ~12%).
//
// "Usual" must not follow an ongoing incident, or a query slowed by lock
// contention becomes its own yardstick and findings soften as the incident
// goes on. So once a key's baseline is established, samples are gathered in
// windows (Window of trace time) and each closed window is judged against
// the baseline before it may enter it (see robust.go): a window whose p50 is
// AnomalyFactor times the usual p50, or whose error share jumps, is held
// out in quarantine. Quarantined data becomes the new normal only once the
// shift has lasted AcceptAfter (default 6 h); when normal windows come back
// for ReleaseAfter, the quarantine is dropped and the baseline never saw the
// incident. Operation durations and error shares, statement durations and
// trace span counts are learnt this way; the usual children of an
// operation are plain decayed figures.
//
// Persistence: a gzip JSON snapshot (baseline.json.gz in Dir) written
// atomically every FlushInterval when something changed, and on Close; a
// kill -9 loses the updates since the last snapshot.
package baseline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Options configure the baselines.
type Options struct {
	// Dir holds baseline.json.gz ("" = memory only).
	Dir string
	// HalfLife of the exponential decay (default 24 h).
	HalfLife time.Duration
	// FlushInterval of the snapshot (default 1 min).
	FlushInterval time.Duration
	// MaxKeys caps each table (operations, statements, entry operations,
	// parents of children); new keys beyond it are ignored (default 50000).
	MaxKeys int
	// MaxChildren caps the distinct children remembered per operation
	// (default 64).
	MaxChildren int
	// Robust is how anomalous windows are kept out of the baselines.
	Robust Robust
}

type key struct{ a, b string }

// dist is a decayed distribution.
type dist struct {
	h    [tsdb.NumBuckets]float32
	n    float64 // decayed sample weight
	errs float64 // decayed failures (operations only)
	sum  float64 // decayed sum of values (µs, or spans for span counts)
	t    int64   // unix ns of the last decay
}

type kid struct {
	calls, present float64
}

type parent struct {
	n     float64 // decayed number of parents seen
	t     int64
	kids  map[key]*kid
	pairs map[[2]key]*pairSeen
}

// pairSeen: how the first calls to two targets (ordered keys) ran, in
// decayed parents.
type pairSeen struct {
	both, together, aFirst, bFirst float64
}

// pairTargets bounds the targets of one parent whose pairs are learnt (the
// first ones called): 16 targets are 120 pairs per trace.
const pairTargets = 16

// Baselines is safe for concurrent use.
type Baselines struct {
	opt Options
	log *slog.Logger

	mu         sync.RWMutex
	ops        map[key]*series
	stmts      map[key]*series
	spanCounts map[key]*series
	children   map[key]*parent
	dirty      bool
	capWarned  bool

	startOnce sync.Once
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

var _ analyze.History = (*Baselines)(nil)

// New opens the baselines, restoring the snapshot in opt.Dir if any.
func New(opt Options, log *slog.Logger) (*Baselines, error) {
	if log == nil {
		log = slog.Default()
	}
	if opt.HalfLife <= 0 {
		opt.HalfLife = 24 * time.Hour
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = time.Minute
	}
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = 50000
	}
	if opt.MaxChildren <= 0 {
		opt.MaxChildren = 64
	}
	opt.Robust = opt.Robust.withDefaults()
	b := &Baselines{opt: opt, log: log, ops: map[key]*series{}, stmts: map[key]*series{},
		spanCounts: map[key]*series{}, children: map[key]*parent{}, done: make(chan struct{})}
	if opt.Dir != "" {
		if err := b.load(); err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
	}
	return b, nil
}

// Start runs the periodic snapshot until ctx ends or Close is called.
func (b *Baselines) Start(ctx context.Context) {
	b.startOnce.Do(func() {
		ctx, b.cancel = context.WithCancel(ctx)
		go func() {
			defer close(b.done)
			periodic.Run(ctx, b.opt.FlushInterval, func(context.Context) error { return b.Flush() },
				func(err error) { b.log.Error("baseline snapshot failed", "err", err) })
		}()
	})
}

// Close stops the background snapshot and writes a final one.
func (b *Baselines) Close() error {
	var err error
	b.closeOnce.Do(func() {
		if b.cancel != nil {
			b.cancel()
			<-b.done
		}
		err = b.Flush()
	})
	return err
}

// decayFactor returns the factor for going from t0 to t, and whether the
// step is large enough to apply now.
func (b *Baselines) decayFactor(t0, t int64) (float64, bool) {
	dt := t - t0
	if dt < int64(b.opt.HalfLife)/64 {
		return 1, false
	}
	return math.Exp2(-float64(dt) / float64(b.opt.HalfLife)), true
}

func (b *Baselines) decayDist(d *dist, t int64) {
	if d.t == 0 {
		d.t = t
		return
	}
	f, ok := b.decayFactor(d.t, t)
	if !ok {
		return
	}
	f32 := float32(f)
	for i := range d.h {
		d.h[i] *= f32
	}
	d.n *= f
	d.errs *= f
	d.sum *= f
	d.t = t
}

func (b *Baselines) addSample(m map[key]*series, k key, v uint64, failed bool, t int64) {
	s := m[k]
	if s == nil {
		if len(m) >= b.opt.MaxKeys {
			b.warnCap()
			return
		}
		s = &series{}
		m[k] = s
	}
	b.observe(s, k, v, failed, t)
}

func (b *Baselines) warnCap() {
	if !b.capWarned {
		b.capWarned = true
		b.log.Warn("baseline table full; new keys are ignored", "max_keys", b.opt.MaxKeys)
	}
}

// update is one trace's contribution, computed outside the lock.
type update struct {
	kind   uint8 // 0 op, 1 stmt
	k      key
	us     uint64
	failed bool
}

type childUpdate struct {
	parent key
	calls  map[key]callsTo
	pairs  []pairObs
}

// callsTo: how many calls a parent made to one target, and the first.
type callsTo struct {
	n     int
	first *analyze.Node
}

// pairObs is how the first calls to targets a < b ran in one parent.
type pairObs struct {
	a, b             key
	together, aFirst bool
}

// ObserveTrace learns from one completed trace (all its spans).
func (b *Baselines) ObserveTrace(spans []model.Span) {
	if len(spans) == 0 {
		return
	}
	tr := analyze.NewTrace(spans)
	var tEnd uint64
	ups := make([]update, 0, len(spans)+8)
	var cups []childUpdate
	for _, n := range tr.Nodes {
		s := n.Span
		if s.EndUnixNano > tEnd {
			tEnd = s.EndUnixNano
		}
		us := s.DurationNano() / 1000
		ups = append(ups, update{kind: 0, k: key{s.Service, s.Name}, us: us, failed: analyze.Failed(n)})
		if analyze.IsDB(n) {
			_, shape := analyze.CallTarget(tr, n)
			ups = append(ups, update{kind: 1, k: key{analyze.DBSystem(s), shape}, us: us})
		}
		if analyze.IsServiceEntry(n) {
			calls := callsUnder(tr, n)
			cups = append(cups, childUpdate{parent: key{s.Service, s.Name}, calls: calls, pairs: pairsOf(calls)})
		}
	}
	var root key
	hasRoot := len(tr.Roots) > 0 && tr.Roots[0].Parent == nil && !tr.Roots[0].Orphan
	if hasRoot {
		root = key{tr.Roots[0].Span.Service, tr.Roots[0].Span.Name}
	}
	t := int64(tEnd)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.dirty = true
	for _, u := range ups {
		if u.kind == 0 {
			b.addSample(b.ops, u.k, u.us, u.failed, t)
		} else {
			b.addSample(b.stmts, u.k, u.us, false, t)
		}
	}
	if hasRoot {
		b.addSample(b.spanCounts, root, uint64(len(spans)), false, t)
	}
	for _, cu := range cups {
		b.addChildren(cu, t)
	}
}

// callsUnder counts the calls a service entry makes itself (not those of
// deeper services), keyed as the detectors key them (analyze.CallTarget),
// with the first call to each target.
func callsUnder(tr *analyze.Trace, n *analyze.Node) map[key]callsTo {
	var out map[key]callsTo
	stack := append([]*analyze.Node(nil), n.Children...)
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if analyze.IsServiceEntry(c) {
			continue
		}
		if analyze.IsCall(c) {
			s, o := analyze.CallTarget(tr, c)
			if out == nil {
				out = map[key]callsTo{}
			}
			k := key{s, o}
			ct := out[k]
			ct.n++
			if ct.first == nil || c.Start() < ct.first.Start() {
				ct.first = c
			}
			out[k] = ct
		}
		stack = append(stack, c.Children...)
	}
	return out
}

// pairsOf tells, for each pair of the first pairTargets targets called
// (by their first call), whether the calls ran at the same time or which
// came first: sequential_calls reads it as "these two do not wait for each
// other's answers".
func pairsOf(calls map[key]callsTo) []pairObs {
	if len(calls) < 2 {
		return nil
	}
	keys := make([]key, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return calls[keys[i]].first.Start() < calls[keys[j]].first.Start() })
	keys = keys[:min(len(keys), pairTargets)]
	sort.Slice(keys, func(i, j int) bool { return keys[i].a < keys[j].a || keys[i].a == keys[j].a && keys[i].b < keys[j].b })
	out := make([]pairObs, 0, len(keys)*(len(keys)-1)/2)
	for i, a := range keys {
		for _, b := range keys[i+1:] {
			na, nb := calls[a].first, calls[b].first
			out = append(out, pairObs{a: a, b: b, together: analyze.Concurrent(na, nb), aFirst: na.Start() < nb.Start()})
		}
	}
	return out
}

func (b *Baselines) addChildren(cu childUpdate, t int64) {
	p := b.children[cu.parent]
	if p == nil {
		if len(b.children) >= b.opt.MaxKeys {
			b.warnCap()
			return
		}
		p = &parent{t: t, kids: map[key]*kid{}}
		b.children[cu.parent] = p
	}
	if f, ok := b.decayFactor(p.t, t); ok {
		p.n *= f
		for _, k := range p.kids {
			k.calls *= f
			k.present *= f
		}
		for _, ps := range p.pairs {
			ps.both *= f
			ps.together *= f
			ps.aFirst *= f
			ps.bFirst *= f
		}
		p.t = t
	}
	p.n++
	for k, ct := range cu.calls {
		kd := p.kids[k]
		if kd == nil {
			if len(p.kids) >= b.opt.MaxChildren {
				continue
			}
			kd = &kid{}
			p.kids[k] = kd
		}
		kd.calls += float64(ct.n)
		kd.present++
	}
	for _, po := range cu.pairs {
		k := [2]key{po.a, po.b}
		ps := p.pairs[k]
		if ps == nil {
			if len(p.pairs) >= 4*b.opt.MaxChildren {
				continue
			}
			if p.pairs == nil {
				p.pairs = map[[2]key]*pairSeen{}
			}
			ps = &pairSeen{}
			p.pairs[k] = ps
		}
		ps.both++
		switch {
		case po.together:
			ps.together++
		case po.aFirst:
			ps.aFirst++
		default:
			ps.bFirst++
		}
	}
}

// CallPair implements analyze.History: how the first calls of the service
// entry (service, operation) to targets a and b ran relative to each
// other.
func (b *Baselines) CallPair(service, operation string, a, c [2]string) (analyze.CallPairStat, bool) {
	ka, kc := key{a[0], a[1]}, key{c[0], c[1]}
	swap := kc.a < ka.a || kc.a == ka.a && kc.b < ka.b
	if swap {
		ka, kc = kc, ka
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	p := b.children[key{service, operation}]
	if p == nil {
		return analyze.CallPairStat{}, false
	}
	ps := p.pairs[[2]key{ka, kc}]
	if ps == nil {
		return analyze.CallPairStat{}, false
	}
	st := analyze.CallPairStat{Parents: ps.both, Together: ps.together, AFirst: ps.aFirst, BFirst: ps.bFirst}
	if swap {
		st.AFirst, st.BFirst = st.BFirst, st.AFirst
	}
	return st, true
}

func toBaseline(d *dist) analyze.Baseline {
	p50, _ := tsdb.Quantile(d.h[:], 0.5)
	p95, _ := tsdb.Quantile(d.h[:], 0.95)
	return analyze.Baseline{P50MS: tsdb.Round3(p50 / 1000), P95MS: tsdb.Round3(p95 / 1000), Count: int(math.Round(d.n))}
}

func (b *Baselines) lookup(m map[key]*series, k key) (analyze.Baseline, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d, ok := b.usual(m[k])
	if !ok {
		return analyze.Baseline{}, false
	}
	return toBaseline(&d), true
}

// OperationDuration implements analyze.History: usual duration of spans
// (service, span name). Count is the decayed number of samples.
func (b *Baselines) OperationDuration(service, operation string) (analyze.Baseline, bool) {
	return b.lookup(b.ops, key{service, operation})
}

// StatementDuration implements analyze.History: usual duration of a
// statement shape, keyed as analyze.CallTarget keys database calls
// (db.system, analyze.NormalizeStatement of the statement).
func (b *Baselines) StatementDuration(dbSystem, shape string) (analyze.Baseline, bool) {
	return b.lookup(b.stmts, key{dbSystem, shape})
}

// UsualChildren implements analyze.History: calls usually made by a service
// entry (service, operation) itself, as (analyze.CallTarget service,
// operation), most present first. MeanCount is calls per parent, Presence
// the share of parents with at least one such call.
func (b *Baselines) UsualChildren(service, operation string) ([]analyze.ChildStat, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	p := b.children[key{service, operation}]
	if p == nil || p.n <= 0 {
		return nil, false
	}
	out := make([]analyze.ChildStat, 0, len(p.kids))
	for k, kd := range p.kids {
		out = append(out, analyze.ChildStat{Service: k.a, Operation: k.b,
			MeanCount: tsdb.Round3(kd.calls / p.n), Presence: tsdb.Round3(math.Min(1, kd.present/p.n))})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Presence != out[j].Presence {
			return out[i].Presence > out[j].Presence
		}
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Operation < out[j].Operation
	})
	return out, true
}

// SpanCountStats describes the usual size of traces of an entry operation.
type SpanCountStats struct {
	P50, P95, Mean float64
	Count          int // decayed number of traces behind the figures
}

// SpanCount returns the usual number of spans of traces whose root is
// (service, operation) — for span_count_regression.
func (b *Baselines) SpanCount(service, operation string) (SpanCountStats, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d, ok := b.usual(b.spanCounts[key{service, operation}])
	if !ok {
		return SpanCountStats{}, false
	}
	p50, _ := tsdb.Quantile(d.h[:], 0.5)
	p95, _ := tsdb.Quantile(d.h[:], 0.95)
	return SpanCountStats{P50: tsdb.Round3(p50), P95: tsdb.Round3(p95), Mean: tsdb.Round3(d.sum / d.n), Count: int(math.Round(d.n))}, true
}

// OperationErrorRate returns the usual share of failed spans (analyze.Failed)
// of (service, operation) and the decayed sample count — for
// error_rate_spike.
func (b *Baselines) OperationErrorRate(service, operation string) (rate float64, count int, ok bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d, ok := b.usual(b.ops[key{service, operation}])
	if !ok {
		return 0, 0, false
	}
	return tsdb.Round6(d.errs / d.n), int(math.Round(d.n)), true
}

// OperationMeanMS returns the decayed mean duration of (service, operation).
func (b *Baselines) OperationMeanMS(service, operation string) (float64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	d, ok := b.usual(b.ops[key{service, operation}])
	if !ok {
		return 0, false
	}
	return tsdb.Round3(d.sum / d.n / 1000), true
}

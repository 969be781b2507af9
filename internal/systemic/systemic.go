// Package systemic detects the patterns that only show across traces
// (shared/patterns.md, "Patterns across traces"): cache_stampede,
// auth_expiry_race, span_count_regression, latency_regression,
// error_rate_spike, new_error_type, missing_service, throughput_drop.
//
// Spans and completed traces are observed (observe.go: ObserveSpans at
// ingest, ObserveSummary per completed trace, ObserveTrace for the few
// traces that need decoding whole; Observe does all three) into
// per-endpoint sliding windows of small time buckets; buckets older than
// the longest window fold into an exponentially decaying baseline, so
// memory stays bounded per endpoint whatever the traffic. Evaluate
// compares windows with baselines and returns findings, one per key while
// the condition lasts (a key that stays quiet for a window closes and may
// open again).
//
// Windows are on the observation clock (when spans are ingested and when
// traces complete), which makes rates immune to late spans; the two
// sub-minute patterns (stampede, auth race) cluster on the spans' own
// timestamps.
//
// With Config.Dir set the state that detection depends on (baselines,
// window buckets, known exception types, open finding keys, the start of
// warmup) is snapshotted there every SnapshotInterval and when Run ends,
// atomically, and restored by New, so a restart neither blinds the
// baseline patterns for MinBaseline, nor relearns exception types, nor
// reports an ongoing finding twice. The downtime is cut out of the
// observation timeline on restore; after a downtime longer than the
// longest window the windows restart empty (see persist.go).
package systemic

import (
	"context"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/attribution"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/model"
)

// Finding is a systemic finding as stored.
type Finding = findingstore.Stored

// Sink receives findings (the findings store implements it). Put hands
// back the ids it gave in fs, which Updater needs.
type Sink interface {
	Put(ctx context.Context, fs []findingstore.Stored) error
}

// Updater is a Sink that can rewrite a finding it stored (the findings
// store: Store.Update), so an open finding shows the figures of the
// condition as it grows rather than as it first fired.
type Updater interface {
	Update(ctx context.Context, fs []findingstore.Stored) error
}

// Detector holds the sliding windows. It is safe for concurrent use.
type Detector struct {
	cfg   Config
	sink  Sink
	log   *slog.Logger
	clock func() time.Time

	mu       sync.Mutex
	started  time.Time
	ops      map[opKey]*series // service-entry spans
	roots    map[opKey]*series // trace roots (flows)
	errTypes map[[2]string]time.Time
	newTypes []newType
	stampede map[[2]string]*ring // (endpoint, cache key)
	auth     map[string]*authState
	pending  map[string]Finding // sub-minute patterns detected in Observe
	open     map[string]*openKey
	// contention keeps recent calls per operation (contention.go).
	contention *contentionTracker
	// scratch of Observe
	misses     []cacheMiss
	svcScratch []string
	verScratch []string
	clockNow   time.Time
	// Culprit knowledge (culprit.go): error origins per failing entry
	// operation, and the operation last seen calling each service.
	origins map[opKey]map[opKey]float64
	callers map[string]opKey
	selfs   map[opKey]map[opKey]*selfAgg
	marks   []selfMark // scratch of observeTrace
	// idScratch indexes the spans of the trace being observed.
	idScratch map[model.SpanID]int

	// cluster, when set, has Run judge the merged patterns on every
	// node's share (merge.go); judged holds the events of each key's last
	// merged judgement.
	cluster *Cluster
	judged  map[string]map[string]bool

	// Persistence (persist.go). lastSeen is the latest observation-clock
	// time of Observe or Evaluate; resumePending marks a restored state
	// whose downtime is cut out at the next of them; windowsFrom, when
	// set, is when windows restarted empty after a long downtime.
	lastSeen      time.Time
	resumePending bool
	resumes       int // resume calls, so capture notices one mid-copy
	windowsFrom   time.Time
	snapMu        sync.Mutex
}

type opKey struct{ service, op string }

type openKey struct {
	last  time.Time
	close time.Duration
	// The stored finding (stored once the sink gave its id): what queries
	// select it by stays as it opened; rev versions were written since.
	stored                    bool
	id                        uint64
	opened                    time.Time
	trace, service, operation string
	rev                       int
	// wrote is when the version the store shows was written, shown its
	// figure (magnitude) and sev its severity; next is the version to
	// write (the latest, or the peak for bursts) and dirty says it
	// differs enough from the shown one to be written.
	wrote time.Time
	shown float64
	sev   analyze.Severity
	next  *Finding
	dirty bool
}

// New returns a detector. sink may be nil when only Evaluate is used;
// clock nil means time.Now.
func New(cfg Config, sink Sink, clock func() time.Time, log *slog.Logger) *Detector {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	d := &Detector{cfg: cfg.withDefaults(), sink: sink, clock: clock, log: log.With("component", "systemic"),
		ops: map[opKey]*series{}, roots: map[opKey]*series{}, errTypes: map[[2]string]time.Time{},
		stampede: map[[2]string]*ring{}, auth: map[string]*authState{}, pending: map[string]Finding{}, open: map[string]*openKey{}}
	d.contention = newContentionTracker(d.cfg.Contention)
	d.restore()
	return d
}

// Config returns the effective configuration.
func (d *Detector) Config() Config { return d.cfg }

// Run evaluates every EvalInterval and stores the findings until ctx ends;
// with a Dir it snapshots every SnapshotInterval and on the way out.
func (d *Detector) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.EvalInterval)
	defer t.Stop()
	var snap <-chan time.Time
	if d.cfg.Dir != "" {
		st := time.NewTicker(d.cfg.SnapshotInterval)
		defer st.Stop()
		snap = st.C
	}
	for {
		select {
		case <-ctx.Done():
			if err := d.Snapshot(); err != nil {
				d.log.Warn("saving systemic history", "err", err)
			}
			return
		case <-snap:
			if err := d.Snapshot(); err != nil {
				d.log.Warn("saving systemic history", "err", err)
			}
		case <-t.C:
			// The peers are asked before the lock is taken: they ask
			// this node for its share at the same time.
			m := d.clusterShares(ctx)
			fs, ups := d.evaluate(d.clock(), m)
			d.store(ctx, fs, ups)
		}
	}
}

// ---- histograms: log-scale bins, 4 per power of two (~19 % wide) ----

const nBins = 112

func bin(ns uint64) int {
	ms := float64(ns) / 1e6
	b := int(4 * math.Log2(ms*10+1)) // 0.1 ms resolution at the bottom
	return min(max(b, 0), nBins-1)
}

func binUpperMS(b int) float64 { return (math.Exp2(float64(b+1)/4) - 1) / 10 }

func quantileMS(h *[nBins]float64, q float64) float64 {
	var total float64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0
	}
	want, acc := q*total, 0.0
	for b, c := range h {
		acc += c
		if acc >= want {
			return binUpperMS(b)
		}
	}
	return binUpperMS(nBins - 1)
}

// ---- windows ----

type vstat struct{ n, spans float64 }

type bucket struct {
	n, errs, spans float64
	hist           [nBins]float64
	versions       map[string]*vstat  // roots: "service version" of any service in the trace
	services       map[string]float64 // roots: traces in which each service appears
}

type series struct {
	key     opKey
	created time.Time
	buckets map[int64]*bucket
	folded  int64 // buckets ≤ folded are in base
	base    bucket
	baseSec float64
	// baseP95MS caches the baseline p95 for Observe (0: none yet).
	baseP95MS float64
	// examples
	errRefs  []ref
	recent   []ref // roots: the latest traces, as examples
	slow     []sample
	normal   []sample
	lastNorm time.Time
	lastSlow time.Time
}

// ref keeps raw ids: most refs are overwritten before anyone reads them,
// so hex encoding waits for output.
type ref struct {
	trace model.TraceID
	span  model.SpanID
	t     time.Time
}

type sample struct {
	ref
	f   attribution.Features
	dur float64
}

func (d *Detector) idx(t time.Time) int64 { return t.UnixNano() / int64(d.cfg.Bucket) }

func (d *Detector) seriesOf(m map[opKey]*series, k opKey, now time.Time) *series {
	s := m[k]
	if s == nil {
		s = &series{key: k, created: now, buckets: map[int64]*bucket{},
			folded: d.idx(now) - int64(d.cfg.maxWindow()/d.cfg.Bucket) - 1}
		m[k] = s
	}
	return s
}

func (s *series) bucketAt(i int64) *bucket {
	b := s.buckets[i]
	if b == nil {
		b = &bucket{}
		s.buckets[i] = b
	}
	return b
}

// window sums the buckets of the last w.
func (d *Detector) window(s *series, now time.Time, w time.Duration) *bucket {
	cur := d.idx(now)
	lo := cur - int64(w/d.cfg.Bucket) + 1
	out := &bucket{}
	for i, b := range s.buckets {
		if i < lo || i > cur {
			continue
		}
		addBucket(out, b, 1)
	}
	return out
}

func addBucket(dst, src *bucket, w float64) {
	dst.n += src.n * w
	dst.errs += src.errs * w
	dst.spans += src.spans * w
	for i, c := range src.hist {
		if c != 0 {
			dst.hist[i] += c * w
		}
	}
	if src.versions != nil {
		if dst.versions == nil {
			dst.versions = map[string]*vstat{}
		}
		for k, v := range src.versions {
			x := dst.versions[k]
			if x == nil {
				x = &vstat{}
				dst.versions[k] = x
			}
			x.n += v.n * w
			x.spans += v.spans * w
		}
	}
	if src.services != nil {
		if dst.services == nil {
			dst.services = map[string]float64{}
		}
		for k, v := range src.services {
			dst.services[k] += v * w
		}
	}
}

func scaleBucket(b *bucket, f float64) {
	b.n *= f
	b.errs *= f
	b.spans *= f
	for i := range b.hist {
		b.hist[i] *= f
	}
	for k, v := range b.versions {
		v.n *= f
		v.spans *= f
		if v.n < 1e-3 {
			delete(b.versions, k)
		}
	}
	for k, v := range b.services {
		b.services[k] = v * f
		if v*f < 1e-3 {
			delete(b.services, k)
		}
	}
}

// fold moves buckets older than the longest window into the baseline.
func (d *Detector) fold(s *series, now time.Time) {
	upto := d.idx(now) - int64(d.cfg.maxWindow()/d.cfg.Bucket)
	if upto <= s.folded {
		return
	}
	decay := math.Exp(-math.Ln2 * d.cfg.Bucket.Seconds() / d.cfg.BaselineHalfLife.Seconds())
	steps := upto - s.folded
	// After many half-lives nothing of the old baseline remains; skip the
	// empty steps in one go.
	if limit := int64(20 * d.cfg.BaselineHalfLife / d.cfg.Bucket); steps > limit {
		scaleBucket(&s.base, 0)
		s.baseSec = 0
		s.folded = upto - limit
	}
	for i := s.folded + 1; i <= upto; i++ {
		scaleBucket(&s.base, decay)
		s.baseSec = s.baseSec*decay + d.cfg.Bucket.Seconds()
		if b := s.buckets[i]; b != nil {
			addBucket(&s.base, b, 1)
			delete(s.buckets, i)
		}
	}
	for i := range s.buckets {
		if i <= upto {
			delete(s.buckets, i)
		}
	}
	s.folded = upto
	if s.base.n >= float64(d.cfg.MinSamples) {
		s.baseP95MS = quantileMS(&s.base.hist, 0.95)
	}
}

func (d *Detector) baselineReady(s *series) bool { return d.baselineReadyOf(s.baseSec, s.base.n) }

// baselineReadyOf says whether a baseline of baseSec (decayed) seconds
// and n requests is enough to compare with.
func (d *Detector) baselineReadyOf(baseSec, n float64) bool {
	// baseSec decays too; compare with the decayed equivalent of MinBaseline.
	need := d.cfg.MinBaseline.Seconds()
	hl := d.cfg.BaselineHalfLife.Seconds()
	need = hl / math.Ln2 * (1 - math.Exp(-math.Ln2*need/hl))
	return baseSec >= need*0.999 && n >= float64(d.cfg.MinSamples)
}

// ---- observation ----

// failed: an error status, or no explicit one and a failing HTTP answer
// (spanKeys.failedHTTP).
func failed(s *model.Span) bool {
	switch s.StatusCode {
	case model.StatusError:
		return true
	case model.StatusOK:
		return false
	}
	var k spanKeys
	k.scan(s.Attrs)
	return k.failedHTTP()
}

func pushRef(list []ref, r ref, capN int) []ref {
	if len(list) < capN {
		return append(list, r)
	}
	copy(list, list[1:])
	list[len(list)-1] = r
	return list
}

func pushSample(list []sample, s sample, capN int) []sample {
	if len(list) < capN {
		return append(list, s)
	}
	copy(list, list[1:])
	list[len(list)-1] = s
	return list
}

// ---- new_error_type ----

type newType struct {
	service, op, typ, msg string
	r                     ref
}

func (d *Detector) observeErrorType(now time.Time, s *model.Span) {
	typ, msg := analyze.ExceptionOf(s)
	if typ == "" {
		typ = s.Attrs.Str("error.type")
	}
	if typ == "" {
		return
	}
	k := [2]string{s.Service, typ}
	last, known := d.errTypes[k]
	d.errTypes[k] = now
	if known && now.Sub(last) < d.cfg.ErrorTypeMemory {
		return
	}
	if now.Sub(d.started) < d.cfg.ErrorTypeWarmup {
		return
	}
	if len(d.newTypes) < 1000 {
		d.newTypes = append(d.newTypes, newType{service: s.Service, op: s.Name, typ: typ, msg: msg,
			r: ref{trace: s.TraceID, span: s.SpanID, t: now}})
	}
}

// ---- evaluation ----

// store puts the findings that opened and then rewrites those that
// changed, when the sink can.
func (d *Detector) store(ctx context.Context, opened, updated []Finding) {
	if d.sink == nil {
		return
	}
	if len(opened) > 0 {
		if err := d.sink.Put(ctx, opened); err != nil {
			d.log.Warn("storing systemic findings", "count", len(opened), "err", err)
		} else {
			d.Stored(opened)
		}
	}
	if u, ok := d.sink.(Updater); ok && len(updated) > 0 {
		if err := u.Update(ctx, updated); err != nil {
			d.log.Warn("updating open systemic findings", "count", len(updated), "err", err)
		}
	}
}

// Evaluate folds old buckets into baselines, checks every pattern and
// returns the findings that open now.
func (d *Detector) Evaluate(now time.Time) []Finding {
	opened, _ := d.evaluate(now, nil)
	return opened
}

// EvaluateUpdates is Evaluate that also returns the new versions of open
// findings whose figures changed (see update.go), for Updater.Update once
// Stored has been told the ids of the opened ones.
func (d *Detector) EvaluateUpdates(now time.Time) (opened, updated []Finding) {
	return d.evaluate(now, nil)
}

// evaluate is EvaluateUpdates; with m (in a cluster) the merged patterns
// are judged on every node's share and reported by their keys' owners.
func (d *Detector) evaluate(now time.Time, m *merged) (opened, updated []Finding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen(now)
	active := map[string]Finding{}
	closeAfter := map[string]time.Duration{}
	add := func(f Finding, w time.Duration) {
		f.Systemic = true
		if f.Time.IsZero() {
			f.Time = now
		}
		if f.SpanIDs == nil {
			f.SpanIDs = []string{}
		}
		if f.ExampleTraceIDs == nil {
			f.ExampleTraceIDs = []string{}
		}
		if len(f.ExampleTraceIDs) > 0 && f.TraceID == "" {
			f.TraceID = f.ExampleTraceIDs[0]
		}
		active[f.Key] = f
		closeAfter[f.Key] = w
	}
	for _, s := range d.ops {
		d.fold(s, now)
	}
	for _, s := range d.roots {
		d.fold(s, now)
	}
	if m == nil {
		d.judgeErrors(now, d.localErrors(now), add)
		d.evalLatency(now, d.localLatency(now, false), add)
		d.evalRoots(now, d.localRoots(now), add)
	} else {
		owned := func(f Finding, w time.Duration) {
			if m.owns(f.Key) {
				add(f, w)
			}
		}
		d.judgeErrors(now, mergeErrors(d.localErrors(now), m.peers), owned)
		d.evalLatency(now, mergeLatency(d.localLatency(now, true), m.peers), owned)
		d.evalRoots(now, mergeRoots(d.localRoots(now), m.peers), owned)
		d.mergeEvents(m, owned)
		d.judgeNewTypes(now, m, owned)
	}
	d.contention.evaluate(now, add)
	if m == nil {
		for _, nt := range d.newTypes {
			add(newErrorType(nt), d.cfg.ErrorWindow)
		}
		d.newTypes = d.newTypes[:0]
	}
	for k, f := range d.pending {
		// In a cluster the merged judgement (above) reports these.
		if m == nil || !mergedKind(f.Kind) {
			add(f, d.cfg.ErrorWindow)
		}
		delete(d.pending, k)
	}
	d.expireEvents(now, m != nil)

	var out, ups []Finding
	for k, f := range active {
		o := d.open[k]
		if o == nil {
			out = append(out, f)
			o = newOpenKey(f, now)
			d.open[k] = o
		} else {
			o.revise(f)
		}
		o.last, o.close = now, closeAfter[k]
	}
	for k, o := range d.open {
		closing := false
		if _, ok := active[k]; !ok && now.Sub(o.last) >= o.close {
			closing = true
		}
		// A newer version is written once the interval has passed, even
		// when nothing new came since: a burst ends quickly.
		if u, ok := o.due(now, d.cfg.UpdateInterval, closing); ok {
			ups = append(ups, u)
		}
		if closing {
			delete(d.open, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	sort.Slice(ups, func(i, j int) bool { return ups[i].Key < ups[j].Key })
	return out, ups
}

// Open returns the keys of the findings currently open (tests, debugging).
func (d *Detector) Open() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for k := range d.open {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func refIDs(rs []ref) (traces, spans []string) {
	for i := len(rs) - 1; i >= 0; i-- {
		traces = append(traces, rs[i].trace.String())
		spans = append(spans, rs[i].span.String())
	}
	return traces, spans
}

func pct(f float64) float64 { return math.Round(f*1000) / 10 }

// judgeErrors judges the error counts of every entry operation (sorted
// by operation) and of every service they belong to.
func (d *Detector) judgeErrors(now time.Time, ops []ErrorShare, add func(Finding, time.Duration)) {
	type svcAgg struct {
		n, e, bn, be float64
		refs         []ref
		opActive     bool
	}
	bySvc := map[string]*svcAgg{}
	origins := map[opKey]map[opKey]float64{}
	for _, s := range ops {
		k := opKey{s.Service, s.Operation}
		for _, o := range s.Origins {
			if origins[k] == nil {
				origins[k] = map[opKey]float64{}
			}
			origins[k][opKey{o.Service, o.Operation}] += o.Count
		}
		a := bySvc[k.service]
		if a == nil {
			a = &svcAgg{}
			bySvc[k.service] = a
		}
		a.n += s.Requests
		a.e += s.Errors
		a.bn += s.BaseN
		a.be += s.BaseErrs
		errRefs := refsOf(s.Examples)
		for _, r := range errRefs {
			if now.Sub(r.t) <= d.cfg.ErrorWindow {
				a.refs = append(a.refs, r)
			}
		}
		if s.Requests < float64(d.cfg.MinSamples) || s.Errors < float64(d.cfg.MinErrors) {
			continue
		}
		rate := s.Errors / s.Requests
		baseRate := -1.0
		if s.BaseN >= float64(d.cfg.MinSamples) {
			baseRate = s.BaseErrs / s.BaseN
		}
		if rate <= d.cfg.OpErrorRate || (baseRate >= 0 && rate < 2*baseRate) {
			continue
		}
		a.opActive = true
		traces, spans := refIDs(errRefs)
		f := Finding{Service: k.service, Operation: k.op, Key: "error_rate_spike/" + k.service + "/" + k.op, ExampleTraceIDs: traces}
		f.Kind, f.Severity = "error_rate_spike", analyze.SeverityWarning
		if rate >= 0.5 {
			f.Severity = analyze.SeverityCritical
		}
		f.SpanIDs = spans
		f.Title = sprintf("%s %s fails %.1f%% of %d requests over %s (usual %s)", k.service, k.op, pct(rate), int(s.Requests),
			d.cfg.ErrorWindow, usualRate(baseRate))
		f.Evidence = ErrorRateEvidence{Service: k.service, Operation: k.op, WindowS: d.cfg.ErrorWindow.Seconds(), Requests: int(s.Requests),
			Errors: int(s.Errors), ErrorRate: pct(rate) / 100, BaselineRate: math.Max(baseRate, 0), Threshold: d.cfg.OpErrorRate}
		f.Fix = "Open an example trace: its error_origin finding names the failing span; compare a failing with a successful request (GET /api/v1/compare) and check recent deploys of " + k.service + "."
		f.Culprit = errorCulprit(origins, []opKey{k}, k.service+" "+k.op)
		add(f, d.cfg.ErrorWindow)
	}
	svcs := make([]string, 0, len(bySvc))
	for s := range bySvc {
		svcs = append(svcs, s)
	}
	sort.Strings(svcs)
	for _, svc := range svcs {
		a := bySvc[svc]
		if a.opActive || a.n < float64(d.cfg.MinSamples) || a.e < float64(d.cfg.MinErrors) {
			continue
		}
		rate := a.e / a.n
		baseRate := -1.0
		if a.bn >= float64(d.cfg.MinSamples) {
			baseRate = a.be / a.bn
		}
		if rate <= d.cfg.ServiceErrorRate || (baseRate >= 0 && rate < 2*baseRate) {
			continue
		}
		sort.Slice(a.refs, func(i, j int) bool { return a.refs[i].t.Before(a.refs[j].t) })
		if len(a.refs) > 5 {
			a.refs = a.refs[len(a.refs)-5:]
		}
		traces, spans := refIDs(a.refs)
		f := Finding{Service: svc, Key: "error_rate_spike/" + svc + "/", ExampleTraceIDs: traces}
		f.Kind, f.Severity, f.SpanIDs = "error_rate_spike", analyze.SeverityWarning, spans
		f.Title = sprintf("%s fails %.1f%% of %d requests over %s (usual %s)", svc, pct(rate), int(a.n), d.cfg.ErrorWindow, usualRate(baseRate))
		f.Evidence = ErrorRateEvidence{Service: svc, WindowS: d.cfg.ErrorWindow.Seconds(), Requests: int(a.n), Errors: int(a.e),
			ErrorRate: pct(rate) / 100, BaselineRate: math.Max(baseRate, 0), Threshold: d.cfg.ServiceErrorRate}
		f.Fix = "Open an example trace to find the failing dependency, and check recent deploys of " + svc + "."
		// The entries that failed, most errors first: without a learnt
		// origin the culprit falls back to the first, and a service's
		// first operation by name may never have failed (a consumer of
		// another queue than the one whose messages fail).
		var entries []opKey
		errs := map[opKey]float64{}
		for _, s := range ops {
			if s.Service == svc && s.Errors > 0 {
				k := opKey{s.Service, s.Operation}
				entries = append(entries, k)
				errs[k] = s.Errors
			}
		}
		sort.SliceStable(entries, func(i, j int) bool { return errs[entries[i]] > errs[entries[j]] })
		f.Culprit = errorCulprit(origins, entries, svc)
		add(f, d.cfg.ErrorWindow)
	}
}

func usualRate(r float64) string {
	if r < 0 {
		return "unknown"
	}
	return sprintf("%.1f%%", pct(r))
}

// evalLatency judges the p95 of every entry operation against its
// baseline.
func (d *Detector) evalLatency(now time.Time, views []latencyView, add func(Finding, time.Duration)) {
	for i := range views {
		s := &views[i]
		k := s.key
		if !d.baselineReadyOf(s.baseSec, s.base.n) {
			continue
		}
		w := s.window
		if w.n < float64(d.cfg.MinSamples) {
			continue
		}
		p95 := quantileMS(&w.hist, 0.95)
		base := quantileMS(&s.base.hist, 0.95)
		if base <= 0 || p95 < d.cfg.LatencyFactor*base || p95-base < float64(d.cfg.LatencyMinDelta)/1e6 {
			continue
		}
		// Attribution: slow samples since the window began vs normal ones.
		var sel, basef []attribution.Features
		var refs []ref
		for _, x := range s.slow {
			if now.Sub(x.t) <= d.cfg.LatencyWindow {
				sel = append(sel, x.f)
				refs = append(refs, x.ref)
			}
		}
		for _, x := range s.normal {
			if x.dur < d.cfg.LatencyFactor*base {
				basef = append(basef, x.f)
			}
		}
		vals := attribution.Rank(sel, basef, attribution.Options{Limit: 5})
		if len(refs) > 5 {
			refs = refs[len(refs)-5:]
		}
		traces, spans := refIDs(refs)
		f := Finding{Service: k.service, Operation: k.op, Key: "latency_regression/" + k.service + "/" + k.op, ExampleTraceIDs: traces}
		f.Kind, f.SpanIDs = "latency_regression", spans
		f.Severity = analyze.SeverityWarning
		if p95 >= 4*base {
			f.Severity = analyze.SeverityCritical
		}
		f.ImpactMS = math.Round((p95-base)*10) / 10
		title := sprintf("p95 of %s %s is %.0f ms, %.1fx its usual %.0f ms", k.service, k.op, p95, p95/base, base)
		if len(vals) > 0 {
			title += sprintf("; %.0f%% of slow requests have %s (vs %.0f%%)", 100*vals[0].SelectionShare, vals[0].Label, 100*vals[0].BaselineShare)
		}
		f.Title = title
		f.Evidence = LatencyEvidence{Service: k.service, Operation: k.op, WindowS: d.cfg.LatencyWindow.Seconds(), Requests: int(w.n),
			P95MS: p95, BaselineP95MS: base, Factor: math.Round(p95/base*100) / 100, Attribution: vals}
		f.Fix = "Compare a slow and a usual request (GET /api/v1/compare) and look at what the slow ones share (attribution above): a deploy, a host, or an input size."
		f.Culprit = latencyCulprit(k, s.selfs)
		add(f, d.cfg.LatencyWindow)
	}
}

// evalRoots judges the flows (trace roots): throughput_drop,
// missing_service and span_count_regression.
func (d *Detector) evalRoots(now time.Time, views []rootView, add func(Finding, time.Duration)) {
	for i := range views {
		s := &views[i]
		k := s.key
		// After a long downtime the windows restart empty: an empty or
		// partly filled window is no evidence of a drop or of a missing
		// service until it spans fresh data only.
		fresh := func(w time.Duration) bool { return s.windowsFrom.IsZero() || now.Sub(s.windowsFrom) >= w }
		ready := d.baselineReadyOf(s.baseSec, s.base.n)
		// throughput_drop: also evaluated with no traffic at all.
		if ready && now.Sub(s.created) >= d.cfg.MinBaseline+d.cfg.ThroughputWindow && fresh(d.cfg.ThroughputWindow) {
			w := s.throughput
			expected := s.baseRate * d.cfg.ThroughputWindow.Seconds()
			if expected >= d.cfg.MinExpected && w.n < d.cfg.ThroughputFactor*expected {
				f := Finding{Service: k.service, Operation: k.op, Key: "throughput_drop/" + k.service + "/" + k.op}
				f.Kind, f.Severity = "throughput_drop", analyze.SeverityWarning
				if w.n < 0.1*expected {
					f.Severity = analyze.SeverityCritical
				}
				f.Title = sprintf("%s %s received %d requests in %s, expected about %.0f (%.0f%% of usual)", k.service, k.op, int(w.n),
					d.cfg.ThroughputWindow, expected, 100*w.n/expected)
				f.Evidence = ThroughputEvidence{Service: k.service, Operation: k.op, WindowS: d.cfg.ThroughputWindow.Seconds(),
					Requests: int(w.n), Expected: math.Round(expected*10) / 10, RatePerMin: w.n / d.cfg.ThroughputWindow.Minutes(),
					BaselinePerMin: s.baseRate * 60}
				f.Fix = "Check what sends this traffic: a failing upstream, a load balancer or DNS change, a client release, or lost instrumentation (spans missing, not requests)."
				f.Culprit = endpointCulprit(k, "the entry endpoint that receives fewer requests: what sends it traffic changed")
				add(f, d.cfg.ThroughputWindow)
			}
		}
		if !ready {
			continue
		}
		// missing_service
		w := s.missing
		if w.n >= float64(d.cfg.MinSamples) && fresh(d.cfg.MissingWindow) {
			var gone []string
			for svc, c := range s.base.services {
				if c/s.base.n >= d.cfg.MissingPresence && w.services[svc] == 0 {
					gone = append(gone, svc)
				}
			}
			sort.Strings(gone)
			for _, svc := range gone {
				share := s.base.services[svc] / s.base.n
				f := Finding{Service: svc, Operation: k.op, Key: "missing_service/" + k.service + "/" + k.op + "/" + svc}
				f.Kind, f.Severity = "missing_service", analyze.SeverityWarning
				f.Title = sprintf("%s no longer appears in %s %s: 0 of %d traces over %s, usually in %.0f%%", svc, k.service, k.op,
					int(w.n), d.cfg.MissingWindow, 100*share)
				f.Evidence = MissingServiceEvidence{Flow: k.service + " " + k.op, Service: svc, WindowS: d.cfg.MissingWindow.Seconds(),
					Traces: int(w.n), BaselinePresence: math.Round(share*1000) / 1000}
				f.Fix = "Check whether " + svc + " is down or bypassed (feature flag, fallback, circuit breaker open), or lost its instrumentation or trace propagation."
				f.ExampleTraceIDs, _ = refIDs(s.recent)
				f.Culprit = endpointCulprit(k, sprintf("the flow that no longer reaches %s; no trace seen showed who called it", svc))
				if c, ok := d.callerOf(svc); ok {
					f.Culprit = endpointCulprit(c, sprintf("%s %s called %s and no longer does (or cannot reach it)", c.service, c.op, svc))
				}
				add(f, d.cfg.MissingWindow)
			}
		}
		// span_count_regression
		w = s.span
		if w.n < float64(d.cfg.MinSamples) || s.base.n == 0 {
			continue
		}
		baseMean := s.base.spans / s.base.n
		mean := w.spans / w.n
		var culprit string
		var culpritMean, culpritN float64
		for v, st := range w.versions {
			m := st.spans / st.n
			if st.n < float64(d.cfg.MinSamples)/2 || m < d.cfg.SpanFactor*baseMean {
				continue
			}
			bv := s.base.versions[v]
			isNew := bv == nil || bv.n < 1 || bv.spans/bv.n < d.cfg.SpanFactor*baseMean
			if !isNew {
				continue
			}
			// Prefer the version whose traces are all affected and that is
			// new: among several services' versions in the same traces,
			// the one absent from the baseline is the change.
			if culprit == "" || bv == nil && st.n > culpritN || m > culpritMean && st.n >= culpritN {
				culprit, culpritMean, culpritN = v, m, st.n
			}
		}
		if mean < d.cfg.SpanFactor*baseMean && culprit == "" {
			continue
		}
		f := Finding{Service: k.service, Operation: k.op, Key: "span_count_regression/" + k.service + "/" + k.op}
		f.Kind, f.Severity = "span_count_regression", analyze.SeverityWarning
		shown := mean
		if culprit != "" {
			shown = culpritMean
		}
		f.Title = sprintf("spans per trace of %s %s rose from %.1f to %.1f (%.1fx)", k.service, k.op, baseMean, shown, shown/baseMean)
		ev := SpanCountEvidence{Flow: k.service + " " + k.op, WindowS: d.cfg.SpanWindow.Seconds(), Traces: int(w.n),
			MeanSpans: math.Round(mean*10) / 10, BaselineMeanSpans: math.Round(baseMean*10) / 10}
		if culprit != "" {
			svc, ver, _ := strings.Cut(culprit, " ")
			f.Title += sprintf(" with %s %s", svc, ver)
			ev.Service, ev.Version, ev.VersionTraces, ev.VersionMeanSpans = svc, ver, int(culpritN), math.Round(culpritMean*10)/10
		}
		f.Evidence = ev
		f.Culprit = endpointCulprit(k, "the flow whose traces grew; no single version of a service explains it")
		if ev.Service != "" {
			f.Culprit = &analyze.Culprit{Service: ev.Service,
				Reason: sprintf("traces with %s %s have %.1f spans, %.1fx the usual: the calls added in that version", ev.Service, ev.Version, ev.VersionMeanSpans, ev.VersionMeanSpans/baseMean)}
		}
		f.Fix = "Compare a trace of the new shape with an older one (GET /api/v1/compare, GET /api/v1/groups): an N+1 query or call loop usually shipped in that version."
		f.ExampleTraceIDs, f.SpanIDs = refIDs(s.recent)
		add(f, d.cfg.SpanWindow)
	}
}

func newErrorType(nt newType) Finding {
	f := Finding{Service: nt.service, Key: "new_error_type/" + nt.service + "/" + nt.typ, ExampleTraceIDs: []string{nt.r.trace.String()}}
	f.Kind, f.Severity, f.SpanIDs = "new_error_type", analyze.SeverityWarning, []string{nt.r.span.String()}
	f.Time = nt.r.t
	f.Title = sprintf("new error type in %s: %s", nt.service, nt.typ)
	if nt.msg != "" {
		f.Title += sprintf(" (%s)", model.Clip(nt.msg, 120))
	}
	f.Evidence = NewErrorTypeEvidence{Service: nt.service, ExceptionType: nt.typ, Message: model.Clip(nt.msg, 500)}
	f.Culprit = &analyze.Culprit{Service: nt.service, Operation: nt.op, SpanID: nt.r.span.String(),
		Reason: sprintf("%s raises the new %s itself", nt.service, nt.typ)}
	f.Fix = "An exception type not seen before usually comes with a deploy or a new failure mode of a dependency; open the example trace for the stack."
	return f
}

package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/ratelog"
	"github.com/tracedx/tracedx/internal/sampling"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/systemic"
)

const (
	// pipelineTick is how often the worker re-reads CPU usage and adapts
	// its sampling.
	pipelineTick = 500 * time.Millisecond
	// pipelineIdle is the least time between two wake-ups of the worker
	// on an empty queue. Its goroutine is locked to an OS thread (for
	// exact CPU accounting), and each wake-up of a locked thread is an OS
	// thread hand-off, so a trickle of traces is taken in batches rather
	// than one wake-up per trace; an idle worker sleeps until a trace is
	// queued or the next tick (polling every pipelineIdle cost a cluster
	// of three ~0.007 cores doing nothing).
	pipelineIdle = 20 * time.Millisecond
	// minKeep is the smallest share of traces the detectors and baselines
	// still see when shedding.
	minKeep = 0.01
	// skipLogEvery bounds the warnings about skipped analysis.
	skipLogEvery = 30 * time.Second
)

// pipeline is the completed-trace path: the store hands over each
// completed trace, a worker runs the per-trace detectors (analysis), stores
// their findings, and feeds the baselines and the systemic detectors
// (analytics).
//
// Decoding a trace costs about as much as storing it, so with the
// detectors off the store decodes only what the analytics need whole: a
// uniform sample of about wholePerSecond traces (latency examples, the
// baselines) and the traces whose span flags say only the whole trace can
// tell (cache misses, unattributed auth failures). Every other trace
// reaches the systemic detectors as the summary the store keeps anyway;
// their per-span series are fed at ingest. So nothing they count is
// sampled.
//
// It protects ingest twice: the queue is bounded by spans (decoded traces
// are ~1.7 KB per span) and sheds by priority when full (analysisQueue),
// and when the server is CPU-bound and the worker takes more than maxShare
// of the process's CPU, the detectors see only a sample of traces, those
// that matter first (splitKeep). The systemic detectors see every
// trace: their rates and "new error type" / stampede patterns are not
// sampling-tolerant, and they are cheaper than the detectors.
type pipeline struct {
	s       *Server
	log     *slog.Logger
	history *baseline.Baselines
	queue   *analysisQueue

	analysis, analytics bool
	maxShare            float64
	wholePerSecond      float64

	completedN atomic.Uint64 // traces the store completed
	idleWakes  atomic.Uint64 // times the worker found the queue empty
	// openTraces, when set, counts the traces the store holds until they
	// complete (within about idle of their last span): it foretells the
	// completion rate before the first completions arrive.
	openTraces  func() int64
	idle        time.Duration
	sampleBits  atomic.Uint64 // float64: share of traces decoded for the analytics
	completionR float64       // worker-only: smoothed completions per second

	analysed, dropped, shed atomic.Uint64
	// droppedBy counts dropped by reason (skipNoRoom, ...); lastDrop is
	// when the latest was, in Unix ns.
	droppedBy map[string]prometheus.Counter
	lastDrop  atomic.Int64
	// tookVital counts the traces taken by the worker that matter, by
	// priority reason.
	tookVital map[string]prometheus.Counter
	cpu       atomic.Int64  // worker CPU, ns
	keepBits  atomic.Uint64 // float64: share of traces fully processed
	findings  findingSink
	// gate marks running queries; the worker stands aside for them.
	gate    *priority.Gate
	yielded atomic.Int64 // ns the worker waited for queries
	// roomWaited is ns the store's completion goroutine waited for room
	// in the queue (takeSpans).
	roomWaited atomic.Int64
	detectors  []analyze.Detector // nil: the defaults
	// sampler, when set, decides after analysis whether a trace's spans
	// stay; decide hands the decision to the store, which removes the
	// traces it does not keep and records why it keeps the others.
	sampler *sampling.Sampler
	decide  func(model.TraceID, string)
	// storedReason reads a decision back from the store, for traces the
	// sampler no longer remembers.
	storedReason func(model.TraceID) string
	// skipLog rate-limits the warnings about traces dropped or shed.
	skipLog  ratelog.Limiter
	lastShed uint64 // worker-only: shed count at the last warning
	// heap and heapFraction are admission's heap figures and budget
	// (nil: no budget): a trace larger than the whole queue is decoded
	// only when it fits in the budget (see memoryFor). bigLog rate-limits
	// the warnings about those that do not.
	heap         func() heapStats
	heapFraction float64
	bigLog       ratelog.Limiter
	// putLog rate-limits the warnings about findings that could not be
	// stored; findingsFailed counts them.
	putLog         ratelog.Limiter
	findingsFailed atomic.Uint64

	// usual caches endpoints' usual duration and size, for priority.
	usual usualCache

	// worker-only state
	lastTick          time.Time
	lastProc, lastThr time.Duration
	rng               *rand.Rand
	baseline          rateSampler
	// processed and vital count the traces the worker took since the last
	// tick, and those that matter; vitalShare smooths their ratio.
	processed, vital int
	vitalShare       float64
}

// perNode is this node's part of a rate of completed traces the
// analytics take (analytics.baseline_traces_per_second,
// whole_traces_per_second): the rate split between the nodes of a
// cluster. Each node sees a uniform share of the traces (by trace id), so
// a node's baselines describe the same distributions and the cross-trace
// detectors judge the union of every node's share (internal/systemic
// merge.go); the cluster pays what one node does instead of the rate's
// worth on every node.
func perNode(cfg config.Config, perSecond float64) float64 {
	return perSecond / float64(max(1, len(cfg.Cluster.Peers)))
}

// rateSampler keeps about perSecond events per second, uniformly: the keep
// probability for the next second is perSecond over the rate of the last.
type rateSampler struct {
	perSecond float64
	p         float64
	n         int
	start     time.Time
}

func (r *rateSampler) keep(now time.Time, rng *rand.Rand) bool {
	if r.perSecond <= 0 {
		return true
	}
	if r.start.IsZero() {
		r.start, r.p = now, 1
	}
	if el := now.Sub(r.start); el >= time.Second {
		r.p = min(1, r.perSecond*el.Seconds()/float64(max(r.n, 1)))
		r.n, r.start = 0, now
	}
	r.n++
	return r.p >= 1 || rng.Float64() < r.p
}

// findingSink stores per-trace findings and answers lookups; the findings
// store implements it.
type findingSink interface {
	putTrace(ctx context.Context, spans []model.Span, res analyze.Result) error
	traceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error)
	// observeSummary takes every completed trace, observeTrace the whole
	// traces the systemic detectors need.
	observeSummary(t systemic.TraceSummary)
	observeTrace(spans []model.Span)
}

func newPipeline(s *Server, history *baseline.Baselines) *pipeline {
	maxQueued := int64(s.cfg.Analysis.QueueSpans)
	if maxQueued <= 0 {
		maxQueued = 8192
	}
	p := &pipeline{s: s, log: s.log.With("component", "analysis"), skipLog: ratelog.Limiter{Every: skipLogEvery}, putLog: ratelog.Limiter{Every: skipLogEvery}, history: history, queue: newAnalysisQueue(maxQueued),
		analysis: s.cfg.Analysis.Enabled, analytics: s.cfg.Analytics.Enabled,
		maxShare: s.cfg.Analysis.MaxCPUShare, rng: rand.New(rand.NewPCG(rand.Uint64(), 1)),
		baseline:       rateSampler{perSecond: perNode(s.cfg, s.cfg.Analytics.BaselineTracesPerSecond)},
		wholePerSecond: perNode(s.cfg, s.cfg.Analytics.WholeTracesPerSecond)}
	if s.cfg.Admission.HeapFraction > 0 {
		p.heap, p.heapFraction, p.bigLog = newHeapReader().read, s.cfg.Admission.HeapFraction, ratelog.Limiter{Every: skipLogEvery}
	}
	p.keepBits.Store(math.Float64bits(1))
	p.sampleBits.Store(math.Float64bits(1))
	droppedBy := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_analysis_dropped_total",
		Help: "Completed traces the detectors skipped because the queue (analysis.queue_spans) was full, by reason: no_room (a plain trace, or one the store could not describe before decoding it; or a trace larger than the whole queue without the heap to analyse it within admission.heap_fraction of memory_limit), displaced (a queued trace that made way for one that matters more: with an error, slow, of unusual shape, or in the analytics' sample), no_room_priority (one that matters, the queue full of such traces). Their spans are stored."},
		[]string{"reason"})
	p.droppedBy = map[string]prometheus.Counter{}
	for _, r := range []string{skipNoRoom, skipDisplaced, skipNoRoomToo} {
		p.droppedBy[r] = droppedBy.WithLabelValues(r)
	}
	tookVital := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_analysis_priority_traces_total",
		Help: "Completed traces taken by the analysis worker that go ahead of plain ones at a full queue, by why: error, slow, shape (unusually many spans, or spans only the whole trace explains), sample (the analytics' uniform sample)."},
		[]string{"reason"})
	p.tookVital = map[string]prometheus.Counter{}
	for _, r := range []string{priorityError, prioritySlow, priorityShape, prioritySample} {
		p.tookVital[r] = tookVital.WithLabelValues(r)
	}
	s.reg.MustRegister(droppedBy, tookVital,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_traces_total", Help: "Completed traces taken by the analysis worker."},
			func() float64 { return float64(p.analysed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_shed_total",
			Help: "Completed traces the per-trace detectors and baselines skipped to keep the worker within analysis.max_cpu_share (the systemic detectors saw them)."},
			func() float64 { return float64(p.shed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_findings_store_failures_total", Help: "Analysed traces whose findings could not be stored (e.g. disk full)."},
			func() float64 { return float64(p.findingsFailed.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_analysis_queued_spans", Help: "Spans of completed traces waiting for or in analysis."},
			func() float64 { return float64(p.queue.spans.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_analysis_keep_ratio", Help: "Share of completed traces the detectors and baselines currently see (1: all)."},
			func() float64 { return math.Float64frombits(p.keepBits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_yield_seconds_total", Help: "Time the analysis worker stood aside for running queries."},
			func() float64 { return float64(p.yielded.Load()) / 1e9 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_room_wait_seconds_total",
			Help: "Time completed traces waited, still encoded in the store, for the analysis worker to make room in the queue (analysis.queue_spans) instead of being skipped."},
			func() float64 { return float64(p.roomWaited.Load()) / 1e9 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_cpu_seconds_total", Help: "CPU time of the analysis worker (Linux only)."},
			func() float64 { return float64(p.cpu.Load()) / 1e9 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_analytics_whole_trace_ratio",
			Help: "Share of completed traces the cross-trace analytics decode whole (analytics.whole_traces_per_second); the others count from their summaries."},
			func() float64 { return math.Float64frombits(p.sampleBits.Load()) }),
	)
	return p
}

// active reports whether completed traces are needed at all; when not, the
// store is not asked to decode them.
func (p *pipeline) active() bool { return p.analysis || p.analytics }

// sampled reports whether the trace is in the analytics' uniform sample of
// whole traces. The low half of a trace id is random (W3C), so the choice
// is uniform, and the same for every completion of the trace.
func (p *pipeline) sampled(id model.TraceID) bool {
	share := math.Float64frombits(p.sampleBits.Load())
	return share >= 1 || float64(binary.LittleEndian.Uint64(id[8:]))/(1<<64) < share
}

// wantSpans is the store's WantSpans: whether a completed trace must be
// decoded.
func (p *pipeline) wantSpans(id model.TraceID, flags uint32) bool {
	return p.analysis || (p.analytics && (systemic.NeedsTrace(flags) || p.sampled(id)))
}

// traceComplete is the store's completion hook. It must not block the
// store: when analysis falls behind, traces are skipped (and counted), the
// spans themselves are safe in the store. A skipped trace still counts
// where only its summary is needed: the systemic detectors' root series,
// and sampling, which keeps it as "unanalysed".
func (p *pipeline) traceComplete(c engine.CompletedTrace) {
	if !p.active() {
		return
	}
	p.completedN.Add(1)
	if c.Declined {
		// The store asked takeSpans first and skipped decoding it.
		reason := skipNoRoom
		if c.Summary.SpanCount > 0 && p.classify(&c) != "" {
			reason = skipNoRoomToo
		}
		p.skipAnalysis(c, reason)
		return
	}
	displaced, priority, ok := p.queue.push(c, p.classify)
	for _, d := range displaced {
		p.skipAnalysis(d, skipDisplaced)
	}
	if !ok {
		reason := skipNoRoom
		if priority != "" {
			reason = skipNoRoomToo
		}
		p.skipAnalysis(c, reason)
	}
}

// takeSpans is the store's TakeSpans: a trace completing while the queue
// lacks room for it would be skipped by traceComplete, so the store need
// not decode it (or read it back) first. A trace that matters is taken
// while traces that matter less could make way for it.
//
// A trace larger than the whole queue, which an empty queue takes, is
// declined unless the heap has the room to decode and analyse it (see
// memoryFor): a 200,000-span trace took ~170 MB of a 256 MiB server.
//
// When the store's completion goroutine may wait (c.CanWait), a trace
// without room waits for the worker to make it, as long as the worker
// keeps finishing traces (analysisRoomWait each): a head cut completes
// its traces at once, a cluster node's every 3 s, and the end of such a
// burst was skipped though the worker kept up on average (3 nodes at
// 6,000 spans/s skipped 72-166 of ~13,400 traces a run). The trace waits
// encoded, in the store, not decoded in the queue.
func (p *pipeline) takeSpans(c engine.Completing) bool {
	n := int64(max(c.Spans, 1))
	if n > p.queue.max && !p.memoryFor(n) {
		return false
	}
	// With time to spare, the trace waits for room rather than displace
	// queued ones.
	if c.CanWait && !p.queue.fits(n) {
		start := time.Now()
		for !p.queue.fits(n) && p.queue.waitDone(analysisRoomWait) {
		}
		p.roomWaited.Add(int64(time.Since(start)))
	}
	if p.queue.fits(n) {
		return true
	}
	if c.Summary == nil {
		return false
	}
	pr := p.priority(c.Summary, c.Flags)
	return pr != "" && p.queue.fitsDisplacing(n, pr)
}

// analysisRoomWait is how long a completed trace waits for the worker to
// finish a trace (and so make room) before it is skipped: longer than the
// worker takes for a trace of thousands of spans, or yields to queries.
const analysisRoomWait = 500 * time.Millisecond

// analysisSpanBytes is what one span of a trace takes of the heap while
// it is analysed, rounded up: the soak's 200,000 spans of one attribute
// took ~170 MB in heap profiles (83 MB decoded, the rest the detectors'
// working copies), and spans with ~10 attributes decode to ~1.7 KB.
const analysisSpanBytes = 2 << 10

// memoryFor reports whether a trace of n spans can be decoded and analysed
// with the live heap staying within admission's budget (heap_fraction of
// the memory limit); always without a budget or a limit. It warns, at most
// every skipLogEvery, of the traces it turns away.
func (p *pipeline) memoryFor(n int64) bool {
	if p.heap == nil {
		return true
	}
	h := p.heap()
	need := uint64(n) * analysisSpanBytes
	if h.limit == 0 || float64(h.live+need) <= p.heapFraction*float64(h.limit) {
		return true
	}
	if held, ok := p.bigLog.Allow(time.Now()); ok {
		p.log.Warn("trace too large to analyse within the memory budget, skipped by the detectors (its spans are stored)",
			"spans", n, "estimated_bytes", need, "live_heap_bytes", h.live, "memory_limit_bytes", h.limit,
			"heap_fraction", p.heapFraction, "skipped_since_last_log", held)
	}
	return false
}

// skipAnalysis counts a completed trace the detectors will not see, says
// so at most every skipLogEvery, and hands its summary to what needs no
// more (the store knew it unless it completed by reading blocks back).
func (p *pipeline) skipAnalysis(c engine.CompletedTrace, reason string) {
	n := p.dropped.Add(1)
	p.droppedBy[reason].Inc()
	p.lastDrop.Store(timeNow().UnixNano())
	if _, ok := p.skipLog.Allow(time.Now()); ok {
		p.log.Warn("analysis queue full: completed traces skipped by the detectors (their spans are stored)",
			"dropped_total", n, "queue_spans", p.queue.max)
	}
	if c.Summary.SpanCount == 0 {
		return
	}
	p.sample(c, false, nil)
	if p.analytics && p.findings != nil {
		p.findings.observeSummary(systemicSummary(c))
	}
}

// queueFull reports whether the next completed trace would be dropped;
// admission then refuses ingest instead.
func (p *pipeline) queueFull() bool { return p.active() && p.queue.spans.Load() >= p.queue.max }

// analysisMaxYield bounds how long the worker waits for running queries
// after each trace: under a steady stream of queries analysis slows down
// (and sheds traces when its queue fills) instead of stopping.
const analysisMaxYield = 25 * time.Millisecond

func (p *pipeline) run(ctx context.Context) {
	if !p.active() {
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.lastTick = time.Now()
	p.lastProc, _ = processCPU()
	p.lastThr, _ = threadCPU()
	idle := time.NewTimer(pipelineTick)
	defer idle.Stop()
	var woke time.Time
	for {
		if ctx.Err() != nil {
			return
		}
		if t, ok := p.queue.pop(); ok {
			p.process(ctx, t.c)
			p.queue.done(t.c)
			// Analysis runs behind queries and ingest acknowledgements.
			p.yielded.Add(int64(p.gate.Yield(ctx, analysisMaxYield)))
		} else {
			p.idleWakes.Add(1)
			// Sleep until a trace is queued or the next tick.
			idle.Reset(max(pipelineTick-time.Since(p.lastTick), 0))
			select {
			case <-ctx.Done():
				return
			case <-p.queue.ready:
				// A trickle of traces is taken in batches: at most one
				// wake-up for traces every pipelineIdle.
				if d := pipelineIdle - time.Since(woke); d > 0 {
					idle.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-idle.C:
					}
				}
				select {
				case <-p.queue.ready: // the traces queued meanwhile are taken now
				default:
				}
				woke = time.Now()
			case <-idle.C:
			}
		}
		if now := time.Now(); now.Sub(p.lastTick) >= pipelineTick {
			p.tick(now)
		}
	}
}

func (p *pipeline) process(ctx context.Context, c engine.CompletedTrace) {
	p.analysed.Add(1)
	spans := c.Spans
	keep := math.Float64frombits(p.keepBits.Load())
	keepVital, keepPlain := splitKeep(keep, p.vitalShare)
	k := keepPlain
	p.processed++
	if pr := p.classify(&c); pr != "" {
		p.vital++
		p.tookVital[pr].Inc()
		k = keepVital
	}
	full := k >= 1 || p.rng.Float64() < k
	if !full {
		p.shed.Add(1)
	}
	var res analyze.Result
	analysed := p.analysis && full && spans != nil
	if analysed {
		res = p.analyze(spans)
		if p.findings != nil {
			if err := p.findings.putTrace(ctx, spans, res); err != nil {
				p.findingsFailed.Add(1)
				// A full disk fails every trace alike: one line per interval.
				if held, ok := p.putLog.Allow(time.Now()); ok {
					p.log.Warn("storing findings", "trace_id", res.TraceID, "err", err, "failures_since_last_log", held)
				}
			}
		}
	}
	p.sample(c, analysed, res.Findings)
	if !p.analytics {
		return
	}
	sampled := spans != nil && p.sampled(c.ID)
	if p.findings != nil {
		p.findings.observeSummary(systemicSummary(c))
		if sampled || (spans != nil && systemic.NeedsTrace(c.Flags)) {
			p.findings.observeTrace(spans)
		}
	}
	// Traces decoded for their flags alone would bias the baselines, and so
	// would the preference for slow and failed traces while analysis sheds:
	// then only the uniform sample feeds them.
	if full && (sampled || (p.analysis && spans != nil && !p.preferring(keep))) && p.baseline.keep(time.Now(), p.rng) {
		p.history.ObserveTrace(spans)
	}
}

// sample applies tail sampling to a completed trace once its findings are
// known; everything that counts traces has seen it or sees it anyway.
func (p *pipeline) sample(c engine.CompletedTrace, analysed bool, findings []analyze.Finding) {
	if p.sampler == nil {
		return
	}
	r := p.sampler.Decide(sampling.Trace{ID: c.ID, Service: c.Summary.RootService, Operation: c.Summary.RootName,
		Duration: time.Duration(c.Summary.DurationNano()), Errors: c.Summary.ErrorCount, Analysed: analysed, Findings: findings}, timeNow())
	if p.decide != nil {
		p.decide(c.ID, string(r))
	}
}

// systemicSummary is what the systemic detectors' root series need of a
// completed trace, from the store's summary.
func systemicSummary(c engine.CompletedTrace) systemic.TraceSummary {
	t := systemic.TraceSummary{TraceID: c.ID, RootSpanID: c.RootSpanID, RootService: c.Summary.RootService, RootName: c.Summary.RootName,
		RootFailed: c.Flags&systemic.FlagRootFailed != 0, Spans: c.Summary.SpanCount, Versions: c.Versions,
		Services: make([]string, len(c.Summary.Services))}
	for i := range c.Summary.Services {
		t.Services[i] = c.Summary.Services[i].Name
	}
	return t
}

// tick accounts the worker's CPU and adapts the share of traces it
// processes in full, and the share the analytics decode.
func (p *pipeline) tick(now time.Time) {
	wall := now.Sub(p.lastTick)
	p.lastTick = now
	if wall > 0 {
		p.completionR = nextRate(p.completionR, float64(p.completedN.Swap(0))/wall.Seconds())
		rate := p.completionR
		if p.openTraces != nil && p.idle > 0 {
			rate = max(rate, float64(p.openTraces())/p.idle.Seconds())
		}
		prev := math.Float64frombits(p.sampleBits.Load())
		p.sampleBits.Store(math.Float64bits(nextShare(prev, wholeShare(p.wholePerSecond, rate))))
	}
	if shed := p.shed.Load(); shed > p.lastShed {
		if _, ok := p.skipLog.Allow(now); ok {
			p.log.Warn("analysis over its CPU share: the detectors and baselines see a sample of traces",
				"shed_total", shed, "keep_ratio", math.Float64frombits(p.keepBits.Load()))
			p.lastShed = shed
		}
	}
	if p.processed > 0 {
		p.vitalShare = nextRate(p.vitalShare, float64(p.vital)/float64(p.processed))
		p.processed, p.vital = 0, 0
	}
	proc, ok1 := processCPU()
	thr, ok2 := threadCPU()
	if !ok1 || !ok2 {
		return
	}
	dThr := thr - p.lastThr
	keep := nextKeep(math.Float64frombits(p.keepBits.Load()), p.maxShare, wall, proc-p.lastProc, dThr, priority.CPUs())
	p.keepBits.Store(math.Float64bits(keep))
	p.cpu.Add(int64(dThr))
	p.lastProc, p.lastThr = proc, thr
}

// nextRate smooths the completion rate over about ten ticks: completions
// arrive in bursts, one per head cut.
func nextRate(prev, cur float64) float64 {
	if prev == 0 {
		return cur
	}
	return 0.9*prev + 0.1*cur
}

// nextShare moves the whole-trace share only on a change of more than a
// fifth: a trace declined when memory pressure cut it early and wanted once
// complete must be read back from blocks, so the share must not jitter.
func nextShare(prev, target float64) float64 {
	if target >= 1 || target < 0.8*prev || target > 1.25*prev {
		return target
	}
	return prev
}

// wholeShare is the share of traces decoded for the analytics at a rate of
// completions per second (perSecond 0: all).
func wholeShare(perSecond, rate float64) float64 {
	if perSecond <= 0 || rate <= perSecond {
		return 1
	}
	return perSecond / rate
}

// nextKeep is the sampling controller: over an interval of wall time wall
// the process used procCPU and the worker workerCPU. Only while the process
// is CPU-bound (≥ 90 % of its cores) is the worker held to share of it;
// then keep shrinks in proportion to the excess. Otherwise keep recovers
// by half each interval, so sampling ends soon after the load does.
func nextKeep(keep, share float64, wall, procCPU, workerCPU time.Duration, procs int) float64 {
	if share <= 0 || share >= 1 || wall <= 0 {
		return 1
	}
	saturated := float64(procCPU) >= 0.9*float64(wall)*float64(procs)
	budget := share * float64(procCPU)
	switch {
	case saturated && float64(workerCPU) > budget:
		keep *= budget / float64(workerCPU)
	case !saturated || float64(workerCPU) < 0.8*budget:
		keep *= 1.5
	}
	return min(1, max(minKeep, keep))
}

// analyze runs every detector with the server's history.
func (p *pipeline) analyze(spans []model.Span) analyze.Result {
	return analyze.Analyze(spans, analyze.Options{History: p.history, Detectors: p.detectors})
}

// explain builds the answer for a trace around its stored findings.
func (p *pipeline) explain(spans []model.Span, stored []analyze.Finding) analyze.Result {
	return analyze.Explain(spans, stored, p.history)
}

// detectorsOf builds the detectors once from analysis.detectors (nil: the
// defaults). Detectors hold only their thresholds, so the worker and the
// API's on-demand analyses share them.
func detectorsOf(cfg config.Analysis) ([]analyze.Detector, error) {
	if cfg.Detectors.Kind == 0 {
		return nil, nil
	}
	doc, err := yaml.Marshal(&cfg.Detectors)
	if err != nil {
		return nil, fmt.Errorf("analysis.detectors: %w", err)
	}
	ds, err := analyze.LoadDetectorConfig(doc)
	if err != nil {
		return nil, fmt.Errorf("analysis.detectors: %w", err)
	}
	return ds, nil
}

// TraceFindings implements v1.FindingsLookup.
func (p *pipeline) TraceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error) {
	if p.findings == nil {
		return nil, false, nil
	}
	return p.findings.traceFindings(ctx, id)
}

func (p *pipeline) registerRoutes(*http.ServeMux) {}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/alerting"
	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/jaeger"
	v1 "github.com/tracedx/tracedx/internal/api/v1"
	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/logstore"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/servicegraph"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/systemic"
	"github.com/tracedx/tracedx/internal/tenant"
	"github.com/tracedx/tracedx/internal/web"
)

const shutdownGrace = 10 * time.Second

// timeNow is the clock of observation and of the cross-trace detectors'
// evaluations; tests replace it.
var timeNow = time.Now

// New opens storage and builds every part; Start binds the listeners.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if cfg.Multitenancy.Enabled {
		return newMultiTenant(ctx, cfg, log)
	}
	s := &Server{cfg: cfg, log: log, reg: newRegistry()}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	dir := func(sub string) string { return filepath.Join(cfg.DataDir, sub) }
	// A bad detector config is refused before anything is opened.
	detectors, err := detectorsOf(cfg.Analysis)
	if err != nil {
		return nil, err
	}
	alertRules, err := alertRulesOf(cfg.Alerting)
	if err != nil {
		return nil, err
	}
	sec, err := newSecurity(s, cfg)
	if err != nil {
		return nil, err
	}

	if err := s.syncState(ctx, cfg, dir); err != nil {
		return nil, err
	}
	// Analytics first: the store's completion hook feeds them.
	metrics, err := red.New(red.Options{Dir: dir("metrics"), Retention: cfg.MetricsRetention(), ExemplarLabel: cfg.Analytics.ExemplarLabel}, log.With("component", "red"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, metrics.Close)
	s.background = append(s.background, metrics.Start)
	graph, err := servicegraph.New(servicegraph.Options{Dir: dir("servicegraph"), Retention: cfg.MetricsRetention(), NodeStats: metrics},
		log.With("component", "servicegraph"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, graph.Close)
	s.background = append(s.background, graph.Start)
	bl := cfg.Analytics.Baseline
	history, err := baseline.New(baseline.Options{Dir: dir("baselines"), HalfLife: bl.HalfLife,
		Robust: baseline.Robust{Window: bl.Window, AnomalyFactor: bl.AnomalyFactor, AcceptAfter: bl.AcceptAfter, ReleaseAfter: bl.ReleaseAfter}},
		log.With("component", "baseline"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, history.Close)
	s.background = append(s.background, history.Start)
	s.reg.MustRegister(metrics, graph, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_baseline_shifted_keys",
		Help: "Operations, statement shapes and entry operations whose recent windows are held out of their baseline as anomalous (an ongoing incident or a shift not yet accepted)."},
		func() float64 { return float64(history.ShiftCount()) }))

	pipe := newPipeline(s, history)
	// Query requests go ahead of the analysis worker (internal/priority).
	queries := &priority.Gate{}
	pipe.gate = queries
	pipe.detectors = detectors
	findingsBucket, err := s.nodeBucket(ctx, cfg, "findings", dir("findings-spool"))
	if err != nil {
		return nil, err
	}
	fs, err := findingstore.Open(findingstore.Options{Dir: dir("findings"), Retention: cfg.Retention.Findings, SyncInterval: 200 * time.Millisecond, Logger: log,
		TraceAvailable: s.hasTrace, Bucket: findingsBucket})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, fs.Close)
	s.background = append(s.background, func(ctx context.Context) { fs.Run(ctx) })
	// Every stored finding is counted on /metrics (tracedx_findings_total).
	findingsCounter := alerting.NewFindingsCounter(s.reg)
	findingsSink := findingsCounter.Wrap(fs)
	// One clock for observing and evaluating, so a test that moves it
	// moves both.
	sys := systemic.New(systemic.Config{Dir: dir("systemic"), EvalInterval: systemicEvalInterval}, findingsSink, func() time.Time { return timeNow() }, log)
	s.background = append(s.background, func(ctx context.Context) { sys.Run(ctx) })
	pipe.findings = &storedFindings{fs: fs, sink: findingsSink, sys: sys, once: newStoredOnce()}
	// Alerts name the root-cause ranking's top cause; the ranking reads
	// through the API's dependencies, which are built further down.
	var rankDeps *v1.Deps
	rankCulprit := func(ctx context.Context, service, operation string, from, to time.Time) (analyze.Culprit, bool) {
		if rankDeps == nil {
			return analyze.Culprit{}, false
		}
		rep, err := v1.RankRootCause(ctx, *rankDeps, service, operation, from, to)
		if err != nil {
			return analyze.Culprit{}, false
		}
		return culpritOfRanking(rep)
	}
	alertRoutes, alerts, err := s.startAlerting(alertRules, metrics, fs, findingsCounter, rankCulprit)
	if err != nil {
		return nil, err
	}

	// Without analysis and analytics nobody reads completed traces: the
	// store then neither keeps them for completion nor decodes them.
	var onComplete func(engine.CompletedTrace)
	var spanFlags func(*model.Span) uint32
	var wantSpans func(model.TraceID, uint32) bool
	var takeSpans func(engine.Completing) bool
	if pipe.active() {
		onComplete, takeSpans = pipe.traceComplete, pipe.takeSpans
	}
	if cfg.Analytics.Enabled {
		// The flags carry a root's failure and say which traces the
		// systemic detectors need whole. Without the detectors, only the
		// analytics read completed traces, and most need no decoding.
		spanFlags = systemic.SpanFlags
		if !cfg.Analysis.Enabled {
			wantSpans = pipe.wantSpans
		}
	}
	ring, err := clusterRing(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Listen.AllowedHosts = withPeerHosts(cfg)
	blocks, err := s.blockStorage(ctx, cfg, dir("traces"))
	if err != nil {
		return nil, err
	}
	archive, err := s.openSummaryArchive(dir("summaries"), cfg.Retention.Findings, log)
	if err != nil {
		return nil, err
	}
	engOpts := engine.Options{
		Dir:             dir("traces"),
		Storage:         blocks,
		IdleTimeout:     cfg.Storage.TraceIdleTimeout,
		MaxOpen:         cfg.Storage.MaxOpen(),
		OnTraceComplete: onComplete,
		SpanFlags:       spanFlags,
		WantSpans:       wantSpans,
		TakeSpans:       takeSpans,
		HeadMaxBytes:    cfg.Storage.HeadMaxBytes,
		Retention:       cfg.TraceRetention(),
		UnkeptRetention: cfg.UnkeptTraceRetention(),
		MaxDiskBytes:    cfg.Storage.MaxDiskBytes,
		CompactInterval: cfg.Storage.CompactInterval,
		WALGroupWait:    cfg.Storage.WALGroupWait,
		ExtraDiskBytes:  func() int64 { return fs.DiskBytes() + archive.Bytes() },
		Logger:          log,
		Now:             func() time.Time { return retentionNow() },
		OnExpire:        archiveExpired(archive),
		// Compaction, the head cut and completion stand aside while
		// queries run, a few ms at a time so a stream of queries slows
		// them without stopping them.
		YieldBackground: func(ctx context.Context) { queries.Yield(ctx, 5*time.Millisecond) },
		MemoryTight:     memoryTight(cfg.Admission),
	}
	clusterEngineOptions(&engOpts, cfg, ring)
	eng, err := engine.Open(ctx, engOpts)
	if err != nil {
		return nil, fmt.Errorf("opening storage in %s: %w", dir("traces"), err)
	}
	s.store = eng
	// A trace stays open for its idle timeout and, on average, half the
	// wait for the next cut.
	pipe.openTraces, pipe.idle = eng.OpenTraces, cfg.Storage.TraceIdleTimeout+engOpts.CutInterval/2
	s.closers = append(s.closers, eng.Close)
	s.reg.MustRegister(engineCollector{eng})
	s.withSampling(pipe, history, eng)

	logs, err := logstore.OpenWith(logstore.Options{Dir: dir("logs"), MaxTraces: 100_000,
		Retention: cfg.Storage.Retention, KeepUncorrelated: cfg.Logs.KeepUncorrelated})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, logs.Close)
	s.background = append(s.background, func(ctx context.Context) {
		logs.RunPruning(ctx, 10*time.Minute, func(err error) { log.Error("pruning logs", "err", err) })
	})

	sink := &analyticsSink{store: eng}
	if cfg.Analytics.Enabled {
		sink.observers = []func([]model.Span){metrics.Observe, graph.Observe,
			func(spans []model.Span) { sys.ObserveSpans(timeNow(), spans) }}
	}
	peer := sec.peer
	peer.Tenant, _ = tenant.FromContext(ctx)
	ingestSink, st, err := s.joinCluster(cfg.Cluster, ring, eng, sink, peer, log)
	if err != nil {
		return nil, err
	}
	admit := newAdmission(cfg.Admission, eng, pipe.queueFull, log, s.reg)
	inCfg := ingestConfigOf(cfg)
	inCfg.Admit, inCfg.RetryAfter = admit.Admit, cfg.Admission.RetryAfter
	sec.ingestConfig(&inCfg)
	dedupAtOwner(&inCfg, cfg.Cluster, ring)
	// A tenant's instance is fed through the cluster's sink too, so its
	// spans reach their owner.
	s.sink, s.logSink = ingestSink, logs
	in, err := ingest.New(inCfg, ingestSink, logs, log, s.reg)
	if err != nil {
		return nil, err
	}
	s.ingest = in

	jaegerAPI := jaeger.NewHandler(st, jaeger.Options{
		Sampled:       pipe.sampledReason,
		Logger:        log.With("component", "jaeger-api"),
		MaxTraceSpans: cfg.Query.MaxAPITraceSpans,
		Metrics: jaeger.MetricsFunc(func(ctx context.Context, kind string, q jaeger.MetricsQuery) (*jaeger.MetricFamily, error) {
			fam, err := metrics.JaegerMetrics(ctx, kind, red.JaegerParams{Services: q.Services, SpanKinds: q.SpanKinds,
				GroupByOperation: q.GroupByOperation, EndTs: q.End, Lookback: q.Lookback, Step: q.Step, RatePer: q.RatePer, Quantile: q.Quantile})
			if err != nil {
				if errors.Is(err, red.ErrBadQuery) {
					return nil, jaeger.BadRequest(err)
				}
				return nil, err
			}
			return fam, nil
		}),
		Dependencies: jaeger.DependencyFunc(func(ctx context.Context, end time.Time, lookback time.Duration) ([]jaeger.DependencyLink, error) {
			deps, err := graph.Dependencies(ctx, end, lookback)
			if err != nil {
				return nil, err
			}
			out := make([]jaeger.DependencyLink, len(deps))
			for i, d := range deps {
				out[i] = jaeger.DependencyLink{Parent: d.Parent, Child: d.Child, CallCount: d.CallCount}
			}
			return out, nil
		}),
	})

	mux := http.NewServeMux()
	routes := []func(*http.ServeMux){metrics.RegisterRoutes, graph.RegisterRoutes, history.RegisterRoutes, pipe.registerRoutes, logs.RegisterRoutes}
	routes = append(routes, s.extraRoutes(st, pipe)...)
	if alertRoutes != nil {
		routes = append(routes, alertRoutes)
	}
	gone := &goneSummaries{a: archive, stored: s.hasTrace}
	deps := v1.Deps{
		Store:            st,
		Analyzer:         pipe.analyze,
		Explain:          pipe.explain,
		Findings:         pipe,
		Routes:           routes,
		Logger:           log.With("component", "api"),
		MaxTraceSpans:    cfg.Query.MaxTraceSpans,
		MaxAnalysisSpans: cfg.Query.MaxAnalysisSpans,
		QueryTimeout:     cfg.Query.Timeout,
		Sampled:          pipe.sampledReason,
		Archive:          gone,
		TraceRetention:   traceRetention(cfg),
	}
	if sf, ok := pipe.findings.(*storedFindings); ok {
		deps.WindowFindings = sf
	}
	rankDeps = &deps
	apiV1 := v1.NewHandler(deps)
	mux.Handle("/api/v1/", queries.Middleware(apiV1))
	mux.Handle("/api/", queries.Middleware(jaegerAPI))
	down := s.peerReplicas(cfg, ring, dir)
	clusterRoutes(mux, ring, eng, queries.Middleware(apiV1), peer, down, log)
	parts := clusterAggregates(mux, st, eng, metrics, graph, fs, gone, peer, down, log)
	members := s.clusterMembers(ring, peer)
	s.watchPeerCopies(down, members)
	clusterAlerts(mux, parts, st, alerts, members, peer, down)
	s.clusterSystemic(parts, st, sys, members)
	mux.Handle("GET /metrics", metricsHandler(s.reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", readyz(fs))
	// The UI's TraceQL box calls the Tempo API on its own origin, so it is
	// mounted under web.TempoPrefix too, besides its own port.
	th := tempoHandler(st, pipe, cfg.Query)
	if th != nil {
		th = queries.Middleware(th)
		mux.Handle(web.TempoPrefix+"/", http.StripPrefix(web.TempoPrefix, th))
	}
	mux.Handle("/", uiHandler())
	sec.routes(mux)
	s.listenWrap = sec.wrap
	s.addHTTP("http", cfg.Listen.HTTP, withRecover(log, guard(cfg.Listen.HTTP, cfg.Listen.AllowedHosts, sec.query(reportAnswers(ring, mux)))))
	if th != nil {
		s.addHTTP("tempo", cfg.Listen.Tempo, withRecover(log, guard(cfg.Listen.Tempo, cfg.Listen.AllowedHosts, sec.query(reportAnswers(ring, tempoWithGRPC(th))))))
	}
	s.background = append(s.background, pipe.run)
	ok = true
	return s, nil
}

// readyz answers 200 once every query sees all stored data, 503 with what
// is still loading before. The listeners open before slow loads finish:
// ingest and most queries work meanwhile.
func readyz(fs *findingstore.Store) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if n := fs.Unindexed(); n > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "indexing findings: %d segment(s) left; finding queries are incomplete until then\n", n)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}
}

// analyticsSink writes durably, then feeds the per-span analytics. The
// analytics run after the write so nothing is counted that was not stored.
type analyticsSink struct {
	store interface {
		Write(context.Context, []model.Span) error
	}
	observers []func([]model.Span)
}

func (a *analyticsSink) Write(ctx context.Context, spans []model.Span) error {
	if err := a.store.Write(ctx, spans); err != nil {
		return err
	}
	for _, o := range a.observers {
		o(spans)
	}
	return nil
}

// withRecover turns a handler panic into a 500 so one bad request cannot
// take the server down.
func withRecover(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// engineCollector exports the storage engine's counters.
type engineCollector struct{ e *engine.Engine }

var (
	descSpansWritten  = prometheus.NewDesc("tracedx_store_spans_written_total", "Spans written durably.", nil, nil)
	descOverloaded    = prometheus.NewDesc("tracedx_store_overloaded_total", "Writes refused by back-pressure.", nil, nil)
	descFsyncs        = prometheus.NewDesc("tracedx_store_wal_fsyncs_total", "WAL fsyncs (group commits).", nil, nil)
	descCompleted     = prometheus.NewDesc("tracedx_store_traces_completed_total", "Traces that went idle (or were open for storage.trace_max_open) and were handed to analysis.", nil, nil)
	descCompletedOpen = prometheus.NewDesc("tracedx_store_traces_completed_open_total", "Traces completed while still receiving spans: open for storage.trace_max_open, never idle.", nil, nil)
	descStalls        = prometheus.NewDesc("tracedx_store_write_stalls_total", "Writes that waited for a head cut because the head was over half of storage.head_max_bytes.", nil, nil)
	descStallSeconds  = prometheus.NewDesc("tracedx_store_write_stall_seconds_total", "Time writes waited for a head cut (tracedx_store_write_stalls_total), summed.", nil, nil)
	descReadBacks     = prometheus.NewDesc("tracedx_store_completion_read_backs_total", "Completed traces whose spans were read back from blocks: cut early under memory pressure and not kept in memory.", nil, nil)
	descBlocks        = prometheus.NewDesc("tracedx_store_blocks", "Immutable blocks on disk.", nil, nil)
	descBlockBytes    = prometheus.NewDesc("tracedx_store_block_bytes", "Bytes of blocks on disk.", nil, nil)
	descWALBytes      = prometheus.NewDesc("tracedx_store_wal_bytes", "Bytes of write-ahead log on disk.", nil, nil)
	descHeadSpans     = prometheus.NewDesc("tracedx_store_head_spans", "Spans buffered in the head.", nil, nil)
	descBgErrors      = prometheus.NewDesc("tracedx_store_background_errors_total", "Errors of flush, compaction and retention jobs.", nil, nil)
	descDiskRefused   = prometheus.NewDesc("tracedx_store_disk_refused_total", "Writes refused because the disk was full or storage.max_disk_bytes reached.", nil, nil)
	descWALFailures   = prometheus.NewDesc("tracedx_store_wal_failures_total", "Failed WAL writes and fsyncs (each answered with an error, the WAL recovers).", nil, nil)
	descDiskFull      = prometheus.NewDesc("tracedx_store_disk_full", "1 while writes fail for lack of disk space or quota.", nil, nil)
	descPageHits      = prometheus.NewDesc("tracedx_store_trace_page_hits_total", "Pages of traces read from Parquet blocks found decoded in the page cache.", nil, nil)
	descPageMisses    = prometheus.NewDesc("tracedx_store_trace_page_misses_total", "Pages of traces read from Parquet blocks that had to be read and decoded.", nil, nil)
	descPageBytes     = prometheus.NewDesc("tracedx_store_trace_page_cache_bytes", "Decoded pages held by the page cache of trace reads.", nil, nil)
	descPagesPruned   = prometheus.NewDesc("tracedx_store_search_pages_pruned_total", "Pages that searches with span filters left unread because the pages' bounds ruled their rows out.", nil, nil)
	descScansAhead    = prometheus.NewDesc("tracedx_store_search_blocks_scanned_ahead_total", "Blocks on object storage that searches with span filters scanned ahead of the walk, to overlap their reads.", nil, nil)
)

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSpansWritten, descOverloaded, descFsyncs, descCompleted, descCompletedOpen, descStalls, descStallSeconds, descReadBacks, descBlocks, descBlockBytes, descWALBytes, descHeadSpans, descBgErrors, descDiskRefused, descWALFailures, descDiskFull, descPageHits, descPageMisses, descPageBytes, descPagesPruned, descScansAhead} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.e.Stats()
	ch <- prometheus.MustNewConstMetric(descSpansWritten, prometheus.CounterValue, float64(st.SpansWrittenTotal))
	ch <- prometheus.MustNewConstMetric(descOverloaded, prometheus.CounterValue, float64(st.OverloadedTotal))
	ch <- prometheus.MustNewConstMetric(descFsyncs, prometheus.CounterValue, float64(st.WALFsyncsTotal))
	ch <- prometheus.MustNewConstMetric(descCompleted, prometheus.CounterValue, float64(st.TracesCompletedTotal))
	ch <- prometheus.MustNewConstMetric(descCompletedOpen, prometheus.CounterValue, float64(st.TracesCompletedOpenTotal))
	ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(st.WriteStallsTotal))
	ch <- prometheus.MustNewConstMetric(descStallSeconds, prometheus.CounterValue, st.WriteStallSeconds)
	ch <- prometheus.MustNewConstMetric(descReadBacks, prometheus.CounterValue, float64(st.CompletionReadBacksTotal))
	ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(st.Blocks))
	ch <- prometheus.MustNewConstMetric(descBlockBytes, prometheus.GaugeValue, float64(st.BlockBytes))
	ch <- prometheus.MustNewConstMetric(descWALBytes, prometheus.GaugeValue, float64(st.WALBytes))
	ch <- prometheus.MustNewConstMetric(descHeadSpans, prometheus.GaugeValue, float64(st.HeadSpans))
	ch <- prometheus.MustNewConstMetric(descBgErrors, prometheus.CounterValue, float64(st.BackgroundErrorsTotal))
	ch <- prometheus.MustNewConstMetric(descDiskRefused, prometheus.CounterValue, float64(st.DiskRefusedTotal))
	ch <- prometheus.MustNewConstMetric(descWALFailures, prometheus.CounterValue, float64(st.WALFailuresTotal))
	full := 0.0
	if st.DiskFull {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskFull, prometheus.GaugeValue, full)
	ch <- prometheus.MustNewConstMetric(descPageHits, prometheus.CounterValue, float64(st.TracePageHitsTotal))
	ch <- prometheus.MustNewConstMetric(descPagesPruned, prometheus.CounterValue, float64(st.SearchPagesPrunedTotal))
	ch <- prometheus.MustNewConstMetric(descScansAhead, prometheus.CounterValue, float64(st.SearchBlocksScannedAheadTotal))
	ch <- prometheus.MustNewConstMetric(descPageMisses, prometheus.CounterValue, float64(st.TracePageMissesTotal))
	ch <- prometheus.MustNewConstMetric(descPageBytes, prometheus.GaugeValue, float64(st.TracePageCacheBytes))
}

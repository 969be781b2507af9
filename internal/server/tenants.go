package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/internal/auth"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/store/s3store"
	"github.com/tracedx/tracedx/internal/tenant"
)

// inProcess marks a tenant instance's listeners: their handlers are served
// by the outer server, never bound.
const inProcess = "in-process"

// tenantServer is one tenant's instance: a whole server (storage,
// analysis, analytics, findings, query handlers) without listeners,
// under data_dir/tenants/<id>.
type tenantServer struct {
	*Server
	sink    ingest.Sink
	logs    ingest.LogSink
	limiter *spanRate
	// discardedRate and discardedSize count the spans its limits refuse.
	discardedRate, discardedSize prometheus.Counter
}

func (t *tenantServer) Close() { t.Server.Close() }

// handler returns the tenant's handler of listener name ("http", "tempo").
func (t *tenantServer) handler(name string) http.Handler {
	for _, h := range t.http {
		if h.name == name {
			return h.handler
		}
	}
	return nil
}

// tenantConfig is the configuration of one tenant's instance.
func tenantConfig(cfg config.Config, id string) config.Config {
	c := cfg
	c.DataDir = filepath.Join(cfg.DataDir, "tenants", id)
	c.Listen = config.Listen{HTTP: inProcess, Tempo: inProcess}
	c.Multitenancy = config.Multitenancy{}
	// The outer server authenticates; the instance keeps the TLS files
	// only to dial its cluster peers (its listeners are never bound).
	c.Auth, c.InsecureListen = config.Auth{}, true
	// Tenants share a bucket under prefixes of their own: a tenant's
	// engine lists and loads only its own blocks.
	c.Storage.S3.Prefix = path.Join(cfg.Storage.S3.Prefix, "tenants", id)
	if r := cfg.Multitenancy.LimitsOf(id).Retention; r > 0 {
		// The tenant's retention bounds both tiers: the traces sampling
		// did not keep never outlive the kept ones.
		c.Storage.Retention, c.Retention.KeptTraces = r, r
		c.Retention.Traces = min(c.Retention.Traces, r)
	}
	return c
}

// newMultiTenant builds the outer server of multitenancy: listeners,
// authentication and a router to the tenants' instances.
func newMultiTenant(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log, reg: newRegistry()}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	sec, err := newSecurity(s, cfg)
	if err != nil {
		return nil, err
	}
	discarded := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_tenant_discarded_spans_total",
		Help: "Spans refused or dropped for a tenant's limits: rate_limited (ingest_spans_per_second, refused with 429), trace_too_large (max_spans_per_trace, max_trace_bytes)."},
		[]string{"tenant", "reason"})
	s.reg.MustRegister(discarded)
	ring, err := clusterRing(cfg)
	if err != nil {
		return nil, err
	}
	nodes := s.clusterMembers(ring, sec.peer)
	router := tenant.NewRouter(func(id string) (*tenantServer, error) {
		// The context names the tenant: a cluster instance tells its peers.
		sub, err := New(tenant.WithID(context.WithoutCancel(ctx), id), tenantConfig(cfg, id), log.With("tenant", id))
		if err != nil {
			return nil, err
		}
		sub.startBackground(context.Background())
		return &tenantServer{Server: sub, sink: sub.sink, logs: sub.logSink, limiter: newSpanRate(cfg.Multitenancy.LimitsOf(id), nodeCount(nodes)),
			discardedRate: discarded.WithLabelValues(id, "rate_limited"), discardedSize: discarded.WithLabelValues(id, "trace_too_large")}, nil
	})
	s.closers = append(s.closers, router.Close)
	if err := s.openStoredTenants(ctx, cfg, router); err != nil {
		return nil, err
	}

	sink := &tenantSink{router: router}
	inCfg := ingestConfigOf(cfg)
	sec.ingestConfig(&inCfg)
	dedupAtOwner(&inCfg, cfg.Cluster, ring)
	sink.forwarded, sink.ownedElsewhere = inCfg.Forwarded, inCfg.ForwardsTrace
	authHTTP := inCfg.HTTPMiddleware
	inCfg.HTTPMiddleware = func(h http.Handler) http.Handler {
		h = tenant.HTTP(h)
		if authHTTP != nil {
			h = authHTTP(h)
		}
		return h
	}
	inCfg.GRPCOptions = append(inCfg.GRPCOptions,
		grpc.ChainUnaryInterceptor(tenant.UnaryInterceptor()), grpc.ChainStreamInterceptor(tenant.StreamInterceptor()))
	inCfg.DedupScope = func(ctx context.Context) string {
		id, _ := tenant.FromContext(ctx)
		return id
	}
	in, err := ingest.New(inCfg, sink, sink, log, s.reg)
	if err != nil {
		return nil, err
	}
	s.ingest = in

	route := func(listener string) http.Handler {
		return tenant.HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := tenant.FromContext(r.Context())
			t, err := router.Get(id)
			if err != nil {
				log.Error("the tenant could not be opened", "tenant", id, "err", err)
				http.Error(w, `{"error":"the tenant's storage could not be opened"}`, http.StatusInternalServerError)
				return
			}
			t.handler(listener).ServeHTTP(w, r)
		}), "/healthz", auth.LoginPath, auth.LogoutPath)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	sec.routes(mux)
	memberRoutes(mux, ring, sec.peer)
	tenantHTTP, processMetrics := route("http"), metricsHandler(s.reg)
	// /metrics without a tenant is the operator's: process and ingest
	// metrics. With one, the tenant's own series.
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, _ := auth.FromContext(r.Context()); id.Tenant == "" && r.Header.Get(tenant.Header) == "" {
			processMetrics.ServeHTTP(w, r)
			return
		}
		tenantHTTP.ServeHTTP(w, r)
	}))
	mux.Handle("/", tenantHTTP)
	s.listenWrap = sec.wrap
	s.addHTTP("http", cfg.Listen.HTTP, withRecover(log, sec.query(mux)))
	s.addHTTP("tempo", cfg.Listen.Tempo, withRecover(log, sec.query(route("tempo"))))
	ok = true
	return s, nil
}

// bucketTenantsEvery is how often a node looks for tenants that other
// nodes brought to the bucket (a variable for tests).
var bucketTenantsEvery = time.Minute

// tenantsOpenedAtOnce bounds how many tenants open together at start:
// each open replays its tenant's WAL and lists its blocks, so one after
// another the start took the sum over all tenants, while all at once
// would read every WAL into memory together.
const tenantsOpenedAtOnce = 4

// openStoredTenants opens, before the node listens, the tenants that
// have data under data_dir/tenants and, with the s3 backend, in the
// bucket (<prefix>/tenants/<id>/), so their retention and compaction run
// whether or not they are queried; a tenant that fails to open stops the
// start. The bucket is listed again every bucketTenantsEvery: a node
// owns a share of every tenant's blocks for compaction and retention,
// and a tenant that never sends to this node, or whose local directory
// was lost, would otherwise keep those blocks uncompacted and unexpired.
func (s *Server) openStoredTenants(ctx context.Context, cfg config.Config, router *tenant.Router[*tenantServer]) error {
	var ids []string
	if ents, err := os.ReadDir(filepath.Join(cfg.DataDir, "tenants")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				ids = append(ids, e.Name())
			}
		}
	}
	bucket, err := s.bucketTenants(ctx, cfg)
	if err != nil {
		return err
	}
	if bucket != nil {
		listed, err := bucket(ctx)
		if err != nil {
			return err
		}
		ids = append(ids, listed...)
	}
	if err := openTenants(router.Get, ids); err != nil {
		return err
	}
	if bucket == nil {
		return nil
	}
	s.background = append(s.background, func(ctx context.Context) {
		periodic.Run(ctx, bucketTenantsEvery, func(ctx context.Context) error {
			ids, err := bucket(ctx)
			if err != nil {
				return err
			}
			return openTenants(router.Get, ids)
		}, func(err error) { s.log.Warn("opening the bucket's tenants", "err", err) })
	})
	return nil
}

// bucketTenants returns, with the s3 backend, what lists the tenants in
// the bucket (nil otherwise). The outer server of multitenancy has no
// block storage of its own to list with: the tenants' storages sit under
// their own prefixes. This one reads only, so it needs no spool
// directory.
func (s *Server) bucketTenants(ctx context.Context, cfg config.Config) (func(context.Context) ([]string, error), error) {
	if cfg.Storage.Backend != "s3" {
		return nil, nil
	}
	c := cfg.Storage.S3
	st, err := s3store.New(ctx, s3store.Config{
		Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, Logger: s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("listing the bucket's tenants: %w", err)
	}
	return func(ctx context.Context) ([]string, error) {
		ids, err := st.Dirs(ctx, "tenants")
		if err != nil {
			return nil, fmt.Errorf("listing the bucket's tenants: %w", err)
		}
		return ids, nil
	}, nil
}

// openTenants opens the tenants of ids with open, tenantsOpenedAtOnce at
// a time, skipping names that are no tenant id and repeated ones. It
// tries every tenant even after a failure, so one broken tenant neither
// keeps the others closed nor hides the other failures, and returns them
// all.
func openTenants(open func(id string) (*tenantServer, error), ids []string) error {
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !tenant.ValidID(id) })
	slices.Sort(ids)
	ids = slices.Compact(ids)
	// Indexed by tenant, so the failures read in the same order each time.
	errs := make([]error, len(ids))
	slots := make(chan struct{}, tenantsOpenedAtOnce)
	var wg sync.WaitGroup
	for i, id := range ids {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			_, errs[i] = open(id)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ingestConfigOf maps the configuration's ingest settings.
func ingestConfigOf(cfg config.Config) ingest.Config {
	return ingest.Config{
		GRPCAddr:               cfg.Listen.OTLPGRPC,
		HTTPAddr:               cfg.Listen.OTLPHTTP,
		ZipkinAddr:             cfg.Listen.Zipkin,
		MaxRequestBytes:        cfg.Ingest.MaxRequestBytes,
		MaxSpansPerRequest:     cfg.Ingest.MaxSpansPerRequest,
		MaxAttributesPerSpan:   cfg.Ingest.MaxAttributes,
		MaxEventsPerSpan:       cfg.Ingest.MaxEventsPerSpan,
		MaxLinksPerSpan:        cfg.Ingest.MaxLinksPerSpan,
		MaxAttributeDepth:      cfg.Ingest.MaxAttributeDepth,
		MaxAttributeValueBytes: cfg.Ingest.MaxAttributeValueBytes,
		MaxSpansPerTrace:       cfg.Ingest.MaxSpansPerTrace,
		MaxSpanDuration:        cfg.Ingest.MaxSpanDuration,
		DedupWindowSpans:       cfg.Ingest.DedupWindowSpans,
	}
}

// tenantSink routes ingested spans and logs to the tenant of the request.
// In a cluster it is a SplitSink: a request is split by owner with the
// tenant's forwarder, so a multi-tenant node forwards the other owners'
// parts as they came, as a single-tenant one does. The tenant's rate is
// counted by Admit, once for the whole request on the node its sender
// reached; the limits on a trace's spans and bytes by Write on the
// trace's owner, the one node that sees every span of it.
type tenantSink struct {
	router *tenant.Router[*tenantServer]
	// forwarded tells spans a cluster peer forwarded (nil: no cluster).
	forwarded func(context.Context) bool
	// ownedElsewhere tells the traces another node stores (nil: every
	// trace is stored here, on a single node or without cluster.forward).
	ownedElsewhere func(model.TraceID) bool
}

func (t *tenantSink) of(ctx context.Context) (*tenantServer, error) {
	id, ok := tenant.FromContext(ctx)
	if !ok {
		return nil, errors.New("no tenant in the request context")
	}
	// The router's error names the tenant already.
	return t.router.Get(id)
}

// Admit counts spans against the tenant's rate (ingest.RateSink): ingest
// asks for the spans of a request this node received from its sender,
// forwarded ones included, and never for a peer's.
func (t *tenantSink) Admit(ctx context.Context, spans int) error {
	ts, err := t.of(ctx)
	if err != nil {
		return err
	}
	if !ts.limiter.allow(spans, time.Now()) {
		ts.discardedRate.Add(float64(spans))
		// 429, not the 503 of an overloaded server: the sender is over its
		// own limit, and Retry-After tells it when to try again.
		return fmt.Errorf("tenant ingest rate limit of %g spans/s exceeded, retry later: %w", ts.limiter.perSecond, ingest.ErrRateLimited)
	}
	return nil
}

func (t *tenantSink) Write(ctx context.Context, spans []model.Span) error {
	ts, err := t.of(ctx)
	if err != nil {
		return err
	}
	// A peer forwards spans of this node's traces only. Of a sender's,
	// those of other nodes' traces are counted by their owner when it
	// receives them: counted here as well, they would be cut by what this
	// node alone saw of their trace.
	elsewhere := t.ownedElsewhere
	if t.forwarded != nil && t.forwarded(ctx) {
		elsewhere = nil
	}
	kept := ts.limiter.trimTraces(spans, time.Now(), elsewhere)
	ts.discardedSize.Add(float64(len(spans) - len(kept)))
	return ts.sink.Write(ctx, kept)
}

// Owners splits the request with the tenant's forwarder (nil without
// cluster.forward): the parts go to the same tenant on their owners.
func (t *tenantSink) Owners(ctx context.Context) (n, self int, owner func(model.TraceID) int) {
	ts, err := t.of(ctx)
	if err != nil {
		// Decoded whole, the request meets the same error in Write.
		return 0, 0, nil
	}
	sp, ok := ts.sink.(ingest.SplitSink)
	if !ok {
		return 0, 0, nil
	}
	return sp.Owners(ctx)
}

// WriteEncoded forwards a part of a request split by Owners. Its spans
// are the owner's to trim: its trace limits see them there.
func (t *tenantSink) WriteEncoded(ctx context.Context, node int, req []byte, spans int) error {
	ts, err := t.of(ctx)
	if err != nil {
		return err
	}
	sp, ok := ts.sink.(ingest.SplitSink)
	if !ok {
		return fmt.Errorf("tenant's sink %T does not forward encoded requests", ts.sink)
	}
	return sp.WriteEncoded(ctx, node, req, spans)
}

func (t *tenantSink) WriteLogs(ctx context.Context, recs []ingest.LogRecord) error {
	ts, err := t.of(ctx)
	if err != nil {
		return err
	}
	return ts.logs.WriteLogs(ctx, recs)
}

// spanRate enforces a tenant's ingest rate (a token bucket of one
// second's worth) and its bounds on a trace's spans and bytes. In a
// cluster the rate is the whole cluster's: each node admits its share,
// the limit over the nodes that answer (Tempo's "global" strategy), so a
// load balancer spreading a tenant's traffic evenly gets the limit in all.
type spanRate struct {
	perSecond float64
	maxSpans  int
	maxBytes  int64
	// nodes is how many nodes share the rate (nil: one).
	nodes func() int

	mu     sync.Mutex
	tokens float64
	last   time.Time
	// traces counts the stored spans and bytes of recent traces; it is
	// reset every spanCountWindow to stay bounded.
	traces map[model.TraceID]traceUse
	epoch  time.Time
}

type traceUse struct {
	spans int
	bytes int64
}

func newSpanRate(l config.TenantLimits, nodes func() int) *spanRate {
	r := &spanRate{perSecond: l.IngestSpansPerSecond, maxSpans: l.MaxSpansPerTrace, maxBytes: l.MaxTraceBytes, nodes: nodes}
	r.tokens = r.share()
	return r
}

// share is the rate this node admits.
func (r *spanRate) share() float64 {
	if r.nodes == nil {
		return r.perSecond
	}
	return r.perSecond / float64(max(1, r.nodes()))
}

func (r *spanRate) allow(n int, now time.Time) bool {
	if r.perSecond <= 0 {
		return true
	}
	rate := r.share()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() {
		r.tokens = min(rate, r.tokens+now.Sub(r.last).Seconds()*rate)
	}
	r.last = now
	if float64(n) > r.tokens {
		return false
	}
	r.tokens -= float64(n)
	return true
}

// spanCountWindow is how long spans of a trace are counted together: the
// counts start afresh each window, so memory stays at the traces of one
// window (a trace spanning two may keep up to twice the limit).
const spanCountWindow = time.Minute

// trimTraces drops the spans that would take their trace beyond maxSpans
// spans or maxBytes bytes (a smaller span of the trace may still fit).
// Spans of traces skip says are not counted here (nil: all are) are kept
// as they are. It trims in place: ingest hands over a slice it does not
// read again.
func (r *spanRate) trimTraces(spans []model.Span, now time.Time, skip func(model.TraceID) bool) []model.Span {
	if r.maxSpans <= 0 && r.maxBytes <= 0 {
		return spans
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.traces == nil || now.Sub(r.epoch) > spanCountWindow {
		r.traces, r.epoch = map[model.TraceID]traceUse{}, now
	}
	kept := spans[:0]
	for i := range spans {
		if r.count(&spans[i], skip) {
			kept = append(kept, spans[i])
		}
	}
	return kept
}

// count counts sp in its trace's use and reports whether it fits; r.mu
// is held.
func (r *spanRate) count(sp *model.Span, skip func(model.TraceID) bool) bool {
	if skip != nil && skip(sp.TraceID) {
		return true
	}
	u := r.traces[sp.TraceID]
	if r.maxSpans > 0 && u.spans >= r.maxSpans {
		return false
	}
	if r.maxBytes > 0 {
		size := int64(otlpconv.SpanSize(sp))
		if u.bytes+size > r.maxBytes {
			return false
		}
		u.bytes += size
	}
	u.spans++
	r.traces[sp.TraceID] = u
	return true
}

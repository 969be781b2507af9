// Package ingest runs tracedx's receivers: OTLP/gRPC, OTLP/HTTP (traces and
// logs) and Zipkin v2 JSON. Every receiver converts to model.Span, applies
// the same limits and writes to a Sink; a request is acknowledged only after
// Sink.Write returned nil, i.e. after the spans are durable.
//
// Error mapping follows the OTLP specification: bad payloads are permanent
// errors (HTTP 400/413/415, gRPC INVALID_ARGUMENT), saturation is retryable
// (HTTP 429/503 with Retry-After, gRPC RESOURCE_EXHAUSTED/UNAVAILABLE with
// RetryInfo), and spans with invalid ids are dropped one by one and reported
// as a partial success.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Server owns the ingest listeners.
type Server struct {
	cfg     Config
	sink    Sink
	logs    LogSink
	log     *slog.Logger
	metrics *Metrics

	slots   chan struct{}
	limiter *rateLimiter
	recent  *recentSpans // nil: no dedup window
	// zstdPool holds reset *zstd.Decoder for OTLP/HTTP bodies.
	zstdPool sync.Pool

	mu         sync.Mutex
	grpcSrv    *grpc.Server
	httpSrv    *http.Server
	zipkinSrv  *http.Server
	grpcAddr   string
	httpAddr   string
	zipkinAddr string
	started    bool
	serveErrs  chan error
}

// New builds the ingest servers. sink must not be nil; logs may be nil (log
// records are then accepted, counted and dropped). reg may be nil to skip
// metric registration (Metrics() still returns the collectors).
func New(cfg Config, sink Sink, logs LogSink, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if sink == nil {
		return nil, errors.New("ingest: nil sink")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{
		cfg:       cfg,
		sink:      sink,
		logs:      logs,
		log:       logger.With("component", "ingest"),
		metrics:   NewMetrics(),
		slots:     make(chan struct{}, cfg.MaxConcurrentRequests),
		serveErrs: make(chan error, 3),
		recent:    newRecentSpans(cfg.DedupWindowSpans),
	}
	if cfg.MaxSpansPerSecond > 0 {
		s.limiter = newRateLimiter(cfg.MaxSpansPerSecond)
	}
	if reg != nil {
		if err := s.metrics.Register(reg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Metrics returns the ingest collectors.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// Start binds every configured listener and serves in the background. It
// fails (and binds nothing) when any address cannot be bound.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("ingest: already started")
	}
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}
	listen := func(addr, what string) (net.Listener, error) {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("ingest: listen %s on %s: %w", what, addr, err)
		}
		lns = append(lns, l)
		if s.cfg.WrapListener != nil {
			return s.cfg.WrapListener(l), nil
		}
		return l, nil
	}
	var grpcLn, httpLn, zipkinLn net.Listener
	var err error
	if s.cfg.GRPCAddr != "" {
		if grpcLn, err = listen(s.cfg.GRPCAddr, "OTLP/gRPC"); err != nil {
			closeAll()
			return err
		}
	}
	if s.cfg.HTTPAddr != "" {
		if httpLn, err = listen(s.cfg.HTTPAddr, "OTLP/HTTP"); err != nil {
			closeAll()
			return err
		}
	}
	if s.cfg.ZipkinAddr != "" {
		if zipkinLn, err = listen(s.cfg.ZipkinAddr, "Zipkin"); err != nil {
			closeAll()
			return err
		}
	}
	s.started = true
	if grpcLn != nil {
		s.grpcSrv = s.newGRPCServer()
		s.grpcAddr = grpcLn.Addr().String()
		go s.serve("OTLP/gRPC", s.grpcAddr, func() error { return s.grpcSrv.Serve(grpcLn) })
	}
	if httpLn != nil {
		s.httpSrv = s.newHTTPServer(s.OTLPHTTPHandler())
		s.httpAddr = httpLn.Addr().String()
		go s.serve("OTLP/HTTP", s.httpAddr, func() error { return s.httpSrv.Serve(httpLn) })
	}
	if zipkinLn != nil {
		s.zipkinSrv = s.newHTTPServer(s.ZipkinHandler())
		s.zipkinAddr = zipkinLn.Addr().String()
		go s.serve("Zipkin", s.zipkinAddr, func() error { return s.zipkinSrv.Serve(zipkinLn) })
	}
	return nil
}

func (s *Server) serve(what, addr string, fn func() error) {
	s.log.Info("ingest listening", "protocol", what, "addr", addr)
	if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		s.log.Error("ingest listener failed", "protocol", what, "addr", addr, "err", err)
		s.serveErrs <- fmt.Errorf("%s on %s: %w", what, addr, err)
	}
}

// Errors delivers fatal listener errors after Start (buffered; optional).
func (s *Server) Errors() <-chan error { return s.serveErrs }

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	if s.cfg.HTTPMiddleware != nil {
		h = s.cfg.HTTPMiddleware(h)
	}
	// nosniff: no reply is ever to be read by a browser as script or HTML.
	nosniff := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
	return &http.Server{
		Handler:           nosniff,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// GRPCAddr returns the bound OTLP/gRPC address ("" before Start or when disabled).
func (s *Server) GRPCAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.grpcAddr }

// HTTPAddr returns the bound OTLP/HTTP address.
func (s *Server) HTTPAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.httpAddr }

// ZipkinAddr returns the bound Zipkin address.
func (s *Server) ZipkinAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.zipkinAddr }

// Shutdown stops accepting requests and waits for in-flight ones until ctx
// ends, then closes remaining connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	g, h, z := s.grpcSrv, s.httpSrv, s.zipkinSrv
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	if g != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { g.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				g.Stop()
				<-done
				errs[0] = fmt.Errorf("ingest: grpc shutdown: %w", ctx.Err())
			}
		}()
	}
	for i, hs := range []*http.Server{h, z} {
		if hs == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
				errs[i+1] = fmt.Errorf("ingest: http shutdown: %w", err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// --- shared pipeline ---------------------------------------------------

type errKind uint8

const (
	kindBadRequest errKind = iota + 1
	kindTooLarge
	kindUnsupported
	kindMethod
	kindLimited
	kindOverloaded
	kindInternal
)

// requestError is a whole-request failure with its client-facing message.
type requestError struct {
	kind   errKind
	reason string // metric label for bad input, "" otherwise
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badInput(kind errKind, reason, format string, args ...any) *requestError {
	return &requestError{kind: kind, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// outcome label of a finished request.
func outcomeOf(err error, rejected int) string {
	if err == nil {
		if rejected > 0 {
			return "partial"
		}
		return "ok"
	}
	var re *requestError
	if errors.As(err, &re) {
		switch re.kind {
		case kindLimited:
			return "limited"
		case kindOverloaded:
			return "overloaded"
		case kindInternal:
			return "error"
		}
	}
	return "bad_request"
}

// finish records metrics for one request.
func (s *Server) finish(proto, signal string, err error, rejected int) {
	s.metrics.Requests.WithLabelValues(proto, signal, outcomeOf(err, rejected)).Inc()
	var re *requestError
	if errors.As(err, &re) && re.reason != "" {
		s.metrics.BadRequests.WithLabelValues(proto, re.reason).Inc()
		s.log.Debug("ingest: bad request", "protocol", proto, "signal", signal, "reason", re.reason, "err", re.msg)
	}
}

// acquire takes a concurrency slot, waiting at most ConcurrencyWait.
func (s *Server) acquire(ctx context.Context) (func(), error) {
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(); err != nil {
			return nil, &requestError{kind: kindOverloaded, msg: err.Error()}
		}
	}
	release := func() {
		<-s.slots
		s.metrics.InFlight.Dec()
	}
	select {
	case s.slots <- struct{}{}:
		s.metrics.InFlight.Inc()
		return release, nil
	default:
	}
	t := time.NewTimer(s.cfg.ConcurrencyWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		s.metrics.InFlight.Inc()
		return release, nil
	case <-t.C:
		return nil, &requestError{kind: kindLimited,
			msg: fmt.Sprintf("too many concurrent ingest requests (limit %d), retry later", s.cfg.MaxConcurrentRequests)}
	case <-ctx.Done():
		return nil, &requestError{kind: kindLimited, msg: "request cancelled while waiting for an ingest slot"}
	}
}

// rejections collects spans or records rejected one by one, for the
// partial-success message and the metrics.
type rejections struct {
	n       int
	reasons []string       // in order of first appearance
	count   map[string]int // by reason
	first   map[string]string
}

func (r *rejections) add(reason, why string) {
	if r.count == nil {
		r.count, r.first = map[string]int{}, map[string]string{}
	}
	if r.count[reason] == 0 {
		r.reasons = append(r.reasons, reason)
		r.first[reason] = why
	}
	r.count[reason]++
	r.n++
}

func (r *rejections) addRepaired(rep repaired) {
	for i := 0; i < rep.removed; i++ {
		r.add(reasonInvalidID, rep.first)
	}
}

// message says how many items were rejected and why, with the first
// example of each reason, e.g. "2 span(s) rejected: 1 invalid_id (span
// "a": trace id 0102 has 2 bytes, want 16); 1 invalid_time (...)".
func (r *rejections) message(items string) string {
	if r.n == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s(s) rejected", r.n, items)
	for i, reason := range r.reasons {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%d %s (first: %s)", sep, r.count[reason], reason, r.first[reason])
	}
	return b.String()
}

func (r *rejections) observe(metric *prometheus.CounterVec, proto string) {
	for _, reason := range r.reasons {
		metric.WithLabelValues(proto, reason).Add(float64(r.count[reason]))
	}
}

// checkSpans drops, in place, spans that cannot be stored: invalid ids,
// invalid timestamps, spans of one trace beyond MaxSpansPerTrace, and
// duplicates (those are not rejections: the client gets success, the span
// is stored once). It returns the kept spans and their dedup keys.
func (s *Server) checkSpans(ctx context.Context, spans []model.Span, rej *rejections) ([]model.Span, []uint64, int, error) {
	// A peer's request joins parts of several requests, each checked
	// against these limits where it was received.
	forwarded := s.forwarded(ctx)
	if len(spans) > s.cfg.MaxSpansPerRequest && !forwarded {
		return nil, nil, 0, badInput(kindTooLarge, reasonTooManySpans,
			"request has %d spans, limit is %d per request: send smaller batches", len(spans), s.cfg.MaxSpansPerRequest)
	}
	now := time.Now()
	// No trace can pass the limit in a request of no more spans than it:
	// the usual case, which then needs no count per trace.
	var perTrace map[model.TraceID]int
	if len(spans) > s.cfg.MaxSpansPerTrace && !forwarded {
		perTrace = map[model.TraceID]int{}
	}
	kept := spans[:0]
	for i := range spans {
		sp := &spans[i]
		if reason, why := s.spanFault(sp, now, perTrace); reason != "" {
			rej.add(reason, why)
			continue
		}
		kept = append(kept, *sp)
	}
	// Let the dropped tail be collected.
	clear(spans[len(kept):])
	// Spans their owner deduplicates go to the end, out of the window.
	local := len(kept)
	if s.cfg.ForwardsTrace != nil && !forwarded {
		local = 0
		for i := range kept {
			if !s.cfg.ForwardsTrace(kept[i].TraceID) {
				kept[i], kept[local] = kept[local], kept[i]
				local++
			}
		}
	}
	keys := make([]uint64, local)
	var scratch []byte
	scope := ""
	if s.cfg.DedupScope != nil {
		scope = s.cfg.DedupScope(ctx)
	}
	for i := range keys {
		scratch, keys[i] = spanKey(scratch, scope, &kept[i])
	}
	unique, keys, dups := s.recent.dedupe(kept[:local], keys)
	if dups > 0 {
		n := copy(kept[len(unique):], kept[local:])
		clear(kept[len(unique)+n:])
		kept = kept[:len(unique)+n]
	}
	return kept, keys, dups, nil
}

// spanFault says why checkSpans drops sp (reason "" when it keeps it):
// all-zero ids, bad times, or, when perTrace counts the request's spans
// per trace (it then counts sp), a trace over MaxSpansPerTrace. The ids
// and times are checked even for a peer's spans: they cost nothing next
// to the count per trace, and no span reaches storage without them
// whatever a peer sends.
func (s *Server) spanFault(sp *model.Span, now time.Time, perTrace map[model.TraceID]int) (reason, why string) {
	if sp.TraceID.IsZero() || sp.SpanID.IsZero() {
		return reasonInvalidID, fmt.Sprintf("span %q: trace id and span id must not be all zero (got trace id %s, span id %s)",
			model.Clip(sp.Name, 64), sp.TraceID, sp.SpanID)
	}
	if err := sp.CheckTimes(now, s.cfg.MaxSpanDuration); err != nil {
		return reasonInvalidTime, fmt.Sprintf("span %q (%s): %v", model.Clip(sp.Name, 64), sp.SpanID, err)
	}
	if perTrace != nil && s.overTrace(perTrace, sp.TraceID) {
		return reasonTraceTooLarge, fmt.Sprintf("trace %s has more than %d spans in this request", sp.TraceID, s.cfg.MaxSpansPerTrace)
	}
	return "", ""
}

// forwarded reports whether a request's spans were checked by the cluster
// peer that forwarded them (Config.Forwarded).
func (s *Server) forwarded(ctx context.Context) bool {
	return s.cfg.Forwarded != nil && s.cfg.Forwarded(ctx)
}

// write hands spans to the sink and maps its errors.
func (s *Server) write(ctx context.Context, proto string, spans []model.Span) error {
	if len(spans) == 0 {
		return nil
	}
	if err := s.allow(ctx, proto, len(spans)); err != nil {
		return err
	}
	return s.store(ctx, proto, len(spans), func() error { return s.sink.Write(ctx, spans) })
}

// allow counts n spans against the rate limits: the node's and the
// sink's own (RateSink).
func (s *Server) allow(ctx context.Context, proto string, n int) error {
	// Forwarded spans were counted by the node their sender reached.
	if s.forwarded(ctx) {
		return nil
	}
	if s.limiter != nil && !s.limiter.allow(n) {
		return &requestError{kind: kindLimited,
			msg: fmt.Sprintf("ingest rate limit of %.0f spans/s exceeded, retry later", s.cfg.MaxSpansPerSecond)}
	}
	if rs, ok := s.sink.(RateSink); ok {
		if err := rs.Admit(ctx, n); err != nil {
			// The request is refused, so it spends none of the node's
			// rate: a tenant over its own limit would otherwise use up
			// the node's for every other tenant.
			if s.limiter != nil {
				s.limiter.giveBack(n)
			}
			return s.sinkError(ctx, proto, n, err)
		}
	}
	return nil
}

// store runs write, a sink's write of n spans, and maps its errors.
func (s *Server) store(ctx context.Context, proto string, n int, write func() error) error {
	start := time.Now()
	err := write()
	s.metrics.WriteSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return s.sinkError(ctx, proto, n, err)
	}
	s.metrics.SpansAccepted.WithLabelValues(proto).Add(float64(n))
	return nil
}

// sinkError maps a sink's error about n spans to the sender's answer.
func (s *Server) sinkError(ctx context.Context, proto string, n int, err error) error {
	if errors.Is(err, ErrRateLimited) {
		return &requestError{kind: kindLimited, msg: err.Error()}
	}
	if errors.Is(err, store.ErrOverloaded) {
		return &requestError{kind: kindOverloaded, msg: "tracedx is overloaded, retry later"}
	}
	if ctx.Err() != nil {
		return &requestError{kind: kindOverloaded, msg: "request cancelled before spans were durable"}
	}
	s.log.Error("ingest: sink write failed", "protocol", proto, "spans", n, "err", err)
	return &requestError{kind: kindInternal, msg: "failed to store spans: " + err.Error()}
}

// writeLogs hands records to the log sink, or counts and drops them.
func (s *Server) writeLogs(ctx context.Context, proto string, recs []LogRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if s.logs == nil {
		s.metrics.LogsDropped.Add(float64(len(recs)))
		return nil
	}
	if err := s.logs.WriteLogs(ctx, recs); err != nil {
		if errors.Is(err, store.ErrOverloaded) {
			return &requestError{kind: kindOverloaded, msg: "tracedx is overloaded, retry later"}
		}
		s.log.Error("ingest: log sink write failed", "protocol", proto, "records", len(recs), "err", err)
		return &requestError{kind: kindInternal, msg: "failed to store logs: " + err.Error()}
	}
	s.metrics.LogsAccepted.WithLabelValues(proto).Add(float64(len(recs)))
	return nil
}

// rateLimiter is a token bucket over spans with one second of burst.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64) *rateLimiter {
	return &rateLimiter{rate: rate, tokens: rate, last: time.Now()}
}

func (r *rateLimiter) allow(n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tokens = min(r.rate, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	r.last = now
	// A request larger than the burst passes when the bucket is full and
	// drives it negative, so big batches are slowed rather than starved.
	need := min(float64(n), r.rate)
	if r.tokens < need {
		return false
	}
	r.tokens -= float64(n)
	return true
}

// giveBack returns the n tokens an allowed request took when it is
// refused after all.
func (r *rateLimiter) giveBack(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = min(r.rate, r.tokens+float64(n))
}

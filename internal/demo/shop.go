// Package demo runs a small simulated shop — real HTTP services on
// loopback, instrumented with the OpenTelemetry Go SDK and exporting real
// OTLP — so a new user sees tracedx diagnose real incidents within a minute.
//
// Services call each other over HTTP with W3C traceparent propagation, just
// like a user's services. The database, cache and queue are simulated inside
// the services (client/producer/consumer spans with the semantic-convention
// attributes a real driver would set) so the demo needs no other process.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

var propagator = propagation.TraceContext{}

// service is one simulated microservice: an HTTP server with its own
// TracerProvider (so its resource says which service it is).
type service struct {
	name    string
	version string
	tp      *sdktrace.TracerProvider
	tracer  trace.Tracer
	mux     *http.ServeMux
	srv     *http.Server
	ln      net.Listener
	shop    *Shop
	// dbWait models a connection pool: acquiring is not instrumented, which
	// is exactly what makes pool waits show up as idle gaps.
	dbPool chan struct{}
}

func (s *Shop) newService(ctx context.Context, name, version string) (*service, error) {
	exp, err := s.newExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("demo: exporter for %s: %w", name, err)
	}
	res := resource.NewWithAttributes("",
		attribute.String("service.name", name),
		attribute.String("service.version", version),
		attribute.String("service.namespace", "shop"),
		attribute.String("deployment.environment.name", "demo"),
		attribute.String("host.name", name+"-"+strconv.Itoa(1+rand.IntN(3))),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(500*time.Millisecond)),
		sdktrace.WithResource(res),
	)
	svc := &service{
		name: name, version: version, tp: tp, tracer: tp.Tracer("tracedx/demo/" + name),
		mux: http.NewServeMux(), shop: s, dbPool: make(chan struct{}, 8),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: listen for %s: %w", name, err)
	}
	svc.ln = ln
	svc.srv = &http.Server{Handler: svc.mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = svc.srv.Serve(ln) }()
	return svc, nil
}

func (s *Shop) newExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	if s.opts.Protocol == "grpc" {
		return otlptrace.New(ctx, otlptracegrpc.NewClient(
			otlptracegrpc.WithEndpoint(s.opts.Endpoint), otlptracegrpc.WithInsecure()))
	}
	return otlptrace.New(ctx, otlptracehttp.NewClient(
		otlptracehttp.WithEndpoint(s.opts.Endpoint), otlptracehttp.WithInsecure()))
}

func (svc *service) url() string { return "http://" + svc.ln.Addr().String() }

func (svc *service) shutdown(ctx context.Context) {
	_ = svc.srv.Shutdown(ctx)
	_ = svc.tp.Shutdown(ctx)
}

// handlerFunc is a route handler that returns the HTTP status to send.
type handlerFunc func(ctx context.Context, r *http.Request) int

// handle registers a SERVER-span route, extracting the caller's context.
func (svc *service) handle(method, route string, h handlerFunc) {
	svc.mux.HandleFunc(method+" "+route, func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx = withIncident(ctx, r.Header.Get(incidentHeader))
		ctx, span := svc.tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", method),
				attribute.String("http.route", route),
				attribute.String("url.path", r.URL.Path),
				attribute.String("url.scheme", "http"),
				attribute.String("server.address", svc.name),
				attribute.String("user_agent.original", "shop-client/2.3"),
			))
		defer span.End()
		if inc := incidentOf(ctx); inc != "" {
			// Lets a user (and the tests) find an incident's traces:
			// search attr=demo.incident=n_plus_one_query.
			span.SetAttributes(attribute.String("demo.incident", inc))
		}
		status := h(ctx, r)
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		w.WriteHeader(status)
	})
}

// call makes an HTTP CLIENT call to another service, propagating context.
// It returns the status, or an error for a transport failure or timeout.
func (svc *service) call(ctx context.Context, target *service, method, route, path string, timeout time.Duration) (int, error) {
	ctx, span := svc.tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.full", target.url()+path),
			attribute.String("url.template", route),
			attribute.String("server.address", target.name),
			attribute.String("peer.service", target.name),
		))
	defer span.End()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, target.url()+path, nil)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return 0, err
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if inc := incidentOf(ctx); inc != "" {
		req.Header.Set(incidentHeader, inc)
	}
	resp, err := svc.shop.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%s %s: timeout after %s: %w", method, path, timeout, context.DeadlineExceeded)
			span.SetAttributes(attribute.String("error.type", "timeout"))
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, resp.Status)
	}
	return resp.StatusCode, nil
}

// query simulates a database call of the given duration.
func (svc *service) query(ctx context.Context, stmt, table string, d time.Duration, fail error) error {
	op := strings.ToUpper(strings.Fields(stmt + " SELECT")[0])
	_, span := svc.tracer.Start(ctx, op+" shop."+table, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system", "postgresql"),
			attribute.String("db.namespace", "shop"),
			attribute.String("db.operation.name", op),
			attribute.String("db.collection.name", table),
			attribute.String("db.query.text", stmt),
			attribute.String("server.address", "postgres.shop.internal"),
			attribute.Int("server.port", 5432),
		))
	defer span.End()
	sleep(ctx, d)
	if fail != nil {
		span.RecordError(fail, trace.WithAttributes(attribute.String("exception.type", "PoolExhaustedError")))
		span.SetStatus(codes.Error, fail.Error())
	}
	return fail
}

// cacheGet simulates a Redis GET; it reports the hit on the span.
func (svc *service) cacheGet(ctx context.Context, key string, hit bool) {
	_, span := svc.tracer.Start(ctx, "GET", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system", "redis"),
			attribute.String("db.operation.name", "GET"),
			attribute.String("db.query.text", "GET "+key),
			attribute.String("server.address", "redis.shop.internal"),
			attribute.Bool("cache.hit", hit),
		))
	sleep(ctx, time.Duration(1+rand.IntN(2))*time.Millisecond)
	span.End()
}

func (svc *service) cacheSet(ctx context.Context, key string) {
	_, span := svc.tracer.Start(ctx, "SET", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system", "redis"),
			attribute.String("db.operation.name", "SET"),
			attribute.String("db.query.text", "SET "+key+" ?"),
			attribute.String("server.address", "redis.shop.internal"),
		))
	sleep(ctx, time.Millisecond)
	span.End()
}

// internal runs fn inside an INTERNAL span.
func (svc *service) internal(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	ctx, span := svc.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	defer span.End()
	err := fn(ctx)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// jitter returns d ±20 %.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// parallel runs the functions concurrently and waits for all.
func parallel(fns ...func()) {
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
}

// logger returns the shop's logger.
func (s *Shop) logger() *slog.Logger {
	if s.opts.Logger != nil {
		return s.opts.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

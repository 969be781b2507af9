//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// newGoProvider returns a TracerProvider exporting to the server with the
// given protocol, plus an in-memory recorder of every span it ended (what
// the SDK itself believes it sent).
func newGoProvider(t testing.TB, s *tracedxServer, protocol, service string) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	ctx := context.Background()
	var client otlptrace.Client
	switch protocol {
	case "grpc":
		client = otlptracegrpc.NewClient(otlptracegrpc.WithEndpoint(s.OTLPGRPC), otlptracegrpc.WithInsecure())
	case "http":
		client = otlptracehttp.NewClient(otlptracehttp.WithEndpoint(s.OTLPHTTP), otlptracehttp.WithInsecure())
	default:
		t.Fatalf("unknown protocol %q", protocol)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		t.Fatalf("%s exporter: %v", protocol, err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(rec),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(100*time.Millisecond)),
		sdktrace.WithResource(resource.NewWithAttributes("",
			attribute.String("service.name", service),
			attribute.String("service.version", "9.8.7"),
		)),
	)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

// shutdownProvider flushes the exporter; an export error fails the test
// (the server refused or the connection broke).
func shutdownProvider(t testing.TB, tp *sdktrace.TracerProvider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("flushing spans: %v", err)
	}
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("shutting down the provider: %v", err)
	}
}

// TestOTelGoSDK sends traces with the OpenTelemetry Go SDK over OTLP/gRPC
// and OTLP/HTTP and reads every span back with its fields intact.
func TestOTelGoSDK(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			service := "e2e-go-" + protocol
			tp, rec := newGoProvider(t, shared, protocol, service)
			tracer := tp.Tracer("tracedx/e2e", trace.WithInstrumentationVersion("1.2.3"))

			const traces = 5
			for i := range traces {
				ctx, root := tracer.Start(context.Background(), "GET /orders/{id}",
					trace.WithSpanKind(trace.SpanKindServer),
					trace.WithAttributes(
						attribute.String("http.request.method", "GET"),
						attribute.String("http.route", "/orders/{id}"),
						attribute.Int("http.response.status_code", 500),
						attribute.Bool("e2e.flag", true),
						attribute.Float64("e2e.ratio", 0.25),
						attribute.StringSlice("e2e.tags", []string{"a", "b"}),
						attribute.Int("e2e.iteration", i),
					))
				_, db := tracer.Start(ctx, "SELECT shop.orders", trace.WithSpanKind(trace.SpanKindClient),
					trace.WithAttributes(
						attribute.String("db.system", "postgresql"),
						attribute.String("db.query.text", fmt.Sprintf("SELECT * FROM orders WHERE id = %d", i)),
					))
				db.AddEvent("rows fetched", trace.WithAttributes(attribute.Int("rows", 3)))
				db.End()
				_, call := tracer.Start(ctx, "POST /charge", trace.WithSpanKind(trace.SpanKindClient),
					trace.WithLinks(trace.Link{SpanContext: root.SpanContext()}))
				call.RecordError(errors.New("card declined"))
				call.SetStatus(codes.Error, "card declined")
				call.End()
				root.SetStatus(codes.Error, "upstream failed")
				root.End()
			}
			shutdownProvider(t, tp)

			sent := rec.Ended()
			if len(sent) != traces*3 {
				t.Fatalf("the SDK ended %d spans, want %d", len(sent), traces*3)
			}
			byTrace := map[string][]sdktrace.ReadOnlySpan{}
			for _, s := range sent {
				id := s.SpanContext().TraceID().String()
				byTrace[id] = append(byTrace[id], s)
			}
			if len(byTrace) != traces {
				t.Fatalf("the SDK made %d traces, want %d", len(byTrace), traces)
			}
			for id, spans := range byTrace {
				got := shared.waitTrace(t, id, len(spans))
				if got.TraceID != id || got.SpanCount != len(spans) || len(got.Spans) != len(spans) {
					t.Fatalf("trace %s: got id %s, span_count %d, %d spans; want %d spans",
						id, got.TraceID, got.SpanCount, len(got.Spans), len(spans))
				}
				compareSpans(t, service, spans, got.Spans)
			}
		})
	}
}

// compareSpans checks that every span the SDK sent came back with the same
// ids, parent, name, kind, service, status and attributes.
func compareSpans(t *testing.T, service string, sent []sdktrace.ReadOnlySpan, got []apiSpan) {
	t.Helper()
	byID := map[string]apiSpan{}
	for _, g := range got {
		byID[g.SpanID] = g
	}
	kinds := map[trace.SpanKind]string{trace.SpanKindServer: "server", trace.SpanKindClient: "client",
		trace.SpanKindInternal: "internal", trace.SpanKindProducer: "producer", trace.SpanKindConsumer: "consumer"}
	for _, s := range sent {
		id := s.SpanContext().SpanID().String()
		g, ok := byID[id]
		if !ok {
			t.Errorf("span %s (%s) not read back", id, s.Name())
			continue
		}
		wantParent := ""
		if s.Parent().IsValid() {
			wantParent = s.Parent().SpanID().String()
		}
		if g.ParentSpanID != wantParent || g.Name != s.Name() || g.Kind != kinds[s.SpanKind()] || g.Service != service {
			t.Errorf("span %s: got parent=%q name=%q kind=%q service=%q; want %q %q %q %q",
				id, g.ParentSpanID, g.Name, g.Kind, g.Service, wantParent, s.Name(), kinds[s.SpanKind()], service)
		}
		wantStatus := map[codes.Code]string{codes.Unset: "unset", codes.Ok: "ok", codes.Error: "error"}[s.Status().Code]
		if g.Status.Code != wantStatus || g.Status.Message != s.Status().Description {
			t.Errorf("span %s status: got %+v, want %s %q", id, g.Status, wantStatus, s.Status().Description)
		}
		if g.Scope.Name != "tracedx/e2e" || g.Scope.Version != "1.2.3" {
			t.Errorf("span %s scope: got %+v", id, g.Scope)
		}
		for _, kv := range s.Attributes() {
			v, ok := g.attr(string(kv.Key))
			if !ok {
				t.Errorf("span %s: attribute %s missing", id, kv.Key)
				continue
			}
			if !sameValue(kv.Value, v) {
				t.Errorf("span %s: attribute %s = %v (%T), want %v", id, kv.Key, v, v, kv.Value.String())
			}
		}
	}
}

// sameValue compares an SDK attribute value with its JSON form.
func sameValue(want attribute.Value, got any) bool {
	switch want.Type() {
	case attribute.STRING:
		return got == want.AsString()
	case attribute.BOOL:
		return got == want.AsBool()
	case attribute.INT64:
		f, ok := got.(float64)
		return ok && int64(f) == want.AsInt64()
	case attribute.FLOAT64:
		f, ok := got.(float64)
		return ok && f == want.AsFloat64()
	case attribute.STRINGSLICE:
		arr, ok := got.([]any)
		if !ok || len(arr) != len(want.AsStringSlice()) {
			return false
		}
		for i, s := range want.AsStringSlice() {
			// Array elements may come typed ({type,value}) or bare.
			if m, ok := arr[i].(map[string]any); ok {
				if m["value"] != s {
					return false
				}
			} else if arr[i] != s {
				return false
			}
		}
		return true
	}
	return fmt.Sprint(got) == want.String()
}

// TestW3CPropagation runs two real HTTP services: the frontend calls the
// backend with a W3C traceparent header; the result must be one trace in
// which the backend's SERVER span is a child of the frontend's CLIENT span.
func TestW3CPropagation(t *testing.T) {
	t.Parallel()
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	backendTP, _ := newGoProvider(t, shared, "http", "e2e-prop-backend")
	frontendTP, _ := newGoProvider(t, shared, "grpc", "e2e-prop-frontend")

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		_, span := backendTP.Tracer("backend").Start(ctx, "GET /stock", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if r.Header.Get("traceparent") == "" {
			span.SetStatus(codes.Error, "no traceparent header")
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer backend.Close()
	frontend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr := frontendTP.Tracer("frontend")
		ctx, server := tr.Start(prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header)), "GET /product",
			trace.WithSpanKind(trace.SpanKindServer))
		defer server.End()
		ctx, client := tr.Start(ctx, "GET /stock", trace.WithSpanKind(trace.SpanKindClient))
		defer client.End()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, backend.URL+"/stock", nil)
		prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			client.SetStatus(codes.Error, err.Error())
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_ = resp.Body.Close()
		// The trace id goes back to the test so it knows what to read.
		w.Header().Set("X-Trace-Id", server.SpanContext().TraceID().String())
		w.WriteHeader(resp.StatusCode)
	}))
	defer frontend.Close()

	resp, err := http.Get(frontend.URL + "/product")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("frontend answered %s", resp.Status)
	}
	id := resp.Header.Get("X-Trace-Id")
	shutdownProvider(t, frontendTP)
	shutdownProvider(t, backendTP)

	got := shared.waitTrace(t, id, 3)
	if len(got.Spans) != 3 {
		t.Fatalf("trace %s has %d spans, want 3 (frontend server + client, backend server)", id, len(got.Spans))
	}
	var fServer, fClient, bServer *apiSpan
	for i := range got.Spans {
		s := &got.Spans[i]
		switch {
		case s.Service == "e2e-prop-frontend" && s.Kind == "server":
			fServer = s
		case s.Service == "e2e-prop-frontend" && s.Kind == "client":
			fClient = s
		case s.Service == "e2e-prop-backend" && s.Kind == "server":
			bServer = s
		}
	}
	if fServer == nil || fClient == nil || bServer == nil {
		t.Fatalf("missing spans in %+v", got.Spans)
	}
	if fServer.ParentSpanID != "" || fClient.ParentSpanID != fServer.SpanID || bServer.ParentSpanID != fClient.SpanID {
		t.Errorf("links: frontend server parent %q; client parent %q (want %s); backend server parent %q (want %s)",
			fServer.ParentSpanID, fClient.ParentSpanID, fServer.SpanID, bServer.ParentSpanID, fClient.SpanID)
	}
	if bServer.Status.Code == "error" {
		t.Errorf("backend saw no traceparent header")
	}
	// One trace, one root: the analysis must not see broken propagation.
	a := shared.analysis(t, id)
	if a.RootService != "e2e-prop-frontend" || a.SpanCount != 3 {
		t.Errorf("analysis: root %q, %d spans; want e2e-prop-frontend, 3", a.RootService, a.SpanCount)
	}
	if f, ok := a.find("broken_propagation"); ok {
		t.Errorf("unexpected broken_propagation finding: %s", f.Title)
	}
}

// TestServeRestart stops a server with SIGTERM after it acknowledged spans
// and starts it again on the same data directory: the spans must still be
// there (ingest acknowledges only durable writes).
func TestServeRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := startTracedx(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.stop() }()
	tp, rec := newGoProvider(t, srv, "grpc", "e2e-restart")
	tracer := tp.Tracer("tracedx/e2e", trace.WithInstrumentationVersion("1.2.3"))
	ctx, root := tracer.Start(context.Background(), "job", trace.WithSpanKind(trace.SpanKindServer))
	for i := range 3 {
		_, c := tracer.Start(ctx, fmt.Sprintf("step %d", i))
		c.End()
	}
	root.End()
	shutdownProvider(t, tp)
	id := root.SpanContext().TraceID().String()
	if err := srv.stop(); err != nil {
		t.Fatalf("first run did not stop cleanly: %v\n%s", err, srv.logTail(20))
	}

	again, err := startTracedx(dir)
	if err != nil {
		t.Fatalf("restart on the same data dir: %v", err)
	}
	defer func() {
		if err := again.stop(); err != nil {
			t.Errorf("second run did not stop cleanly: %v", err)
		}
	}()
	got := again.waitTrace(t, id, 4)
	compareSpans(t, "e2e-restart", rec.Ended(), got.Spans)
}

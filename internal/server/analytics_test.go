package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// startTestServer runs a whole server on loopback ports.
func startTestServer(t *testing.T, mutate func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", OTLPGRPC: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	mutate(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		_ = s.Wait(ctx)
	}()
	return s
}

// postSpans sends a client/server pair over OTLP/HTTP JSON.
func postSpans(t *testing.T, s *Server, tr model.TraceID) *http.Response {
	t.Helper()
	now := uint64(time.Now().UnixNano())
	spans := []model.Span{
		{TraceID: tr, SpanID: model.SpanID{1}, Service: "frontend", Name: "GET /", Kind: model.KindServer, StartUnixNano: now, EndUnixNano: now + 5e6},
		{TraceID: tr, SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{1}, Service: "frontend", Name: "GET /api", Kind: model.KindClient, StartUnixNano: now + 1e6, EndUnixNano: now + 4e6},
		{TraceID: tr, SpanID: model.SpanID{3}, ParentSpanID: model.SpanID{2}, Service: "api", Name: "GET /api", Kind: model.KindServer, StartUnixNano: now + 2e6, EndUnixNano: now + 3e6},
	}
	body, err := (&ptrace.JSONMarshaler{}).MarshalTraces(otlpconv.ToTraces(spans))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+s.Addr("otlp-http")+"/v1/traces", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

// metricsAfterIngest returns /metrics after one OTLP request of a
// client/server pair.
func metricsAfterIngest(t *testing.T, mutate func(*config.Config)) string {
	t.Helper()
	s := startTestServer(t, mutate)
	resp := postSpans(t, s, model.TraceID{9, 9, 9})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ingest: %s", resp.Status)
	}
	return metricsOf(t, s)
}

func metricsOf(t *testing.T, s *Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return string(text)
}

func TestAnalyticsSwitch(t *testing.T) {
	on := metricsAfterIngest(t, func(*config.Config) {})
	for _, want := range []string{`traces_spanmetrics_calls_total{`, `traces_service_graph_request_total{client="frontend",connection_type="",server="api"}`, "tracedx_memory_limit_bytes", "tracedx_analysis_shed_total"} {
		if !strings.Contains(on, want) {
			t.Errorf("analytics on: /metrics lacks %s", want)
		}
	}
	off := metricsAfterIngest(t, func(c *config.Config) { c.Analytics.Enabled = false })
	for _, unwanted := range []string{`traces_spanmetrics_calls_total{`, `traces_service_graph_request_total{`} {
		if strings.Contains(off, unwanted) {
			t.Errorf("analytics off: /metrics has %s", unwanted)
		}
	}
	if !strings.Contains(off, "tracedx_store_spans_written_total 3") {
		t.Error("analytics off: spans not stored")
	}
}

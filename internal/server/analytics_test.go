package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

// startServer runs a whole server on loopback ports until the test ends.
func startServer(t *testing.T, mutate func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
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

// metricsAfterIngest returns a server's /metrics text after one OTLP
// request of a client/server pair.
func metricsAfterIngest(t *testing.T, mutate func(*config.Config)) string {
	t.Helper()
	s := startServer(t, mutate)
	postOTLP(t, s.Addr("otlp-http"), clientServerPair(model.TraceID{9, 9, 9}))
	return metricsOf(t, s)
}

// clientServerPair is a trace of a frontend calling an api, its spans
// starting 0, 1 and 2 ms after now.
func clientServerPair(tr model.TraceID) []model.Span {
	now := uint64(time.Now().UnixNano())
	return []model.Span{
		{TraceID: tr, SpanID: model.SpanID{1}, Service: "frontend", Name: "GET /", Kind: model.KindServer, StartUnixNano: now, EndUnixNano: now + 5e6},
		{TraceID: tr, SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{1}, Service: "frontend", Name: "GET /api", Kind: model.KindClient, StartUnixNano: now + 1e6, EndUnixNano: now + 4e6},
		{TraceID: tr, SpanID: model.SpanID{3}, ParentSpanID: model.SpanID{2}, Service: "api", Name: "GET /api", Kind: model.KindServer, StartUnixNano: now + 2e6, EndUnixNano: now + 3e6},
	}
}

func metricsOf(t testing.TB, s *Server) string {
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
	for _, want := range []string{`traces_spanmetrics_calls_total{`, `traces_service_graph_request_total{client="frontend",connection_type="",server="api"}`, "tracedx_memory_limit_bytes", "tracedx_analysis_shed_total", "tracedx_baseline_shifted_keys 0"} {
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

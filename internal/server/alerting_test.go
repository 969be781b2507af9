package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

func alertRules(t *testing.T, doc string) yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	return *n.Content[0]
}

// A bad rule stops the server before it opens anything.
func TestBadAlertRuleStopsNew(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{HTTP: "127.0.0.1:0"}
	cfg.Alerting.Rules = alertRules(t, "- alert: Checkout\n  findings: {kind: N+1, window: 10m}\n")
	_, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), `alert rule "Checkout": findings.kind`) {
		t.Fatalf("want an error naming the rule and field, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "traces")); !os.IsNotExist(err) {
		t.Errorf("storage was opened before the rules were checked: %v", err)
	}
	cfg.Alerting.Rules = yaml.Node{}
	cfg.Alerting.AlertmanagerURLs = []string{"localhost:9093"}
	if _, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "localhost:9093") {
		t.Fatalf("an Alertmanager URL without a scheme must be refused by name: %v", err)
	}
}

// TestDocumentedPrometheusRulesUseExposedMetrics keeps the Prometheus
// rules of docs/alerting.md true: every metric they use is on /metrics
// once spans, an alert and a notification happened.
func TestDocumentedPrometheusRulesUseExposedMetrics(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusBadRequest) // not retried: the failure shows at once
	}))
	defer hook.Close()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Storage.TraceIdleTimeout = 100 * time.Millisecond
	cfg.Alerting.Interval = 50 * time.Millisecond
	cfg.Alerting.Webhooks = []config.AlertWebhook{{URL: hook.URL}}
	cfg.Alerting.Rules = alertRules(t, "- alert: Slow\n  red: {window: 1m, latency_above_ms: 1}\n")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done
		s.Close()
	}()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(done); _ = s.Wait(ctx) }()

	now := uint64(time.Now().UnixNano())
	tr := model.TraceID{7, 7, 7}
	spans := []model.Span{
		{TraceID: tr, SpanID: model.SpanID{1}, Service: "shop", Name: "GET /", Kind: model.KindServer, StartUnixNano: now, EndUnixNano: now + 50e6, StatusCode: model.StatusError},
		{TraceID: tr, SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{1}, Service: "db", Name: "SELECT", Kind: model.KindServer, StartUnixNano: now + 1e6, EndUnixNano: now + 40e6, StatusCode: model.StatusError},
	}
	postOTLP(t, s.Addr("otlp-http"), spans)

	doc, err := os.ReadFile("../../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "```yaml\ngroups:")
	block, _, _ := strings.Cut(rest, "```")
	names := map[string]bool{}
	for _, n := range regexp.MustCompile(`\b(?:tracedx|traces)_[a-z_]+`).FindAllString(block, -1) {
		names[n] = true
	}
	if len(names) < 4 {
		t.Fatalf("found only %v in the Prometheus rules of docs/alerting.md", names)
	}
	var text string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := http.Get("http://" + s.Addr("http") + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		_ = r.Body.Close()
		text = string(b)
		var missing []string
		for n := range names {
			if !strings.Contains(text, "\n"+n+"{") {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %v, used by docs/alerting.md", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// postOTLP sends spans to the OTLP/HTTP receiver at addr as JSON.
func postOTLP(t *testing.T, addr string, spans []model.Span) {
	t.Helper()
	if resp := sendOTLP(t, addr, spans); resp.StatusCode != http.StatusOK {
		t.Fatalf("ingest: %s", resp.Status)
	}
}

// sendOTLP is postOTLP that returns the answer (its body closed) instead
// of requiring a 200.
func sendOTLP(t *testing.T, addr string, spans []model.Span) *http.Response {
	t.Helper()
	body, err := (&ptrace.JSONMarshaler{}).MarshalTraces(otlpconv.ToTraces(spans))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+addr+"/v1/traces", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// Over its memory budget the server refuses ingest with the statuses
// exporters retry after a delay: HTTP 503 with Retry-After, gRPC
// UNAVAILABLE with RetryInfo. Before admission, load beyond what the
// server sustained went into latency and RSS, never into a retryable
// answer.
func TestMemoryOverBudgetIsRetryable(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Admission.RetryAfter = 2 * time.Second
		c.Listen.OTLPGRPC = "127.0.0.1:0"
	})
	if resp := sendOTLP(t, s.Addr("otlp-http"), clientServerPair(model.TraceID{1})); resp.StatusCode != http.StatusOK {
		t.Fatalf("within budget: %s", resp.Status)
	}

	// Hold live data, then set a memory limit under which it exceeds
	// admission.heap_fraction.
	ballast := make([]byte, 64<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	runtime.GC()
	old := debug.SetMemoryLimit(int64(float64(liveHeap()) * 1.05))
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	time.Sleep(2 * heapReadEvery)

	resp := sendOTLP(t, s.Addr("otlp-http"), clientServerPair(model.TraceID{2}))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("over the memory budget: %s, Retry-After %q; want 503 with Retry-After 2", resp.Status, resp.Header.Get("Retry-After"))
	}
	conn, err := grpc.NewClient(s.Addr("otlp-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	td := otlpconv.ToTraces([]model.Span{{TraceID: model.TraceID{3}, SpanID: model.SpanID{1}, Service: "a", Name: "x", StartUnixNano: 1, EndUnixNano: 2}})
	_, err = ptraceotlp.NewGRPCClient(conn).Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td))
	st := status.Convert(err)
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.RetryDelay.AsDuration()
		}
	}
	if st.Code() != codes.Unavailable || delay != 2*time.Second {
		t.Fatalf("gRPC over the memory budget: %v (retry delay %v); want UNAVAILABLE with RetryInfo 2s", err, delay)
	}
	if m := metricsOf(t, s); !strings.Contains(m, `tracedx_admission_refused_total{reason="memory"} 2`) {
		t.Errorf("refusals not counted by reason:\n%s", grepLines(m, "admission"))
	}

	debug.SetMemoryLimit(old)
	runtime.KeepAlive(ballast)
	ballast = nil
	runtime.GC()
	time.Sleep(2 * heapReadEvery)
	if resp := sendOTLP(t, s.Addr("otlp-http"), clientServerPair(model.TraceID{4})); resp.StatusCode != http.StatusOK {
		t.Fatalf("memory back within budget: %s", resp.Status)
	}
}

func liveHeap() uint64 { return newHeapReader().read().live }

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

type fakeStore struct{ err error }

func (f *fakeStore) Admit() error { return f.err }

func TestAdmissionReasons(t *testing.T) {
	full := false
	st := &fakeStore{}
	cfg := config.Default().Admission
	cfg.AnalysisQueue = true
	a := newAdmission(cfg, st, func() bool { return full }, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	a.heap = func() heapStats { return heapStats{live: 100, inUse: 200, limit: 1000} }
	if err := a.Admit(); err != nil {
		t.Fatalf("nothing over budget: %v", err)
	}
	for _, tc := range []struct {
		name   string
		set    func()
		reason string
	}{
		{"live heap", func() { a.heap = func() heapStats { return heapStats{live: 900, inUse: 900, limit: 1000} } }, "memory"},
		{"heap in use", func() { a.heap = func() heapStats { return heapStats{live: 100, inUse: 1100, limit: 1000} } }, "memory"},
		{"queue", func() { full = true }, "analysis_queue"},
		{"disk full", func() { st.err = store.ErrDiskFull }, "disk_full"},
		{"disk budget", func() { st.err = store.ErrDiskBudget }, "disk_budget"},
		{"head", func() { st.err = store.ErrOverloaded }, "head"},
	} {
		a.heap = func() heapStats { return heapStats{live: 100, inUse: 200, limit: 1000} }
		full, st.err = false, nil
		tc.set()
		err := a.Admit()
		if !errors.Is(err, store.ErrOverloaded) || refusalReason(err) != tc.reason {
			t.Errorf("%s: %v (reason %q), want a retryable refusal for %s", tc.name, err, refusalReason(err), tc.reason)
		}
	}
	// No memory limit: the heap never refuses.
	a.heap = func() heapStats { return heapStats{live: 1 << 40, inUse: 1 << 40} }
	full, st.err = false, nil
	if err := a.Admit(); err != nil {
		t.Fatalf("without a memory limit: %v", err)
	}
}

// With admission.analysis_queue, a full analysis queue refuses ingest
// rather than skip traces; without it, it sheds analysis instead.
func TestFullAnalysisQueueRefusesIngest(t *testing.T) {
	p := testPipeline(t, func(c *config.Config) { c.Analysis.QueueSpans = 100 })
	if p.queueFull() {
		t.Fatal("empty queue reported full")
	}
	p.traceComplete(completedOf(traceOf(100, "a")))
	if !p.queueFull() {
		t.Fatal("queue at its budget not reported full")
	}
	cfg := config.Default().Admission
	cfg.AnalysisQueue = true
	a := newAdmission(cfg, nil, p.queueFull, p.log, prometheus.NewRegistry())
	a.heap = func() heapStats { return heapStats{} }
	if err := a.Admit(); !errors.Is(err, errAnalysisQueue) {
		t.Fatalf("admission with a full analysis queue: %v", err)
	}
	cfg.AnalysisQueue = false
	a = newAdmission(cfg, nil, p.queueFull, p.log, prometheus.NewRegistry())
	a.heap = func() heapStats { return heapStats{} }
	if err := a.Admit(); err != nil {
		t.Fatalf("admission.analysis_queue off: %v", err)
	}
}

func TestReadyz(t *testing.T) {
	s := startServer(t, func(*config.Config) {})
	resp, err := http.Get("http://" + s.Addr("http") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ready\n" {
		t.Fatalf("/readyz: %s %q", resp.Status, body)
	}
}

// The engine reads a page of a trace alone; the API serves it.
func TestTracePageFromTheEngine(t *testing.T) {
	s := startServer(t, func(*config.Config) {})
	tr := model.TraceID{5, 5, 5}
	postOTLP(t, s.Addr("otlp-http"), clientServerPair(tr))
	resp, err := http.Get("http://" + s.Addr("http") + "/api/v1/traces/" + tr.String() + "?offset=1&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		TotalSpans int    `json:"total_spans"`
		Truncated  bool   `json:"truncated"`
		Next       string `json:"next"`
		Spans      []struct {
			SpanID string `json:"span_id"`
		} `json:"spans"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	// Spans start 0, 1 and 2 ms after the first: the second page of one
	// is span 2.
	if page.TotalSpans != 3 || len(page.Spans) != 1 || page.Spans[0].SpanID != (model.SpanID{2}).String() || !page.Truncated ||
		!strings.Contains(page.Next, "offset=2") {
		t.Fatalf("page: %+v", page)
	}
}

// Conversions wait below admission's budget, with room for their own
// buffers left under it; never without a memory limit or a budget.
func TestConversionBudgetIsBelowAdmission(t *testing.T) {
	const mib = 1 << 20
	if memoryTight(config.Admission{}) != nil {
		t.Fatal("no heap_fraction: want no wait for memory")
	}
	for _, c := range []struct {
		h        heapStats
		fraction float64
		want     bool
	}{
		{heapStats{live: 120 * mib, inUse: 200 * mib, limit: 256 * mib}, 0.5, false},
		{heapStats{live: 140 * mib, inUse: 200 * mib, limit: 256 * mib}, 0.5, true},  // ingest still admitted (< 0.7)
		{heapStats{live: 100 * mib, inUse: 260 * mib, limit: 256 * mib}, 0.5, true},  // in use over the limit
		{heapStats{live: 500 * mib, inUse: 600 * mib}, 0.5, false},                   // no limit
		{heapStats{live: 140 * mib, inUse: 200 * mib, limit: 256 * mib}, 0.7, false}, // admission's own
	} {
		if got := c.h.overBudget(c.fraction); got != c.want {
			t.Errorf("%+v over %g: %v, want %v", c.h, c.fraction, got, c.want)
		}
	}
}

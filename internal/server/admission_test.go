package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	a.memoryWait = 0
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

// A request that finds the heap over budget waits, unread, for a
// collection to bring it back under instead of being refused at once.
// It is admitted when a collection ends with the heap under budget; runs
// one itself when none has ended for staleAfter (nothing allocates while
// every sender waits); is refused after admission.memory_wait, at once
// when the wait is 0 or too many wait already, and for another budget as
// soon as that one is over.
func TestMemoryWait(t *testing.T) {
	over := heapStats{live: 900, inUse: 900, limit: 1000}
	under := heapStats{live: 100, inUse: 200, limit: 1000}
	st := &fakeStore{}
	cfg := config.Default().Admission
	cfg.MemoryWait = 300 * time.Millisecond
	a := newAdmission(cfg, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())

	// A fake clock advanced by the waits; collections end every gcEvery
	// (0: never) and leave the heap as gcLeaves, a forced one as
	// collectLeaves.
	clock := time.Unix(1_000_000_000, 0)
	var (
		heap                    heapStats
		gcEvery, nextGC         time.Duration
		gcLeaves, collectLeaves heapStats
		collects                int
		elapsed                 time.Duration
	)
	a.now = func() time.Time { return clock.Add(elapsed) }
	a.heap = func() heapStats { return heap }
	a.gcEnded = func(d time.Duration) bool {
		if gcEvery > 0 && nextGC-elapsed <= d {
			elapsed, nextGC, heap = nextGC, nextGC+gcEvery, gcLeaves
			return true
		}
		elapsed += d
		return false
	}
	a.collect = func() { collects++; heap = collectLeaves }
	start := func(every time.Duration, gcLeavesHeap, collectLeavesHeap heapStats) {
		clock = clock.Add(time.Hour) // past minCollectEvery since any earlier forced collection
		elapsed, heap, gcEvery, nextGC, gcLeaves, collectLeaves, collects = 0, over, every, every, gcLeavesHeap, collectLeavesHeap, 0
	}
	counts := func() (admitted, refusedAfterWait, refused float64) {
		return testutil.ToFloat64(a.waited.WithLabelValues("admitted")), testutil.ToFloat64(a.waited.WithLabelValues("refused")),
			testutil.ToFloat64(a.refused.WithLabelValues("memory"))
	}

	// A collection 30 ms in finds the heap under budget.
	start(30*time.Millisecond, under, over)
	if err := a.Admit(); err != nil || elapsed != 30*time.Millisecond || collects != 0 {
		t.Fatalf("heap under budget at the collection 30 ms in: %v after %v, %d forced collections; want admitted then, none forced", err, elapsed, collects)
	}
	if ad, rw, r := counts(); ad != 1 || rw != 0 || r != 0 {
		t.Fatalf("waits admitted %v, refused %v, memory refusals %v; want 1, 0, 0", ad, rw, r)
	}

	// Collections every 50 ms all find it over: refused at the deadline,
	// and the figure is never stale enough to force one.
	start(50*time.Millisecond, over, over)
	if err := a.Admit(); !errors.Is(err, errMemory) || elapsed != cfg.MemoryWait || collects != 0 {
		t.Fatalf("heap over budget throughout: %v after %v, %d forced collections; want a memory refusal after %v, none forced", err, elapsed, collects, cfg.MemoryWait)
	}
	if ad, rw, r := counts(); ad != 1 || rw != 1 || r != 1 {
		t.Fatalf("waits admitted %v, refused %v, memory refusals %v; want 1, 1, 1", ad, rw, r)
	}

	// No collection ends: one is forced after staleAfter and admits.
	start(0, over, under)
	if err := a.Admit(); err != nil || elapsed != staleAfter || collects != 1 {
		t.Fatalf("stale figure: %v after %v, %d forced collections; want admitted after %v by one", err, elapsed, collects, staleAfter)
	}
	if n := testutil.ToFloat64(a.forced); n != 1 {
		t.Fatalf("tracedx_admission_forced_gcs_total %v after one forced collection", n)
	}
	// Forced collections that find the heap over budget come at most
	// every minCollectEvery.
	start(0, over, over)
	if err := a.Admit(); !errors.Is(err, errMemory) || collects != 1 {
		t.Fatalf("heap truly over budget, nothing allocating: %v, %d forced collections within %v; want a memory refusal, one", err, collects, cfg.MemoryWait)
	}

	// Another budget exceeded while waiting refuses for that one.
	start(20*time.Millisecond, over, over)
	gcEnded := a.gcEnded
	a.gcEnded = func(d time.Duration) bool { st.err = store.ErrOverloaded; return gcEnded(d) }
	if err := a.Admit(); refusalReason(err) != "head" || elapsed != 20*time.Millisecond {
		t.Fatalf("head over budget during the wait: %v (reason %q) after %v; want a head refusal at the first collection", err, refusalReason(err), elapsed)
	}
	st.err, a.gcEnded = nil, gcEnded

	// As many waiting as allowed: refused without waiting.
	start(20*time.Millisecond, under, under)
	a.waiters.Store(maxMemoryWaiters)
	if err := a.Admit(); !errors.Is(err, errMemory) || elapsed != 0 {
		t.Fatalf("with %d waiting: %v after %v; want a memory refusal at once", maxMemoryWaiters, err, elapsed)
	}
	a.waiters.Store(0)

	// No wait configured: refused at once.
	cfg.MemoryWait = 0
	a = newAdmission(cfg, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	a.heap = func() heapStats { return over }
	a.gcEnded = func(time.Duration) bool { t.Fatal("waited with admission.memory_wait 0"); return false }
	if err := a.Admit(); !errors.Is(err, errMemory) {
		t.Fatalf("memory_wait 0: %v", err)
	}
}

// The watch hears of every collection, and the heap reader reads the
// runtime's figures again after one instead of serving its cached ones.
func TestGCWatch(t *testing.T) {
	r := newHeapReader()
	r.read()
	n := collections.count()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !collections.wait(10 * time.Second) {
		}
	}()
	time.Sleep(10 * time.Millisecond) // let the waiter take the current channel
	runtime.GC()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no waiter woken by a collection")
	}
	if collections.count() == n {
		t.Fatal("collection not counted")
	}
	r.mu.Lock()
	r.at = time.Now().Add(time.Hour) // the cache would hold for another hour
	r.mu.Unlock()
	r.read()
	if r.gen != collections.count() {
		t.Fatalf("heap reader served figures from before the collection (read at %d, %d collections)", r.gen, collections.count())
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

// A forced collection is counted, with the time it took; one skipped
// (another was forced less than minCollectEvery ago) is not.
func TestForcedCollectionsAreCounted(t *testing.T) {
	a := newAdmission(config.Default().Admission, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	clock := time.Unix(1_000_000_000, 0)
	a.now = func() time.Time { return clock }
	a.collect = func() { clock = clock.Add(15 * time.Millisecond) }
	a.collectStale()
	if n, s := testutil.ToFloat64(a.forced), testutil.ToFloat64(a.forcedSeconds); n != 1 || math.Abs(s-0.015) > 1e-9 {
		t.Fatalf("after a 15 ms forced collection: %v collections, %v s; want 1, 0.015", n, s)
	}
	a.collectStale()
	if n := testutil.ToFloat64(a.forced); n != 1 {
		t.Fatalf("a collection within minCollectEvery of the last was forced: %v counted", n)
	}
	clock = clock.Add(minCollectEvery)
	a.collectStale()
	if n, s := testutil.ToFloat64(a.forced), testutil.ToFloat64(a.forcedSeconds); n != 2 || math.Abs(s-0.030) > 1e-9 {
		t.Fatalf("after two forced collections: %v collections, %v s; want 2, 0.030", n, s)
	}
}

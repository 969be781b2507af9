package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// collector is a minimal OTLP/HTTP receiver that keeps every span.
type collector struct {
	mu    sync.Mutex
	spans []model.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	spans := otlpconv.FromTraces(req.Traces())
	c.mu.Lock()
	c.spans = append(c.spans, spans...)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := ptraceotlp.NewExportResponse().MarshalProto()
	_, _ = w.Write(out)
}

// byIncident groups the collected traces by the demo.incident attribute of
// their spans ("" for healthy traffic).
func (c *collector) byIncident() map[string][][]model.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	traces := map[model.TraceID][]model.Span{}
	for _, s := range c.spans {
		traces[s.TraceID] = append(traces[s.TraceID], s)
	}
	out := map[string][][]model.Span{}
	for _, spans := range traces {
		inc := ""
		for i := range spans {
			if v := spans[i].Attrs.Str("demo.incident"); v != "" {
				inc = v
				break
			}
		}
		out[inc] = append(out[inc], spans)
	}
	return out
}

// startShop runs a shop that exports to a fresh collector.
func startShop(t *testing.T, opts Options) (*Shop, *collector) {
	t.Helper()
	col := &collector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	opts.Endpoint = strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	shop, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shop.Close(context.Background()) })
	return shop, col
}

func flush(t *testing.T, shop *Shop) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range shop.services {
		if err := svc.tp.ForceFlush(ctx); err != nil {
			t.Fatalf("flush %s: %v", svc.name, err)
		}
	}
	if err := shop.ordersNext.tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
}

// perTraceKinds maps each incident to the per-trace finding it must
// produce in at least one of its traces. Cross-trace incidents
// (cache_stampede, auth_expiry_race, deploy) need the server's store and
// are checked end to end in e2e/.
var perTraceKinds = map[string]string{
	"n_plus_one_query": "n_plus_one_query",
	"sequential_calls": "sequential_calls",
	"fan_out":          "fan_out",
	"cache_miss":       "cache_miss",
	"timeout_cascade":  "timeout_cascade",
	"retry_storm":      "retry_storm",
	"error_origin":     "error_origin",
	"swallowed_error":  "swallowed_error",
	"idle_gap":         "idle_gap",
	"consumer_lag":     "consumer_lag",
	"poison_message":   "poison_message",
}

// TestIncidentsProduceFindings plays every per-trace incident at once and
// runs tracedx's detectors on what the shop exported.
func TestIncidentsProduceFindings(t *testing.T) {
	shop, col := startShop(t, Options{ConsumerLag: 1200 * time.Millisecond})
	ctx := context.Background()
	var wg sync.WaitGroup
	for inc := range perTraceKinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := shop.Incident(ctx, inc); err != nil {
				t.Errorf("incident %s: %v", inc, err)
			}
		}()
	}
	wg.Wait()
	// The consumer_lag message is consumed ConsumerLag after it was sent.
	time.Sleep(1500 * time.Millisecond)
	flush(t, shop)

	registered := analyze.Kinds()
	got := col.byIncident()
	for inc, kind := range perTraceKinds {
		t.Run(inc, func(t *testing.T) {
			traces := got[inc]
			if len(traces) == 0 {
				t.Fatalf("incident %s exported no trace tagged demo.incident=%s", inc, inc)
			}
			if !slices.Contains(registered, kind) {
				t.Skipf("detector %q is not registered in internal/analyze yet", kind)
			}
			var seen []string
			for _, spans := range traces {
				res := analyze.Analyze(spans, analyze.Options{})
				for _, f := range res.Findings {
					if f.Kind == kind {
						return
					}
					seen = append(seen, f.Kind)
				}
			}
			sort.Strings(seen)
			t.Errorf("incident %s: no %s finding in its %d trace(s); found %v", inc, kind, len(traces), slices.Compact(seen))
		})
	}
}

// TestHealthyTrafficIsQuiet: the normal request mix must not look like an
// incident, or the demo would teach users to ignore findings.
//
// The shop runs on real time, so a machine that stops this process for
// 100 ms (a loaded CI host under -race) puts a real 100 ms gap into real
// spans, which idle_gap rightly reports. An attempt during which the
// process itself was held up that long says nothing about the shop; the
// test tries again and judges the first attempt that ran undisturbed.
func TestHealthyTrafficIsQuiet(t *testing.T) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		problems, stall := healthyTrafficProblems(t)
		if stall < stallTolerance {
			for _, p := range problems {
				t.Error(p)
			}
			return
		}
		t.Logf("attempt %d: the process was held up for %s; its spans' timing is the machine's, not the shop's (%d findings)", attempt, stall, len(problems))
		if attempt == attempts {
			t.Skipf("the process was held up ≥ %s in each of %d attempts: the machine is too busy to judge real-time traces", stallTolerance, attempts)
		}
	}
}

// stallTolerance is well below idle_gap's 100 ms minimum gap.
const stallTolerance = 40 * time.Millisecond

// healthyTrafficProblems plays 24 healthy requests and returns the findings
// a healthy request must never produce, and the longest time the process
// was held up while they ran.
func healthyTrafficProblems(t *testing.T) ([]string, time.Duration) {
	shop, col := startShop(t, Options{})
	ctx := context.Background()
	stop := watchStalls()
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() { defer wg.Done(); shop.healthyRequest(ctx) }()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the order.placed consumers
	stall := stop()
	flush(t, shop)
	healthy := col.byIncident()[""]
	if len(healthy) < 24 {
		t.Fatalf("got %d healthy traces, want at least 24", len(healthy))
	}
	// Kinds that a healthy request must never produce.
	bad := []string{"n_plus_one_query", "sequential_calls", "fan_out", "timeout_cascade", "retry_storm",
		"error_origin", "swallowed_error", "idle_gap", "consumer_lag", "poison_message", "slow_query"}
	var problems []string
	for _, spans := range healthy {
		for _, f := range analyze.Analyze(spans, analyze.Options{}).Findings {
			if slices.Contains(bad, f.Kind) {
				problems = append(problems, fmt.Sprintf("healthy trace %s (%s) diagnosed with %s: %s", f.TraceID, spans[0].Name, f.Kind, f.Title))
			}
		}
	}
	return problems, stall
}

// watchStalls measures how late a goroutine woken by a 5 ms ticker gets
// to run until the returned function is called, which returns the worst
// lateness: the longest time the process's goroutines were kept from
// running. The time is read when the goroutine runs, not taken from the
// tick: a tick is sent on time while the goroutines wait for a CPU, which
// is the delay the shop's spans show.
func watchStalls() (stop func() time.Duration) {
	const every = 5 * time.Millisecond
	done := make(chan struct{})
	worst := make(chan time.Duration)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		var max time.Duration
		last := time.Now()
		for {
			select {
			case <-done:
				worst <- max
				return
			case <-tick.C:
				now := time.Now()
				if late := now.Sub(last) - every; late > max {
					max = late
				}
				last = now
			}
		}
	}()
	return func() time.Duration { close(done); return <-worst }
}

func TestControlHandler(t *testing.T) {
	shop, col := startShop(t, Options{})
	h := shop.ControlHandler(context.Background())

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/incidents", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "n_plus_one_query\n") {
		t.Fatalf("GET /incidents: %d %q", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/incidents/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("POST unknown incident: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/incidents/fan_out", nil))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST /incidents/fan_out: %d %s", rec.Code, rec.Body.String())
	}
	// The incident runs in the background; its trace must arrive.
	deadline := time.Now().Add(10 * time.Second)
	for len(col.byIncident()["fan_out"]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the fan_out incident started over the control API exported no trace")
		}
		time.Sleep(200 * time.Millisecond)
		flush(t, shop)
	}
	if err := shop.Incident(context.Background(), "nope"); err == nil {
		t.Error("Incident accepted an unknown name")
	}
}

// TestCrossTraceIncidents checks the signatures of the incidents that only
// show across traces (their detectors need the server's store and are
// checked end to end in e2e/), against the thresholds of patterns.md.
func TestCrossTraceIncidents(t *testing.T) {
	shop, col := startShop(t, Options{})
	ctx := context.Background()
	// A baseline for the deploy: healthy /api/orders before it.
	for range 3 {
		shop.get(ctx, "", "/api/orders")
	}
	start := time.Now()
	parallel(
		func() { _ = shop.Incident(ctx, "cache_stampede") },
		func() { _ = shop.Incident(ctx, "auth_expiry_race") },
	)
	if err := shop.Incident(ctx, "deploy"); err != nil {
		t.Fatal(err)
	}
	flush(t, shop)
	got := col.byIncident()

	t.Run("cache_stampede", func(t *testing.T) {
		// ≥ 5 traces within 2 s miss the same key, hit the database and
		// write the key back.
		keys := map[string]int{}
		for _, spans := range got["cache_stampede"] {
			var miss, set string
			db := false
			for _, s := range spans {
				if hit, ok := s.Attrs.Get("cache.hit"); ok && !hit.Bool {
					miss = s.Attrs.Str("db.query.text")
				}
				if s.Name == "SET" {
					set = s.Attrs.Str("db.query.text")
				}
				db = db || s.Attrs.Str("db.system") == "postgresql"
			}
			if miss != "" && db && strings.HasPrefix(set, "SET "+strings.TrimPrefix(miss, "GET ")) {
				keys[miss]++
			}
			if d := time.Duration(spans[0].StartUnixNano) - time.Duration(start.UnixNano()); d > 2*time.Second {
				t.Errorf("a stampede trace started %s after the incident", d)
			}
		}
		best := 0
		for _, n := range keys {
			best = max(best, n)
		}
		if best < 5 {
			t.Errorf("at most %d traces missed the same key and refilled it (%v), want ≥ 5", best, keys)
		}
	})
	t.Run("auth_expiry_race", func(t *testing.T) {
		ok, refused := 0, 0
		for _, spans := range got["auth_expiry_race"] {
			for _, s := range spans {
				if s.Service != "auth" || s.Kind != model.KindServer {
					continue
				}
				switch v, _ := s.Attrs.Get("http.response.status_code"); v.Int {
				case http.StatusOK:
					ok++
				case http.StatusUnauthorized:
					refused++
				}
			}
		}
		if refused < 3 || ok < 3 {
			t.Errorf("auth answered %d×200 and %d×401; want ≥ 3 refusals among ≥ 3 successes", ok, refused)
		}
	})
	t.Run("deploy", func(t *testing.T) {
		// The new orders version must at least double the spans per trace
		// of GET /api/orders (span_count_regression) and name itself.
		count := func(traces [][]model.Span, version string) (n, spans int) {
			for _, tr := range traces {
				isOrders, ver := false, ""
				for _, s := range tr {
					if s.Service == "orders" && s.Kind == model.KindServer && s.Name == "GET /orders" {
						isOrders = true
						ver = s.Resource.Str("service.version")
					}
				}
				if isOrders && ver == version {
					n++
					spans += len(tr)
				}
			}
			return
		}
		bt, bs := count(got[""], "1.4.0")
		dt, ds := count(got["deploy"], "1.5.0")
		if bt == 0 || dt == 0 {
			t.Fatalf("%d baseline and %d deployed /api/orders traces", bt, dt)
		}
		before, after := float64(bs)/float64(bt), float64(ds)/float64(dt)
		if after < 2*before {
			t.Errorf("spans per /api/orders trace went from %.1f to %.1f after the deploy, want ≥ 2x", before, after)
		}
	})
}

//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracedx/tracedx/internal/analyze"
)

// A ride-dispatch app of four services, written for this test, with the
// contention problems real apps have (a frontend asks customer for the
// pickup location, then driver for nearby drivers at that location, then
// route for an ETA per driver):
//   - customer guards its database with one process-wide mutex, and says so
//     in span events ("Waiting for lock behind N transactions");
//   - driver reads each driver from Redis one GET at a time, and every fifth
//     read times out (after 110 ms) and is retried once;
//   - frontend sends the route calls through a worker pool of 3 shared by
//     all requests.
// Each problem has a fix switch. Spans go over OTLP/HTTP (the Go SDK's
// exporter) to the shared `tracedx serve`, and each trace's diagnosis is
// read back from GET /api/v1/traces/{id}/analysis (analyze.Analyze with the
// default detectors and the server's history).

type rideFixes struct {
	noMutex    bool // customer: no global lock around the database
	batchRedis bool // driver: one MGET instead of a GET per driver
	bigPool    bool // frontend: route worker pool with room for every call of a burst
}

const (
	rideDBHold       = 70 * time.Millisecond  // a customer query, lock held
	rideRedisGet     = 4 * time.Millisecond   // a Redis GET
	rideRedisTimeout = 110 * time.Millisecond // the client's read timeout
	rideDrivers      = 10
)

// rideLock is a mutex that tells the span what it waited for.
type rideLock struct {
	mu     sync.Mutex
	qmu    sync.Mutex
	queued int // holder plus waiters
}

func (l *rideLock) lock(span trace.Span) {
	l.qmu.Lock()
	ahead := l.queued
	l.queued++
	l.qmu.Unlock()
	if ahead > 0 {
		span.AddEvent(fmt.Sprintf("Waiting for lock behind %d transactions", ahead))
	}
	l.mu.Lock()
	l.qmu.Lock()
	behind := l.queued - 1
	l.qmu.Unlock()
	span.AddEvent(fmt.Sprintf("Acquired lock with %d transactions waiting behind", behind))
}

func (l *rideLock) unlock() {
	l.qmu.Lock()
	l.queued--
	l.qmu.Unlock()
	l.mu.Unlock()
}

// ridePool runs submitted work on a fixed set of goroutines, FIFO.
type ridePool struct{ jobs chan func() }

func newRidePool(workers int) *ridePool {
	p := &ridePool{jobs: make(chan func(), 1024)}
	for range workers {
		go func() {
			for job := range p.jobs {
				job()
			}
		}()
	}
	return p
}

type rideApp struct {
	tps      []*sdktrace.TracerProvider
	recs     []*tracetest.SpanRecorder
	frontend *httptest.Server
	pool     *ridePool
	redisOps atomic.Int64 // first attempts of Redis reads; every fifth times out
}

var rideProp = propagation.TraceContext{}

// rideServe wraps a JSON handler in a SERVER span continuing the caller's
// trace.
func rideServe(tr trace.Tracer, route string, h func(ctx context.Context, q url.Values) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := rideProp.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tr.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method), attribute.String("http.route", route),
			attribute.String("url.path", r.URL.Path), attribute.String("url.query", r.URL.RawQuery)))
		defer span.End()
		v, err := h(ctx, r.URL.Query())
		status := http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		w.Header().Set("X-Trace-Id", span.SpanContext().TraceID().String())
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	})
}

// rideGet is the callers' HTTP client: a CLIENT span naming the peer by
// address and port, as HTTP instrumentation does.
func rideGet(ctx context.Context, tr trace.Tracer, base, pathQuery string, out any) error {
	u, _ := url.Parse(base + pathQuery)
	port, _ := strconv.Atoi(u.Port())
	ctx, span := tr.Start(ctx, "GET", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("http.request.method", "GET"), attribute.String("url.full", u.String()),
		attribute.String("server.address", u.Hostname()), attribute.Int("server.port", port)))
	defer span.End()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	rideProp.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	defer resp.Body.Close()
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode != http.StatusOK {
		span.SetStatus(codes.Error, resp.Status)
		return fmt.Errorf("GET %s: %s", pathQuery, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// redisCall is one Redis command as redis client instrumentation records
// it; it sleeps for the server's time, or fails like a read timeout.
func redisCall(ctx context.Context, tr trace.Tracer, cmd string, work time.Duration, timeout bool) error {
	_, span := tr.Start(ctx, strings.Fields(cmd)[0], trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system.name", "redis"), attribute.String("db.operation.name", strings.Fields(cmd)[0]),
		attribute.String("db.query.text", cmd), attribute.String("server.address", "10.0.3.17"), attribute.Int("server.port", 6379)))
	defer span.End()
	if timeout {
		time.Sleep(rideRedisTimeout)
		err := errors.New("redis: read tcp 10.0.1.4:51234->10.0.3.17:6379: i/o timeout")
		span.RecordError(err, trace.WithAttributes(attribute.String("exception.type", "net.OpError")))
		span.SetAttributes(attribute.String("error.type", "timeout"))
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	time.Sleep(work)
	return nil
}

// redisRead reads with one retry: every fifth first attempt (counted
// across requests) times out, and the retry succeeds, so a request never
// fails because of it.
func (app *rideApp) redisRead(ctx context.Context, tr trace.Tracer, cmd string, work time.Duration) {
	if redisCall(ctx, tr, cmd, work, app.redisOps.Add(1)%5 == 0) != nil {
		_ = redisCall(ctx, tr, cmd, work, false)
	}
}

func startRideApp(t *testing.T, fix rideFixes) *rideApp {
	t.Helper()
	app := &rideApp{}
	tracer := func(service string) trace.Tracer {
		tp, rec := newGoProvider(t, shared, "http", service)
		app.tps, app.recs = append(app.tps, tp), append(app.recs, rec)
		return tp.Tracer("ride/" + service)
	}

	custTr := tracer("ride-customer")
	var dbLock rideLock
	locations := map[string]string{"123": "115,277", "392": "577,322", "567": "211,653", "731": "728,326"}
	customer := httptest.NewServer(rideServe(custTr, "/customer", func(ctx context.Context, q url.Values) (any, error) {
		id := q.Get("customer")
		_, span := custTr.Start(ctx, "SELECT customers.customer", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("db.system.name", "mysql"), attribute.String("db.namespace", "customers"),
			attribute.String("db.query.text", "SELECT * FROM customer WHERE customer_id="+id),
			attribute.String("server.address", "10.0.3.9"), attribute.Int("server.port", 3306)))
		defer span.End()
		if !fix.noMutex {
			dbLock.lock(span)
			defer dbLock.unlock()
		}
		time.Sleep(rideDBHold)
		loc, ok := locations[id]
		if !ok {
			return nil, fmt.Errorf("no customer %q", id)
		}
		return map[string]string{"id": id, "location": loc}, nil
	}))
	t.Cleanup(customer.Close)

	drvTr := tracer("ride-driver")
	driver := httptest.NewServer(rideServe(drvTr, "/drivers", func(ctx context.Context, q url.Values) (any, error) {
		cell := strings.ReplaceAll(q.Get("location"), ",", ":")
		app.redisRead(ctx, drvTr, "SMEMBERS drivers:near:"+cell, 6*time.Millisecond)
		ids := make([]string, rideDrivers)
		for i := range ids {
			ids[i] = fmt.Sprint(40210 + i*7)
		}
		if fix.batchRedis {
			app.redisRead(ctx, drvTr, "MGET driver:"+strings.Join(ids, " driver:"), 6*time.Millisecond)
			return ids, nil
		}
		for _, id := range ids {
			app.redisRead(ctx, drvTr, "GET driver:"+id, rideRedisGet)
		}
		return ids, nil
	}))
	t.Cleanup(driver.Close)

	routeTr := tracer("ride-route")
	route := httptest.NewServer(rideServe(routeTr, "/route", func(ctx context.Context, q url.Values) (any, error) {
		n, _ := strconv.Atoi(q.Get("driver"))
		time.Sleep(time.Duration(40+n%23) * time.Millisecond)
		return map[string]int{"eta_s": 120 + n%300}, nil
	}))
	t.Cleanup(route.Close)

	workers := 3
	if fix.bigPool {
		// The pool is shared by the burst's concurrent requests (6 × 10
		// route calls): a pool of 10 still queues calls whenever requests
		// overlap, which the detector rightly reports, so the fix is room
		// for all of them.
		workers = 64
	}
	app.pool = newRidePool(workers)
	t.Cleanup(func() { close(app.pool.jobs) })
	feTr := tracer("ride-frontend")
	app.frontend = httptest.NewServer(rideServe(feTr, "/dispatch", func(ctx context.Context, q url.Values) (any, error) {
		var cust map[string]string
		if err := rideGet(ctx, feTr, customer.URL, "/customer?customer="+q.Get("customer"), &cust); err != nil {
			return nil, err
		}
		var ids []string
		if err := rideGet(ctx, feTr, driver.URL, "/drivers?location="+url.QueryEscape(cust["location"]), &ids); err != nil {
			return nil, err
		}
		etas := make([]int, len(ids))
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Add(1)
			app.pool.jobs <- func() {
				defer wg.Done()
				var r map[string]int
				if rideGet(ctx, feTr, route.URL, "/route?from="+url.QueryEscape(cust["location"])+"&driver="+id, &r) == nil {
					etas[i] = r["eta_s"]
				}
			}
		}
		wg.Wait()
		best := 0
		for i := range etas {
			if etas[i] < etas[best] {
				best = i
			}
		}
		return map[string]any{"driver": ids[best], "eta_s": etas[best]}, nil
	}))
	t.Cleanup(app.frontend.Close)
	return app
}

// load sends bursts of concurrent dispatch requests (several users press
// the button at once) and returns the server's diagnosis of every trace.
func (app *rideApp) load(t *testing.T, bursts, perBurst int) []analyze.Result {
	t.Helper()
	customers := []string{"123", "392", "567", "731"}
	var mu sync.Mutex
	var ids []string
	for b := range bursts {
		var wg sync.WaitGroup
		for i := range perBurst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(app.frontend.URL + "/dispatch?customer=" + customers[(b+i)%len(customers)])
				if err != nil {
					t.Errorf("dispatch: %v", err)
					return
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("dispatch: %s", resp.Status)
				}
				mu.Lock()
				ids = append(ids, resp.Header.Get("X-Trace-Id"))
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	for _, tp := range app.tps {
		shutdownProvider(t, tp)
	}
	sent := map[string]int{}
	for _, rec := range app.recs {
		for _, s := range rec.Ended() {
			sent[s.SpanContext().TraceID().String()]++
		}
	}
	out := make([]analyze.Result, 0, len(ids))
	for _, id := range ids {
		shared.waitTrace(t, id, sent[id])
		var res analyze.Result
		if err := shared.getJSON(context.Background(), "/api/v1/traces/"+id+"/analysis", &res); err != nil {
			t.Fatalf("analysis of %s: %v", id, err)
		}
		out = append(out, res)
	}
	return out
}

// rideEvidence decodes a finding's evidence (generic JSON after the trip
// through the API) into the detector's evidence type.
func rideEvidence[T any](t *testing.T, f analyze.Finding) T {
	t.Helper()
	var ev T
	b, err := json.Marshal(f.Evidence)
	if err == nil {
		err = json.Unmarshal(b, &ev)
	}
	if err != nil {
		t.Fatalf("%s evidence: %v", f.Kind, err)
	}
	return ev
}

// rideFindings returns the findings of kind in every result that match.
func rideFindings(results []analyze.Result, kind string, match func(analyze.Finding) bool) (found []analyze.Finding, traces int) {
	for _, r := range results {
		hit := false
		for _, f := range r.Findings {
			if f.Kind == kind && (match == nil || match(f)) {
				found = append(found, f)
				hit = true
			}
		}
		if hit {
			traces++
		}
	}
	return found, traces
}

func rideSummary(results []analyze.Result) string {
	var b strings.Builder
	for _, r := range results {
		fmt.Fprintf(&b, "trace %s (%.0f ms):\n", r.TraceID, r.DurationMS)
		for _, f := range r.Findings {
			fmt.Fprintf(&b, "  %s %s: %s\n", f.Severity, f.Kind, f.Title)
		}
	}
	return b.String()
}

// rideMechanism reads lock_contention's evidence.mechanism.
func rideMechanism(f analyze.Finding) string {
	m, _ := f.Evidence.(map[string]any)
	v, _ := m["mechanism"].(string)
	return v
}

func rideIsLockWait(f analyze.Finding) bool { return rideMechanism(f) == "span_events" }

func rideIsPool(f analyze.Finding) bool { return rideMechanism(f) == "pool_fan_out" }

func rideNoQueryPlanAdvice(t *testing.T, f analyze.Finding) {
	t.Helper()
	l := strings.ToLower(f.Fix)
	if strings.Contains(l, "explain") || strings.Contains(l, "index") {
		t.Errorf("%s %q advises on query plans: %q", f.Kind, f.Title, f.Fix)
	}
}

func TestRideDispatchContention(t *testing.T) {
	app := startRideApp(t, rideFixes{})
	results := app.load(t, 2, 6)
	t.Logf("problems on:\n%s", rideSummary(results))

	t.Run("lock_contention names the customer database lock", func(t *testing.T) {
		locks, _ := rideFindings(results, "lock_contention", rideIsLockWait)
		if len(locks) == 0 {
			t.Fatal("no lock_contention finding for the customer lock")
		}
		deepest := 0
		for _, f := range locks {
			ev := rideEvidence[analyze.LockContentionEvidence](t, f)
			if ev.Resource != "lock" {
				t.Errorf("resource %q, want lock", ev.Resource)
			}
			if f.Culprit == nil || f.Culprit.Service != "ride-customer" || f.Culprit.Operation != "SELECT customers.customer" {
				t.Errorf("culprit %+v, want customer's database call", f.Culprit)
			}
			if !strings.Contains(f.Fix, "global mutex") {
				t.Errorf("fix %q does not speak of the lock", f.Fix)
			}
			rideNoQueryPlanAdvice(t, f)
			deepest = max(deepest, ev.WaitersAhead)
		}
		// Six requests at once: the last queues behind four or five.
		if deepest < 3 {
			t.Errorf("deepest queue %d transactions, want ≥ 3", deepest)
		}
		var severe int
		for _, f := range locks {
			if f.Severity.Rank() >= analyze.SeverityWarning.Rank() {
				severe++
			}
		}
		if severe == 0 {
			t.Error("no lock wait reached warning")
		}
	})

	t.Run("slow_query leaves the lock wait alone", func(t *testing.T) {
		sq, _ := rideFindings(results, "slow_query", nil)
		for _, f := range sq {
			ev := rideEvidence[analyze.SlowQueryEvidence](t, f)
			if ev.DBSystem == "mysql" {
				t.Errorf("slow_query on the customer query that waited for a lock: %q", f.Title)
			}
			if ev.DBSystem == "redis" {
				if ev.Failed {
					t.Errorf("slow_query on a failed Redis attempt: %q", f.Title)
				}
				rideNoQueryPlanAdvice(t, f)
			}
		}
	})

	t.Run("lock_contention names the worker pool of 3 for 10 route calls", func(t *testing.T) {
		pools, traces := rideFindings(results, "lock_contention", rideIsPool)
		if traces*2 < len(results) {
			t.Fatalf("pool-starved fan-out named in %d of %d traces", traces, len(results))
		}
		for _, f := range pools {
			ev := rideEvidence[analyze.LockContentionEvidence](t, f)
			if ev.Pool.Concurrency != 3 || ev.Pool.Calls != rideDrivers || ev.Pool.Operation != "GET /route" ||
				!strings.Contains(f.Title, "worker pool of 3 for 10 calls") {
				t.Errorf("pool %+v title %q", ev.Pool, f.Title)
			}
			if f.Culprit == nil || f.Culprit.Service != "ride-frontend" || f.Culprit.Operation != "GET /dispatch" {
				t.Errorf("culprit %+v, want the frontend's dispatch", f.Culprit)
			}
			rideNoQueryPlanAdvice(t, f)
		}
	})

	t.Run("n_plus_one_query names the GET per driver", func(t *testing.T) {
		n1, traces := rideFindings(results, "n_plus_one_query", func(f analyze.Finding) bool {
			return strings.Contains(f.Title, "redis")
		})
		if traces*2 < len(results) {
			t.Fatalf("N+1 on Redis named in %d of %d traces", traces, len(results))
		}
		for _, f := range n1 {
			rideNoQueryPlanAdvice(t, f)
		}
	})

	t.Run("failing cache reads are named as retried failures", func(t *testing.T) {
		rs, _ := rideFindings(results, "retry_storm", func(f analyze.Finding) bool {
			return strings.Contains(f.Title, "GET driver:?")
		})
		if len(rs) == 0 {
			t.Fatal("no retry_storm for the timed-out Redis reads")
		}
	})

	// Culprits of the other detectors.
	t.Run("n_plus_one_query culprit is driver's loop", func(t *testing.T) {
		n1, _ := rideFindings(results, "n_plus_one_query", nil)
		for _, f := range n1 {
			if f.Culprit == nil {
				t.Fatalf("n_plus_one_query without a culprit: %q", f.Title)
			}
			if f.Culprit.Service != "ride-driver" {
				t.Errorf("culprit %+v, want driver", f.Culprit)
			}
		}
	})
	t.Run("retry_storm culprit is the failing Redis", func(t *testing.T) {
		rs, _ := rideFindings(results, "retry_storm", nil)
		for _, f := range rs {
			if f.Culprit == nil {
				t.Fatalf("retry_storm without a culprit: %q", f.Title)
			}
			if !strings.Contains(f.Culprit.Service+" "+f.Culprit.Operation, "redis") &&
				!strings.Contains(f.Culprit.Service, "10.0.3.17") {
				t.Errorf("culprit %+v, want the Redis reads", f.Culprit)
			}
		}
	})
	t.Run("sequential_calls not a warning for a data-dependent chain", func(t *testing.T) {
		sc, _ := rideFindings(results, "sequential_calls", func(f analyze.Finding) bool {
			return f.Severity.Rank() >= analyze.SeverityWarning.Rank()
		})
		if len(sc) > 0 {
			t.Errorf("sequential_calls warns on the data-dependent customer → driver → route chain: %q", sc[0].Title)
		}
	})
}

func TestRideDispatchFixed(t *testing.T) {
	app := startRideApp(t, rideFixes{noMutex: true, batchRedis: true, bigPool: true})
	results := app.load(t, 1, 6)
	t.Logf("fixes on:\n%s", rideSummary(results))
	for _, r := range results {
		for _, f := range r.Findings {
			if f.Severity.Rank() < analyze.SeverityWarning.Rank() {
				continue
			}
			switch f.Kind {
			case "lock_contention", "n_plus_one_query":
				t.Errorf("fixed, yet %s %s: %q", f.Severity, f.Kind, f.Title)
			case "slow_query":
				if ev := rideEvidence[analyze.SlowQueryEvidence](t, f); ev.DBSystem == "mysql" {
					t.Errorf("fixed, yet %s slow_query on the customer query: %q", f.Severity, f.Title)
				}
			}
		}
	}
	if pools, _ := rideFindings(results, "lock_contention", rideIsPool); len(pools) > 0 {
		t.Errorf("a pool with room for every call still named: %q", pools[0].Title)
	}
}

package analyze

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

const lcBase = 1_700_000_000_000_000_000

func lcEvent(atMS float64, name string, attrs ...model.Attr) model.Event {
	return model.Event{TimeUnixNano: lcBase + uint64(atMS*1e6), Name: name, Attrs: attrs}
}

// lcEventsFollow moves each span's events by the shift its start got from
// a timing transform: events carry the same host clock as their span.
func lcEventsFollow(orig, moved []model.Span) []model.Span {
	for i := range moved {
		d := int64(moved[i].StartUnixNano) - int64(orig[i].StartUnixNano)
		evs := append([]model.Event(nil), moved[i].Events...)
		for j := range evs {
			evs[j].TimeUnixNano = uint64(int64(evs[j].TimeUnixNano) + d)
			evs[j].TimeUnixNano -= evs[j].TimeUnixNano % uint64(time.Millisecond)
		}
		moved[i].Events = evs
	}
	return moved
}

// lcRealTimings are the clocks real SDKs hand over.
var lcRealTimings = map[string]func([]model.Span) []model.Span{
	"exact":      func(s []model.Span) []model.Span { return s },
	"ms-rounded": func(s []model.Span) []model.Span { return lcEventsFollow(s, roundToMillis(s)) },
	"jitter-2ms": func(s []model.Span) []model.Span { return lcEventsFollow(s, jitterMillis(s, 2*time.Millisecond)) },
	"customer-skew": func(s []model.Span) []model.Span {
		return lcEventsFollow(s, skewService(s, "customer", 25*time.Millisecond))
	},
}

// lcMutexTrace is a frontend request whose customer lookup queues behind
// a global lock around the database (events as HotROD-style apps write
// them).
func lcMutexTrace(waitStart, acquired, end float64) []model.Span {
	q := p1Span(4, 3, "customer", "SQL SELECT", model.KindClient, 12, end,
		model.Attr{Key: "db.system", Value: model.Str("mysql")}, model.Attr{Key: "peer.service", Value: model.Str("mysql")},
		model.Attr{Key: "db.statement", Value: model.Str("SELECT * FROM customer WHERE customer_id=392")})
	q.Events = []model.Event{
		lcEvent(waitStart, "Waiting for lock behind 9 transactions", model.Attr{Key: "blockers", Value: model.Str("[1 2 3 4 5 6 7 8 9]")}),
		lcEvent(acquired, "Acquired lock with 9 transactions waiting behind"),
	}
	return []model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, end+100),
		p1Span(2, 1, "frontend", "GET", model.KindClient, 5, end+4, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "peer.service", Value: model.Str("customer")}),
		p1Span(3, 2, "customer", "GET /customer", model.KindServer, 8, end+2, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "http.route", Value: model.Str("/customer")}),
		q,
		p1Span(5, 1, "frontend", "compute eta", model.KindInternal, end+5, end+95),
	}
}

func TestLockContentionGlobalMutexEvents(t *testing.T) {
	for name, real := range lcRealTimings {
		t.Run(name, func(t *testing.T) {
			spans := real(lcMutexTrace(13, 520, 598))
			res := Analyze(spans, Options{})
			got := ofKind(res.Findings, "lock_contention")
			if len(got) != 1 {
				t.Fatalf("lock_contention findings: %d, want 1 (%v)", len(got), lcKinds(res.Findings))
			}
			f := got[0]
			ev := f.Evidence.(LockContentionEvidence)
			if ev.Mechanism != "span_events" || ev.Resource != "lock" || ev.WaitersAhead != 9 || ev.WaitersBehind != 9 {
				t.Errorf("evidence %+v", ev)
			}
			if !p1Near(ev.WaitMS, 507, 4) || ev.SpanSharePct < 80 {
				t.Errorf("wait %.1f ms, %.1f%% of the span", ev.WaitMS, ev.SpanSharePct)
			}
			// 507 ms of a ~700 ms request: critical.
			if f.Severity != SeverityCritical || !p1Near(f.ImpactMS, 507, 4) {
				t.Errorf("severity %s impact %.1f", f.Severity, f.ImpactMS)
			}
			if f.Culprit == nil || f.Culprit.Service != "customer" || f.Culprit.Operation != "SQL SELECT" {
				t.Errorf("culprit %+v", f.Culprit)
			}
			lcNoIndexAdvice(t, f.Fix)
			if !strings.Contains(f.Fix, "global mutex") || !strings.Contains(f.Title, "behind 9 others") {
				t.Errorf("fix %q title %q", f.Fix, f.Title)
			}
			// One root problem, one finding: the query's own 78 ms is no
			// slow query.
			if sq := ofKind(res.Findings, "slow_query"); len(sq) != 0 {
				t.Errorf("slow_query also fired: %q", sq[0].Title)
			}
		})
	}
}

func lcNoIndexAdvice(t *testing.T, fix string) {
	t.Helper()
	l := strings.ToLower(fix)
	if strings.Contains(l, "index") || strings.Contains(l, "explain") {
		t.Errorf("contention fix gives query-plan advice: %q", fix)
	}
}

func lcKinds(fs []Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Kind + "/" + string(f.Severity)
	}
	return out
}

func TestLockContentionSeverityByShareOfRequest(t *testing.T) {
	for _, c := range []struct {
		name         string
		acquired     float64 // wait from 13 ms; the span ends at 598
		want         Severity
		wantFindings int
	}{
		{"most of the request", 520, SeverityCritical, 1},
		{"a fifth", 180, SeverityWarning, 1},         // 167 ms of 698
		{"a tenth", 95, SeverityInfo, 1},             // 82 ms: 12 %
		{"below the floor", 40, "", 0},               // 27 ms: 4 %
		{"acquired at once", 13.2, "", 0},            // 0.2 ms
		{"never acquired", 598, SeverityCritical, 1}, // waited to the span end
	} {
		t.Run(c.name, func(t *testing.T) {
			got := NewLockContention().Detect(NewTrace(lcMutexTrace(13, c.acquired, 598)), nil)
			if len(got) != c.wantFindings {
				t.Fatalf("findings %d, want %d", len(got), c.wantFindings)
			}
			if c.wantFindings > 0 && got[0].Severity != c.want {
				t.Errorf("severity %s, want %s (%s)", got[0].Severity, c.want, got[0].Title)
			}
		})
	}
	// A wait event whose acquisition was not recorded lasts to the span end.
	spans := lcMutexTrace(13, 520, 598)
	spans[3].Events = spans[3].Events[:1]
	got := NewLockContention().Detect(NewTrace(spans), nil)
	if len(got) != 1 || !p1Near(got[0].Evidence.(LockContentionEvidence).WaitMS, 585, 0.1) {
		t.Errorf("unterminated wait: %+v", got)
	}
	// The OTel demo's featureflagservice: Ecto's query of a 37 ms page
	// waited 14 ms for a pooled connection. A large share of a fast
	// request is still only milliseconds: worth a line, not a warning.
	ecto := func(reqMS, waitUS float64) []model.Span {
		return []model.Span{
			p1Span(1, 0, "featureflagservice", "/", model.KindServer, 0, reqMS),
			p1Span(2, 1, "featureflagservice", "featureflagservice.repo.query:featureflags", model.KindClient, 2, reqMS-3,
				model.Attr{Key: "db.type", Value: model.Str("sql")},
				model.Attr{Key: "db.statement", Value: model.Str("SELECT f0.id, f0.name FROM featureflags AS f0")},
				model.Attr{Key: "queue_time_microseconds", Value: model.Int(int64(waitUS))}),
		}
	}
	for _, c := range []struct {
		reqMS, waitUS float64
		want          Severity
	}{{37, 14000, SeverityInfo}, {140, 60000, SeverityWarning}} {
		got := NewLockContention().Detect(NewTrace(ecto(c.reqMS, c.waitUS)), nil)
		if len(got) != 1 || got[0].Severity != c.want {
			t.Errorf("%.0f ms wait of a %.0f ms request: %+v, want one %s", c.waitUS/1000, c.reqMS, got, c.want)
		}
	}
	// Thresholds are configurable.
	d := NewLockContention()
	d.MinWaitMS = 600
	if got := d.Detect(NewTrace(lcMutexTrace(13, 520, 598)), nil); len(got) != 0 {
		t.Errorf("raised floor still fires: %q", got[0].Title)
	}
}

func TestLockContentionEventWording(t *testing.T) {
	for _, c := range []struct {
		wait, acquired, resource string
		found                    bool
	}{
		{"Waiting for lock behind 9 transactions", "Acquired lock with 9 transactions waiting behind", "lock", true},
		{"waiting for connection from pool", "connection acquired", "connection_pool", true},
		{"semaphore.wait", "semaphore.acquired", "semaphore", true},
		{"queued: 14 requests ahead", "dequeued", "queue", true},
		{"mutex contended", "mutex locked", "lock", true},
		{"cache blocked on clock skew", "unblocked", "", false}, // no lock: "blocked", "clock" are other words
		{"retrying after backoff", "done", "", false},
	} {
		res, wait, _ := classifyText(c.wait)
		if c.found != (wait && res == c.resource) {
			t.Errorf("%q: resource %q wait %v, want %q %v", c.wait, res, wait, c.resource, c.found)
		}
	}
	if n := firstInt(aheadRe, "queued: 14 requests ahead"); n != 14 {
		t.Errorf("waiters ahead %d", n)
	}
}

func TestLockContentionPoolWaitAttributes(t *testing.T) {
	req := func(attrs ...model.Attr) []model.Span {
		q := p1Span(3, 2, "orders", "SELECT orders", model.KindClient, 2, 402, append([]model.Attr{
			{Key: "db.system.name", Value: model.Str("postgresql")},
			{Key: "db.query.text", Value: model.Str("SELECT * FROM orders WHERE id = 7")}}, attrs...)...)
		return []model.Span{
			p1Span(1, 0, "orders", "GET /orders/{id}", model.KindServer, 0, 500),
			p1Span(2, 1, "orders", "OrderRepository.find", model.KindInternal, 1, 480),
			q,
		}
	}
	for _, c := range []struct {
		name   string
		attrs  []model.Attr
		waitMS float64
	}{
		{"semconv seconds", []model.Attr{{Key: "db.client.connection.pool.name", Value: model.Str("HikariPool-1")},
			{Key: "db.client.connection.wait_time", Value: model.Float(0.32)}}, 320},
		{"older semconv ms", []model.Attr{{Key: "db.client.connections.pool.name", Value: model.Str("HikariPool-1")},
			{Key: "db.client.connections.wait_time", Value: model.Int(320)}}, 320},
		{"unit in the key", []model.Attr{{Key: "pool.wait_ms", Value: model.Str("320")}}, 320},
		{"lock wait in µs", []model.Attr{{Key: "app.lock.wait_us", Value: model.Int(320000)}}, 320},
		// opentelemetry_ecto (the OTel demo's featureflagservice) reports
		// the wait for a pooled connection as queue_time_microseconds.
		{"ecto queue time", []model.Attr{{Key: "queue_time_microseconds", Value: model.Int(320000)},
			{Key: "idle_time_microseconds", Value: model.Int(584435)}}, 320},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := Analyze(req(c.attrs...), Options{})
			got := ofKind(res.Findings, "lock_contention")
			if len(got) != 1 {
				t.Fatalf("findings %v", lcKinds(res.Findings))
			}
			ev := got[0].Evidence.(LockContentionEvidence)
			if ev.Mechanism != "attributes" || !p1Near(ev.WaitMS, c.waitMS, 0.1) || got[0].Severity != SeverityCritical ||
				got[0].Culprit == nil || got[0].Culprit.Service != "orders" {
				t.Errorf("evidence %+v severity %s culprit %+v", ev, got[0].Severity, got[0].Culprit)
			}
			lcNoIndexAdvice(t, got[0].Fix)
			if len(ofKind(res.Findings, "slow_query")) != 0 {
				t.Error("slow_query fired for a query that mostly waited for a connection")
			}
		})
	}
	// Outside a database span a queue time is some other queue's.
	call := p1Span(4, 1, "orders", "GET", model.KindClient, 2, 402, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
		model.Attr{Key: "queue_time_microseconds", Value: model.Int(320000)})
	if ws := spanWaits(&call); len(ws) != 0 {
		t.Errorf("queue time of an HTTP call read as a pool wait: %+v", ws)
	}
	// A unitless non-standard key is not guessed at, nor is a tiny wait.
	for _, attrs := range [][]model.Attr{
		{{Key: "pool.wait", Value: model.Int(320)}},
		{{Key: "db.client.connection.wait_time", Value: model.Float(0.002)}},
		{{Key: "db.client.connection.pool.name", Value: model.Str("main")}},
	} {
		if got := NewLockContention().Detect(NewTrace(req(attrs...)), nil); len(got) != 0 {
			t.Errorf("%v: %q", attrs, got[0].Title)
		}
	}
}

// lcPoolTrace: a dispatch request calls customer, then drivers, then asks
// route for each of n candidates through k workers (each worker takes the
// next call when its last one ends).
func lcPoolTrace(n, k int) []model.Span {
	spans := []model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, 0),
		p1Span(2, 1, "frontend", "GET", model.KindClient, 1, 61, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "peer.service", Value: model.Str("customer")}),
		p1Span(3, 1, "frontend", "GET", model.KindClient, 62, 110, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "peer.service", Value: model.Str("driver")}),
	}
	free := make([]float64, k)
	for w := range free {
		free[w] = 111 + float64(w)*0.1
	}
	end := 0.0
	for i := 0; i < n; i++ {
		w := 0
		for j := range free {
			if free[j] < free[w] {
				w = j
			}
		}
		d := 40 + float64((i*37)%25)
		at := free[w]
		spans = append(spans, p1Span(byte(10+i), 1, "frontend", "GET", model.KindClient, at, at+d,
			model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "peer.service", Value: model.Str("route")},
			model.Attr{Key: "url.full", Value: model.Str(fmt.Sprintf("http://route:8083/route?pickup=1,2&dropoff=%d,3", i))}))
		free[w] = at + d + 0.1
		end = max(end, at+d)
	}
	spans[0].EndUnixNano = lcBase + uint64((end+3)*1e6)
	return spans
}

func TestLockContentionPoolStarvedFanOut(t *testing.T) {
	for name, real := range lcRealTimings {
		t.Run(name, func(t *testing.T) {
			got := NewLockContention().Detect(NewTrace(real(lcPoolTrace(10, 3))), nil)
			if len(got) != 1 {
				t.Fatalf("findings %d, want 1", len(got))
			}
			f := got[0]
			ev := f.Evidence.(LockContentionEvidence)
			if ev.Mechanism != "pool_fan_out" || ev.Pool == nil || ev.Pool.Calls != 10 || ev.Pool.Concurrency != 3 ||
				ev.Pool.QueuedCalls < 6 || ev.Pool.Target != "route" {
				t.Fatalf("evidence %+v pool %+v", ev, ev.Pool)
			}
			if !strings.Contains(f.Title, "worker pool of 3 for 10 calls") || f.Culprit == nil ||
				f.Culprit.Service != "frontend" || f.Culprit.Operation != "GET /dispatch" {
				t.Errorf("title %q culprit %+v", f.Title, f.Culprit)
			}
			// Unbounded, the 10 calls take as long as the longest (64 ms);
			// through 3 workers ~ 4 rounds: the difference is the wait.
			if ev.WaitMS < 120 || ev.WaitMS > 170 || ev.RequestSharePct < 35 || f.Severity != SeverityWarning {
				t.Errorf("wait %.1f ms, %.1f%% of the request, severity %s", ev.WaitMS, ev.RequestSharePct, f.Severity)
			}
			if ev.Pool.TotalQueueMS <= ev.WaitMS {
				t.Errorf("total queue %.1f ms must exceed the wall-clock wait %.1f", ev.Pool.TotalQueueMS, ev.WaitMS)
			}
			if !strings.Contains(f.Fix, "worker pool to at least 10") {
				t.Errorf("fix %q", f.Fix)
			}
			lcNoIndexAdvice(t, f.Fix)
		})
	}
}

func TestLockContentionPoolOfWrappedTasks(t *testing.T) {
	// Each pooled task opens its own span around the HTTP call.
	spans := lcPoolTrace(10, 3)
	n := len(spans)
	for i := 3; i < n; i++ {
		w := spans[i]
		w.SpanID[6], w.Name, w.Kind, w.Attrs = 2, "route.FindRoute", model.KindInternal, nil
		spans[i].ParentSpanID = w.SpanID
		spans[i].StartUnixNano += 300e3 // the call starts inside its wrapper
		spans = append(spans, w)
	}
	got := NewLockContention().Detect(NewTrace(roundToMillis(spans)), nil)
	if len(got) != 1 {
		t.Fatalf("findings %d", len(got))
	}
	ev := got[0].Evidence.(LockContentionEvidence)
	if ev.Pool.Calls != 10 || ev.Pool.Concurrency != 3 || ev.Pool.Target != "route" || got[0].Culprit.Service != "frontend" {
		t.Errorf("pool %+v culprit %+v", ev.Pool, got[0].Culprit)
	}
}

func TestLockContentionSharedPoolLeadingWait(t *testing.T) {
	// Other requests hold the shared workers: the first route call starts
	// 150 ms after the driver call returned, nothing running meanwhile.
	spans := lcPoolTrace(10, 3)
	for i := 3; i < len(spans); i++ {
		spans[i].StartUnixNano += 150e6
		spans[i].EndUnixNano += 150e6
	}
	spans[0].EndUnixNano += 150e6
	for name, real := range lcRealTimings {
		got := NewLockContention().Detect(NewTrace(real(spans)), nil)
		if len(got) != 1 {
			t.Fatalf("%s: findings %d", name, len(got))
		}
		ev := got[0].Evidence.(LockContentionEvidence)
		if !p1Near(ev.Pool.LeadingWaitMS, 151, 5) || ev.WaitMS < 270 || got[0].Severity != SeverityCritical {
			t.Errorf("%s: leading %.1f wait %.1f severity %s", name, ev.Pool.LeadingWaitMS, ev.WaitMS, got[0].Severity)
		}
	}
}

func TestLockContentionPoolLookAlikes(t *testing.T) {
	cases := map[string][]model.Span{
		"pool as large as the fan-out": lcPoolTrace(10, 10),
		"sequential loop":              lcPoolTrace(10, 1),
		"fewer calls than workers":     lcPoolTrace(3, 3),
	}
	// A sequential loop with one call overlapping its neighbour is no
	// pool of 2.
	loop := lcPoolTrace(10, 1)
	loop[6].StartUnixNano -= 20e6
	cases["loop with one overlap"] = loop
	for name, spans := range cases {
		for tname, real := range lcRealTimings {
			if got := NewLockContention().Detect(NewTrace(real(spans)), nil); len(got) != 0 {
				t.Errorf("%s/%s: %q", name, tname, got[0].Title)
			}
		}
	}
}

func TestLockContentionFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "lock_contention", "*.json"))
	checks := map[string]func(t *testing.T, f Finding, ev LockContentionEvidence){
		"positive-inventory-global-mutex": func(t *testing.T, f Finding, ev LockContentionEvidence) {
			if ev.Resource != "lock" || ev.WaitersAhead != 7 || ev.WaitersBehind != 3 || !p1Near(ev.WaitMS, 657.5, 0.2) ||
				f.Severity != SeverityCritical || f.Culprit.Service != "inventory-service" {
				t.Errorf("evidence %+v severity %s culprit %+v", ev, f.Severity, f.Culprit)
			}
		},
		"positive-hikari-pool-exhausted": func(t *testing.T, f Finding, ev LockContentionEvidence) {
			if ev.Resource != "connection_pool" || ev.PoolName != "HikariPool-1" || !p1Near(ev.WaitMS, 424.9, 0.1) ||
				f.Severity != SeverityCritical || !strings.Contains(f.Fix, "pool") {
				t.Errorf("evidence %+v severity %s fix %q", ev, f.Severity, f.Fix)
			}
		},
		"positive-route-worker-pool-of-3": func(t *testing.T, f Finding, ev LockContentionEvidence) {
			if ev.Pool == nil || ev.Pool.Calls != 10 || ev.Pool.Concurrency != 3 || ev.Pool.Target != "route-service" ||
				f.Culprit.Service != "dispatch-api" || ev.RequestSharePct < 40 {
				t.Errorf("evidence %+v pool %+v culprit %+v", ev, ev.Pool, f.Culprit)
			}
		},
	}
	// node-postgres, live: the handler locks the HOT row, then sleeps 40 ms
	// before its UPDATE and COMMIT; seven other requests queue on the row.
	// The INSERT, UPDATE and COMMIT hang off the server span, the SELECT
	// off the handler: one transaction under two parents.
	checks["positive-pg-row-lock-held-over-work"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		if ev.Mechanism != "row_lock_queue" || !p1Near(ev.WaitMS, 194.5, 0.5) || !p1Near(ev.HeldMS, 43.4, 0.5) ||
			!p1Near(ev.HeldIdleMS, 41.1, 0.5) || f.Severity != SeverityCritical ||
			f.Culprit.Service != "inventory" || f.Culprit.Operation != "GET /reserve" ||
			!strings.Contains(f.Title, "UPDATE stock SET qty = qty - ? WHERE sku = ?, the same lookup, took 1.00 ms") ||
			!strings.Contains(f.Fix, "conditional UPDATE") {
			t.Errorf("evidence %+v severity %s culprit %+v title %q", ev, f.Severity, f.Culprit, f.Title)
		}
	}
	// node-postgres, live: transfers lock two rows in request order and
	// deadlock; this one survived, its second UPDATE waiting out the
	// victim's deadlock_timeout, then committed 21 ms later.
	checks["positive-pg-deadlock-survivor"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		if ev.Mechanism != "row_lock_queue" || !p1Near(ev.WaitMS, 954.5, 0.5) || !p1Near(ev.HeldMS, 21.5, 0.5) ||
			!strings.Contains(f.Fix, "in different orders") || f.Severity != SeverityCritical {
			t.Errorf("evidence %+v severity %s fix %q", ev, f.Severity, f.Fix)
		}
	}
	// Go, live: net/http + otelsql over pgx, the same lock held over a
	// 40 ms sleep. otelsql's sql.conn.begin_tx and sql.tx.commit carry no
	// statement; the SELECT and the UPDATE do.
	checks["positive-otelsql-row-lock-held-over-sleep"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		if ev.Mechanism != "row_lock_queue" || !p1Near(ev.WaitMS, 185.1, 0.5) || ev.HeldMS < 40 || ev.HeldIdleMS < 39 ||
			f.Culprit.Operation != "GET /reserve" || !strings.Contains(f.Fix, "Hold the row lock briefly") {
			t.Errorf("evidence %+v culprit %+v fix %q", ev, f.Culprit, f.Fix)
		}
	}
	// node-postgres, live: web gives inventory 500 ms; inventory's
	// transactions hold the HOT row 300 ms each, so requests queue for it
	// holding their connections, the pool of 10 empties, and this request
	// waited 12 s for a connection. What it did with the connection once it
	// got one names why the pool is empty.
	checks["positive-pg-pool-empties-behind-row-lock"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		if ev.Mechanism != "span_name" || ev.Resource != "connection_pool" || !p1Near(ev.HeldMS, 608, 2) ||
			!strings.Contains(f.Title, "waiting for a row lock in inventory → postgresql SELECT qty FROM stock") ||
			!strings.Contains(f.Fix, "connections wait for a row lock") {
			t.Errorf("evidence %+v title %q fix %q", ev, f.Title, f.Fix)
		}
	}
	// Express, live: ten http.get calls through an http.Agent with
	// maxSockets 2. The call spans start together and include the wait for
	// a socket; pricing's server spans show the limit.
	checks["positive-http-agent-max-sockets-2"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		if ev.Mechanism != "pool_fan_out" || ev.Pool == nil || !ev.Pool.AtCallee || ev.Pool.Calls != 10 ||
			ev.Pool.Concurrency != 2 || ev.Pool.Target != "pricing" || !strings.Contains(f.Fix, "maxSockets") ||
			f.Culprit.Service != "web" {
			t.Errorf("evidence %+v pool %+v fix %q", ev, ev.Pool, f.Fix)
		}
	}
	checks["positive-hotrod-shaped-dispatch"] = func(t *testing.T, f Finding, ev LockContentionEvidence) {
		switch ev.Mechanism {
		case "span_events":
			if f.Culprit.Service != "customer" || f.Culprit.Operation != "SQL SELECT" || ev.WaitersAhead != 4 ||
				!p1Near(ev.WaitMS, 310.7, 0.2) || f.Severity != SeverityWarning {
				t.Errorf("lock: evidence %+v severity %s culprit %+v", ev, f.Severity, f.Culprit)
			}
		case "pool_fan_out":
			if ev.Pool.Calls != 10 || ev.Pool.Concurrency != 3 || f.Culprit.Service != "frontend" || ev.RequestSharePct < 10 {
				t.Errorf("pool: evidence %+v pool %+v", ev, ev.Pool)
			}
		default:
			t.Errorf("unexpected %s finding %q", ev.Mechanism, f.Title)
		}
	}
	var pos, healthy int
	for _, path := range files {
		base := strings.TrimSuffix(filepath.Base(path), ".json")
		positive := strings.HasPrefix(base, "positive-")
		if positive {
			pos++
		} else {
			healthy++
		}
		t.Run(base, func(t *testing.T) {
			tr := p1LoadFixture(t, path)
			all := p1RunAll(tr, &Env{History: NoHistory{}})
			got := p1OfKind(all, "lock_contention")
			if !positive {
				if len(got) > 0 {
					t.Fatalf("healthy look-alike produced %q", got[0].Title)
				}
				return
			}
			want := 1
			if base == "positive-hotrod-shaped-dispatch" {
				want = 2 // the lock and the pool
			}
			if len(got) != want {
				t.Fatalf("%d lock_contention findings, want %d; kinds %v", len(got), want, lcKinds(all))
			}
			for _, f := range got {
				p1CheckCommon(t, tr, f)
				lcNoIndexAdvice(t, f.Fix)
				checks[base](t, f, f.Evidence.(LockContentionEvidence))
			}
			if sq := p1OfKind(all, "slow_query"); len(sq) > 0 {
				t.Errorf("slow_query fired beside lock_contention: %q", sq[0].Title)
			}
		})
	}
	if pos < 3 || healthy < 3 {
		t.Errorf("%d positive and %d healthy fixtures", pos, healthy)
	}
}

// HotROD-style spans: no db.system (peer.service and sql.query only), and
// the lock events as Jaeger stores OpenTracing logs (the text in an
// "event" field).
func TestLockContentionJaegerLogEvents(t *testing.T) {
	spans := lcMutexTrace(13, 520, 598)
	q := &spans[3]
	q.Attrs = model.Attrs{{Key: "peer.service", Value: model.Str("mysql")},
		{Key: "sql.query", Value: model.Str("SELECT * FROM customer WHERE customer_id=392")}}
	q.Events = []model.Event{
		lcEvent(13, "log", model.Attr{Key: "event", Value: model.Str("Waiting for lock behind 4 transactions")},
			model.Attr{Key: "blockers", Value: model.Str("[1 2 3 4]")}),
		lcEvent(520, "", model.Attr{Key: "event", Value: model.Str("Acquired lock with 0 transactions waiting behind")}),
	}
	got := NewLockContention().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("findings %d", len(got))
	}
	ev := got[0].Evidence.(LockContentionEvidence)
	if ev.WaitersAhead != 4 || !p1Near(ev.WaitMS, 507, 0.1) || got[0].Culprit.Operation != "SQL SELECT" ||
		!strings.Contains(got[0].Title, "behind 4 others") {
		t.Errorf("evidence %+v title %q", ev, got[0].Title)
	}
}

func TestLockContentionConfigurable(t *testing.T) {
	ds, err := LoadDetectorConfig([]byte("lock_contention: {min_wait_ms: 50, min_pool_calls: 6, handoff_tolerance_ms: 5}\nslow_query: {failed_factor: 20}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		switch x := d.(type) {
		case *LockContention:
			if x.MinWaitMS != 50 || x.MinPoolCalls != 6 || x.HandoffToleranceMS != 5 || x.CriticalShare != 0.5 {
				t.Errorf("lock_contention %+v", x)
			}
		case *SlowQuery:
			if x.FailedFactor != 20 || x.MinDurationMS != 100 {
				t.Errorf("slow_query %+v", x)
			}
		}
	}
	if _, err := LoadDetectorConfig([]byte("lock_contention: {min_wait: 5}")); err == nil {
		t.Error("unknown field accepted")
	}
}

// Two transactions update the same two rows in opposite orders: each
// waits for the other's row lock until the database picks a victim after
// its deadlock timeout (1 s). The victim fails with 40P01; the other
// statement finishes as the victim's rollback frees the row. Both spent
// the second waiting for a lock: a lock_contention, not two slow queries
// to EXPLAIN. A lock-wait timeout reads the same; a query that failed for
// another reason, or a slow one nothing blocked, stays a slow query.
func TestDeadlockVictimAndPeerWaitedForALock(t *testing.T) {
	upd := func(id byte, start, end float64, attrs ...model.Attr) model.Span {
		return p1Span(id, 1, "ledger", "UPDATE accounts", model.KindClient, start, end, append([]model.Attr{
			str("db.system.name", "postgresql"), str("db.query.text", "UPDATE accounts SET v = v + ? WHERE id = ?")}, attrs...)...)
	}
	build := func(victimErr string, attrs ...model.Attr) []model.Span {
		victim := upd(5, 40, 1044, attrs...)
		victim.StatusCode = model.StatusError
		victim.Events = []model.Event{{Name: "exception", TimeUnixNano: victim.EndUnixNano, Attrs: model.Attrs{
			{Key: "exception.type", Value: model.Str("org.postgresql.util.PSQLException")},
			{Key: "exception.message", Value: model.Str(victimErr)}}}}
		return []model.Span{
			p1Span(1, 0, "ledger", "POST /transfers", model.KindServer, 0, 1046),
			upd(2, 38.5, 39.3), upd(3, 39.2, 39.7),
			upd(4, 39.9, 1043.6), victim,
		}
	}
	for _, c := range []struct {
		err      string
		code     []model.Attr
		contends bool
	}{
		{"ERROR: deadlock detected\n  Detail: Process 4180 waits for ShareLock", []model.Attr{str("db.response.status_code", "40P01")}, true},
		{"Lock wait timeout exceeded; try restarting transaction", nil, true},
		{"ERROR: canceling statement due to statement timeout", nil, false},
	} {
		fs := Analyze(build(c.err, c.code...), Options{}).Findings
		var locks, slow int
		for _, f := range fs {
			switch f.Kind {
			case "lock_contention":
				locks++
				if strings.Contains(f.Title, "\n") || strings.Contains(f.Fix, "index") {
					t.Errorf("%q: title %q fix %q", c.err, f.Title, f.Fix)
				}
			case "slow_query":
				slow++
			}
		}
		if c.contends && (locks != 1 || slow != 0) {
			t.Errorf("%q: %d lock_contention, %d slow_query; want the lock wait only", c.err, locks, slow)
		}
		if !c.contends && locks != 0 {
			t.Errorf("%q: %d lock_contention for a statement timeout", c.err, locks)
		}
	}
}

// lcNodePgPoolTrace is an Express request as @opentelemetry/instrumentation-pg
// records it: "pg-pool.connect" (no statement, db.system.name set) checks a
// connection out of a pg Pool, with a "pg.connect" child only when the pool
// opens a new connection. JavaScript starts spans on whole milliseconds.
func lcNodePgPoolTrace(checkoutEnd float64, newConn bool) []model.Span {
	pg := []model.Attr{{Key: "db.system.name", Value: model.Str("postgresql")}, {Key: "db.namespace", Value: model.Str("postgres")},
		{Key: "server.address", Value: model.Str("127.0.0.1")}, {Key: "server.port", Value: model.Int(55432)}}
	q := func(id byte, start, end float64, stmt string) model.Span {
		return p1Span(id, 2, "gateway", "pg.query:SELECT postgres", model.KindClient, start, end,
			append(pg, model.Attr{Key: "db.query.text", Value: model.Str(stmt)})...)
	}
	at := checkoutEnd
	spans := []model.Span{
		p1Span(1, 0, "gateway", "GET /pool", model.KindServer, 0, at+311.4, model.Attr{Key: "http.route", Value: model.Str("/pool")}),
		p1Span(2, 1, "gateway", "request handler", model.KindInternal, 0, at+311.2, model.Attr{Key: "express.type", Value: model.Str("request_handler")}),
		p1Span(3, 2, "gateway", "pg-pool.connect", model.KindClient, 1, checkoutEnd, pg...),
		q(4, at+1, at+3.6, "SELECT id, total FROM orders WHERE id = $1"),
		p1Span(5, 2, "gateway", "GET", model.KindClient, at+4, at+310.1, model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "url.full", Value: model.Str("http://127.0.0.1:47104/slow?ms=300")}, model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
		p1Span(6, 5, "pricing", "GET /slow", model.KindServer, at+5, at+307.9, model.Attr{Key: "http.route", Value: model.Str("/slow")}),
		q(7, at+310, at+310.9, "UPDATE orders SET total = total WHERE id = $1"),
	}
	if newConn {
		spans = append(spans, p1Span(8, 3, "gateway", "pg.connect", model.KindClient, 1, checkoutEnd-0.4, pg...))
	}
	return spans
}

func TestLockContentionNodePgPoolCheckout(t *testing.T) {
	res := Analyze(lcNodePgPoolTrace(624.5, false), Options{})
	got := ofKind(res.Findings, "lock_contention")
	if len(got) != 1 {
		t.Fatalf("lock_contention findings: %d, want 1 (%v)", len(got), lcKinds(res.Findings))
	}
	ev := got[0].Evidence.(LockContentionEvidence)
	if ev.Mechanism != "span_name" || ev.Resource != "connection_pool" || !p1Near(ev.WaitMS, 623.5, 1) {
		t.Errorf("evidence %+v", ev)
	}
	if got[0].Severity != SeverityCritical || got[0].Culprit == nil || got[0].Culprit.Operation != "pg-pool.connect" {
		t.Errorf("severity %s culprit %+v", got[0].Severity, got[0].Culprit)
	}
	lcNoIndexAdvice(t, got[0].Fix)
	// The handler queries, calls pricing for 306 ms, queries again: it
	// holds the connection across that call, which is what starves the pool.
	if ev.HeldAcross == nil || ev.HeldAcross.SpanID != p1Node(NewTrace(lcNodePgPoolTrace(624.5, false)), 5).Span.SpanID.String() ||
		!p1Near(ev.HeldAcrossMS, 306.1, 0.1) || !strings.Contains(got[0].Fix, "Release the connection before") {
		t.Errorf("held across %+v (%.1f ms), fix %q", ev.HeldAcross, ev.HeldAcrossMS, got[0].Fix)
	}
	// The checkout runs no statement: nothing to EXPLAIN.
	if sq := ofKind(res.Findings, "slow_query"); len(sq) != 0 {
		t.Errorf("slow_query fired on the checkout: %q", sq[0].Title)
	}

	// A pool with room opens a connection under the checkout: that 200 ms
	// is connecting, not queueing.
	res = Analyze(lcNodePgPoolTrace(201, true), Options{})
	if fs := ofKind(res.Findings, "lock_contention"); len(fs) != 0 {
		t.Errorf("a new connection read as a pool wait: %q", fs[0].Title)
	}
}

// mayLock only saves time: every statement lockingReadRe takes for a
// locking read must pass it, whatever its case.
func TestMayLockKeepsEveryLockingRead(t *testing.T) {
	for _, stmt := range []string{
		"SELECT * FROM t WHERE id = $1 FOR UPDATE",
		"select * from t for no key update",
		"SELECT * FROM t FOR SHARE",
		"select * from t for key share skip locked",
		"SELECT * FROM t WHERE id = ? LOCK IN SHARE MODE",
		"  LOCK TABLES t WRITE",
		"SELECT * FROM t WITH (UPDLOCK, ROWLOCK)",
		"select * from t with (xlock)",
		"SELECT * FROM t WITH (HoldLock)",
	} {
		if !lockingReadRe.MatchString(stmt) {
			t.Fatalf("%q is no locking read to the expression", stmt)
		}
		if !mayLock(stmt) {
			t.Errorf("mayLock skips the locking read %q", stmt)
		}
	}
	if mayLock("SELECT id, name FROM customers WHERE id = $1") {
		t.Errorf("mayLock passes a plain read")
	}
}

// InnoDB detects a deadlock as soon as the cycle closes and aborts the
// statement that closed it (1213) within milliseconds; the peer, of
// another service sharing the database, had been waiting for the row
// since its start and finishes as the victim's rollback frees it. The
// peer's 500 ms are a lock wait, not a statement to EXPLAIN. On another
// database server the same timing is a coincidence, not a lock.
func TestMySQLDeadlockPeerOfAnotherServiceWaitedForALock(t *testing.T) {
	build := func(peerAddr string) []model.Span {
		db := func(id, parent byte, svc string, start, end float64, addr string) model.Span {
			return p1Span(id, parent, svc, "UPDATE", model.KindClient, start, end,
				str("db.system.name", "mysql"), str("db.namespace", "shop"), str("server.address", addr),
				str("db.query.text", "UPDATE accounts SET balance = balance + 1 WHERE id = ?"))
		}
		victim := db(6, 5, "inventory", 517, 519.1, "10.0.0.7")
		victim.StatusCode = model.StatusError
		victim.StatusMessage = "Deadlock found when trying to get lock; try restarting transaction"
		// mysql2 starts the victim's ROLLBACK before it ends the failed
		// statement's span: no peer, it waited for nothing.
		rollback := db(8, 5, "inventory", 518.9, 519.2, "10.0.0.7")
		rollback.Attrs[3] = str("db.query.text", "ROLLBACK")
		return []model.Span{
			rollback,
			p1Span(1, 0, "gateway", "GET /xfer", model.KindServer, 0, 530),
			p1Span(2, 1, "gateway", "GET", model.KindClient, 1, 528, str("http.request.method", "GET")),
			p1Span(3, 2, "orders", "GET /xfer", model.KindServer, 2, 527),
			db(4, 3, "orders", 10, 521.4, peerAddr),
			p1Span(7, 1, "gateway", "GET", model.KindClient, 500, 526, str("http.request.method", "GET")),
			p1Span(5, 7, "inventory", "GET /xfer", model.KindServer, 501, 525),
			victim,
		}
	}
	tr := NewTrace(build("10.0.0.7"))
	peerID := p1Node(tr, 4).Span.SpanID.String()
	if ws := nodeWaits(tr, p1Node(tr, 8)); len(ws) != 0 {
		t.Errorf("the victim's ROLLBACK waited for a lock: %+v", ws)
	}
	fs := Analyze(build("10.0.0.7"), Options{}).Findings
	locks := ofKind(fs, "lock_contention")
	if len(locks) != 1 || len(ofKind(fs, "slow_query")) != 0 {
		t.Fatalf("findings %v; want one lock_contention and no slow_query", lcKinds(fs))
	}
	ev := locks[0].Evidence.(LockContentionEvidence)
	if ev.Mechanism != "database_error" || ev.Resource != "lock" || ev.Span.SpanID != peerID || !p1Near(ev.WaitMS, 509.1, 0.5) {
		t.Errorf("evidence %+v", ev)
	}
	lcNoIndexAdvice(t, locks[0].Fix)
	// The victim's error is a lost lock conflict: its fix is the lock
	// order, and its culprit the victim's transaction, naming the peer.
	origins := ofKind(fs, "error_origin")
	if len(origins) != 1 || !strings.Contains(origins[0].Fix, "lock conflict") || !strings.Contains(origins[0].Fix, "one order") {
		t.Fatalf("error_origin %+v", origins)
	}
	if c := origins[0].Culprit; c == nil || c.Service != "inventory" || !strings.Contains(c.Operation, "UPDATE accounts") ||
		!strings.Contains(c.Reason, "orders's transaction") || !strings.Contains(c.Reason, "waited 509 ms") {
		t.Errorf("error_origin culprit %+v", c)
	}

	fs = Analyze(build("10.0.0.9"), Options{}).Findings
	if n := len(ofKind(fs, "lock_contention")); n != 0 {
		t.Errorf("peer on another server: %d lock_contention (%v)", n, lcKinds(fs))
	}
}

// Two services move money between the same accounts in the same order
// (no deadlock): inventory's first UPDATE queues 83 ms for the row
// orders's transaction wrote and keeps locked across 100 ms of its own
// work until its COMMIT. That is a lock wait to shorten, not a statement
// to EXPLAIN. An UPDATE that ends well after the COMMIT was slow by
// itself.
func TestStatementFreedByAnotherTransactionsCommitWaitedForALock(t *testing.T) {
	build := func(invUpdateEnd float64) []model.Span {
		db := func(id, parent byte, svc string, start, end float64, stmt string) model.Span {
			return p1Span(id, parent, svc, strings.Fields(stmt)[0], model.KindClient, start, end,
				str("db.system.name", "mysql"), str("db.namespace", "shop"), str("server.address", "127.0.0.1"),
				str("db.query.text", stmt))
		}
		return []model.Span{
			p1Span(1, 0, "gateway", "GET /xfer", model.KindServer, 0, 230),
			p1Span(2, 1, "orders", "GET /xfer", model.KindServer, 2, 125),
			db(3, 2, "orders", 3, 4, "START TRANSACTION"),
			db(4, 2, "orders", 4, 5, "UPDATE accounts SET balance = balance - 1 WHERE id = ?"),
			db(5, 2, "orders", 105, 106, "UPDATE accounts SET balance = balance + 1 WHERE id = ?"),
			db(6, 2, "orders", 106, 107, "COMMIT"),
			p1Span(7, 1, "inventory", "GET /xfer", model.KindServer, 22, 215),
			db(8, 7, "inventory", 23, 24, "START TRANSACTION"),
			db(9, 7, "inventory", 24, invUpdateEnd, "UPDATE accounts SET balance = balance - 1 WHERE id = ?"),
			db(10, 7, "inventory", 208, 209, "UPDATE accounts SET balance = balance + 1 WHERE id = ?"),
			db(11, 7, "inventory", 209, 210, "COMMIT"),
		}
	}
	fs := Analyze(build(107.5), Options{})
	locks := ofKind(fs.Findings, "lock_contention")
	if len(locks) != 1 || len(ofKind(fs.Findings, "slow_query")) != 0 {
		t.Fatalf("findings %v; want one lock_contention and no slow_query", lcKinds(fs.Findings))
	}
	ev := locks[0].Evidence.(LockContentionEvidence)
	if ev.Mechanism != "lock_release" || ev.Span.Service != "inventory" || !p1Near(ev.WaitMS, 83, 0.5) ||
		!strings.Contains(locks[0].Fix, "orders's transaction held it 101 ms between UPDATE and its COMMIT") {
		t.Errorf("evidence %+v fix %q", ev, locks[0].Fix)
	}
	lcNoIndexAdvice(t, locks[0].Fix)

	// Ending 53 ms after orders' COMMIT, the UPDATE was not freed by it.
	// It still waited for a lock: its transaction's UPDATE by the same id
	// took 1 ms.
	fs = Analyze(build(160), Options{})
	locks = ofKind(fs.Findings, "lock_contention")
	if len(locks) != 1 || locks[0].Evidence.(LockContentionEvidence).Mechanism != "row_lock_queue" {
		t.Fatalf("UPDATE ending 53 ms after the COMMIT: %v, want one row_lock_queue finding", lcKinds(fs.Findings))
	}
	if ev := locks[0].Evidence.(LockContentionEvidence); !p1Near(ev.WaitMS, 135, 0.5) || !p1Near(ev.HeldMS, 50, 0.5) {
		t.Errorf("evidence %+v", ev)
	}
}

// A locking read is a lock wait when the same lookup later in its
// transaction ran far faster; when the later one is as slow (a missing
// index slows both), or it came first, or the transaction never ends in
// view, the read is judged as a statement.
func TestRowLockQueueNeedsTheSameLookupFaster(t *testing.T) {
	db := func(id byte, start, end float64, stmt string) model.Span {
		return p1Span(id, 2, "inventory", strings.Fields(stmt)[0], model.KindClient, start, end,
			str("db.system", "postgresql"), str("db.statement", stmt))
	}
	build := func(updateMS float64, first string) []model.Span {
		return []model.Span{
			p1Span(1, 0, "web", "GET /checkout", model.KindServer, 0, 400),
			p1Span(2, 1, "inventory", "GET /reserve", model.KindServer, 1, 390),
			db(3, 2, 3, "BEGIN"),
			db(4, 3, 303, first),
			db(5, 303, 304, "INSERT INTO audit(sku) VALUES ($1)"),
			db(6, 340, 340+updateMS, "UPDATE stock SET qty = qty - 1 WHERE sku = $1"),
			db(7, 341+updateMS, 342+updateMS, "COMMIT"),
		}
	}
	const forUpdate = "SELECT qty FROM stock WHERE sku = $1 FOR UPDATE"
	mech := func(spans []model.Span) string {
		for _, f := range ofKind(Analyze(spans, Options{}).Findings, "lock_contention") {
			return f.Evidence.(LockContentionEvidence).Mechanism
		}
		return ""
	}
	if m := mech(build(1, forUpdate)); m != "row_lock_queue" {
		t.Fatalf("same lookup 300x faster: mechanism %q", m)
	}
	if m := mech(build(80, forUpdate)); m != "" {
		t.Errorf("same lookup under 4x faster (a starved host, or a plan): %q", m)
	}
	if m := mech(build(1, "SELECT qty FROM stock WHERE name = $1 FOR UPDATE")); m != "" {
		t.Errorf("a lookup by another column (its index may be missing): %q", m)
	}
	if m := mech(build(1, "SELECT qty FROM stock WHERE sku = $1 FOR UPDATE NOWAIT")); m != "" {
		t.Errorf("NOWAIT never waits: %q", m)
	}
	noCommit := build(1, forUpdate)[:6]
	if m := mech(noCommit); m != "" {
		t.Errorf("no end of the transaction in view: %q", m)
	}
	// A transfer that survived a deadlock: its first UPDATE took 1 ms, its
	// second, by the same lookup, waited out the victim's deadlock_timeout;
	// then it committed at once. Its own hold is short, so the fix is not
	// its hold but the other transaction and the lock order.
	survivor := []model.Span{
		p1Span(1, 0, "web", "GET /move", model.KindServer, 0, 1030),
		p1Span(2, 1, "inventory", "GET /move", model.KindServer, 1, 1025),
		db(3, 2, 3, "BEGIN"),
		db(4, 3, 4, "UPDATE stock SET qty = qty - 1 WHERE sku = $1"),
		db(5, 25, 1011, "UPDATE stock SET qty = qty + 1 WHERE sku = $1"),
		db(6, 1011, 1013, "COMMIT"),
	}
	got := ofKind(Analyze(survivor, Options{}).Findings, "lock_contention")
	if len(got) != 1 || got[0].Evidence.(LockContentionEvidence).Mechanism != "row_lock_queue" ||
		!strings.Contains(got[0].Fix, "in different orders") || strings.Contains(got[0].Fix, "Hold the row lock briefly") {
		t.Errorf("deadlock survivor: %+v", got)
	}
}

func TestRowsOfNamesTableAndWhere(t *testing.T) {
	for stmt, want := range map[string]string{
		"SELECT qty FROM stock WHERE sku = ? FOR UPDATE":             "stock where sku = ?",
		"UPDATE stock SET qty = qty - ? WHERE sku = ? RETURNING qty": "stock where sku = ?",
		"update `shop`.`stock` set qty = ? where sku = ?":            "shop.stock where sku = ?",
		"DELETE FROM carts WHERE user_id = ? AND id = ?":             "carts where user_id = ? and id = ?",
		"SELECT * FROM t WHERE a = ? LOCK IN SHARE MODE":             "t where a = ?",
		"INSERT INTO audit(sku) VALUES (?)":                          "",
		"SELECT count(*) FROM stock":                                 "",
	} {
		if got := rowsOf(stmt); got != want {
			t.Errorf("rowsOf(%q) = %q, want %q", stmt, got, want)
		}
	}
}

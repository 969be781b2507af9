package analyze

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

type p1History struct {
	NoHistory
	stmt     map[string]Baseline
	children map[string][]ChildStat
}

func (h p1History) StatementDuration(system, shape string) (Baseline, bool) {
	b, ok := h.stmt[system+"|"+shape]
	return b, ok
}

func (h p1History) UsualChildren(service, op string) ([]ChildStat, bool) {
	c, ok := h.children[service+"|"+op]
	return c, ok
}

func p1DB(id, parent byte, startMS, endMS float64, stmt string) model.Span {
	return p1Span(id, parent, "stock", "SELECT", model.KindClient, startMS, endMS,
		model.Attr{Key: "db.system", Value: model.Str("postgresql")}, model.Attr{Key: "db.statement", Value: model.Str(stmt)})
}

func TestSlowQueryUsesHistory(t *testing.T) {
	// 60 ms of a 400 ms request: below the share rule, but 25x its usual.
	spans := []model.Span{
		p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 400),
		p1DB(2, 1, 5, 65, "SELECT qty FROM stock WHERE sku = 'A-1001'"),
		p1Span(3, 1, "stock", "compute", model.KindInternal, 66, 399),
	}
	shape := "SELECT qty FROM stock WHERE sku = ?"
	d := NewSlowQuery()
	if got := d.Detect(NewTrace(spans), &Env{History: NoHistory{}}); len(got) != 0 {
		t.Fatalf("without history: %d findings, want 0", len(got))
	}
	h := p1History{stmt: map[string]Baseline{"postgresql|" + shape: {P50MS: 2.4, P95MS: 4, Count: 500}}}
	got := d.Detect(NewTrace(spans), &Env{History: h})
	if len(got) != 1 {
		t.Fatalf("with history: %d findings, want 1", len(got))
	}
	ev := got[0].Evidence.(SlowQueryEvidence)
	if ev.Rule != "history" || ev.UsualMS != 2.4 || ev.TimesUsual != 25 || got[0].Severity != SeverityWarning {
		t.Errorf("evidence %+v severity %s", ev, got[0].Severity)
	}
	// impact: its critical time minus the usual duration it would still take.
	if !p1Near(got[0].ImpactMS, 60-2.4, 0.05) {
		t.Errorf("impact %.2f", got[0].ImpactMS)
	}
	// Too few samples: history is not trusted.
	h.stmt["postgresql|"+shape] = Baseline{P50MS: 2.4, Count: 3}
	if got := d.Detect(NewTrace(spans), &Env{History: h}); len(got) != 0 {
		t.Errorf("history with 3 samples must not fire")
	}
	// nil Env works (offline).
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("nil env: %d findings", len(got))
	}
}

func TestSlowQueryThresholdsConfigurable(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 100),
		p1DB(2, 1, 5, 85, "SELECT qty FROM stock WHERE sku = 'A-1001'"),
	}
	d := NewSlowQuery()
	if len(d.Detect(NewTrace(spans), nil)) != 0 {
		t.Fatal("80 ms is below the default 100 ms floor")
	}
	d.MinDurationMS = 50
	if len(d.Detect(NewTrace(spans), nil)) != 1 {
		t.Fatal("lowered floor must fire")
	}
}

// sqRequest is a request whose only work is one database call of dbMS.
func sqRequest(system, stmt string, dbMS float64, extra ...model.Attr) []model.Span {
	return []model.Span{
		p1Span(1, 0, "driver", "FindNearest", model.KindServer, 0, dbMS+20),
		p1Span(2, 1, "driver", stmt, model.KindClient, 5, 5+dbMS, append([]model.Attr{
			{Key: "db.system", Value: model.Str(system)}, {Key: "db.statement", Value: model.Str(stmt)}}, extra...)...),
	}
}

func TestSlowQueryAdviceFollowsDBSystem(t *testing.T) {
	for _, c := range []struct {
		system, stmt string
		want, never  []string
	}{
		{"postgresql", "SELECT * FROM orders WHERE id = 7", []string{"EXPLAIN", "index"}, nil},
		{"mssql", "SELECT TOP 10 * FROM orders", []string{"EXPLAIN"}, nil},
		{"redis", "GET driver:T712345C", []string{"hot key", "pipelining", "big values"}, []string{"EXPLAIN", "index"}},
		{"redis", "SMEMBERS drivers:near:577,322", []string{"SMEMBERS costs time in proportion", "SSCAN"}, []string{"EXPLAIN", "index"}},
		{"memcached", "get session:abc", []string{"hot key"}, []string{"EXPLAIN", "index"}},
		{"valkey", "KEYS driver:*", []string{"KEYS costs time"}, []string{"EXPLAIN"}},
		{"mongodb", `{"find":"drivers","filter":{"zone":3}}`, []string{"explain()", "projection", "filter"}, []string{"EXPLAIN the"}},
		{"cassandra", "SELECT * FROM rides WHERE city = ? ALLOW FILTERING", []string{"partition key", "ALLOW FILTERING"}, []string{"EXPLAIN"}},
		{"elasticsearch", "GET /rides/_search", []string{"profile", "filter context"}, []string{"EXPLAIN"}},
	} {
		t.Run(c.system, func(t *testing.T) {
			got := NewSlowQuery().Detect(NewTrace(sqRequest(c.system, c.stmt, 300)), nil)
			if len(got) != 1 {
				t.Fatalf("findings %d", len(got))
			}
			for _, w := range c.want {
				if !strings.Contains(got[0].Fix, w) {
					t.Errorf("fix lacks %q: %q", w, got[0].Fix)
				}
			}
			for _, w := range c.never {
				if strings.Contains(got[0].Fix, w) {
					t.Errorf("fix has %q: %q", w, got[0].Fix)
				}
			}
			cu := got[0].Culprit
			if cu == nil || cu.Service != "driver" || cu.Operation != got[0].Evidence.(SlowQueryEvidence).Shape || cu.SpanID == "" {
				t.Errorf("culprit %+v", cu)
			}
		})
	}
}

func TestSlowQueryFailedAttempts(t *testing.T) {
	// A driver lookup: GetDriver per driver, one attempt timed out after
	// 3x the usual time and was retried.
	spans := []model.Span{p1Span(1, 0, "driver", "FindNearest", model.KindServer, 0, 0)}
	at := 1.0
	add := func(id byte, ms float64, failed bool) {
		s := p1Span(id, 1, "driver", "GetDriver", model.KindClient, at, at+ms,
			model.Attr{Key: "db.system", Value: model.Str("redis")}, model.Attr{Key: "db.statement", Value: model.Str(fmt.Sprintf("GET driver:%d", 7100+int(id)))})
		if failed {
			s.StatusCode, s.StatusMessage = model.StatusError, "OOM command not allowed when used memory > 'maxmemory'"
		}
		spans = append(spans, s)
		at += ms + 0.2
	}
	add(2, 10, false)
	add(3, 11, false)
	add(4, 150, true) // timed out at ~14x usual
	add(5, 10, false)
	spans[0].EndUnixNano = spans[len(spans)-1].EndUnixNano + 2e6
	d := NewSlowQuery()
	got := d.Detect(NewTrace(spans), nil)
	if len(got) != 1 || !got[0].Evidence.(SlowQueryEvidence).Failed {
		t.Fatalf("a failed attempt 14x the usual time is also a slow query: %d findings", len(got))
	}
	// A timeout at 14x is the client's timeout, which the error and retry
	// detectors report.
	spans[3].StatusMessage = "redis: read tcp 10.0.1.4:51234->10.0.3.17:6379: i/o timeout"
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("timed-out attempt reported as slow_query: %q", got[0].Title)
	}
	spans[3].StatusMessage = "OOM command not allowed"
	// At 3x the usual time a failure is no slow query.
	spans[3].EndUnixNano = spans[3].StartUnixNano + 31e6
	spans[4].StartUnixNano, spans[4].EndUnixNano = spans[3].EndUnixNano+1e6, spans[3].EndUnixNano+11e6
	spans[0].EndUnixNano = spans[4].EndUnixNano + 1e6
	d.MinDurationMS, d.MinShare = 20, 0.3 // so the share rule alone would fire
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("failed attempt at 3x usual reported as slow_query: %q", got[0].Title)
	}
	// Alone, with no successful run to compare with, a failure is no slow query.
	lone := sqRequest("redis", "GET driver:7123", 300)
	lone[1].StatusCode = model.StatusError
	if got := NewSlowQuery().Detect(NewTrace(lone), nil); len(got) != 0 {
		t.Errorf("lone failed attempt: %q", got[0].Title)
	}
	// History of successful runs stands in for siblings.
	h := p1History{stmt: map[string]Baseline{"redis|GET driver:?": {P50MS: 2, P95MS: 4, Count: 100}}}
	shape := NewTrace(lone)
	if _, s := CallTarget(shape, shape.Nodes[1]); s != "GET driver:?" {
		t.Fatalf("shape %q", s)
	}
	if got := NewSlowQuery().Detect(NewTrace(lone), &Env{History: h}); len(got) != 1 {
		t.Errorf("failed at 150x its usual 2 ms: %d findings", len(got))
	}
}

func TestSlowQueryLeavesLockWaitToLockContention(t *testing.T) {
	ev := func(at float64, name string) model.Event {
		return model.Event{TimeUnixNano: 1_700_000_000_000_000_000 + uint64(at*1e6), Name: name}
	}
	// 400 ms span: 350 ms waiting for the lock, 50 ms of statement.
	spans := sqRequest("mysql", "SELECT * FROM customer WHERE customer_id=392", 400)
	spans[1].Events = []model.Event{ev(6, "Waiting for lock behind 4 transactions"), ev(356, "Acquired lock with 0 transactions waiting behind")}
	if got := NewSlowQuery().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("a query that mostly waited for a lock got %q", got[0].Title)
	}
	// 600 ms span: 100 ms waiting, 500 ms of statement: still slow, judged
	// on its own time.
	spans = sqRequest("mysql", "SELECT * FROM customer WHERE customer_id=392", 600)
	spans[1].Events = []model.Event{ev(6, "Waiting for lock behind 1 transactions"), ev(106, "Acquired lock")}
	got := NewSlowQuery().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("findings %d", len(got))
	}
	e := got[0].Evidence.(SlowQueryEvidence)
	if !p1Near(e.DurationMS, 500, 0.1) || !p1Near(e.LockWaitMS, 100, 0.1) || !p1Near(got[0].ImpactMS, 500, 0.5) {
		t.Errorf("evidence %+v impact %.1f", e, got[0].ImpactMS)
	}
}

// tracetest's own run (Go, sql.query spans): POST /api/tests/{id}/run
// answers in 24 ms and the run it started goes on updating test_runs for
// 244 ms after. That query took none of the request's time; the same
// query inside a request that waited for it is a slow query.
func TestSlowQueryOutsideItsEntry(t *testing.T) {
	for _, inside := range []bool{false, true} {
		end := 24.0
		if inside {
			end = 270
		}
		spans := []model.Span{
			p1Span(1, 0, "tracetest", "POST /api/tests/{testId}/run", model.KindServer, 0, end),
			p1Span(2, 1, "tracetest", "sql query", model.KindClient, 20, 264,
				str("sql.query", "UPDATE test_runs SET state = $1 WHERE id = $2")),
		}
		fs := NewSlowQuery().Detect(NewTrace(spans), &Env{})
		if (len(fs) == 1) != inside {
			t.Errorf("query inside the request %v: %d findings", inside, len(fs))
		}
	}
}

// An Express handler's query that runs on after the caller aborted at
// 200 ms: Node ends the server span when the connection closes, the
// pg.query span ends a second later. The title's numbers must agree: the
// whole run, and the share of the part inside the request.
func TestSlowQueryOutlivingItsRequest(t *testing.T) {
	pg := []model.Attr{{Key: "db.system.name", Value: model.Str("postgresql")},
		{Key: "db.query.text", Value: model.Str("SELECT pg_sleep($1)")}}
	spans := []model.Span{
		p1Span(1, 0, "orders", "GET /slowwork", model.KindServer, 15, 210.853, model.Attr{Key: "http.route", Value: model.Str("/slowwork")}),
		p1Span(2, 1, "orders", "request handler", model.KindInternal, 24, 210.805),
		p1Span(3, 2, "orders", "pg.query:SELECT postgres", model.KindClient, 40, 1045.637, pg...),
	}
	got := ofKind(Analyze(spans, Options{}).Findings, "slow_query")
	if len(got) != 1 {
		t.Fatalf("slow_query findings: %d, want 1", len(got))
	}
	ev := got[0].Evidence.(SlowQueryEvidence)
	// 170.8 ms of the query fall inside the 195.9 ms request: 87 %.
	if !p1Near(ev.DurationMS, 1005.6, 0.5) || !p1Near(ev.SharePct, 87.2, 0.2) {
		t.Errorf("duration %.1f ms share %.1f%%", ev.DurationMS, ev.SharePct)
	}
	if want := "postgresql query took 1006 ms, outliving GET /slowwork: its 171 ms inside were 87% of it"; got[0].Title != want {
		t.Errorf("title %q, want %q", got[0].Title, want)
	}
}

// A driver's connect span runs no statement. Django's MySQL connect
// holds the handshake and the session set-up queries it runs on the new
// connection: the handshake is idle_gap's connection_setup and the
// queries are judged on their own, so the span is no slow query. A
// connect recorded as a leaf is still the request's time, but the fix is
// to stop connecting per request, not to EXPLAIN "connect".
func TestSlowQueryAConnectIsNoStatement(t *testing.T) {
	spans := djangoConnect()
	for _, f := range NewSlowQuery().Detect(NewTrace(spans), nil) {
		if f.Culprit != nil && f.Culprit.SpanID == spans[2].SpanID.String() {
			t.Errorf("connect with its set-up queries reported as a slow query: %s", f.Title)
		}
	}
	got := NewSlowQuery().Detect(NewTrace([]model.Span{spans[0], spans[1], spans[2], spans[5]}), nil)
	if len(got) != 1 || !strings.HasPrefix(got[0].Title, "opening a mysql connection took 1958 ms") ||
		!strings.Contains(got[0].Fix, "connecting per request") {
		t.Fatalf("leaf connect: %+v", got)
	}
}

// A GET at 9x its median but under its usual p95 is within its usual
// spread: a busy Node service's event loop adds its lag to every call,
// and half its GETs ran that slow. Beyond the p95 it is unusual.
func TestSlowQueryHistoryNeedsMoreThanTheUsualSpread(t *testing.T) {
	spans := sqRequest("redis", "GET catalog:page:1", 46)
	h := p1History{stmt: map[string]Baseline{"redis|GET catalog:page:?": {P50MS: 5, P95MS: 60, Count: 500}}}
	if got := NewSlowQuery().Detect(NewTrace(spans), &Env{History: h}); len(got) != 0 {
		t.Errorf("within the usual p95: %q", got[0].Title)
	}
	h.stmt["redis|GET catalog:page:?"] = Baseline{P50MS: 5, P95MS: 12, Count: 500}
	if got := NewSlowQuery().Detect(NewTrace(spans), &Env{History: h}); len(got) != 1 {
		t.Errorf("beyond the usual p95: %d findings", len(got))
	}
}

// Statements with nothing to tune are no slow_query, whatever their
// length: a pool checkout (its time is the wait for a connection, or the
// connect under it), BEGIN, SET, a ping. A slow COMMIT is reported with
// what makes commits slow.
func TestSlowQuerySkipsStatementsWithNothingToTune(t *testing.T) {
	request := func(inner ...model.Span) []model.Span {
		return append([]model.Span{p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 1000)}, inner...)
	}
	detect := func(spans []model.Span) []Finding {
		return NewSlowQuery().Detect(NewTrace(spans), &Env{History: NoHistory{}})
	}
	got := detect(request(
		p1Span(2, 1, "stock", "pg-pool.connect", model.KindClient, 1, 701, str("db.system", "postgresql")),
		p1Span(3, 2, "stock", "pg.connect", model.KindClient, 1, 700, str("db.system", "postgresql"))))
	if len(got) != 1 || !strings.HasPrefix(got[0].Title, "opening a postgresql connection took 699 ms") {
		t.Errorf("checkout with a connect: %v, want the connect alone", got)
	}
	for _, stmt := range []string{"BEGIN", "SET statement_timeout = 5000", "START TRANSACTION", "SELECT 1"} {
		if got := detect(request(p1DB(2, 1, 1, 701, stmt))); len(got) != 0 {
			t.Errorf("%s: %q", stmt, got[0].Title)
		}
	}
	// otelsql's span for BeginTx carries no statement.
	if got := detect(request(sqlSpan(2, 1, "stock", "sql.conn.begin_tx", 1, 701, ""))); len(got) != 0 {
		t.Errorf("sql.conn.begin_tx: %q", got[0].Title)
	}
	got = detect(request(p1DB(2, 1, 1, 701, "COMMIT")))
	if len(got) != 1 || strings.Contains(got[0].Fix, "EXPLAIN") || !strings.Contains(got[0].Fix, "disk flush") {
		t.Errorf("COMMIT: %v", got)
	}
}

// A point lookup slow against its own history did not lose its index
// overnight: the advice asks what differed for this run. When other
// statements of the same request slowed down as much, the moment was slow
// (a starved host), and the finding says so as info.
func TestSlowQueryHistoryRunDifferedOrTheMomentWasSlow(t *testing.T) {
	shape := "SELECT qty FROM stock WHERE sku = ?"
	h := p1History{stmt: map[string]Baseline{
		"postgresql|" + shape:                           {P50MS: 2, P95MS: 5, Count: 500},
		"postgresql|BEGIN":                              {P50MS: 0.5, P95MS: 1, Count: 500},
		"postgresql|INSERT INTO audit (sku) VALUES (?)": {P50MS: 1, P95MS: 2, Count: 500},
	}}
	build := func(beginMS, insertMS float64) []model.Span {
		return []model.Span{
			p1Span(1, 0, "stock", "GET /stock/{sku}", model.KindServer, 0, 400),
			p1DB(2, 1, 1, 1+beginMS, "BEGIN"),
			p1DB(3, 1, 30, 90, "SELECT qty FROM stock WHERE sku = $1"),
			p1DB(4, 1, 90, 90+insertMS, "INSERT INTO audit (sku) VALUES ($1)"),
			p1Span(5, 1, "stock", "compute", model.KindInternal, 120, 399),
		}
	}
	got := NewSlowQuery().Detect(NewTrace(build(0.4, 1)), &Env{History: h})
	if len(got) != 1 || got[0].Severity != SeverityWarning || strings.Contains(got[0].Fix, "EXPLAIN") ||
		!strings.Contains(got[0].Fix, "its plan is not what changed") {
		t.Fatalf("alone: %d findings %+v", len(got), got)
	}
	got = NewSlowQuery().Detect(NewTrace(build(12, 20)), &Env{History: h})
	var sel *Finding
	for i := range got {
		if got[i].Evidence.(SlowQueryEvidence).Shape == shape {
			sel = &got[i]
		}
	}
	if sel == nil {
		t.Fatalf("with BEGIN and INSERT slow too: no finding on the SELECT among %d", len(got))
	}
	ev := sel.Evidence.(SlowQueryEvidence)
	if len(ev.AlsoSlow) != 2 || sel.Severity != SeverityInfo || !strings.Contains(sel.Title, "slowed down with it") ||
		!strings.Contains(sel.Fix, "was slow at that moment") {
		t.Errorf("evidence %+v severity %s title %q fix %q", ev, sel.Severity, sel.Title, sel.Fix)
	}
}

package baseline

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// orders is a service whose entry runs one postgres query: the lock
// contention workload of the incident this file is about.
type orders struct {
	r   *rand.Rand
	now time.Time // deterministic trace clock
}

// next returns a trace ending at the clock, whose query takes about
// queryMS; failed marks the entry span as an error.
func (o *orders) next(queryMS float64, failed bool) []model.Span {
	tr, id := ids()
	q := time.Duration(queryMS * (0.9 + 0.2*o.r.Float64()) * float64(time.Millisecond))
	end := o.now
	start := end.Add(-q - 20*time.Millisecond)
	entry := model.Span{TraceID: tr, SpanID: id(), Service: "orders", Name: "GET /orders", Kind: model.KindServer,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(end.UnixNano()),
		Attrs: model.Attrs{{Key: "http.route", Value: model.Str("/orders")}}}
	if failed {
		entry.StatusCode = model.StatusError
	}
	db := model.Span{TraceID: tr, SpanID: id(), ParentSpanID: entry.SpanID, Service: "orders", Name: "SELECT orders", Kind: model.KindClient,
		StartUnixNano: uint64(start.Add(10 * time.Millisecond).UnixNano()), EndUnixNano: uint64(start.Add(10*time.Millisecond + q).UnixNano()),
		Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")},
			{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT * FROM orders WHERE id = %d FOR UPDATE", o.r.IntN(1e6)))}}}
	return []model.Span{entry, db}
}

// run feeds one trace every step for d, then returns.
func (o *orders) run(b *Baselines, d, step time.Duration, queryMS float64, each func()) {
	for end := o.now.Add(d); o.now.Before(end); o.now = o.now.Add(step) {
		b.ObserveTrace(o.next(queryMS, false))
		if each != nil {
			each()
		}
	}
}

var ordersShape = analyze.NormalizeStatement("SELECT * FROM orders WHERE id = 1 FOR UPDATE")

func stmtP50(t *testing.T, b *Baselines) float64 {
	t.Helper()
	st, ok := b.StatementDuration("postgresql", ordersShape)
	if !ok {
		t.Fatal("no statement baseline")
	}
	return st.P50MS
}

func near(got, want float64) bool { return math.Abs(got-want)/want <= 0.15 }

func slowQuerySeverity(t *testing.T, b *Baselines, o *orders) (analyze.Severity, float64) {
	t.Helper()
	spans := o.next(1100, false)
	f := analyze.NewSlowQuery().Detect(analyze.NewTrace(spans), &analyze.Env{History: b})
	if len(f) != 1 {
		t.Fatalf("slow_query findings: %+v", f)
	}
	return f[0].Severity, f[0].Evidence.(analyze.SlowQueryEvidence).UsualMS
}

func TestIncidentStaysOutOfBaseline(t *testing.T) {
	b, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(11, 12)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	// 30 min of normal traffic only: without robust windows one hour of
	// contention at the same rate would outweigh it twice over.
	o.run(b, 30*time.Minute, 5*time.Second, 300, nil)
	if p := stmtP50(t, b); !near(p, 300) {
		t.Fatalf("p50 before the incident %.1f ms", p)
	}

	o.run(b, 10*time.Minute, 5*time.Second, 1100, nil)
	sevStart, usualStart := slowQuerySeverity(t, b, o)
	worst := 0.0
	o.run(b, 50*time.Minute, 5*time.Second, 1100, func() {
		worst = math.Max(worst, stmtP50(t, b))
	})
	if !near(worst, 300) {
		t.Errorf("baseline p50 reached %.1f ms during the incident; usual is ~300", worst)
	}
	sevEnd, usualEnd := slowQuerySeverity(t, b, o)
	if sevStart != analyze.SeverityCritical || sevEnd != sevStart || usualStart != usualEnd {
		t.Errorf("slow_query 10 min in: %s (usual %.0f ms), 60 min in: %s (usual %.0f ms)", sevStart, usualStart, sevEnd, usualEnd)
	}
	if op, _ := b.OperationDuration("orders", "GET /orders"); !near(op.P50MS, 320) {
		t.Errorf("entry operation p50 %.1f ms, usual ~320", op.P50MS)
	}
	sh := b.Shifts()
	if len(sh) != 3 || b.ShiftCount() != 3 { // the entry op, the query op and the statement shape
		t.Fatalf("shifts during the incident: %+v", sh)
	}
	for _, s := range sh {
		if s.Reason != "slower" || s.Since.Before(time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)) || s.Anomalous < 10 {
			t.Errorf("shift %+v", s)
		}
	}

	// The contention ends; after ReleaseAfter of normal windows the held-out
	// samples are dropped and the baseline is what it was.
	o.run(b, 40*time.Minute, 5*time.Second, 300, nil)
	if sh := b.Shifts(); len(sh) != 0 {
		t.Errorf("shifts after the incident: %+v", sh)
	}
	if p := stmtP50(t, b); !near(p, 300) {
		t.Errorf("p50 after the incident %.1f ms", p)
	}
}

func TestLastingShiftBecomesNormal(t *testing.T) {
	accept := 3 * time.Hour
	b, _ := New(Options{Robust: Robust{AcceptAfter: accept}}, nil)
	o := &orders{r: rand.New(rand.NewPCG(13, 14)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	o.run(b, time.Hour, 10*time.Second, 300, nil)
	o.run(b, accept-10*time.Minute, 10*time.Second, 1100, nil)
	if p := stmtP50(t, b); !near(p, 300) {
		t.Fatalf("p50 %.1f ms before AcceptAfter has passed", p)
	}
	o.run(b, 20*time.Minute, 10*time.Second, 1100, nil)
	if p := stmtP50(t, b); !near(p, 1100) {
		t.Fatalf("p50 %.1f ms after the shift lasted %s; want the new normal ~1100", p, accept+10*time.Minute)
	}
	if sh := b.Shifts(); len(sh) != 0 {
		t.Errorf("an accepted shift is no longer held out: %+v", sh)
	}
}

func TestErrorSpikeStaysOutOfBaseline(t *testing.T) {
	b, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(15, 16)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	feed := func(d time.Duration, share float64) {
		for end := o.now.Add(d); o.now.Before(end); o.now = o.now.Add(5 * time.Second) {
			b.ObserveTrace(o.next(300, o.r.Float64() < share))
		}
	}
	feed(time.Hour, 0.02)
	feed(time.Hour, 0.6)
	if r, _, _ := b.OperationErrorRate("orders", "GET /orders"); r > 0.05 {
		t.Errorf("usual error share %.3f after an hour of 60%% errors; want ~0.02", r)
	}
	sh := b.Shifts()
	if len(sh) != 1 || sh[0].Reason != "errors" || sh[0].B != "GET /orders" {
		t.Errorf("shifts: %+v", sh)
	}
}

// A restart in the middle of an incident keeps the quarantine: the
// incident stays out, and a lasting shift is accepted when it would have
// been without the restart.
func TestRestartKeepsQuarantine(t *testing.T) {
	accept := 2 * time.Hour
	dir := t.TempDir()
	opt := Options{Dir: dir, Robust: Robust{AcceptAfter: accept}}
	b, _ := New(opt, nil)
	o := &orders{r: rand.New(rand.NewPCG(17, 18)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	o.run(b, time.Hour, 10*time.Second, 300, nil)
	o.run(b, time.Hour, 10*time.Second, 1100, nil)
	before := b.Shifts()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := New(opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := b.Shifts()
	if len(before) != 3 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("shifts before restart %+v, after %+v", before, after)
	}
	o.run(b, 50*time.Minute, 10*time.Second, 1100, nil)
	if p := stmtP50(t, b); !near(p, 300) {
		t.Fatalf("p50 %.1f ms after restart, 1h50 into the incident", p)
	}
	o.run(b, 20*time.Minute, 10*time.Second, 1100, nil)
	if p := stmtP50(t, b); !near(p, 1100) {
		t.Fatalf("p50 %.1f ms once the shift outlasted AcceptAfter across a restart", p)
	}
}

// Version 1 snapshots (baseline only) still load.
func TestSnapshotV1Loads(t *testing.T) {
	dir := t.TempDir()
	b, _ := New(Options{Dir: dir}, nil)
	o := &orders{r: rand.New(rand.NewPCG(19, 20)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	o.run(b, 2*time.Minute, 10*time.Second, 300, nil) // 12 samples: below MinEstablished, no window
	snap := snapshot{Version: 1, Ops: distsJSON(b.ops), Stmts: distsJSON(b.stmts)}
	b.opt.Dir = dir
	if err := b.write(&snap); err != nil {
		t.Fatal(err)
	}
	b2, err := New(Options{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := b2.StatementDuration("postgresql", ordersShape); !ok || st.Count != 12 || !near(st.P50MS, 300) {
		t.Errorf("v1 statement baseline: %+v %v", st, ok)
	}
}

// A noisy but steady key (durations spread over a decade, 10 % failures,
// 15 samples a window) must not lose its slow or failing windows to
// quarantine by chance: its baseline would read faster and healthier than
// the truth.
func TestNoisySteadyKeyIsNotQuarantined(t *testing.T) {
	b, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(21, 22)), now: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	var checks, shifted int
	for end := o.now.Add(12 * time.Hour); o.now.Before(end); o.now = o.now.Add(20 * time.Second) {
		ms := math.Exp(o.r.NormFloat64() + math.Log(300))
		b.ObserveTrace(o.next(ms, o.r.Float64() < 0.1))
		if o.now.Second() == 0 && o.now.Minute()%5 == 0 {
			checks++
			if len(b.Shifts()) > 0 {
				shifted++
			}
		}
	}
	if shifted*20 > checks {
		t.Errorf("held out at %d of %d checks", shifted, checks)
	}
	if r, _, _ := b.OperationErrorRate("orders", "GET /orders"); math.Abs(r-0.1) > 0.015 {
		t.Errorf("usual error share %.3f, true 0.1", r)
	}
	if p := stmtP50(t, b); !near(p, 300) {
		t.Errorf("usual p50 %.1f ms, true 300", p)
	}
}

// Detectors look baselines up for every database span and service entry.
func BenchmarkStatementLookup(b *testing.B) {
	bl, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(23, 24)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	o.run(bl, 32*time.Minute, 5*time.Second, 300, nil) // established, with an open window
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := bl.StatementDuration("postgresql", ordersShape); !ok {
			b.Fatal("no baseline")
		}
	}
}

// An incident that comes and goes (slow every other half hour for a day)
// is never accepted as the new normal: the good windows stay usual.
func TestFlappingIncidentIsNotAccepted(t *testing.T) {
	b, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(25, 26)), now: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	o.run(b, time.Hour, 10*time.Second, 300, nil)
	for i := 0; i < 24; i++ {
		o.run(b, 30*time.Minute, 10*time.Second, 1100, nil)
		o.run(b, 25*time.Minute, 10*time.Second, 300, nil)
		if p := stmtP50(t, b); !near(p, 300) {
			t.Fatalf("p50 %.1f ms after %d hours of a flapping incident", p, i+1)
		}
	}
}

func TestShiftsEndpoint(t *testing.T) {
	b, _ := New(Options{}, nil)
	o := &orders{r: rand.New(rand.NewPCG(27, 28)), now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	mux := http.NewServeMux()
	b.RegisterRoutes(mux)
	get := func() []map[string]any {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/baselines/shifts", nil))
		var body struct{ Shifts []map[string]any }
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Shifts == nil {
			t.Fatalf("shifts: %d %s", rec.Code, rec.Body)
		}
		return body.Shifts
	}
	o.run(b, 30*time.Minute, 5*time.Second, 300, nil)
	if s := get(); len(s) != 0 {
		t.Fatalf("no incident yet: %v", s)
	}
	o.run(b, 20*time.Minute, 5*time.Second, 1100, nil)
	var stmt map[string]any
	for _, s := range get() {
		if s["table"] == "statement" {
			stmt = s
		}
	}
	if stmt == nil || stmt["db_system"] != "postgresql" || stmt["shape"] != ordersShape || stmt["reason"] != "slower" ||
		!sinceNear(stmt["since"], time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)) || !near(stmt["usual_p50"].(float64), 300) || !near(stmt["shifted_p50"].(float64), 1100) {
		t.Errorf("statement shift: %v", stmt)
	}
}

// sinceNear: a shift starts with the first window judged anomalous, which
// may be the one after the window the incident began in.
func sinceNear(v any, want time.Time) bool {
	s, _ := v.(string)
	at, err := time.Parse(time.RFC3339, s)
	return err == nil && !at.Before(want.Add(-5*time.Minute)) && !at.After(want.Add(5*time.Minute))
}

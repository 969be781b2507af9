package systemic

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// ctCalls builds n CLIENT spans of service/name arriving over 5 minutes
// in waves (quiet stretches, then bursts of users at once), each lasting
// dur(i, arrival); start and end are truncated to whole ms as the
// JavaScript SDK sends them.
func ctCalls(seed uint64, n int, service, name string, dur func(i int, arrival time.Time) time.Duration) []model.Span {
	rnd := rand.New(rand.NewPCG(seed, 7))
	out := make([]model.Span, 0, n)
	at := t0
	for i := 0; i < n; i++ {
		if i%8 == 0 {
			at = at.Add(time.Duration(400+rnd.IntN(800)) * time.Millisecond) // a quiet stretch
		} else {
			at = at.Add(time.Duration(rnd.IntN(8)) * time.Millisecond) // the rest of the burst
		}
		d := dur(i, at)
		var tid model.TraceID
		var sid model.SpanID
		tid[0], tid[1], sid[0], sid[1] = byte(i), byte(i>>8), byte(i), byte(i>>8)
		start := uint64(at.UnixNano())
		s := model.Span{TraceID: tid, SpanID: sid, ParentSpanID: model.SpanID{9}, Name: name, Service: service, Kind: model.KindClient,
			StartUnixNano: start - start%1e6, EndUnixNano: (start + uint64(d)) - (start+uint64(d))%1e6,
			Attrs: model.Attrs{{Key: "db.system.name", Value: model.Str("mysql")}}}
		out = append(out, s)
	}
	return out
}

// ctLocked serialises calls behind one lock held hold each: a call waits
// for every call that arrived before it and is still queued.
func ctLocked(hold time.Duration) func(int, time.Time) time.Duration {
	var free time.Time
	return func(_ int, at time.Time) time.Duration {
		begin := at
		if free.After(begin) {
			begin = free
		}
		free = begin.Add(hold)
		return free.Sub(at)
	}
}

func ctFeed(d *Detector, spans []model.Span) time.Time {
	var last time.Time
	for i := range spans {
		now := time.Unix(0, int64(spans[i].EndUnixNano)).Add(time.Second)
		d.ObserveSpans(now, spans[i:i+1])
		last = now
	}
	return last
}

func TestConcurrencyContention(t *testing.T) {
	d := New(Config{}, nil, nil, nil)
	locked := ctCalls(1, 400, "customer", "SELECT customers.customer", ctLocked(20*time.Millisecond))
	rnd := rand.New(rand.NewPCG(2, 3))
	// Independent of load, and heavy-tailed: long calls overlap more
	// others, which must not pass for contention.
	lognormal := ctCalls(3, 400, "route", "GET", func(int, time.Time) time.Duration {
		return time.Duration(math.Exp(3.5+0.8*rnd.NormFloat64()) * float64(time.Millisecond))
	})
	parallel := ctCalls(4, 400, "pricing", "GET", func(int, time.Time) time.Duration {
		return time.Duration(18+rnd.IntN(6)) * time.Millisecond
	})
	now := ctFeed(d, locked)
	now = maxTime(now, ctFeed(d, lognormal))
	now = maxTime(now, ctFeed(d, parallel))
	fs := d.Evaluate(now)
	var got []Finding
	for _, f := range fs {
		if f.Kind == "concurrency_contention" {
			got = append(got, f)
		}
	}
	if len(got) != 1 {
		var titles []string
		for _, f := range got {
			titles = append(titles, f.Title)
		}
		t.Fatalf("concurrency_contention findings %d, want 1 (customer): %v", len(got), titles)
	}
	f := got[0]
	ev := f.Evidence.(ContentionEvidence)
	if f.Service != "customer" || f.Operation != "SELECT customers.customer" || !f.Systemic ||
		f.Key != "concurrency_contention/customer/SELECT customers.customer" {
		t.Errorf("finding %+v", f)
	}
	// Alone a call takes its 20 ms hold; one that finds k ahead waits for
	// about k more holds.
	if ev.Factor < 2 || ev.LowP50MS > 40 || ev.HighP50MS < 80 || ev.SlopeMS < 10 || ev.Calls != 400 || len(ev.Buckets) < 4 {
		t.Fatalf("evidence %+v", ev)
	}
	if b := ev.Buckets[0]; b.Concurrency != 0 || b.P50MS < 19 || b.P50MS > 22 {
		t.Errorf("lone calls: %+v", b)
	}
	if f.Culprit == nil || f.Culprit.Service != "customer" || len(f.ExampleTraceIDs) != 5 || len(f.SpanIDs) != 5 {
		t.Errorf("culprit %+v examples %v", f.Culprit, f.ExampleTraceIDs)
	}
	if !strings.Contains(f.Fix, "pool") || !strings.Contains(f.Fix, "lock") {
		t.Errorf("fix %q", f.Fix)
	}
	// Open findings are reported once; the evaluation waits Every between runs.
	if again := d.Evaluate(now.Add(2 * time.Minute)); len(again) != 0 {
		t.Errorf("reported again: %v", again[0].Title)
	}
}

func TestConcurrencyContentionNeedsSamples(t *testing.T) {
	d := New(Config{Contention: ContentionConfig{MinSamples: 500}}, nil, nil, nil)
	now := ctFeed(d, ctCalls(1, 400, "customer", "SELECT customers.customer", ctLocked(20*time.Millisecond)))
	for _, f := range d.Evaluate(now) {
		if f.Kind == "concurrency_contention" {
			t.Errorf("400 calls under a minimum of 500: %q", f.Title)
		}
	}
	// Calls older than the window are forgotten.
	d = New(Config{}, nil, nil, nil)
	now = ctFeed(d, ctCalls(1, 400, "customer", "SELECT customers.customer", ctLocked(20*time.Millisecond)))
	for _, f := range d.Evaluate(now.Add(11 * time.Minute)) {
		if f.Kind == "concurrency_contention" {
			t.Errorf("calls outside the window: %q", f.Title)
		}
	}
}

// BenchmarkContentionObserve is the ingest cost the tracker adds per
// CLIENT span (50 operations, rings full).
func BenchmarkContentionObserve(b *testing.B) {
	c := newContentionTracker(ContentionConfig{})
	spans := make([]model.Span, 0, 50)
	for i := range 50 {
		spans = append(spans, ctCalls(uint64(i), 1, "svc-"+string(rune('a'+i%26)), "op"+string(rune('a'+i/26)),
			func(int, time.Time) time.Duration { return 20 * time.Millisecond })...)
	}
	now := t0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.observe(now, &spans[i%len(spans)], nil)
	}
}

// mysql2 names every query span "SELECT": a point lookup that runs alone
// and a slow report that runs several at a time are two operations, not
// one that slows down when crowded. The same report serialised behind a
// lock still is.
func TestConcurrencyContentionTellsStatementsApart(t *testing.T) {
	withStmt := func(spans []model.Span, stmt string) []model.Span {
		for i := range spans {
			spans[i].Attrs = append(spans[i].Attrs, model.Attr{Key: "db.query.text", Value: model.Str(stmt)})
		}
		return spans
	}
	lookups := withStmt(ctCalls(5, 300, "catalog", "SELECT", func(int, time.Time) time.Duration { return time.Millisecond }),
		"SELECT id, name FROM products WHERE id = ?")
	// Reports start in bursts, many at once, and take 250 ms however many run.
	reports := withStmt(ctCalls(6, 300, "catalog", "SELECT", func(int, time.Time) time.Duration { return 250 * time.Millisecond }),
		"SELECT id, SLEEP(0.08) FROM products WHERE id <= 3")
	// Spread the lookups so they run alone.
	for i := range lookups {
		shift := uint64(i) * uint64(time.Second)
		lookups[i].StartUnixNano += shift
		lookups[i].EndUnixNano += shift
	}
	d := New(Config{}, nil, nil, nil)
	now := maxTime(ctFeed(d, reports), ctFeed(d, lookups))
	for _, f := range d.Evaluate(now) {
		if f.Kind == "concurrency_contention" {
			t.Errorf("two statements under one span name: %q", f.Title)
		}
	}
	d = New(Config{}, nil, nil, nil)
	locked := withStmt(ctCalls(1, 400, "catalog", "SELECT", ctLocked(20*time.Millisecond)), "SELECT * FROM stock WHERE sku = 42 FOR UPDATE")
	var got []Finding
	for _, f := range d.Evaluate(ctFeed(d, locked)) {
		if f.Kind == "concurrency_contention" {
			got = append(got, f)
		}
	}
	if len(got) != 1 || got[0].Operation != "SELECT * FROM stock WHERE sku = ? FOR UPDATE" {
		t.Errorf("a locked statement: %+v", got)
	}
}

func TestStmtShapeHash(t *testing.T) {
	same := [][2]string{
		{"SELECT * FROM orders WHERE id = 42", "SELECT * FROM orders WHERE id = ?"},
		{"SELECT * FROM t WHERE sku IN (1, 2, 3)", "SELECT * FROM t WHERE sku IN (7)"},
		{"SELECT * FROM u WHERE name = 'o''hara'", "SELECT * FROM u WHERE name = $1"},
		{"GET product:17", "GET product:923"},
	}
	for _, p := range same {
		if stmtShapeHash(p[0]) != stmtShapeHash(p[1]) {
			t.Errorf("%q and %q hash apart", p[0], p[1])
		}
	}
	differ := [][2]string{
		{"SELECT * FROM orders WHERE id = ?", "SELECT * FROM customers WHERE id = ?"},
		{"SELECT id FROM products WHERE id = ?", "SELECT id, SLEEP(?) FROM products WHERE id <= ?"},
		{"GET product:1", "SET product:1 x"},
	}
	for _, p := range differ {
		if stmtShapeHash(p[0]) == stmtShapeHash(p[1]) {
			t.Errorf("%q and %q hash alike", p[0], p[1])
		}
	}
}

// A Node.js caller runs every request's code on one event loop: its own
// busy thread is a suspect beside the callee, and the finding says so. A
// Go caller's is not.
func TestConcurrencyContentionNamesASingleThreadedCaller(t *testing.T) {
	for _, lang := range []string{"nodejs", "go"} {
		d := New(Config{}, nil, nil, nil)
		spans := ctCalls(1, 400, "inventory", "pg.query:SELECT", ctLocked(20*time.Millisecond))
		for i := range spans {
			spans[i].Resource = model.Attrs{{Key: "telemetry.sdk.language", Value: model.Str(lang)}}
		}
		var got []Finding
		for _, f := range d.Evaluate(ctFeed(d, spans)) {
			if f.Kind == "concurrency_contention" {
				got = append(got, f)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d findings", lang, len(got))
		}
		ev := got[0].Evidence.(ContentionEvidence)
		node := lang == "nodejs"
		if (ev.CallerRuntime == "nodejs") != node || strings.Contains(got[0].Fix, "Node.js") != node {
			t.Errorf("%s: runtime %q fix %q", lang, ev.CallerRuntime, got[0].Fix)
		}
	}
}

package alerting

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red"
)

// BenchmarkEvaluateDefaultRules: one evaluation of the built-in rules over
// RED metrics of 200 entry operations with 6 hours of traffic (the SLO
// rule's longest window), 10 requests per operation and minute. The clock
// moves 15 s (the default interval) per evaluation, so long windows are
// rescanned as often as in a server: run it with -benchtime 96x (24 min).
func BenchmarkEvaluateDefaultRules(b *testing.B) {
	m, err := red.New(red.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	now := time.Now()
	var spans []model.Span
	var seq uint64
	for minute := 360; minute >= 1; minute-- {
		t0 := now.Add(-time.Duration(minute) * time.Minute)
		spans = spans[:0]
		for op := 0; op < 200; op++ {
			for i := 0; i < 10; i++ {
				seq++
				st := t0.Add(time.Duration(i) * 5 * time.Second)
				sp := model.Span{Service: fmt.Sprintf("svc%d", op%20), Name: fmt.Sprintf("GET /op%d", op), Kind: model.KindServer,
					StartUnixNano: uint64(st.UnixNano()), EndUnixNano: uint64(st.Add(time.Duration(5+i) * time.Millisecond).UnixNano())}
				sp.SpanID[0], sp.TraceID[0] = byte(seq), byte(seq>>8)
				if i == 0 && op%7 == 0 {
					sp.StatusCode = model.StatusError
				}
				spans = append(spans, sp)
			}
		}
		m.Observe(spans)
	}
	if err := m.Flush(); err != nil {
		b.Fatal(err)
	}
	clk := &clock{t: now}
	mgr, err := New(Options{Rules: DefaultRules(), RED: m, Findings: &fakeFindings{}, Now: clk.now})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	mgr.Evaluate(ctx)
	if n := len(mgr.Alerts().Firing); n == 0 {
		b.Fatalf("with 10%% errors on every 7th operation the SLO rule must fire; fired %d", n)
	}
	b.ResetTimer()
	for b.Loop() {
		clk.add(15 * time.Second)
		mgr.Evaluate(ctx)
	}
}

// BenchmarkEvaluateFindingsRules: the built-in findings rules with 100,000
// findings of the last 10 minutes (about 170 per second, 2% critical) in
// a real findings store, counted from the window seeded at start.
func BenchmarkEvaluateFindingsRules(b *testing.B) {
	fs, err := findingstore.Open(findingstore.Options{Dir: b.TempDir(), SyncInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	now := time.Now()
	batch := make([]findingstore.Stored, 0, 1000)
	for i := 0; i < 100_000; i++ {
		sev := analyze.SeverityWarning
		if i%50 == 0 {
			sev = analyze.SeverityCritical
		}
		batch = append(batch, findingstore.Stored{Finding: analyze.Finding{Kind: "n_plus_one_query", Severity: sev,
			Title: "12 SELECTs in a loop", TraceID: fmt.Sprintf("%032x", i), SpanIDs: []string{"b7ad6b7169203331"}, ImpactMS: 12},
			Time: now.Add(-time.Duration(100_000-i) * 6 * time.Millisecond), Service: fmt.Sprintf("svc%d", i%20), Operation: "SELECT"})
		if len(batch) == cap(batch) {
			if err := fs.Put(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	start := time.Now()
	mgr, err := New(Options{Rules: DefaultRules()[:2], Findings: fs, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeding the window from 100,000 stored findings took %s", time.Since(start))
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		mgr.Evaluate(ctx)
	}
	b.StopTimer()
	if n := len(mgr.Alerts().Firing); n == 0 {
		b.Fatal("critical findings must fire")
	}
}

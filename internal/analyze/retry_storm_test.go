package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestRetryStormThresholds(t *testing.T) {
	build := func(attempts [][3]float64) *Trace { // start, end, status
		spans := []model.Span{p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 2000)}
		for i, a := range attempts {
			spans = append(spans, p1Call(byte(10+i), 1, a[0], a[1], "http://api/v1/items/7", int64(a[2])))
		}
		return NewTrace(spans)
	}
	d := NewRetryStorm()
	// One quick retry that worked: a policy doing its job.
	if got := d.Detect(build([][3]float64{{10, 18, 503}, {28, 60, 200}}), nil); len(got) != 0 {
		t.Fatal("quick single retry reported")
	}
	// Two attempts, but the failed one waited 800 ms.
	got := d.Detect(build([][3]float64{{10, 810, 504}, {815, 900, 200}}), nil)
	if len(got) != 1 || got[0].Evidence.(RetryStormEvidence).Amplification != 2 || !p1Near(got[0].ImpactMS, 805, 0.01) {
		t.Fatalf("slow failed attempt: %+v", got)
	}
	// Concurrent calls, one failed: nothing was retried.
	if got := d.Detect(build([][3]float64{{10, 100, 503}, {12, 100, 200}, {14, 100, 200}}), nil); len(got) != 0 {
		t.Fatal("concurrent calls reported as retries")
	}
	// Two quick attempts that both failed: the retries were exhausted.
	got = d.Detect(build([][3]float64{{10, 18, 503}, {28, 36, 503}}), nil)
	if len(got) != 1 || !strings.Contains(got[0].Title, "retries exhausted") || got[0].Severity.Rank() < SeverityWarning.Rank() {
		t.Fatalf("exhausted quick retries: %+v", got)
	}
	// Three attempts always count.
	got = d.Detect(build([][3]float64{{10, 15, 503}, {20, 25, 503}, {30, 35, 200}}), nil)
	if len(got) != 1 || got[0].Evidence.(RetryStormEvidence).FailedCount != 2 {
		t.Fatalf("three attempts: %+v", got)
	}
}

// Three orders fetched one after the other, each failing: the same route,
// but every call asks for another order. That is a loop over failing
// items (the service called is down for all of them), not one call
// retried; three fetches of the same order are.
func TestRetryStormNeedsTheSameRequest(t *testing.T) {
	build := func(ids ...string) *Trace {
		spans := []model.Span{p1Span(1, 0, "web", "GET /orders", model.KindServer, 0, 400)}
		for i, id := range ids {
			st := 10 + float64(i)*100
			spans = append(spans, p1Call(byte(10+i), 1, st, st+80, "http://api/v1/orders/"+id, 503))
		}
		return NewTrace(spans)
	}
	d := NewRetryStorm()
	if got := d.Detect(build("7", "8", "9"), nil); len(got) != 0 {
		t.Errorf("a loop over three orders reported as retries: %q", got[0].Title)
	}
	if got := d.Detect(build("7", "7", "7"), nil); len(got) != 1 || len(got[0].Evidence.(RetryStormEvidence).Attempts) != 3 {
		t.Errorf("three fetches of one order: %+v", got)
	}
}

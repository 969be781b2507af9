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
	// A client that fails over to another replica, named by its IP, sends
	// the same request again: each attempt reached the orders service.
	var spans []model.Span
	spans = append(spans, p1Span(1, 0, "web", "GET /orders", model.KindServer, 0, 400))
	for i, ip := range []string{"10.0.3.17", "10.0.3.18", "10.0.3.19"} {
		st := 10 + float64(i)*100
		spans = append(spans, p1Call(byte(10+i), 1, st, st+80, "http://"+ip+":8080/v1/orders/7", 503),
			p1Span(byte(20+i), byte(10+i), "orders", "GET /v1/orders/{id}", model.KindServer, st+1, st+79))
	}
	if got := d.Detect(NewTrace(spans), nil); len(got) != 1 || len(got[0].Evidence.(RetryStormEvidence).Attempts) != 3 {
		t.Errorf("three attempts on three replicas: %+v", got)
	}
}

// The shape of a Python requests call with a urllib3 Retry: one CLIENT
// span, the callee's SERVER spans of each attempt under it. Two 503s and
// their back-off before the answer are a retry chain of three attempts;
// the Data Prepper sample's single quick retry stays a policy at work.
func TestRetryStormAttemptsBelowOneCall(t *testing.T) {
	route := str("http.route", "/update_inventory")
	attempt := func(id byte, start, end float64, status int64) model.Span {
		s := p1Span(id, 2, "inventory", "update_inventory", model.KindServer, start, end, route,
			model.Attr{Key: "http.status_code", Value: model.Int(status)})
		if status >= 500 {
			s.StatusCode = model.StatusError
		}
		return s
	}
	spans := []model.Span{
		p1Span(1, 0, "payment", "payment", model.KindServer, 0, 700),
		httpCall(2, 1, "payment", 1.4, 690, "inventory:8082/update_inventory", 200),
		attempt(3, 4, 34.3, 503),
		attempt(4, 58.3, 90, 503),
		attempt(5, 190, 680, 200),
	}
	got := NewRetryStorm().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("%d findings", len(got))
	}
	ev := got[0].Evidence.(RetryStormEvidence)
	if len(ev.Attempts) != 3 || ev.FailedCount != 2 || ev.Target != "inventory" || ev.Caller.Service != "payment" ||
		got[0].Title != "3 attempts to inventory update_inventory from payment, 2 failed (HTTP 503), the last one succeeded" {
		t.Errorf("title %q evidence %+v", got[0].Title, ev)
	}
	if got := NewRetryStorm().Detect(NewTrace(append(spans[:2], attempt(3, 4, 34.3, 503), attempt(4, 58.3, 312, 200))), nil); len(got) != 0 {
		t.Errorf("one quick retry that answered: %s", got[0].Title)
	}
}

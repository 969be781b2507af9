package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestSlowDependencyLeafOnly(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 1000),
		p1Call(2, 1, 10, 910, "https://api.partner.example/v1/quote?x=1", 200),
	}
	d := NewSlowDependency()
	got := d.Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("%d findings", len(got))
	}
	ev := got[0].Evidence.(SlowDependencyEvidence)
	if ev.Peer != "api.partner.example" || ev.Operation != "GET /v1/quote" || ev.SharePct != 90 || ev.LooksLikeTimeout {
		t.Errorf("evidence %+v", ev)
	}
	// With an instrumented callee below it, the call is no leaf.
	spans = append(spans, p1Span(3, 2, "partner", "GET /v1/quote", model.KindServer, 11, 909))
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatal("non-leaf call reported")
	}
}

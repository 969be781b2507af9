package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// Express's "request handler" span carries no status: the server span
// above it answers the error. The branches under the handler failed the
// request as a whole when the server span failed and nothing outside the
// handler did.
func TestPartialFailureUnderAnUnsetHandler(t *testing.T) {
	build := func(extra ...model.Span) []model.Span {
		return append([]model.Span{
			httpServer(1, 0, "web", "GET /checkout", 0, 100, 502),
			p1Span(2, 1, "web", "request handler", model.KindInternal, 1, 90),
			p1Call(3, 2, 2, 40, "http://inventory/reserve", 200),
			p1Call(4, 2, 3, 30, "http://pricing/quote", 500),
		}, extra...)
	}
	got := p1OfKind(p1RunAll(NewTrace(build()), nil), "partial_failure")
	if len(got) != 1 || got[0].Severity != SeverityCritical || got[0].Evidence.(PartialFailureEvidence).Parent.Operation != "request handler" {
		t.Fatalf("want one critical partial_failure under the handler: %+v", got)
	}
	// The server span failed for something outside the handler too: the
	// handler's branches are not known to be why.
	other := build(p1Span(5, 1, "web", "render", model.KindInternal, 91, 99))
	other[4].StatusCode = model.StatusError
	if got := p1OfKind(p1RunAll(NewTrace(other), nil), "partial_failure"); len(got) != 0 {
		t.Errorf("another failure beside the handler: %q", got[0].Title)
	}
	// The server answered well: a degraded answer, no partial failure.
	ok := build()
	ok[0] = httpServer(1, 0, "web", "GET /checkout", 0, 100, 200)
	if got := p1OfKind(p1RunAll(NewTrace(ok), nil), "partial_failure"); len(got) != 0 {
		t.Errorf("request answered 200: %q", got[0].Title)
	}
}

package analyze

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// A handled 4xx is an answer, whatever status the instrumentation set.
// OTel's HTTP conventions put ERROR on every CLIENT span with a 4xx, and
// Brave tags error=401 on both halves (SmartThings' recorded login: a
// wrong password answered 401, then the user signed in; an execution
// service looking up a circuit breaker that does not exist gets 404 and
// carries on). None of these is a failure to diagnose; a 5xx still is.
func TestHandledClientErrorsAreAnswers(t *testing.T) {
	status := func(code int64) model.Attr {
		return model.Attr{Key: "http.response.status_code", Value: model.Int(code)}
	}
	build := func(lookup, login int64) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "stlogin", "POST /login", model.KindServer, 0, 120, status(302)),
			p1Span(2, 1, "stlogin", "POST", model.KindClient, 5, 40, status(login)),
			p1Span(3, 2, "auth", "POST /sso/authenticate", model.KindServer, 6, 39, status(login)),
			p1Span(4, 1, "stlogin", "GET", model.KindClient, 45, 60, status(lookup)),
			p1Span(5, 4, "alice", "GET /circuitbreakers/{type}/{id}", model.KindServer, 46, 59, status(lookup)),
			p1Span(6, 1, "stlogin", "GET", model.KindClient, 62, 110, status(200)),
			p1Span(7, 6, "bookie", "GET /installedapps", model.KindServer, 63, 109, status(200)),
		}
		for i := range spans {
			if code, _ := HTTPStatus(&spans[i]); code >= 400 && (spans[i].Kind == model.KindClient || code >= 500) {
				spans[i].StatusCode = model.StatusError
			}
		}
		// Brave's tag, as package zipkin converts it: ERROR on the server
		// half too, with the code as message.
		spans[2].StatusCode, spans[2].StatusMessage = model.StatusError, "401"
		return spans
	}
	for _, f := range Analyze(build(404, 401), Options{}).Findings {
		switch f.Kind {
		case "error_origin", "swallowed_error", "partial_failure", "retry_storm":
			t.Errorf("handled 4xx reported: %s %q", f.Kind, f.Title)
		}
	}
	var origin bool
	for _, f := range Analyze(build(503, 401), Options{}).Findings {
		origin = origin || f.Kind == "error_origin" || f.Kind == "swallowed_error"
	}
	if !origin {
		t.Error("a 503 below a successful answer is no longer reported")
	}
}

// Zipkin's Brave Kafka demo: serviceb's receipt ("poll", a CONSUMER span
// of microseconds) is the parent of its handler, and the handler fails.
// Nobody gets an answer from a message handler, so nothing was swallowed.
func TestSwallowedErrorNotUnderAConsumer(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "servicea", "send", model.KindProducer, 0, 1.5),
		p1Span(2, 1, "serviceb", "poll", model.KindConsumer, 1.6, 1.601),
		p1Span(3, 2, "serviceb", "on-message", model.KindInternal, 2.6, 2.9),
	}
	spans[2].StatusCode, spans[2].StatusMessage = model.StatusError, "some error"
	if got := NewSwallowedError().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("reported: %q", got[0].Title)
	}
	// Under a SERVER entry the same failure is still a degraded answer.
	spans[1].Kind = model.KindServer
	if got := NewSwallowedError().Detect(NewTrace(spans), nil); len(got) != 1 {
		t.Fatalf("under a server: %d findings", len(got))
	}
}

// A 4xx the caller could not handle is where its failure came from: the
// checkout answering 500 because inventory answered 404 for an item is
// traced to that call, not to the checkout's own code.
func TestUnhandledClientErrorIsTheOrigin(t *testing.T) {
	status := func(code int64) model.Attr {
		return model.Attr{Key: "http.response.status_code", Value: model.Int(code)}
	}
	spans := []model.Span{
		p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 80, status(500)),
		p1Span(2, 1, "checkout", "GET", model.KindClient, 10, 40, status(404)),
		p1Span(3, 2, "inventory", "GET /items/{id}", model.KindServer, 12, 38, status(404)),
	}
	spans[0].StatusCode = model.StatusError
	spans[1].StatusCode = model.StatusError
	tr := NewTrace(spans)
	if !Failed(tr.Nodes[1]) || Failed(tr.Nodes[2]) {
		t.Fatalf("failed: client %v, server %v; want the client call only", Failed(tr.Nodes[1]), Failed(tr.Nodes[2]))
	}
	var origin *Finding
	res := Analyze(spans, Options{})
	for i, f := range res.Findings {
		if f.Kind == "error_origin" {
			origin = &res.Findings[i]
		}
	}
	if origin == nil {
		t.Fatal("no error_origin")
	}
	if !slices.Contains(origin.SpanIDs, spans[1].SpanID.String()) {
		t.Errorf("error_origin %q on %v, want the 404 call %s", origin.Title, origin.SpanIDs, spans[1].SpanID)
	}
	// Handled, the same 404 is no failure at all.
	spans[0].StatusCode, spans[0].Attrs = model.StatusUnset, []model.Attr{status(200)}
	tr = NewTrace(spans)
	if Failed(tr.Nodes[1]) {
		t.Error("a handled 404 counts as failed")
	}
}

// A FastAPI service recorded with the Python agent while its database host
// did not resolve: the SQLAlchemy connect failed after 301 ms and the
// handler answered 404, as if the items did not exist. Nothing was
// degraded: the failure was relabelled as the caller's mistake, and the
// culprit and fix say so; a 200 built without the dependency keeps the
// degradation advice.
func TestSwallowedErrorAnsweredAsAClientError(t *testing.T) {
	build := func(status string) []model.Span {
		connect := p1Span(2, 1, "lms", "connect", model.KindClient, 2.8, 303.9,
			str("db.system", "postgresql"), str("net.peer.name", "postgres"), str("error", "true"))
		connect.StatusMessage = "gaierror: [Errno -2] Name or service not known"
		return []model.Span{
			p1Span(1, 0, "lms", "GET /items/", model.KindServer, 0, 308.3,
				str("http.method", "GET"), str("http.route", "/items/"), str("http.status_code", status)),
			connect,
		}
	}
	res := Analyze(build("404"), Options{})
	fs := ofKind(res.Findings, "swallowed_error")
	if len(fs) != 1 {
		t.Fatalf("404: %d swallowed_error findings; got %v", len(fs), kindsOf(res.Findings))
	}
	if c := fs[0].Culprit; c == nil || !strings.Contains(c.Reason, "client error") || strings.Contains(c.Reason, "success") {
		t.Errorf("404: culprit %+v", c)
	}
	if !strings.Contains(fs[0].Fix, "503") || strings.Contains(fs[0].Fix, "degradation") {
		t.Errorf("404: fix %q", fs[0].Fix)
	}
	fs = ofKind(Analyze(build("200"), Options{}).Findings, "swallowed_error")
	if len(fs) != 1 || !strings.Contains(fs[0].Fix, "degradation") || !strings.Contains(fs[0].Culprit.Reason, "success") {
		t.Errorf("200: %+v", fs)
	}
}

// A Python service's requests client retried a 503 below its own span (a
// urllib3 Retry with back-off): one CLIENT span that ended 200, under it
// the callee's failed SERVER span and, 24 ms later, the one that
// answered. The checkout's 200 was the full answer, not a degraded one;
// the same shape whose last attempt failed too still is swallowed.
func TestSwallowedErrorRetriedBelowTheClientSpan(t *testing.T) {
	status := func(code int64) model.Attr {
		return model.Attr{Key: "http.response.status_code", Value: model.Int(code)}
	}
	route := model.Attr{Key: "http.route", Value: model.Str("/update_inventory")}
	build := func(second int64) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "payment", "payment", model.KindServer, 0, 355, status(200)),
			httpCall(2, 1, "payment", 1.4, 324, "inventory:8082/update_inventory", second),
			p1Span(3, 2, "inventory", "update_inventory", model.KindServer, 4, 34.3, status(503), route),
			p1Span(4, 2, "inventory", "update_inventory", model.KindServer, 58.3, 312, status(second), route),
		}
		spans[2].StatusCode = model.StatusError
		if second >= 500 {
			spans[3].StatusCode = model.StatusError
		}
		return spans
	}
	for name, v := range realClocks(build(200), "inventory", 3*time.Millisecond) {
		if got := NewSwallowedError().Detect(NewTrace(v), nil); len(got) != 0 {
			t.Errorf("%s: a retry that answered reported: %s", name, got[0].Title)
		}
	}
	// The payment span answered 200 over a call whose attempts all failed.
	if got := NewSwallowedError().Detect(NewTrace(build(503)), nil); len(got) != 1 {
		t.Errorf("every attempt failed: %d swallowed_error findings", len(got))
	}
}

// A cart page prices its items one after another. The price of item 42
// failed and the next call, for item 43, answered: that is the loop's
// next step, not a retry, so the page went out without item 42's price.
// Asking for item 42 again and getting it is a retry that recovered.
func TestSwallowedErrorRecoveredOnlyByTheSameRequest(t *testing.T) {
	build := func(next string) []model.Span {
		return []model.Span{
			p1Span(1, 0, "cart", "GET /cart", model.KindServer, 0, 300, model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
			httpCall(2, 1, "cart", 10, 110, "pricing/v1/prices/42", 503),
			httpCall(3, 1, "cart", 112, 200, next, 200),
		}
	}
	got := NewSwallowedError().Detect(NewTrace(build("pricing/v1/prices/43")), nil)
	if len(got) != 1 || len(got[0].Evidence.(SwallowedErrorEvidence).Failed) != 1 {
		t.Fatalf("item 42's failure answered by item 43's call: %+v", got)
	}
	if got := NewSwallowedError().Detect(NewTrace(build("pricing/v1/prices/42")), nil); len(got) != 0 {
		t.Fatalf("item 42 asked again and answered: %s", got[0].Title)
	}
}

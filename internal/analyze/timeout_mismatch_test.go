package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestTimeoutMismatchSkewAndAsync(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 100),
		p1Call(2, 1, 5, 95, "http://api/v1/x", 200),
		p1Span(3, 2, "api", "GET /v1/x", model.KindServer, 6, 96.5), // 1.5 ms skew
		p1Span(4, 1, "web", "publish", model.KindProducer, 96, 97),
		p1Span(5, 4, "worker", "process", model.KindConsumer, 150, 900),
	}
	d := NewTimeoutMismatch()
	if got := d.Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("skew or async reported: %q", got[0].Title)
	}
	// The caller gave up with no answer recorded; its callee ran on.
	spans[1].Attrs = spans[1].Attrs[:2]
	spans[2].EndUnixNano += 300e6
	got := d.Detect(NewTrace(spans), nil)
	if len(got) != 1 || !p1Near(got[0].Evidence.(TimeoutMismatchEvidence).InvertedByMS, 301.5, 0.01) || got[0].Severity != SeverityWarning {
		t.Fatalf("overrun: %+v", got)
	}
}

// Shapes of Zipkin's Brave Kafka demo and of SmartThings' recorded OAuth
// trace: a CONSUMER receipt of microseconds whose handler runs on, an
// asynchronous Kafka send acknowledged after its caller ended, and a
// redirect CLIENT span reported without duration under which the browser's
// next requests arrive. Nobody waits on any of these children.
func TestTimeoutMismatchNobodyWaiting(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "servicea", "poll", model.KindConsumer, 0, 0.026),
		p1Span(2, 1, "servicea", "on-message", model.KindInternal, 0, 252),
		p1Span(3, 2, "servicea", "send", model.KindProducer, 251, 353),
		p1Span(4, 0, "datamgmt", "get /oauth/authorize", model.KindServer, 1000, 1200),
		p1Span(5, 4, "datamgmt", "redirect", model.KindClient, 1100, 1100),
		p1Span(6, 5, "datamgmt", "post /oauth/authorize", model.KindServer, 1900, 31000),
		// The page's script and stylesheet, requested by the browser after
		// the page was served, carry the page's span as parent.
		p1Span(8, 0, "strongman", "get /pages/install", model.KindServer, 2000, 2001),
		p1Span(9, 8, "strongman", "get js/app.js", model.KindServer, 2098, 2098.1),
		p1Span(10, 8, "stLogin", "get /login", model.KindServer, 2040, 2470),
	}
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("reported %d: %q", len(got), got[0].Title)
	}
	// A real caller still counts: the handler's synchronous call outliving
	// it is a mismatch.
	spans = append(spans, p1Span(7, 2, "servicea", "GET /x", model.KindClient, 200, 400))
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 1 || got[0].Evidence.(TimeoutMismatchEvidence).Child.SpanID != spans[len(spans)-1].SpanID.String() {
		t.Fatalf("want the client call only: %+v", got)
	}
	// So does a server that starts only after its client gave up: the
	// request sat in a queue past the caller's timeout.
	spans = []model.Span{
		p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 1010),
		p1Span(2, 1, "web", "GET", model.KindClient, 5, 1005),
		p1Span(3, 2, "api", "GET /v1/x", model.KindServer, 1100, 1400),
	}
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 1 {
		t.Fatalf("queued past the client's timeout: %d findings", len(got))
	}
}

// A Spring WebFlux service behind an Envoy sidecar, its SDK rounding
// starts to whole milliseconds: the handler's SERVER span ends when it
// returns its Mono, a third of a millisecond in, and the Redis KEYS the
// Mono runs takes 3 ms; each key it found is then read by a GET that the
// reactive client parents under the KEYS. Nobody gave up on anything. A
// caller that gave up as soon (a 1 ms deadline that expired), and one
// that waited 20 ms for a call that ran 60 ms on, still count.
func TestTimeoutMismatchReactiveHandoff(t *testing.T) {
	redis := func(id, parent byte, op string, start, end float64) model.Span {
		return p1Span(id, parent, "dataservice", op, model.KindClient, start, end, str("db.system", "redis"), str("db.statement", op+" key"))
	}
	spans := []model.Span{
		p1Span(1, 0, "proxy", "ingress", model.KindServer, -0.3, 7.7),
		p1Span(2, 1, "dataservice", "springwebflux.entry", model.KindServer, 0, 0.317),
		redis(3, 2, "KEYS", 0, 2.961),
		redis(4, 3, "GET", 1, 3.2),
		redis(5, 3, "GET", 3, 6.95),
	}
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("reported %d: %q", len(got), got[0].Title)
	}
	expired := spans[1]
	expired.StatusCode, expired.StatusMessage = model.StatusError, "DEADLINE_EXCEEDED"
	if got := NewTimeoutMismatch().Detect(NewTrace([]model.Span{spans[0], expired, spans[2]}), nil); len(got) != 1 {
		t.Errorf("a handler whose deadline expired: %d findings", len(got))
	}
	spans = []model.Span{
		p1Span(1, 0, "shipitservice", "http.servlet.filter", model.KindServer, 0, 20),
		p1Span(2, 1, "shipitservice", "SendOrderConfirmation", model.KindClient, 8, 86),
	}
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 1 {
		t.Errorf("a caller that waited 20 ms: %d findings", len(got))
	}
}

// Ray Serve's shape (dd-trace-py's recorded gRPC test): the router span
// assigns the request to a replica task and ends after 3.5 ms; the
// replica's span, in the same process, runs on 2.3 ms past it. Nobody
// gave up: the router handed the work off. A router that records a
// cancellation or an error did give up, and is reported.
func TestTimeoutMismatchInProcessHandoff(t *testing.T) {
	build := func(router func(*model.Span)) *Trace {
		r := p1Span(2, 1, "serve", "Router.assign_request", model.KindInternal, 20, 23.5)
		router(&r)
		return NewTrace([]model.Span{
			p1Span(1, 0, "serve", "proxy_request", model.KindServer, 19, 26.5), r,
			p1Span(3, 2, "serve", "handle_request_with_rejection", model.KindInternal, 21.9, 25.8),
			p1Span(4, 3, "serve", "deployment.method_execution", model.KindInternal, 25, 25.1),
		})
	}
	d := NewTimeoutMismatch()
	if got := d.Detect(build(func(*model.Span) {}), nil); len(got) != 0 {
		t.Errorf("a handoff reported: %q", got[0].Title)
	}
	for name, gaveUp := range map[string]func(*model.Span){
		"cancel event": func(s *model.Span) { s.Events = append(s.Events, model.Event{Name: "request cancelled"}) },
		"error":        func(s *model.Span) { s.StatusCode = model.StatusError },
		"499": func(s *model.Span) {
			s.Attrs = append(s.Attrs, model.Attr{Key: "http.status_code", Value: model.Int(499)})
		},
	} {
		if got := d.Detect(build(gaveUp), nil); len(got) != 1 {
			t.Errorf("%s: %d findings, want the router that gave up", name, len(got))
		}
	}
}

// Data Prepper's sample app: a Python service's requests call received
// 200 from a Java servlet 6.3 ms in, while the servlet's SERVER span ended
// 3.8 ms later, after the answer went out (filters, the flush). A call
// that recorded its callee's answer gave up nothing, over HTTP or gRPC; a
// call that ended with no answer, or failed, still did.
func TestTimeoutMismatchAnsweredCall(t *testing.T) {
	build := func(answer ...model.Attr) []model.Span {
		return []model.Span{
			p1Span(1, 0, "order", "update_order", model.KindServer, 0, 40),
			p1Span(2, 1, "order", "HTTP POST", model.KindClient, 22.7, 29.0,
				append([]model.Attr{str("http.method", "POST"), str("http.url", "http://localhost:8087/logs")}, answer...)...),
			p1Span(3, 2, "analytics-service", "/logs", model.KindServer, 25.7, 32.9),
		}
	}
	d := NewTimeoutMismatch()
	for name, answer := range map[string]model.Attr{
		"http": {Key: "http.status_code", Value: model.Int(200)},
		"grpc": {Key: "rpc.grpc.status_code", Value: model.Int(0)},
	} {
		if got := d.Detect(NewTrace(build(answer)), nil); len(got) != 0 {
			t.Errorf("%s: an answered call reported: %s", name, got[0].Title)
		}
	}
	if got := d.Detect(NewTrace(build()), nil); len(got) != 1 {
		t.Errorf("a call with no answer: %d findings", len(got))
	}
	failed := build(model.Attr{Key: "http.status_code", Value: model.Int(503)})
	failed[1].StatusCode = model.StatusError
	if got := d.Detect(NewTrace(failed), nil); len(got) != 1 {
		t.Errorf("a failed call: %d findings", len(got))
	}
}

// A Node.js service passing its callee's 500 up: the client span fails
// with the status the server span sent, and the server span (ended on the
// response's "finish", starts on whole milliseconds) outlives the client
// by ~4 ms. The caller got its answer; it gave up nothing.
func TestTimeoutMismatchFailedWithCalleesAnswer(t *testing.T) {
	build := func(clientStatus, serverStatus int64) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "gateway", "GET /deep", model.KindServer, 0, 78.6, model.Attr{Key: "http.response.status_code", Value: model.Int(500)}),
			p1Span(2, 1, "gateway", "GET", model.KindClient, 1, 73.323, model.Attr{Key: "http.response.status_code", Value: model.Int(clientStatus)},
				model.Attr{Key: "url.full", Value: model.Str("http://127.0.0.1:47102/deep")}),
			p1Span(3, 2, "orders", "GET /deep", model.KindServer, 3, 77.192, model.Attr{Key: "http.response.status_code", Value: model.Int(serverStatus)}),
		}
		for i := range spans {
			spans[i].StatusCode = model.StatusError
		}
		return spans
	}
	d := NewTimeoutMismatch()
	if got := d.Detect(NewTrace(build(500, 500)), nil); len(got) != 0 {
		t.Errorf("a 500 passed up reported as a mismatch: %s", got[0].Title)
	}
	// A proxy's 504 in between is the caller's deadline, not the callee's answer.
	if got := d.Detect(NewTrace(build(504, 500)), nil); len(got) != 1 {
		t.Errorf("a 504 over a callee still running: %d findings, want 1", len(got))
	}
}

// The gateway aborts its call to orders after 200 ms; Node then ends
// orders' server span and its Express handler span (status 200, nothing
// failed there) while the handler's pg_sleep query runs on for 1 s. The
// deadline that was too short is the gateway's, not the handler's.
func TestTimeoutMismatchNamesTheCallThatGaveUp(t *testing.T) {
	pg := []model.Attr{{Key: "db.system.name", Value: model.Str("postgresql")}, {Key: "db.query.text", Value: model.Str("SELECT pg_sleep($1)")}}
	call := p1Span(3, 2, "gateway", "GET", model.KindClient, 2, 205.656, model.Attr{Key: "url.full", Value: model.Str("http://127.0.0.1:47102/slowwork?ms=1000")})
	call.StatusCode, call.StatusMessage = model.StatusError, "timeout after 200ms"
	spans := []model.Span{
		p1Span(1, 0, "gateway", "GET /timeout", model.KindServer, 0, 206.677, model.Attr{Key: "http.response.status_code", Value: model.Int(504)}),
		p1Span(2, 1, "gateway", "request handler", model.KindInternal, 2, 207.615),
		call,
		p1Span(4, 3, "orders", "GET /slowwork", model.KindServer, 15, 210.853, model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
		p1Span(5, 4, "orders", "request handler", model.KindInternal, 24, 210.805),
		p1Span(6, 5, "orders", "pg.query:SELECT postgres", model.KindClient, 40, 1045.637, pg...),
	}
	got := NewTimeoutMismatch().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("%d findings, want 1", len(got))
	}
	ev := got[0].Evidence.(TimeoutMismatchEvidence)
	if ev.GaveUp == nil || ev.GaveUp.SpanID != call.SpanID.String() || ev.Parent.Operation != "request handler" ||
		!p1Near(ev.InvertedByMS, 834.8, 0.1) || !strings.Contains(got[0].Title, "after gateway → orders GET gave up after 204 ms (orders request handler ended with it)") {
		t.Errorf("title %q evidence %+v", got[0].Title, ev)
	}
}

// Express ends its handler span a few ms after the server span of a 500
// answer (OpenTelemetry JS, a consumer's call to pricing whose tax lookup
// failed). The server failed by answering and its caller read the
// answer: nobody gave up, the handler ran on for no one's deadline.
func TestTimeoutMismatchServerFailedByAnswering(t *testing.T) {
	code := model.Attr{Key: "http.response.status_code", Value: model.Int(500)}
	spans := []model.Span{
		p1Span(1, 0, "worker", "invoice process", model.KindConsumer, 0, 91),
		p1Span(2, 1, "worker", "GET", model.KindClient, 2, 91, code, model.Attr{Key: "url.full", Value: model.Str("http://pricing/quote")}),
		p1Span(3, 2, "pricing", "GET /quote", model.KindServer, 13, 89, code),
		p1Span(4, 3, "pricing", "request handler", model.KindInternal, 23, 92),
	}
	for i := 0; i < 3; i++ {
		spans[i].StatusCode = model.StatusError
	}
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("a handler ending after its server's 500 answer reported: %s", got[0].Title)
	}
	// The caller's own timeout (no status from the callee) is still one.
	spans[1].Attrs, spans[1].StatusMessage = spans[1].Attrs[1:], "timeout after 80ms"
	if got := NewTimeoutMismatch().Detect(NewTrace(spans), nil); len(got) != 1 {
		t.Errorf("a handler outliving its caller's timeout: %d findings, want 1", len(got))
	}
}

// A handler that started a query in its last moments and returned without
// awaiting it did not give up on it: a fire-and-forget write, or (as in a
// live Express app on a mysql2 pool) another request's queued query that
// the pool ran under this handler's context when it released the
// connection. A handler that failed, or one that waited for the query
// longer, did stop waiting.
func TestTimeoutMismatchStartedInTheLastMoments(t *testing.T) {
	build := func(handler func(*model.Span), qStart float64, more ...model.Span) *Trace {
		h := p1Span(2, 1, "catalog", "request handler", model.KindInternal, 0, 300)
		handler(&h)
		q := func(id byte, start, end float64) model.Span {
			return p1Span(id, 2, "catalog", "SELECT", model.KindClient, start, end, str("db.system", "mysql"),
				str("db.statement", "SELECT id FROM products WHERE id <= 3"))
		}
		return NewTrace(append([]model.Span{p1Span(1, 0, "catalog", "GET /catalog", model.KindServer, 0, 300.5), h,
			q(3, 40, 250), q(4, qStart, qStart+243)}, more...))
	}
	set := func(start float64) model.Span {
		return p1Span(5, 2, "catalog", "set", model.KindClient, start, start+3, str("db.system", "redis"),
			str("db.statement", "set catalog:page:1 [3 other arguments]"))
	}
	ok := func(*model.Span) {}
	if got := NewTimeoutMismatch().Detect(build(ok, 291), nil); len(got) != 0 {
		t.Fatalf("a query started 9 ms before the handler returned: %q", got[0].Title)
	}
	failed := func(s *model.Span) { s.StatusCode, s.StatusMessage = model.StatusError, "query timeout" }
	if got := NewTimeoutMismatch().Detect(build(failed, 291), nil); len(got) != 1 {
		t.Errorf("a handler that failed: %d findings", len(got))
	}
	if got := NewTimeoutMismatch().Detect(build(ok, 250), nil); len(got) != 1 {
		t.Errorf("a handler that waited 50 ms: %d findings", len(got))
	}
	// Under load the handler's own SET and answer take 50 ms, but it went
	// on to the SET as the query began: it never waited for the query.
	if got := NewTimeoutMismatch().Detect(build(ok, 250, set(258)), nil); len(got) != 0 {
		t.Errorf("a handler that moved straight on: %q", got[0].Title)
	}
	// One that raced the query against a 30 ms timer, then fell back.
	if got := NewTimeoutMismatch().Detect(build(ok, 250, set(280)), nil); len(got) != 1 {
		t.Errorf("a handler that waited 30 ms, then fell back: %d findings", len(got))
	}
}

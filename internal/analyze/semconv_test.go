package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func p1Span(id, parent byte, service, name string, kind model.SpanKind, startMS, endMS float64, attrs ...model.Attr) model.Span {
	s := model.Span{
		TraceID: model.TraceID{1}, SpanID: model.SpanID{0, 0, 0, 0, 0, 0, 1, id}, Name: name, Kind: kind, Service: service,
		StartUnixNano: 1_700_000_000_000_000_000 + uint64(startMS*1e6), EndUnixNano: 1_700_000_000_000_000_000 + uint64(endMS*1e6),
		Attrs: attrs,
	}
	if parent != 0 {
		s.ParentSpanID = model.SpanID{0, 0, 0, 0, 0, 0, 1, parent}
	}
	return s
}

func p1Node(t *Trace, id byte) *Node { return t.ByID[model.SpanID{0, 0, 0, 0, 0, 0, 1, id}] }

func TestSemconvReadsOldAndNewNames(t *testing.T) {
	a := model.Attr{Key: "http.response.status_code", Value: model.Int(503)}
	b := model.Attr{Key: "http.status_code", Value: model.Str("502")}
	for _, c := range []struct {
		attr model.Attr
		want int
	}{{a, 503}, {b, 502}} {
		s := p1Span(1, 0, "x", "GET", model.KindClient, 0, 1, c.attr)
		if got, ok := HTTPStatus(&s); !ok || got != c.want {
			t.Errorf("HTTPStatus = %d,%v want %d", got, ok, c.want)
		}
	}
	old := p1Span(1, 0, "x", "q", model.KindClient, 0, 1, model.Attr{Key: "db.system", Value: model.Str("mysql")},
		model.Attr{Key: "db.statement", Value: model.Str("SELECT 1")})
	cur := p1Span(1, 0, "x", "q", model.KindClient, 0, 1, model.Attr{Key: "db.system.name", Value: model.Str("postgresql")},
		model.Attr{Key: "db.query.text", Value: model.Str("SELECT 2")})
	bare := p1Span(1, 0, "x", "SELECT shop.orders", model.KindClient, 0, 1, model.Attr{Key: "db.system", Value: model.Str("postgresql")})
	if DBSystem(&old) != "mysql" || DBStatement(&old) != "SELECT 1" || DBSystem(&cur) != "postgresql" || DBStatement(&cur) != "SELECT 2" {
		t.Error("db.* old/new names not both read")
	}
	if DBStatement(&bare) != "SELECT shop.orders" {
		t.Errorf("DBStatement fallback = %q", DBStatement(&bare))
	}
}

func TestCallTargetAndKinds(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "frontend", "GET /checkout", model.KindServer, 0, 100),
		p1Span(2, 1, "frontend", "GET", model.KindClient, 5, 50,
			model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "url.full", Value: model.Str("http://cart:8080/cart/12345?x=1")}),
		p1Span(3, 2, "cart", "GET /cart/{id}", model.KindServer, 6, 49,
			model.Attr{Key: "http.route", Value: model.Str("/cart/{id}")}),
		p1Span(4, 1, "frontend", "query", model.KindInternal, 50, 60,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")},
			model.Attr{Key: "db.statement", Value: model.Str("SELECT * FROM a WHERE id = 7")},
			model.Attr{Key: "peer.service", Value: model.Str("orders-db")}),
		p1Span(5, 1, "frontend", "/inventory.Inventory/GetStock", model.KindClient, 60, 70,
			model.Attr{Key: "rpc.system", Value: model.Str("grpc")}, model.Attr{Key: "rpc.service", Value: model.Str("inventory.Inventory")},
			model.Attr{Key: "rpc.method", Value: model.Str("GetStock")}, model.Attr{Key: "net.peer.name", Value: model.Str("inventory")},
			model.Attr{Key: "rpc.grpc.status_code", Value: model.Int(4)}),
		p1Span(6, 1, "frontend", "render", model.KindInternal, 70, 80),
	}
	tr := NewTrace(spans)
	cases := []struct {
		id       byte
		svc, op  string
		call, db bool
	}{
		{2, "cart", "GET /cart/{id}", true, false},
		{4, "orders-db", "SELECT * FROM a WHERE id = ?", true, true},
		{5, "inventory", "inventory.Inventory/GetStock", true, false},
	}
	for _, c := range cases {
		n := p1Node(tr, c.id)
		svc, op := CallTarget(tr, n)
		if svc != c.svc || op != c.op {
			t.Errorf("CallTarget(%d) = %q,%q want %q,%q", c.id, svc, op, c.svc, c.op)
		}
		if IsCall(n) != c.call || IsDB(n) != c.db {
			t.Errorf("span %d IsCall=%v IsDB=%v", c.id, IsCall(n), IsDB(n))
		}
	}
	if IsCall(p1Node(tr, 6)) || IsCall(p1Node(tr, 1)) {
		t.Error("plain internal span and server span are not calls")
	}
	if EntryOf(p1Node(tr, 3)) != p1Node(tr, 3) || EntryOf(p1Node(tr, 4)) != p1Node(tr, 1) {
		t.Error("EntryOf wrong")
	}
	if !Failed(p1Node(tr, 5)) || !IsTimeoutLike(p1Node(tr, 5).Span) {
		t.Error("gRPC DEADLINE_EXCEEDED must be failed and timeout-like")
	}
	if Failed(p1Node(tr, 2)) {
		t.Error("span without error is not failed")
	}
}

func TestFailedAndTimeout(t *testing.T) {
	mk := func(code model.StatusCode, msg string, attrs ...model.Attr) *Node {
		s := p1Span(1, 0, "x", "op", model.KindClient, 0, 1, attrs...)
		s.StatusCode, s.StatusMessage = code, msg
		return NewTrace([]model.Span{s}).Root()
	}
	st := func(c int64) model.Attr { return model.Attr{Key: "http.status_code", Value: model.Int(c)} }
	if !Failed(mk(model.StatusError, "")) || !Failed(mk(model.StatusUnset, "", st(503))) || !Failed(mk(model.StatusUnset, "", st(429))) {
		t.Error("ERROR, 503 and 429 are failures")
	}
	if Failed(mk(model.StatusUnset, "", st(404))) || Failed(mk(model.StatusOK, "", st(500))) {
		t.Error("404 is an answer; explicit OK wins")
	}
	// OpenTracing's error tag: a boolean from most tracers, the string
	// "true" from Envoy's OTLP spans.
	tag := func(v model.Value) model.Attr { return model.Attr{Key: "error", Value: v} }
	if !Failed(mk(model.StatusUnset, "", tag(model.Bool(true)))) || !Failed(mk(model.StatusUnset, "", tag(model.Str("true")))) {
		t.Error("error=true, as a boolean or a string, is a failure")
	}
	if Failed(mk(model.StatusUnset, "", tag(model.Bool(false)))) || Failed(mk(model.StatusUnset, "", tag(model.Str("false")))) {
		t.Error("error=false is no failure")
	}
	n := mk(model.StatusError, "")
	n.Span.Events = []model.Event{{Name: "exception", Attrs: model.Attrs{{Key: "exception.type", Value: model.Str("java.net.SocketTimeoutException")}}}}
	if !IsTimeoutLike(n.Span) || !IsTimeoutLike(mk(model.StatusError, "context deadline exceeded").Span) {
		t.Error("timeout exception / deadline message must be timeout-like")
	}
	if IsTimeoutLike(mk(model.StatusError, "connection refused").Span) {
		t.Error("connection refused is not a timeout")
	}
}

// Instrumentations name peers by IP (server.address = 127.0.0.1) and
// callers set peer.service to whatever they think the callee is; the
// callee's own service.name wins when its SERVER span is in the trace.
func TestCallTargetPrefersCalleeServiceName(t *testing.T) {
	method := model.Attr{Key: "http.request.method", Value: model.Str("GET")}
	spans := []model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, 100),
		p1Span(2, 1, "frontend", "HTTP GET", model.KindClient, 5, 50, method,
			model.Attr{Key: "server.address", Value: model.Str("127.0.0.1")},
			model.Attr{Key: "url.full", Value: model.Str("http://127.0.0.1:8083/route?pickup=1,2")}),
		p1Span(3, 2, "route", "GET /route", model.KindServer, 6, 49, model.Attr{Key: "http.route", Value: model.Str("/route")}),
		p1Span(4, 1, "frontend", "HTTP GET", model.KindClient, 50, 60, method,
			model.Attr{Key: "peer.service", Value: model.Str("customer-lb")},
			model.Attr{Key: "net.peer.name", Value: model.Str("10.0.0.7")}, model.Attr{Key: "http.target", Value: model.Str("/customer")}),
		p1Span(5, 4, "customer", "GET /customer", model.KindServer, 51, 59),
		// No callee span: the caller's names are all there is.
		p1Span(6, 1, "frontend", "HTTP GET", model.KindClient, 60, 70, method,
			model.Attr{Key: "server.address", Value: model.Str("10.0.0.9")}, model.Attr{Key: "url.path", Value: model.Str("/driver")}),
		// A callee without service.name does not replace peer.service.
		p1Span(7, 1, "frontend", "HTTP GET", model.KindClient, 70, 80, method,
			model.Attr{Key: "peer.service", Value: model.Str("ledger")}, model.Attr{Key: "url.path", Value: model.Str("/entries")}),
		p1Span(8, 7, model.UnknownService+":java", "GET /entries", model.KindServer, 71, 79),
	}
	tr := NewTrace(spans)
	for _, c := range []struct {
		id      byte
		svc, op string
	}{{2, "route", "GET /route"}, {4, "customer", "GET /customer"}, {6, "10.0.0.9", "GET /driver"}, {7, "ledger", "GET /entries"}} {
		svc, op := CallTarget(tr, p1Node(tr, c.id))
		if svc != c.svc || op != c.op {
			t.Errorf("CallTarget(%d) = %q %q, want %q %q", c.id, svc, op, c.svc, c.op)
		}
	}
	if got := spanLabel(tr, p1Node(tr, 2)); got != "frontend → route GET /route" {
		t.Errorf("label %q", got)
	}
}

// Jaeger clients log errors the OpenTracing way, not as "exception"
// events: jaeger-client-go's HotROD logs its Redis timeouts with level
// "error" and the error in an "error" field; Java's OpenTracing
// instrumentation logs event "error" with error.kind and error.object.
func TestExceptionOfOpenTracingErrorLogs(t *testing.T) {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	span := func(events ...model.Event) *model.Span {
		s := p1Span(1, 0, "redis", "GetDriver", model.KindClient, 0, 34)
		s.StatusCode, s.Events = model.StatusError, events
		return &s
	}
	for _, tc := range []struct {
		name     string
		s        *model.Span
		typ, msg string
	}{
		{"hotrod", span(model.Event{Name: "Searching", Attrs: model.Attrs{str("level", "info")}},
			model.Event{Name: "redis timeout", Attrs: model.Attrs{str("driver_id", "T732193C"), str("error", "redis timeout"), str("level", "error")}}),
			"", "redis timeout"},
		{"java", span(model.Event{Name: "error", Attrs: model.Attrs{str("error.kind", "java.net.SocketTimeoutException"),
			str("error.object", "java.net.SocketTimeoutException: Read timed out")}}),
			"java.net.SocketTimeoutException", "java.net.SocketTimeoutException: Read timed out"},
		{"info only", span(model.Event{Name: "Found drivers", Attrs: model.Attrs{str("level", "info")}}), "", ""},
	} {
		if typ, msg := ExceptionOf(tc.s); typ != tc.typ || msg != tc.msg {
			t.Errorf("%s: got %q %q, want %q %q", tc.name, typ, msg, tc.typ, tc.msg)
		}
	}
}

// A call that names no peer, address or database and left no callee span
// (Brave's bench client: a CLIENT span "get" with no remote endpoint) is
// not a call to the caller itself. HotROD's fake Redis reports its calls
// under its own service "redis" as CLIENT spans below the driver: there
// the span's service is the callee's.
func TestCallTargetWithoutRemoteEndpoint(t *testing.T) {
	tr := NewTrace([]model.Span{
		p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 50),
		p1Span(2, 1, "checkout", "get", model.KindClient, 5, 20),
		p1Span(3, 1, "redis", "GetDriver", model.KindClient, 21, 30),
		p1Span(4, 0, "bench", "get", model.KindClient, 60, 70),
	})
	for id, want := range map[byte]string{2: "unknown peer", 3: "redis", 4: "unknown peer"} {
		if svc, _ := CallTarget(tr, p1Node(tr, id)); svc != want {
			t.Errorf("span %d: target %q, want %q", id, svc, want)
		}
	}
	// Zipkin's remoteEndpoint with only an address: the address it is.
	tr = NewTrace([]model.Span{p1Span(1, 0, "web", "get", model.KindClient, 0, 9,
		str("network.peer.address", "192.168.99.101"), model.Attr{Key: "network.peer.port", Value: model.Int(9000)})})
	if svc, _ := CallTarget(tr, p1Node(tr, 1)); svc != "192.168.99.101:9000" {
		t.Errorf("call with a peer address: target %q", svc)
	}
	// HotROD calls every service as 0.0.0.0: the port tells them apart.
	tr = NewTrace([]model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, 1700),
		p1Span(2, 1, "frontend", "HTTP GET", model.KindClient, 1, 1310, str("http.method", "GET"),
			str("http.url", "http://0.0.0.0:8081/customer?customer=123"), str("net.peer.name", "0.0.0.0")),
		p1Span(3, 1, "frontend", "HTTP GET", model.KindClient, 1320, 1380, str("http.request.method", "GET"),
			str("server.address", "localhost"), model.Attr{Key: "server.port", Value: model.Int(8083)}),
	})
	for id, want := range map[byte]string{2: "0.0.0.0:8081", 3: "localhost:8083"} {
		if svc, _ := CallTarget(tr, p1Node(tr, id)); svc != want {
			t.Errorf("span %d: target %q, want %q", id, svc, want)
		}
	}
	// Brave names such a call "get" and keeps its path in http.path.
	tr = NewTrace([]model.Span{
		p1Span(1, 0, "bookie", "put /installedapps/{installedappid}/configs", model.KindServer, 0, 250),
		p1Span(2, 1, "bookie", "get", model.KindClient, 5, 90, str("http.method", "GET"),
			str("http.path", "/apps/94ae382e-8903-41fb-ba4e-0123456789ab")),
	})
	if svc, op := CallTarget(tr, p1Node(tr, 2)); svc != "unknown peer" || op != "GET /apps/{id}" {
		t.Errorf("Brave call: target %q %q, want unknown peer GET /apps/{id}", svc, op)
	}
}

// Spring Cloud Sleuth names a gateway's server span "get" when no
// controller matched, and OpenTelemetry names one "GET" without a route:
// a finding about "xqx-gateway get" does not say which request failed.
// The normalised path does; a route, when known, still wins.
func TestDisplayOpOfAServerNamedByItsMethod(t *testing.T) {
	for _, c := range []struct {
		name  string
		attrs []model.Attr
		want  string
	}{
		{"get", []model.Attr{str("http.method", "GET"), str("http.path", "/xqx-user/getAllUser")}, "GET /xqx-user/getAllUser"},
		{"GET", []model.Attr{str("http.method", "GET"), str("http.target", "/orders/81723?full=1")}, "GET /orders/{id}"},
		{"GET", []model.Attr{str("http.request.method", "GET"), str("url.path", "/health"), str("http.route", "/health")}, "GET /health"},
		{"get /order", []model.Attr{str("http.method", "GET"), str("http.path", "/order")}, "get /order"},
		{"GET", []model.Attr{str("http.method", "GET")}, "GET"},
	} {
		tr := NewTrace([]model.Span{p1Span(1, 0, "gw", c.name, model.KindServer, 0, 10, c.attrs...)})
		if got := displayOp(p1Node(tr, 1)); got != c.want {
			t.Errorf("%q %v: %q, want %q", c.name, c.attrs, got, c.want)
		}
	}
}

// A shop meshed with Envoy sidecars that report as service "proxy": the
// frontend's call reaches its sidecar's egress, then the callee's
// sidecar's ingress, then the application's own entry span. The callee is
// the application; a call whose callee is not instrumented is named by
// the host its sidecar forwarded to; a service that only has "proxy" in
// its name and calls on is still the callee.
func TestCallTargetLooksBehindSidecars(t *testing.T) {
	envoy := []model.Attr{str("component", "proxy"), str("upstream_cluster", "egress_http2"),
		str("http.url", "http://productcatalogservice:3550/hipstershop.ProductCatalogService/GetProduct")}
	spans := []model.Span{
		p1Span(1, 0, "frontend", "Recv./cart/checkout", model.KindServer, 0, 360),
		p1Span(2, 1, "frontend", "Sent.GetProduct", model.KindClient, 10, 20),
		p1Span(3, 2, "proxy", "egress productcatalogservice:3550", model.KindServer, 10.3, 19.6, envoy...),
		p1Span(4, 3, "proxy", "ingress", model.KindClient, 10.7, 19.2, envoy...),
		p1Span(5, 4, "productcatalogservice", "Recv.GetProduct", model.KindServer, 11, 19),
		p1Span(6, 1, "frontend", "Sent.GetCart", model.KindClient, 30, 40),
		p1Span(7, 6, "proxy", "egress cartservice:7070", model.KindServer, 30.2, 39.8, str("component", "proxy"),
			str("http.url", "http://cartservice:7070/hipstershop.CartService/GetCart")),
		p1Span(8, 1, "frontend", "GET", model.KindClient, 50, 60),
		p1Span(9, 8, "auth-proxy", "GET /check", model.KindServer, 51, 59),
		p1Span(10, 9, "auth-proxy", "GET", model.KindClient, 52, 58),
		p1Span(11, 10, "users", "GET /users/{id}", model.KindServer, 53, 57),
	}
	tr := NewTrace(spans)
	for id, want := range map[byte]string{2: "productcatalogservice", 6: "cartservice", 8: "auth-proxy"} {
		if svc, _ := CallTarget(tr, p1Node(tr, id)); svc != want {
			t.Errorf("call %d: target %q, want %q", id, svc, want)
		}
	}
	if e := calleeEntry(p1Node(tr, 2)); e != p1Node(tr, 5) {
		t.Errorf("callee entry of the meshed call: %+v", e)
	}
}

// @opentelemetry/instrumentation-pg's exception event carries no type and
// a generic message; the server's own words are in the span status.
func TestExceptionOfKeepsTheStatusThatSaysMore(t *testing.T) {
	s := p1Span(1, 0, "pricing", "pg.query:SELECT postgres", model.KindClient, 49, 54.1,
		model.Attr{Key: "db.system.name", Value: model.Str("postgresql")})
	s.StatusCode, s.StatusMessage = model.StatusError, `relation "pricez" does not exist`
	s.Events = []model.Event{{Name: "exception", TimeUnixNano: s.EndUnixNano,
		Attrs: []model.Attr{{Key: "exception.message", Value: model.Str("PostgreSQL error of type 'error' occurred (code: 42P01)")}}}}
	typ, msg := ExceptionOf(&s)
	if typ != "" || msg != `PostgreSQL error of type 'error' occurred (code: 42P01): relation "pricez" does not exist` {
		t.Errorf("ExceptionOf = %q, %q", typ, msg)
	}
	if _, orig := OriginalError(typ, msg); orig != `relation "pricez" does not exist` {
		t.Errorf("original error %q", orig)
	}
	// A typed exception whose status repeats it is left alone.
	s.Events[0].Attrs = append(s.Events[0].Attrs, model.Attr{Key: "exception.type", Value: model.Str("DatabaseError")})
	if _, msg := ExceptionOf(&s); msg != "PostgreSQL error of type 'error' occurred (code: 42P01)" {
		t.Errorf("typed exception message %q", msg)
	}
}

// An aborted fetch as instrumentation-undici records it: exception.type is
// the DOMException's legacy code "23", the stack trace names TimeoutError.
func TestExceptionOfNumericTypeTakesTheStackName(t *testing.T) {
	spans := loadSpans(t, "../../testdata/traces/timeout_cascade/positive-express-fetch-abort-signal.json")
	for i := range spans {
		s := &spans[i]
		if s.Service != "inventory" || s.Kind != model.KindClient {
			continue
		}
		if typ, msg := ExceptionOf(s); typ != "TimeoutError" || msg != "The operation was aborted due to timeout" {
			t.Errorf("ExceptionOf = %q, %q", typ, msg)
		}
		return
	}
	t.Fatal("no inventory fetch span in the fixture")
}

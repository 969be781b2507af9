package analyze

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/zipkin"
)

// The shapes of Zipkin's recorded Brave traces (B3 shared span ids): an
// edge proxy whose server half is the root and whose client half nobody
// reported, a gateway calling auth whose client span is lost, and a call
// to "ledger" where client and server halves arrive. The server's own
// spans name the shared id, as Brave writes them.
func zipkinSharedTrace(t *testing.T) *Trace {
	t.Helper()
	in := `[
{"traceId":"a1","id":"0000000000000010","kind":"SERVER","shared":true,"name":"post /location","timestamp":1000000,"duration":130000,"localEndpoint":{"serviceName":"routing"}},
{"traceId":"a1","parentId":"0000000000000010","id":"0000000000000011","kind":"CLIENT","name":"post","timestamp":1002000,"duration":125000,"localEndpoint":{"serviceName":"routing"}},
{"traceId":"a1","parentId":"0000000000000010","id":"0000000000000011","kind":"SERVER","shared":true,"name":"post /api","timestamp":1028000,"duration":90000,"localEndpoint":{"serviceName":"api"}},
{"traceId":"a1","parentId":"0000000000000011","id":"0000000000000012","kind":"CLIENT","name":"get user","timestamp":1030000,"duration":1000,"localEndpoint":{"serviceName":"api"},"remoteEndpoint":{"serviceName":"memcache"}},
{"traceId":"a1","parentId":"0000000000000011","id":"0000000000000013","kind":"CLIENT","name":"get","timestamp":1040000,"duration":4000,"localEndpoint":{"serviceName":"api"},"remoteEndpoint":{"serviceName":"auth"}},
{"traceId":"a1","parentId":"0000000000000011","id":"0000000000000013","kind":"SERVER","shared":true,"name":"get /authentications","timestamp":1041000,"duration":2000,"localEndpoint":{"serviceName":"auth"}},
{"traceId":"a1","parentId":"0000000000000013","id":"0000000000000014","name":"extend-token","timestamp":1041500,"duration":1000,"localEndpoint":{"serviceName":"auth"}},
{"traceId":"a1","parentId":"0000000000000011","id":"0000000000000015","kind":"SERVER","shared":true,"name":"get /visits","timestamp":1060000,"duration":3000,"localEndpoint":{"serviceName":"spectre"}},
{"traceId":"a1","parentId":"0000000000000015","id":"0000000000000016","name":"load-visits","timestamp":1060500,"duration":2000,"localEndpoint":{"serviceName":"spectre"}}
]`
	spans, err := zipkin.ToModel([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	return NewTrace(spans)
}

func TestZipkinSharedSpansTree(t *testing.T) {
	tr := zipkinSharedTrace(t)
	label := func(n *Node) string {
		if n == nil {
			return ""
		}
		return n.Span.Service + " " + n.Span.Name
	}
	wantParent := map[string]string{
		// The root's client half never came: it stays the root.
		"routing post /location": "",
		"routing post":           "routing post /location",
		"api post /api":          "routing post",
		// api's own calls name the shared id: under api's server half.
		"api get user":              "api post /api",
		"api get":                   "api post /api",
		"auth get /authentications": "api get",
		"auth extend-token":         "auth get /authentications",
		// spectre's client half is missing: its server half hangs under
		// the parent it named, and its own span under it.
		"spectre get /visits": "api post /api",
		"spectre load-visits": "spectre get /visits",
	}
	if len(tr.Nodes) != len(wantParent) {
		t.Fatalf("%d spans, want %d", len(tr.Nodes), len(wantParent))
	}
	for _, n := range tr.Nodes {
		if got, want := label(n.Parent), wantParent[label(n)]; got != want {
			t.Errorf("parent of %q = %q, want %q", label(n), got, want)
		}
	}
	if len(tr.Roots) != 1 {
		t.Errorf("%d roots, want 1", len(tr.Roots))
	}
	if fs := NewBrokenPropagation().Detect(tr, nil); len(fs) != 0 {
		t.Errorf("broken_propagation on a whole trace: %q", fs[0].Title)
	}
}

// Zipkin v1 data converted to v2 reports both halves of an RPC under one
// span id without the shared flag (Netflix's recorded trace): the SERVER is
// the CLIENT's child, in whichever order they come.
func TestZipkinUnflaggedHalves(t *testing.T) {
	for _, serverFirst := range []bool{false, true} {
		spans := []model.Span{
			p1Span(1, 0, "apip", "/m/n", model.KindServer, 0, 37),
			p1Span(2, 1, "api", "/m/n", model.KindClient, 24, 32, model.Attr{Key: "peer.service", Value: model.Str("session_logs")}),
			p1Span(2, 1, "session_logs", "/slp/v1/sessionlogs", model.KindServer, 29, 32),
			p1Span(3, 2, "session_logs", "SELECT", model.KindClient, 29.5, 31),
		}
		if serverFirst {
			// and behind a fragment of the same id (SmartThings' v1 data
			// has annotation-only pieces without kind or time first).
			spans[1], spans[2] = spans[2], spans[1]
			spans = append([]model.Span{spans[0], p1Span(2, 1, "session_logs", "/slp/v1/sessionlogs", model.KindInternal, 0, 0)}, spans[1:]...)
		}
		tr := NewTrace(spans)
		var server *Node
		for _, n := range tr.Nodes {
			if n.Span.Kind == model.KindServer && n.Span.Service == "session_logs" {
				server = n
			}
		}
		if server.Parent == nil || server.Parent.Span.Kind != model.KindClient {
			t.Fatalf("serverFirst=%v: server half's parent %v", serverFirst, server.Parent)
		}
		if q := p1Node(tr, 3); q.Parent != server {
			t.Errorf("serverFirst=%v: the server's query hangs under %s %s", serverFirst, q.Parent.Span.Service, q.Parent.Span.Name)
		}
		if fs := NewBrokenPropagation().Detect(tr, nil); len(fs) != 0 {
			t.Errorf("serverFirst=%v: %q", serverFirst, fs[0].Title)
		}
	}
}

// The Brave messaging demo's transfer-service: its entry span was never
// exported, so its four calls name a parent that never arrived. That is
// one lost span, reported once, and lost by transfer-service itself (its
// calls get their parent in-process), not by a caller.
func TestBrokenPropagationOneFindingPerLostParent(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "mobile-gateway", "post", model.KindServer, 0, 29)}
	for i, name := range []string{"post", "get", "send-confirm-transfer", "push-topic"} {
		spans = append(spans, p1Span(byte(3+i), 9, "transfer-service", name, model.KindClient, 32+200*float64(i), 200+200*float64(i)))
	}
	spans = append(spans, p1Span(7, 5, "transfer-service", "smtp send", model.KindClient, 450, 550))
	fs := NewBrokenPropagation().Detect(NewTrace(spans), nil)
	if len(fs) != 1 {
		t.Fatalf("%d findings, want 1", len(fs))
	}
	ev := fs[0].Evidence.(BrokenPropagationEvidence)
	if ev.SubtreeSize != 5 || len(fs[0].SpanIDs) != 4 || !strings.Contains(fs[0].Fix, "check that transfer-service exports") {
		t.Errorf("subtree %d, span ids %v, fix %q", ev.SubtreeSize, fs[0].SpanIDs, fs[0].Fix)
	}
}

// The OpenTelemetry demo as the echoed project recorded it: frontend-proxy's
// ingress names the load generator's span, which goes to no backend of
// ours. That is upstream, not a break; the frontend's request naming the
// proxy's egress span that never arrived still is.
func TestBrokenPropagationUpstreamCaller(t *testing.T) {
	// One call chain, each span the parent of the next; the first names
	// the load generator's span (id 9).
	var spans []model.Span
	for i, hop := range []struct {
		service, name string
		kind          model.SpanKind
	}{
		{"frontend-proxy", "ingress", model.KindServer},
		{"frontend-proxy", "router frontend egress", model.KindClient},
		{"frontend", "GET /api/cart", model.KindServer},
		{"frontend", "grpc.oteldemo.CartService/GetCart", model.KindClient},
	} {
		parent := byte(i)
		if i == 0 {
			parent = 9
		}
		spans = append(spans, p1Span(byte(i+1), parent, hop.service, hop.name, hop.kind, 0.3*float64(i), 4.8-0.3*float64(i)))
	}
	if fs := NewBrokenPropagation().Detect(NewTrace(spans), nil); len(fs) != 0 {
		t.Fatalf("upstream caller reported: %q", fs[0].Title)
	}
	spans = slices.Delete(spans, 1, 2)
	if fs := NewBrokenPropagation().Detect(NewTrace(spans), nil); len(fs) != 1 || fs[0].Evidence.(BrokenPropagationEvidence).Span.Service != "frontend" {
		t.Fatalf("the lost egress span: %+v", fs)
	}
}

// Netflix's recorded Zipkin v1 trace sends annotations of a call apart,
// under the call's id and without an endpoint: pieces of a span whose
// service is known, not spans of an unnamed service. A span of its own
// without a name is still reported.
func TestInstrumentationGapZipkinFragments(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "apip", "/m/n", model.KindServer, 0, 37),
		p1Span(2, 1, "api", "/m/n", model.KindClient, 24, 32),
		p1Span(2, 1, model.UnknownService, "/m/n", model.KindInternal, 26, 26),
	}
	for _, f := range NewInstrumentationGap().Detect(NewTrace(spans), nil) {
		t.Errorf("reported: %q", f.Title)
	}
	spans[2].SpanID[7] = 3
	if fs := NewInstrumentationGap().Detect(NewTrace(spans), nil); len(fs) != 1 {
		t.Errorf("an unnamed span of its own: %d findings", len(fs))
	}
}

// Envoy names its spans by the upstream's host:port (Zipkin's recorded
// Envoy trace: "localhost:10000"): one name per upstream, not an id. An
// id in a path still is one.
func TestInstrumentationGapHostPortNames(t *testing.T) {
	for name, want := range map[string]bool{"localhost:10000": false, "10.0.0.7:8080": false, "GET /orders/88412391": true} {
		if _, got := nameShape(name); got != want {
			t.Errorf("nameShape(%q) holds an id: %v, want %v", name, got, want)
		}
	}
}

// Yelp's recorded trace reads a cache rotated by day, "get
// user_details_cache-20150901": a name with a date at its end changes
// once a day, not per request. A date-like number that is not at the end
// of a name, or is no date, is still a value.
func TestInstrumentationGapDatedNames(t *testing.T) {
	for name, want := range map[string]bool{
		"get user_details_cache-20150901": false,
		"search logs-2015.09.01":          false,
		"SELECT FROM orders_2024_06":      false,
		"scan events_201509":              false,
		"get user_details_cache-20151399": true,
		"GET /orders/20150901":            true,
		"get session-48213977":            true,
	} {
		if _, got := nameShape(name); got != want {
			t.Errorf("nameShape(%q) holds an id: %v, want %v", name, got, want)
		}
	}
}

// A Quarkus service's database health check, recorded with the Collector's
// file exporter: a "SELECT 1" every 10 s for 400 s, every one naming the
// same parent span that was never exported (the suppressed health
// endpoint's). The finding keeps 20 example span ids; the title counts all
// the orphans, not the examples.
func TestBrokenPropagationCountsEveryOrphanOfALostParent(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "users", "GET /available", model.KindServer, 0, 30)}
	for i := range 41 {
		spans = append(spans, p1Span(byte(10+i), 9, "reservation", "SELECT", model.KindClient, 40+10000*float64(i), 41+10000*float64(i),
			str("db.system", "postgresql"), str("db.statement", "SELECT 1")))
	}
	fs := NewBrokenPropagation().Detect(NewTrace(spans), nil)
	if len(fs) != 1 {
		t.Fatalf("%d findings, want 1", len(fs))
	}
	if ev := fs[0].Evidence.(BrokenPropagationEvidence); ev.SubtreeSize != 41 || len(fs[0].SpanIDs) > 20 ||
		!strings.Contains(fs[0].Title, "and 40 more") {
		t.Errorf("title %q, subtree %d, %d span ids", fs[0].Title, ev.SubtreeSize, len(fs[0].SpanIDs))
	}
}

// The same capture delivered 15 of those spans twice (a batch retried at
// least once): one span, counted once. Two halves of a Zipkin shared id
// differ in kind and stay two spans.
func TestNewTraceDropsSpansDeliveredTwice(t *testing.T) {
	db := str("db.system", "postgresql")
	spans := []model.Span{p1Span(1, 0, "orders", "GET /orders", model.KindServer, 0, 200)}
	for i := range 6 {
		spans = append(spans, p1Span(byte(10+i), 1, "orders", "SELECT items", model.KindClient, 10+30*float64(i), 35+30*float64(i), db,
			str("db.statement", fmt.Sprintf("SELECT * FROM items WHERE order_id = %d", i))))
	}
	spans = append(spans, spans[2], spans[3], spans[4])
	client := p1Span(20, 1, "orders", "get", model.KindClient, 190, 199)
	server := p1Span(20, 1, "stock", "get", model.KindServer, 191, 198)
	spans = append(spans, client, server)
	tr := NewTrace(spans)
	if len(tr.Nodes) != 9 || len(tr.Roots) != 1 || len(p1Node(tr, 1).Children) != 7 {
		t.Fatalf("%d nodes, %d roots, %d children of the root; want 9, 1, 7", len(tr.Nodes), len(tr.Roots), len(p1Node(tr, 1).Children))
	}
	if res := Analyze(spans, Options{}); res.SpanCount != 9 {
		t.Errorf("span count %d, want 9", res.SpanCount)
	}
	if got := ofKind(Analyze(spans, Options{}).Findings, "n_plus_one_query"); len(got) != 1 ||
		got[0].Evidence.(NPlusOneEvidence).Count != 6 {
		t.Errorf("n_plus_one_query %+v, want one loop of 6", got)
	}
}

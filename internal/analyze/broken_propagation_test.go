package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// An Express service traced while its requests were still running: three
// entry spans had not ended, so were not exported, and the calls each
// made (some with their own server spans below) name parents that never
// arrived. A Jaeger span index read one page at a time does the same
// across a pipeline of services. Either way the trace is incomplete: one
// cause, one finding, every orphan in it. A worker that started a second
// root is another cause and stays its own finding.
func TestBrokenPropagationIncompleteTraceIsOneFinding(t *testing.T) {
	spans := []model.Span{
		// Entry 0x51 (not exported) made two calls; the second reached
		// the same service's /backend, which called on.
		p1Span(1, 0x51, "getting-started", "GET", model.KindClient, 0, 40),
		p1Span(2, 0x51, "getting-started", "GET", model.KindClient, 1, 117),
		p1Span(3, 2, "getting-started", "GET /backend", model.KindServer, 3, 115),
		p1Span(4, 3, "getting-started", "GET", model.KindClient, 4, 17),
		// Entries 0x52 and 0x53 (not exported) made one call each.
		p1Span(5, 0x52, "getting-started", "GET", model.KindClient, 120, 140),
		p1Span(6, 0x53, "getting-started", "GET", model.KindClient, 230, 240),
		p1Span(7, 0x53, "indexer", "consume", model.KindConsumer, 250, 260),
	}
	fs := NewBrokenPropagation().Detect(NewTrace(spans), nil)
	if len(fs) != 1 {
		for _, f := range fs {
			t.Log(f.Title)
		}
		t.Fatalf("%d findings, want 1", len(fs))
	}
	ev := fs[0].Evidence.(BrokenPropagationEvidence)
	if ev.Signal != "missing_parent" || ev.OrphanCount != 5 || len(ev.Orphans) != 5 || len(fs[0].SpanIDs) != 5 || ev.SubtreeSize != 7 ||
		!strings.Contains(fs[0].Title, "parents of 5 spans of getting-started and indexer never arrived (3 parents missing") {
		t.Errorf("title %q, evidence %+v, span ids %v", fs[0].Title, ev, fs[0].SpanIDs)
	}
	if !strings.Contains(fs[0].Fix, "getting-started and of the callers of indexer") {
		t.Errorf("fix %q", fs[0].Fix)
	}

	// With the request's root exported, a worker's job that did not
	// continue its context.
	spans = append(spans, p1Span(9, 0, "frontend", "GET /", model.KindServer, -5, 290),
		p1Span(8, 0, "export-worker", "ExportJob.run", model.KindInternal, 300, 900))
	if fs := NewBrokenPropagation().Detect(NewTrace(spans), nil); len(fs) != 2 {
		t.Errorf("%d findings for lost spans and a second root, want 2", len(fs))
	}
}

// The OpenTelemetry demo's Envoy front proxy reported its ingress span
// (upstream_cluster "frontend") but not the egress span whose context it
// forwarded: the frontend's SERVER span names a parent that never arrived.
// The proxy was calling the frontend then: it is the hop that lost the
// span, not the frontend, which only received the context.
func TestBrokenPropagationProxyLostItsEgressSpan(t *testing.T) {
	ingress := p1Span(1, 0, "frontend-proxy", "ingress", model.KindServer, 0, 4.77,
		str("component", "proxy"), str("upstream_cluster", "frontend"), str("http.status_code", "200"),
		str("http.url", "http://localhost:8080/api/cart?currencyCode=USD"))
	spans := []model.Span{
		ingress,
		p1Span(2, 9, "frontend", "GET", model.KindServer, 0.28, 4.19, str("http.method", "GET"),
			str("http.target", "/api/cart")),
		p1Span(3, 2, "frontend", "grpc.oteldemo.CartService/GetCart", model.KindClient, 2.28, 4.24,
			str("rpc.system", "grpc"), str("rpc.service", "oteldemo.CartService"), str("rpc.method", "GetCart"),
			str("net.peer.name", "cartservice")),
		p1Span(4, 3, "cartservice", "oteldemo.CartService/GetCart", model.KindServer, 3.74, 4.2),
	}
	for _, cluster := range []string{"frontend", "outbound|8080||frontend.shop.svc.cluster.local"} {
		spans[0].Attrs[1] = str("upstream_cluster", cluster)
		fs := ofKind(Analyze(spans, Options{}).Findings, "broken_propagation")
		if len(fs) != 1 || fs[0].Culprit == nil || fs[0].Culprit.Service != "frontend-proxy" {
			t.Fatalf("%s: findings %+v", cluster, fs)
		}
		if ev := fs[0].Evidence.(BrokenPropagationEvidence); ev.Caller != "frontend-proxy" {
			t.Errorf("%s: caller %q", cluster, ev.Caller)
		}
	}
}

// Calls begun long after their request answered: to the targets it called
// while it ran, more of them late than in time, they are other requests'
// calls run in its context (warning); a few calls elsewhere may be its own
// background work (info). fan_out counts only the calls made in time.
func TestLateCallsAfterTheAnswer(t *testing.T) {
	build := func(late int, target string) []model.Span {
		spans := []model.Span{
			httpServer(1, 0, "web", "GET /prices", 0, 300, 200),
			p1Span(2, 1, "web", "request handler", model.KindInternal, 1, 299),
		}
		id := byte(10)
		for i := 0; i < 5; i++ {
			spans = append(spans, p1Call(id, 2, float64(10+50*i), float64(50+50*i), "http://pricing/price", 200))
			id++
		}
		for i := 0; i < late; i++ {
			at := 1500 + float64(40*i)
			spans = append(spans, p1Call(id, 2, at, at+35, "http://"+target+"/price", 200))
			id++
		}
		return spans
	}
	late := func(spans []model.Span) []Finding {
		var out []Finding
		for _, f := range p1OfKind(p1RunAll(NewTrace(spans), nil), "broken_propagation") {
			if f.Evidence.(BrokenPropagationEvidence).Signal == "leaked_context" {
				out = append(out, f)
			}
		}
		return out
	}
	got := late(build(12, "pricing"))
	if len(got) != 1 || got[0].Severity != SeverityWarning || got[0].Evidence.(BrokenPropagationEvidence).SubtreeSize != 12 {
		t.Fatalf("12 late calls to pricing: %+v", got)
	}
	for _, f := range p1OfKind(p1RunAll(NewTrace(build(12, "pricing")), nil), "fan_out") {
		if n := f.Evidence.(FanOutEvidence).Count; n != 5 {
			t.Errorf("fan_out counted %d calls, want the 5 made before the answer", n)
		}
	}
	if got := late(build(3, "audit")); len(got) != 1 || got[0].Severity != SeverityInfo {
		t.Errorf("3 late calls elsewhere: %+v, want one info", got)
	}
	if got := late(build(2, "pricing")); len(got) != 0 {
		t.Errorf("2 late calls: %+v", got)
	}
}

package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

type fakeHistory struct{ NoHistory }

func (fakeHistory) StatementDuration(system, shape string) (Baseline, bool) {
	if system == "postgresql" && strings.HasPrefix(shape, "SELECT qty FROM stock") {
		return Baseline{P50MS: 190, P95MS: 260, Count: 5000}, true
	}
	return Baseline{}, false
}

func whySpans() []model.Span {
	ms := uint64(1e6)
	base := uint64(1_700_000_000_000_000_000)
	sp := func(id, parent byte, svc, name string, kind model.SpanKind, start, end uint64, attrs ...model.Attr) model.Span {
		s := model.Span{TraceID: model.TraceID{1}, SpanID: model.SpanID{id}, Service: svc, Name: name, Kind: kind,
			StartUnixNano: base + start*ms, EndUnixNano: base + end*ms, Attrs: attrs}
		if parent != 0 {
			s.ParentSpanID = model.SpanID{parent}
		}
		return s
	}
	return []model.Span{
		sp(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 6100),
		sp(2, 1, "checkout", "inventory.v1.Inventory/GetStock", model.KindClient, 100, 5000,
			model.Attr{Key: "rpc.system", Value: model.Str("grpc")}, model.Attr{Key: "rpc.service", Value: model.Str("inventory.v1.Inventory")},
			model.Attr{Key: "rpc.method", Value: model.Str("GetStock")}, model.Attr{Key: "server.address", Value: model.Str("inventory")}),
		sp(3, 2, "inventory", "inventory.v1.Inventory/GetStock", model.KindServer, 110, 4990),
		sp(4, 3, "inventory", "SELECT stock", model.KindClient, 150, 4950,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")},
			model.Attr{Key: "db.statement", Value: model.Str("SELECT qty FROM stock WHERE sku = 'A-1' FOR UPDATE")}),
		sp(5, 1, "checkout", "POST /charge", model.KindClient, 5000, 5100),
	}
}

func TestWhyChainFollowsCriticalPathToCause(t *testing.T) {
	tr := NewTrace(whySpans())
	why := whyChain(tr, []Finding{{Kind: "slow_query", Title: "SELECT on stock took 4,800 ms", ImpactMS: 4700, Fix: "add an index",
		SpanIDs: []string{model.SpanID{4}.String()}}}, fakeHistory{})
	text := strings.Join(why, "\n")
	for _, want := range []string{
		"checkout POST /checkout took 6.1 s.",
		"80 % of that (4.9 s) was inventory inventory.v1.Inventory/GetStock.",
		"98 % of that (4.8 s) was one postgresql SELECT qty FROM stock WHERE sku = ? FOR UPDATE, 25x its usual time (p50 190 ms).",
		"Cause: SELECT on stock took 4,800 ms — 4.7 s of the request could be saved.",
		"Fix: add an index"} {
		if !strings.Contains(text, want) {
			t.Errorf("why chain lacks %q:\n%s", want, text)
		}
	}
	// The client→server hop is said once, by the callee.
	if strings.Contains(text, "checkout → inventory") {
		t.Errorf("the client→server hop must be said once:\n%s", text)
	}
}

func TestWhyChainFailedRequestNamesOrigin(t *testing.T) {
	res := Analyze(loadSpans(t, "../../testdata/traces/error_origin/positive-ml-model-oom.json"), Options{})
	text := strings.Join(res.Why, "\n")
	for _, want := range []string{"api-gateway GET /api/products/{id} took 1.4 s and failed with HTTP 500.",
		"was ml-inference model.forward.",
		"The error started in ml-inference model.forward: torch.cuda.OutOfMemoryError: CUDA out of memory",
		"(7 layers passed it up"} {
		if !strings.Contains(text, want) {
			t.Errorf("why chain lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, " % of that"); n < 2 || n > maxDescent {
		t.Errorf("%d descent steps:\n%s", n, text)
	}
}

// A failure's time is what its failed work took: fixing the failure does
// not give it back, so the chain does not promise it.
func TestWhyChainFailureCostIsNotSavings(t *testing.T) {
	for _, f := range []string{"swallowed_error/positive-search-personalization-unavailable.json", "partial_failure/positive-dashboard-loyalty-down.json"} {
		text := strings.Join(Analyze(loadSpans(t, "../../testdata/traces/"+f), Options{}).Why, "\n")
		if !strings.Contains(text, "the failed work took") || strings.Contains(text, "could be saved") {
			t.Errorf("%s:\n%s", f, text)
		}
	}
}

func TestWhyChainEmptyAndHealthy(t *testing.T) {
	if got := whyChain(NewTrace(nil), nil, nil); len(got) != 0 {
		t.Errorf("empty trace: %v", got)
	}
	spans := whySpans()[:1]
	got := whyChain(NewTrace(spans), nil, nil)
	if len(got) != 1 || got[0] != "checkout POST /checkout took 6.1 s." {
		t.Errorf("single span: %v", got)
	}
}

// A Spring order endpoint (Epsagon's recorded spans): the Kafka send
// blocked 60 s on "Failed to update metadata after 60000 ms", the service
// method failed with it, and POST /order still answered 200. The answer is
// a swallowed error, but the 60 s went to the send: that is the cause the
// why chain names.
func TestWhyNamesTheSpanTheTimeWentTo(t *testing.T) {
	s := []model.Span{
		p1Span(1, 0, "retail-site", "POST", model.KindServer, 0, 60001.5, str("http.method", "POST"),
			str("http.url", "http://shop/order"), str("http.status_code", "200")),
		p1Span(2, 1, "retail-site", "placeNewOrder", model.KindInternal, 0.1, 60001.4),
		p1Span(3, 2, "retail-site", "produce", model.KindProducer, 0.2, 60000.6, str("messaging.system", "kafka"),
			str("messaging.destination.name", "new_orders")),
	}
	s[1].StatusCode = model.StatusError
	s[2].StatusCode, s[2].StatusMessage = model.StatusError, "org.apache.kafka.common.errors.TimeoutException: Failed to update metadata after 60000 ms."
	res := Analyze(s, Options{})
	if len(ofKind(res.Findings, "swallowed_error")) == 0 {
		t.Fatalf("the 200 over a failure is not reported: %v", kindsOf(res.Findings))
	}
	for _, w := range res.Why {
		if strings.HasPrefix(w, "Cause: ") {
			if !strings.Contains(w, "new_orders") || strings.Contains(w, "answered HTTP 200") {
				t.Errorf("cause is not the send the time went to: %s", w)
			}
			return
		}
	}
	t.Errorf("no cause in %q", res.Why)
}

// Data Prepper's sample app: the order service adds each item to the cart
// with its own call to the database service, 110 to 118 ms each, one after
// another. No child holds half of the handler's time, so the descent
// stops there; the chain still says where that time went.
func TestWhyChainNamesRepeatedCalls(t *testing.T) {
	post := func(id byte, start, end float64, path string) model.Span {
		return p1Span(id, 2, "order", "HTTP POST", model.KindClient, start, end, str("http.method", "POST"),
			str("http.url", "http://localhost:8083"+path), model.Attr{Key: "http.status_code", Value: model.Int(200)})
	}
	spans := []model.Span{
		p1Span(1, 0, "order", "update_order", model.KindServer, 0, 405),
		p1Span(2, 1, "order", "update_order", model.KindInternal, 1.6, 400),
		post(3, 2.7, 121, "/add_item_to_cart"),
		post(4, 129, 240, "/add_item_to_cart"),
		post(5, 257, 374, "/add_item_to_cart"),
		post(6, 380, 390, "/logs"),
	}
	text := strings.Join(whyChain(NewTrace(spans), nil, nil), "\n")
	if !strings.Contains(text, "3 calls to localhost:8083 POST /add_item_to_cart, one after another.") {
		t.Errorf("why chain does not name the repeated calls:\n%s", text)
	}
	// One call holding the time is named by the descent, not as a group.
	text = strings.Join(whyChain(NewTrace(append(spans[:3:3], post(4, 125, 390, "/add_item_to_cart"))), nil, nil), "\n")
	if strings.Contains(text, "calls to") {
		t.Errorf("a single dominant call named as a group:\n%s", text)
	}
}

// Two Redis commands of a sub-millisecond request are not worth a step.
func TestWhyChainSkipsSubMillisecondRepeats(t *testing.T) {
	redis := func(id byte, start, end float64) model.Span {
		return p1Span(id, 1, "app", "SET", model.KindClient, start, end, str("db.system", "redis"), str("db.statement", "SET k v"))
	}
	spans := []model.Span{p1Span(1, 0, "app", "pipeline", model.KindServer, 0, 1.1), redis(2, 0.1, 0.5), redis(3, 0.55, 0.95)}
	if text := strings.Join(whyChain(NewTrace(spans), nil, nil), "\n"); strings.Contains(text, "calls to") {
		t.Errorf("sub-millisecond repeats named:\n%s", text)
	}
}

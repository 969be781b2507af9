package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestTimeoutCascadeNeverStartedFromHistory(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 5004),
		p1Span(2, 1, "checkout", "Authorize", model.KindClient, 2, 5002,
			model.Attr{Key: "rpc.system", Value: model.Str("grpc")}, model.Attr{Key: "rpc.method", Value: model.Str("Authorize")},
			model.Attr{Key: "peer.service", Value: model.Str("payment")}),
	}
	spans[0].StatusCode, spans[1].StatusCode = model.StatusError, model.StatusError
	spans[1].StatusMessage = "DEADLINE_EXCEEDED"
	h := p1History{children: map[string][]ChildStat{"checkout|POST /checkout": {
		{Service: "payment", Operation: "Authorize", MeanCount: 1, Presence: 1},
		{Service: "shipping", Operation: "CreateLabel", MeanCount: 1, Presence: 0.98},
		{Service: "email", Operation: "Send", MeanCount: 1, Presence: 0.3},
	}}}
	got := NewTimeoutCascade().Detect(NewTrace(spans), &Env{History: h})
	if len(got) != 1 {
		t.Fatalf("%d findings", len(got))
	}
	ev := got[0].Evidence.(TimeoutCascadeEvidence)
	if len(ev.NeverStarted) != 1 || ev.NeverStarted[0] != "shipping CreateLabel" || ev.TimeoutMS != 5000 {
		t.Errorf("evidence %+v", ev)
	}
	if got := NewTimeoutCascade().Detect(NewTrace(spans), nil); len(got) != 1 || got[0].Evidence.(TimeoutCascadeEvidence).NeverStarted != nil {
		t.Errorf("offline: %+v", got)
	}
}

func TestTimeoutCascadeNeedsTimeoutEvidence(t *testing.T) {
	// Three layers failing within ms of each other, but fast and with no
	// timeout anywhere: an error passed up, not a timeout cascade.
	spans := []model.Span{
		p1Span(1, 0, "gw", "GET /x", model.KindServer, 0, 30),
		p1Span(2, 1, "gw", "GET", model.KindClient, 1, 29, model.Attr{Key: "http.method", Value: model.Str("GET")}),
		p1Span(3, 2, "api", "GET /x", model.KindServer, 2, 28),
	}
	for i := range spans {
		spans[i].StatusCode, spans[i].StatusMessage = model.StatusError, "NullPointerException"
	}
	if got := NewTimeoutCascade().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("fast error chain reported: %q", got[0].Title)
	}
	spans[2].StatusMessage = "upstream timeout"
	if got := NewTimeoutCascade().Detect(NewTrace(spans), nil); len(got) != 1 || len(got[0].Evidence.(TimeoutCascadeEvidence).Layers) != 3 {
		t.Fatalf("timeout chain not reported as one 3-layer cascade: %+v", got)
	}
}

func TestRoundTimeout(t *testing.T) {
	for _, c := range []struct {
		ms   float64
		want float64
		ok   bool
	}{{5000, 5000, true}, {5049, 5000, true}, {4990, 0, false}, {30200, 30000, true}, {1011, 0, false}, {2500, 0, false}} {
		v, ok := roundTimeout(uint64(c.ms * 1e6))
		if v != c.want || ok != c.ok {
			t.Errorf("roundTimeout(%v) = %v,%v", c.ms, v, ok)
		}
	}
}

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

// Apollo's config client long-polls /notifications/v2 from a scheduled task:
// the server answers 304 when nothing changed after 60 s. The uninstrumented
// call taking all of its parent is the poll's design, not a slow dependency;
// an ordinary call of the same length still is one.
func TestSlowDependencyLongPollIsNotSlow(t *testing.T) {
	build := func(url string) []model.Span {
		return []model.Span{
			p1Span(1, 0, "catalog", "RemoteConfigLongPollService.doLongPollingRefresh", model.KindInternal, 0, 60010),
			p1Span(2, 1, "catalog", "GET", model.KindClient, 3, 60005,
				str("http.request.method", "GET"), str("url.full", url), str("server.address", "apollo-config"),
				model.Attr{Key: "http.response.status_code", Value: model.Int(304)}),
		}
	}
	if got := NewSlowDependency().Detect(NewTrace(build("http://apollo-config:8080/notifications/v2?cluster=default&appId=catalog&notifications=%5B%5D")), nil); len(got) != 0 {
		t.Errorf("long poll: %d findings, first %q", len(got), got[0].Title)
	}
	for _, url := range []string{"http://apollo-config:8080/configs/catalog/default/application",
		"https://api.example.com/notifications/v2/unread"} {
		if got := NewSlowDependency().Detect(NewTrace(build(url)), nil); len(got) != 1 {
			t.Errorf("ordinary 60 s call to %s: %d findings, want 1", url, len(got))
		}
	}
}

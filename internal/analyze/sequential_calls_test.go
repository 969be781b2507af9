package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestSequentialCallsChainRules(t *testing.T) {
	build := func(starts []float64, urls []string) *Trace {
		spans := []model.Span{p1Span(1, 0, "bff", "GET /home", model.KindServer, 0, 500)}
		for i, st := range starts {
			spans = append(spans, p1Call(byte(10+i), 1, st, st+100, urls[i], 200))
		}
		return NewTrace(spans)
	}
	three := []string{"http://users/v1/me", "http://orders/v1/recent", "http://recs/v1/top"}
	d := NewSequentialCalls()
	got := d.Detect(build([]float64{10, 112, 214}, three), nil)
	if len(got) != 1 || got[0].Evidence.(SequentialCallsEvidence).SavingMS != 200 {
		t.Fatalf("back-to-back chain: %+v", got)
	}
	if got := d.Detect(build([]float64{10, 105, 214}, three), nil); len(got) != 0 {
		t.Fatal("overlapping calls are not sequential")
	}
	if got := d.Detect(build([]float64{10, 130, 250}, three), nil); len(got) != 0 {
		t.Fatal("20 ms gaps: the caller did work in between")
	}
	same := []string{"http://users/v1/me", "http://users/v1/me", "http://users/v1/me"}
	if got := d.Detect(build([]float64{10, 112, 214}, same), nil); len(got) != 0 {
		t.Fatal("one target three times is fan_out's, not sequential_calls'")
	}
}

// SmartThings' recorded bookie handler checks the caller's OAuth token,
// then reads the location and validates device ownership: the calls after
// the check wait for it by design. Without the check the rest is too short
// a run to report; the same run without a check in front is still one.
func TestSequentialCallsNotThroughACredentialCheck(t *testing.T) {
	url := func(u string) model.Attr { return model.Attr{Key: "url.full", Value: model.Str(u)} }
	build := func(first, firstURL string) []model.Span {
		spans := []model.Span{p1Span(1, 0, "bookie", "PUT /installedapps/{id}/configs", model.KindServer, 0, 200)}
		for i, call := range []struct{ peer, url string }{
			{first, firstURL}, {"account", "http://account/locations/7"}, {"coresrv", "http://coresrv/api/devices/validate"},
		} {
			st := 5 + 60*float64(i)
			spans = append(spans, p1Span(byte(2+i), 1, "bookie", "POST", model.KindClient, st, st+58,
				model.Attr{Key: "peer.service", Value: model.Str(call.peer)}, url(call.url)))
		}
		return spans
	}
	if got := NewSequentialCalls().Detect(NewTrace(build("auth", "http://auth/oauth/check_token")), nil); len(got) != 0 {
		t.Fatalf("a run through a token check: %q", got[0].Title)
	}
	// Brave's client span says only "post"; auth's server span names the
	// endpoint.
	brave := build("auth", "")
	brave = append(brave, p1Span(9, 2, "auth", "post /oauth/check_token", model.KindServer, 6, 60))
	if got := NewSequentialCalls().Detect(NewTrace(brave), nil); len(got) != 0 {
		t.Fatalf("a run through a token check named by its server: %q", got[0].Title)
	}
	if got := NewSequentialCalls().Detect(NewTrace(build("catalog", "http://catalog/v1/authors/42")), nil); len(got) != 1 {
		t.Fatalf("/authors is no credential check: %d findings", len(got))
	}
}

// SmartThings' bookie reads its configuration with Brave's MySQL
// instrumentation around two HTTP calls: sub-millisecond CLIENT spans
// named "\n", pointed at bookie itself and marked only by sql.query. They
// are statements, not a third service to call alongside the two.
func TestSequentialCallsBraveSQLIsAStatement(t *testing.T) {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	sql := func(id byte, st, en float64) model.Span {
		return p1Span(id, 1, "bookie", "\n", model.KindClient, st, en, str("peer.service", "bookie"),
			str("sql.query", "SELECT id, status FROM install_configuration WHERE installed_app_id = ?"))
	}
	call := func(id byte, peer, method string, st, en float64) model.Span {
		return p1Span(id, 1, "bookie", method, model.KindClient, st, en, str("peer.service", peer),
			str("http.method", method), str("http.path", "/"+peer))
	}
	spans := []model.Span{
		p1Span(1, 0, "bookie", "put /installedapps/{installedappid}/configs", model.KindServer, 0, 190),
		sql(2, 21, 22),
		call(3, "account", "GET", 24, 60),
		call(4, "coreSrv", "POST", 63, 131),
		sql(5, 133, 134),
	}
	if got := NewSequentialCalls().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Fatalf("two calls between statements are no run of three targets: %s", got[0].Title)
	}
}

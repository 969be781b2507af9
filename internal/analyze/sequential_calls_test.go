package analyze

import (
	"strings"
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

// A checkout asks for a quote, charges the card for it, then mails the
// receipt. The quote service answered quote id Q-7731 (a captured
// response body, or a value it logged, as HotROD's driver service logs the
// drivers it found) and the charge sends it: the charge needed the quote's
// answer, so the two cannot run together and what is left is too short a
// run. The same id already in the checkout's own request, or in a
// cookie it received, proves nothing: then the run stands.
func TestSequentialCallsSplitWhereACallSendsAnEarlierAnswer(t *testing.T) {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	build := func(logged bool, entry ...model.Attr) []model.Span {
		quote := p1Span(3, 2, "quotes", "GET /v1/quote", model.KindServer, 6, 104,
			str("http.response.body", `{"quote_id":"Q-7731","total":"26.30"}`))
		if logged {
			quote.Attrs = nil
			quote.Events = []model.Event{{TimeUnixNano: quote.EndUnixNano, Name: "Quote ready",
				Attrs: model.Attrs{str("quotes", `[{"id":"Q-7731","total":"26.30"}]`)}}}
		}
		return []model.Span{
			p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 330, entry...),
			p1Call(2, 1, 5, 105, "http://quotes/v1/quote?cart=c-1", 200),
			quote,
			p1Call(4, 1, 106, 206, "http://payments/v1/charge?quote=Q-7731", 200),
			p1Call(5, 1, 207, 307, "http://mailer/v1/receipts?cart=c-1", 200),
		}
	}
	for _, logged := range []bool{false, true} {
		if got := NewSequentialCalls().Detect(NewTrace(build(logged)), nil); len(got) != 0 {
			t.Fatalf("the charge sends the quote's answer (logged %v): %s", logged, got[0].Title)
		}
	}
	for name, entry := range map[string]model.Attr{
		"request": str("url.query", "quote=Q-7731"),
		"cookie":  str("http.request.header.cookie", "quote=Q-7731"),
	} {
		if got := NewSequentialCalls().Detect(NewTrace(build(false, entry)), nil); len(got) != 1 {
			t.Errorf("the quote id came with the %s: %d findings", name, len(got))
		}
	}
}

// The Node app of the live runs: await a; await b; await c. Independent
// calls send only literals of the code (ms=100, ms=120, ms=90); chained
// ones send what the previous answer held (after=x34), which no
// request and no recorded answer shows. The chained run is still reported
// (the trace cannot prove where x34 came from) but says why it is likely
// no saving and stays info; a call before the run that could have
// answered x34 takes that reason away.
func TestSequentialCallsSaysWhenACallSendsAValueOfUnknownOrigin(t *testing.T) {
	build := func(urls ...string) []model.Span {
		spans := []model.Span{p1Span(1, 0, "gateway", "request handler", model.KindInternal, 0, 330)}
		for i, u := range urls {
			st := 1 + 108*float64(i)
			spans = append(spans, p1Call(byte(2+i), 1, st, st+106, u, 200))
		}
		return spans
	}
	independent := build("http://orders/slow?ms=100", "http://inventory/slow?ms=120", "http://pricing/slow?ms=90")
	got := NewSequentialCalls().Detect(NewTrace(independent), nil)
	if len(got) != 1 || !strings.HasPrefix(got[0].Title, "if these 3 calls are independent") ||
		len(got[0].Evidence.(SequentialCallsEvidence).Unexplained) != 0 {
		t.Fatalf("independent calls: %+v", got)
	}
	chained := build("http://orders/slow?ms=100", "http://inventory/slow?ms=120&after=x34", "http://pricing/slow?ms=90&after=x25")
	got = NewSequentialCalls().Detect(NewTrace(chained), nil)
	if len(got) != 1 {
		t.Fatalf("chained calls: %d findings", len(got))
	}
	ev := got[0].Evidence.(SequentialCallsEvidence)
	if got[0].Severity != SeverityInfo || !strings.Contains(got[0].Title, `inventory sends "x34"`) || len(ev.Unexplained) != 2 ||
		ev.Unexplained[1].Value != "x25" {
		t.Fatalf("chained calls: %s %+v", got[0].Title, ev.Unexplained)
	}
	// A lookup before the run could have answered x34.
	withLookup := append(chained, p1Span(9, 1, "gateway", "SELECT", model.KindClient, 0.1, 0.8,
		model.Attr{Key: "db.system", Value: model.Str("postgresql")}))
	got = NewSequentialCalls().Detect(NewTrace(withLookup), nil)
	if len(got) != 1 || len(got[0].Evidence.(SequentialCallsEvidence).Unexplained) != 0 {
		t.Fatalf("a lookup before the run: %+v", got)
	}
}

// pairHistory: earlier traces of the operation ran the calls to each of
// its pairs of targets at the same time.
type pairHistory struct {
	NoHistory
	together map[[2]string]bool
}

func (h pairHistory) CallPair(service, op string, a, b [2]string) (CallPairStat, bool) {
	if h.together[[2]string{a[0], b[0]}] || h.together[[2]string{b[0], a[0]}] {
		return CallPairStat{Parents: 40, Together: 12, AFirst: 28}, true
	}
	return CallPairStat{Parents: 40, AFirst: 40}, true
}

// What the server learnt from earlier requests of the operation outweighs
// a value two calls share: a charge that ran at the same time as the
// quote elsewhere does not wait for the quote's answer, and the run
// stands, now named as calls that ran together before. Calls that always
// ran in one order prove nothing: the run still ends at the charge.
func TestSequentialCallsHistoryOfCallsThatRanTogether(t *testing.T) {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	spans := []model.Span{
		p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 330),
		p1Call(2, 1, 5, 105, "http://quotes/v1/quote?cart=c-1", 200),
		p1Span(3, 2, "quotes", "GET /v1/quote", model.KindServer, 6, 104, str("http.response.body", `{"quote_id":"Q-7731"}`)),
		p1Call(4, 1, 106, 206, "http://payments/v1/charge?quote=Q-7731", 200),
		p1Call(5, 1, 207, 307, "http://mailer/v1/receipts?cart=c-1", 200),
	}
	seen := pairHistory{together: map[[2]string]bool{{"quotes", "payments"}: true, {"payments", "mailer"}: true}}
	got := NewSequentialCalls().Detect(NewTrace(spans), &Env{History: seen})
	if len(got) != 1 || !got[0].Evidence.(SequentialCallsEvidence).Elsewhere ||
		!strings.HasPrefix(got[0].Title, "these 3 calls ran at the same time or in another order in earlier requests of POST /checkout") {
		t.Fatalf("calls that ran together elsewhere: %+v", got)
	}
	inOrder := &Env{History: pairHistory{}}
	if got := NewSequentialCalls().Detect(NewTrace(spans), inOrder); len(got) != 0 {
		t.Fatalf("calls always made in one order: %s", got[0].Title)
	}
}

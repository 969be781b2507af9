package analyze

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// realClocks returns the variants of a fixture that real exporters send:
// exact, rounded to whole ms (JavaScript SDK), jittered by up to half a
// millisecond and rounded, and with one service's host clock off.
func realClocks(spans []model.Span, skewed string, skew time.Duration) map[string][]model.Span {
	return map[string][]model.Span{
		"exact":   spans,
		"js-ms":   roundToMillis(spans),
		"jitter":  jitterMillis(spans, 500*time.Microsecond),
		"skew+":   skewService(spans, skewed, skew),
		"skew-":   skewService(spans, skewed, -skew),
		"skew+js": roundToMillis(skewService(spans, skewed, skew)),
	}
}

func httpCall(id, parent byte, svc string, startMS, endMS float64, target string, status int64) model.Span {
	s := p1Span(id, parent, svc, "HTTP GET", model.KindClient, startMS, endMS,
		model.Attr{Key: "http.request.method", Value: model.Str("GET")},
		model.Attr{Key: "url.full", Value: model.Str("http://" + target)},
		model.Attr{Key: "http.response.status_code", Value: model.Int(status)})
	if status >= 500 {
		s.StatusCode = model.StatusError
	}
	return s
}

// Back-to-back siblings on a rounding clock overlap by up to a
// millisecond; partial_failure must not take them for concurrent branches
// (it fired at CRITICAL on ordinary JavaScript traces).
func TestPartialFailureToleratesClockGranularity(t *testing.T) {
	// want: findings for calls at [s1, e1] (succeeds) and [s2, e2] (fails)
	// under a failed parent, on every clock.
	check := func(what string, s1, e1, s2, e2 float64, want int) {
		spans := []model.Span{
			p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 400),
			httpCall(2, 1, "web", s1, e1, "profile/v1/me", 200),
			httpCall(3, 1, "web", s2, e2, "billing/v1/plan", 503),
		}
		spans[0].StatusCode = model.StatusError
		for name, v := range realClocks(spans, "web", 3*time.Millisecond) {
			if got := NewPartialFailure().Detect(NewTrace(v), nil); len(got) != want {
				t.Errorf("%s, %s: %d findings, want %d", what, name, len(got), want)
			}
		}
	}
	// The second starts 0.4 ms before the first "ended": what ms rounding
	// of start times produces for calls made one after the other.
	check("sequential", 0.2, 150.6, 150.2, 390.3, 0)
	check("concurrent", 1, 300, 2, 390, 1)
}

func sequentialThree() []model.Span {
	return []model.Span{
		p1Span(1, 0, "bff", "GET /home", model.KindServer, 0, 1000),
		httpCall(2, 1, "bff", 10, 310.4, "users/v1/me", 200),
		httpCall(3, 1, "bff", 310.1, 610.7, "orders/v1/recent", 200),
		httpCall(4, 1, "bff", 610.3, 910, "recs/v1/top", 200),
	}
}

func TestSequentialCallsToleratesClockGranularity(t *testing.T) {
	for name, spans := range realClocks(sequentialThree(), "bff", 4*time.Millisecond) {
		got := NewSequentialCalls().Detect(NewTrace(spans), nil)
		if len(got) != 1 || len(got[0].Evidence.(SequentialCallsEvidence).Calls) != 3 {
			t.Errorf("%s: back-to-back chain not found: %d findings", name, len(got))
		}
	}
}

// sequential_calls is a hypothesis: its title says so, and it is info
// unless the saving is most of the request.
func TestSequentialCallsIsAHypothesis(t *testing.T) {
	got := NewSequentialCalls().Detect(NewTrace(sequentialThree()), nil)
	if len(got) != 1 {
		t.Fatalf("%d findings", len(got))
	}
	// Saving 600 ms of 1000: ≥ 50 % and ≥ 200 ms, a warning.
	if f := got[0]; f.Severity != SeverityWarning || !strings.HasPrefix(f.Title, "if these 3 calls are independent") ||
		!strings.Contains(f.Fix, "If these calls do not need each other's results") {
		t.Errorf("severity %s title %q fix %q", f.Severity, f.Title, f.Fix)
	}
	// The same chain in a 1.3 s request saves 46 %: only worth knowing.
	spans := sequentialThree()
	spans[0].EndUnixNano += 300e6
	if got := NewSequentialCalls().Detect(NewTrace(spans), nil); len(got) != 1 || got[0].Severity != SeverityInfo {
		t.Errorf("small share: %+v", got)
	}
	// Two calls in a row to one service are not a sequence of services.
	spans = sequentialThree()
	spans[2] = httpCall(3, 1, "bff", 310.1, 610.7, "users/v1/settings", 200)
	if got := NewSequentialCalls().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("users, users, recs reported: %s", got[0].Title)
	}
}

// A measured cause is the Cause; a hypothesis never is when one exists.
func TestWhyRanksMeasuredCausesAboveHypotheses(t *testing.T) {
	spans := sequentialThree()
	tr := NewTrace(spans)
	seqIDs := []string{model.SpanID{0, 0, 0, 0, 0, 0, 1, 2}.String(), model.SpanID{0, 0, 0, 0, 0, 0, 1, 3}.String()}
	findings := []Finding{
		{Kind: "sequential_calls", Severity: SeverityWarning, Title: "if these 3 calls are independent ...", ImpactMS: 600, SpanIDs: seqIDs,
			Culprit: &Culprit{Service: "bff", Operation: "GET /home", Reason: "awaits them one by one."}},
		{Kind: "slow_dependency", Severity: SeverityInfo, Title: "call to recs took 300 ms", ImpactMS: 299,
			SpanIDs: []string{model.SpanID{0, 0, 0, 0, 0, 0, 1, 4}.String()},
			Culprit: &Culprit{Service: "recs", Operation: "GET /v1/top", Reason: "recs itself is slow."}},
	}
	why := strings.Join(whyChain(tr, findings, nil), "\n")
	if !strings.Contains(why, "Cause: call to recs took 300 ms") || strings.Contains(why, "independent") ||
		!strings.HasSuffix(why, "Culprit: recs GET /v1/top — recs itself is slow.") {
		t.Errorf("why chain:\n%s", why)
	}
	why = strings.Join(whyChain(tr, findings[:1], nil), "\n")
	if !strings.Contains(why, "Possible cause: if these 3 calls are independent") || strings.Contains(why, "\nCause:") {
		t.Errorf("a lone hypothesis is a possible cause:\n%s", why)
	}
}

func TestFanOutToleratesClockGranularity(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "web", "GET /cart", model.KindServer, 0, 1000)}
	for i := 0; i < 6; i++ {
		st := 10 + float64(i)*60.3
		spans = append(spans, httpCall(byte(10+i), 1, "web", st, st+60.5, fmt.Sprintf("pricing/v1/prices/%d", 100+i), 200))
	}
	for name, v := range realClocks(spans, "web", 2*time.Millisecond) {
		got := NewFanOut().Detect(NewTrace(v), nil)
		if len(got) != 1 || got[0].Evidence.(FanOutEvidence).Mode != "sequential" {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// A concurrent fan-out that a batch call would shorten by a few ms, or by
// a tiny share of its parent, is how the code should look.
func TestFanOutNeedsAWorthwhileSaving(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "web", "GET /cart", model.KindServer, 0, 1000)}
	for i := 0; i < 10; i++ {
		st := 10 + float64(i)*0.8 // started by a loop, a few hundred µs apart
		spans = append(spans, httpCall(byte(10+i), 1, "web", st, st+40, fmt.Sprintf("pricing/v1/prices/%d", 100+i), 200))
	}
	if got := NewFanOut().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("10 concurrent calls saving %.1f ms reported: %s", got[0].ImpactMS, got[0].Title)
	}
}

func TestTimeoutMismatchToleratesHostSkew(t *testing.T) {
	// The callee's span ends at calleeEnd ms; its caller's call at 290.
	check := func(what string, calleeEnd float64, status int64, want int) {
		spans := []model.Span{
			p1Span(1, 0, "web", "GET /page", model.KindServer, 0, 300),
			httpCall(2, 1, "web", 10, 290, "search/v1/q", status),
			p1Span(3, 2, "search", "GET /v1/q", model.KindServer, 11, calleeEnd),
		}
		for name, v := range realClocks(spans, "search", 12*time.Millisecond) {
			if got := NewTimeoutMismatch().Detect(NewTrace(v), nil); len(got) != want {
				t.Errorf("%s, %s: %d findings, want %d", what, name, len(got), want)
			}
		}
	}
	check("12 ms of host skew", 289.8, 200, 0)
	check("1.2 s overrun", 1500, 504, 1)
}

// One problem, one finding: a loop whose every call outlives its caller
// is one timeout_mismatch with a count, not one per span.
func TestTimeoutMismatchAggregatesRepeatedSpans(t *testing.T) {
	// The request timed out after 100 ms while its items ran on: it gave
	// up on them (without that, work it returned from is a handoff).
	run := p1Span(1, 0, "batch", "run", model.KindServer, 0, 100)
	run.StatusCode, run.StatusMessage = model.StatusError, "request timed out"
	spans := []model.Span{run}
	for i := 0; i < 200; i++ {
		s := p1Span(2, 1, "batch", "process item", model.KindInternal, 50, 400+float64(i))
		s.SpanID = model.SpanID{0, 0, 0, 0, 0, 1, byte(i / 256), byte(i)}
		spans = append(spans, s)
	}
	got := NewTimeoutMismatch().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("%d findings for one problem", len(got))
	}
	ev := got[0].Evidence.(TimeoutMismatchEvidence)
	if ev.Count != 200 || len(got[0].SpanIDs) > maxMergedSpanIDs || ev.InvertedByMS != 499 ||
		!strings.HasPrefix(got[0].Title, "200 spans like this") {
		t.Errorf("count %d, %d span ids, worst %.0f ms, title %q", ev.Count, len(got[0].SpanIDs), ev.InvertedByMS, got[0].Title)
	}
}

// deadlineChain: gateway → checkout → payment, payment's client call
// times out with DEADLINE_EXCEEDED after 2 s and every layer fails with it.
func deadlineChain() []model.Span {
	spans := []model.Span{
		p1Span(1, 0, "gateway", "POST /checkout", model.KindServer, 0, 2004),
		httpCall(2, 1, "gateway", 1, 2003, "checkout/api/checkout", 504),
		p1Span(3, 2, "checkout", "POST /api/checkout", model.KindServer, 2, 2002),
		p1Span(4, 3, "checkout", "payment.v1.Payment/Charge", model.KindClient, 3, 2001.5,
			model.Attr{Key: "rpc.system", Value: model.Str("grpc")}, model.Attr{Key: "rpc.method", Value: model.Str("payment.v1.Payment/Charge")},
			model.Attr{Key: "peer.service", Value: model.Str("payment")}, model.Attr{Key: "rpc.grpc.status_code", Value: model.Int(4)}),
	}
	for i := range spans {
		spans[i].StatusCode = model.StatusError
	}
	spans[3].StatusMessage = "context deadline exceeded"
	return spans
}

func TestTimeoutCascadeToleratesRealClocks(t *testing.T) {
	for name, spans := range realClocks(deadlineChain(), "checkout", 4*time.Millisecond) {
		got := NewTimeoutCascade().Detect(NewTrace(spans), nil)
		if len(got) != 1 || len(got[0].Evidence.(TimeoutCascadeEvidence).Layers) != 4 {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// exhaustedRetries: checkout calls payment three times, each failing fast
// with UNAVAILABLE, and gives up after the third: 3 × 300 ms + 2 × 50 ms
// back-off = 1000 ms, a round number by coincidence. No timeout anywhere.
func exhaustedRetries() []model.Span {
	spans := []model.Span{
		p1Span(1, 0, "gateway", "POST /checkout", model.KindServer, 0, 1002),
		httpCall(2, 1, "gateway", 0.5, 1001.5, "checkout/api/checkout", 503),
		p1Span(3, 2, "checkout", "POST /api/checkout", model.KindServer, 1, 1001),
	}
	for i := 0; i < 3; i++ {
		st := 1 + float64(i)*350
		spans = append(spans, httpCall(byte(10+i), 3, "checkout", st, st+300, "payment/v1/charges", 503))
		spans[len(spans)-1].StatusMessage = "UNAVAILABLE: payment backend unavailable"
	}
	spans[0].StatusCode, spans[2].StatusCode = model.StatusError, model.StatusError
	spans[2].StatusMessage = "payment failed: retries exhausted"
	return spans
}

func TestExhaustedRetriesAreRetryStormNotTimeoutCascade(t *testing.T) {
	for name, spans := range realClocks(exhaustedRetries(), "checkout", 3*time.Millisecond) {
		res := Analyze(spans, Options{})
		if fs := ofKind(res.Findings, "timeout_cascade"); len(fs) != 0 {
			t.Errorf("%s: exhausted retries reported as a timeout cascade: %s", name, fs[0].Title)
		}
		rs := ofKind(res.Findings, "retry_storm")
		if len(rs) != 1 || !strings.Contains(rs[0].Title, "retries exhausted") || rs[0].Culprit.Service != "payment" {
			t.Errorf("%s: retry_storm %+v", name, rs)
		}
	}
	// The same shape with a deadline error on the attempts is a timeout.
	spans := exhaustedRetries()
	spans[2].StatusMessage = "context deadline exceeded"
	if fs := ofKind(Analyze(spans, Options{}).Findings, "timeout_cascade"); len(fs) != 1 {
		t.Errorf("deadline error: %d cascades", len(fs))
	}
}

func TestRetryStormToleratesClockGranularity(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "web", "GET /x", model.KindServer, 0, 1000)}
	for i := 0; i < 3; i++ {
		st := 10 + float64(i)*200.2
		spans = append(spans, httpCall(byte(10+i), 1, "web", st, st+200.5, "stock/v1/reserve", 503))
	}
	for name, v := range realClocks(spans, "web", 2*time.Millisecond) {
		got := NewRetryStorm().Detect(NewTrace(v), nil)
		if len(got) != 1 || len(got[0].Evidence.(RetryStormEvidence).Attempts) != 3 {
			t.Errorf("%s: %d findings", name, len(got))
		}
	}
}

// A failed attempt that a retry recovered is told by retry_storm; the
// error_origin every trace with a failed span gets is only info beside it.
func TestOneFindingPerRecoveredAttempt(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "cart", "GET /cart", model.KindServer, 0, 400),
		p1Span(2, 1, "cart", "GET", model.KindClient, 5, 155, model.Attr{Key: "db.system", Value: model.Str("redis")},
			model.Attr{Key: "db.statement", Value: model.Str("GET cart:42")}),
		p1Span(3, 1, "cart", "GET", model.KindClient, 160, 310, model.Attr{Key: "db.system", Value: model.Str("redis")},
			model.Attr{Key: "db.statement", Value: model.Str("GET cart:42")}),
		p1Span(4, 1, "cart", "GET", model.KindClient, 315, 320, model.Attr{Key: "db.system", Value: model.Str("redis")},
			model.Attr{Key: "db.statement", Value: model.Str("GET cart:42")}),
	}
	spans[1].StatusCode, spans[1].StatusMessage = model.StatusError, "READONLY You can't write against a read only replica"
	spans[2].StatusCode, spans[2].StatusMessage = model.StatusError, "READONLY You can't write against a read only replica"
	res := Analyze(spans, Options{})
	origins := ofKind(res.Findings, "error_origin")
	if len(ofKind(res.Findings, "retry_storm")) != 1 || len(origins) != 1 || origins[0].Severity != SeverityInfo {
		t.Errorf("findings %v", kindsOf(res.Findings))
	}
	if why := strings.Join(res.Why, "\n"); !strings.Contains(why, "Cause: ") || !strings.Contains(why, "retr") {
		t.Errorf("the why chain must name the retries:\n%s", why)
	}
}

func TestRepeatedIdenticalFindingsMerge(t *testing.T) {
	fs := mergeDuplicates([]Finding{
		{Kind: "swallowed_error", Severity: SeverityWarning, Title: "205 ms idle", SpanIDs: []string{"a"}, ImpactMS: 3},
		{Kind: "swallowed_error", Severity: SeverityInfo, Title: "205 ms idle", SpanIDs: []string{"b"}, ImpactMS: 5},
		{Kind: "swallowed_error", Title: "90 ms idle", SpanIDs: []string{"c"}},
	})
	// The costliest speaks for the group, at the highest severity of any.
	if len(fs) != 2 || fs[0].Title != "205 ms idle (2 times in this trace)" || len(fs[0].SpanIDs) != 2 || fs[0].ImpactMS != 5 ||
		fs[0].Severity != SeverityWarning || fs[0].SpanIDs[0] != "b" {
		t.Errorf("%+v", fs)
	}
}

// A worker that idles the same way in each of 300 deliveries has one
// problem: one idle_gap finding with a count and capped examples.
func TestRepeatedIdleGapsAreOneFinding(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "worker", "poll", model.KindServer, 0, 100_000)}
	for i := 0; i < 300; i++ {
		st := float64(i) * 300
		p := p1Span(0, 1, "worker", "process", model.KindConsumer, st, st+250+float64(i%7))
		p.SpanID = model.SpanID{0, 0, 0, 0, 0, 2, byte(i >> 8), byte(i)}
		c := p1Span(0, 0, "worker", "parse", model.KindInternal, st+1, st+20)
		c.SpanID, c.ParentSpanID = model.SpanID{0, 0, 0, 0, 0, 3, byte(i >> 8), byte(i)}, p.SpanID
		spans = append(spans, p, c)
	}
	res := Analyze(spans, Options{})
	gaps := ofKind(res.Findings, "idle_gap")
	if len(gaps) != 1 || !strings.HasSuffix(gaps[0].Title, "(300 times in this trace)") || len(gaps[0].SpanIDs) > maxMergedSpanIDs {
		t.Fatalf("%d idle_gap findings; first %+v", len(gaps), gaps)
	}
	// The costliest occurrence (256 ms process span) speaks for the group.
	if ev := gaps[0].Evidence.(IdleGapEvidence); ev.Span.DurationMS != 256 {
		t.Errorf("kept the %v ms occurrence", ev.Span.DurationMS)
	}
}

// A failed call retried successfully right after it is a retry policy at
// work, not a swallowed error, also when ms rounding makes the retry
// appear to start before the failure "ended".
func TestSwallowedErrorRecognisesRetriesOnRealClocks(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "cart", "GET /cart", model.KindServer, 0, 300, model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
		httpCall(2, 1, "cart", 10, 110.4, "pricing/v1/prices", 503),
		httpCall(3, 1, "cart", 110.1, 200, "pricing/v1/prices", 200),
	}
	for name, v := range realClocks(spans, "cart", 3*time.Millisecond) {
		if got := NewSwallowedError().Detect(NewTrace(v), nil); len(got) != 0 {
			t.Errorf("%s: recovered retry reported: %s", name, got[0].Title)
		}
	}
}

func TestCacheMissOnRealClocks(t *testing.T) {
	redis := func(id byte, start, end float64, stmt string, attrs ...model.Attr) model.Span {
		return p1Span(id, 1, "product", strings.Fields(stmt)[0], model.KindClient, start, end,
			append(attrs, model.Attr{Key: "db.system", Value: model.Str("redis")}, model.Attr{Key: "db.statement", Value: model.Str(stmt)})...)
	}
	spans := []model.Span{
		p1Span(1, 0, "product", "GET /products/{id}", model.KindServer, 0, 130),
		redis(2, 1, 2.3, "GET product:42"),
		p1Span(3, 1, "product", "SELECT products", model.KindClient, 2.1, 110, model.Attr{Key: "db.system", Value: model.Str("postgresql")},
			model.Attr{Key: "db.statement", Value: model.Str("SELECT * FROM products WHERE id = 42")}),
		redis(4, 109.6, 111, "SET product:42 {...}"),
	}
	for name, v := range realClocks(spans, "product", 3*time.Millisecond) {
		if got := NewCacheMiss().Detect(NewTrace(v), nil); len(got) != 1 {
			t.Errorf("%s: %d cache_miss findings", name, len(got))
		}
	}
}

// The callee that started a new root runs on another host; its clock may
// be off. The hop is still one finding, with the detached root attached.
func TestBrokenPropagationToleratesHostSkew(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "checkout", "POST /checkout", model.KindServer, 0, 320),
		p1Span(2, 1, "checkout", "POST", model.KindClient, 10, 300,
			model.Attr{Key: "http.request.method", Value: model.Str("POST")}, model.Attr{Key: "server.address", Value: model.Str("inventory")},
			model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
		p1Span(3, 0, "inventory", "POST /reserve", model.KindServer, 12, 298),
	}
	for name, v := range realClocks(spans, "inventory", 8*time.Millisecond) {
		got := NewBrokenPropagation().Detect(NewTrace(v), nil)
		if len(got) != 1 || got[0].Evidence.(BrokenPropagationEvidence).Span == nil {
			t.Errorf("%s: %d findings for one lost hop", name, len(got))
		}
	}
}

// hotrodShaped is a dispatch request shaped like Jaeger's HotROD demo:
// instrumentation names every peer by IP, the frontend calls customer,
// then driver with the customer's location, then route for each driver
// (three at a time), and one redis lookup fails with a Go error and is
// retried.
func hotrodShaped() []model.Span {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	httpGet := func(id, parent byte, svc string, start, end float64, url string) model.Span {
		return p1Span(id, parent, svc, "HTTP GET", model.KindClient, start, end, str("http.request.method", "GET"),
			str("server.address", "127.0.0.1"), str("url.full", url), model.Attr{Key: "http.response.status_code", Value: model.Int(200)})
	}
	spans := []model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, 790, str("http.route", "/dispatch")),
		httpGet(2, 1, "frontend", 1, 300, "http://127.0.0.1:8081/customer?customer=123"),
		p1Span(3, 2, "customer", "GET /customer", model.KindServer, 2, 299, str("http.route", "/customer")),
		p1Span(4, 3, "customer", "SQL SELECT", model.KindClient, 3, 298, str("db.system", "mysql"),
			str("db.statement", "SELECT * FROM customer WHERE customer_id=123")),
		p1Span(5, 1, "frontend", "driver.DriverService/FindNearest", model.KindClient, 300.4, 520, str("rpc.system", "grpc"),
			str("rpc.method", "driver.DriverService/FindNearest"), str("server.address", "127.0.0.1")),
		p1Span(6, 5, "driver", "driver.DriverService/FindNearest", model.KindServer, 301, 519),
		p1Span(7, 6, "driver", "FindDriverIDs", model.KindClient, 302, 322, str("peer.service", "redis")),
	}
	for i := 0; i < 10; i++ {
		st := 322.3 + float64(i)*19.6
		s := p1Span(byte(10+i), 6, "driver", "GetDriver", model.KindClient, st, st+19.4, str("peer.service", "redis"))
		if i == 3 {
			s.StatusCode = model.StatusError
			s.Events = []model.Event{{Name: "exception", Attrs: model.Attrs{
				str("exception.type", "*errors.errorString"), str("exception.message", "redis timeout")}}}
		}
		spans = append(spans, s)
	}
	for i := 0; i < 10; i++ {
		st := 521 + float64(i/3)*66.5
		spans = append(spans,
			httpGet(byte(30+i), 1, "frontend", st, st+65.2, "http://127.0.0.1:8083/route?pickup=1,2&dropoff=3,4"),
			p1Span(byte(50+i), byte(30+i), "route", "GET /route", model.KindServer, st+0.6, st+64.9, str("http.route", "/route")))
	}
	return spans
}

func TestHotRODShapedTraceNamesCauses(t *testing.T) {
	for name, spans := range realClocks(hotrodShaped(), "route", 2*time.Millisecond) {
		t.Run(name, func(t *testing.T) {
			res := Analyze(spans, Options{})
			for _, f := range res.Findings {
				switch {
				case f.Kind == "partial_failure" || f.Kind == "timeout_cascade":
					t.Errorf("%s on an ordinary request: %s", f.Kind, f.Title)
				case strings.Contains(f.Title+f.Culprit.Service, "127.0.0.1"):
					t.Errorf("%s names a peer by IP: %s", f.Kind, f.Title)
				case f.Kind == "fan_out" && f.ImpactMS < 10:
					t.Errorf("fan_out saving %.1f ms reported", f.ImpactMS)
				case f.Kind == "sequential_calls" && f.Severity != SeverityInfo:
					t.Errorf("data-dependent chain reported as %s: %s", f.Severity, f.Title)
				}
			}
			eo := ofKind(res.Findings, "error_origin")
			if len(eo) != 1 || eo[0].Culprit.Service != "redis" || !strings.Contains(eo[0].Fix, `"redis timeout"`) ||
				strings.Contains(eo[0].Fix+eo[0].Title, "errorString") {
				t.Errorf("error_origin %+v", eo)
			}
			for _, f := range ofKind(res.Findings, "fan_out") {
				if ev := f.Evidence.(FanOutEvidence); ev.Target == "route" && f.Culprit.Service != "frontend" {
					t.Errorf("route fan-out blames %s", f.Culprit.Service)
				}
			}
			if last := res.Why[len(res.Why)-1]; !strings.HasPrefix(last, "Culprit: ") {
				t.Errorf("why chain ends with %q", last)
			}
		})
	}
}

// A batch job that runs one handler per item repeats the handler's N+1 in
// every item: one problem, one n_plus_one_query finding with a count.
func TestBatchOfHandlersIsOneNPlusOne(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "billing", "nightly run", model.KindServer, 0, 10_000)}
	id := uint16(1)
	next := func() model.SpanID { id++; return model.SpanID{0, 0, 0, 0, 0, 4, byte(id >> 8), byte(id)} }
	for item := 0; item < 8; item++ {
		h := p1Span(0, 0, "billing", "InvoiceJob.handle", model.KindInternal, float64(item)*1000, float64(item)*1000+600)
		h.SpanID, h.ParentSpanID = next(), spans[0].SpanID
		spans = append(spans, h)
		for q := 0; q < 6+item; q++ {
			st := float64(item)*1000 + 10 + float64(q)*20
			s := p1Span(0, 0, "billing", "SELECT", model.KindClient, st, st+18,
				model.Attr{Key: "db.system", Value: model.Str("postgresql")},
				model.Attr{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT * FROM lines WHERE invoice_id = %d", 100*item+q))})
			s.SpanID, s.ParentSpanID = next(), h.SpanID
			spans = append(spans, s)
		}
	}
	fs := ofKind(Analyze(spans, Options{}).Findings, "n_plus_one_query")
	if len(fs) != 1 || !strings.HasSuffix(fs[0].Title, "(8 times in this trace)") || fs[0].Evidence.(NPlusOneEvidence).Count != 13 {
		t.Fatalf("%d findings: %+v", len(fs), fs)
	}
}

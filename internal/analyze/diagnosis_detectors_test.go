package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// mk builds spans tersely: times in ms.
func mk(id, parent byte, svc, name string, kind model.SpanKind, start, end float64, attrs ...model.Attr) model.Span {
	s := model.Span{TraceID: model.TraceID{7}, SpanID: model.SpanID{id}, Service: svc, Name: name, Kind: kind,
		StartUnixNano: 1e18 + uint64(start*1e6), EndUnixNano: 1e18 + uint64(end*1e6), Attrs: attrs}
	if parent != 0 {
		s.ParentSpanID = model.SpanID{parent}
	}
	return s
}

func str(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }

func TestConsumerLagViaLink(t *testing.T) {
	c := mk(3, 0, "worker", "orders process", model.KindConsumer, 2500, 2600, str("messaging.system", "kafka"))
	c.Links = []model.Link{{TraceID: model.TraceID{7}, SpanID: model.SpanID{2}}}
	spans := []model.Span{
		mk(1, 0, "api", "POST /orders", model.KindServer, 0, 100),
		mk(2, 1, "api", "orders publish", model.KindProducer, 10, 20, str("messaging.system", "kafka"), str("messaging.destination.name", "orders")),
		c,
	}
	tr := NewTrace(spans)
	fs := NewConsumerLag().Detect(tr, &Env{})
	if len(fs) != 1 {
		t.Fatalf("findings %d", len(fs))
	}
	ev := fs[0].Evidence.(ConsumerLagEvidence)
	if ev.Via != "link" || ev.LagMS != 2480 || ev.Destination != "orders" {
		t.Errorf("evidence %+v", ev)
	}
	// A consumer linked to a producer of the trace is a root by design.
	if fs := NewBrokenPropagation().Detect(tr, &Env{}); len(fs) != 0 {
		t.Errorf("linked consumer reported as broken propagation: %s", fs[0].Title)
	}
}

func TestSensitiveValues(t *testing.T) {
	for _, tc := range []struct{ key, val, typ, masked string }{
		{"user.email", "Contact: John.Smith+shop@mail.example.org", "email", "J***@***.org"},
		{"payment.card", "5555-5555-5555-4444", "card_number", "************4444"},
		{"amex", "371449635398431", "card_number", "***********8431"},
		{"http.request.header.authorization", "Bearer abcdefghijklmnopqrstuvwxyz012345", "bearer_token", "Bearer abcd…(28 chars hidden)"},
		{"db.connection_string", "postgres://app:s3cr3t@pg-main:5432/shop", "credentials_in_url", "postgres://app:****@pg-main:5432/shop"},
		{"config.db_password", "hunter2hunter2", "password", "hunt…(10 chars hidden)"},
		// Not sensitive: a card that fails Luhn, a 13-digit unix-ms
		// timestamp, an order id, a git sha, a masked card, an at-sign
		// without a domain, an empty-ish token.
		{"payment.card", "4111 1111 1111 1112", "", ""},
		{"ts", "1763733600123", "", ""},
		{"order.id", "ord_4111111111111111x", "", ""},
		{"vcs.sha", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "", ""},
		{"payment.card", "**** **** **** 1111", "", ""},
		{"mention", "ping @oncall please", "", ""},
		// A URL whose password the instrumentation masked itself
		// (OpenTelemetry JS amqplib's messaging.url) or left empty.
		{"messaging.url", "amqp://guest:***@127.0.0.1:5672", "", ""},
		{"db.connection_string", "postgres://app:@pg-main:5432/shop", "", ""},
		{"db.connection_string", "redis://default:[REDACTED]@cache:6379", "", ""},
		{"http.request.header.authorization", "[REDACTED]", "", ""},
		{"http.request.header.proxy-authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "bearer_token", "Basi…(26 chars hidden)"},
		// Spring Security's access-decision spans (Micrometer tracing)
		// name the check, not a credential.
		{"spring.security.authorization.decision.details", "AuthorizationDecision [granted=true]", "", ""},
		{"spring.security.authorization.decision", "true", "", ""},
		// A template's reference names the secret without holding it:
		// Robot Framework records a keyword's arguments as written.
		{"rf.keyword.args", "${headers}, Authorization=Bearer ${AUTH_TOKEN}", "", ""},
		{"http.request.header.authorization", "Bearer {{access_token}}", "", ""},
		{"config.db_password", "${DB_PASSWORD}", "", ""},
		{"config.api_key", "$API_KEY", "", ""},
		{"rf.keyword.args", "Authorization=Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl, &{extra}", "bearer_token", "Bearer eyJh…(33 chars hidden)"},
	} {
		typ, masked := sensitive(secretKeyKind(tc.key), tc.val)
		if typ != tc.typ || masked != tc.masked {
			t.Errorf("%s=%q: got %q %q, want %q %q", tc.key, tc.val, typ, masked, tc.typ, tc.masked)
		}
	}
}

func TestNameShape(t *testing.T) {
	for name, want := range map[string]string{
		"GET /api/users/48213":                               "GET /api/users/{id}",
		"process order 5fea7756-0ea4-451a-a703-a558b933e274": "process order {id}",
		"send mail to jane@example.com":                      "send mail to {id}",
		"GET /api/v2/orders/{id}":                            "",
		"HTTP/1.1 keep-alive":                                "",
		"retry attempt 2":                                    "",
		"cart.v1.CartService/GetCart":                        "",
	} {
		got, ok := nameShape(name)
		if (want == "") == ok || (ok && got != want) {
			t.Errorf("%q: got %q %v, want %q", name, got, ok, want)
		}
	}
}

func TestPartialFailureNeedsConcurrency(t *testing.T) {
	fail := func(s model.Span) model.Span { s.StatusCode = model.StatusError; return s }
	spans := []model.Span{
		fail(mk(1, 0, "bff", "GET /home", model.KindServer, 0, 100)),
		mk(2, 1, "bff", "GET", model.KindClient, 1, 50, str("http.request.method", "GET"), str("server.address", "a")),
		fail(mk(3, 1, "bff", "GET", model.KindClient, 1.5, 90, str("http.request.method", "GET"), str("server.address", "b"))),
		fail(mk(4, 1, "bff", "GET", model.KindClient, 2, 95, str("http.request.method", "GET"), str("server.address", "c"))),
	}
	// Two of three failed: an outage of the parent's dependencies, not a
	// partial failure (MaxFailed 1).
	if fs := NewPartialFailure().Detect(NewTrace(spans), &Env{}); len(fs) != 0 {
		t.Errorf("two failed branches reported: %s", fs[0].Title)
	}
	d := NewPartialFailure()
	d.MaxFailed = 2
	if fs := d.Detect(NewTrace(spans), &Env{}); len(fs) != 0 {
		t.Errorf("more failed than healthy branches reported")
	}
}

func TestErrorOriginPrefersFailureThatReachedRoot(t *testing.T) {
	fail := func(s model.Span, msg string) model.Span {
		s.StatusCode, s.StatusMessage = model.StatusError, msg
		return s
	}
	spans := []model.Span{
		fail(mk(1, 0, "api", "GET /x", model.KindServer, 0, 100), "boom"),
		// A deep failure that was handled (its parent succeeded)...
		mk(2, 1, "api", "cache", model.KindInternal, 1, 10),
		mk(3, 2, "api", "inner", model.KindInternal, 2, 9),
		fail(mk(4, 3, "api", "deep", model.KindInternal, 3, 8), "handled"),
		// ...and a shallower one that took the request down.
		fail(mk(5, 1, "api", "db", model.KindClient, 20, 90, str("db.system", "postgresql")), "disk full"),
	}
	fs := NewErrorOrigin().Detect(NewTrace(spans), &Env{})
	ev := fs[0].Evidence.(ErrorOriginEvidence)
	if len(fs) != 1 || ev.Origin.Operation != "db" || ev.ExceptionMessage != "disk full" || ev.OtherOrigins != 1 || !ev.RootFailed {
		t.Errorf("evidence %+v", ev)
	}
}

type panicky struct{}

func (panicky) Kind() string                  { return "panicky" }
func (panicky) Detect(*Trace, *Env) []Finding { panic("bad detector") }

func TestAnalyzeSurvivesDetectorPanicAndEmptyInput(t *testing.T) {
	res := Analyze([]model.Span{mk(1, 0, "a", "x", model.KindServer, 0, 1)}, Options{Detectors: []Detector{panicky{}, NewErrorOrigin()}})
	if res.SpanCount != 1 || res.Findings == nil || len(res.Findings) != 0 {
		t.Errorf("result %+v", res)
	}
	res = Analyze(nil, Options{})
	if res.SpanCount != 0 || res.Findings == nil || res.CriticalPath == nil || res.Why == nil {
		t.Errorf("empty trace result %+v", res)
	}
}

func TestAnalyzeOrdersFindings(t *testing.T) {
	res := Analyze(loadSpans(t, "../../testdata/traces/swallowed_error/positive-product-page-timeouts.json"), Options{})
	for i := 1; i < len(res.Findings); i++ {
		a, b := res.Findings[i-1], res.Findings[i]
		if a.Severity.Rank() < b.Severity.Rank() || (a.Severity == b.Severity && a.ImpactMS < b.ImpactMS) {
			t.Errorf("findings out of order: %s/%s/%.0f before %s/%s/%.0f", a.Kind, a.Severity, a.ImpactMS, b.Kind, b.Severity, b.ImpactMS)
		}
		if b.TraceID != res.TraceID {
			t.Errorf("trace id not set on %s", b.Kind)
		}
	}
	if !strings.HasPrefix(res.Why[0], "web-bff GET /products/{slug} took") {
		t.Errorf("why %v", res.Why)
	}
}

func TestInstrumentationGapSkipsDBNames(t *testing.T) {
	spans := []model.Span{
		mk(1, 0, "api", "GET /x", model.KindServer, 0, 10),
		mk(2, 1, "api", "SELECT shop.orders_2024", model.KindClient, 1, 9, str("db.system", "postgresql")),
	}
	if fs := NewInstrumentationGap().Detect(NewTrace(spans), &Env{}); len(fs) != 0 {
		t.Errorf("db span name reported: %s", fs[0].Title)
	}
}

// A test app's error page is routed at /500 and its server span is named
// by that route: the digits are the template, not an id. The same name
// with a different route (GET /orders/{id} served at /orders/5003) is.
func TestSpanNamedByItsRouteHoldsNoID(t *testing.T) {
	for _, c := range []struct {
		name, route string
		want        int
	}{{"GET /500", "/500", 0}, {"GET /orders/5003", "/orders/{id}", 1}} {
		spans := []model.Span{mk(1, 0, "api", c.name, model.KindServer, 0, 10, str("http.request.method", "GET"),
			str("http.route", c.route), str("url.path", "/500"))}
		if fs := NewInstrumentationGap().Detect(NewTrace(spans), &Env{}); len(fs) != c.want {
			t.Errorf("%s (route %s): %d findings, want %d", c.name, c.route, len(fs), c.want)
		}
	}
}

// rabbitSpan is a span as OpenTelemetry JS's amqplib instrumentation
// records it for a message sent straight to a queue: the default exchange
// "" as destination, the queue as routing key, the password masked in the
// broker's URL.
func rabbitSpan(s model.Span, exchange, queue, msgID string) model.Span {
	s.Attrs = append(s.Attrs, str("messaging.system", "rabbitmq"), str("messaging.destination", exchange),
		str("messaging.rabbitmq.routing_key", queue), str("messaging.url", "amqp://guest:***@mq:5672"))
	if msgID != "" {
		s.Attrs = append(s.Attrs, str("messaging.message_id", msgID))
	}
	return s
}

func failed(s model.Span, msg string) model.Span {
	s.StatusCode, s.StatusMessage = model.StatusError, msg
	return s
}

// A burst to a queue of the default exchange: the lag is told on the
// queue (the routing key), not on "the queue".
func TestConsumerLagNamesTheQueueOfTheDefaultExchange(t *testing.T) {
	spans := []model.Span{
		mk(1, 0, "shop", "GET /burst", model.KindServer, 0, 5),
		rabbitSpan(mk(2, 1, "shop", "publish <default>", model.KindProducer, 1, 1.2), "", "lag.slow", "m1"),
		rabbitSpan(mk(3, 2, "worker", "lag.slow process", model.KindConsumer, 2900, 3100), "", "lag.slow", "m1"),
	}
	fs := NewConsumerLag().Detect(NewTrace(spans), &Env{})
	if len(fs) != 1 {
		t.Fatalf("findings %d, want 1", len(fs))
	}
	if ev := fs[0].Evidence.(ConsumerLagEvidence); ev.Destination != "lag.slow" || !strings.Contains(fs[0].Title, "in lag.slow") {
		t.Errorf("destination %q, title %q: want lag.slow", ev.Destination, fs[0].Title)
	}
}

// A message nacked with requeue until the consumer gives up and the broker
// dead-letters it: the dead-letter queue's consumer shows where it went
// (its queue only in the span name, the DLX exchange as destination). That
// delivery is no attempt: its success is no recovery, with or without a
// message id to group the deliveries by.
func TestPoisonMessageDeadLetteredByTheBroker(t *testing.T) {
	for _, msgID := range []string{"m7", ""} {
		spans := []model.Span{
			mk(1, 0, "shop", "GET /poison", model.KindServer, 0, 5),
			rabbitSpan(mk(2, 1, "shop", "publish <default>", model.KindProducer, 1, 1.2), "", "payments", msgID),
		}
		for i := byte(0); i < 4; i++ {
			at := 10 + 60*float64(i)
			msg := "nack called on message with requeue"
			if i == 3 {
				msg = "nack called on message without requeue"
			}
			spans = append(spans, failed(rabbitSpan(mk(3+i, 2, "worker", "payments process", model.KindConsumer, at, at+50),
				"", "payments", msgID), msg))
		}
		spans = append(spans, rabbitSpan(mk(9, 2, "worker", "payments.dlq process", model.KindConsumer, 260, 270),
			"payments.dlx", "payments", msgID))
		fs := NewPoisonMessage().Detect(NewTrace(spans), &Env{})
		if len(fs) != 1 {
			t.Fatalf("id %q: findings %d, want 1", msgID, len(fs))
		}
		ev := fs[0].Evidence.(PoisonMessageEvidence)
		if ev.FailedAttempts != 4 || len(ev.Attempts) != 4 || ev.Recovered || ev.Destination != "payments" ||
			ev.DeadLetter == nil || ev.DeadLetter.Destination != "payments.dlq" || fs[0].Severity != SeverityCritical {
			t.Errorf("id %q: %s %+v", msgID, fs[0].Severity, ev)
		}
	}
}

// Deliveries that failed because a call under them failed, then a
// redelivery that succeeded: a transient failure of that dependency
// retried through the broker, not a poisoned message. The culprit is
// the dependency, and its error_origin only points at this finding.
func TestPoisonMessageRecoveredOnRedeliveryBlamesTheFailingCall(t *testing.T) {
	code := func(c int64) model.Attr { return model.Attr{Key: "http.response.status_code", Value: model.Int(c)} }
	spans := []model.Span{
		mk(1, 0, "shop", "GET /refund", model.KindServer, 0, 5),
		rabbitSpan(mk(2, 1, "shop", "publish <default>", model.KindProducer, 1, 1.2), "", "refund", "m9"),
	}
	for i := byte(0); i < 3; i++ {
		at := 10 + 150*float64(i)
		c := rabbitSpan(mk(10+3*i, 2, "worker", "refund process", model.KindConsumer, at, at+130), "", "refund", "m9")
		call := mk(11+3*i, 10+3*i, "worker", "GET", model.KindClient, at+1, at+25, str("http.request.method", "GET"),
			str("server.address", "pricing"), code(503))
		srv := mk(12+3*i, 11+3*i, "pricing", "GET /flaky", model.KindServer, at+2, at+24, str("http.request.method", "GET"),
			str("http.route", "/flaky"), code(503))
		if i < 2 {
			c, call, srv = failed(c, "nack called on message with requeue"), failed(call, ""), failed(srv, "")
		} else {
			call.Attrs[len(call.Attrs)-1], srv.Attrs[len(srv.Attrs)-1] = code(200), code(200)
		}
		spans = append(spans, c, call, srv)
	}
	res := Analyze(spans, Options{})
	var poison, origin *Finding
	for i := range res.Findings {
		switch f := &res.Findings[i]; f.Kind {
		case "poison_message":
			poison = f
		case "error_origin":
			origin = f
		}
	}
	if poison == nil {
		t.Fatalf("no poison_message in %+v", res.Findings)
	}
	ev := poison.Evidence.(PoisonMessageEvidence)
	if !ev.Recovered || ev.FailingCall == nil || poison.Severity != SeverityWarning ||
		!strings.Contains(poison.Title, "before a redelivery succeeded") {
		t.Errorf("%s %q %+v", poison.Severity, poison.Title, ev)
	}
	if c := poison.Culprit; c == nil || c.Service != "pricing" || c.Operation != "GET /flaky" {
		t.Errorf("culprit %+v, want pricing GET /flaky", poison.Culprit)
	}
	if origin != nil && origin.Severity != SeverityInfo {
		t.Errorf("error_origin %s %q told apart from the poison_message", origin.Severity, origin.Title)
	}
}

// The fetch a miss fell back to is the query that took the time, not the
// pool's connect span that node-postgres's instrumentation opens first.
func TestCacheMissNamesTheCostliestFetch(t *testing.T) {
	pg := func(s model.Span, stmt string) model.Span {
		s.Attrs = append(s.Attrs, str("db.system.name", "postgresql"))
		if stmt != "" {
			s.Attrs = append(s.Attrs, str("db.query.text", stmt))
		}
		return s
	}
	spans := []model.Span{
		mk(1, 0, "shop", "GET /catalog", model.KindServer, 0, 320),
		mk(2, 1, "shop", "request handler", model.KindInternal, 1, 319),
		mk(3, 2, "shop", "get", model.KindClient, 2, 4, str("db.system.name", "redis"), str("db.query.text", "get catalog:all")),
		pg(mk(4, 2, "shop", "pg.query:SELECT postgres", model.KindClient, 5, 308), "SELECT pg_sleep(0.3), count(*) FROM orders"),
		pg(mk(5, 2, "shop", "pg-pool.connect", model.KindClient, 5, 5.2), ""),
		mk(6, 2, "shop", "set", model.KindClient, 309, 310, str("db.system.name", "redis"),
			str("db.query.text", "set catalog:all [3 other arguments]")),
	}
	fs := NewCacheMiss().Detect(NewTrace(spans), &Env{})
	if len(fs) != 1 || !strings.Contains(fs[0].Title, "SELECT pg_sleep") {
		t.Fatalf("findings %+v, want one cache_miss naming the SELECT", fs)
	}
}

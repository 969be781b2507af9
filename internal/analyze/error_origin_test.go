package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// A Spring-style request: the failed SERVER span's controller span sets no
// error status (most instrumentations never do on INTERNAL spans), and the
// call under it answered 503. The server did not fail on its own: the
// failure came through the controller from the call, and its callee is
// where it started.
func TestErrorOriginPassesThroughSilentInternalSpans(t *testing.T) {
	status := func(code int64) model.Attr {
		return model.Attr{Key: "http.response.status_code", Value: model.Int(code)}
	}
	for _, callee := range []bool{true, false} {
		spans := []model.Span{
			p1Span(1, 0, "orders", "POST /orders", model.KindServer, 0, 90, status(500)),
			p1Span(2, 1, "orders", "OrderController.create", model.KindInternal, 1, 88),
			p1Span(3, 2, "orders", "load cart", model.KindInternal, 2, 10),
			p1Span(4, 2, "orders", "POST", model.KindClient, 12, 80, status(503),
				str("url.full", "http://payments:8080/v1/charges")),
		}
		spans[0].StatusCode = model.StatusError
		spans[3].StatusCode = model.StatusError
		want := spans[3].SpanID
		if callee {
			s := p1Span(5, 4, "payments", "POST /v1/charges", model.KindServer, 13, 79, status(503))
			s.StatusCode, s.StatusMessage = model.StatusError, "ledger unavailable"
			spans = append(spans, s)
			want = s.SpanID
		}
		fs := NewErrorOrigin().Detect(NewTrace(spans), &Env{})
		if len(fs) != 1 {
			t.Fatalf("callee %v: %d findings", callee, len(fs))
		}
		ev := fs[0].Evidence.(ErrorOriginEvidence)
		if ev.Origin.SpanID != want.String() || !ev.RootFailed || fs[0].Severity != SeverityCritical {
			t.Errorf("callee %v: origin %s %s (root failed %v, %s), want %s", callee, ev.Origin.Service, ev.Origin.Operation,
				ev.RootFailed, fs[0].Severity, want)
		}
		if len(ev.Chain) < 3 || ev.Chain[1].Failed || ev.Chain[1].Operation != "OrderController.create" {
			t.Errorf("callee %v: chain %+v does not pass through the controller", callee, ev.Chain)
		}
	}
}

// HotROD's driver service: a Redis GetDriver call timed out, the retry
// right after it answered, and /dispatch succeeded. The failure is still
// reported (every trace with an error span gets its origin), but as the
// recovered failure it is, below the severity that pages anybody.
func TestErrorOriginRecoveredByRetry(t *testing.T) {
	build := func(retryFails bool) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "frontend", "/dispatch", model.KindServer, 0, 400),
			p1Span(2, 1, "driver", "/driver.DriverService/FindNearest", model.KindServer, 5, 300),
			p1Span(3, 2, "redis", "GetDriver", model.KindClient, 10, 35),
			p1Span(4, 2, "redis", "GetDriver", model.KindClient, 35.2, 85),
			p1Span(5, 2, "redis", "GetDriver", model.KindClient, 85.2, 110),
		}
		spans[3].StatusCode, spans[3].StatusMessage = model.StatusError, "redis timeout"
		if retryFails {
			spans[4].StatusCode, spans[4].StatusMessage = model.StatusError, "redis timeout"
		}
		return spans
	}
	fs := NewErrorOrigin().Detect(NewTrace(build(false)), &Env{})
	if len(fs) != 1 {
		t.Fatalf("%d findings, want the recovered failure reported", len(fs))
	}
	ev := fs[0].Evidence.(ErrorOriginEvidence)
	if fs[0].Severity != SeverityInfo || ev.RecoveredBy == nil || ev.RecoveredBy.SpanID != build(false)[4].SpanID.String() ||
		!strings.Contains(fs[0].Title, "recovered by a retry") || !strings.Contains(fs[0].Fix, "redis timeout") {
		t.Errorf("recovered failure: %s %q (fix %q, recovered by %+v)", fs[0].Severity, fs[0].Title, fs[0].Fix, ev.RecoveredBy)
	}
	// The last attempt failing too is no recovery.
	fs = NewErrorOrigin().Detect(NewTrace(build(true)), &Env{})
	if len(fs) != 1 || fs[0].Severity != SeverityWarning || fs[0].Evidence.(ErrorOriginEvidence).RecoveredBy != nil {
		t.Errorf("unrecovered failure: %+v", fs)
	}
}

// The OTel demo's checkout through Envoy: the proxy's route timeout fired
// after 15 s and it answered 504 (response flag UT), the only failed span;
// the frontend it waited on ran the whole 15 s with status OK and left no
// spans below. The locus is the frontend, not the proxy that gave up. The
// load generator's root span is a client that saw the 504 and answers
// nobody, so nothing was swallowed.
func TestErrorOriginTimeoutNamesWhatItWaitedOn(t *testing.T) {
	status := func(code int64) model.Attr { return model.Attr{Key: "http.status_code", Value: model.Int(code)} }
	spans := []model.Span{
		p1Span(1, 0, "load-generator", "user_checkout_multi", model.KindClient, 0, 15080),
		p1Span(2, 1, "frontend-proxy", "POST", model.KindServer, 79, 15080, status(504),
			str("http.url", "http://frontend-proxy:8080/api/checkout"), str("response_flags", "UT")),
		p1Span(3, 2, "frontend-proxy", "router frontend egress", model.KindClient, 79.1, 15080),
		p1Span(4, 3, "frontend", "POST", model.KindServer, 79.3, 15080),
	}
	spans[1].StatusCode = model.StatusError
	res := Analyze(spans, Options{})
	var origin *Finding
	for i, f := range res.Findings {
		switch f.Kind {
		case "swallowed_error":
			t.Errorf("a load generator's root call reported as swallowing: %q", f.Title)
		case "error_origin":
			origin = &res.Findings[i]
		}
	}
	if origin == nil {
		t.Fatalf("no error_origin among %v", kindsOf(res.Findings))
	}
	ev := origin.Evidence.(ErrorOriginEvidence)
	if ev.TimedOutWaitingOn == nil || ev.TimedOutWaitingOn.SpanID != spans[3].SpanID.String() ||
		origin.Culprit == nil || origin.Culprit.Service != "frontend" || !strings.Contains(origin.Fix, "Start at frontend POST") {
		t.Errorf("%q: waiting on %+v, culprit %+v, fix %q", origin.Title, ev.TimedOutWaitingOn, origin.Culprit, origin.Fix)
	}
}

// An Istio sidecar's inbound span, the whole trace of a request the mesh
// refused: Envoy answered 503 with response flag UF because it could not
// connect to the application behind it (cluster inbound|8080||). The
// finding names what Envoy could not reach, not "fix or guard HTTP 503" in
// the proxy, and does not report the span as caused by itself. The same
// 503 without flags is the application's own answer.
func TestErrorOriginEnvoyAnsweredForItsUpstream(t *testing.T) {
	for _, flags := range []string{"UF", "-"} {
		s := p1Span(1, 0, "hellow.default", "hello-service.default.svc.cluster.local:8080/*", model.KindServer, 0, 0.7,
			str("http.status_code", "503"), str("component", "proxy"), str("response_flags", flags),
			str("upstream_cluster", "inbound|8080||"))
		s.StatusCode = model.StatusError
		res := Analyze([]model.Span{s}, Options{})
		fs := ofKind(res.Findings, "error_origin")
		if len(fs) != 1 {
			t.Fatalf("flags %s: %d error_origin findings", flags, len(fs))
		}
		f := fs[0]
		if strings.Contains(f.Title, "caused by") {
			t.Errorf("flags %s: a lone failed span is said to be caused by itself: %s", flags, f.Title)
		}
		if !strings.HasPrefix(f.Title, "HTTP 503 ") || strings.Count(f.Title, "503") != 1 {
			t.Errorf("flags %s: title %q does not give the answer once", flags, f.Title)
		}
		envoy := strings.Contains(f.Title, "upstream connection failure (UF)") && strings.Contains(f.Fix, "inbound|8080||") &&
			f.Culprit != nil && strings.Contains(f.Culprit.Reason, "Envoy answered for inbound|8080||")
		if envoy != (flags == "UF") {
			t.Errorf("flags %s: Envoy's answer named %v, want %v: %s / %s", flags, envoy, flags == "UF", f.Title, f.Fix)
		}
	}
}

// A gateway that failed on its own (Spring Cloud Gateway, Sleuth's Zipkin
// spans): the title gives its answer and its error once.
func TestErrorOriginRootFailedOnItsOwn(t *testing.T) {
	s := p1Span(1, 0, "gateway", "GET /user/all", model.KindServer, 0, 12, str("http.status_code", "500"))
	s.StatusCode, s.StatusMessage = model.StatusError, "Filter threw Exception"
	fs := NewErrorOrigin().Detect(NewTrace([]model.Span{s}), &Env{})
	if len(fs) != 1 {
		t.Fatalf("%d findings", len(fs))
	}
	if want := "HTTP 500 from gateway GET /user/all: Filter threw Exception"; fs[0].Title != want {
		t.Errorf("title %q, want %q", fs[0].Title, want)
	}
}

// Rust's tracing-opentelemetry records an error! macro as an event named
// by its message with level "ERROR", and fails the span without a status
// message: the origin's error is that event's message.
func TestErrorOriginReadsATracingErrorEvent(t *testing.T) {
	s := p1Span(1, 0, "axum-tracing-test", "g", model.KindInternal, 0, 1.5, str("code.namespace", "axum_tracing"))
	s.StatusCode = model.StatusError
	s.Events = []model.Event{{TimeUnixNano: s.StartUnixNano + 1e6, Name: "upstream refused the connection",
		Attrs: model.Attrs{str("level", "ERROR"), str("target", "axum_tracing")}}}
	fs := NewErrorOrigin().Detect(NewTrace([]model.Span{s}), &Env{})
	if len(fs) != 1 || !strings.Contains(fs[0].Title, "upstream refused the connection") ||
		fs[0].Evidence.(ErrorOriginEvidence).ExceptionMessage != "upstream refused the connection" {
		t.Fatalf("findings %+v", fs)
	}
}

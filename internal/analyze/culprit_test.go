package analyze

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Kinds whose detectors name their culprit themselves, without a rule here.
var selfNamedCulprit = map[string]bool{"lock_contention": true}

func TestCulpritRuleForEveryKind(t *testing.T) {
	for _, k := range Kinds() {
		if culpritRules[k] == nil && !selfNamedCulprit[k] {
			t.Errorf("kind %s has no culprit rule", k)
		}
	}
}

// The culprit is the place to fix, named by the fixture's story: the
// caller's loop for N+1 and fan-out, the innermost failing service of
// nested retries, the slow callee of a timed-out call ...
func TestCulpritsOnFixtures(t *testing.T) {
	covered := map[string]bool{}
	defer func() {
		for k := range culpritRules {
			if !covered[k] {
				t.Errorf("the culprit rule of %s is not tested on a fixture", k)
			}
		}
	}()
	for _, c := range []struct {
		fixture, kind, service, operation string
	}{
		{"broken_propagation/positive-legacy-client-no-header", "broken_propagation", "checkout-service",
			"call to inventory-service POST /v1/reservations"},
		{"broken_propagation/positive-worker-second-root", "broken_propagation", "report-service", "ExportJob.run"},
		{"cache_miss/positive-product-cache-aside", "cache_miss", "product-service", "GET /v1/products/{id}"},
		{"consumer_lag/positive-kafka-45s", "consumer_lag", "fulfillment-service", "consume orders.created"},
		{"error_origin/positive-ml-model-oom", "error_origin", "ml-inference", "model.forward"},
		{"error_origin/positive-order-deadlock-old-semconv", "error_origin", "orders-service", "call to pg-main UPDATE inventory SET reserved"},
		{"fan_out/positive-price-per-sku-sequential", "fan_out", "checkout-api", "POST /api/checkout"},
		{"idle_gap/positive-pool-wait-between-queries", "idle_gap", "order-service", "OrderController.createOrder"},
		{"idle_gap/positive-mysql2-untraced-checkout", "idle_gap", "orders", "request handler"},
		{"instrumentation_gap/positive-pii-and-token", "instrumentation_gap", "payment-service", ""},
		{"n_plus_one_query/positive-orders-then-50-customers", "n_plus_one_query", "order-service", "OrderController.listOrders"},
		{"partial_failure/positive-dashboard-loyalty-down", "partial_failure", "web-bff", "GET /api/dashboard"},
		{"poison_message/positive-kafka-retries-to-dlt", "poison_message", "billing-worker", "consume orders.created"},
		{"retry_storm/positive-nested-3x3", "retry_storm", "payments-service", "POST /v1/charges"},
		{"retry_storm/positive-mysql-deadlock-retry", "retry_storm", "inventory", "request handler"},
		{"retry_storm/positive-inventory-pool-exhaustion", "retry_storm", "inventory-service", "inventory.v1.InventoryService/ReserveStock"},
		{"sequential_calls/positive-dashboard-four-calls", "sequential_calls", "web-bff", "GET /api/dashboard"},
		{"slow_dependency/positive-geocoding-api", "slow_dependency", "maps.example-geo.com", "GET /maps/api/geocode/json"},
		// The service that issues the statement owns it (and its schema).
		{"slow_query/positive-sales-report-postgres", "slow_query", "reporting-api", "SELECT date_trunc("},
		{"swallowed_error/positive-search-personalization-unavailable", "swallowed_error", "search-api", "GET /api/search"},
		{"timeout_cascade/positive-checkout-bank-5s", "timeout_cascade", "bank-gateway", "POST /v2/authorizations"},
		// The worker's call to shipping timed out; shipping spent all of
		// that time waiting for carrier-api, which is where it went.
		{"timeout_cascade/positive-worker-shipping-10s", "timeout_cascade", "carrier-api", "POST /labels"},
		{"timeout_cascade/positive-express-mysql-lock-wait-timeout", "timeout_cascade", "orders", "request handler"},
		{"timeout_cascade/positive-worker-shipping-10s", "error_origin", "carrier-api", "POST /labels"},
		{"timeout_mismatch/positive-inner-timeout-longer", "timeout_mismatch", "orders-service",
			"call to inventory-service POST /api/stock/reserve"},
		{"timeout_mismatch/positive-search-kept-running", "timeout_mismatch", "search-service", "GET /v1/search"},
	} {
		covered[c.kind] = true
		t.Run(c.fixture+"/"+c.kind, func(t *testing.T) {
			res := Analyze(loadSpans(t, filepath.Join("..", "..", "testdata", "traces", c.fixture+".json")), Options{})
			fs := ofKind(res.Findings, c.kind)
			if len(fs) == 0 {
				t.Fatalf("no %s finding; got %v", c.kind, kindsOf(res.Findings))
			}
			got := fs[0].Culprit
			if got == nil {
				t.Fatal("no culprit")
			}
			if got.Service != c.service || !strings.HasPrefix(got.Operation, c.operation) {
				t.Errorf("culprit %q %q, want %q %q (%s)", got.Service, got.Operation, c.service, c.operation, got.Reason)
			}
			if got.SpanID == "" || nodeByHex(NewTrace(loadSpans(t, filepath.Join("..", "..", "testdata", "traces", c.fixture+".json"))), got.SpanID) == nil {
				t.Errorf("culprit span %q is not in the trace", got.SpanID)
			}
		})
	}
}

// Every finding on every positive fixture carries a culprit with a reason.
func TestEveryFindingHasACulprit(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*", "positive-*.json"))
	if len(files) < 30 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		res := Analyze(loadSpans(t, f), Options{})
		for _, x := range res.Findings {
			c := x.Culprit
			if c == nil || c.Service == "" || c.Operation == "" || !strings.HasSuffix(c.Reason, ".") {
				t.Errorf("%s: %s finding without a complete culprit: %+v", filepath.Base(f), x.Kind, c)
			}
		}
	}
}

// lateCalleeSpans: frontend calls route by IP; route's SERVER span starts
// 250 ms into the call. The caller shows the gap, the callee is to blame.
func lateCalleeSpans() []model.Span {
	return []model.Span{
		p1Span(1, 0, "frontend", "GET /dispatch", model.KindServer, 0, 410),
		p1Span(2, 1, "frontend", "HTTP GET", model.KindClient, 5, 405,
			model.Attr{Key: "http.request.method", Value: model.Str("GET")},
			model.Attr{Key: "server.address", Value: model.Str("127.0.0.1")},
			model.Attr{Key: "url.full", Value: model.Str("http://127.0.0.1:8083/route?pickup=1,2")}),
		p1Span(3, 2, "route", "GET /route", model.KindServer, 255, 400, model.Attr{Key: "http.route", Value: model.Str("/route")}),
	}
}

func TestCulpritOfLateCalleeIsTheCallee(t *testing.T) {
	for name, spans := range map[string][]model.Span{
		"exact":          lateCalleeSpans(),
		"js-rounded":     roundToMillis(lateCalleeSpans()),
		"jitter":         jitterMillis(lateCalleeSpans(), 2*time.Millisecond),
		"callee-skewed":  skewService(lateCalleeSpans(), "route", -8*time.Millisecond),
		"callee-skewed+": skewService(lateCalleeSpans(), "route", 8*time.Millisecond),
	} {
		t.Run(name, func(t *testing.T) {
			res := Analyze(spans, Options{})
			gaps := ofKind(res.Findings, "idle_gap")
			if len(gaps) != 1 {
				t.Fatalf("idle_gap findings: %d (%v)", len(gaps), kindsOf(res.Findings))
			}
			c := gaps[0].Culprit
			if c.Service != "route" || c.Operation != "GET /route" || !strings.Contains(c.Reason, "queue in front of route") {
				t.Errorf("culprit %+v", c)
			}
			last := res.Why[len(res.Why)-1]
			if !strings.HasPrefix(last, "Culprit: route GET /route — ") {
				t.Errorf("why chain does not end at the culprit: %q", last)
			}
			if strings.Contains(strings.Join(res.Why, "\n"), "127.0.0.1") {
				t.Errorf("why chain names the callee by IP:\n%s", strings.Join(res.Why, "\n"))
			}
		})
	}
}

// A database call that failed because the caller's pool was exhausted
// never reached the database: the pool owner is to blame.
func TestErrorOriginPoolExhaustionBlamesThePoolOwner(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "inventory", "POST /reserve", model.KindServer, 0, 120,
			model.Attr{Key: "http.response.status_code", Value: model.Int(503)}),
		p1Span(2, 1, "inventory", "UPDATE inventory", model.KindClient, 1, 101,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")},
			model.Attr{Key: "server.address", Value: model.Str("postgres.shop.internal")},
			model.Attr{Key: "db.statement", Value: model.Str("UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'A'")}),
	}
	spans[0].StatusCode, spans[1].StatusCode = model.StatusError, model.StatusError
	spans[1].Events = []model.Event{{Name: "exception", Attrs: model.Attrs{
		{Key: "exception.type", Value: model.Str("PoolExhaustedError")},
		{Key: "exception.message", Value: model.Str("connection pool exhausted: 20/20 connections in use, waited 100ms")},
	}}}
	fs := ofKind(Analyze(spans, Options{}).Findings, "error_origin")
	if len(fs) != 1 || fs[0].Culprit.Service != "inventory" || !strings.Contains(fs[0].Culprit.Reason, "connection pool") {
		t.Fatalf("%+v", fs)
	}
	// A failure of the database itself is the database's.
	spans[1].Events[0].Attrs = model.Attrs{{Key: "exception.type", Value: model.Str("org.postgresql.util.PSQLException")},
		{Key: "exception.message", Value: model.Str("ERROR: could not extend file \"base/16384/16397\": No space left on device")}}
	fs = ofKind(Analyze(spans, Options{}).Findings, "error_origin")
	if len(fs) != 1 || fs[0].Culprit.Service != "postgres.shop.internal" {
		t.Fatalf("%+v", fs[0].Culprit)
	}
	// A deadlock the database broke is the transactions' lock order: the
	// service whose transaction lost it.
	spans[1].Events[0].Attrs = model.Attrs{{Key: "exception.type", Value: model.Str("org.postgresql.util.PSQLException")},
		{Key: "exception.message", Value: model.Str("ERROR: deadlock detected")}}
	fs = ofKind(Analyze(spans, Options{}).Findings, "error_origin")
	if len(fs) != 1 || fs[0].Culprit.Service != "inventory" || !strings.Contains(fs[0].Culprit.Reason, "lock conflict") {
		t.Fatalf("%+v", fs[0].Culprit)
	}
}

func TestOriginalError(t *testing.T) {
	for _, c := range []struct{ typ, msg, wantTyp, wantMsg string }{
		{"*fmt.wrapError", "load user 42: query users: dial tcp 10.0.0.5:5432: connect: connection refused", "", "connection refused"},
		{"*errors.errorString", "record not found", "", "record not found"},
		{"java.lang.RuntimeException", "java.io.IOException: disk full", "java.io.IOException", "disk full"},
		{"org.postgresql.util.PSQLException", "ERROR: deadlock detected", "org.postgresql.util.PSQLException", "deadlock detected"},
		// @opentelemetry/instrumentation-pg's exception message: the colon
		// inside the parentheses separates no cause.
		{"", "PostgreSQL error of type 'error' occurred (code: 42P01)", "", "PostgreSQL error of type 'error' occurred (code: 42P01)"},
		{"", "", "", ""},
	} {
		typ, msg := OriginalError(c.typ, c.msg)
		if typ != c.wantTyp || msg != c.wantMsg {
			t.Errorf("OriginalError(%q, %q) = %q, %q; want %q, %q", c.typ, c.msg, typ, msg, c.wantTyp, c.wantMsg)
		}
	}
}

// A Go service reports fmt.Errorf("...: %w") chains as *fmt.wrapError: the
// fix names the original error, never the wrapper.
func TestErrorOriginNeverBlamesAWrapperType(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "users-api", "GET /users/{id}", model.KindServer, 0, 30,
			model.Attr{Key: "http.response.status_code", Value: model.Int(500)}),
		p1Span(2, 1, "users-api", "loadUser", model.KindInternal, 2, 28),
	}
	spans[0].StatusCode, spans[1].StatusCode = model.StatusError, model.StatusError
	spans[1].Events = []model.Event{{Name: "exception", Attrs: model.Attrs{
		{Key: "exception.type", Value: model.Str("*fmt.wrapError")},
		{Key: "exception.message", Value: model.Str("load user 42: query users: dial tcp 10.0.0.5:5432: connect: connection refused")},
	}}}
	res := Analyze(spans, Options{})
	fs := ofKind(res.Findings, "error_origin")
	if len(fs) != 1 {
		t.Fatalf("error_origin findings: %d", len(fs))
	}
	text := fs[0].Title + "\n" + fs[0].Fix + "\n" + fs[0].Culprit.Reason + "\n" + strings.Join(res.Why, "\n")
	if strings.Contains(text, "wrapError") {
		t.Errorf("a wrapper type is named:\n%s", text)
	}
	if !strings.Contains(fs[0].Fix, `fix or guard "connection refused"`) {
		t.Errorf("fix does not name the original error: %s", fs[0].Fix)
	}
	if c := fs[0].Culprit; c.Service != "users-api" || c.Operation != "loadUser" {
		t.Errorf("culprit %+v", c)
	}
}

// A statement the database refused (a missing table, a syntax error, a
// broken constraint) is the calling service's to fix: the database
// answered correctly. A database that could not be reached is the
// database's.
func TestErrorOriginStatementRefusedBlamesTheCaller(t *testing.T) {
	build := func(attrs ...model.Attr) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "tax", "GET /tax", model.KindServer, 0, 40,
				model.Attr{Key: "http.response.status_code", Value: model.Int(500)}),
			p1Span(2, 1, "tax", "SELECT shop", model.KindClient, 2, 30, append([]model.Attr{
				{Key: "db.system", Value: model.Str("postgresql")},
				{Key: "server.address", Value: model.Str("10.0.0.7")},
				{Key: "db.statement", Value: model.Str("SELECT rate FROM pricez WHERE region = $1")},
			}, attrs...)...),
		}
		spans[0].StatusCode, spans[1].StatusCode = model.StatusError, model.StatusError
		return spans
	}
	for _, c := range []struct {
		name    string
		attrs   []model.Attr
		message string
		want    string
	}{
		{"code attribute", []model.Attr{{Key: "db.response.status_code", Value: model.Str("42P01")}}, "", "tax"},
		{"code in the message", nil, "PostgreSQL error of type 'error' occurred (code: 42P01)", "tax"},
		{"driver wording", nil, `relation "pricez" does not exist`, "tax"},
		{"mysql wording", nil, "Error 1146 (42S02): Table 'shop.pricez' doesn't exist", "tax"},
		{"unreachable database", nil, "dial tcp 10.0.0.7:5432: connect: connection refused", "postgresql"},
	} {
		spans := build(c.attrs...)
		if c.message != "" {
			spans[1].StatusMessage = c.message
		}
		fs := ofKind(Analyze(spans, Options{}).Findings, "error_origin")
		if len(fs) != 1 || fs[0].Culprit == nil {
			t.Fatalf("%s: error_origin findings %+v", c.name, fs)
		}
		if fs[0].Culprit.Service != c.want {
			t.Errorf("%s: culprit %s (%s), want %s", c.name, fs[0].Culprit.Service, fs[0].Culprit.Reason, c.want)
		}
	}
}

package analyze

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// diagKinds are the detectors whose fixtures this file checks.
var diagKinds = []string{"error_origin", "swallowed_error", "partial_failure", "cache_miss", "consumer_lag",
	"poison_message", "broken_propagation", "instrumentation_gap"}

func loadSpans(t testing.TB, path string) []model.Span {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(b)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return otlpconv.FromTraces(td)
}

func ofKind(fs []Finding, kind string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// diagChecks assert the key numbers of each positive fixture.
var diagChecks = map[string]func(t *testing.T, fs []Finding){
	"error_origin/positive-ml-model-oom": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(ErrorOriginEvidence)
		if len(fs) != 1 || ev.Origin.Service != "ml-inference" || ev.Origin.Operation != "model.forward" ||
			ev.ExceptionType != "torch.cuda.OutOfMemoryError" || !strings.HasPrefix(ev.ExceptionMessage, "CUDA out of memory") {
			t.Fatalf("evidence %+v", ev)
		}
		// gateway server+client, product server+client, recommendation
		// server+client, ml-inference server: 7 layers passed it up, 4
		// services crossed; product and recommendation re-wrapped it.
		if !ev.RootFailed || ev.ServicesCrossed != 4 || ev.PropagatedLayers != 7 || ev.RewrappedLayers < 2 ||
			len(ev.Chain) != 8 || ev.Chain[0].Service != "api-gateway" {
			t.Errorf("chain: root_failed=%v services=%d propagated=%d rewrapped=%d chain=%d", ev.RootFailed, ev.ServicesCrossed,
				ev.PropagatedLayers, ev.RewrappedLayers, len(ev.Chain))
		}
		if fs[0].Severity != SeverityCritical || !strings.Contains(fs[0].Title, "HTTP 500") || fs[0].ImpactMS < 1300 {
			t.Errorf("severity %s impact %.1f title %q", fs[0].Severity, fs[0].ImpactMS, fs[0].Title)
		}
	},
	"error_origin/positive-order-deadlock-old-semconv": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(ErrorOriginEvidence)
		if len(fs) != 1 || ev.ExceptionType != "org.postgresql.util.PSQLException" || !strings.Contains(ev.ExceptionMessage, "deadlock detected") ||
			ev.PropagatedLayers != 2 || ev.RewrappedLayers != 2 || ev.ServicesCrossed != 1 {
			t.Errorf("evidence %+v", ev)
		}
	},
	"swallowed_error/positive-product-page-timeouts": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SwallowedErrorEvidence)
		if len(fs) != 1 || ev.HTTPStatus != 200 || len(ev.Failed) != 2 || !ev.Failed[0].TimedOut || !ev.Failed[1].TimedOut ||
			ev.UserGot != "HTTP 200 built without recommendation-service, reviews-service" {
			t.Fatalf("evidence %+v", ev)
		}
		// The two timeouts overlap: the request waited for the longer one
		// (2 s), not for their 3.5 s sum.
		if fs[0].ImpactMS < 1990 || fs[0].ImpactMS > 2001 {
			t.Errorf("impact %.1f", fs[0].ImpactMS)
		}
	},
	"swallowed_error/positive-search-personalization-unavailable": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(SwallowedErrorEvidence)
		if len(fs) != 1 || len(ev.Failed) != 1 || ev.Failed[0].Target != "personalization-service" ||
			ev.Failed[0].TargetOperation != "personalization.v1.Ranker/Rank" || !strings.Contains(ev.Failed[0].Error, "Unavailable") {
			t.Errorf("evidence %+v", ev)
		}
	},
	"partial_failure/positive-dashboard-loyalty-down": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(PartialFailureEvidence)
		if len(fs) != 1 || len(ev.Failing) != 1 || ev.Failing[0].Target != "loyalty-service" || len(ev.Healthy) != 3 ||
			fs[0].Severity != SeverityCritical || ev.Failing[0].Error != "HTTP 500" {
			t.Errorf("findings %d evidence %+v", len(fs), ev)
		}
	},
	// Express, live: the handler's two fetches run under Promise.all and
	// pricing throws; the server span answers 502, but the "request
	// handler" span the fetches hang off has its status unset.
	"partial_failure/positive-express-promise-all-unset-handler": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(PartialFailureEvidence)
		if len(fs) != 1 || ev.Failing[0].Target != "pricing" || len(ev.Healthy) != 1 || ev.Healthy[0].Target != "inventory" ||
			ev.Parent.Operation != "request handler" || fs[0].Severity != SeverityCritical ||
			!strings.HasPrefix(fs[0].Title, "web GET /checkout failed because pricing failed") {
			t.Errorf("findings %d evidence %+v title %q", len(fs), ev, fs[0].Title)
		}
	},
	"partial_failure/positive-report-shard-deadline": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(PartialFailureEvidence)
		if len(fs) != 1 || ev.Failing[0].Target != "shard-2" || len(ev.Healthy) != 2 || ev.Parent.Operation != "aggregate shards" {
			t.Errorf("evidence %+v", ev)
		}
	},
	// A live Go frontend (otelhttp, otelgrpc 0.72) gives the catalog a
	// 50 ms gRPC deadline; the catalog honours it and ends CANCELLED with
	// the call, its status unset. The deadline that ran out is the origin
	// and the catalog, still working, the culprit: not a failure "in" the
	// catalog with no message.
	"error_origin/positive-grpc-deadline-honoured": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(ErrorOriginEvidence)
		if len(fs) != 1 || ev.Origin.Service != "frontend" || !strings.Contains(fs[0].Title, "context deadline exceeded") ||
			fs[0].Culprit == nil || fs[0].Culprit.Service != "productcatalog" || !strings.Contains(fs[0].Culprit.Reason, "still working") {
			t.Errorf("evidence %+v title %q culprit %+v", ev.Origin, fs[0].Title, fs[0].Culprit)
		}
	},
	"cache_miss/positive-product-cache-aside": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(CacheMissEvidence)
		if len(fs) != 1 || ev.KeyShape != "product:?" || ev.Signal != "get_fetch_set" || !ev.WroteBack || len(ev.Fallback) != 2 ||
			ev.FallbackMS < 205 || ev.FallbackMS > 215 || fs[0].ImpactMS < 205 {
			t.Errorf("evidence %+v impact %.1f", ev, fs[0].ImpactMS)
		}
	},
	// A live Express app on ioredis and a mysql2 pool of 8, 15 requests
	// missing at once: the pool ran another request's queued SELECT under
	// this one's context as it released the connection, a ms before this
	// request's SET. The fallback is this request's own 242 ms SELECT.
	"cache_miss/positive-mysql2-pool-stampede": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(CacheMissEvidence)
		if len(fs) != 1 || ev.KeyShape != "catalog:page:?" || !ev.WroteBack || len(ev.Fallback) != 1 ||
			ev.FallbackMS < 240 || ev.FallbackMS > 245 || !strings.HasSuffix(fs[0].Title, "(242 ms)") {
			t.Errorf("evidence %+v title %q", ev, fs[0].Title)
		}
	},
	"cache_miss/positive-read-through-cache-hit-false": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(CacheMissEvidence)
		if len(fs) != 1 || ev.Signal != "cache_hit_false" || len(ev.Fallback) != 1 || ev.Fallback[0].Operation != "GET" ||
			ev.KeyShape != "rules:EUR:DE:?" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"consumer_lag/positive-kafka-45s": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(ConsumerLagEvidence)
		if len(fs) != 1 || ev.LagMS != 45000 || ev.Destination != "orders.created" || ev.Partition != "3" || ev.Offset != "1882211" ||
			ev.ConsumerGroup != "fulfillment" || ev.Via != "parent" || fs[0].Severity != SeverityCritical || fs[0].ImpactMS != 45000 {
			t.Errorf("evidence %+v severity %s", ev, fs[0].Severity)
		}
	},
	"consumer_lag/positive-rabbitmq-email-old-semconv": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(ConsumerLagEvidence)
		if len(fs) != 1 || ev.LagMS != 3240 || ev.System != "rabbitmq" || ev.Destination != "notifications" || fs[0].Severity != SeverityWarning ||
			ev.ProcessingMS != 420 {
			t.Errorf("evidence %+v", ev)
		}
	},
	"poison_message/positive-kafka-retries-to-dlt": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(PoisonMessageEvidence)
		if len(fs) != 1 || ev.FailedAttempts != 4 || len(ev.Attempts) != 4 || ev.DeadLetter == nil ||
			ev.DeadLetter.Destination != "orders.created.DLT" || !strings.Contains(ev.Error, "JsonParseException") || ev.Recovered ||
			fs[0].Severity != SeverityCritical || fs[0].ImpactMS != 72 {
			t.Errorf("evidence %+v impact %.1f", ev, fs[0].ImpactMS)
		}
	},
	"poison_message/positive-sqs-redelivered-message-id": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(PoisonMessageEvidence)
		if len(fs) != 1 || ev.FailedAttempts != 3 || ev.MessageID != "5fea7756-0ea4-451a-a703-a558b933e274" || ev.DeadLetter != nil {
			t.Errorf("evidence %+v", ev)
		}
	},
	"broken_propagation/positive-legacy-client-no-header": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(BrokenPropagationEvidence)
		if len(fs) != 1 || ev.Signal != "no_server_child" || ev.Caller != "checkout-service" || ev.Callee != "inventory-service" {
			t.Errorf("evidence %+v", ev)
		}
	},
	"broken_propagation/positive-orphaned-subtree": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(BrokenPropagationEvidence)
		// The client call and the orphan are one hop, reported once.
		if len(fs) != 1 || ev.Signal != "no_server_child" || ev.Span == nil || ev.Span.Service != "payment-service" ||
			ev.MissingParentID == "" || ev.SubtreeSize != 3 {
			t.Errorf("findings %d evidence %+v", len(fs), ev)
		}
	},
	// Express, live: web fans out 10 fetches through an undici Agent with 2
	// connections. Each queued fetch starts in the context of the request
	// that opened the connection, so the first request's trace holds 24 of
	// the next five requests' calls, begun up to 2 s after it answered.
	"broken_propagation/positive-undici-agent-queued-calls-in-old-context": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(BrokenPropagationEvidence)
		if len(fs) != 1 || ev.Signal != "leaked_context" || ev.SubtreeSize != 24 || ev.Callee != "pricing" ||
			fs[0].Severity != SeverityWarning || !strings.Contains(fs[0].Title, "(it made 10 while it ran)") ||
			fs[0].Culprit == nil || fs[0].Culprit.Service != "web" {
			t.Errorf("findings %d evidence %+v title %q", len(fs), ev, fs[0].Title)
		}
	},
	"broken_propagation/positive-worker-second-root": func(t *testing.T, fs []Finding) {
		ev := fs[0].Evidence.(BrokenPropagationEvidence)
		if len(fs) != 1 || ev.Signal != "extra_root" || ev.Span.Operation != "ExportJob.run" || ev.SubtreeSize != 2 {
			t.Errorf("evidence %+v", ev)
		}
	},
	"instrumentation_gap/positive-5xx-not-error-unknown-service": func(t *testing.T, fs []Finding) {
		problems := map[string]int{}
		for _, f := range fs {
			ev := f.Evidence.(InstrumentationGapEvidence)
			problems[ev.Problem] += ev.SpanCount
		}
		if problems["http_error_not_marked"] != 3 || problems["missing_service_name"] != 2 || len(problems) != 2 {
			t.Errorf("problems %v", problems)
		}
	},
	"instrumentation_gap/positive-pii-and-token": func(t *testing.T, fs []Finding) {
		got := map[string]InstrumentationGapEvidence{}
		for _, f := range fs {
			ev := f.Evidence.(InstrumentationGapEvidence)
			got[ev.DataType+ev.Problem] = ev
			// Never echo the secret itself.
			for _, secret := range []string{"jane.doe", "1111 1111 1111", "eyJzdWIiOiI0ODIxMyJ9"} {
				if strings.Contains(ev.Masked, secret) || strings.Contains(f.Title, secret) {
					t.Errorf("finding leaks %q: %+v", secret, ev)
				}
			}
		}
		if ev := got["emailpersonal_data_in_attribute"]; ev.Attribute != "enduser.id" || ev.Masked != "j***@***.com" {
			t.Errorf("email %+v", ev)
		}
		if ev := got["card_numberpersonal_data_in_attribute"]; ev.Masked != "************1111" {
			t.Errorf("card %+v", ev)
		}
		if ev := got["bearer_tokensecret_in_attribute"]; ev.Attribute != "http.request.header.authorization" {
			t.Errorf("token %+v", ev)
		}
		if ev := got["high_cardinality_span_name"]; ev.SpanCount != 3 || ev.Attribute != "load order {id}/items/{id}" {
			t.Errorf("names %+v", ev)
		}
	},
}

// TestDiagnosisFixtures runs every registered detector over the fixtures of
// the diagnosis kinds: each kind appears in its positives and in none of its
// healthy look-alikes.
func TestDiagnosisFixtures(t *testing.T) {
	checked := 0
	for _, kind := range diagKinds {
		files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", kind, "*.json"))
		var pos, healthy int
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".json")
			t.Run(kind+"/"+name, func(t *testing.T) {
				res := Analyze(loadSpans(t, f), Options{})
				fs := ofKind(res.Findings, kind)
				positive := strings.HasPrefix(name, "positive-")
				if positive && len(fs) == 0 {
					t.Fatalf("no %s finding; got %v", kind, kindsOf(res.Findings))
				}
				if !positive && len(fs) > 0 {
					t.Fatalf("healthy look-alike produced %s: %s", kind, fs[0].Title)
				}
				for _, f := range fs {
					if f.Title == "" || f.Fix == "" || len(f.SpanIDs) == 0 || f.Evidence == nil || f.TraceID != res.TraceID || f.Severity.Rank() == 0 {
						t.Errorf("incomplete finding %+v", f)
					}
				}
				if check, ok := diagChecks[kind+"/"+name]; ok {
					check(t, fs)
					checked++
				} else if positive {
					t.Errorf("positive fixture without a check")
				}
			})
			if strings.HasPrefix(name, "positive-") {
				pos++
			} else {
				healthy++
			}
		}
		if pos < 2 || healthy < 2 {
			t.Errorf("%s: %d positive and %d healthy fixtures, want ≥ 2 each", kind, pos, healthy)
		}
	}
	if checked != len(diagChecks) {
		t.Errorf("%d of %d checks ran", checked, len(diagChecks))
	}
}

func kindsOf(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	sort.Strings(out)
	return out
}

package analyze

import (
	"fmt"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// bigTrace generates a trace of about n spans shaped like a large batch
// request: an entry fanning out to request handlers in several services,
// each with cache lookups, queries, HTTP and gRPC calls, messaging, a few
// failures, swallowed timeouts, cache misses, and PII in some attributes,
// so every detector has work to do.
func bigTrace(n int) []model.Span {
	tid := model.TraceID{0xbe, 0xef, 1}
	var spans []model.Span
	next := uint64(1)
	base := uint64(1_763_700_000_000_000_000)
	add := func(parent model.SpanID, svc, name string, kind model.SpanKind, startMS, durMS float64, attrs ...model.Attr) model.SpanID {
		var id model.SpanID
		for i := 0; i < 8; i++ {
			id[i] = byte(next >> (8 * i))
		}
		next++
		spans = append(spans, model.Span{TraceID: tid, SpanID: id, ParentSpanID: parent, Service: svc, Name: name, Kind: kind,
			StartUnixNano: base + uint64(startMS*1e6), EndUnixNano: base + uint64((startMS+durMS)*1e6), Attrs: attrs,
			Resource: model.Attrs{{Key: "service.name", Value: model.Str(svc)}, {Key: "host.name", Value: model.Str(svc + "-7d9f")}}})
		return id
	}
	s := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	i64 := func(k string, v int64) model.Attr { return model.Attr{Key: k, Value: model.Int(v)} }
	root := add(model.SpanID{}, "batch-api", "POST /api/batch", model.KindServer, 0, 60000,
		s("http.request.method", "POST"), s("http.route", "/api/batch"), i64("http.response.status_code", 200))
	svcs := []string{"orders-service", "inventory-service", "pricing-service", "profile-service", "catalog-service"}
	at := 1.0
	for k := 0; len(spans) < n; k++ {
		svc := svcs[k%len(svcs)]
		c := add(root, "batch-api", "POST", model.KindClient, at, 310, s("http.request.method", "POST"),
			s("url.full", fmt.Sprintf("http://%s:8080/v1/items/%d", svc, k)), s("server.address", svc), i64("http.response.status_code", 200))
		e := add(c, svc, "POST /v1/items/{id}", model.KindServer, at+0.5, 309, s("http.request.method", "POST"),
			s("http.route", "/v1/items/{id}"), s("url.path", fmt.Sprintf("/v1/items/%d", k)), i64("http.response.status_code", 200),
			s("enduser.id", fmt.Sprintf("user%d@example.com", k%7)), s("http.request.header.user_agent", "okhttp/4.12.0"))
		t := at + 1
		add(e, svc, "GET", model.KindClient, t, 0.8, s("db.system", "redis"), s("db.statement", fmt.Sprintf("GET item:%d", k)))
		t += 1
		for q := 0; q < 8; q++ {
			add(e, svc, "SELECT shop.items", model.KindClient, t, 7, s("db.system", "postgresql"),
				s("db.statement", fmt.Sprintf("SELECT id, name, price FROM items WHERE id = %d AND tenant = 'acme'", k*10+q)),
				s("server.address", "pg-main"))
			t += 7.2
		}
		add(e, svc, "SET", model.KindClient, t, 0.7, s("db.system", "redis"), s("db.statement", fmt.Sprintf("SET item:%d ? EX 60", k)))
		t += 1
		for r := 0; r < 3; r++ {
			rc := add(e, svc, "catalog.v1.Catalog/Get", model.KindClient, t, 20, s("rpc.system", "grpc"), s("rpc.service", "catalog.v1.Catalog"),
				s("rpc.method", "Get"), s("server.address", "catalog-rpc"), i64("rpc.grpc.status_code", 0))
			rs := add(rc, "catalog-rpc", "catalog.v1.Catalog/Get", model.KindServer, t+0.3, 19, s("rpc.system", "grpc"), i64("rpc.grpc.status_code", 0))
			add(rs, "catalog-rpc", "SELECT catalog.products", model.KindClient, t+1, 15, s("db.system", "postgresql"),
				s("db.statement", "SELECT * FROM products WHERE sku IN (1, 2, 3)"))
			t += 21
		}
		tm := add(e, svc, "GET", model.KindClient, t, 150, s("http.request.method", "GET"), s("server.address", "reviews-service"),
			s("url.full", fmt.Sprintf("http://reviews-service/v1/reviews?item=%d", k)))
		if k%10 == 0 {
			spans[len(spans)-1].StatusCode = model.StatusError
			spans[len(spans)-1].StatusMessage = "context deadline exceeded"
		}
		_ = tm
		t += 151
		p := add(e, svc, "items.updated publish", model.KindProducer, t, 2, s("messaging.system", "kafka"),
			s("messaging.destination.name", "items.updated"))
		cs := add(p, "indexer", "items.updated process", model.KindConsumer, t+40, 30, s("messaging.system", "kafka"),
			s("messaging.destination.name", "items.updated"), s("messaging.kafka.offset", fmt.Sprint(1000+k)))
		add(cs, "indexer", "index item", model.KindInternal, t+41, 28)
		t += 3
		for w := 0; w < 20; w++ {
			add(e, svc, fmt.Sprintf("validate rule %d", w%4), model.KindInternal, t, 1, s("rule.id", fmt.Sprint(w)))
			t += 1.1
		}
		at += 311
	}
	return spans
}

// BenchmarkAnalyze10k runs every registered detector, the critical path
// and the why chain on a 10,000-span trace (target ≤ 20 ms).
func BenchmarkAnalyze10k(b *testing.B) {
	spans := bigTrace(10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = Analyze(spans, Options{})
	}
}

// BenchmarkAnalyzePerDetector10k shows where the time goes.
func BenchmarkAnalyzePerDetector10k(b *testing.B) {
	spans := bigTrace(10_000)
	for _, d := range DefaultDetectors() {
		b.Run(d.Kind(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				t := NewTrace(spans)
				d.Detect(t, &Env{History: NoHistory{}})
			}
		})
	}
}

// BenchmarkAnalyzeScaling shows that the cost is linear in spans: ns/op
// divided by the span count should stay flat across sizes.
func BenchmarkAnalyzeScaling(b *testing.B) {
	for _, n := range []int{2_500, 10_000, 40_000} {
		spans := bigTrace(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				_ = Analyze(spans, Options{})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(spans)), "ns/span")
		})
	}
}

// TestBigTraceExercisesDetectors keeps the benchmark honest: the generated
// trace must give the detectors real work, findings included.
func TestBigTraceExercisesDetectors(t *testing.T) {
	res := Analyze(bigTrace(10_000), Options{MaxFindings: -1})
	capped := Analyze(bigTrace(10_000), Options{MaxFindings: 5})
	if len(capped.Findings) != 5 || capped.FindingsOmitted != len(res.Findings)-5 {
		t.Errorf("cap: %d findings kept, %d omitted, of %d", len(capped.Findings), capped.FindingsOmitted, len(res.Findings))
	}
	for i := 1; i < len(capped.Findings); i++ {
		if capped.Findings[i].Severity.Rank() > capped.Findings[i-1].Severity.Rank() {
			t.Fatalf("cap kept a less severe finding before a more severe one at %d", i)
		}
	}
	kinds := map[string]int{}
	for _, f := range res.Findings {
		kinds[f.Kind]++
	}
	for _, k := range []string{"n_plus_one_query", "swallowed_error", "instrumentation_gap", "cache_miss"} {
		if kinds[k] == 0 {
			t.Errorf("generated trace lacks %s findings: %v", k, kinds)
		}
	}
	if res.SpanCount < 10_000 || len(res.CriticalPath) < 100 || len(res.Why) < 2 {
		t.Errorf("spans %d path %d why %d", res.SpanCount, len(res.CriticalPath), len(res.Why))
	}
}

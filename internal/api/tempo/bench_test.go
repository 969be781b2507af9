package tempo

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// synthetic returns n traces of 20 spans (3 services, http/db attributes),
// one second apart, ending at end.
func synthetic(n int, end time.Time) []model.Span {
	var out []model.Span
	svcs := []string{"frontend", "cart", "payment"}
	for t := 0; t < n; t++ {
		var tid model.TraceID
		tid[0], tid[1], tid[2] = byte(t>>16), byte(t>>8), byte(t)
		tid[15] = 1
		start := uint64(end.Add(-time.Duration(n-t) * time.Second).UnixNano())
		for s := 0; s < 20; s++ {
			svc := svcs[s%3]
			sp := model.Span{
				TraceID: tid, SpanID: model.SpanID{1, byte(s + 1)}, Name: fmt.Sprintf("op-%d", s%7),
				Kind: model.KindClient, StartUnixNano: start + uint64(s)*1e6, EndUnixNano: start + uint64(s)*1e6 + uint64(1+s%9)*1e6,
				Service: svc, Resource: model.Attrs{{Key: "service.name", Value: model.Str(svc)}},
				Attrs: model.Attrs{
					{Key: "http.method", Value: model.Str("GET")}, {Key: "http.status_code", Value: model.Int(int64(200 + (t+s)%3*150))},
					{Key: "db.system", Value: model.Str([]string{"postgres", "redis"}[s%2])}, {Key: "db.statement", Value: model.Str("SELECT 1")},
				},
			}
			if s > 0 {
				sp.ParentSpanID = model.SpanID{1, 1}
				sp.Kind = model.KindClient
			} else {
				sp.Kind = model.KindServer
				sp.EndUnixNano = start + 30e6
			}
			if (t+s)%11 == 0 {
				sp.StatusCode = model.StatusError
			}
			out = append(out, sp)
		}
	}
	return out
}

// BenchmarkAPILayer: trace by id (20 spans) through the v1 and v2 JSON
// endpoints and as protobuf, with the store cost taken out (the same
// trace as the Jaeger and /api/v1 packages' BenchmarkAPILayer).
func BenchmarkAPILayer(b *testing.B) {
	h := NewHandler(apitest.NewFixedStore(20, 20), Options{})
	id := apitest.SynthTrace(0, 1)[0].TraceID.String()
	b.Run("v1_trace_by_id_20spans", func(b *testing.B) { apitest.BenchGet(b, h, "/api/traces/"+id) })
	b.Run("v2_trace_by_id_20spans", func(b *testing.B) { apitest.BenchGet(b, h, "/api/v2/traces/"+id) })
}

// BenchmarkTempoAPI measures whole requests through the handler against
// the in-memory test store (5,000 traces x 20 spans).
func BenchmarkTempoAPI(b *testing.B) {
	end := time.Unix(1700010000, 0)
	st := memstore.New()
	if err := st.Write(context.Background(), synthetic(5000, end)); err != nil {
		b.Fatal(err)
	}
	h := NewHandler(st, Options{Now: func() time.Time { return end }})
	endS := end.Unix()
	for name, target := range map[string]string{
		"trace-by-id-json":   "/api/v2/traces/" + model.TraceID{0, 1, 0, 15: 1}.String(),
		"search-traceql":     "/api/search?limit=20&q=" + urlq(`{ resource.service.name = "cart" && span.http.status_code >= 500 && status = error }`) + fmt.Sprintf("&start=%d&end=%d", endS-3600, endS),
		"search-structural":  "/api/search?limit=20&q=" + urlq(`{ kind = server } >> { span.db.system = "postgres" && duration > 5ms }`) + fmt.Sprintf("&start=%d&end=%d", endS-3600, endS),
		"tag-values-q":       "/api/v2/search/tag/name/values?q=" + urlq(`{ resource.service.name = "cart" }`),
		"query-range-by-svc": "/api/metrics/query_range?q=" + urlq(`{ status = error } | rate() by(resource.service.name)`) + fmt.Sprintf("&start=%d&end=%d&step=60s", endS-3600, endS),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", target, rec.Code, rec.Body.String())
				}
			}
		})
	}
}

// BenchmarkWithEngine: trace by id and searches by service against the
// embedded engine holding apitest.EngineSpans() spans (traces of 20 spans)
// in compacted blocks. Run with
//
//	TRACEDX_BENCH_SPANS=1000000 go test -run '^$' -bench WithEngine -benchtime 200x ./internal/api/tempo/
func BenchmarkWithEngine(b *testing.B) {
	traces := apitest.EngineSpans() / 20
	h := NewHandler(apitest.EngineWith(b, traces, 20), Options{})
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = apitest.SynthTrace(i*(traces/len(ids)), 1)[0].TraceID.String()
	}
	b.Run("trace_by_id_v2", func(b *testing.B) { apitest.BenchGetEach(b, h, "/api/v2/traces/", ids) })
	traceql := "/api/search?limit=20&q=" + urlq(`{ resource.service.name = "orders" }`)
	tags := "/api/search?limit=20&tags=" + urlq(`service.name=orders`)
	b.Run("search_traceql_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, traceql) })
	b.Run("search_tags_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, tags) })
	// The same searches with the page cache off: every request reads its
	// traces' pages as a first search does.
	b.Run("search_traceql_service_limit20_cold", func(b *testing.B) { apitest.BenchGetCold(b, h, traceql) })
	b.Run("search_tags_service_limit20_cold", func(b *testing.B) { apitest.BenchGetCold(b, h, tags) })
}

package v1

import (
	"testing"

	"github.com/tracedx/tracedx/internal/api/apitest"
)

// BenchmarkAPILayer: trace by id (20 spans), analysis and search (20
// summaries) through the handler, with the store cost taken out.
func BenchmarkAPILayer(b *testing.B) {
	h := NewHandler(Deps{Store: apitest.NewFixedStore(20, 20)})
	id := apitest.SynthTrace(0, 1)[0].TraceID.String()
	b.Run("trace_by_id_20spans", func(b *testing.B) { apitest.BenchGet(b, h, "/api/v1/traces/"+id) })
	b.Run("analysis_20spans_critical_path", func(b *testing.B) { apitest.BenchGet(b, h, "/api/v1/traces/"+id+"/analysis") })
	b.Run("search_20traces", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v1/search?service=frontend&attr=http.response.status_code%3E%3D200&limit=20")
	})
}

// BenchmarkWithMemstore: the same against the in-memory test store holding
// 5,000 traces x 20 spans (100k spans).
func BenchmarkWithMemstore(b *testing.B) {
	st := apitest.MemstoreWith(b, 5000, 20)
	h := NewHandler(Deps{Store: st})
	id := apitest.SynthTrace(4321, 1)[0].TraceID.String()
	b.Run("trace_by_id", func(b *testing.B) { apitest.BenchGet(b, h, "/api/v1/traces/"+id) })
	b.Run("search_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, "/api/v1/search?service=frontend&limit=20") })
}

// BenchmarkWithEngine: trace by id against the embedded engine holding
// apitest.EngineSpans() spans (traces of 20 spans) in compacted blocks,
// 64 traces in turn. Run with
//
//	TRACEDX_BENCH_SPANS=1000000 go test -run '^$' -bench WithEngine -benchtime 200x ./internal/api/v1/
func BenchmarkWithEngine(b *testing.B) {
	traces := apitest.EngineSpans() / 20
	h := NewHandler(Deps{Store: apitest.EngineWith(b, traces, 20)})
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = apitest.SynthTrace(i*(traces/len(ids)), 1)[0].TraceID.String()
	}
	b.Run("trace_by_id", func(b *testing.B) { apitest.BenchGetEach(b, h, "/api/v1/traces/", ids) })
}

package jaeger

import (
	"testing"

	"github.com/tracedx/tracedx/internal/api/apitest"
)

// BenchmarkAPILayer: trace by id (20 spans) and search (20 traces of 20
// spans) through the handler, with the store cost taken out.
func BenchmarkAPILayer(b *testing.B) {
	h := NewHandler(apitest.NewFixedStore(20, 20), Options{})
	b.Run("v1_trace_by_id_20spans", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/traces/"+apitest.SynthTrace(0, 1)[0].TraceID.String())
	})
	b.Run("v1_search_20traces", func(b *testing.B) { apitest.BenchGet(b, h, "/api/traces?service=frontend&limit=20") })
	b.Run("v3_trace_by_id_20spans", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v3/traces/"+apitest.SynthTrace(0, 1)[0].TraceID.String())
	})
	b.Run("v3_search_20traces", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v3/traces?query.serviceName=frontend&query.searchDepth=20")
	})
	b.Run("v3_trace_summaries_20", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v3/trace-summaries?query.serviceName=frontend&query.searchDepth=20")
	})
}

// BenchmarkWithMemstore: the same requests against the in-memory test store
// holding 5,000 traces x 20 spans (100k spans): end-to-end, engine included.
func BenchmarkWithMemstore(b *testing.B) {
	st := apitest.MemstoreWith(b, 5000, 20)
	h := NewHandler(st, Options{})
	id := apitest.SynthTrace(4321, 1)[0].TraceID.String()
	b.Run("v1_trace_by_id", func(b *testing.B) { apitest.BenchGet(b, h, "/api/traces/"+id) })
	b.Run("v1_search_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, "/api/traces?service=frontend&limit=20") })
	b.Run("v3_trace_summaries_limit20", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v3/trace-summaries?query.serviceName=frontend&query.searchDepth=20")
	})
}

// BenchmarkWithEngine: the same requests against the embedded engine
// holding apitest.EngineSpans() spans (traces of 20 spans) in compacted
// blocks. Run with
//
//	TRACEDX_BENCH_SPANS=1000000 go test -run '^$' -bench WithEngine -benchtime 200x ./internal/api/jaeger/
func BenchmarkWithEngine(b *testing.B) {
	traces := apitest.EngineSpans() / 20
	h := NewHandler(apitest.EngineWith(b, traces, 20), Options{})
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = apitest.SynthTrace(i*(traces/len(ids)), 1)[0].TraceID.String()
	}
	b.Run("v1_trace_by_id", func(b *testing.B) { apitest.BenchGetEach(b, h, "/api/traces/", ids) })
	b.Run("v3_trace_by_id", func(b *testing.B) { apitest.BenchGetEach(b, h, "/api/v3/traces/", ids) })
	const v1Search = "/api/traces?service=orders&limit=20"
	const v3Search = "/api/v3/traces?query.serviceName=orders&query.searchDepth=20&query.startTimeMin=2026-01-01T00:00:00Z&query.startTimeMax=2027-01-01T00:00:00Z"
	b.Run("v1_search_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, v1Search) })
	b.Run("v3_find_traces_service_limit20", func(b *testing.B) { apitest.BenchGet(b, h, v3Search) })
	// The same searches with the page cache off: every request reads its
	// traces' pages as a first search does.
	b.Run("v1_search_service_limit20_cold", func(b *testing.B) { apitest.BenchGetCold(b, h, v1Search) })
	b.Run("v3_find_traces_service_limit20_cold", func(b *testing.B) { apitest.BenchGetCold(b, h, v3Search) })
	b.Run("v3_trace_summaries_limit20", func(b *testing.B) {
		apitest.BenchGet(b, h, "/api/v3/trace-summaries?query.serviceName=orders&query.searchDepth=20")
	})
}

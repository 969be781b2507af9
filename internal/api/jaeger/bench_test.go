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

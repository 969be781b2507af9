package jaeger

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// synthTrace builds a realistic trace: n spans over 3 services, http/db
// attributes (10 per span), one event on the root.
func synthTrace(i, n int) []model.Span {
	var tid model.TraceID
	binary.BigEndian.PutUint64(tid[:8], uint64(i)+1)
	binary.BigEndian.PutUint64(tid[8:], uint64(i)*2654435761+7)
	start := uint64(1768471200000000000) + uint64(i)*1e6
	svcs := []string{"frontend", "orders", "inventory"}
	spans := make([]model.Span, n)
	for j := range spans {
		var sid model.SpanID
		binary.BigEndian.PutUint64(sid[:], uint64(i)<<20|uint64(j)+1)
		s := &spans[j]
		s.TraceID, s.SpanID = tid, sid
		if j > 0 {
			s.ParentSpanID = spans[(j-1)/3].SpanID
		}
		svc := svcs[j%3]
		s.Service = svc
		s.Resource = model.Attrs{{Key: "service.name", Value: model.Str(svc)}, {Key: "host.name", Value: model.Str("host-" + svc)}}
		s.ScopeName, s.ScopeVersion = "io.opentelemetry.http", "1.0.0"
		s.Name = fmt.Sprintf("GET /api/v%d/items", j%5)
		s.Kind = model.KindServer
		s.StartUnixNano = start + uint64(j)*1e5
		s.EndUnixNano = s.StartUnixNano + uint64(n-j)*1e6
		s.Attrs = model.Attrs{
			{Key: "http.request.method", Value: model.Str("GET")},
			{Key: "http.route", Value: model.Str("/api/items/{id}")},
			{Key: "http.response.status_code", Value: model.Int(200)},
			{Key: "url.path", Value: model.Str(fmt.Sprintf("/api/items/%d", j))},
			{Key: "server.address", Value: model.Str("api.example.com")},
			{Key: "server.port", Value: model.Int(443)},
			{Key: "db.system", Value: model.Str("postgresql")},
			{Key: "db.statement", Value: model.Str("SELECT * FROM items WHERE id = ?")},
			{Key: "net.peer.name", Value: model.Str("db-1")},
			{Key: "thread.id", Value: model.Int(int64(j))},
		}
	}
	spans[0].Events = []model.Event{{TimeUnixNano: start + 5e5, Name: "exception", Attrs: model.Attrs{{Key: "exception.type", Value: model.Str("IOError")}}}}
	return spans
}

// fixedStore answers every read with precomputed data, so the benchmarks
// below measure the API layer (parsing, conversion, JSON), not an engine.
type fixedStore struct {
	store.Store
	traces [][]model.Span
	sums   []model.TraceSummary
}

func newFixedStore(traces, spansPerTrace int) *fixedStore {
	fs := &fixedStore{Store: memstore.New()}
	for i := 0; i < traces; i++ {
		t := synthTrace(i, spansPerTrace)
		fs.traces = append(fs.traces, t)
		fs.sums = append(fs.sums, model.Summarize(t))
	}
	return fs
}

func (f *fixedStore) Trace(context.Context, model.TraceID, store.TimeRange) ([]model.Span, error) {
	return f.traces[0], nil
}

func (f *fixedStore) Search(_ context.Context, q store.Query) ([]model.TraceSummary, error) {
	return f.sums[:min(q.Limit, len(f.sums))], nil
}

func (f *fixedStore) ScanTraces(_ context.Context, q store.Query, fn func([]model.Span) error) error {
	for _, t := range f.traces[:min(q.Limit, len(f.traces))] {
		if err := fn(t); err != nil {
			return err
		}
	}
	return nil
}

func serve(b *testing.B, h http.Handler, path string) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	b.ResetTimer()
	var bytes int
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		bytes = rec.Body.Len()
	}
	b.ReportMetric(float64(bytes), "resp_bytes")
}

// BenchmarkAPILayer: trace by id (20 spans) and search (20 traces of 20
// spans) through the handler, with the store cost taken out.
func BenchmarkAPILayer(b *testing.B) {
	h := NewHandler(newFixedStore(20, 20), Options{})
	b.Run("v1_trace_by_id_20spans", func(b *testing.B) { serve(b, h, "/api/traces/"+synthTrace(0, 1)[0].TraceID.String()) })
	b.Run("v1_search_20traces", func(b *testing.B) { serve(b, h, "/api/traces?service=frontend&limit=20") })
	b.Run("v3_trace_by_id_20spans", func(b *testing.B) { serve(b, h, "/api/v3/traces/"+synthTrace(0, 1)[0].TraceID.String()) })
	b.Run("v3_trace_summaries_20", func(b *testing.B) {
		serve(b, h, "/api/v3/trace-summaries?query.serviceName=frontend&query.searchDepth=20")
	})
}

// BenchmarkWithMemstore: the same requests against the in-memory test store
// holding 5,000 traces x 20 spans (100k spans): end-to-end, engine included.
func BenchmarkWithMemstore(b *testing.B) {
	st := memstore.New()
	for i := 0; i < 5000; i++ {
		if err := st.Write(context.Background(), synthTrace(i, 20)); err != nil {
			b.Fatal(err)
		}
	}
	h := NewHandler(st, Options{})
	id := synthTrace(4321, 1)[0].TraceID.String()
	b.Run("v1_trace_by_id", func(b *testing.B) { serve(b, h, "/api/traces/"+id) })
	b.Run("v1_search_service_limit20", func(b *testing.B) { serve(b, h, "/api/traces?service=frontend&limit=20") })
	b.Run("v3_trace_summaries_limit20", func(b *testing.B) {
		serve(b, h, "/api/v3/trace-summaries?query.serviceName=frontend&query.searchDepth=20")
	})
}

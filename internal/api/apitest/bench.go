package apitest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// SynthTrace builds trace number i, a realistic one for benchmarks: n spans
// over 3 services, http/db attributes (10 per span), one event on the root.
func SynthTrace(i, n int) []model.Span {
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

// FixedStore answers every read with precomputed data, so a benchmark
// measures the API layer (parsing, conversion, JSON), not an engine. Reads
// it does not override go to an empty memstore.
type FixedStore struct {
	store.Store
	traces [][]model.Span
	sums   []model.TraceSummary
}

// NewFixedStore precomputes traces SynthTrace(0..traces-1, spansPerTrace).
func NewFixedStore(traces, spansPerTrace int) *FixedStore {
	fs := &FixedStore{Store: memstore.New()}
	for i := 0; i < traces; i++ {
		t := SynthTrace(i, spansPerTrace)
		fs.traces = append(fs.traces, t)
		fs.sums = append(fs.sums, model.Summarize(t))
	}
	return fs
}

// Trace returns the first trace whatever the id.
func (f *FixedStore) Trace(context.Context, model.TraceID, store.TimeRange) ([]model.Span, error) {
	return f.traces[0], nil
}

// Search returns the first q.Limit summaries.
func (f *FixedStore) Search(_ context.Context, q store.Query) ([]model.TraceSummary, error) {
	return f.sums[:min(q.Limit, len(f.sums))], nil
}

// ScanTraces visits the first q.Limit traces.
func (f *FixedStore) ScanTraces(_ context.Context, q store.Query, fn func([]model.Span) error) error {
	for _, t := range f.traces[:min(q.Limit, len(f.traces))] {
		if err := fn(t); err != nil {
			return err
		}
	}
	return nil
}

// BenchGet benchmarks GET path on h, failing on any status but 200, and
// reports the response size.
func BenchGet(b *testing.B, h http.Handler, path string) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	b.ReportAllocs()
	b.ResetTimer()
	var bytes int
	cpu := processCPU()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		bytes = rec.Body.Len()
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(bytes), "resp_bytes")
}

// BenchGetCold is BenchGet with the engine's page cache of trace reads
// off: every request reads its traces' pages as the first one does.
func BenchGetCold(b *testing.B, h http.Handler, path string) {
	defer engine.SetTracePageCache(engine.SetTracePageCache(0))
	BenchGet(b, h, path)
}

// MemstoreWith returns an in-memory store holding SynthTrace(0..traces-1,
// spansPerTrace), for end-to-end benchmarks.
func MemstoreWith(b *testing.B, traces, spansPerTrace int) *memstore.Store {
	st := memstore.New()
	for i := 0; i < traces; i++ {
		if err := st.Write(context.Background(), SynthTrace(i, spansPerTrace)); err != nil {
			b.Fatal(err)
		}
	}
	return st
}

// BenchGetEach benchmarks GET prefix+suffixes[i % len], so lookups spread
// over several keys rather than one cached one.
func BenchGetEach(b *testing.B, h http.Handler, prefix string, suffixes []string) {
	reqs := make([]*http.Request, len(suffixes))
	for i, s := range suffixes {
		reqs[i] = httptest.NewRequest(http.MethodGet, prefix+s, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	cpu := processCPU()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := reqs[i%len(reqs)]
		i++
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", req.URL, rec.Code, rec.Body)
		}
	}
	reportCPU(b, cpu)
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time per operation since start: on a
// shared machine wall time per op swings with other work, CPU time
// much less (GC included, as the requests cause it).
func reportCPU(b *testing.B, start time.Duration) {
	if start > 0 && b.N > 0 {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N)/1e6, "cpu-ms/op")
	}
}

package engine

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/s3store"
)

// Reads from S3 with a cold and a warm range cache. Run against MinIO:
//
//	TRACEDX_TEST_S3_ENDPOINT=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//	TRACEDX_BENCH_SPANS=1000000 go test -run '^$' -bench 'S3' -benchtime 200x ./internal/store/engine/
//
// TRACEDX_TEST_S3_LATENCY=10ms adds that much to every request, as a
// remote region would. Cold empties the range cache before every query
// (block indexes stay in memory, as they always are once a block is
// opened); warm repeats queries whose ranges are cached.
func BenchmarkS3TraceByID(b *testing.B) {
	f, st := s3Fixture(b)
	r := rand.New(rand.NewPCG(3, 4))
	// Few enough traces that the ranges they touch stay in the range
	// cache (each lookup reads a page of every column: a few MiB).
	hot := f.ids[:8]
	read := func(id model.TraceID) {
		spans, err := f.e.Trace(context.Background(), id, store.TimeRange{})
		if err != nil || len(spans) == 0 {
			b.Fatalf("trace %s: %d spans, %v", id, len(spans), err)
		}
	}
	b.Run("cold", func(b *testing.B) {
		// Cold means nothing of the trace in memory: no cached byte ranges
		// and no cached decoded pages.
		defer withPageCache(0)()
		cpu, gets := processCPU(), s3Gets(b, st)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			st.DropCache()
			id := f.ids[r.IntN(len(f.ids))]
			b.StartTimer()
			read(id)
		}
		reportCPU(b, cpu)
		reportGets(b, st, gets)
		reportFixture(b, f)
	})
	warm := func(b *testing.B) {
		for _, id := range hot {
			read(id)
		}
		b.ResetTimer()
		cpu := processCPU()
		for i := 0; i < b.N; i++ {
			read(hot[i%len(hot)])
		}
		reportCPU(b, cpu)
	}
	b.Run("warm", warm)
	// Byte ranges cached, decoded pages not: the cost of decoding a trace
	// whose pages were not read recently, without the network.
	b.Run("warm-ranges-only", func(b *testing.B) {
		defer withPageCache(0)()
		warm(b)
	})
}

func BenchmarkS3Search(b *testing.B) {
	f, st := s3Fixture(b)
	queries := []store.Query{}
	for _, svc := range genServices {
		queries = append(queries, store.Query{Service: svc, Limit: 20})
	}
	spanQ := store.Query{Service: "cart", MinDuration: 20e6, Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpEq, Value: model.Str("postgresql")}}, Limit: 20}
	run := func(b *testing.B, cold bool, q func(i int) store.Query) {
		gets := s3Gets(b, st)
		defer reportGets(b, st, gets)
		for i := 0; i < b.N; i++ {
			if cold {
				b.StopTimer()
				st.DropCache()
				b.StartTimer()
			}
			if _, err := f.e.Search(context.Background(), q(i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	byService := func(i int) store.Query { return queries[i%len(queries)] }
	bySpan := func(int) store.Query { return spanQ }
	b.Run("service/cold", func(b *testing.B) { run(b, true, byService) })
	b.Run("service/warm", func(b *testing.B) { run(b, false, byService) })
	b.Run("span-filter/cold", func(b *testing.B) { run(b, true, bySpan) })
	b.Run("span-filter/warm", func(b *testing.B) { run(b, false, bySpan) })
}

func s3Fixture(b *testing.B) (*fixture, *s3store.Storage) {
	if !onS3() {
		b.Skip("set TRACEDX_TEST_S3_ENDPOINT to benchmark reads from S3")
	}
	f := getFixture(b)
	st, ok := testStorage(f.dir).(*s3store.Storage)
	if !ok {
		b.Fatal("fixture not on S3")
	}
	return f, st
}

// s3Gets returns the ranged GETs and bytes downloaded so far.
func s3Gets(b *testing.B, st *s3store.Storage) [2]float64 {
	reg := prometheus.NewPedanticRegistry()
	for _, c := range st.Collectors() {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var out [2]float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "tracedx_s3_requests_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "op" && l.GetValue() == "get_range" {
						out[0] += m.GetCounter().GetValue()
					}
				}
			case "tracedx_s3_downloaded_bytes_total":
				out[1] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// reportGets reports ranged GETs and KiB downloaded per operation since
// start: what a cold read costs in round trips on a real network.
func reportGets(b *testing.B, st *s3store.Storage, start [2]float64) {
	if b.N == 0 {
		return
	}
	now := s3Gets(b, st)
	b.ReportMetric((now[0]-start[0])/float64(b.N), "gets/op")
	b.ReportMetric((now[1]-start[1])/float64(b.N)/1024, "KiB-got/op")
}

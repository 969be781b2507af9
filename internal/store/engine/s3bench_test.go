package engine

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

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
		cpu := processCPU()
		defer reportCPU(b, cpu)
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

// BenchmarkS3Restart measures a node restarted on the fixture's bucket:
// opening the engine (every block's meta, trace index, and data file's
// footer and page index) and its first span-filter search, each reported
// with its GETs. "empty-local-cache" starts with an empty local disk
// cache, as a new node; "local-index-cache" with the disk cache a
// previous start filled (metas, trace indexes, data file tails), as a
// restarted one. The range cache in memory is empty in both.
func BenchmarkS3Restart(b *testing.B) {
	f, _ := s3Fixture(b)
	spanQ := store.Query{Service: "cart", MinDuration: 20e6, Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpEq, Value: model.Str("postgresql")}}, Limit: 20}
	restart := func(b *testing.B, cacheDir string) (open, search time.Duration, openGets, searchGets [2]float64) {
		cfg := testS3Config(f.dir)
		cfg.SpoolDir = b.TempDir()
		cfg.CacheDir = cacheDir
		st, err := s3store.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		zero := s3Requests(b, st)
		t0 := time.Now()
		e, err := Open(context.Background(), Options{Dir: b.TempDir(), Storage: st, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		t1 := time.Now()
		opened := s3Requests(b, st)
		if _, err := e.Search(context.Background(), spanQ); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		searched := s3Requests(b, st)
		for i := range 2 {
			openGets[i], searchGets[i] = opened[i]-zero[i], searched[i]-opened[i]
		}
		return t1.Sub(t0), t2.Sub(t1), openGets, searchGets
	}
	run := func(b *testing.B, cacheDir func() string) {
		var open, search time.Duration
		var og, sg [2]float64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := cacheDir()
			b.StartTimer()
			o, s, g1, g2 := restart(b, dir)
			open, search = open+o, search+s
			for k := range 2 {
				og[k], sg[k] = og[k]+g1[k], sg[k]+g2[k]
			}
		}
		n := float64(b.N)
		b.ReportMetric(float64(open.Milliseconds())/n, "open-ms")
		b.ReportMetric(float64(search.Milliseconds())/n, "search-ms")
		b.ReportMetric(og[0]/n, "open-requests")
		b.ReportMetric(sg[0]/n, "search-requests")
		b.ReportMetric(sg[1]/n/1024, "search-KiB-got")
	}
	b.Run("empty-local-cache", func(b *testing.B) { run(b, b.TempDir) })
	b.Run("local-index-cache", func(b *testing.B) {
		dir := b.TempDir()
		restart(b, dir) // fills it
		run(b, func() string { return dir })
	})
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
func s3Gets(b *testing.B, st *s3store.Storage) [2]float64 { return s3Count(b, st, "get_range") }

// s3Requests returns the requests of any kind (HEAD, GET, ranged GET) and
// the bytes downloaded so far.
func s3Requests(b testing.TB, st *s3store.Storage) [2]float64 { return s3Count(b, st, "") }

// s3Count returns the requests of operation op ("": all) and the bytes
// downloaded so far.
func s3Count(b testing.TB, st *s3store.Storage, op string) [2]float64 {
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
					if l.GetName() == "op" && (op == "" || l.GetValue() == op) {
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

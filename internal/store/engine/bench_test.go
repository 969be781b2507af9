package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Benchmarks. Reproduce with
//
//	go test -run '^$' -bench . -benchtime 5x ./internal/store/engine/
//	TRACEDX_BENCH_SPANS=10000000 go test -run '^$' -bench 'TraceByID|Search' -benchtime 200x -timeout 60m ./internal/store/engine/
//
// TRACEDX_BENCH_SPANS sets the size of the stored data set for the read
// benchmarks (default 1M). TRACEDX_BENCH_DIR keeps the data set in that
// directory (and, on S3, under the bucket prefix named after it) when the
// run ends, and a later run with the same directory reopens it instead of
// building it again: a 10M-span data set takes minutes to write, and code
// compared before and after then reads the very same blocks.

// BenchmarkWrite measures durable ingest: 8 concurrent writers, batches of
// 500 realistic spans with fresh random trace ids, every Write waiting for
// fsync (shared by group commit). One op is one batch.
//
// "sustained" includes cutting the head into Parquet blocks at the rate
// spans arrive (traces go idle after 2 s), the steady state of a server;
// "wal+head" keeps everything in the head (no cuts during the run), which
// shows what the write path itself (encode, WAL, fsync, head insert)
// sustains.
func BenchmarkWrite(b *testing.B) {
	b.Run("sustained", func(b *testing.B) {
		benchWrite(b, Options{Dir: b.TempDir(), IdleTimeout: 2 * time.Second})
	})
	b.Run("sustained-head64MiB", func(b *testing.B) {
		benchWrite(b, Options{Dir: b.TempDir(), IdleTimeout: 2 * time.Second, HeadMaxBytes: 64 << 20})
	})
	b.Run("wal+head", func(b *testing.B) {
		benchWrite(b, Options{Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, HeadMaxBytes: 8 << 30})
	})
}

func benchWrite(b *testing.B, o Options) {
	e, err := Open(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const batchSize = 500
	g := newGen(42)
	var batches [][]model.Span
	for i := 0; i < 64; i++ {
		batches = append(batches, g.batch(batchSize, uint64(time.Now().UnixNano()), 1e6))
	}
	var next, overloaded atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			local := make([]model.Span, batchSize+64)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				src := batches[i%int64(len(batches))]
				local = append(local[:0], src...)
				// Fresh trace ids: rewrite them per trace, like new requests.
				var prev, cur model.TraceID
				for k := range local {
					if k == 0 || local[k].TraceID != prev {
						prev = local[k].TraceID
						cur[0], cur[1] = byte(r.Uint32()), byte(r.Uint32())
						for j := 2; j < 16; j += 8 {
							v := r.Uint64()
							for m := 0; m < 8 && j+m < 16; m++ {
								cur[j+m] = byte(v >> (8 * m))
							}
						}
					}
					local[k].TraceID = cur
				}
				for {
					err := e.Write(context.Background(), local)
					if errors.Is(err, store.ErrOverloaded) {
						overloaded.Add(1)
						time.Sleep(5 * time.Millisecond)
						continue
					}
					if err != nil {
						b.Error(err)
						return
					}
					break
				}
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	st := e.Stats()
	b.ReportMetric(float64(st.SpansWrittenTotal)/el.Seconds(), "spans/s")
	b.ReportMetric(float64(st.WriteBatchesTotal)/float64(max(st.WALFsyncsTotal, 1)), "batches/fsync")
	b.ReportMetric(float64(overloaded.Load()), "overloaded")
	b.ReportMetric(peakRSSMiB(), "peak-RSS-MiB")
}

// peakRSSMiB is the process's peak resident set (VmHWM), Linux only.
func peakRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// TestMain removes the read benchmarks' data set when the run ends, from
// the bucket too when it was built on S3.
func TestMain(m *testing.M) {
	code := m.Run()
	if fix.e != nil {
		fix.e.Close()
		if !fix.kept {
			if onS3() {
				if err := removeS3Prefix(context.Background(), fix.dir); err != nil {
					fmt.Fprintf(os.Stderr, "benchmark data set left in the bucket: %v\n", err)
					code = max(code, 1)
				}
			}
			os.RemoveAll(fix.dir)
		}
	}
	os.Exit(code)
}

type fixture struct {
	dir   string
	e     *Engine
	ids   []model.TraceID
	spans int64
	bytes int64
	build time.Duration
	kept  bool // in TRACEDX_BENCH_DIR: not removed at the end
	err   error
}

// fixtureFile, in a kept data set's directory, records what getFixture
// learnt while building it.
const fixtureFile = "fixture.json"

type keptFixture struct {
	Asked        int64 // TRACEDX_BENCH_SPANS when it was built
	Spans, Bytes int64
	IDs          []model.TraceID
}

var (
	fixOnce sync.Once
	fix     fixture
)

func benchSpans() int64 {
	if v, err := strconv.ParseInt(os.Getenv("TRACEDX_BENCH_SPANS"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// getFixture ingests the data set through Write, flushes and compacts it,
// once per process.
func getFixture(b *testing.B) *fixture {
	fixOnce.Do(func() {
		if dir := os.Getenv("TRACEDX_BENCH_DIR"); dir != "" {
			fix.dir, fix.kept = dir, true
			if reopenFixture() || fix.err != nil {
				return
			}
		} else {
			dir, err := os.MkdirTemp("", "tracedx-bench-")
			if err != nil {
				fix.err = err
				return
			}
			fix.dir = dir
		}
		dir := fix.dir
		// On S3 when TRACEDX_TEST_S3_ENDPOINT is set (see storage_test.go).
		e, err := Open(context.Background(), Options{Dir: dir, Storage: testStorage(dir), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
		if err != nil {
			fix.err = err
			return
		}
		fix.e = e
		start := time.Now()
		total := benchSpans()
		g := newGen(99)
		now := uint64(time.Now().Add(-24 * time.Hour).UnixNano())
		// Spread over 24 h like a day of traffic.
		step := uint64(24*3600e9) / uint64(total/17+1)
		var written int64
		var ts uint64 = now
		for written < total {
			batch := g.batch(500, ts, step)
			ts += uint64(len(batch)/17+1) * step
			if err := e.Write(context.Background(), batch); err != nil {
				fix.err = err
				return
			}
			for i := 0; i < len(batch); i += 17 {
				if len(fix.ids) < 100_000 {
					fix.ids = append(fix.ids, batch[i].TraceID)
				}
			}
			written += int64(len(batch))
			if e.head.bytes.Load() > e.opts.HeadMaxBytes/3 {
				if err := e.Flush(context.Background()); err != nil {
					fix.err = err
					return
				}
			}
		}
		if err := e.Flush(context.Background()); err != nil {
			fix.err = err
			return
		}
		if err := e.Compact(context.Background()); err != nil {
			fix.err = err
			return
		}
		fix.build = time.Since(start)
		st := e.Stats()
		fix.spans, fix.bytes = st.BlockSpans, st.BlockBytes
		if fix.kept {
			fix.err = saveFixture()
		}
		runtime.GC()
	})
	if fix.err != nil {
		b.Fatal(fix.err)
	}
	return &fix
}

// reopenFixture opens the data set kept in fix.dir, if a run built it
// there, and reports whether it did.
func reopenFixture() bool {
	raw, err := os.ReadFile(filepath.Join(fix.dir, fixtureFile))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	var k keptFixture
	if err == nil {
		err = json.Unmarshal(raw, &k)
	}
	if err == nil && k.Asked != benchSpans() {
		err = fmt.Errorf("built with TRACEDX_BENCH_SPANS=%d, not %d", k.Asked, benchSpans())
	}
	if err != nil {
		fix.err = fmt.Errorf("kept data set %s: %w", fix.dir, err)
		return false
	}
	e, err := Open(context.Background(), Options{Dir: fix.dir, Storage: testStorage(fix.dir), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	if err != nil {
		fix.err = fmt.Errorf("reopen kept data set %s: %w", fix.dir, err)
		return false
	}
	fix.e, fix.ids, fix.spans, fix.bytes = e, k.IDs, k.Spans, k.Bytes
	return true
}

func saveFixture() error {
	raw, err := json.Marshal(keptFixture{Asked: benchSpans(), Spans: fix.spans, Bytes: fix.bytes, IDs: fix.ids})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(fix.dir, fixtureFile), raw, 0o644); err != nil {
		return fmt.Errorf("keep data set: %w", err)
	}
	return nil
}

func reportFixture(b *testing.B, f *fixture) {
	b.ReportMetric(float64(f.spans), "stored-spans")
	b.ReportMetric(float64(f.bytes)/float64(f.spans), "disk-bytes/span")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(peakRSSMiB(), "peak-RSS-MiB")
}

// BenchmarkTraceByID reads random traces of the data set: "cached" with
// the page cache of trace reads (hits where lookups share pages),
// "uncached" with it off, the cost of a trace whose pages were not read
// recently.
func BenchmarkTraceByID(b *testing.B) {
	f := getFixture(b)
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cacheCases {
		b.Run(tc.name, func(b *testing.B) {
			defer withPageCache(tc.bytes)()
			cpu := processCPU()
			for b.Loop() {
				id := f.ids[r.IntN(len(f.ids))]
				spans, err := f.e.Trace(context.Background(), id, store.TimeRange{})
				if err != nil || len(spans) == 0 {
					b.Fatalf("trace %s: %d spans, %v", id, len(spans), err)
				}
			}
			reportCPU(b, cpu)
			reportFixture(b, f)
		})
	}
}

func BenchmarkSearchByService(b *testing.B) {
	f := getFixture(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		svc := genServices[i%len(genServices)]
		res, err := f.e.Search(context.Background(), store.Query{Service: svc, Limit: 20})
		if err != nil || len(res) != 20 {
			b.Fatalf("search %s: %d results, %v", svc, len(res), err)
		}
	}
	b.StopTimer()
	reportFixture(b, f)
}

// BenchmarkSearchWholeTraces is what the APIs returning whole traces do
// (Jaeger /api/traces, Tempo /api/search): a search by service for 20
// summaries, then the 20 traces read together (Engine.Traces), each with
// its time range as hint. The services rotate, so "cached" repeats a
// query only every few iterations.
func BenchmarkSearchWholeTraces(b *testing.B) {
	f := getFixture(b)
	for _, tc := range cacheCases {
		b.Run(tc.name, func(b *testing.B) {
			defer withPageCache(tc.bytes)()
			cpu := processCPU()
			_, missed, _ := tracePages.stats()
			i := 0
			for b.Loop() {
				svc := genServices[i%len(genServices)]
				i++
				res, err := f.e.Search(context.Background(), store.Query{Service: svc, Limit: 20})
				if err != nil || len(res) != 20 {
					b.Fatalf("search %s: %d results, %v", svc, len(res), err)
				}
				refs := make([]store.TraceRef, len(res))
				for k, sum := range res {
					refs[k] = store.TraceRef{ID: sum.TraceID, Hint: store.TimeRange{Start: sum.StartUnixNano, End: sum.EndUnixNano + 1}}
				}
				traces, err := f.e.Traces(context.Background(), refs)
				if err != nil {
					b.Fatal(err)
				}
				for k, spans := range traces {
					if len(spans) != res[k].SpanCount {
						b.Fatalf("trace %s: %d spans, want %d", res[k].TraceID, len(spans), res[k].SpanCount)
					}
				}
			}
			reportCPU(b, cpu)
			// Pages read from the file (lookups missing the page cache).
			_, misses, _ := tracePages.stats()
			b.ReportMetric(float64(misses-missed)/float64(b.N), "pages-read/op")
		})
	}
}

var cacheCases = []struct {
	name  string
	bytes int64
}{{"cached", defaultPageCacheBytes}, {"uncached", 0}}

// withPageCache gives trace reads an empty page cache of max bytes until
// the returned function restores the default one.
func withPageCache(max int64) func() {
	old := tracePages
	tracePages = newPageCache(max)
	return func() { tracePages = old }
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time per operation since start: on
// the shared development machine wall time per op swings with other work,
// CPU time much less (GC included).
func reportCPU(b *testing.B, start time.Duration) {
	if start > 0 && b.N > 0 {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N)/1e6, "cpu-ms/op")
	}
}

// BenchmarkSearchSpanFilter is a span-level query (needs span data, not
// just summaries): slow database calls with a given statement.
func BenchmarkSearchSpanFilter(b *testing.B) {
	f := getFixture(b)
	q := store.Query{Service: "cart", MinDuration: 20e6, Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpEq, Value: model.Str("postgresql")}}, Limit: 20}
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		if _, err := f.e.Search(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(f.bytes)/float64(f.spans), "disk-B/span")
}

// BenchmarkCompact measures compaction CPU per span on one core's worth of
// work: 8 cuts of 32k realistic spans, then "level0" converts the 8
// level-0 blocks into one Parquet block (what every span goes through once),
// "level0-loadgen" does the same with the harness's spans (loadgenBatch),
// and "parquet-merge" merges 8 Parquet blocks (each converted on its own
// first) row by row, the path of higher levels.
func BenchmarkCompact(b *testing.B) {
	const cuts, perCut = 8, 32_000
	setup := func(b *testing.B, convertEach, loadgen bool) *Engine {
		e, err := Open(context.Background(), Options{Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		g := newGen(77)
		rng := rand.New(rand.NewPCG(77, 78))
		ts := uint64(time.Now().Add(-time.Hour).UnixNano())
		for c := 0; c < cuts; c++ {
			for n := 0; n < perCut; n += 500 {
				batch := g.batch(500, ts, 1e6)
				if loadgen {
					batch = loadgenBatch(rng, 500, time.Unix(0, int64(ts)))
				}
				if err := e.Write(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				ts += 30e6
			}
			if err := e.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			if convertEach {
				if err := e.convertAll(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		}
		return e
	}
	for _, tc := range []struct {
		name                 string
		convertEach, loadgen bool
	}{{"level0", false, false}, {"level0-loadgen", false, true}, {"parquet-merge", true, false}} {
		b.Run(tc.name, func(b *testing.B) {
			var spans, bytes int64
			var took, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := setup(b, tc.convertEach, tc.loadgen)
				spans += e.Stats().BlockSpans
				b.StartTimer()
				start, cpu0 := time.Now(), processCPU()
				if err := e.Compact(context.Background()); err != nil {
					b.Fatal(err)
				}
				took += time.Since(start)
				cpu += processCPU() - cpu0
				b.StopTimer()
				st := e.Stats()
				if st.Blocks != 1 {
					b.Fatalf("%d blocks after compaction", st.Blocks)
				}
				bytes += st.BlockBytes
				e.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(took.Nanoseconds())/float64(spans)/1e3, "µs/span")
			// CPU time, unlike wall time, holds still on a shared machine.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(spans)/1e3, "cpu-µs/span")
			b.ReportMetric(float64(bytes)/float64(spans), "disk-B/span")
		})
	}
}

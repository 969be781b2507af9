package apitest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// EngineSpans is the size of the data set of the engine-backed API
// benchmarks: TRACEDX_BENCH_SPANS, default 200k (10k traces of 20 spans).
func EngineSpans() int {
	if n, err := strconv.Atoi(os.Getenv("TRACEDX_BENCH_SPANS")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// EngineWith opens the embedded engine in a temporary directory and stores
// SynthTrace(0..traces-1, spansPerTrace), cut into blocks and compacted to
// Parquet as a settled server holds them, for benchmarks of the query APIs over the
// real engine. The newest trace is SynthTrace(traces-1, …).
func EngineWith(b *testing.B, traces, spansPerTrace int) *engine.Engine {
	b.Helper()
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	const perBatch = 500
	var batch []model.Span
	for i := 0; i < traces; i++ {
		batch = append(batch, SynthTrace(i, spansPerTrace)...)
		if len(batch) >= perBatch || i == traces-1 {
			if err := e.Write(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		// Several blocks, as a server cuts its head periodically.
		if (i+1)%20_000 == 0 {
			if err := e.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := e.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	// TRACEDX_BENCH_LEVEL0=1 leaves the blocks in the level-0 format, where
	// a live server's newest traces are until compaction converts them.
	if os.Getenv("TRACEDX_BENCH_LEVEL0") == "" {
		if err := e.Compact(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

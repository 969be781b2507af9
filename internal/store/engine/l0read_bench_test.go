package engine

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// BenchmarkLevel0TraceByID reads traces of the harness's shape by id from
// a level-0 block, as a live server's trace by id does for the newest
// traces, which a search has just found: it cycles over 20 traces, whose
// chunks are in the query cache after the first round, so the figure is
// the decoding of one trace (allocations included).
func BenchmarkLevel0TraceByID(b *testing.B) {
	ctx := context.Background()
	e, err := Open(ctx, testOpts(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	base := time.Now().Add(-10 * time.Minute)
	// The first 20 traces written, in the order written, so that every
	// run reads the same ones.
	seen := map[model.TraceID]bool{}
	var order []model.TraceID
	for range 3000 / 20 {
		spans := loadgenBatch(rng, 1, base)
		for i := range spans {
			if id := spans[i].TraceID; !seen[id] && len(order) < 20 {
				seen[id] = true
				order = append(order, id)
			}
		}
		if err := e.Write(ctx, spans); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 == 0 || pq != 0 {
		b.Fatalf("%d level-0 and %d Parquet blocks, want only level-0", l0, pq)
	}
	b.ReportAllocs()
	cpu := processCPU()
	i := 0
	for b.Loop() {
		id := order[i%len(order)]
		i++
		if spans, err := e.Trace(ctx, id, store.TimeRange{}); err != nil || len(spans) == 0 {
			b.Fatalf("trace %s: %d spans, %v", id, len(spans), err)
		}
	}
	reportCPU(b, cpu)
}

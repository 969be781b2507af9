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
	benchLevel0Reads(b, func(e *Engine, id model.TraceID) (int, error) {
		spans, err := e.Trace(context.Background(), id, store.TimeRange{})
		return len(spans), err
	})
}

// BenchmarkLevel0TracePage is BenchmarkLevel0TraceByID through TracePage,
// as /api/v1/traces/{id} reads a trace: the first page, holding the
// whole trace.
func BenchmarkLevel0TracePage(b *testing.B) {
	benchLevel0Reads(b, func(e *Engine, id model.TraceID) (int, error) {
		page, err := e.TracePage(context.Background(), id, store.TimeRange{}, 0, 10_000)
		return len(page.Spans), err
	})
}

// benchLevel0Reads times read over the traces of level0Traces in turn.
func benchLevel0Reads(b *testing.B, read func(*Engine, model.TraceID) (int, error)) {
	e, order := level0Traces(b)
	b.ReportAllocs()
	cpu := processCPU()
	i := 0
	for b.Loop() {
		id := order[i%len(order)]
		i++
		if n, err := read(e, id); err != nil || n == 0 {
			b.Fatalf("trace %s: %d spans, %v", id, n, err)
		}
	}
	reportCPU(b, cpu)
}

// level0Traces opens an engine holding 3,000 traces of the harness's
// shape in a level-0 block and returns the ids of the first 20 written.
func level0Traces(b *testing.B) (*Engine, []model.TraceID) {
	ctx := context.Background()
	e, err := Open(ctx, testOpts(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
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
	return e, order
}

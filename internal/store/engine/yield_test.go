package engine

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// The head cut and compaction hand the processor back between units of
// work through Options.YieldBackground (the server's waits while queries
// run), and what they write is complete however often they yielded.
func TestCompactionCallsYieldHook(t *testing.T) {
	dir := t.TempDir()
	o := testOpts(dir)
	var yields atomic.Int64
	o.YieldBackground = func(ctx context.Context) {
		if ctx == nil {
			t.Error("YieldBackground got no context")
		}
		yields.Add(1)
	}
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	g := newGen(11)
	var all []model.Span
	for i := range 3 {
		spans := g.batch(3000, 1_700_000_000e9+uint64(i)*10e9, 5e6)
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	traces := len(groupByTrace(all))
	// The head cuts wrote every trace once.
	if got, want := yields.Load(), int64(traces/128); got < want {
		t.Fatalf("YieldBackground called %d times cutting %d traces, want at least %d", got, traces, want)
	}
	yields.Store(0)
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 0 || pq == 0 {
		t.Fatalf("after Compact: %d level-0 and %d Parquet blocks, want only Parquet", l0, pq)
	}
	// One call per 128 traces converted.
	if got, want := yields.Load(), int64(traces/128); got < want {
		t.Fatalf("YieldBackground called %d times converting %d traces, want at least %d", got, traces, want)
	}
	checkAllTraces(t, e, all)
}

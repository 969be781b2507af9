package engine

import (
	"context"
	"sync"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// readBackSetup writes n traces in two halves, each half cut early into
// its own level-0 block, so every trace is two fragments read back
// through the chunk scan (more than 64 wanted traces per block).
func readBackSetup(tb testing.TB, n int, onComplete func(CompletedTrace)) (*Engine, []model.TraceID, []model.Span) {
	tb.Helper()
	o := testOpts(tb.TempDir())
	o.OnTraceComplete = onComplete
	e, err := Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	g := newGen(31)
	var halves [2][]model.Span
	var all []model.Span
	var ids []model.TraceID
	for i := 0; i < n; i++ {
		tr := g.trace(1_700_000_000e9 + uint64(i)*1e9)
		halves[0] = append(halves[0], tr[:len(tr)/2]...)
		halves[1] = append(halves[1], tr[len(tr)/2:]...)
		all = append(all, tr...)
		ids = append(ids, tr[0].TraceID)
	}
	ctx := context.Background()
	for _, h := range halves {
		if err := e.Write(ctx, h); err != nil {
			tb.Fatal(err)
		}
		e.flushMu.Lock()
		err := e.cutToBlock(ctx, func(*headTrace) bool { return true }, 0)
		e.flushMu.Unlock()
		if err != nil {
			tb.Fatal(err)
		}
	}
	return e, ids, all
}

// Traces read back from several level-0 blocks complete with every span
// of every fragment, intact after the next batch reuses nothing of them.
func TestReadBackJoinsLevel0Fragments(t *testing.T) {
	var mu sync.Mutex
	got := map[model.TraceID][]model.Span{}
	e, ids, all := readBackSetup(t, 300, func(c CompletedTrace) {
		mu.Lock()
		got[c.ID] = append(got[c.ID], c.Spans...)
		mu.Unlock()
	})
	defer e.Close()
	if err := e.completeBatch(context.Background(), ids); err != nil {
		t.Fatal(err)
	}
	want := groupByTrace(all)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	// A second batch decodes into fresh buffers; the first results must
	// not change.
	if err := e.completeBatch(context.Background(), ids[:100]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got[ids[99]]) == 2*len(want[ids[99]])
	})
	mu.Lock()
	defer mu.Unlock()
	for id, w := range want {
		g := got[id]
		if len(g) > len(w) {
			g = g[:len(w)] // the first completion
		}
		sameSpans(t, w, g)
	}
}

// BenchmarkCompleteBatchReadBack measures completing early-cut traces by
// read-back from level-0 blocks (B/op: the buffers a batch holds).
func BenchmarkCompleteBatchReadBack(b *testing.B) {
	e, ids, _ := readBackSetup(b, 2000, func(CompletedTrace) {})
	defer e.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := e.completeBatch(context.Background(), ids); err != nil {
			b.Fatal(err)
		}
	}
}

package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// readBackSetup writes n traces in two halves, each half cut early into
// its own level-0 block, so every trace is two fragments read back
// through the chunk scan (more than 64 wanted traces per block).
func readBackSetup(tb testing.TB, n int, onComplete func(CompletedTrace)) (*Engine, []model.TraceID, []model.Span) {
	tb.Helper()
	return readBackSetupWith(tb, n, func(o *Options) { o.OnTraceComplete = onComplete })
}

// readBackSetupWith is readBackSetup with the options set by opts.
func readBackSetupWith(tb testing.TB, n int, opts func(*Options)) (*Engine, []model.TraceID, []model.Span) {
	tb.Helper()
	o := testOpts(tb.TempDir())
	opts(&o)
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

// collectSpans is an OnTraceComplete that appends each completion's spans
// to got under mu.
func collectSpans(mu *sync.Mutex, got map[model.TraceID][]model.Span) func(CompletedTrace) {
	return func(c CompletedTrace) {
		mu.Lock()
		got[c.ID] = append(got[c.ID], c.Spans...)
		mu.Unlock()
	}
}

// Traces read back from several level-0 blocks complete with every span
// of every fragment, intact after the next batch reuses nothing of them.
func TestReadBackJoinsLevel0Fragments(t *testing.T) {
	var mu sync.Mutex
	got := map[model.TraceID][]model.Span{}
	e, ids, all := readBackSetup(t, 300, collectSpans(&mu, got))
	defer e.Close()
	if err := e.completeBatch(context.Background(), ids, nil); err != nil {
		t.Fatal(err)
	}
	want := groupByTrace(all)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	// A second batch decodes into fresh buffers; the first results must
	// not change.
	if err := e.completeBatch(context.Background(), ids[:100], nil); err != nil {
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
		if err := e.completeBatch(context.Background(), ids, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// Read back in groups far smaller than the batch, shuffled ids still
// complete with every span of both fragments, once each.
func TestReadBackInGroupsCompletesEveryTrace(t *testing.T) {
	old := readBackBytes
	readBackBytes = 4 << 10
	defer func() { readBackBytes = old }()
	var mu sync.Mutex
	got := map[model.TraceID][]model.Span{}
	e, ids, all := readBackSetup(t, 300, collectSpans(&mu, got))
	defer e.Close()
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	if err := e.completeBatch(context.Background(), ids, nil); err != nil {
		t.Fatal(err)
	}
	want := groupByTrace(all)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	e.Close() // the completions are all delivered
	mu.Lock()
	defer mu.Unlock()
	for id, w := range want {
		sameSpans(t, w, got[id])
	}
}

func TestGroupEndsBoundsEachGroup(t *testing.T) {
	ids := make([]model.TraceID, 7)
	for i := range ids {
		ids[i][0] = byte(i)
	}
	size := map[model.TraceID]int{ids[0]: 3, ids[1]: 3, ids[2]: 5, ids[3]: 9, ids[4]: 1, ids[5]: 1}
	// ids[3] is over the bound alone; ids[6] has no level-0 bytes.
	if got, want := groupEnds(ids, size, 6), []int{2, 3, 4, 7}; !slices.Equal(got, want) {
		t.Fatalf("groups end at %v, want %v", got, want)
	}
	if got := groupEnds(nil, size, 6); len(got) != 0 {
		t.Fatalf("no ids: groups end at %v", got)
	}
}

// A consumer with room for some of a group's traces gets those read back
// and the rest declined unread: every trace read back is taken.
func TestReadBackReadsOnlyWhatTheConsumerHasRoomFor(t *testing.T) {
	// Like the analysis queue: room for room spans, filled by each trace
	// taken, never drained during the test.
	var queued atomic.Int64
	var room int64
	var mu sync.Mutex
	got := map[model.TraceID]CompletedTrace{}
	e, ids, all := readBackSetupWith(t, 300, func(o *Options) {
		o.TakeSpans = func(c Completing) bool { return queued.Load()+int64(c.Spans) <= room }
		o.OnTraceComplete = func(c CompletedTrace) {
			if !c.Declined {
				queued.Add(int64(len(c.Spans)))
			}
			mu.Lock()
			got[c.ID] = c
			mu.Unlock()
		}
	})
	defer e.Close()
	room = int64(len(all) / 3)
	// One group: its completions are all sent after it is read, so the
	// consumer's room is what it was before the group.
	if err := e.completeBatch(context.Background(), ids, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(ids) })
	want := groupByTrace(all)
	read := e.readBacks.Load()
	if read == 0 || read >= uint64(len(ids)) {
		t.Fatalf("%d of %d traces read back, want those a third of the spans holds", read, len(ids))
	}
	mu.Lock()
	defer mu.Unlock()
	var taken uint64
	for id, c := range got {
		if c.Declined {
			if len(c.Spans) != 0 {
				t.Errorf("declined trace %s came with %d spans", id, len(c.Spans))
			}
			continue
		}
		taken++
		sameSpans(t, want[id], c.Spans)
	}
	if taken != read {
		t.Errorf("%d traces completed with spans, %d read back", taken, read)
	}
	if q := queued.Load(); q > room {
		t.Errorf("%d spans taken, room for %d", q, room)
	}
}

// With no room for plain traces, the traces the consumer would take by
// the meta they were cut with (one that matters, to the analysis) are
// still read back, with every span, and only those.
func TestReadBackTakesHintedTracesWithoutRoom(t *testing.T) {
	var mu sync.Mutex
	got := map[model.TraceID]CompletedTrace{}
	chosen := map[model.TraceID]bool{}
	e, ids, all := readBackSetupWith(t, 300, func(o *Options) {
		o.TakeSpans = func(c Completing) bool {
			mu.Lock()
			defer mu.Unlock()
			return c.Summary != nil && chosen[c.Summary.TraceID]
		}
		o.OnTraceComplete = func(c CompletedTrace) {
			mu.Lock()
			got[c.ID] = c
			mu.Unlock()
		}
	})
	defer e.Close()
	mu.Lock()
	chosen[ids[7]], chosen[ids[150]] = true, true
	mu.Unlock()
	hints := map[model.TraceID][]byte{}
	e.pendingMu.Lock()
	for _, id := range ids {
		p := e.pending[id]
		if p == nil {
			e.pendingMu.Unlock()
			t.Fatalf("trace %s not pending after its early cut", id)
		}
		hints[id] = p.packed
	}
	e.pendingMu.Unlock()
	if err := e.completeBatch(context.Background(), ids, hints); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(ids) })
	if read := e.readBacks.Load(); read != 2 {
		t.Errorf("%d traces read back, want the 2 the consumer takes", read)
	}
	want := groupByTrace(all)
	mu.Lock()
	defer mu.Unlock()
	for id, c := range got {
		if chosen[id] {
			if c.Declined {
				t.Errorf("trace %s the consumer takes was declined", id)
				continue
			}
			sameSpans(t, want[id], c.Spans)
		} else if !c.Declined || len(c.Spans) != 0 {
			t.Errorf("trace %s: declined %v with %d spans, want declined without spans", id, c.Declined, len(c.Spans))
		}
	}
}

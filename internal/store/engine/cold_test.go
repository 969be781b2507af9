package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Traces cut under memory pressure complete from the cold tier once idle,
// with exactly the spans written. With a cold budget too small to keep
// them, they complete by reading blocks back instead, with the same result.
func TestEarlyCutTracesCompleteFromColdTier(t *testing.T) {
	for _, tc := range []struct {
		name      string
		budget    int64 // cold tier budget
		wantEvict bool
	}{
		// The test's traces compress to more than the default budget
		// (HeadMaxBytes/4 = 128 KiB here) while they wait, so "cold" gives
		// the tier room to hold them all.
		{name: "cold", budget: 64 << 20},
		{name: "evicted", budget: 1, wantEvict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			got := map[model.TraceID][]model.Span{}
			calls := map[model.TraceID]int{}
			o := testOpts(t.TempDir())
			o.IdleTimeout = 1500 * time.Millisecond
			o.FlushInterval = 20 * time.Millisecond
			o.HeadMaxBytes = 512 << 10
			o.OnTraceComplete = func(c CompletedTrace) {
				id, spans := c.ID, c.Spans
				mu.Lock()
				got[id] = spans
				calls[id]++
				mu.Unlock()
			}
			e := openT(t, o)
			defer e.Close()
			if tc.budget > 0 {
				e.pendingMu.Lock()
				e.cold.budget = tc.budget
				e.pendingMu.Unlock()
			}
			g := newGen(31)
			want := map[model.TraceID][]model.Span{}
			for i := 0; i < 300; i++ {
				tr := g.trace(1_700_000_000e9 + uint64(i)*1e6)
				want[tr[0].TraceID] = tr
				writeRetrying(t, e, tr)
				if i%50 == 49 {
					// Let the flusher cut what is older than 250 ms.
					time.Sleep(300 * time.Millisecond)
				}
			}
			e.pendingMu.Lock()
			cold := e.cold.seq
			e.pendingMu.Unlock()
			if cold == 0 {
				t.Fatalf("no trace went to the cold tier; stats %+v", e.Stats())
			}
			waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
			time.Sleep(o.IdleTimeout / 2) // no second completion may follow
			mu.Lock()
			defer mu.Unlock()
			for id, w := range want {
				if calls[id] != 1 {
					t.Fatalf("trace %s completed %d times", id, calls[id])
				}
				sameSpans(t, normSpans(w), normSpans(got[id]))
			}
			if rb := e.readBacks.Load(); tc.wantEvict != (rb > 0) {
				t.Fatalf("%d traces completed by reading blocks back (evictions expected: %v)", rb, tc.wantEvict)
			}
			e.pendingMu.Lock()
			defer e.pendingMu.Unlock()
			if len(e.pending) != 0 {
				t.Fatalf("%d traces still pending", len(e.pending))
			}
			if !tc.wantEvict && e.cold.bytes != 0 {
				t.Fatalf("cold tier still holds %d bytes after every trace completed", e.cold.bytes)
			}
		})
	}
}

// normSpans is normSpan over a copy of spans.
func normSpans(spans []model.Span) []model.Span {
	out := make([]model.Span, len(spans))
	for i, s := range spans {
		out[i] = normSpan(s)
	}
	return out
}

// normSpan makes nil and empty lists compare equal.
func normSpan(s model.Span) model.Span {
	if len(s.Attrs) == 0 {
		s.Attrs = nil
	}
	if len(s.Resource) == 0 {
		s.Resource = nil
	}
	if len(s.Events) == 0 {
		s.Events = nil
	}
	if len(s.Links) == 0 {
		s.Links = nil
	}
	return s
}

// A trace registered by a cut but not yet handed to the cold tier (the cut
// registers first, keepCold adds its spans after) may go idle in between
// on a starved CPU. The completion pass used to complete it from no parts
// and crash the server (index out of range); now it waits for the parts.
func TestPendingTraceWithoutPartsYetWaits(t *testing.T) {
	o := testOpts(t.TempDir())
	o.OnTraceComplete = func(CompletedTrace) {}
	e := openT(t, o)
	defer e.Close()
	id := model.TraceID{3, 1, 4}
	old := time.Now().Add(-2 * time.Hour).UnixNano()
	e.pendingMu.Lock()
	e.pending[id] = &pendingTrace{lastSeen: old}
	e.pendingQ = append(e.pendingQ, pendingRef{id, old})
	e.nPending.Store(1)
	e.pendingMu.Unlock()

	e.completePending(context.Background())

	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	if e.pending[id] == nil || len(e.pendingQ) != 1 {
		t.Fatalf("a trace without its parts yet was taken: pending %v, queue %d", e.pending[id], len(e.pendingQ))
	}
}

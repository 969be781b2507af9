package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// While TakeSpans says no, wanted traces complete declined, without spans
// and without being read back from blocks; once it says yes again they
// complete with every span. Both ways of completing a trace cut early are
// covered: from the cold tier, and by read-back when the tier evicted it.
func TestTakeSpansDeclinesWithoutReadBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		coldBudget int64
	}{{"cold tier", 64 << 20}, {"read-back", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var take atomic.Bool
			var mu sync.Mutex
			got := map[model.TraceID]CompletedTrace{}
			calls := map[model.TraceID]int{}
			o := testOpts(t.TempDir())
			// Both halves of every trace must arrive within the idle
			// timeout, or a trace rightly completes twice; writing them
			// takes about a second, several under -race on a loaded
			// machine, hence the margin.
			o.IdleTimeout = 5 * time.Second
			o.FlushInterval = 20 * time.Millisecond
			o.HeadMaxBytes = 512 << 10 // cuts traces before they are idle
			var described atomic.Int64
			o.TakeSpans = func(c Completing) bool {
				if c.Summary != nil && c.Summary.SpanCount > 0 {
					described.Add(1)
				}
				return take.Load()
			}
			o.OnTraceComplete = func(c CompletedTrace) {
				mu.Lock()
				got[c.ID] = c
				calls[c.ID]++
				mu.Unlock()
			}
			e := openT(t, o)
			defer e.Close()
			e.pendingMu.Lock()
			e.cold.budget = tc.coldBudget
			e.pendingMu.Unlock()

			g := newGen(91)
			writeHalves := func(traces [][]model.Span) {
				for i, tr := range traces {
					writeRetrying(t, e, tr[1:len(tr)/2+1])
					if i%50 == 49 {
						time.Sleep(200 * time.Millisecond) // the flusher cuts them early
					}
				}
				time.Sleep(200 * time.Millisecond)
				for _, tr := range traces {
					writeRetrying(t, e, append(append([]model.Span(nil), tr[len(tr)/2+1:]...), tr[0]))
				}
			}
			batch := func(first int) [][]model.Span {
				var traces [][]model.Span
				for i := 0; i < 150; i++ {
					traces = append(traces, g.trace(1_700_000_000e9+uint64(first+i)*1e6))
				}
				return traces
			}
			waitAll := func(traces [][]model.Span) {
				waitForWithin(t, 10*o.IdleTimeout, func() bool {
					mu.Lock()
					defer mu.Unlock()
					for _, tr := range traces {
						if calls[tr[0].TraceID] == 0 {
							return false
						}
					}
					return true
				})
			}

			refused := batch(0)
			writeHalves(refused)
			waitAll(refused)
			if n := e.nPending.Load(); n != 0 {
				t.Fatalf("%d traces still pending", n)
			}
			if rb := e.readBacks.Load(); rb != 0 {
				t.Fatalf("%d read-backs while TakeSpans said no", rb)
			}
			if tc.coldBudget > 1 && described.Load() < int64(len(refused)) {
				t.Fatalf("TakeSpans was told the summary of %d traces, want all %d", described.Load(), len(refused))
			}
			mu.Lock()
			for i, tr := range refused {
				c := got[tr[0].TraceID]
				if calls[c.ID] != 1 || !c.Declined || c.Spans != nil {
					t.Fatalf("trace %d: %d completions, declined %v, %d spans; want one declined without spans", i, calls[c.ID], c.Declined, len(c.Spans))
				}
				// The head and the cold tier knew these traces: the consumer
				// is told what they are (for systemic counts, sampling)
				// without paying for their spans.
				if tc.coldBudget > 1 && (c.Summary.SpanCount != len(tr) || c.Summary.TraceID != c.ID) {
					t.Fatalf("trace %d declined with a summary of %d spans, want %d", i, c.Summary.SpanCount, len(tr))
				}
			}
			mu.Unlock()

			take.Store(true)
			taken := batch(1000)
			writeHalves(taken)
			waitAll(taken)
			mu.Lock()
			defer mu.Unlock()
			for i, tr := range taken {
				c := got[tr[0].TraceID]
				if calls[c.ID] != 1 || c.Declined {
					t.Fatalf("trace %d: %d completions, declined %v", i, calls[c.ID], c.Declined)
				}
				if c.Summary.SpanCount != len(tr) {
					t.Fatalf("trace %d: summary of %d spans, want %d", i, c.Summary.SpanCount, len(tr))
				}
				sameSpans(t, normSpans(tr), normSpans(c.Spans))
			}
			if tc.coldBudget == 1 && e.readBacks.Load() == 0 {
				t.Fatal("no trace was read back although the cold tier kept none")
			}
		})
	}
}

// A trace that completes in the head is offered to TakeSpans when its cut
// is written, so one the consumer has no room for does not keep its head
// buffer alive until the completion goroutine reaches it: it is declined
// then, even if the consumer would have had room by the time that
// goroutine asked.
func TestTakeSpansAskedAtTheCut(t *testing.T) {
	var mu sync.Mutex
	asked := map[model.TraceID]int{}
	got := map[model.TraceID]CompletedTrace{}
	o := testOpts(t.TempDir())
	o.IdleTimeout = 100 * time.Millisecond
	o.FlushInterval = 20 * time.Millisecond
	o.TakeSpans = func(c Completing) bool {
		if c.Summary == nil {
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		asked[c.Summary.TraceID]++
		return asked[c.Summary.TraceID] > 1 // room only the second time
	}
	o.OnTraceComplete = func(c CompletedTrace) {
		mu.Lock()
		got[c.ID] = c
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	g := newGen(7)
	var traces [][]model.Span
	for i := range 20 {
		tr := g.trace(1_700_000_000e9 + uint64(i)*1e6)
		traces = append(traces, tr)
		writeRetrying(t, e, tr)
	}
	waitForWithin(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(traces)
	})
	mu.Lock()
	defer mu.Unlock()
	for i, tr := range traces {
		c := got[tr[0].TraceID]
		if !c.Declined || c.Spans != nil || c.Summary.SpanCount != len(tr) || asked[c.ID] != 1 {
			t.Fatalf("trace %d: declined %v, %d spans, summary of %d, asked %d times; want declined at the cut with its summary",
				i, c.Declined, len(c.Spans), c.Summary.SpanCount, asked[c.ID])
		}
	}
}

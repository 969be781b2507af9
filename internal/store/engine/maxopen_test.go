package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// A trace written to every 50 ms never goes idle (a message requeued
// forever): it completes once it has been open for MaxOpen, while spans
// keep arriving, and again later with all its spans; the spans written
// after a completion are stored once each.
func TestMaxOpenCompletesATraceThatNeverGoesIdle(t *testing.T) {
	type done struct {
		spans int
		at    time.Time
	}
	var mu sync.Mutex
	var got []done
	o := testOpts(t.TempDir())
	o.IdleTimeout = time.Second
	o.MaxOpen = 1500 * time.Millisecond
	o.FlushInterval = 20 * time.Millisecond
	o.OnTraceComplete = func(c CompletedTrace) {
		seen := map[model.SpanID]bool{}
		for _, s := range c.Spans {
			if seen[s.SpanID] {
				t.Errorf("completion holds span %s twice", s.SpanID)
			}
			seen[s.SpanID] = true
		}
		mu.Lock()
		got = append(got, done{len(c.Spans), time.Now()})
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	id := model.TraceID{0x50, 0x15}
	base := uint64(time.Now().UnixNano())
	span := func(i int) model.Span {
		s := model.Span{TraceID: id, SpanID: model.SpanID{byte(i >> 8), byte(i), 1}, Service: "worker", Name: "payments process",
			Kind: model.KindConsumer, StartUnixNano: base + uint64(i)*50e6, EndUnixNano: base + uint64(i)*50e6 + 10e6,
			StatusCode: model.StatusError}
		if i > 0 {
			s.ParentSpanID = model.SpanID{0, 0, 1}
		}
		return s
	}
	start := time.Now()
	n := 0
	for time.Since(start) < 3500*time.Millisecond {
		if err := e.Write(ctx, []model.Span{span(n)}); err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(50 * time.Millisecond)
	}
	stopped := time.Now()
	mu.Lock()
	before := append([]done(nil), got...)
	mu.Unlock()
	if len(before) == 0 {
		t.Fatalf("no completion in %v of spans every 50 ms (max open %v)", stopped.Sub(start), o.MaxOpen)
	}
	if first := before[0].at.Sub(start); first < o.MaxOpen {
		t.Errorf("first completion %v after the first span, before max open %v", first, o.MaxOpen)
	}
	if n := e.Stats().TracesCompletedOpenTotal; n == 0 {
		t.Errorf("no completion while open counted, %d happened", len(before))
	}
	// Completed by the bound, not once per cut: about 3.5 s / 1.5 s.
	if len(before) > 3 {
		t.Errorf("%d completions while written to for %v", len(before), stopped.Sub(start))
	}
	// Idle now, it completes a last time with every span.
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return got[len(got)-1].spans == n })
	mu.Lock()
	for i := 1; i < len(got); i++ {
		if got[i].spans < got[i-1].spans {
			t.Errorf("completion %d has %d spans, fewer than the one before (%d)", i, got[i].spans, got[i-1].spans)
		}
	}
	mu.Unlock()
	all, err := e.Trace(ctx, id, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[model.SpanID]bool{}
	for _, s := range all {
		if seen[s.SpanID] {
			t.Fatalf("trace by id returns span %s twice", s.SpanID)
		}
		seen[s.SpanID] = true
	}
	if len(all) != n {
		t.Fatalf("trace by id returns %d spans, want %d", len(all), n)
	}
}

// Under memory pressure a trace written to every 300 ms is cut between
// its writes, again and again: its time open counts from its first cut
// part, not from the spans back in the head since the last cut, so it
// still completes by MaxOpen while written to.
func TestMaxOpenCountsFromTheFirstEarlyCut(t *testing.T) {
	var mu sync.Mutex
	var firstAt time.Time
	id := model.TraceID{0x50, 0x16}
	o := testOpts(t.TempDir())
	o.IdleTimeout = 2 * time.Second
	o.MaxOpen = 2500 * time.Millisecond
	o.FlushInterval = 20 * time.Millisecond
	o.HeadMaxBytes = 256 << 10
	o.OnTraceComplete = func(c CompletedTrace) {
		if c.ID != id {
			return
		}
		mu.Lock()
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // other traffic keeps the head above its soft limit
		defer wg.Done()
		g := newGen(17)
		for i := 0; ctx.Err() == nil; i++ {
			if err := e.Write(ctx, g.trace(1_700_000_000e9+uint64(i)*1e6)); err != nil && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	base := uint64(time.Now().UnixNano())
	start := time.Now()
	for i := 0; time.Since(start) < 4500*time.Millisecond; i++ {
		s := model.Span{TraceID: id, SpanID: model.SpanID{byte(i), 2}, Service: "worker", Name: "payments process",
			Kind: model.KindConsumer, StartUnixNano: base + uint64(i)*300e6, EndUnixNano: base + uint64(i)*300e6 + 10e6}
		writeRetrying(t, e, []model.Span{s})
		time.Sleep(300 * time.Millisecond)
	}
	stopped := time.Now()
	if e.Stats().BlocksFlushedTotal < 5 {
		t.Fatalf("expected forced cuts, stats %+v", e.Stats())
	}
	mu.Lock()
	defer mu.Unlock()
	if firstAt.IsZero() || firstAt.After(stopped) {
		t.Fatalf("not completed while written to for %v (max open %v)", stopped.Sub(start), o.MaxOpen)
	}
}

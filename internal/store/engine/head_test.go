package engine

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// insertSpan adds one span of trace t to h as if it arrived at now.
func insertSpan(h *head, t byte, span byte, now int64) {
	s := model.Span{TraceID: model.TraceID{t, 15: t}, SpanID: model.SpanID{span}, Name: "op", Service: "svc",
		StartUnixNano: 1e9, EndUnixNano: 2e9}
	buf := appendFramed(nil, &s)
	h.insert([]model.Span{s}, buf, []int{0, len(buf)}, 1, now)
}

// A cut picks its traces before taking the engine's lock and moves them
// under it: a trace that received a span in between is not idle any more
// and must stay in the head, with its counters.
func TestHeadCutRechecksCandidates(t *testing.T) {
	h := newHead(nil, false)
	insertSpan(h, 1, 1, 100)
	insertSpan(h, 2, 1, 100)
	insertSpan(h, 3, 1, 900) // not idle: never a candidate
	idle := func(ht *headTrace) bool { return ht.lastSeen <= 500 }

	plan := h.planCut(idle)
	if ids := plan.refs; len(ids) != 2 {
		t.Fatalf("candidates = %d traces, want 2 (the idle ones)", len(ids))
	}
	insertSpan(h, 2, 2, 1000) // trace 2 is busy again before the move
	cut, _ := h.takeCut(plan, idle)

	if len(cut) != 1 || cut[model.TraceID{1, 15: 1}] == nil {
		t.Fatalf("cut %d traces, want only trace 1", len(cut))
	}
	if got := h.get(model.TraceID{2, 15: 2}); got == nil || got.n != 2 {
		t.Fatalf("trace 2 should stay in the head with 2 spans, got %+v", got)
	}
	if h.get(model.TraceID{3, 15: 3}) == nil {
		t.Fatal("trace 3 should stay in the head")
	}
	if n := h.traces.Load(); n != 2 {
		t.Errorf("head counts %d traces, want 2", n)
	}
	if n := h.spans.Load(); n != 3 {
		t.Errorf("head counts %d spans, want 3", n)
	}
	// A candidate that left the head meanwhile (another cut) is skipped.
	if again, _ := h.takeCut(plan, idle); len(again) != 0 {
		t.Errorf("cutting the same candidates again took %d traces", len(again))
	}
}

// A trace that left the head and came back between planning and taking
// the cut is a new headTrace: the cut takes the one in the head now, not
// the one it planned with.
func TestHeadCutTakesCurrentTrace(t *testing.T) {
	h := newHead(nil, false)
	insertSpan(h, 1, 1, 100)
	idle := func(ht *headTrace) bool { return ht.lastSeen <= 500 }
	plan := h.planCut(idle)
	planned := plan.out[model.TraceID{1, 15: 1}]
	if h.cut(idle)[model.TraceID{1, 15: 1}] != planned { // e.g. a drop
		t.Fatal("the first cut did not take the planned trace")
	}
	insertSpan(h, 1, 2, 200)
	insertSpan(h, 1, 3, 200)
	bytes := h.bytes.Load()
	cut, size := h.takeCut(plan, idle)
	got := cut[model.TraceID{1, 15: 1}]
	if got == nil || got == planned || got.n != 2 {
		t.Fatalf("cut took %+v, want the trace back in the head with 2 spans", got)
	}
	if size != got.size() || h.traces.Load() != 0 || h.spans.Load() != 0 || bytes-h.bytes.Load() != size {
		t.Errorf("size %d (trace %d), head left with %d traces, %d spans, %d of %d bytes freed", size, got.size(), h.traces.Load(), h.spans.Load(), bytes-h.bytes.Load(), size)
	}
}

// The head's byte count is what admission and memory pressure read: every
// trace that passes through it must leave it where it was. It counted a
// new trace without its fixed base and freed it with it, drifting down by
// 160 bytes a trace (16 MB a minute at 1,700 traces/s) until admission no
// longer saw the head fill.
func TestHeadBytesReturnToZeroAfterACut(t *testing.T) {
	h := newHead(nil, false)
	for i := range 100 {
		insertSpan(h, byte(i), 1, 100)
		if i%3 == 0 {
			insertSpan(h, byte(i), 2, 100) // a trace that grows
		}
	}
	var held int64
	for i := range h.shards {
		for _, ht := range h.shards[i].traces {
			held += ht.size()
		}
	}
	if got := h.bytes.Load(); got != held {
		t.Fatalf("head counts %d bytes, its traces hold %d", got, held)
	}
	if cut := h.cut(func(*headTrace) bool { return true }); len(cut) != 100 {
		t.Fatalf("cut %d traces, want 100", len(cut))
	}
	if got := h.bytes.Load(); got != 0 {
		t.Errorf("an empty head counts %d bytes", got)
	}
}

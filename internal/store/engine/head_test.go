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

	ids := h.candidates(idle)
	if len(ids) != 2 {
		t.Fatalf("candidates = %d traces, want 2 (the idle ones)", len(ids))
	}
	insertSpan(h, 2, 2, 1000) // trace 2 is busy again before the move
	cut := h.cutIDs(ids, idle)

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
	if again := h.cutIDs(ids, idle); len(again) != 0 {
		t.Errorf("cutting the same candidates again took %d traces", len(again))
	}
}

package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// bigTrace returns n spans of one trace, each a child of the first, with
// starts out of order and some equal (ties are ordered by span id).
func bigTrace(n int, start uint64) []model.Span {
	tmpl := newGen(91).trace(start)[0]
	spans := make([]model.Span, n)
	for i := range spans {
		s := tmpl
		binary.BigEndian.PutUint64(s.SpanID[:], uint64(n-i)*7919%1_000_003+1)
		s.StartUnixNano = start + uint64((i*37)%(n/2))*1e3
		s.EndUnixNano = s.StartUnixNano + 5e5
		if i > 0 {
			s.ParentSpanID = spans[0].SpanID
		}
		spans[i] = s
	}
	return spans
}

// Pages of a trace spread over a Parquet block, a level-0 block and the
// head, walked to the end, are the trace in start order, each span once.
func TestTracePageWalksTheWholeTrace(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	spans := bigTrace(3000, now)
	id := spans[0].TraceID
	for part, stage := range []func() error{
		func() error { return e.Compact(ctx) }, // the first third ends up in Parquet
		func() error { return e.Flush(ctx) },   // the second in a level-0 block
		func() error { return nil },            // the last stays in the head
	} {
		if err := e.Write(ctx, spans[part*1000:(part+1)*1000]); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := stage(); err != nil {
			t.Fatal(err)
		}
	}
	l0, pq := blockFormats(e)
	if l0 == 0 || pq == 0 {
		t.Fatalf("setup: %d level-0 and %d Parquet blocks, want both", l0, pq)
	}
	whole, err := e.Trace(ctx, id, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(whole, func(i, j int) bool { return keyOf(&whole[i]).less(keyOf(&whole[j])) })

	var walked []model.Span
	for offset := 0; ; offset += 700 {
		p, err := e.TracePage(ctx, id, store.TimeRange{}, offset, 700)
		if err != nil {
			t.Fatal(err)
		}
		if p.Total != len(spans) || p.StartUnixNano != whole[0].StartUnixNano {
			t.Fatalf("page at %d: total %d start %d", offset, p.Total, p.StartUnixNano)
		}
		if len(p.Spans) == 0 {
			break
		}
		walked = append(walked, p.Spans...)
	}
	sameSpans(t, whole, walked)
	for i := range walked {
		if walked[i].SpanID != whole[i].SpanID {
			t.Fatalf("span %d out of order: %s, want %s", i, walked[i].SpanID, whole[i].SpanID)
		}
	}
	// A first page that holds the whole trace is kept from the first pass
	// over the sources; one a span too small takes both passes. Either
	// way: the first spans by start, in order.
	for _, limit := range []int{len(spans) + 5, len(spans), len(spans) - 1} {
		p, err := e.TracePage(ctx, id, store.TimeRange{}, 0, limit)
		if err != nil {
			t.Fatal(err)
		}
		n := min(limit, len(spans))
		if p.Total != len(spans) || len(p.Spans) != n {
			t.Fatalf("limit %d: total %d, %d spans, want %d and %d", limit, p.Total, len(p.Spans), len(spans), n)
		}
		for i := range p.Spans {
			if p.Spans[i].SpanID != whole[i].SpanID {
				t.Fatalf("limit %d: span %d is %s, want %s", limit, i, p.Spans[i].SpanID, whole[i].SpanID)
			}
		}
		sameSpans(t, whole[:n], p.Spans)
	}
	if _, err := e.TracePage(ctx, model.TraceID{7}, store.TimeRange{}, 0, 10); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown trace: %v", err)
	}
}

// store.TraceCapped on the engine: a trace over the cap comes back as its
// first spans by start with its whole count; one under it whole.
func TestTraceCappedFromTheEngine(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	spans := bigTrace(500, uint64(time.Now().UnixNano()))
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	id := spans[0].TraceID
	got, total, err := store.TraceCapped(ctx, e, id, store.TimeRange{}, 100)
	if err != nil || total != 500 || len(got) != 100 {
		t.Fatalf("capped at 100: %d spans of %d, %v", len(got), total, err)
	}
	starts := make([]uint64, len(spans))
	for i := range spans {
		starts[i] = spans[i].StartUnixNano
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, s := range got {
		if s.StartUnixNano > starts[99] {
			t.Fatalf("span starting at %d kept, later than the 100th start %d", s.StartUnixNano, starts[99])
		}
	}
	if got, total, err := store.TraceCapped(ctx, e, id, store.TimeRange{}, 500); err != nil || total != 500 || len(got) != 500 {
		t.Fatalf("at the cap: %d spans of %d, %v", len(got), total, err)
	}
}

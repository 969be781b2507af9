package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// A dropped trace leaves storage at the next compaction, whether its
// level-0 block is converted after the decision or it was already in
// Parquet; the other traces stay whole. Dropping every trace of a block
// leaves an empty block, not an error.
func TestDroppedTracesLeaveAtCompaction(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	g := newGen(11)
	first := g.batch(300, 1_700_000_000e9, 5e6)
	if err := e.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	byID := groupByTrace(first)
	var ids []model.TraceID
	for id := range byID {
		ids = append(ids, id)
	}
	// Half dropped while still in a level-0 block.
	dropped := map[model.TraceID]bool{}
	for _, id := range ids[:len(ids)/2] {
		e.Drop(id)
		dropped[id] = true
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// One more dropped once already in Parquet: it goes at the next merge.
	late := ids[len(ids)-1]
	e.Drop(late)
	dropped[late] = true
	// More Parquet blocks, so they get merged; one of nothing but
	// dropped traces.
	for i := 0; i < compactMinBlocks; i++ {
		more := g.batch(50, 1_700_000_100e9+uint64(i)*1e9, 5e6)
		if err := e.Write(ctx, more); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for id, sp := range groupByTrace(more) {
			if i == 0 {
				e.Drop(id)
				dropped[id] = true
			}
			byID[id] = sp
		}
		if err := e.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range byID {
		got, err := e.Trace(ctx, id, store.TimeRange{})
		if dropped[id] {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("dropped trace %s: %d spans, err %v", id, len(got), err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sameSpans(t, want, got)
	}
	st := e.Stats()
	if st.DroppedTracesTotal < uint64(len(ids)/2+1) {
		t.Errorf("dropped total %d, want at least %d", st.DroppedTracesTotal, len(ids)/2+1)
	}
	keptSpans := 0
	for id, sp := range byID {
		if !dropped[id] {
			keptSpans += len(sp)
		}
	}
	if st.BlockSpans != int64(keptSpans) {
		t.Errorf("blocks hold %d spans, want %d (the kept traces')", st.BlockSpans, keptSpans)
	}
}

// Late spans of a dropped trace, arriving before its compaction, cancel
// the drop: the trace completes again and is decided again, whole.
func TestLateSpansCancelADrop(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	spans := newGen(12).batch(4, 1_700_000_000e9, 5e6)
	if err := e.Write(ctx, spans[:len(spans)-1]); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	late := spans[len(spans)-1]
	e.Drop(late.TraceID)
	if err := e.Write(ctx, []model.Span{late}); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	var want []model.Span
	for _, sp := range spans {
		if sp.TraceID == late.TraceID {
			want = append(want, sp)
		}
	}
	got, err := e.Trace(ctx, late.TraceID, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	sameSpans(t, want, got)
}

// Blocks converted while traces are dropped catalogue the traces kept (a
// reopened engine, which reads catalogs from the blocks, lists their
// services and operations) and not the dropped ones' operations.
func TestCatalogOfAThinnedBlockIsTheKeptTraces(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	ctx := context.Background()
	keep := newGen(13).batch(20, 1_700_000_000e9, 5e6)
	drop := newGen(14).batch(20, 1_700_000_000e9, 5e6)
	for i := range drop {
		drop[i].Name = "dropped-op-" + drop[i].Name
	}
	if err := e.Write(ctx, append(append([]model.Span{}, keep...), drop...)); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for id := range groupByTrace(drop) {
		e.Drop(id)
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e = openT(t, testOpts(dir))
	defer e.Close()
	// Nor does the write-ahead log bring a dropped trace back.
	if _, err := e.Trace(ctx, drop[0].TraceID, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("dropped trace after reopening: %v", err)
	}
	wantOps := map[string]bool{}
	for _, sp := range keep {
		wantOps[sp.Service+"/"+sp.Name] = true
	}
	svcs, err := e.Services(ctx, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, svc := range svcs {
		ops, err := e.Operations(ctx, svc, store.TimeRange{})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if !wantOps[svc+"/"+op.Name] {
				t.Errorf("catalog lists %s/%s, not an operation of a kept trace", svc, op.Name)
			}
			listed[svc+"/"+op.Name] = true
		}
	}
	for op := range wantOps {
		if !listed[op] {
			t.Errorf("kept operation %s missing from the catalog", op)
		}
	}
}

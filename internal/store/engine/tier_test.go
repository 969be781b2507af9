package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// With UnkeptRetention, traces sampling dropped stay whole (in blocks of
// their own) until it has passed, while kept traces stay for Retention.
// The decisions are recorded in the trace index: they survive a restart
// and merges, also for a trace dropped only once it was in Parquet.
func TestUnkeptTracesExpireBeforeKeptOnes(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1_700_000_000, 0)
	var clock atomic.Int64
	clock.Store(t0.Add(time.Minute).UnixNano())
	opts := testOpts(dir)
	opts.Retention, opts.UnkeptRetention = 48*time.Hour, 24*time.Hour
	opts.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	e := openT(t, opts)
	ctx := context.Background()
	g := newGen(21)
	byID := map[model.TraceID][]model.Span{}
	reason := map[model.TraceID]string{}
	// Several level-0 blocks, each converted with a decision per trace:
	// the last trace of the first one is decided only once in Parquet.
	var late model.TraceID
	for i := 0; i < compactMinBlocks; i++ {
		spans := g.batch(40, uint64(t0.UnixNano())+uint64(i)*1e9, 5e6)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		n := 0
		for id, sp := range groupByTrace(spans) {
			byID[id] = sp
			n++
			switch {
			case i == 0 && late == (model.TraceID{}):
				late = id
			case n%3 == 0:
				reason[id] = "error"
				e.Decide(id, "error")
			default:
				reason[id] = DroppedReason
				e.Drop(id)
			}
		}
		if err := e.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// Decided once in Parquet: the merge moves it out.
			e.Drop(late)
			reason[late] = DroppedReason
		}
	}
	// The decisions outlive the process.
	e.Close()
	e = openT(t, opts)
	defer e.Close()
	var unkeptBlocks int
	e.mu.RLock()
	for _, b := range e.blocks {
		if b.meta.Unkept {
			unkeptBlocks++
			for _, id := range b.idx.ids {
				if reason[id] != DroppedReason {
					t.Errorf("kept trace %s in an unkept block", id)
				}
			}
		}
	}
	e.mu.RUnlock()
	if unkeptBlocks == 0 {
		t.Fatal("no block of unkept traces")
	}
	unkeptSpans := 0
	for id, sp := range byID {
		if reason[id] == DroppedReason {
			unkeptSpans += len(sp)
		}
	}
	if st := e.Stats(); st.UnkeptBlockSpans != int64(unkeptSpans) || st.UnkeptBlockBytes <= 0 {
		t.Errorf("unkept tier: %d spans, %d bytes; want %d spans", st.UnkeptBlockSpans, st.UnkeptBlockBytes, unkeptSpans)
	}
	for id, want := range byID {
		got, err := e.Trace(ctx, id, store.TimeRange{})
		if err != nil {
			t.Fatalf("trace %s (%s) before expiry: %v", id, reason[id], err)
		}
		sameSpans(t, want, got)
		if r := e.SampledReason(id); r != reason[id] {
			t.Errorf("trace %s: sampled %q, want %q", id, r, reason[id])
		}
	}

	clock.Store(t0.Add(25 * time.Hour).UnixNano())
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	for id := range byID {
		_, err := e.Trace(ctx, id, store.TimeRange{})
		if reason[id] == DroppedReason {
			if !errors.Is(err, store.ErrNotFound) || e.HasTrace(id) {
				t.Errorf("unkept trace %s after retention.traces: err %v", id, err)
			}
		} else if err != nil {
			t.Errorf("kept trace %s after retention.traces: %v", id, err)
		}
	}

	clock.Store(t0.Add(49 * time.Hour).UnixNano())
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.BlockSpans != 0 {
		t.Errorf("%d spans left after the kept traces' retention", st.BlockSpans)
	}
}

// Blocks written before the sampling decision was indexed (format 2)
// still open, with no decision.
func TestIndexV2ReadsWithoutDecisions(t *testing.T) {
	var b indexBuilder
	ts := model.TraceSummary{TraceID: model.TraceID{1}, StartUnixNano: 5, EndUnixNano: 9, SpanCount: 2,
		RootService: "a", RootName: "op", Services: []model.ServiceStats{{Name: "a", SpanCount: 2}}}
	b.add(0, &ts)
	b.setSampled("rate")
	p, err := b.x.marshal()
	if err != nil {
		t.Fatal(err)
	}
	x, err := unmarshalIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	if x.sampledOf(0) != "rate" || x.summary(0).RootName != "op" {
		t.Fatalf("v3 round trip: sampled %q, summary %+v", x.sampledOf(0), x.summary(0))
	}
	// The same index as format 2 wrote it: no trailing decision per trace.
	raw, err := zdec.DecodeAll(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := append([]byte{}, indexMagicV2...)
	v2 = append(v2, raw[len(indexMagic):len(raw)-1]...)
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err = unmarshalIndex(zw.EncodeAll(v2, nil))
	if err != nil {
		t.Fatal(err)
	}
	if x.sampledOf(0) != "" || x.summary(0).SpanCount != 2 {
		t.Fatalf("v2: sampled %q, summary %+v", x.sampledOf(0), x.summary(0))
	}
}

// Over the disk budget, blocks of dropped traces go before kept ones,
// even newer ones.
func TestDiskBudgetDeletesUnkeptBlocksFirst(t *testing.T) {
	opts := testOpts(t.TempDir())
	opts.UnkeptRetention = 24 * time.Hour
	e := openT(t, opts)
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	old := newGen(31).batch(300, now-7200e9, 1e6)
	fresh := newGen(32).batch(300, now-60e9, 1e6)
	for _, b := range [][]model.Span{old, fresh} {
		if err := e.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for id := range groupByTrace(fresh) {
		e.Drop(id)
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if st.UnkeptBlockBytes == 0 {
		t.Fatal("no unkept block")
	}
	// Room for the kept block, not for both (the WAL reserve is an eighth).
	e.opts.MaxDiskBytes = (st.BlockBytes - st.UnkeptBlockBytes/2) * 8 / 7
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(); got.UnkeptBlockBytes != 0 || got.BlockBytes != st.BlockBytes-st.UnkeptBlockBytes {
		t.Fatalf("after retention: %d block bytes, %d unkept; before %d, %d", got.BlockBytes, got.UnkeptBlockBytes, st.BlockBytes, st.UnkeptBlockBytes)
	}
	checkAllTraces(t, e, old)
}

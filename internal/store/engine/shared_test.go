package engine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Two engines on one storage, as two cluster nodes on one bucket: a's
// blocks reach b at b's next Refresh, and until then a serves them to b
// as a peer; compaction runs only on the owner and b follows it.
func TestEnginesSharingStorage(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := testStorage(root)
	if st == nil {
		ls, err := NewLocalStorage(filepath.Join(root, "shared"))
		if err != nil {
			t.Fatal(err)
		}
		st = ls
	}
	oa, ob := testOpts(filepath.Join(root, "a")), testOpts(filepath.Join(root, "b"))
	oa.Storage, ob.Storage = st, st
	oa.OwnsBlock = func(string) bool { return true }
	ob.OwnsBlock = func(string) bool { return false }
	a, b := openT(t, oa), openT(t, ob)
	defer a.Close()
	defer b.Close()

	g := newGen(21)
	var all []model.Span
	for i := 0; i < 4; i++ {
		spans := g.batch(800, 1_700_000_000e9+uint64(i)*10e9, 3e6)
		all = append(all, spans...)
		if err := a.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	id := all[0].TraceID
	if _, err := b.Trace(ctx, id, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b sees a's block before refreshing: %v", err)
	}
	// Not yet listed by b: a serves its recent blocks to b.
	exclude := set(b.RecentBlocks(b.PeerWindow()))
	spans, err := a.PeerTrace(ctx, id, exclude)
	if err != nil {
		t.Fatalf("peer trace before refresh: %v", err)
	}
	sameSpans(t, groupByTrace(all)[id], spans)
	res, err := a.PeerSearch(ctx, store.Query{Service: "payment", Limit: 1000}, exclude)
	if err != nil || len(res) == 0 {
		t.Fatalf("peer search before refresh: %d results, %v", len(res), err)
	}

	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllTraces(t, b, all)
	// Now b has them: a leaves them out, so merged answers count no span twice.
	exclude = set(b.RecentBlocks(b.PeerWindow()))
	if _, err := a.PeerTrace(ctx, id, exclude); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("peer trace after b loaded the blocks: %v", err)
	}
	if res, _ := a.PeerSearch(ctx, store.Query{Limit: 1000}, exclude); len(res) != 0 {
		t.Fatalf("peer search after b loaded the blocks: %d results", len(res))
	}
	if names, _ := b.Services(ctx, store.TimeRange{}); len(names) == 0 {
		t.Fatal("b's catalog misses the services of a's blocks")
	}

	// b owns no block: it compacts nothing. a compacts; b follows.
	if err := b.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.CompactionsTotal != 0 || s.Blocks != 4 {
		t.Fatalf("b compacted blocks it does not own: %+v", s)
	}
	if err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if s := a.Stats(); s.CompactionsTotal == 0 || s.Blocks != 1 {
		t.Fatalf("a did not compact: %+v", s)
	}
	// Before b sees the compacted block it still has the inputs: a must
	// not serve the output as recent, or b would count its spans twice.
	if res, _ := a.PeerSearch(ctx, store.Query{Limit: 1000}, set(b.RecentBlocks(b.PeerWindow()))); len(res) != 0 {
		t.Fatalf("a serves its compacted block to b, which holds its inputs: %d results", len(res))
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Blocks != 1 || s.BlockSpans != int64(len(all)) {
		t.Fatalf("b after a compacted: %d blocks, %d spans; want 1 and %d", s.Blocks, s.BlockSpans, len(all))
	}
	checkAllTraces(t, b, all)

	// A trace still in a's head is a's alone.
	late := g.batch(10, 1_700_000_100e9, 1e6)
	if err := a.Write(ctx, late); err != nil {
		t.Fatal(err)
	}
	if got, err := a.PeerTrace(ctx, late[0].TraceID, set(b.RecentBlocks(b.PeerWindow()))); err != nil || len(got) == 0 {
		t.Fatalf("head trace from peer: %d spans, %v", len(got), err)
	}
}

func set(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

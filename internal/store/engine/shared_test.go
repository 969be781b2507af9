package engine

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Two engines on one storage, as two cluster nodes on one bucket: a's
// blocks reach b at b's next Refresh, and until then a serves them to b
// as a peer; compaction runs only on the owner and b follows it.
func TestEnginesSharingStorage(t *testing.T) {
	ctx := context.Background()
	a, b := sharedPair(t)

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

// sharedPair opens engines a (owning every block) and b (none) on one
// storage.
func sharedPair(t *testing.T) (a, b *Engine) {
	t.Helper()
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
	a, b = openT(t, oa), openT(t, ob)
	t.Cleanup(func() { b.Close(); a.Close() })
	return a, b
}

// A Refresh reads no catalog of another node's level-0 blocks: the
// converted block's one catalog stands for theirs. A catalog query before
// the conversion reads them first, so it still sees every loaded block.
func TestRefreshLeavesLevel0CatalogsToTheirConversion(t *testing.T) {
	ctx := context.Background()
	a, b := sharedPair(t)
	g := newGen(22)
	cut := func(n int) []model.Span {
		var all []model.Span
		for i := 0; i < n; i++ {
			spans := g.batch(200, 1_700_000_000e9+uint64(i)*10e9, 3e6)
			all = append(all, spans...)
			if err := a.Write(ctx, spans); err != nil {
				t.Fatal(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return all
	}
	refresh := func() {
		t.Helper()
		if err := b.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	all := cut(4)
	refresh()
	if n := b.sh.catalogsRead.Load(); n != 0 {
		t.Fatalf("b's refresh read %d catalogs of level-0 blocks, want none", n)
	}
	checkAllTraces(t, b, all)
	// Converted: b reads one catalog, the converted block's.
	if err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	refresh()
	if s := b.Stats(); s.Blocks != 1 {
		t.Fatalf("b holds %d blocks after a converted them, want 1", s.Blocks)
	}
	if n := b.sh.catalogsRead.Load(); n != 1 {
		t.Fatalf("b read %d catalogs after the conversion, want 1", n)
	}
	sameCatalog(t, a, b)

	// Not converted yet: a catalog query reads the outstanding ones, once.
	more := cut(3)
	refresh()
	if n := b.sh.catalogsRead.Load(); n != 1 {
		t.Fatalf("b read %d catalogs, want still 1", n)
	}
	sameCatalog(t, a, b)
	if n := b.sh.catalogsRead.Load(); n != 4 {
		t.Fatalf("b read %d catalogs after catalog queries, want 4", n)
	}
	checkAllTraces(t, b, append(all, more...))
}

// sameCatalog fails unless b answers a's catalog queries as a does.
func sameCatalog(t *testing.T, a, b *Engine) {
	t.Helper()
	ctx := context.Background()
	var r store.TimeRange
	wantSvc, _ := a.Services(ctx, r)
	gotSvc, _ := b.Services(ctx, r)
	if !slices.Equal(wantSvc, gotSvc) || len(wantSvc) == 0 {
		t.Fatalf("services: b has %v, a %v", gotSvc, wantSvc)
	}
	wantOps, _ := a.Operations(ctx, "", r)
	gotOps, _ := b.Operations(ctx, "", r)
	if !slices.Equal(wantOps, gotOps) {
		t.Fatalf("operations: b has %v, a %v", gotOps, wantOps)
	}
	names, _ := a.AttributeNames(ctx, store.ScopeAny, r)
	gotNames, _ := b.AttributeNames(ctx, store.ScopeAny, r)
	if !slices.Equal(names, gotNames) || len(names) == 0 {
		t.Fatalf("attribute names: b has %v, a %v", gotNames, names)
	}
	for _, k := range names {
		want, _ := a.AttributeValues(ctx, store.ScopeAny, k, r, 0)
		got, _ := b.AttributeValues(ctx, store.ScopeAny, k, r, 0)
		if len(want) != len(got) {
			t.Fatalf("values of %s: b has %d, a %d", k, len(got), len(want))
		}
	}
}

// cutCatalog finds the catalog's end whatever its strings hold, and a
// block opened by a peer has the meta (and, for blocks other than level-0
// cuts, the catalog) that decoding meta.json whole gives.
func TestCutCatalog(t *testing.T) {
	tricky := []string{`}`, `]`, `{"a":[`, `\`, `\"}`, `"catalog":{"services":[]}`, "é\u2028\x01"}
	var vals []model.Value
	for _, s := range tricky {
		vals = append(vals, model.Str(s))
	}
	for _, m := range []blockMeta{
		{Version: blockFormatVersion, ID: "x", Spans: 3, Format: formatL0, Sources: nil,
			Catalog: &catalogJSON{Services: []namedSeen{{Name: `svc"}`}}, Attrs: []attrSeen{{Key: `k\`, Values: vals}}}},
		{Version: blockFormatVersion, ID: "y", Level: 1, Sources: []string{"a", "b"},
			Catalog: &catalogJSON{Operations: []opSeen{{Service: "s", Name: `{[`}}, Attrs: []attrSeen{{Key: "catalog", Values: vals}}}},
		{Version: blockFormatVersion, ID: "z", Level: 2, Unkept: true},
	} {
		mj, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var whole blockMeta
		if err := json.Unmarshal(mj, &whole); err != nil {
			t.Fatal(err)
		}
		rest, cat := cutCatalog(mj)
		var lean blockMeta
		if err := json.Unmarshal(rest, &lean); err != nil {
			t.Fatalf("%s: rest %s: %v", m.ID, rest, err)
		}
		if (cat == nil) != (m.Catalog == nil) || lean.Catalog != nil {
			t.Fatalf("%s: catalog %q cut from %s", m.ID, cat, mj)
		}
		if cat != nil {
			lean.Catalog = new(catalogJSON)
			if err := json.Unmarshal(cat, lean.Catalog); err != nil {
				t.Fatalf("%s: catalog %s: %v", m.ID, cat, err)
			}
		}
		if !reflect.DeepEqual(lean, whole) {
			t.Fatalf("%s: cut and decoded\n%+v\nwhole\n%+v", m.ID, lean, whole)
		}
	}
}

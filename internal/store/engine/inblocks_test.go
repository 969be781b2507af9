package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// The cut's galloping lookup of its traces in older blocks agrees with a
// binary search per trace, for blocks much smaller, alike and much larger
// than the cut, ids that share their first 8 bytes, and the ends.
func TestInBlocksMatchesFind(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	randIDs := func(n int) []model.TraceID {
		ids := make([]model.TraceID, n)
		for i := range ids {
			for j := range ids[i] {
				ids[i][j] = byte(rng.IntN(256))
			}
			if i%7 == 0 && i > 0 { // same high word as the one before
				copy(ids[i][:8], ids[i-1][:8])
			}
		}
		return ids
	}
	sortIDs := func(ids []model.TraceID) []model.TraceID {
		slices.SortFunc(ids, func(a, b model.TraceID) int { return bytes.Compare(a[:], b[:]) })
		return slices.Compact(ids)
	}
	for _, sizes := range [][2]int{{5000, 10}, {5000, 5000}, {10, 5000}, {0, 100}, {100, 0}, {1, 1}} {
		cut := sortIDs(randIDs(sizes[0]))
		var blocks []*block
		for b := 0; b < 3; b++ {
			have := randIDs(sizes[1])
			// Some of the cut's traces have spans in this block.
			for i := b; i < len(cut); i += 3 + b {
				have = append(have, cut[i])
			}
			if len(cut) > 0 { // and its first and last
				have = append(have, cut[0], cut[len(cut)-1])
			}
			blocks = append(blocks, &block{idx: &blockIndex{ids: sortIDs(have)}})
		}
		got := inBlocks(blocks, cut)
		hits := 0
		for k, id := range cut {
			want := false
			for _, b := range blocks {
				want = want || b.idx.find(id) >= 0
			}
			if got[k] != want {
				t.Fatalf("sizes %v: trace %d (%s): in blocks %v, want %v", sizes, k, id, got[k], want)
			}
			if want {
				hits++
			}
		}
		if len(cut) > 1 && hits < len(cut)/3 {
			t.Fatalf("sizes %v: only %d of %d found; the test should find about half", sizes, hits, len(cut))
		}
	}
}

// The level-0 cut's block catalog (span attributes read where the parse of
// the fixed fields stops) lists the attribute names and values of the
// decoded spans, for the harness's spans written as requests hold them.
// Keys with more values than a catalog keeps hold as many, all real.
func TestCutCatalogMatchesSpans(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	base := time.Unix(1_700_000_000, 0)
	var all []model.Span
	for range 20 {
		batch := loadgenBatch(rng, 500, base)
		all = append(all, batch...)
		if err := e.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := newCatalog()
	want.addAttrs(all)
	every := map[attrKey]map[valKey]bool{} // all values, uncapped
	for i := range all {
		for _, scoped := range []struct {
			scope store.Scope
			attrs model.Attrs
		}{{store.ScopeSpan, all[i].Attrs}, {store.ScopeResource, all[i].Resource}} {
			for _, a := range scoped.attrs {
				k := attrKey{scoped.scope, a.Key}
				if every[k] == nil {
					every[k] = map[valKey]bool{}
				}
				every[k][valKey{a.Value.Type, a.Value.AsString()}] = true
			}
		}
	}
	got := e.cat
	if len(got.attrs) != len(want.attrs) || len(got.attrs) < 10 {
		t.Fatalf("%d attribute keys after the cut, want %d", len(got.attrs), len(want.attrs))
	}
	capped := 0
	for k, w := range want.attrs {
		g := got.attrs[k]
		if g == nil {
			t.Fatalf("key %q (scope %d) missing after the cut", k.Key, k.Scope)
		}
		if len(g.values) != len(w.values) {
			t.Errorf("key %q: %d values after the cut, want %d", k.Key, len(g.values), len(w.values))
		}
		for vk := range g.values {
			if !every[k][vk] {
				t.Errorf("key %q: value %q is in no span", k.Key, vk.S)
			}
			if len(w.values) < maxValuesPerKey {
				if _, ok := w.values[vk]; !ok {
					t.Errorf("key %q: value %q not in the decoded catalog", k.Key, vk.S)
				}
			}
		}
		if len(w.values) >= maxValuesPerKey {
			capped++
		}
	}
	t.Logf("%d keys, %d of them at %d values", len(want.attrs), capped, maxValuesPerKey)
}

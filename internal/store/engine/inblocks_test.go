package engine

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
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

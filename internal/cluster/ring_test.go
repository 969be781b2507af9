package cluster

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestRingLookupIsTheNextPoint holds the arc table to the definition of
// the ring: a hash belongs to the first point at or after it, wrapping
// past the last. Hashes on, next to and between points are where a table
// built off by one would answer the neighbour.
func TestRingLookupIsTheNextPoint(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7} {
		peers := make([]Peer, n)
		for i := range peers {
			peers[i] = Peer{ID: fmt.Sprintf("n%d", i)}
		}
		r, err := NewRing(peers, "n0")
		if err != nil {
			t.Fatal(err)
		}
		want := func(h uint64) int {
			i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= h })
			return r.owner[i%len(r.points)]
		}
		hashes := []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1}
		for _, p := range r.points {
			hashes = append(hashes, p-1, p, p+1)
		}
		for b := range r.first {
			start := uint64(b) << r.shift
			hashes = append(hashes, start, start-1)
		}
		rng := rand.New(rand.NewPCG(1, uint64(n)))
		for range 100_000 {
			hashes = append(hashes, rng.Uint64())
		}
		for _, h := range hashes {
			if got, w := r.lookup(h), want(h); got != w {
				t.Fatalf("%d nodes: hash %#x goes to node %d, want %d (the next point's)", n, h, got, w)
			}
		}
	}
}

package ingest

import (
	"math/rand/v2"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// keyTable agrees with a map through inserts and removals, including
// keys that share home slots and probe runs that wrap around the end.
func TestKeyTableMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, spread := range []uint64{0, 1 << 62} { // 0: full 64-bit keys
		tb := newKeyTable(64)
		want := map[uint64]bool{}
		var keys []uint64
		for i := 0; i < 20_000; i++ {
			var k uint64
			if spread == 0 {
				k = rng.Uint64()
			} else {
				// Few distinct top bits: long runs, many shared homes,
				// and runs wrapping past the last slot.
				k = uint64(rng.IntN(4))<<62 | uint64(2+rng.IntN(100)) // never 0 or 1, which share a slot
			}
			if len(keys) < 60 && (len(keys) == 0 || rng.IntN(2) == 0) {
				if got := tb.insert(k); got != !want[k] {
					t.Fatalf("insert(%x) = %v with the key present: %v", k, got, want[k])
				}
				if !want[k] {
					want[k] = true
					keys = append(keys, k)
				}
			} else {
				j := rng.IntN(len(keys))
				tb.remove(keys[j])
				delete(want, keys[j])
				keys = append(keys[:j], keys[j+1:]...)
			}
			if tb.n != len(want) {
				t.Fatalf("%d keys in the table, want %d", tb.n, len(want))
			}
			for _, k := range keys {
				if !tb.has(k) {
					t.Fatalf("key %x lost after %d operations", k, i)
				}
			}
			if probe := rng.Uint64(); tb.has(probe) != want[probe] {
				t.Fatalf("has(%x) = %v", probe, !want[probe])
			}
		}
	}
}

// The key 0 is a valid hash; the table stores it as 1.
func TestKeyTableZero(t *testing.T) {
	tb := newKeyTable(4)
	if !tb.insert(0) || !tb.has(0) || tb.insert(0) {
		t.Fatal("key 0 not kept like any other")
	}
	tb.remove(0)
	if tb.has(0) || tb.n != 0 {
		t.Fatal("key 0 not removed")
	}
}

// BenchmarkRecentSpans measures the dedup window as a request of 500 new
// spans sees it with the default window full: one dedupe and one remember.
func BenchmarkRecentSpans(b *testing.B) {
	r := newRecentSpans(DefaultConfig().DedupWindowSpans)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := make([]uint64, DefaultConfig().DedupWindowSpans)
	for i := range fill {
		fill[i] = rng.Uint64()
	}
	r.remember(fill)
	spans := make([]model.Span, 500)
	keys := make([]uint64, 500)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range keys {
			keys[j] = rng.Uint64()
		}
		kept, k, _ := r.dedupe(spans, keys)
		if len(kept) != len(spans) {
			b.Fatalf("%d of %d new spans kept", len(kept), len(spans))
		}
		r.remember(k)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/span")
}

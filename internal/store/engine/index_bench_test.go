package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// BenchmarkIndexMarshal encodes the index of a cut of 10k traces (the
// index of a level-0 block written under memory pressure at high rates,
// larger than one zstd block). B/op is what each cut allocates for it;
// index-bytes/trace the compressed size.
func BenchmarkIndexMarshal(b *testing.B) {
	var ib indexBuilder
	r := rand.New(rand.NewPCG(1, 2))
	svcs := []string{"frontend", "checkout", "orders", "inventory", "payments"}
	for i := range 10_000 {
		var id model.TraceID
		for j := range id {
			id[j] = byte(r.Uint32())
		}
		start := uint64(1_700_000_000e9 + i*1e6)
		ts := model.TraceSummary{TraceID: id, StartUnixNano: start, EndUnixNano: start + uint64(r.IntN(400e6)), SpanCount: 5 + r.IntN(26),
			RootService: "frontend", RootName: "GET /api/cart", Services: []model.ServiceStats{{Name: svcs[0], SpanCount: 3}, {Name: svcs[1+r.IntN(4)], SpanCount: 2}}}
		ib.add(uint32(i*17), &ts)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		p, err := ib.x.marshal()
		if err != nil {
			b.Fatal(err)
		}
		n = len(p)
	}
	b.ReportMetric(float64(n)/10_000, "index-bytes/trace")
}

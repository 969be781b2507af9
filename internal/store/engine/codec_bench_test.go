package engine

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// BenchmarkDecodeFramedLoadgen decodes whole traces of the harness's
// shape from their framed encoding, as queries, completion and analysis
// do; B/span and allocs/span are what the decoder allocates per span.
func BenchmarkDecodeFramedLoadgen(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	spans := loadgenBatch(rng, 2000, time.Unix(1_700_000_000, 0))
	byTrace := map[model.TraceID][]byte{}
	var order []model.TraceID
	for i := range spans {
		id := spans[i].TraceID
		if _, ok := byTrace[id]; !ok {
			order = append(order, id)
		}
		byTrace[id] = appendFramed(byTrace[id], &spans[i])
	}
	b.ReportAllocs()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	n, i := 0, 0
	var out []model.Span
	for b.Loop() {
		var err error
		out, err = decodeFramed(byTrace[order[i%len(order)]], out[:0])
		if err != nil {
			b.Fatal(err)
		}
		i++
		n += len(out)
	}
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(n)/float64(b.N), "spans/op")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "B/span")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(n), "allocs/span")
}

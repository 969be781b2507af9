package servicegraph

import (
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// BenchmarkObserve: cost per span of pairing + edge recording on a stream
// where every CLIENT span finds its SERVER span (in the next batch).
func BenchmarkObserve(b *testing.B) {
	c := &clock{}
	c.set(time.Now())
	g, err := New(Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	g.now = c.now
	const calls = 500
	mk := func() ([]model.Span, []model.Span) {
		var cl, sv []model.Span
		for i := 0; i < calls; i++ {
			tr := tid()
			x := span(tr, model.SpanID{1}, "frontend", "GET", model.KindClient, c.now(), 20*time.Millisecond, false)
			y := span(tr, x.SpanID, "api", "GET /x", model.KindServer, c.now(), 15*time.Millisecond, i%20 == 0)
			z := span(tr, y.SpanID, "api", "work", model.KindInternal, c.now(), time.Millisecond, false)
			cl = append(cl, x)
			sv = append(sv, y, z)
		}
		return cl, sv
	}
	batches := make([][2][]model.Span, 8)
	for i := range batches {
		batches[i][0], batches[i][1] = mk()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt := batches[i%len(batches)]
		g.Observe(bt[0])
		g.Observe(bt[1])
		c.add(10 * time.Millisecond) // 1500 spans per 10 ms: 150k spans/s
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*calls*3), "ns/span")
}

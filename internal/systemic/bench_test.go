package systemic

import (
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// BenchmarkObserve measures the cost of the cross-trace detectors per
// ingested span: shop traffic (2 checkouts per product page), evaluation
// every 10 s of simulated time included.
func BenchmarkObserve(b *testing.B) {
	shop := workload.New(1)
	var traces [][]model.Span
	spans := 0
	for i := 0; i < 3000; i++ {
		var tr []model.Span
		if i%3 == 2 {
			tr = shop.Product(t0)
		} else {
			tr = shop.Checkout(t0)
		}
		traces = append(traces, tr)
		spans += len(tr)
	}
	d := New(Config{}, nil, nil, nil)
	now := t0
	nextEval := t0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, tr := range traces {
			now = now.Add(100 * time.Millisecond)
			if now.After(nextEval) {
				d.Evaluate(now)
				nextEval = now.Add(10 * time.Second)
			}
			d.Observe(now, tr)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

package rootcause_test

import (
	"testing"

	"github.com/tracedx/tracedx/internal/faultbed"
	"github.com/tracedx/tracedx/internal/rootcause"
)

// BenchmarkRank ranks 500 traces per window (the API's default sample) of
// a twelve-service shop, ~20 spans per trace.
func BenchmarkRank(b *testing.B) {
	w, err := faultbed.Generate(faultbed.Config{Seed: 1, Class: faultbed.CPUContention, TracesPerWindow: 500})
	if err != nil {
		b.Fatal(err)
	}
	spans := 0
	for _, tr := range w.Incident {
		spans += len(tr)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := rootcause.Rank(w.Baseline, w.Incident, rootcause.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w.Baseline)+len(w.Incident)), "traces")
	b.ReportMetric(float64(spans)/float64(len(w.Incident)), "spans/trace")
}

package otlpconv

import (
	"math/rand/v2"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
)

// BenchmarkNestingCheck compares the pre-decode nesting scan with the
// decode it protects, on realistic requests (30 traces, ~10 attributes a
// span): the scan should be a small fraction of the decode.
func BenchmarkNestingCheck(b *testing.B) {
	ts, err := gen.Templates(1, 1, 30)
	if err != nil {
		b.Fatal(err)
	}
	body := ts[0].Fill(nil, rand.New(rand.NewPCG(1, 2)))
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			if err := CheckTracesProtoNesting(body, MaxNesting); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			if err := ptraceotlp.NewExportRequest().UnmarshalProto(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

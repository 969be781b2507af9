package otlpconv

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
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

// BenchmarkDecodeTracesProtoPooled measures the direct decoder alone on
// the load generator's requests, into reused memory as the server does.
func BenchmarkDecodeTracesProtoPooled(b *testing.B) {
	ts, err := gen.Templates(1, 4, 30)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var bodies [][]byte
	spans, size := 0, 0
	for _, t := range ts {
		bodies = append(bodies, t.Fill(nil, rng))
		spans += t.Spans
		size += len(bodies[len(bodies)-1])
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		for _, body := range bodies {
			d, err := DecodeTracesProtoPooled(body, DefaultLimits())
			if err != nil {
				b.Fatal(err)
			}
			d.Release()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(spans*b.N), "ns/span")
	// CPU time, unlike wall time, holds still on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(spans*b.N), "cpu-ns/span")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSpanSize measures SpanSize (RED metrics call it per span) on
// the load generator's spans.
func BenchmarkSpanSize(b *testing.B) {
	ts, err := gen.Templates(1, 4, 30)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var spans []model.Span
	for _, t := range ts {
		d, err := DecodeTracesProtoPooled(t.Fill(nil, rng), DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		for _, rs := range d.Spans {
			spans = append(spans, rs.Clone())
		}
		d.Release()
	}
	var sum uint64
	cpu0 := processCPU()
	for b.Loop() {
		for i := range spans {
			sum += SpanSize(&spans[i])
		}
	}
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(len(spans)*b.N), "cpu-ns/span")
	if sum == 0 {
		b.Fatal("no bytes")
	}
}

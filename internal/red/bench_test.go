package red

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// benchSpans is a realistic batch: 10 services × 20 operations, all kinds,
// 5% errors, ~10 attributes per span.
func benchSpans(n int) []model.Span {
	r := rand.New(rand.NewPCG(7, 8))
	now := time.Now()
	out := make([]model.Span, n)
	kinds := []model.SpanKind{model.KindServer, model.KindClient, model.KindInternal, model.KindProducer, model.KindConsumer}
	for i := range out {
		svc := fmt.Sprintf("service-%d", r.IntN(10))
		sp := mkSpan(svc, fmt.Sprintf("op-%d", r.IntN(20)), kinds[r.IntN(len(kinds))],
			now.Add(-time.Duration(r.IntN(60))*time.Second), time.Duration(r.ExpFloat64()*20*float64(time.Millisecond)), r.IntN(20) == 0)
		sp.ParentSpanID = model.SpanID{1}
		sp.Resource = model.Attrs{{Key: "service.name", Value: model.Str(svc)}, {Key: "host.name", Value: model.Str("h1")}}
		for a := 0; a < 8; a++ {
			sp.Attrs = append(sp.Attrs, model.Attr{Key: fmt.Sprintf("attr.%d", a), Value: model.Str(fmt.Sprintf("value-%d", r.IntN(100)))})
		}
		out[i] = sp
	}
	return out
}

// BenchmarkObserve reports the cost of RED metrics per ingested span.
func BenchmarkObserve(b *testing.B) {
	m, err := New(Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	spans := benchSpans(1000)
	m.Observe(spans) // create the series
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Observe(spans)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
}

// BenchmarkObserveParallel: concurrent ingest goroutines share the shards.
func BenchmarkObserveParallel(b *testing.B) {
	m, err := New(Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	spans := benchSpans(1000)
	m.Observe(spans)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(spans)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
}

// BenchmarkIngestDecodeReference is a floor of the ingest cost per span the
// analytics are compared with: OTLP protobuf decode + conversion to the
// model, without storage (the durable write only adds to it). "direct" is
// the server's path (otlpconv.DecodeTracesProto), "pdata" the one it
// replaced (pdata's decoder, then otlpconv.FromTraces).
func BenchmarkIngestDecodeReference(b *testing.B) {
	spans := benchSpans(1000)
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(otlpconv.ToTraces(spans))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("pdata", func(b *testing.B) {
		var u ptrace.ProtoUnmarshaler
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			td, err := u.UnmarshalTraces(raw)
			if err != nil {
				b.Fatal(err)
			}
			_ = otlpconv.FromTraces(td)
		}
		reportPerSpan(b, len(spans))
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, _, err := otlpconv.DecodeTracesProto(raw, otlpconv.DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
		reportPerSpan(b, len(spans))
	})
}

func reportPerSpan(b *testing.B, spans int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

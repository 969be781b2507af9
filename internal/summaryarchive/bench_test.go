package summaryarchive

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// realisticBlock is one expired block's summaries: random trace ids, 40
// endpoints over 12 services, 2-9 services and 5-200 spans a trace, a few
// errors, sampling reasons, starts 2 ms apart.
func realisticBlock(r *rand.Rand, n int, t0 time.Time) []Entry {
	svcs := make([]string, 12)
	for i := range svcs {
		svcs[i] = fmt.Sprintf("service-%02d", i)
	}
	reasons := []string{"", "rate", "error", "slow", "finding", "dropped"}
	out := make([]Entry, n)
	for i := range out {
		s := &out[i].Summary
		for j := range s.TraceID {
			s.TraceID[j] = byte(r.Uint32())
		}
		root := r.IntN(40)
		s.RootService, s.RootName = svcs[root%12], fmt.Sprintf("GET /api/v1/resource-%d/{id}", root)
		s.StartUnixNano = uint64(t0.Add(time.Duration(i) * 2 * time.Millisecond).UnixNano())
		s.EndUnixNano = s.StartUnixNano + uint64(r.Int64N(int64(2*time.Second)))
		for k, ns := 0, 2+r.IntN(8); k < ns; k++ {
			sv := model.ServiceStats{Name: svcs[(root+k)%12], SpanCount: 1 + r.IntN(25)}
			if r.IntN(20) == 0 {
				sv.ErrorCount = 1
			}
			s.SpanCount += sv.SpanCount
			s.ErrorCount += sv.ErrorCount
			s.Services = append(s.Services, sv)
		}
		out[i].Sampled = reasons[r.IntN(len(reasons))]
	}
	return out
}

// BenchmarkArchive appends blocks of 10,000 traces and reports the disk
// bytes each trace's summary takes; then searches a day of them by
// service.
func BenchmarkArchive(b *testing.B) {
	const perBlock = 10_000
	t0 := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	blocks := [][]Entry{realisticBlock(r, perBlock, t0), realisticBlock(r, perBlock, t0.Add(time.Minute))}
	ctx := context.Background()
	b.Run("append", func(b *testing.B) {
		a, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for i := 0; b.Loop(); i++ {
			if err := a.Append(ctx, blocks[i%2]); err != nil {
				b.Fatal(err)
			}
			n += perBlock
		}
		b.ReportMetric(float64(a.Bytes())/float64(n), "bytes/trace")
	})
	b.Run("search", func(b *testing.B) {
		a, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		for i := range 10 {
			if err := a.Append(ctx, realisticBlock(r, perBlock, t0.Add(time.Duration(i)*time.Minute))); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			if _, err := a.Search(ctx, store.Query{Service: "service-03", Limit: 20}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(10*perBlock, "traces/day-file")
	})
}

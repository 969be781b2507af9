package engine

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// BenchmarkSearchLiveHead is a search by service (20 results, the last
// hour) on an engine shaped like a live server's under the harness: 3,000
// traces of the harness's spans in the head (about what 30k spans/s keeps
// there) over a level-0 block of 3,000 older ones. "summaries" is the
// summary search every API's search starts with, "whole" adds reading
// the 20 traces (the Jaeger searches), "scan" is ScanTraces (Tempo's).
// On a live server every search paid for a copy of the whole head.
func BenchmarkSearchLiveHead(b *testing.B) {
	ctx := context.Background()
	o := testOpts(b.TempDir())
	o.HeadMaxBytes = 1 << 30 // no cut under pressure: the head keeps all 3,000
	e, err := Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Now()
	write := func(traces int, base time.Time) {
		for range traces / 20 {
			if err := e.Write(ctx, loadgenBatch(rng, 1, base)); err != nil {
				b.Fatal(err)
			}
		}
	}
	write(3000, now.Add(-10*time.Minute))
	if err := e.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	write(3000, now.Add(-time.Minute))
	q := store.Query{Service: "checkout", Limit: 20, Range: store.TimeRange{Start: uint64(now.Add(-time.Hour).UnixNano()), End: uint64(now.UnixNano())}}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"summaries", func() error { _, err := e.Search(ctx, q); return err }},
		{"whole", func() error {
			res, err := e.Search(ctx, q)
			if err != nil {
				return err
			}
			refs := make([]store.TraceRef, len(res))
			for k, sum := range res {
				refs[k] = store.TraceRef{ID: sum.TraceID, Hint: store.TimeRange{Start: sum.StartUnixNano, End: sum.EndUnixNano + 1}}
			}
			_, err = e.Traces(ctx, refs)
			return err
		}},
		{"scan", func() error { return e.ScanTraces(ctx, q, func([]model.Span) error { return nil }) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				if err := tc.run(); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
	if st := e.Stats(); st.HeadTraces != 3000 || st.Blocks != 1 {
		b.Fatalf("stats %+v", st)
	}
}

package jaeger

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/priority"
)

// BenchmarkTraceByIDDuringAnalysis measures trace by id through the v1 API
// on one processor (GOMAXPROCS=1, as a server pinned to one core) while an
// analysis worker always has a trace to analyse (a backlog): "fifo" is the
// worker without a gate, "priority" the server's arrangement, where the
// worker yields after each trace and stands aside while a query runs, and
// "priority-4procs" that with the server's processor floor
// (priority.MinProcs Ps on one CPU: run it under taskset -c 0, or the
// worker gets a CPU of its own). Requests are due every 3 ms (open loop) and their latency counts from
// when they were due. Reports the median and 99th percentile.
//
//	taskset -c 0 go test -run '^$' -bench TraceByIDDuringAnalysis -benchtime 400x ./internal/api/jaeger/
func BenchmarkTraceByIDDuringAnalysis(b *testing.B) {
	traces := apitest.EngineSpans() / 20
	st := apitest.EngineWith(b, traces, 20)
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = apitest.SynthTrace(i*(traces/len(ids)), 1)[0].TraceID.String()
	}
	work := apitest.SynthTrace(7, 300) // ~1-3 ms of detector work per trace
	for _, mode := range []string{"fifo", "priority", "priority-4procs"} {
		b.Run(mode, func(b *testing.B) {
			var gate *priority.Gate
			procs := 1
			switch mode {
			case "priority":
				gate = &priority.Gate{}
			case "priority-4procs":
				gate, procs = &priority.Gate{}, priority.MinProcs
			}
			h := gate.Middleware(NewHandler(st, Options{}))
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					analyze.Analyze(work, analyze.Options{})
					if gate != nil {
						gate.Yield(ctx, 25*time.Millisecond)
					}
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			i := 0
			b.ResetTimer()
			next := time.Now()
			for b.Loop() {
				// Open loop: a request is due every 3 ms, and its latency
				// counts from when it was due, so time spent waiting for
				// the processor before the request is even read (the
				// worker holding it) is counted, as a client sees it.
				next = next.Add(3 * time.Millisecond)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				req := httptest.NewRequest(http.MethodGet, "/api/traces/"+ids[i%len(ids)], nil)
				i++
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				lat = append(lat, time.Since(next))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d", req.URL, rec.Code)
				}
				if now := time.Now(); now.Sub(next) > 3*time.Millisecond {
					next = now // fell behind: do not let one stall cascade
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1e3, "p99-ms")
		})
	}
}

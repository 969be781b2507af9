package cluster

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store/engine"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngest sends OTLP/gRPC batches of 500 spans round-robin to the
// nodes of an in-process cluster (all nodes in this process, so the CPU
// measured is the whole cluster's: ingest, forwarding to owners, WAL,
// head, cuts to blocks) and reports CPU per span. Blocks go to MinIO with
// TRACEDX_TEST_S3_ENDPOINT set, else to a shared directory.
//
//	go test -run '^$' -bench Ingest -benchtime 400x ./internal/cluster/
func BenchmarkIngest(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(map[int]string{1: "nodes=1", 3: "nodes=3"}[n], func(b *testing.B) {
			nodes := startClusterWith(b, n, engine.Options{IdleTimeout: 2 * time.Second})
			r := rand.New(rand.NewPCG(9, 9))
			var reqs []ptraceotlp.ExportRequest
			spansPer := 0
			for i := 0; i < b.N; i++ {
				spans := makeTraces(r, 250)
				spansPer = len(spans)
				reqs = append(reqs, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
			}
			var clients []ptraceotlp.GRPCClient
			for _, nd := range nodes {
				conn, err := grpc.NewClient(nd.in.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				clients = append(clients, ptraceotlp.NewGRPCClient(conn))
			}
			const workers = 8
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			next := 0
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= b.N {
							return
						}
						if _, err := clients[i%len(clients)].Export(context.Background(), reqs[i]); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			cpu, wall := cpuTime()-cpu0, time.Since(t0)
			b.StopTimer()
			spans := float64(b.N * spansPer)
			b.ReportMetric(float64(cpu.Nanoseconds())/spans/1e3, "cpu-µs/span")
			b.ReportMetric(spans/wall.Seconds(), "spans/s")
		})
	}
}

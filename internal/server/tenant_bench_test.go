package server

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/config"
)

// BenchmarkClusterIngest sends OTLP/gRPC batches (the load generator's
// 50 traces, ~500 spans with HTTP and database attributes) from 8
// clients, round robin, to the nodes of a 3-node cluster of whole servers
// in this process (each with its own data directory, blocks on local disk
// unless TRACEDX_TEST_S3_ENDPOINT names a bucket), multi-tenant (one
// tenant) or not, and reports the CPU per span of the whole cluster:
// ingest, forwarding to the owners, the WALs and heads. Analysis,
// analytics and alerting are off: their cost per span is the same either
// way.
//
//	go test -run '^$' -bench ClusterIngest -benchtime 300x -count 3 ./internal/server/
func BenchmarkClusterIngest(b *testing.B) {
	b.Run("single-tenant", func(b *testing.B) { benchClusterIngest(b, false) })
	b.Run("multi-tenant", func(b *testing.B) { benchClusterIngest(b, true) })
}

func benchClusterIngest(b *testing.B, tenants bool) {
	nodes, _, _ := startClusterNodes(b, 3, func(c *config.Config) {
		c.Cluster.Forward = true
		c.Analysis.Enabled, c.Analytics.Enabled, c.Alerting.Enabled = false, false, false
		c.Multitenancy.Enabled = tenants
	})
	ctx := context.Background()
	if tenants {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-scope-orgid", "bench")
	}
	clients := make([]ptraceotlp.GRPCClient, len(nodes))
	for i, n := range nodes {
		conn, err := grpc.NewClient(n.Addr("otlp-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		clients[i] = ptraceotlp.NewGRPCClient(conn)
	}
	r := rand.New(rand.NewPCG(9, 9))
	batch := func() ptraceotlp.ExportRequest {
		return ptraceotlp.NewExportRequestFromTraces(gen.Traces(r, 50, time.Now()))
	}
	// Every node opens the tenant's instance before the clock starts.
	for i, c := range clients {
		if _, err := c.Export(ctx, batch()); err != nil {
			b.Fatalf("first export to node %d: %v", i, err)
		}
	}
	// Requests are built before the clock starts: encoding them is the
	// sender's cost.
	reqs := make([]ptraceotlp.ExportRequest, b.N)
	spans := 0
	for i := range reqs {
		reqs[i] = batch()
		spans += reqs[i].Traces().SpanCount()
	}
	b.ResetTimer()
	cpu0, _ := processCPU()
	t0 := time.Now()
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(sent.Add(1)) - 1; i < len(reqs); i = int(sent.Add(1)) - 1 {
				if _, err := clients[i%len(clients)].Export(ctx, reqs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu, _ := processCPU()
	wall := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/float64(spans)/1e3, "cpu-µs/span")
	b.ReportMetric(float64(spans)/wall.Seconds(), "spans/s")
	// Whether the nodes split the requests by owner (0 before they did).
	var split float64
	for _, n := range nodes {
		split += metricValue(b, n, `tracedx_ingest_split_requests_total{protocol="otlp_grpc"}`)
	}
	b.ReportMetric(split/float64(len(reqs)+len(nodes)), "split/request")
}

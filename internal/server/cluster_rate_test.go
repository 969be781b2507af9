package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// A tenant's ingest rate is the cluster's, not each node's: with its
// traffic spread over three nodes, the cluster admits about the
// configured rate (plus one second's burst), where three nodes each
// enforcing the whole limit would admit three times as much.
func TestTenantRateIsClusterWide(t *testing.T) {
	const rate = 150
	nodes, _, clientTLS := secureCluster(t, 3, func(c *config.Config) {
		c.Multitenancy.Limits = config.TenantLimits{IngestSpansPerSecond: rate}
	})
	clients := make([]ptraceotlp.GRPCClient, len(nodes))
	for i, n := range nodes {
		conn, err := grpc.NewClient(n.Addr("otlp-grpc"), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		clients[i] = ptraceotlp.NewGRPCClient(conn)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokenA)
	// Batches of 7 traces (21 spans), one sender per node, each as fast
	// as its node answers (well above the rate).
	const traces = 7
	var next atomic.Uint64
	batch := func() []model.Span {
		var spans []model.Span
		for k := 0; k < traces; k++ {
			n := next.Add(1)
			var id model.TraceID
			binary.BigEndian.PutUint64(id[:8], n*0x9e3779b97f4a7c15)
			binary.BigEndian.PutUint64(id[8:], n)
			spans = append(spans, clientServerPair(id)...)
		}
		return spans
	}
	// Every node opens the tenant's instance first (it would hold up the
	// first requests), then the buckets refill.
	for i, c := range clients {
		if _, err := c.Export(ctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(batch()))); err != nil {
			t.Fatalf("first export to node %d: %v", i, err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	const span = 3 * time.Second
	var admitted, refused atomic.Int64
	errs := make(chan error, len(clients))
	start := time.Now()
	for i, c := range clients {
		go func() {
			for time.Since(start) < span {
				spans := batch()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Export(rctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
				cancel()
				switch status.Code(err) {
				case codes.OK:
					admitted.Add(int64(len(spans)))
				case codes.ResourceExhausted:
					refused.Add(int64(len(spans)))
					time.Sleep(10 * time.Millisecond)
				default:
					errs <- fmt.Errorf("export to node %d: %w", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start).Seconds()
	// Each node's bucket starts with a second of its share: the burst
	// of the whole cluster is one second of the rate.
	most := rate*(elapsed+1)*1.15 + 3*traces*3
	least := rate * elapsed * 0.8
	in, out := admitted.Load(), refused.Load()
	t.Logf("admitted %d spans in %.1fs at %d spans/s over 3 nodes, refused %d", in, elapsed, rate, out)
	if float64(in) > most {
		t.Fatalf("the cluster admitted %d spans in %.1fs, over its rate of %d spans/s (at most %.0f): each node enforces the whole limit", in, elapsed, rate, most)
	}
	if float64(in) < least || out == 0 {
		t.Fatalf("the cluster admitted %d spans in %.1fs and refused %d: the test did not reach the rate of %d spans/s", in, elapsed, out, rate)
	}
}

package server

import (
	"context"
	"encoding/binary"
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
	const rate = 300
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
	// Batches of 7 traces (21 spans) round robin over the nodes, a few
	// hundred a second: well above the rate.
	const traces = 7
	next := uint64(0)
	batch := func() []model.Span {
		var spans []model.Span
		for k := 0; k < traces; k++ {
			next++
			var id model.TraceID
			binary.BigEndian.PutUint64(id[:8], next*0x9e3779b97f4a7c15)
			binary.BigEndian.PutUint64(id[8:], next)
			spans = append(spans, clientServerPair(id)...)
		}
		return spans
	}
	const span = 3 * time.Second
	var admitted, refused int
	start := time.Now()
	for i := 0; time.Since(start) < span; i++ {
		spans := batch()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := clients[i%len(clients)].Export(rctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
		cancel()
		time.Sleep(2 * time.Millisecond)
		switch status.Code(err) {
		case codes.OK:
			admitted += len(spans)
		case codes.ResourceExhausted:
			refused += len(spans)
		default:
			t.Fatalf("export to node %d: %v", i%len(clients), err)
		}
	}
	elapsed := time.Since(start).Seconds()
	// Each node's bucket starts with a second of its share: the burst
	// of the whole cluster is one second of the rate.
	most := rate*(elapsed+1)*1.15 + 3*traces*3
	least := rate * elapsed * 0.8
	t.Logf("admitted %d spans in %.1fs at %d spans/s over 3 nodes, refused %d", admitted, elapsed, rate, refused)
	if float64(admitted) > most {
		t.Fatalf("the cluster admitted %d spans in %.1fs, over its rate of %d spans/s (at most %.0f): each node enforces the whole limit", admitted, elapsed, rate, most)
	}
	if float64(admitted) < least || refused == 0 {
		t.Fatalf("the cluster admitted %d spans in %.1fs and refused %d: the test did not reach the rate of %d spans/s", admitted, elapsed, refused, rate)
	}
}

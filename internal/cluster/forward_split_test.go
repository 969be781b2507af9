package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// startIngest runs an OTLP/gRPC receiver on a free port writing to sink
// and returns its address.
func startIngest(t *testing.T, cfg ingest.Config, sink ingest.Sink) string {
	t.Helper()
	cfg.GRPCAddr = "127.0.0.1:0"
	in, err := ingest.New(cfg, sink, nil, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Shutdown(context.Background()) })
	return in.GRPCAddr()
}

// startStoringNode runs a single node (no cluster) storing in memory: what
// a trace's owner stores of spans sent to it directly.
func startStoringNode(t *testing.T, cfg ingest.Config) (string, *storedSpans) {
	t.Helper()
	stored := &storedSpans{}
	return startIngest(t, cfg, stored), stored
}

// answer renders a node's answer to a request: its status, or the partial
// success.
func answer(resp []byte, err error) string {
	if err != nil {
		st := status.Convert(err)
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(resp); err != nil {
		return "undecodable answer: " + err.Error()
	}
	return fmt.Sprintf("ok, %d rejected: %s", r.PartialSuccess().RejectedSpans(), r.PartialSuccess().ErrorMessage())
}

// TestSplitRequestsStoredAsSentToTheirOwner: a 3-node cluster receiving
// every request at one node, which splits each by owner and forwards the
// other owners' parts in the bytes they came in, stores what a single
// node stores of the same requests, each span on its trace's owner, under
// the default limits and limits that cut a lot.
func TestSplitRequestsStoredAsSentToTheirOwner(t *testing.T) {
	tight := ingest.Config{MaxAttributesPerSpan: 3, MaxEventsPerSpan: 2, MaxLinksPerSpan: 1,
		MaxAttributeDepth: 2, MaxAttributeValueBytes: 64}
	for name, cfg := range map[string]ingest.Config{"default": {}, "tight": tight} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(41, 42))
			refAddr, ref := startStoringNode(t, cfg)
			refConn := dialRaw(t, refAddr)
			nodes := startStoringCluster(t, cfg, 3, nil)
			conn := dialRaw(t, nodes[0].addr)
			sent := 0
			for i := range 200 {
				var req []byte
				if i%3 == 0 {
					b, err := ptraceotlp.NewExportRequestFromTraces(gen.Traces(rng, 4, time.Now().Add(-time.Minute))).MarshalProto()
					if err != nil {
						t.Fatal(err)
					}
					req = b
				} else {
					g := otlpconvtest.TraceRequests{R: rng, NowUnixNano: uint64(time.Now().UnixNano())}
					req = g.Request()
				}
				// Requests a node stores whole: those it refuses in part
				// are not split (TestSplitAnswersAsOneNode), and a single
				// node keeps none of them here.
				ref.mu.Lock()
				before := len(ref.spans)
				ref.mu.Unlock()
				if a := answer(exportRaw(refConn, req)); a != "ok, 0 rejected: " {
					ref.mu.Lock()
					ref.spans = ref.spans[:before]
					ref.mu.Unlock()
					continue
				}
				if a := answer(exportRaw(conn, req)); a != "ok, 0 rejected: " {
					t.Fatalf("the cluster answered %q to a request a single node stored", a)
				}
				sent++
			}
			var all []string
			forwarded := 0
			for i, n := range nodes {
				n.stored.mu.Lock()
				for _, sp := range n.stored.spans {
					if owner := n.ring.TraceOwner(sp.TraceID).ID; owner != n.ring.Self().ID {
						t.Fatalf("node %d stored a span of trace %s, owned by %s", i, sp.TraceID, owner)
					}
				}
				if i > 0 {
					forwarded += len(n.stored.spans)
				}
				n.stored.mu.Unlock()
				all = append(all, n.stored.texts()...)
			}
			slices.Sort(all)
			want := ref.texts()
			if sent < 100 || forwarded < 200 {
				t.Fatalf("%d requests stored, %d spans forwarded: too few to compare", sent, forwarded)
			}
			if copied := int(testutil.ToFloat64(nodes[0].fw.copied)); copied != forwarded {
				t.Fatalf("%d spans forwarded in the bytes they came in, of %d", copied, forwarded)
			}
			if !slices.Equal(all, want) {
				for i := range min(len(all), len(want)) {
					if all[i] != want[i] {
						t.Fatalf("the cluster stored %d spans, a single node %d; first difference:\ncluster %s\nsingle  %s", len(all), len(want), all[i], want[i])
					}
				}
				t.Fatalf("the cluster stored %d spans, a single node %d", len(all), len(want))
			}
		})
	}
}

// TestSplitAnswersAsOneNode: whatever a request holds (damaged bytes,
// invalid ids or times, what the direct decoder leaves to pdata), a
// cluster node answers it as a single node does: the same error, or the
// same partial success.
func TestSplitAnswersAsOneNode(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	refAddr, _ := startStoringNode(t, ingest.Config{})
	refConn := dialRaw(t, refAddr)
	nodes := startStoringCluster(t, ingest.Config{}, 3, nil)
	conn := dialRaw(t, nodes[0].addr)
	kinds := map[string]int{}
	for i := range 300 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%5 == 0, NowUnixNano: uint64(time.Now().UnixNano())}
		req := g.Request()
		if i%2 == 0 {
			req = otlpconvtest.Mutate(rng, req)
		}
		want := answer(exportRaw(refConn, req))
		if got := answer(exportRaw(conn, req)); got != want {
			t.Fatalf("request %d: the cluster answered %q, a single node %q", i, got, want)
		}
		kind := "stored"
		switch {
		case want[:2] != "ok":
			kind = "refused"
		case want != "ok, 0 rejected: ":
			kind = "partial"
		}
		kinds[kind]++
	}
	if kinds["refused"] < 20 || kinds["partial"] < 20 || kinds["stored"] < 20 {
		t.Fatalf("answers %v: too few of a kind to tell", kinds)
	}
}

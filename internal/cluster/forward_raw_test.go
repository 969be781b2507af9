package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// storedSpans keeps what a node stores.
type storedSpans struct {
	mu    sync.Mutex
	spans []model.Span
}

func (r *storedSpans) Write(_ context.Context, spans []model.Span) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = model.AppendClones(r.spans, spans)
	return nil
}

// texts renders the stored spans as a sorted list (the order spans reach
// an owner in is not the order they were sent in).
func (r *storedSpans) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.spans))
	for i := range r.spans {
		out[i] = fmt.Sprintf("%#v", r.spans[i])
	}
	slices.Sort(out)
	return out
}

// storingNode is a node of startStoringCluster.
type storingNode struct {
	addr   string
	stored *storedSpans
	fw     *Forwarder
	ring   *Ring
}

// startStoringCluster runs n nodes whose forwarders store their own spans
// in memory; tune sets up each forwarder before it takes requests.
func startStoringCluster(t *testing.T, cfg ingest.Config, n int, tune func(*Forwarder)) []storingNode {
	t.Helper()
	nodes := make([]storingNode, n)
	refs := make([]*sinkRef, n)
	var peers []Peer
	for i := range refs {
		refs[i] = &sinkRef{}
		c := cfg
		c.Forwarded, c.ForwardsTrace = Security{}.FromPeer, refs[i].forwardsTrace
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: startIngest(t, c, refs[i]), HTTP: "127.0.0.1:1"})
	}
	for i, ref := range refs {
		ring, err := NewRing(peers, peers[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		stored := &storedSpans{}
		fw, err := NewForwarder(ring, stored, Security{}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if tune != nil {
			tune(fw)
		}
		t.Cleanup(func() { fw.Close() })
		ref.mu.Lock()
		ref.w = fw
		ref.mu.Unlock()
		ref.ring.Store(ring)
		nodes[i] = storingNode{addr: peers[i].OTLPGRPC, stored: stored, fw: fw, ring: ring}
	}
	return nodes
}

// dialRaw connects to an OTLP/gRPC address for exportRaw.
func dialRaw(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// exportRaw sends an encoded trace export request and returns the encoded
// answer.
func exportRaw(conn *grpc.ClientConn, req []byte) ([]byte, error) {
	var resp []byte
	err := conn.Invoke(context.Background(), traceExportMethod, &req, &resp, grpc.ForceCodec(encodedProto{}))
	return resp, err
}

// storedVia sends requests to node n0 of a two-node cluster, whose
// forwarder (taking whole requests, not split ones) copies spans as they
// came or (encodeAll) encodes them all, and returns what each node stored.
func storedVia(t *testing.T, cfg ingest.Config, requests [][]byte, encodeAll bool) (n0, n1 []string, sent, copied int) {
	t.Helper()
	nodes := startStoringCluster(t, cfg, 2, func(fw *Forwarder) { fw.encodeAll, fw.noSplit = encodeAll, true })
	conn := dialRaw(t, nodes[0].addr)
	for _, req := range requests {
		// Refused requests (the limits, bad ids) are part of the test: the
		// same ones must be refused both ways.
		if _, err := exportRaw(conn, req); err == nil {
			sent++
		}
	}
	return nodes[0].stored.texts(), nodes[1].stored.texts(), sent, int(testutil.ToFloat64(nodes[0].fw.copied))
}

// TestForwardedRawStoresWhatEncodedStores: spans a node forwards as they
// came are stored by their owner exactly as the spans it encoded from the
// model were, for random requests (unknown and repeated fields, composite
// values, spans the limits cut, invalid spans the checks drop), under the
// default limits and under limits that cut a lot.
func TestForwardedRawStoresWhatEncodedStores(t *testing.T) {
	tight := ingest.Config{MaxAttributesPerSpan: 3, MaxEventsPerSpan: 2, MaxLinksPerSpan: 1,
		MaxAttributeDepth: 2, MaxAttributeValueBytes: 64}
	for _, c := range []struct {
		name string
		cfg  ingest.Config
		// Under tight limits few spans come through uncut.
		minCopied int
	}{{"default", ingest.Config{}, 50}, {"tight", tight, 1}} {
		cfg := c.cfg
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			var requests [][]byte
			for i := range 150 {
				g := otlpconvtest.TraceRequests{R: rng, NowUnixNano: uint64(time.Now().UnixNano())}
				requests = append(requests, g.Request())
				if i%5 == 0 {
					// What instrumentation sends, which is mostly copied.
					b, err := ptraceotlp.NewExportRequestFromTraces(gen.Traces(rng, 3, time.Now().Add(-time.Minute))).MarshalProto()
					if err != nil {
						t.Fatal(err)
					}
					requests = append(requests, b)
				}
			}
			raw0, raw1, sent, copied := storedVia(t, cfg, requests, false)
			enc0, enc1, sentEnc, _ := storedVia(t, cfg, requests, true)
			if copied < c.minCopied || copied > len(raw1)*9/10 {
				t.Fatalf("%d of the %d spans stored by the owner were copied raw; the test wants both ways used", copied, len(raw1))
			}
			if sent != sentEnc {
				t.Fatalf("%d requests accepted with raw forwarding, %d with encoding", sent, sentEnc)
			}
			if len(raw1) < 50 || len(raw0) < 50 {
				t.Fatalf("the nodes stored %d and %d spans: too few to compare", len(raw0), len(raw1))
			}
			if !slices.Equal(raw0, enc0) {
				t.Fatal("the receiving node stored different spans")
			}
			if !slices.Equal(raw1, enc1) {
				for i := range min(len(raw1), len(enc1)) {
					if raw1[i] != enc1[i] {
						t.Fatalf("the owner stored %d spans forwarded raw, %d encoded; first difference:\nraw     %s\nencoded %s", len(raw1), len(enc1), raw1[i], enc1[i])
					}
				}
				t.Fatalf("the owner stored %d spans forwarded raw, %d encoded", len(raw1), len(enc1))
			}
		})
	}
}

package cluster

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

const peerToken = "the-cluster-peer-token-0123456789"

// recordingSink keeps the incoming metadata of the batches it gets and
// whether its forwarder took them as a peer's.
type recordingSink struct {
	fw *Forwarder

	mu       sync.Mutex
	md       []metadata.MD
	fromPeer []bool
}

func (r *recordingSink) Write(ctx context.Context, _ []model.Span) error {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.md = append(r.md, md)
	r.fromPeer = append(r.fromPeer, r.fw.sec.FromPeer(ctx))
	return nil
}

// A forwarded batch carries the peer token and the tenant; the owner
// takes it as a peer's only with the token, so a sender setting the
// forwarded marker itself cannot keep spans off their owner.
func TestForwardCarriesTokenAndTenant(t *testing.T) {
	owner := &recordingSink{}
	in, err := ingest.New(ingest.Config{GRPCAddr: "127.0.0.1:0"}, owner, nil, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Shutdown(context.Background()) })
	peers := []Peer{{ID: "n0", OTLPGRPC: "127.0.0.1:1", HTTP: "127.0.0.1:1"}, {ID: "n1", OTLPGRPC: in.GRPCAddr(), HTTP: "127.0.0.1:1"}}
	ring0, _ := NewRing(peers, "n0")
	ring1, _ := NewRing(peers, "n1")
	sec := Security{Token: peerToken, Tenant: "acme"}
	fw0, err := NewForwarder(ring0, owner, sec, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer fw0.Close()
	owner.fw, err = NewForwarder(ring1, owner, sec, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.fw.Close()

	var spans []model.Span
	for _, s := range makeTraces(rand.New(rand.NewPCG(7, 8)), 40) {
		if ring0.TraceOwner(s.TraceID).ID == "n1" {
			spans = append(spans, s)
		}
	}
	if len(spans) == 0 {
		t.Fatal("no trace owned by n1")
	}
	if err := fw0.Write(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	owner.mu.Lock()
	md, fromPeer := owner.md[0], owner.fromPeer[0]
	owner.mu.Unlock()
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+peerToken {
		t.Errorf("forwarded without the peer token: %v", got)
	}
	if got := md.Get("x-scope-orgid"); len(got) != 1 || got[0] != "acme" {
		t.Errorf("forwarded without the tenant: %v", got)
	}
	if !fromPeer {
		t.Error("the owner did not take a batch forwarded with the peer token as a peer's")
	}

	for name, md := range map[string]metadata.MD{
		"marker without a token":    metadata.Pairs(forwardedKey, "n0"),
		"marker with another token": metadata.Pairs(forwardedKey, "n0", "authorization", "Bearer some-tenants-read-write-token"),
	} {
		if owner.fw.sec.FromPeer(metadata.NewIncomingContext(context.Background(), md)) {
			t.Errorf("%s: taken as forwarded by a peer", name)
		}
	}
	if !(Security{}).FromPeer(metadata.NewIncomingContext(context.Background(), metadata.Pairs(forwardedKey, "n0"))) {
		t.Error("without a peer token (trusted network) the marker must count")
	}
	// Keys as a client may spell them, which gRPC does not lower-case in
	// a context built by hand.
	mixed := metadata.MD{"X-Tracedx-Forwarded-By": {"n0"}, "Authorization": {"Bearer " + peerToken}}
	if !owner.fw.sec.FromPeer(metadata.NewIncomingContext(context.Background(), mixed)) {
		t.Error("the marker and the token in other letter cases not taken as a peer's")
	}
}

// Every request to a cluster node asks FromPeer several times; a client's
// request (no marker) costs no allocation.
func TestFromPeerAllocatesNothingForClients(t *testing.T) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		"content-type", "application/grpc", "user-agent", "otel-collector", ":authority", "node:4317",
		"authorization", "Bearer some-tenants-token"))
	sec := Security{Token: peerToken}
	if n := testing.AllocsPerRun(100, func() {
		if sec.FromPeer(ctx) {
			t.Fatal("a client's request taken as a peer's")
		}
	}); n != 0 {
		t.Errorf("%v allocations per call for a client's request, want 0", n)
	}
}

// fakeLocal answers the peer API with one trace.
type fakeLocal struct{ spans []model.Span }

func (f fakeLocal) PeerTrace(context.Context, model.TraceID, map[string]bool) ([]model.Span, error) {
	return f.spans, nil
}
func (f fakeLocal) PeerSearch(context.Context, store.Query, map[string]bool) ([]model.TraceSummary, error) {
	return nil, nil
}
func (fakeLocal) RecentBlocks(time.Duration) []string { return nil }
func (fakeLocal) PeerWindow() time.Duration           { return time.Minute }

// peerTestTimeout bounds the test's calls to its local TLS server: the
// timeout is not what the test is about, and a handshake under -race on a
// loaded 2-core machine can take a good part of a second.
const peerTestTimeout = 10 * time.Second

// The peer API answers only the peer token; the peer client sends it,
// with the tenant, and speaks https when the cluster has TLS.
func TestPeerAPINeedsThePeerToken(t *testing.T) {
	spans := makeTraces(rand.New(rand.NewPCG(9, 9)), 1)
	var gotTenant string
	mux := http.NewServeMux()
	RegisterPeerRoutes(mux, fakeLocal{spans: spans}, Security{Token: peerToken}, quiet)
	parts := &Parts{}
	ServePart(parts, "echo", func(_ context.Context, n int) (int, error) { return n, nil })
	RegisterPartRoutes(mux, parts, Security{Token: peerToken}, quiet)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotTenant = r.Header.Get(tenantHeader)
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	peer := Peer{ID: "p", HTTP: srv.Listener.Addr().String()}
	clientTLS := &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}

	for _, token := range []string{"", "some-tenants-read-write-token"} {
		c := &peerClient{peer: peer, http: newPeerHTTP(Security{Token: token, TLS: clientTLS}, peerTestTimeout)}
		_, err := c.trace(context.Background(), spans[0].TraceID, nil)
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("token %q: %v, want 401", token, err)
		}
		// The aggregate parts (RED records, findings) are peer-only too.
		resp, err := c.post(context.Background(), pathPart+"echo", 1)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %q asking a part: %v %v, want 401", token, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	c := &peerClient{peer: peer, http: newPeerHTTP(Security{Token: peerToken, TLS: clientTLS, Tenant: "acme"}, peerTestTimeout)}
	got, err := c.trace(context.Background(), spans[0].TraceID, nil)
	if err != nil || len(got) != len(spans) {
		t.Fatalf("with the peer token: %d spans, %v", len(got), err)
	}
	if gotTenant != "acme" {
		t.Errorf("the peer call named tenant %q, want acme", gotTenant)
	}
	resp, err := c.post(context.Background(), pathPart+"echo", 1)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("asking a part with the peer token: %v %v", resp, err)
	}
	resp.Body.Close()
}

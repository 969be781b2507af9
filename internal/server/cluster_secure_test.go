package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/freeport"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/tlsutil/tlstest"
)

const testPeerToken = "peer-token-of-the-test-cluster-0123456789"

// secureCluster runs n whole servers as one cluster on MinIO, with tokens
// (tenant-bound tokenA and tokenB, and the peer token), TLS with client
// certificates on every listener, and multitenancy. It returns the nodes,
// their peer list and a client configuration with a certificate the
// nodes accept.
func secureCluster(t *testing.T, n int, tune ...func(*config.Config)) ([]*Server, []cluster.Peer, *tls.Config) {
	t.Helper()
	ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT")
	if ep == "" {
		t.Skip("TRACEDX_TEST_S3_ENDPOINT not set: run e2e/minio.sh")
	}
	dir := t.TempDir()
	ca := tlstest.NewCA(t)
	tokens, peerToken := filepath.Join(dir, "tokens"), filepath.Join(dir, "peer-token")
	if err := os.WriteFile(tokens, []byte(tokenA+" a read,write\n"+tokenB+" b read,write\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(peerToken, []byte("# shared by the nodes\n"+testPeerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var peers []cluster.Peer
	for i := 0; i < n; i++ {
		peers = append(peers, cluster.Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: freeport.Addr(t), HTTP: freeport.Addr(t)})
	}
	prefix := fmt.Sprintf("secure-%d", time.Now().UnixNano())
	servers := make([]*Server, n)
	for i, p := range peers {
		_, cert, key := ca.Issue(t, p.ID)
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Listen = config.Listen{OTLPGRPC: p.OTLPGRPC, HTTP: p.HTTP}
		cfg.Storage.TraceIdleTimeout = 200 * time.Millisecond
		cfg.Storage.Backend = "s3"
		cfg.Storage.S3 = config.S3{Endpoint: ep, Bucket: "tracedx-server-test", Prefix: prefix}
		cfg.Cluster = config.Cluster{NodeID: p.ID, Peers: peers, RefreshInterval: time.Second, Forward: true, TokenFile: peerToken}
		cfg.Multitenancy.Enabled = true
		cfg.Auth.TokenFile = tokens
		cfg.TLS = config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.File}
		for _, f := range tune {
			f(&cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("node %s: %v", p.ID, err)
		}
		servers[i] = runClusterNode(t, cfg)
	}
	client, _, _ := ca.Issue(t, "client")
	return servers, peers, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client}}
}

// runClusterNode starts a server of cfg until the test ends.
func runClusterNode(t *testing.T, cfg config.Config) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	if err := s.Start(ctx); err != nil {
		close(done)
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		_ = s.Wait(ctx)
	}()
	return s
}

// exportOverTLS sends spans over OTLP/gRPC with TLS (none when tc is
// nil), a token and extra metadata (key, value pairs).
func exportOverTLS(t *testing.T, addr string, tc *tls.Config, token string, spans []model.Span, md ...string) error {
	t.Helper()
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		md = append(md, "authorization", "Bearer "+token)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
	return err
}

func tenantTraces(seed byte, n int) ([]model.Span, []model.TraceID) {
	var spans []model.Span
	var ids []model.TraceID
	for i := 0; i < n; i++ {
		id := model.TraceID{seed, byte(i), 7, 7, byte(i * 37), 1, 2, 3, seed, byte(i * 11), 4, 5, 6, 7, 8, 9}
		ids = append(ids, id)
		spans = append(spans, clientServerPair(id)...)
	}
	return spans, ids
}

// httpsCall sends a request with a token and extra headers (name, value
// pairs) and returns the status and body.
func httpsCall(t *testing.T, c *http.Client, method, u, token string, body io.Reader, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A cluster with tokens, mTLS and two tenants: spans sent to any node are
// found from every node by their tenant and never by the other; nothing
// answers without a valid token, and a tenant's token cannot pass for a
// peer.
func TestSecureMultiTenantCluster(t *testing.T) {
	nodes, peers, clientTLS := secureCluster(t, 3)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 20 * time.Second}

	// Tenant a's traces go to n0 and n2, tenant b's to n1; the ring sends
	// most of them on to other nodes.
	spansA, idsA := tenantTraces(0xa0, 24)
	spansB, idsB := tenantTraces(0xb0, 12)
	half := len(spansA) / 2
	for _, send := range []struct {
		node  int
		token string
		spans []model.Span
	}{{0, tokenA, spansA[:half]}, {2, tokenA, spansA[half:]}, {1, tokenB, spansB}} {
		if err := exportOverTLS(t, nodes[send.node].Addr("otlp-grpc"), clientTLS, send.token, send.spans); err != nil {
			t.Fatalf("export to n%d: %v", send.node, err)
		}
	}

	ring, err := cluster.NewRing(peers, "n0")
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, id := range append(append([]model.TraceID{}, idsA...), idsB...) {
		owners[ring.TraceOwner(id).ID]++
	}
	if len(owners) != 3 {
		t.Fatalf("the test's traces should be owned by every node: %v", owners)
	}

	// A slow query of tenant a, owned by another node than it is sent
	// to: its finding is stored on the owner and listed by every node.
	var slow []model.Span
	for i := 0; ; i++ {
		if slow = slowOrder(i, time.Now().Add(-time.Minute)); ring.TraceOwner(slow[0].TraceID).ID != "n0" {
			break
		}
	}
	if err := exportOverTLS(t, nodes[0].Addr("otlp-grpc"), clientTLS, tokenA, slow); err != nil {
		t.Fatal(err)
	}

	mine := map[string][]model.TraceID{tokenA: idsA, tokenB: idsB}
	others := map[string][]model.TraceID{tokenA: idsB, tokenB: idsA}
	for i, nd := range nodes {
		base := "https://" + nd.Addr("http")
		for token, ids := range mine {
			for _, id := range ids {
				code, body := httpsCall(t, c, "GET", base+"/api/v1/traces/"+id.String(), token, nil)
				if code != http.StatusOK || strings.Count(body, `"span_id"`) != 3 {
					t.Fatalf("n%d: own trace %s (owner %s): %d %.300s", i, id, ring.TraceOwner(id).ID, code, body)
				}
			}
			for _, id := range others[token] {
				if code, body := httpsCall(t, c, "GET", base+"/api/v1/traces/"+id.String(), token, nil); code != http.StatusNotFound {
					t.Fatalf("n%d: the other tenant's trace %s: %d %.300s", i, id, code, body)
				}
			}
			// Search merges the peers' answers of the same tenant only.
			var res struct {
				Traces []struct {
					TraceID string `json:"trace_id"`
				} `json:"traces"`
			}
			u := base + "/api/v1/search?service=frontend&limit=1000&start=" + strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
			code, body := httpsCall(t, c, "GET", u, token, nil)
			if code != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil {
				t.Fatalf("n%d: search: %d %.300s", i, code, body)
			}
			want := map[string]bool{}
			for _, id := range ids {
				want[id.String()] = true
			}
			for _, tr := range res.Traces {
				if !want[tr.TraceID] {
					t.Fatalf("n%d: search found %s, not the tenant's", i, tr.TraceID)
				}
			}
			if len(res.Traces) != len(ids) {
				t.Fatalf("n%d: search found %d traces, want the tenant's %d", i, len(res.Traces), len(ids))
			}
		}
	}

	slowID := slow[0].TraceID.String()
	for i, nd := range nodes {
		u := "https://" + nd.Addr("http") + "/api/v1/findings"
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if _, body := httpsCall(t, c, "GET", u, tokenA, nil); strings.Contains(body, slowID) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n%d: tenant a's finding (trace owned by %s) never listed", i, ring.TraceOwner(slow[0].TraceID).ID)
			}
		}
		if code, body := httpsCall(t, c, "GET", u, tokenB, nil); code != http.StatusOK || strings.Contains(body, slowID) {
			t.Fatalf("n%d: tenant b's findings: %d %.300s", i, code, body)
		}
	}

	// The public APIs and ingest refuse a missing or wrong token.
	base := "https://" + nodes[1].Addr("http")
	for _, token := range []string{"", "not-a-valid-token-0000"} {
		if code, _ := httpsCall(t, c, "GET", base+"/api/v1/traces/"+idsA[0].String(), token, nil); code != http.StatusUnauthorized {
			t.Errorf("API with token %q: %d, want 401", token, code)
		}
		if err := exportOverTLS(t, nodes[1].Addr("otlp-grpc"), clientTLS, token, spansA[:3]); status.Code(err) != codes.Unauthenticated {
			t.Errorf("ingest with token %q: %v, want UNAUTHENTICATED", token, err)
		}
	}

	// The peer API: refused without the peer token, also to a tenant's
	// read/write token; answered with it, for the tenant it names.
	search := func(token, org string) (int, string) {
		q := `{"query":{"service":"frontend","limit":1000},"exclude":[]}`
		return httpsCall(t, c, "POST", base+"/internal/cluster/v1/search", token, strings.NewReader(q),
			"Content-Type", "application/json", "X-Scope-OrgID", org)
	}
	for _, token := range []string{"", "not-a-valid-token-0000", tokenA} {
		if code, body := search(token, "a"); code != http.StatusUnauthorized {
			t.Errorf("peer API with token %q: %d %.200s, want 401", token, code, body)
		}
	}
	code, body := search(testPeerToken, "b")
	var sums []model.TraceSummary
	if code != http.StatusOK || json.Unmarshal([]byte(body), &sums) != nil {
		t.Fatalf("peer API with the peer token: %d %.300s", code, body)
	}
	tenantB := map[model.TraceID]bool{}
	for _, id := range idsB {
		tenantB[id] = true
	}
	for _, s := range sums {
		if !tenantB[s.TraceID] {
			t.Fatalf("peer search for tenant b returned %s, not one of b's traces", s.TraceID)
		}
	}

	// A tenant's token cannot mark spans as forwarded by a peer: they go
	// to their owner like any others.
	var stray model.TraceID
	for i := 0; ; i++ {
		stray = model.TraceID{0xcc, byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, byte(i)}
		if ring.TraceOwner(stray).ID != "n0" {
			break
		}
	}
	owner := ring.TraceOwner(stray).ID
	if err := exportOverTLS(t, nodes[0].Addr("otlp-grpc"), clientTLS, tokenA, clientServerPair(stray), "x-tracedx-forwarded-by", "n9"); err != nil {
		t.Fatal(err)
	}
	peerTrace := func(node int) int {
		q, _ := json.Marshal(map[string]any{"trace_id": stray})
		code, _ := httpsCall(t, c, "POST", "https://"+nodes[node].Addr("http")+"/internal/cluster/v1/trace", testPeerToken, strings.NewReader(string(q)),
			"Content-Type", "application/json", "X-Scope-OrgID", "a")
		return code
	}
	ownerIdx, _ := strconv.Atoi(strings.TrimPrefix(owner, "n"))
	if code := peerTrace(0); code != http.StatusNotFound {
		t.Errorf("a trace owned by %s, marked forwarded by a tenant's token, was kept on n0: %d", owner, code)
	}
	if code := peerTrace(ownerIdx); code != http.StatusOK {
		t.Errorf("a trace sent with a forged forwarded marker did not reach its owner %s: %d", owner, code)
	}
}

// Tenants sharing a bucket keep their blocks under prefixes of their own:
// an engine lists every block under its prefix, so a shared one would
// load another tenant's traces.
func TestTenantsHaveTheirOwnBucketPrefix(t *testing.T) {
	cfg := config.Default()
	cfg.Storage.Backend, cfg.Storage.S3.Prefix = "s3", "prod"
	a, b := tenantConfig(cfg, "a").Storage.S3.Prefix, tenantConfig(cfg, "b").Storage.S3.Prefix
	if a != "prod/tenants/a" || b != "prod/tenants/b" {
		t.Fatalf("tenant prefixes %q and %q, want prod/tenants/a and prod/tenants/b", a, b)
	}
	cfg.Storage.S3.Prefix = ""
	if p := tenantConfig(cfg, "a").Storage.S3.Prefix; p != "tenants/a" {
		t.Fatalf("without a prefix: %q, want tenants/a", p)
	}
}

// A span forwarded to its owner counts against its tenant's ingest rate
// once, on the node its sender reached; a sender setting the forwarded
// marker itself is counted like any other.
func TestTenantRateCountsForwardedSpansOnce(t *testing.T) {
	const rate = 150
	nodes, peers, clientTLS := secureCluster(t, 2, func(c *config.Config) {
		c.Multitenancy.Limits = config.TenantLimits{IngestSpansPerSecond: rate}
	})
	ring, err := cluster.NewRing(peers, "n0")
	if err != nil {
		t.Fatal(err)
	}
	// Traces n1 owns, a full second's worth of a node's share of the
	// tenant's rate (half of it on two nodes) each.
	all, _ := tenantTraces(0xc0, 250)
	var owned []model.Span
	for _, s := range all {
		if ring.TraceOwner(s.TraceID).ID == "n1" {
			owned = append(owned, s)
		}
	}
	const share = rate / 2
	if len(owned) < 2*share {
		t.Fatalf("only %d spans owned by n1", len(owned))
	}
	viaN0, direct := owned[:share], owned[share:2*share]
	// n0 counts them and forwards them to n1 ...
	if err := exportOverTLS(t, nodes[0].Addr("otlp-grpc"), clientTLS, tokenA, viaN0); err != nil {
		t.Fatalf("export to n0: %v", err)
	}
	// ... which did not count them again: its bucket is still full.
	if err := exportOverTLS(t, nodes[1].Addr("otlp-grpc"), clientTLS, tokenA, direct); err != nil {
		t.Fatalf("export to n1 after n0 forwarded a second's worth of spans to it: %v", err)
	}
	// The marker without the peer token does not get around n1's bucket:
	// more spans than it holds (a second of the whole rate, more than any
	// share, whether or not n1 sees n0 answer its probes) are refused.
	more, _ := tenantTraces(0xd0, rate/3+1)
	err = exportOverTLS(t, nodes[1].Addr("otlp-grpc"), clientTLS, tokenA, more, "x-tracedx-forwarded-by", "n0")
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("export with a forged forwarded marker over the tenant's rate: %v, want RESOURCE_EXHAUSTED", err)
	}
}

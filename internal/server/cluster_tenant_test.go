package server

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

// multiTenantCluster runs n multi-tenant nodes as one cluster
// (startClusterNodes; tenants named by X-Scope-OrgID) with limits for
// every tenant, and returns the nodes, their stops and configurations,
// and the ring as the nodes see it.
func multiTenantCluster(t *testing.T, n int, limits config.TenantLimits) ([]*Server, []func(), []config.Config, *cluster.Ring) {
	t.Helper()
	nodes, stops, cfgs := startClusterNodes(t, n, func(c *config.Config) {
		c.Cluster.Forward = true
		c.Storage.TraceIdleTimeout = 200 * time.Millisecond
		c.Multitenancy.Enabled = true
		c.Multitenancy.Limits = limits
	})
	ring, err := cluster.NewRing(cfgs[0].Cluster.Peers, cfgs[0].Cluster.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	return nodes, stops, cfgs, ring
}

// exportTenant sends spans to a node over OTLP/gRPC as tenant org.
func exportTenant(t *testing.T, addr, org string, spans []model.Span) error {
	t.Helper()
	return exportOverTLS(t, addr, nil, "", spans, "x-scope-orgid", org)
}

// ownedBy is spans of tenantTraces(seed, n) whose trace node owns.
func ownedBy(ring *cluster.Ring, node string, seed byte, n int) []model.Span {
	all, _ := tenantTraces(seed, n)
	var out []model.Span
	for _, s := range all {
		if ring.TraceOwner(s.TraceID).ID == node {
			out = append(out, s)
		}
	}
	return out
}

// bigTrace is a trace of 3n spans (n client/server pairs) owned by node.
func bigTrace(t *testing.T, ring *cluster.Ring, node string, n int) []model.Span {
	t.Helper()
	for k := byte(0); k < 255; k++ {
		id := model.TraceID{0xb1, k, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47}
		if ring.TraceOwner(id).ID != node {
			continue
		}
		var spans []model.Span
		for i := 0; i < n; i++ {
			pair := clientServerPair(id)
			for j := range pair {
				pair[j].SpanID[7] = byte(i)
				if !pair[j].ParentSpanID.IsZero() {
					pair[j].ParentSpanID[7] = byte(i)
				}
			}
			spans = append(spans, pair...)
		}
		return spans
	}
	t.Fatalf("no trace id owned by %s", node)
	return nil
}

// tenantTraceSpans waits until a node answers tenant org's trace id with
// want spans, and fails with what it last answered.
func tenantTraceSpans(t *testing.T, s *Server, org string, id model.TraceID, want int) {
	t.Helper()
	var code, got int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, body = call(t, "GET", "http://"+s.Addr("http")+"/api/v1/traces/"+id.String(), "", org, nil)
		if got = strings.Count(body, `"span_id"`); code == 200 && got == want {
			return
		}
	}
	t.Fatalf("trace %s of tenant %s: %d with %d spans, want %d spans (%.200s)", id, org, code, got, want, body)
}

// metricValue is the value of a series of a node's process /metrics
// (0 when absent).
func metricValue(t testing.TB, s *Server, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(metricsOf(t, s))
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// A multi-tenant node splits a request by owner before decoding it, as a
// single-tenant one does, and counts the whole request, forwarded spans
// included, against the tenant's share of the rate; the owner does not
// count the spans forwarded to it again.
func TestTenantRequestSplitAndCountedOnce(t *testing.T) {
	const rate = 300 // 150 spans/s a node
	nodes, _, _, ring := multiTenantCluster(t, 2, config.TenantLimits{IngestSpansPerSecond: rate})
	addr := func(i int) string { return nodes[i].Addr("otlp-grpc") }
	// Both nodes open the tenant's instance (it would hold up the
	// counted requests), then the buckets refill.
	for i := range nodes {
		spans, _ := tenantTraces(byte(0x10+i), 1)
		if err := exportTenant(t, addr(i), "a", spans); err != nil {
			t.Fatalf("first export to n%d: %v", i, err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	const share = rate / 2
	mixed, _ := tenantTraces(0x20, share/3)
	toN1 := 0
	for _, s := range mixed {
		if ring.TraceOwner(s.TraceID).ID == "n1" {
			toN1++
		}
	}
	if toN1 < share/4 || toN1 > share*3/4 {
		t.Fatalf("%d of %d spans owned by n1: the request would not test a split", toN1, len(mixed))
	}
	split := `tracedx_ingest_split_requests_total{protocol="otlp_grpc"}`
	before := metricValue(t, nodes[0], split)
	// n0 takes a second of its share, a third of it n1's, ...
	if err := exportTenant(t, addr(0), "a", mixed); err != nil {
		t.Fatalf("a second of n0's share to n0: %v", err)
	}
	if got := metricValue(t, nodes[0], split); got != before+1 {
		t.Fatalf("n0's %s went from %g to %g: the request was not split by owner", split, before, got)
	}
	// ... counting the spans it forwarded: its bucket is empty ...
	more, _ := tenantTraces(0x30, share/5)
	if err := exportTenant(t, addr(0), "a", more); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("n0 right after a second of its share: %v, want RESOURCE_EXHAUSTED: the forwarded spans were not counted", err)
	}
	// ... while n1, which stored them, did not count them: a second of
	// its own share still passes.
	direct := ownedBy(ring, "n1", 0x40, share)
	if len(direct) < share {
		t.Fatalf("only %d spans owned by n1", len(direct))
	}
	direct = direct[:share]
	if err := exportTenant(t, addr(1), "a", direct); err != nil {
		t.Fatalf("a second of n1's share to n1 after n0 forwarded %d spans to it: %v", toN1, err)
	}
}

// max_spans_per_trace holds for a trace as a whole, its spans sent to
// every node: each node forwards its part, even one over the limit, to
// the owner, which counts them all and is the only one to drop any.
func TestTenantTraceLimitHoldsAcrossNodes(t *testing.T) {
	const limit = 4
	nodes, _, _, ring := multiTenantCluster(t, 3, config.TenantLimits{MaxSpansPerTrace: limit})
	spans := bigTrace(t, ring, "n2", 4) // 12 spans
	parts := [][]model.Span{spans[:6], spans[6:9], spans[9:]}
	for i, n := range nodes {
		if err := exportTenant(t, n.Addr("otlp-grpc"), "a", parts[i]); err != nil {
			t.Fatalf("export to n%d: %v", i, err)
		}
	}
	for i, n := range nodes {
		tenantTraceSpans(t, n, "a", spans[0].TraceID, limit)
		series := `tracedx_tenant_discarded_spans_total{reason="trace_too_large",tenant="a"}`
		want := 0.0
		if i == 2 {
			want = float64(len(spans) - limit)
		}
		if got := metricValue(t, n, series); got != want {
			t.Errorf("n%d: %s %g, want %g: only the owner trims a trace", i, series, got, want)
		}
	}
}

// A trace's spans are counted against max_spans_per_trace by its owner
// only: a node that forwards them does not count them, so a sender's
// retries after a failed forward are not taken for more spans of the
// trace (counted at the receiving node, they were cut, and the retry
// acknowledged with nothing stored).
func TestTenantTraceLimitCountsRetriesOnce(t *testing.T) {
	const limit = 6
	nodes, stops, cfgs, ring := multiTenantCluster(t, 2, config.TenantLimits{MaxSpansPerTrace: limit})
	// Both nodes open the tenant's instance.
	for i, n := range nodes {
		spans, _ := tenantTraces(byte(0x50+i), 1)
		if err := exportTenant(t, n.Addr("otlp-grpc"), "a", spans); err != nil {
			t.Fatalf("first export to n%d: %v", i, err)
		}
	}
	spans := bigTrace(t, ring, "n1", 2) // 6 spans, the limit
	stops[1]()
	if err := exportTenant(t, nodes[0].Addr("otlp-grpc"), "a", spans); status.Code(err) != codes.Unavailable {
		t.Fatalf("export of spans owned by a stopped node: %v, want UNAVAILABLE", err)
	}
	n1, _ := runServer(t, cfgs[1])
	// The sender retries until the owner is back.
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = exportTenant(t, nodes[0].Addr("otlp-grpc"), "a", spans); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("export once the owner is back: %v", err)
	}
	tenantTraceSpans(t, n1, "a", spans[0].TraceID, len(spans))
}

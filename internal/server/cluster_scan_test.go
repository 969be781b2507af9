package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

// oneNodeLike is a single server configured as mutate configures the
// cluster's nodes: the reference a cluster must answer like.
func oneNodeLike(t *testing.T, mutate func(*config.Config)) *Server {
	t.Helper()
	c := config.Default()
	c.DataDir = t.TempDir()
	c.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	mutate(&c)
	ref, _ := runServer(t, c)
	return ref
}

// spreadTraffic sends spans in batches of ten traces round robin over the
// nodes, as behind a load balancer, and all of them to ref; then checks
// every node stored a share of them, not all: the merge has work to do.
func spreadTraffic(t *testing.T, nodes []*Server, ref *Server, spans []model.Span) {
	t.Helper()
	spreadSpans(t, nodes, ref, spans)
	stored := 0.0
	for i, n := range nodes {
		w := metricValues(t, n, "tracedx_store_spans_written_total")[""]
		if w == 0 || w >= float64(len(spans)) {
			t.Fatalf("node %d stored %v of %d spans: traces are not spread", i, w, len(spans))
		}
		stored += w
	}
	if stored != float64(len(spans)) {
		t.Fatalf("the nodes stored %v spans, %d sent", stored, len(spans))
	}
}

// spreadSpans sends spans in batches of ten traces round robin over the
// nodes and all of them to ref.
func spreadSpans(t *testing.T, nodes []*Server, ref *Server, spans []model.Span) {
	t.Helper()
	byTrace := map[model.TraceID][]model.Span{}
	var order []model.TraceID
	for _, s := range spans {
		if byTrace[s.TraceID] == nil {
			order = append(order, s.TraceID)
		}
		byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
	}
	for b := 0; b*10 < len(order); b++ {
		var batch []model.Span
		for _, id := range order[b*10 : min(len(order), b*10+10)] {
			batch = append(batch, byTrace[id]...)
		}
		postOTLP(t, nodes[b%len(nodes)].Addr("otlp-http"), batch)
		postOTLP(t, ref.Addr("otlp-http"), batch)
	}
}

// clusterDiff asks ref and every node each path until all answer alike
// or the deadline passes; it returns the first difference ("" for none).
func clusterDiff(t *testing.T, nodes []*Server, ref *Server, paths []string, deadline time.Time) string {
	t.Helper()
	return clusterDiffBy(t, nodes, ref, paths, deadline, canonical)
}

// clusterDiffBy is clusterDiff comparing the answers as norm writes them.
func clusterDiffBy(t *testing.T, nodes []*Server, ref *Server, paths []string, deadline time.Time, norm func(string) string) string {
	t.Helper()
	for {
		diff := ""
	paths:
		for _, p := range paths {
			want, err := getBody(ref.Addr("http"), p)
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range nodes {
				got, err := getBody(n.Addr("http"), p)
				if err != nil {
					t.Fatal(err)
				}
				if norm(got) != norm(want) {
					diff = fmt.Sprintf("node %d: %s\n got %s\nwant %s", i, p, norm(got), norm(want))
					break paths
				}
			}
		}
		if diff == "" || time.Now().After(deadline) {
			return diff
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// withoutScanCost is canonical without TraceQL metrics' inspectedTraces and
// inspectedBytes: they count what a scan read, which depends on how the
// traces lie in heads and blocks (a trace whose spans were cut into two
// level-0 blocks is read twice), not on the answer.
func withoutScanCost(s string) string {
	var v map[string]any
	if json.Unmarshal([]byte(s), &v) != nil {
		return canonical(s)
	}
	if m, ok := v["metrics"].(map[string]any); ok {
		delete(m, "inspectedTraces")
		delete(m, "inspectedBytes")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// The APIs that scan traces of a window (group comparison, attribution,
// the root-cause ranking, TraceQL metrics) answer on every node of a
// cluster what one node holding every trace answers, while each node's
// recent traces are still only its own: in its head and blocks the others
// have not listed yet (their refresh is slower than the test).
func TestClusterTraceScansEqualOneNode(t *testing.T) {
	cfg := func(c *config.Config) {
		c.Storage.TraceIdleTimeout = 300 * time.Millisecond
		c.Cluster.RefreshInterval = 2 * time.Minute
	}
	nodes := startClusterServers(t, 3, cfg)
	ref := oneNodeLike(t, cfg)
	now := time.Now()
	spreadTraffic(t, nodes, ref, shopTraffic(300, now))

	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	to := now.Truncate(time.Minute).Add(-5 * time.Minute)
	from := to.Add(-45 * time.Minute)
	mid := from.Add(25 * time.Minute)
	rng := "start=" + ms(from) + "&end=" + ms(to)
	secs := "start=" + strconv.FormatInt(from.Unix(), 10) + "&end=" + strconv.FormatInt(to.Unix(), 10)
	traceql := func(q string) string { return "q=" + url.QueryEscape(q) }
	paths := []string{
		"/api/v1/compare?service=api&a_status=ok&b_status=error&" + rng,
		// A limit stops each side's scan after the newest traces: the
		// cluster must stop at the same ones.
		"/api/v1/compare?service=api&limit=25&a_end=" + ms(mid) + "&b_start=" + ms(mid) + "&" + rng,
		"/api/v1/compare?service=orders&a_status=ok&b_min_duration=1s&" + rng,
		"/api/v1/attribution?service=api&selection=error&" + rng,
		"/api/v1/rootcause?service=api&from=" + ms(mid) + "&to=" + ms(to),
		"/tempo/api/metrics/query_range?step=300&" + secs + "&" + traceql(`{resource.service.name="api"} | rate()`),
		"/tempo/api/metrics/query_range?step=600&" + secs + "&" + traceql(`{status=error} | count_over_time() by (resource.service.name)`),
		"/tempo/api/metrics/query_range?step=900&" + secs + "&" + traceql(`{kind=server} | quantile_over_time(duration, .5, .9) by (name)`),
		"/tempo/api/metrics/query?" + secs + "&" + traceql(`{} | count_over_time() by (resource.service.name)`),
	}
	// The reference has cut its traces into blocks (the scans see heads
	// and blocks alike; the nodes' blocks are what their peers lack).
	if diff := clusterDiffBy(t, nodes, ref, paths, time.Now().Add(30*time.Second), withoutScanCost); diff != "" {
		t.Fatal(diff)
	}
	// The answers compared hold the traffic.
	for _, c := range []struct{ path, want string }{
		{paths[0], `"b":{"traces":60,`},
		{paths[8], `nightly-5`},
	} {
		body, _ := getBody(nodes[1].Addr("http"), c.path)
		if !strings.Contains(body, c.want) {
			t.Fatalf("%s: want %s in %s", c.path, c.want, body)
		}
	}
}

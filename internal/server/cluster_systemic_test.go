package server

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// systemicBurst is shop traffic from start: checkouts, a share of them
// failing their charge; product pages missing the cache key all at once;
// and checkouts whose auth call is rejected, alternating with accepted
// ones.
func systemicBurst(seed int64, start time.Time, checkouts int, errorRate float64, misses int, key string, authFailures int) (all []model.Span, stampede, failing [][]model.Span) {
	shop := workload.New(seed)
	shop.ErrorRate, shop.ErrorType = errorRate, "java.net.SocketTimeoutException"
	for i := 0; i < checkouts; i++ {
		all = append(all, shop.Checkout(start.Add(time.Duration(i)*50*time.Millisecond))...)
	}
	shop.ErrorRate = 0
	shop.CacheMissAll, shop.StampedeKey = true, key
	for i := 0; i < misses; i++ {
		tr := shop.Product(start.Add(time.Duration(i) * 100 * time.Millisecond))
		stampede = append(stampede, tr)
		all = append(all, tr...)
	}
	shop.CacheMissAll = false
	for i := 0; i < 2*authFailures; i++ {
		shop.AuthFailRate = float64((i + 1) % 2)
		tr := shop.Checkout(start.Add(5*time.Second + time.Duration(i)*300*time.Millisecond))
		if i%2 == 0 {
			failing = append(failing, tr)
		}
		all = append(all, tr...)
	}
	return all, stampede, failing
}

// mergedKinds are the cross-trace kinds a cluster judges on every node's
// share.
var mergedKinds = map[string]bool{"cache_stampede": true, "auth_expiry_race": true, "error_rate_spike": true,
	"throughput_drop": true, "missing_service": true, "span_count_regression": true}

// mergedCounts are the evidence counts of a findings list's findings of
// the merged kinds, by key.
type mergedCounts struct{ Traces, Failures, Errors, Requests int }

func systemicFindings(body string) (keys []string, counts map[string]mergedCounts) {
	var res struct {
		Findings []struct {
			Kind, Key string
			Evidence  mergedCounts
		}
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		return []string{"undecodable: " + body}, nil
	}
	counts = map[string]mergedCounts{}
	for _, f := range res.Findings {
		if mergedKinds[f.Kind] {
			keys = append(keys, f.Key)
			counts[f.Key] = f.Evidence
		}
	}
	sort.Strings(keys)
	return keys, counts
}

// systemicKeys writes the keys of a findings list's findings of the
// merged kinds, one a line, sorted: a key listed twice shows twice.
// A service's error_rate_spike is left out where one of its operations
// has one: the service's counts can cross their threshold at an
// evaluation before the operation's do, and whether an evaluation falls
// there depends on when each trace completed, on one node as in a
// cluster.
func systemicKeys(body string) string {
	keys, _ := systemicFindings(body)
	opSpike := map[string]bool{}
	for _, k := range keys {
		if svc, op, ok := strings.Cut(strings.TrimPrefix(k, "error_rate_spike/"), "/"); ok && op != "" && strings.HasPrefix(k, "error_rate_spike/") {
			opSpike[svc] = true
		}
	}
	out := keys[:0]
	for _, k := range keys {
		if svc, op, ok := strings.Cut(strings.TrimPrefix(k, "error_rate_spike/"), "/"); ok && op == "" && strings.HasPrefix(k, "error_rate_spike/") && opSpike[svc] {
			continue
		}
		out = append(out, k)
	}
	return strings.Join(out, "\n")
}

// tracesOf groups spans by trace, the root first.
func tracesOf(spans []model.Span) [][]model.Span {
	at := map[model.TraceID]int{}
	var out [][]model.Span
	for _, s := range spans {
		i, ok := at[s.TraceID]
		if !ok {
			i = len(out)
			at[s.TraceID] = i
			out = append(out, nil)
		}
		if s.ParentSpanID.IsZero() {
			out[i] = append([]model.Span{s}, out[i]...)
		} else {
			out[i] = append(out[i], s)
		}
	}
	return out
}

// mostOnOneNode is the most of traces that one node of the test cluster
// (nodes n0..n<nodes-1>) owns.
func mostOnOneNode(t *testing.T, nodes int, traces [][]model.Span) int {
	t.Helper()
	var peers []cluster.Peer
	for i := 0; i < nodes; i++ {
		peers = append(peers, cluster.Peer{ID: fmt.Sprintf("n%d", i), HTTP: "127.0.0.1:1", OTLPGRPC: "127.0.0.1:1"})
	}
	ring, err := cluster.NewRing(peers, "n0")
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	most := 0
	for _, tr := range traces {
		id := ring.TraceOwner(tr[0].TraceID).ID
		per[id]++
		most = max(most, per[id])
	}
	return most
}

// The cross-trace findings whose thresholds count traces or events
// (a cache stampede of 6 traces, 4 rejected auth calls, failing checkouts
// under the 20 requests a rate needs on any node) are reported by a
// 3-node cluster as one node with all the traffic reports them: once,
// with the counts of every node's share. Traffic below the thresholds
// overall is reported by neither.
func TestClusterSystemicFindingsEqualOneNode(t *testing.T) {
	saved := systemicEvalInterval
	systemicEvalInterval = 300 * time.Millisecond
	t.Cleanup(func() { systemicEvalInterval = saved })
	idle := func(c *config.Config) { c.Storage.TraceIdleTimeout = 300 * time.Millisecond }
	nodes := startClusterServers(t, 3, idle)
	ref := oneNodeLike(t, idle)
	list := "/api/v1/findings?systemic=true&limit=1000"

	// Below the thresholds: 4 traces miss one key, 2 auth calls are
	// rejected, and few checkouts fail.
	now := time.Now()
	below, _, _ := systemicBurst(41, now.Add(-10*time.Minute), 5, 0.2, 4, "product:7", 2)
	// The node forwards each trace to its owner.
	postOTLP(t, nodes[0].Addr("otlp-http"), below)
	postOTLP(t, ref.Addr("otlp-http"), below)
	// The reference has analysed the traces (each failed checkout is an
	// error_origin) and evaluated many times since.
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := getBody(ref.Addr("http"), "/api/v1/findings?kind=error_origin")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(body, `"kind":"error_origin"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference analysed nothing: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(10 * systemicEvalInterval)
	for i, n := range append(nodes, ref) {
		body, err := getBody(n.Addr("http"), list)
		if err != nil {
			t.Fatal(err)
		}
		if got := systemicKeys(body); got != "" {
			t.Fatalf("node %d (3: the reference) reports below the thresholds:\n%s", i, got)
		}
	}

	// Above them, spread so that no node's share reaches them.
	above, stampede, failing := systemicBurst(42, now, 24, 0.4, 6, "product:42", 4)
	if most := mostOnOneNode(t, 3, stampede); most >= 5 {
		t.Fatalf("one node owns %d of the 6 stampeding traces: the test needs them split", most)
	}
	if most := mostOnOneNode(t, 3, failing); most >= 3 {
		t.Fatalf("one node owns %d of the 4 rejected calls: the test needs them split", most)
	}
	var checkouts [][]model.Span
	for _, tr := range tracesOf(append(append([]model.Span(nil), below...), above...)) {
		if tr[0].Service == "frontend" && tr[0].Name == "POST /checkout" {
			checkouts = append(checkouts, tr)
		}
	}
	if most := mostOnOneNode(t, 3, checkouts); most >= 20 {
		t.Fatalf("one node owns %d of the %d checkouts: the test needs fewer than a rate needs on each", most, len(checkouts))
	}
	spreadSpans(t, nodes, ref, above)
	deadline = time.Now().Add(40 * time.Second)
	for {
		body, err := getBody(ref.Addr("http"), list)
		if err != nil {
			t.Fatal(err)
		}
		want := systemicKeys(body)
		if strings.Contains(want, "cache_stampede/") && strings.Contains(want, "auth_expiry_race/") && strings.Contains(want, "error_rate_spike/checkout/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference reports only:\n%s", want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The same findings, each once. Their counts are those of the moment
	// each opened: the threshold crossed, not necessarily all the traffic
	// (the traces complete over several evaluations), on one node as in
	// the cluster; an open finding is rewritten with later counts a
	// minute later at the earliest, after this test.
	if diff := clusterDiffBy(t, nodes, ref, []string{list}, deadline, systemicKeys); diff != "" {
		t.Fatal(diff)
	}
	body, err := getBody(nodes[1].Addr("http"), list)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if got := metricValues(t, n, "tracedx_systemic_judged_nodes")[""]; got != 3 {
			t.Errorf("node %d judged the shares of %v nodes, want 3", i, got)
		}
	}
	keys, counts := systemicFindings(body)
	t.Logf("every node reports, as one node does:\n%s\n%+v", strings.Join(keys, "\n"), counts)
	// Counted over every node's share: more than any node holds.
	if c := counts["cache_stampede/frontend GET /product/{id}/product:42"]; c.Traces < 5 || c.Traces > 6 {
		t.Errorf("cache stampede of %d traces, 6 sent, at most %d on a node", c.Traces, mostOnOneNode(t, 3, stampede))
	}
	if c := counts["auth_expiry_race/auth"]; c.Failures < 3 || c.Failures > 4 {
		t.Errorf("auth race of %d rejected calls, 4 sent, at most %d on a node", c.Failures, mostOnOneNode(t, 3, failing))
	}
	if c := counts["error_rate_spike/frontend/POST /checkout"]; c.Requests < 20 || c.Requests > len(checkouts) || c.Errors < 5 {
		t.Errorf("error spike of %d errors in %d requests, %d sent, at most %d on a node", c.Errors, c.Requests, len(checkouts), mostOnOneNode(t, 3, checkouts))
	}
}

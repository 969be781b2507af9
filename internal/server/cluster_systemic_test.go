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
var mergedKinds = map[string]bool{"cache_stampede": true, "auth_expiry_race": true, "error_rate_spike": true}

// systemicCounts writes a findings list's findings of the merged kinds as
// their keys and evidence counts, one a line, sorted; a key listed twice
// shows twice.
func systemicCounts(body string) string {
	var res struct {
		Findings []struct {
			Kind, Key string
			Evidence  struct {
				Traces, Failures, Errors, Requests int
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		return "undecodable: " + body
	}
	var lines []string
	for _, f := range res.Findings {
		if mergedKinds[f.Kind] {
			ev := f.Evidence
			lines = append(lines, fmt.Sprintf("%s traces=%d failures=%d errors=%d/%d", f.Key, ev.Traces, ev.Failures, ev.Errors, ev.Requests))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
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
		if got := systemicCounts(body); got != "" {
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
	var want string
	for {
		body, err := getBody(ref.Addr("http"), list)
		if err != nil {
			t.Fatal(err)
		}
		want = systemicCounts(body)
		if strings.Contains(want, "cache_stampede/") && strings.Contains(want, "auth_expiry_race/") && strings.Contains(want, "error_rate_spike/checkout/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference reports only:\n%s", want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, w := range []string{"cache_stampede/frontend GET /product/{id}/product:42 traces=6", "auth_expiry_race/auth traces=0 failures=4"} {
		if !strings.Contains(want, w) {
			t.Fatalf("the reference reports\n%s\nwithout %s", want, w)
		}
	}
	if diff := clusterDiffBy(t, nodes, ref, []string{list}, deadline, systemicCounts); diff != "" {
		t.Fatal(diff)
	}
	t.Logf("every node reports, as one node does:\n%s", want)
}

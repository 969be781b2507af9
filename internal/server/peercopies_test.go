package server

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
)

// stoppedPeer runs a two-node cluster on MinIO with findings, RED and
// service-map history on both, stops n1, and returns n0, n1's config
// (to start it again), what n0 answered before the stop, and n0's copies
// of n1 (data_dir/peers/n1).
type stoppedPeer struct {
	n0         *Server
	n1         config.Config
	findings   findingKeys
	analytics  []string // RED, service map
	raw        []string // RED, service map, findings summary, as answered
	paths      []string
	n1CopyRoot string
}

func stopPeerWithHistory(t *testing.T, mutate func(*config.Config)) stoppedPeer {
	t.Helper()
	var cfgs []config.Config
	nodes, stops, dirs := clusterOnMinIO(t, 2, func(c *config.Config) {
		mutate(c)
		cfgs = append(cfgs, *c)
	})
	now := time.Now()
	postOTLP(t, nodes[0].Addr("otlp-http"), shopTraffic(40, now))
	before := waitForSlowOrders(t, nodes[0], "kind=slow_query&limit=100")
	to := now.Truncate(time.Minute).Add(time.Minute)
	window := "start=" + strconv.FormatInt(to.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(to.UnixMilli(), 10)
	sp := stoppedPeer{n0: nodes[0], n1: cfgs[1], findings: before, n1CopyRoot: filepath.Join(dirs[0], "peers", "n1"),
		paths: []string{"/api/v1/metrics/operations?" + window, "/api/v1/servicemap?" + window}}
	for _, path := range append(sp.paths, "/api/v1/findings/summary?kind=slow_query") {
		raw, err := getBody(nodes[0].Addr("http"), path)
		if err != nil {
			t.Fatal(err)
		}
		sp.raw = append(sp.raw, raw)
	}
	for _, path := range sp.paths {
		sp.analytics = append(sp.analytics, answerWithoutRates(t, nodes[0], path))
	}
	stops[1]()
	return sp
}

// copyFiles lists the files under n0's copies of n1, relative to them.
func (sp stoppedPeer) copyFiles(t *testing.T, sub string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(filepath.Join(sp.n1CopyRoot, sub), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(sp.n1CopyRoot, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func (sp stoppedPeer) checkAnswers(t *testing.T, which string) {
	t.Helper()
	switch which {
	case "findings":
		if got := listFindings(t, sp.n0, "kind=slow_query&limit=100"); !slices.Equal(got.keys, sp.findings.keys) || !slices.Equal(got.fromBucket, []string{"n1"}) {
			t.Fatalf("findings with n1 stopped: %v (from the bucket: %v), want %v", got.keys, got.fromBucket, sp.findings.keys)
		}
	case "red", "map":
		i := map[string]int{"red": 0, "map": 1}[which]
		if got := answerWithoutRates(t, sp.n0, sp.paths[i]); got != sp.analytics[i] {
			t.Fatalf("%s with n1 stopped:\n got %s\nwant %s", sp.paths[i], got, sp.analytics[i])
		}
	}
}

// With a bound smaller than the copies of a stopped peer, each answer
// from them evicts the least recently used ones (a peer's findings count
// as one), later answers download what they need again and stay
// correct, and the copies' size is on /metrics.
func TestPeerCopiesStayWithinTheirBoundOnS3(t *testing.T) {
	saved := peerCopiesCheck
	peerCopiesCheck = time.Hour // only answers trim: no trim of the watch skips theirs
	t.Cleanup(func() { peerCopiesCheck = saved })
	sp := stopPeerWithHistory(t, func(c *config.Config) {
		c.Cluster.PeerCopiesMaxBytes = 1
		c.Alerting.Enabled = false // its findings rules read the copies at any time
	})

	// Each answer leaves one unit: the last one it used.
	for _, step := range []struct{ answer, left string }{
		{"findings", "findings"}, {"red", "metrics"}, {"map", "servicegraph"},
		{"findings", "findings"}, {"red", "metrics"}, // evicted ones come back
	} {
		sp.checkAnswers(t, step.answer)
		units := map[string]int{}
		for _, f := range sp.copyFiles(t, "") {
			if sub, _, _ := strings.Cut(f, string(filepath.Separator)); sub != "spool" {
				units[sub]++
			}
		}
		if units["findings"] > 0 {
			units["findings"] = 1
		}
		// The service map reads the RED history too, possibly last.
		if step.answer == "map" && units["metrics"] == 1 {
			step.left = "metrics"
		}
		if len(units) != 1 || units[step.left] != 1 {
			t.Fatalf("after the %s answer the copies are %v; want one unit of %s", step.answer, sp.copyFiles(t, ""), step.left)
		}
	}
	bytes := metricValues(t, sp.n0, "tracedx_cluster_peer_copies_bytes")[""]
	if want := dirBytes(filepath.Dir(sp.n1CopyRoot)); bytes != float64(want) || want == 0 {
		t.Fatalf("tracedx_cluster_peer_copies_bytes %v, want %d", bytes, want)
	}
	if ev := metricValues(t, sp.n0, "tracedx_cluster_peer_copies_evicted_total")[""]; ev < 4 {
		t.Fatalf("%v evictions counted, want at least 4", ev)
	}
}

// A peer's copies stay while it is down and are deleted once it has
// answered again for peerCopiesDropAfter.
func TestPeerCopiesGoOnceThePeerAnswersOnS3(t *testing.T) {
	savedCheck, savedAfter := peerCopiesCheck, peerCopiesDropAfter
	peerCopiesCheck, peerCopiesDropAfter = 50*time.Millisecond, time.Second
	t.Cleanup(func() { peerCopiesCheck, peerCopiesDropAfter = savedCheck, savedAfter })
	sp := stopPeerWithHistory(t, func(*config.Config) {})
	// n0 takes n1 for down after two missed probes.
	for deadline := time.Now().Add(30 * time.Second); metricValues(t, sp.n0, "tracedx_cluster_healthy_nodes")[""] != 1; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("n0 never saw n1 stop")
		}
	}
	sp.checkAnswers(t, "findings")
	sp.checkAnswers(t, "map")
	time.Sleep(3 * peerCopiesDropAfter)
	if len(sp.copyFiles(t, "findings")) == 0 || len(sp.copyFiles(t, "servicegraph")) == 0 {
		t.Fatalf("copies of a peer still down deleted: left %v", sp.copyFiles(t, ""))
	}
	if bytes := metricValues(t, sp.n0, "tracedx_cluster_peer_copies_bytes")[""]; bytes == 0 {
		t.Fatal("tracedx_cluster_peer_copies_bytes is 0 with copies on disk")
	}

	runServer(t, sp.n1)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(sp.n1CopyRoot); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("copies of n1 still there after it answered again: %v", sp.copyFiles(t, ""))
		}
	}
	for deadline := time.Now().Add(5 * time.Second); metricValues(t, sp.n0, "tracedx_cluster_peer_copies_bytes")[""] != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("tracedx_cluster_peer_copies_bytes not 0 once the copies are gone")
		}
	}
	if got := listFindings(t, sp.n0, "kind=slow_query&limit=100"); !slices.Equal(got.keys, sp.findings.keys) || len(got.fromBucket) != 0 {
		t.Fatalf("findings with n1 back: %v (from the bucket: %v), want %v", got.keys, got.fromBucket, sp.findings.keys)
	}
}

package systemic

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// clusterSim feeds the same traces to one detector (the reference: one
// node with all traffic) and to the nodes of a cluster, each trace to the
// node its id hashes to, evaluating all every 10 s. The cluster's nodes
// judge the merged patterns on each other's shares (passed through JSON,
// as between servers) when merge is set, and on their own share only
// otherwise.
type clusterSim struct {
	ref      *Detector
	nodes    []*Detector
	merge    bool
	nextEval time.Time
	refFound []Finding
	found    [][]Finding // per node
}

func newClusterSim(n int, merge bool) *clusterSim {
	c := &clusterSim{ref: New(Config{}, nil, nil, nil), merge: merge, nextEval: t0, found: make([][]Finding, n)}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, New(Config{}, nil, nil, nil))
	}
	return c
}

func ownerOfTrace(id model.TraceID, n int) int {
	return int(binary.BigEndian.Uint64(id[8:]) % uint64(n))
}

// ownerOfKey picks one node per finding key, as cluster.Members.Owns does.
func ownerOfKey(key string, n int) int {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int(h.Sum64() % uint64(n))
}

func (c *clusterSim) observe(t *testing.T, spans []model.Span) {
	now := workload.End(spans).Add(2 * time.Second)
	c.evaluateUntil(t, now)
	c.ref.Observe(now, spans)
	c.nodes[ownerOfTrace(spans[0].TraceID, len(c.nodes))].Observe(now, spans)
}

func (c *clusterSim) evaluateUntil(t *testing.T, now time.Time) {
	for !c.nextEval.After(now) {
		at := c.nextEval
		c.refFound = append(c.refFound, c.ref.Evaluate(at)...)
		shares := make([]Share, len(c.nodes))
		for i, d := range c.nodes {
			b, err := json.Marshal(d.Share(at))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &shares[i]); err != nil {
				t.Fatal(err)
			}
		}
		for i, d := range c.nodes {
			if !c.merge {
				c.found[i] = append(c.found[i], d.Evaluate(at)...)
				continue
			}
			var peers []Share
			for j := range shares {
				if j != i {
					peers = append(peers, shares[j])
				}
			}
			owns := func(key string) bool { return ownerOfKey(key, len(c.nodes)) == i }
			c.found[i] = append(c.found[i], d.EvaluateCluster(at, owns, peers)...)
		}
		c.nextEval = at.Add(10 * time.Second)
	}
}

// traffic is 40 minutes of shop traffic too thin for any node's share of
// it to reach the count thresholds (checkouts every 10 s: 30 in the error
// window, 10 a node, under the 20 requests a rate needs), with, from 30
// minutes on, problems of the given sizes: a share of failing charges,
// product pages missing one cache key at once, and checkouts whose auth
// call is rejected among successful ones.
func (c *clusterSim) traffic(t *testing.T, errorRate float64, stampede, authFailures int) {
	shop := workload.New(77)
	inject := t0.Add(30 * time.Minute)
	var traces [][]model.Span
	for at := t0; at.Before(t0.Add(40 * time.Minute)); at = at.Add(10 * time.Second) {
		if !at.Before(inject) && at.Before(inject.Add(5*time.Minute)) {
			shop.ErrorRate, shop.ErrorType = errorRate, "java.net.SocketTimeoutException"
		} else {
			shop.ErrorRate = 0
		}
		traces = append(traces, shop.Checkout(at), shop.Product(at.Add(5*time.Second)))
	}
	shop.ErrorRate = 0
	burst := inject.Add(2 * time.Minute)
	shop.CacheMissAll = true
	for i := 0; i < stampede; i++ {
		traces = append(traces, shop.Product(burst.Add(time.Duration(i)*100*time.Millisecond)))
	}
	shop.CacheMissAll = false
	// Rejected and accepted auth calls alternate over a few seconds.
	for i := 0; i < 2*authFailures; i++ {
		shop.AuthFailRate = float64((i + 1) % 2)
		traces = append(traces, shop.Checkout(burst.Add(20*time.Second+time.Duration(i)*300*time.Millisecond)))
	}
	shop.AuthFailRate = 0
	sort.SliceStable(traces, func(i, j int) bool { return workload.End(traces[i]).Before(workload.End(traces[j])) })
	for _, tr := range traces {
		c.observe(t, tr)
	}
	c.evaluateUntil(t, t0.Add(50*time.Minute))
}

// merged returns the findings of the merged kinds by key, and fails the
// test when a key opened more than once (on one node or on several).
func mergedFindings(t *testing.T, who string, lists ...[]Finding) map[string]Finding {
	t.Helper()
	out := map[string]Finding{}
	for _, fs := range lists {
		for _, f := range fs {
			if !mergedKind(f.Kind) {
				continue
			}
			if _, dup := out[f.Key]; dup {
				t.Errorf("%s: %s opened twice", who, f.Key)
			}
			out[f.Key] = f
		}
	}
	return out
}

func keysOf(m map[string]Finding) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// evidenceCounts are the counts of a finding's evidence.
func evidenceCounts(f Finding) string {
	switch ev := f.Evidence.(type) {
	case StampedeEvidence:
		return fmt.Sprintf("%d traces, %d rewrites", ev.Traces, ev.Rewrites)
	case AuthRaceEvidence:
		return fmt.Sprintf("%d failures, %d successes, callers %v", ev.Failures, ev.Successes, ev.Callers)
	case ErrorRateEvidence:
		return fmt.Sprintf("%d of %d requests", ev.Errors, ev.Requests)
	}
	return fmt.Sprintf("%T", f.Evidence)
}

// Traffic spread over three nodes, too thin for any node's share to meet
// the count thresholds: the merged judgement reports what one node with
// all the traffic reports, each finding once, with the same counts.
func TestClusterSharesFindWhatOneNodeFinds(t *testing.T) {
	c := newClusterSim(3, true)
	c.traffic(t, 0.4, 6, 4)
	want := mergedFindings(t, "one node", c.refFound)
	kinds := map[string]bool{}
	for _, f := range want {
		kinds[f.Kind] = true
	}
	if len(kinds) != 3 {
		t.Fatalf("the reference found %v: the traffic must open all three merged kinds", keysOf(want))
	}
	got := mergedFindings(t, "cluster", c.found...)
	if strings.Join(keysOf(got), " ") != strings.Join(keysOf(want), " ") {
		t.Fatalf("cluster found %v\none node found %v", keysOf(got), keysOf(want))
	}
	for k, w := range want {
		g := got[k]
		// One node judges a rejected call when it comes, counting the
		// successes seen until then; the merged judgement comes later and
		// counts the successes of the same window seen since.
		if ga, ok := g.Evidence.(AuthRaceEvidence); ok && ga.Successes >= w.Evidence.(AuthRaceEvidence).Successes {
			ga.Successes = w.Evidence.(AuthRaceEvidence).Successes
			g.Evidence = ga
		}
		if evidenceCounts(g) != evidenceCounts(w) {
			t.Errorf("%s: cluster %s, one node %s", k, evidenceCounts(g), evidenceCounts(w))
		}
		if len(g.ExampleTraceIDs) == 0 || g.Culprit == nil || g.Culprit.Service != w.Culprit.Service {
			t.Errorf("%s: examples %v, culprit %+v; one node: culprit %+v", k, g.ExampleTraceIDs, g.Culprit, w.Culprit)
		}
	}
	for i, fs := range c.found {
		for _, f := range fs {
			if mergedKind(f.Kind) && ownerOfKey(f.Key, 3) != i {
				t.Errorf("node %d reported %s, owned by node %d", i, f.Key, ownerOfKey(f.Key, 3))
			}
		}
	}

	// The same nodes judging their own shares find none of it: the
	// merge is what finds it.
	alone := newClusterSim(3, false)
	alone.traffic(t, 0.4, 6, 4)
	if fs := mergedFindings(t, "nodes alone", alone.found...); len(fs) != 0 {
		t.Fatalf("each node's share met a threshold alone (%v): the test does not split the counts", keysOf(fs))
	}
}

// Below the thresholds overall (4 traces missing the key, 2 rejected
// calls, failing charges under the rate) nothing is reported, by one
// node or by the cluster.
func TestClusterSharesBelowThresholdReportNothing(t *testing.T) {
	c := newClusterSim(3, true)
	c.traffic(t, 0.05, 4, 2)
	if fs := mergedFindings(t, "one node", c.refFound); len(fs) != 0 {
		t.Fatalf("one node found %v below the thresholds", keysOf(fs))
	}
	if fs := mergedFindings(t, "cluster", c.found...); len(fs) != 0 {
		t.Fatalf("cluster found %v below the thresholds", keysOf(fs))
	}
}

// A node whose peers do not answer judges its own share and reports
// what it owns; a burst it saw all of is still found.
func TestClusterWithoutPeersJudgesItsOwnShare(t *testing.T) {
	d := New(Config{}, nil, nil, nil)
	shop := workload.New(5)
	shop.CacheMissAll = true
	at := t0
	for i := 0; i < 6; i++ {
		tr := shop.Product(at.Add(time.Duration(i) * 100 * time.Millisecond))
		d.Observe(workload.End(tr).Add(time.Second), tr)
	}
	now := at.Add(10 * time.Second)
	if fs := d.EvaluateCluster(now, func(string) bool { return false }, nil); len(fs) != 0 {
		t.Fatalf("a node reported %v it does not own", fs)
	}
	fs := d.EvaluateCluster(now.Add(10*time.Second), func(string) bool { return true }, nil)
	if len(fs) != 1 || fs[0].Kind != "cache_stampede" || fs[0].Evidence.(StampedeEvidence).Traces != 6 {
		t.Fatalf("owner found %+v", fs)
	}
	// Judged once: the same misses open nothing again.
	if fs := d.EvaluateCluster(now.Add(20*time.Second), func(string) bool { return true }, nil); len(fs) != 0 {
		t.Fatalf("the same misses opened %v again", fs)
	}
}

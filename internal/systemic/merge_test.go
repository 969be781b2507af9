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
// as between servers). With alone set, a second set of nodes gets the
// same traces as the cluster's and judges its own share only: one pass
// of the traffic feeds both, and the reference, once.
type clusterSim struct {
	ref        *Detector
	nodes      []*Detector
	alone      []*Detector // nil unless asked for
	nextEval   time.Time
	refFound   []Finding
	found      [][]Finding // per node
	aloneFound [][]Finding // per node of alone
}

func newClusterSim(n int, alone bool) *clusterSim {
	c := &clusterSim{ref: New(Config{}, nil, nil, nil), nextEval: t0, found: make([][]Finding, n)}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, New(Config{}, nil, nil, nil))
	}
	if alone {
		c.aloneFound = make([][]Finding, n)
		for i := 0; i < n; i++ {
			c.alone = append(c.alone, New(Config{}, nil, nil, nil))
		}
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
	c.observeOn(t, ownerOfTrace(spans[0].TraceID, len(c.nodes)), spans)
}

func (c *clusterSim) evaluateUntil(t *testing.T, now time.Time) {
	for !c.nextEval.After(now) {
		at := c.nextEval
		c.refFound = append(c.refFound, c.ref.Evaluate(at)...)
		for i, d := range c.alone {
			c.aloneFound[i] = append(c.aloneFound[i], d.Evaluate(at)...)
		}
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

// problems are what clusterSim.traffic injects into thin shop traffic.
type problems struct {
	// errorRate is the share of checkouts failing their charge for 5
	// minutes from the injection.
	errorRate float64
	// stampede product pages miss one cache key within a second;
	// authFailures checkouts have their auth call rejected among as many
	// accepted ones.
	stampede, authFailures int
	// shipped makes checkout 1.5.0 query per item and stop calling
	// recommendations, 6 minutes after the injection.
	shipped bool
	// slowCarts makes stock lookups of big carts slow from the injection.
	slowCarts bool
	// quiet is how long evaluation goes on after the traffic stops.
	quiet time.Duration
	// checkouts and products are the intervals between checkouts and
	// between product pages (0: none).
	checkouts, products time.Duration
}

// thin is traffic too thin for any node's share of it to reach the count
// thresholds: a checkout and a product page every 14 s, 21 of each in 5
// minutes, 7 a node, under the 20 requests a rate needs; 43 in 10
// minutes, 14 a node, under the 20 traces a span count needs.
func thin(p problems) problems {
	p.checkouts, p.products = 14*time.Second, 14*time.Second
	return p
}

// traffic is 46 minutes of shop traffic with p injected from 30 minutes
// on.
func (c *clusterSim) traffic(t *testing.T, p problems) {
	shop := workload.New(77)
	inject := t0.Add(30 * time.Minute)
	var traces [][]model.Span
	end := t0.Add(46 * time.Minute)
	for at := t0; p.checkouts > 0 && at.Before(end); at = at.Add(p.checkouts) {
		shop.ErrorRate, shop.ErrorType = 0, "java.net.SocketTimeoutException"
		if !at.Before(inject) && at.Before(inject.Add(5*time.Minute)) {
			shop.ErrorRate = p.errorRate
		}
		if p.slowCarts && !at.Before(inject) {
			shop.SlowBigCarts, shop.BigCartShare, shop.SlowFactor = true, 0.3, 12
		}
		if p.shipped && !at.Before(inject.Add(6*time.Minute)) {
			shop.CheckoutVersion, shop.ItemQueries, shop.NoRecommendations = "1.5.0", 25, true
		}
		traces = append(traces, shop.Checkout(at))
	}
	shop.ErrorRate = 0
	for at := t0.Add(p.products / 2); p.products > 0 && at.Before(end); at = at.Add(p.products) {
		traces = append(traces, shop.Product(at))
	}
	burst := inject.Add(2 * time.Minute)
	shop.CacheMissAll = true
	for i := 0; i < p.stampede; i++ {
		traces = append(traces, shop.Product(burst.Add(time.Duration(i)*100*time.Millisecond)))
	}
	shop.CacheMissAll = false
	// Rejected and accepted auth calls alternate over a few seconds.
	for i := 0; i < 2*p.authFailures; i++ {
		shop.AuthFailRate = float64((i + 1) % 2)
		traces = append(traces, shop.Checkout(burst.Add(20*time.Second+time.Duration(i)*300*time.Millisecond)))
	}
	shop.AuthFailRate = 0
	sort.SliceStable(traces, func(i, j int) bool { return workload.End(traces[i]).Before(workload.End(traces[j])) })
	for _, tr := range traces {
		c.observe(t, tr)
	}
	c.evaluateUntil(t, workload.End(traces[len(traces)-1]).Add(p.quiet))
}

// merged returns the findings of the merged kinds by key, and fails the
// test when a key opened more than once (on one node or on several).
func mergedFindings(t *testing.T, who string, lists ...[]Finding) map[string]Finding {
	t.Helper()
	return findingsOf(t, who, countKind, lists...)
}

// countKind says whether kind is one of the merged kinds with a count
// threshold (new_error_type has its own test).
func countKind(kind string) bool { return mergedKind(kind) && kind != "new_error_type" }

// findingsOf returns the findings of the kinds keep accepts by key, and
// fails the test when a key opened more than once.
func findingsOf(t *testing.T, who string, keep func(kind string) bool, lists ...[]Finding) map[string]Finding {
	t.Helper()
	out := map[string]Finding{}
	for _, fs := range lists {
		for _, f := range fs {
			if !keep(f.Kind) {
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
	case ThroughputEvidence:
		return fmt.Sprintf("%d requests, %.1f expected", ev.Requests, ev.Expected)
	case MissingServiceEvidence:
		return fmt.Sprintf("0 of %d traces, usually %.3f", ev.Traces, ev.BaselinePresence)
	case LatencyEvidence:
		attr := ""
		if len(ev.Attribution) > 0 {
			attr = ev.Attribution[0].Label
		}
		return fmt.Sprintf("p95 %.1f ms in %d requests, usually %.1f ms; %s", ev.P95MS, ev.Requests, ev.BaselineP95MS, attr)
	case SpanCountEvidence:
		return fmt.Sprintf("%.1f spans in %d traces, usually %.1f; %s %s %.1f in %d", ev.MeanSpans, ev.Traces, ev.BaselineMeanSpans,
			ev.Service, ev.Version, ev.VersionMeanSpans, ev.VersionTraces)
	}
	return fmt.Sprintf("%T", f.Evidence)
}

// Traffic spread over three nodes, too thin for any node's share to meet
// the count thresholds: the merged judgement reports what one node with
// all the traffic reports (a cache stampede, an auth expiry race, error
// spikes, an N+1 shipped in a version that also stopped calling a
// service; product pages that stop coming), each finding once, with the
// same counts.
func TestClusterSharesFindWhatOneNodeFinds(t *testing.T) {
	for _, c := range []struct {
		name  string
		p     problems
		kinds int
	}{
		// The stampede's slow product pages also raise their p95.
		{"incident", thin(problems{errorRate: 0.4, stampede: 6, authFailures: 4, shipped: true}), 6},
		// A product page every 6 s: 50 in 5 minutes, 40 expected (the
		// baseline's rate, which lags behind by the longest window),
		// 13 a node, under the 20 a drop needs to be expected.
		{"traffic stops", problems{products: 6 * time.Second, quiet: 10 * time.Minute}, 1},
		{"big carts got slow", thin(problems{slowCarts: true}), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clusterFindsWhatOneNodeFinds(t, c.p, c.kinds)
		})
	}
}

func clusterFindsWhatOneNodeFinds(t *testing.T, p problems, kinds int) {
	c := newClusterSim(3, true)
	c.traffic(t, p)
	want := mergedFindings(t, "one node", c.refFound)
	found := map[string]bool{}
	for _, f := range want {
		found[f.Kind] = true
	}
	if len(found) != kinds {
		t.Fatalf("the reference found %v: the traffic must open %d merged kinds", keysOf(want), kinds)
	}
	got := mergedFindings(t, "cluster", c.found...)
	if strings.Join(keysOf(got), " ") != strings.Join(keysOf(want), " ") {
		t.Fatalf("cluster found %v\none node found %v", keysOf(got), keysOf(want))
	}
	t.Logf("cluster and one node found %v", keysOf(got))
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
		if len(g.ExampleTraceIDs) < min(len(w.ExampleTraceIDs), 1) || g.Culprit == nil || g.Culprit.Service != w.Culprit.Service {
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
	if fs := mergedFindings(t, "nodes alone", c.aloneFound...); len(fs) != 0 {
		t.Fatalf("each node's share met a threshold alone (%v): the test does not split the counts", keysOf(fs))
	}
}

// Below the thresholds overall (4 traces missing the key, 2 rejected
// calls, the usual 1 % of failing charges, traffic that goes on) nothing
// is reported, by one node or by the cluster.
func TestClusterSharesBelowThresholdReportNothing(t *testing.T) {
	t.Parallel()
	c := newClusterSim(3, false)
	// Product pages every 5 s: the 4 slow ones do not raise the p95.
	p := thin(problems{stampede: 4, authFailures: 2, quiet: 10 * time.Second})
	p.products = 5 * time.Second
	c.traffic(t, p)
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

// Misses a peer sees only when its traces complete, after the owner
// judged its own misses of the same moment, still make one finding with
// every trace: the owner keeps its misses for six evaluations, even when
// a later miss of the key comes in between.
func TestClusterLateShareJoinsEarlierMisses(t *testing.T) {
	owner, peer := New(Config{}, nil, nil, nil), New(Config{}, nil, nil, nil)
	shop := workload.New(6)
	shop.CacheMissAll = true
	observe := func(d *Detector, at time.Time) {
		tr := shop.Product(at)
		d.Observe(workload.End(tr).Add(time.Second), tr)
	}
	for i := 0; i < 3; i++ {
		observe(owner, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	all := func(string) bool { return true }
	if fs := owner.EvaluateCluster(t0.Add(10*time.Second), all, []Share{peer.Share(t0.Add(10 * time.Second))}); len(fs) != 0 {
		t.Fatalf("3 misses opened %v", fs)
	}
	// A later miss of the key on the owner, then the peer's misses of the
	// first moment (their traces completed late).
	observe(owner, t0.Add(25*time.Second))
	if fs := owner.EvaluateCluster(t0.Add(30*time.Second), all, []Share{peer.Share(t0.Add(30 * time.Second))}); len(fs) != 0 {
		t.Fatalf("4 misses opened %v", fs)
	}
	for i := 3; i < 6; i++ {
		observe(peer, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	now := t0.Add(40 * time.Second)
	fs := owner.EvaluateCluster(now, all, []Share{peer.Share(now)})
	if len(fs) != 1 || fs[0].Evidence.(StampedeEvidence).Traces != 6 {
		t.Fatalf("owner found %+v, want one stampede of 6 traces", fs)
	}
	if fs := owner.EvaluateCluster(now.Add(10*time.Second), all, []Share{peer.Share(now)}); len(fs) != 0 {
		t.Fatalf("the same misses opened %v again", fs)
	}
}

// observeOn feeds one trace to node i of the cluster (and of alone) and
// to the reference.
func (c *clusterSim) observeOn(t *testing.T, i int, spans []model.Span) {
	now := workload.End(spans).Add(2 * time.Second)
	c.evaluateUntil(t, now)
	c.ref.Observe(now, spans)
	c.nodes[i].Observe(now, spans)
	if c.alone != nil {
		c.alone[i].Observe(now, spans)
	}
}

// An exception type is new to the cluster when no node has seen it: one
// node seeing a type another node saw minutes ago is not told it is new,
// and a new type seen by two nodes at once opens one finding.
func TestClusterNewErrorTypeIsNewToEveryNode(t *testing.T) {
	t.Parallel()
	isNewType := func(kind string) bool { return kind == "new_error_type" }
	c := newClusterSim(3, true)
	shop := workload.New(8)
	shop.BaseErrorRate = 0
	// Healthy traffic past every node's warmup (30 minutes).
	for at := t0; at.Before(t0.Add(32 * time.Minute)); at = at.Add(2 * time.Second) {
		c.observe(t, shop.Checkout(at))
	}
	failing := func(node int, at time.Time, typ string) {
		shop.ErrorRate, shop.ErrorType = 1, typ
		c.observeOn(t, node, shop.Checkout(at))
		shop.ErrorRate = 0
	}
	failing(0, t0.Add(33*time.Minute), "LegacyException")
	failing(1, t0.Add(40*time.Minute), "LegacyException")
	failing(1, t0.Add(45*time.Minute), "FreshException")
	failing(2, t0.Add(45*time.Minute+10*time.Second), "FreshException")
	c.evaluateUntil(t, t0.Add(50*time.Minute))
	want := findingsOf(t, "one node", isNewType, c.refFound)
	if _, ok := want["new_error_type/payments/FreshException"]; !ok || len(want) < 2 {
		t.Fatalf("one node found %v", keysOf(want))
	}
	got := findingsOf(t, "cluster", isNewType, c.found...)
	if strings.Join(keysOf(got), " ") != strings.Join(keysOf(want), " ") {
		t.Fatalf("cluster found %v\none node found %v", keysOf(got), keysOf(want))
	}
	t.Logf("cluster and one node found %v", keysOf(got))
	for k, w := range want {
		if g := got[k]; g.TraceID != w.TraceID || !g.Time.Equal(w.Time) {
			t.Errorf("%s: cluster names trace %s at %s, one node %s at %s", k, g.TraceID, g.Time, w.TraceID, w.Time)
		}
	}
	// Alone, node 1 takes LegacyException for new again and both nodes
	// report FreshException.
	var n int
	for _, fs := range c.aloneFound {
		for _, f := range fs {
			if isNewType(f.Kind) {
				n++
			}
		}
	}
	if n <= len(want) {
		t.Fatalf("nodes alone reported %d new types, one node %d: the test does not show the merge", n, len(want))
	}
}

// The stampede's fallback is the query the misses ran, not the pool's
// connect span that node-postgres's instrumentation reports first: the
// title and the mean must tell what hammered the database.
func TestStampedeFallbackIsTheQueryNotTheConnect(t *testing.T) {
	d := New(Config{}, nil, nil, nil)
	shop := workload.New(6)
	shop.CacheMissAll, shop.PoolConnect = true, true
	for i := 0; i < 8; i++ {
		tr := shop.Product(t0.Add(time.Duration(i) * 100 * time.Millisecond))
		d.Observe(workload.End(tr).Add(time.Second), tr)
	}
	fs := d.Evaluate(t0.Add(10 * time.Second))
	if len(fs) != 1 || fs[0].Kind != "cache_stampede" {
		t.Fatalf("findings %+v, want one cache_stampede", fs)
	}
	ev := fs[0].Evidence.(StampedeEvidence)
	if !strings.HasPrefix(ev.Fallback, "SELECT") || ev.FallbackMS < 50 || !strings.Contains(fs[0].Title, "SELECT") {
		t.Errorf("fallback %q (%.1f ms) in %q, want the slow SELECT", ev.Fallback, ev.FallbackMS, fs[0].Title)
	}
}

// A consumer service whose failures all come from one queue's messages,
// too few per operation for an operation's spike but enough for the
// service's: with no learnt origin, the culprit is the operation that
// failed, not the service's first operation by name (a queue whose
// messages all succeed).
func TestServiceErrorSpikeBlamesAnOperationThatFailed(t *testing.T) {
	d := New(Config{}, nil, nil, nil)
	ops := []ErrorShare{
		{Service: "worker", Operation: "invoice process", Requests: 8, Errors: 1},
		{Service: "worker", Operation: "lag.fast process", Requests: 30, Errors: 0},
		{Service: "worker", Operation: "payments process", Requests: 12, Errors: 6},
	}
	var fs []Finding
	d.judgeErrors(t0, ops, func(f Finding, _ time.Duration) { fs = append(fs, f) })
	if len(fs) != 1 || fs[0].Operation != "" {
		t.Fatalf("findings %+v, want the service's spike only", fs)
	}
	if c := fs[0].Culprit; c == nil || c.Service != "worker" || c.Operation != "payments process" {
		t.Errorf("culprit %+v, want worker payments process", fs[0].Culprit)
	}
}

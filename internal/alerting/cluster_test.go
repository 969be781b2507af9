package alerting

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A rule of another node is not evaluated here; when its rule moves to
// another node, an alert firing here is dropped without a resolve (its
// new owner raises and resolves it), and the owner counts the findings
// of every node.
func TestClusterRuleOwnership(t *testing.T) {
	hk := newHook(t, "")
	h := newHarness(t, t.TempDir(), parseRules(t, `
- alert: CheckoutNPlusOne
  findings: {kind: n_plus_one_query, service: checkout, more_than: 20, window: 10m}
`), nil, hk)
	ctx := context.Background()
	var owned atomic.Bool
	// The other node holds 15 findings of the rule's group; this one 10.
	peer := newHarness(t, t.TempDir(), parseRules(t, checkoutRule), nil)
	peer.clk = h.clk
	peer.feed(15)
	h.m.SetCluster(Cluster{
		Owns:          func(string) bool { return owned.Load() },
		FindingCounts: func(context.Context) []FindingCounts { return []FindingCounts{peer.m.FindingCounts()} },
	})
	h.feed(10)

	h.m.Evaluate(ctx)
	if v := h.m.Alerts(); len(v.Firing)+len(v.Pending) != 0 {
		t.Fatalf("a rule of another node was evaluated here: %+v", v)
	}
	if r := h.m.Rules().Groups[0].Rules[0]; r.Health != "unknown" || !r.LastEvaluation.IsZero() {
		t.Fatalf("a rule of another node shows an evaluation here: %+v", r)
	}
	owned.Store(true)
	h.m.Evaluate(ctx)
	v := h.m.Alerts()
	if len(v.Firing) != 1 || v.Firing[0].Value != 25 {
		t.Fatalf("the owner must count both nodes' 25 findings: %+v", v)
	}
	waitFor(t, "the firing notification", func() bool { return len(hk.Statuses("")) == 1 })

	owned.Store(false)
	h.clk.add(time.Minute)
	h.m.Evaluate(ctx)
	if v := h.m.Alerts(); len(v.Firing)+len(v.Pending)+len(v.History) != 0 {
		t.Fatalf("the alert of a rule gone to another node stays here: %+v", v)
	}
	time.Sleep(50 * time.Millisecond)
	if s := hk.Statuses(""); len(s) != 1 {
		t.Fatalf("notifications after the rule moved: %v, want only the firing one", s)
	}
}

// Merged lists hold an alert once (firing before pending) and every
// node's resolved alerts, newest first.
func TestMergeViews(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	a := Alert{Key: "a", State: StatePending, ActiveAt: at(1), LastSeenAt: at(2)}
	aFiring := Alert{Key: "a", State: StateFiring, ActiveAt: at(0), LastSeenAt: at(1)}
	b := Alert{Key: "b", State: StateFiring, ActiveAt: at(3), LastSeenAt: at(3)}
	old := Alert{Key: "c", State: StateResolved, ResolvedAt: at(1)}
	recent := Alert{Key: "d", State: StateResolved, ResolvedAt: at(2)}
	v := MergeViews([]AlertsView{
		{Pending: []Alert{a}, History: []Alert{old}},
		{Firing: []Alert{aFiring, b}, History: []Alert{recent, old}},
	})
	if len(v.Firing) != 2 || v.Firing[0].Key != "b" || v.Firing[1].Key != "a" || len(v.Pending) != 0 {
		t.Fatalf("firing %+v pending %+v", v.Firing, v.Pending)
	}
	if len(v.History) != 2 || v.History[0].Key != "d" || v.History[1].Key != "c" {
		t.Fatalf("history %+v", v.History)
	}
}

// A down node's findings, read from its copy in the bucket, count as its
// live counts would.
func TestCountStoredCountsAsTheNodeWould(t *testing.T) {
	rules := parseRules(t, checkoutRule)
	stored := nPlusOne(15, t0.Add(-time.Minute))
	live := newHarness(t, t.TempDir(), rules, nil)
	live.m.ObserveFindings(stored)
	reader := newHarness(t, t.TempDir(), rules, nil)
	got, err := reader.m.CountStored(context.Background(), &fakeFindings{list: stored})
	if err != nil {
		t.Fatal(err)
	}
	want := live.m.FindingCounts()
	if len(got.Groups) != 1 || len(want.Groups) != 1 || got.Groups[0].Count != 15 || got.Groups[0].Count != want.Groups[0].Count ||
		got.Groups[0].Slot != want.Groups[0].Slot || got.Groups[0].ImpactMS != want.Groups[0].ImpactMS {
		t.Fatalf("counted from the bucket %+v, live %+v", got.Groups, want.Groups)
	}
}

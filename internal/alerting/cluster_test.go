package alerting

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/alerting/alertingtest"
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
	waitAnswered(t, h.m)

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

// twoNodes are two managers of one rule sharing a clock and a receiver;
// aOwns says which owns the rule, up which answers the other.
type twoNodes struct {
	t     *testing.T
	rules string
	nodes [2]*harness
	dirs  [2]string
	aOwns atomic.Bool
	up    [2]atomic.Bool
	hook  interface{ Statuses(string) []string }
}

func newTwoNodes(t *testing.T, rules string) *twoNodes {
	n := &twoNodes{t: t, rules: rules, hook: newHook(t, ""), dirs: [2]string{t.TempDir(), t.TempDir()}}
	var c *clock
	for i := range n.nodes {
		n.start(i)
		if c == nil {
			c = n.nodes[i].clk
		}
		n.nodes[i].clk, n.nodes[i].m.opt.Now = c, c.now
	}
	return n
}

// start starts node i (again: with what its data directory kept).
func (n *twoNodes) start(i int) {
	h := newHarness(n.t, n.dirs[i], parseRules(n.t, n.rules), nil, n.hook.(*alertingtest.Receiver))
	if old := n.nodes[i]; old != nil {
		old.close()
		h.clk, h.m.opt.Now = old.clk, old.clk.now
	}
	n.nodes[i] = h
	n.up[i].Store(true)
	h.m.SetCluster(Cluster{
		Owns: func(string) bool { return n.aOwns.Load() == (i == 0) },
		States: func(context.Context) []OwnerState {
			if !n.up[1-i].Load() {
				return nil
			}
			return []OwnerState{n.nodes[1-i].m.OwnerState()}
		},
	})
}

// A rule that moves to another node keeps its alerts' state: a pending
// alert fires when its `for` has elapsed since it began pending on the
// old owner, and a firing alert moving back is neither notified again
// as new nor resolved by the move.
func TestHandoverKeepsAlertState(t *testing.T) {
	n := newTwoNodes(t, `
- alert: CheckoutNPlusOne
  for: 5m
  findings: {kind: n_plus_one_query, service: checkout, more_than: 20, window: 1h}
`)
	ctx := context.Background()
	n.nodes[0].feed(25) // both nodes count the cluster's findings
	n.nodes[1].feed(25)
	n.aOwns.Store(true)
	began := n.nodes[0].clk.now()
	n.nodes[0].m.Evaluate(ctx)
	n.nodes[1].m.Evaluate(ctx)
	if v := n.nodes[0].m.Alerts(); len(v.Pending) != 1 || !v.Pending[0].ActiveAt.Equal(began) {
		t.Fatalf("a: %+v, want one alert pending since %v", v, began)
	}

	// a stops 2 minutes in; b owns the rule from minute 3.
	n.nodes[0].clk.add(2 * time.Minute)
	n.nodes[0].m.Evaluate(ctx)
	n.nodes[1].m.Evaluate(ctx)
	n.up[0].Store(false)
	n.nodes[0].close()
	n.aOwns.Store(false)
	n.nodes[0].clk.add(time.Minute)
	n.nodes[1].m.Evaluate(ctx)
	if v := n.nodes[1].m.Alerts(); len(v.Pending) != 1 || !v.Pending[0].ActiveAt.Equal(began) {
		t.Fatalf("b after the handover: %+v, want one alert pending since %v", v, began)
	}
	n.nodes[0].clk.add(2 * time.Minute) // 5 minutes since it began pending on a
	n.nodes[1].m.Evaluate(ctx)
	v := n.nodes[1].m.Alerts()
	if len(v.Firing) != 1 || !v.Firing[0].FiredAt.Equal(began.Add(5*time.Minute)) {
		t.Fatalf("b 5 minutes after the alert began pending on a: %+v, want it firing", v)
	}
	firedAt := v.Firing[0].FiredAt
	waitFor(t, "the firing notification", func() bool { return len(n.hook.Statuses("")) == 1 })
	waitAnswered(t, n.nodes[1].m)

	// a starts again (with the pending alert it saved at its stop) and
	// owns the rule again: it continues the firing alert.
	n.nodes[0].clk.add(time.Minute)
	n.aOwns.Store(true)
	n.start(0)
	n.nodes[0].feed(25) // what it counts again from the store and the peers
	n.nodes[0].m.Evaluate(ctx)
	n.nodes[1].m.Evaluate(ctx)
	if v := n.nodes[0].m.Alerts(); len(v.Firing) != 1 || !v.Firing[0].FiredAt.Equal(firedAt) || !v.Firing[0].ActiveAt.Equal(began) {
		t.Fatalf("a after taking the rule back: %+v, want it firing since %v", v, firedAt)
	}
	if v := n.nodes[1].m.Alerts(); len(v.Firing)+len(v.Pending) != 0 {
		t.Fatalf("b keeps the alert of a rule it no longer owns: %+v", v)
	}
	time.Sleep(50 * time.Millisecond)
	if s := n.hook.Statuses(""); len(s) != 1 {
		t.Fatalf("notifications across the handovers: %v, want the one firing", s)
	}

	// The condition ends: the owner resolves it, once.
	n.nodes[0].clk.add(2 * time.Hour)
	n.nodes[0].m.Evaluate(ctx)
	waitFor(t, "the resolve", func() bool { return len(n.hook.Statuses("")) == 2 })
	if s := n.hook.Statuses(""); s[1] != "resolved" {
		t.Fatalf("notifications: %v, want firing then resolved", s)
	}
}

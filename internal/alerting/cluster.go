package alerting

import (
	"context"
	"sort"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// In a cluster every node reads the same merged RED metrics, so every
// node would raise the same alerts and notify the receivers three times
// over. Instead each rule is evaluated by one node, its owner (Owns); the
// owner counts the findings of every node (each node holds the findings
// of the traces it owns), and the alert lists merge the nodes' alerts.

// Cluster is what the manager of one node of a cluster needs from the
// others. Every field is optional.
type Cluster struct {
	// Owns says whether this node evaluates a rule (by its name).
	Owns func(rule string) bool
	// Alerts, Rules and FindingCounts ask the other nodes for theirs
	// (the nodes that answer).
	Alerts        func(ctx context.Context) []AlertsView
	Rules         func(ctx context.Context) []RuleGroups
	FindingCounts func(ctx context.Context) []FindingCounts
	// States asks the other nodes for the state of the rules they own
	// (handover.go).
	States func(ctx context.Context) []OwnerState
}

// SetCluster makes the manager one node of a cluster; call it before Run.
func (m *Manager) SetCluster(c Cluster) {
	m.mu.Lock()
	m.cluster = c
	m.mu.Unlock()
}

func (m *Manager) clusterOf() Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cluster
}

// owns says whether this node evaluates r.
func (c Cluster) owns(r *Rule) bool { return c.Owns == nil || c.Owns(r.Name) }

// FindingCounts is a node's count of its recent findings, as the rules
// read them: per time slot and group.
type FindingCounts struct {
	Groups []FindingCount `json:"groups"`
}

// FindingCount is one group's findings of one slot.
type FindingCount struct {
	Slot     int64            `json:"slot"`
	Kind     string           `json:"kind"`
	Service  string           `json:"service"`
	Severity analyze.Severity `json:"severity"`
	Systemic bool             `json:"systemic,omitempty"`
	Key      string           `json:"key,omitempty"`
	Count    int              `json:"count"`
	ImpactMS float64          `json:"impact_ms"`
	// Top is the finding alerts cite (without its evidence).
	Top findingstore.Stored `json:"top"`
}

// FindingCounts returns this node's counts, for the node that evaluates
// a findings rule.
func (m *Manager) FindingCounts() FindingCounts { return countsOf(m.window) }

// CountStored counts the findings a reader holds as FindingCounts would
// on their node: for another node's findings copied to the bucket, while
// that node is down.
func (m *Manager) CountStored(ctx context.Context, r FindingsReader) (FindingCounts, error) {
	w := newFindingsWindow(m.window.keep - findingSlot)
	now := m.opt.Now()
	if _, err := w.seed(ctx, r, now, m.perTrace, false); err != nil {
		return FindingCounts{}, err
	}
	if _, err := w.seed(ctx, r, now, m.crossTrace, true); err != nil {
		return FindingCounts{}, err
	}
	return countsOf(w), nil
}

func countsOf(w *findingsWindow) FindingCounts {
	out := FindingCounts{Groups: []FindingCount{}}
	w.mu.Lock()
	defer w.mu.Unlock()
	for s, groups := range w.slots {
		for g, a := range groups {
			out.Groups = append(out.Groups, FindingCount{Slot: s, Kind: g.kind, Service: g.service, Severity: g.severity,
				Systemic: g.systemic, Key: g.key, Count: a.count, ImpactMS: a.impact, Top: a.top})
		}
	}
	return out
}

// withPeers is the window an evaluation reads: this node's findings, and
// in a cluster the other nodes' too.
func (m *Manager) withPeers(ctx context.Context, c Cluster) *findingsWindow {
	if c.FindingCounts == nil {
		return m.window
	}
	peers := c.FindingCounts(ctx)
	w := newFindingsWindow(m.window.keep - findingSlot)
	m.window.mu.Lock()
	for s, groups := range m.window.slots {
		cp := make(map[findingGroup]*findingAgg, len(groups))
		for g, a := range groups {
			c := *a
			cp[g] = &c
		}
		w.slots[s] = cp
	}
	m.window.mu.Unlock()
	for _, p := range peers {
		for _, fc := range p.Groups {
			g := findingGroup{kind: fc.Kind, service: fc.Service, severity: fc.Severity, systemic: fc.Systemic, key: fc.Key}
			groups := w.slots[fc.Slot]
			if groups == nil {
				groups = map[findingGroup]*findingAgg{}
				w.slots[fc.Slot] = groups
			}
			a := groups[g]
			if a == nil {
				a = &findingAgg{top: fc.Top}
				groups[g] = a
			} else if g.systemic && !fc.Top.Time.Before(a.top.Time) || !g.systemic && fc.Top.ImpactMS > a.top.ImpactMS {
				a.top = fc.Top
			}
			a.count += fc.Count
			a.impact += fc.ImpactMS
		}
	}
	return w
}

// View is GET /api/v1/alerts: this node's alerts, in a cluster merged
// with the other nodes'.
func (m *Manager) View(ctx context.Context) AlertsView {
	v := m.Alerts()
	c := m.clusterOf()
	if c.Alerts == nil {
		return v
	}
	return MergeViews(append([]AlertsView{v}, c.Alerts(ctx)...))
}

// RuleStates is GET /api/v1/rules: in a cluster each rule as its owner
// last evaluated it.
func (m *Manager) RuleStates(ctx context.Context) RuleGroups {
	g := m.Rules()
	c := m.clusterOf()
	if c.Rules == nil {
		return g
	}
	return MergeRuleGroups(g, c.Rules(ctx))
}

// MergeViews merges the alerts of several nodes. An alert (by its
// labels) raised on two nodes while its rule changed owner counts once:
// firing before pending, else the one seen last.
func MergeViews(views []AlertsView) AlertsView {
	best := map[string]Alert{}
	var history []Alert
	seenHistory := map[string]bool{}
	for _, v := range views {
		for _, l := range [][]Alert{v.Firing, v.Pending} {
			for _, a := range l {
				b, ok := best[a.Key]
				if !ok || a.State == StateFiring && b.State != StateFiring ||
					a.State == b.State && a.LastSeenAt.After(b.LastSeenAt) {
					best[a.Key] = a
				}
			}
		}
		for _, a := range v.History {
			k := a.Key + "\x00" + a.ResolvedAt.String()
			if !seenHistory[k] {
				seenHistory[k] = true
				history = append(history, a)
			}
		}
	}
	out := AlertsView{Firing: []Alert{}, Pending: []Alert{}, History: []Alert{}}
	for _, a := range best {
		if a.State == StateFiring {
			out.Firing = append(out.Firing, a)
		} else {
			out.Pending = append(out.Pending, a)
		}
	}
	sortByStart(out.Firing)
	sortByStart(out.Pending)
	sort.SliceStable(history, func(i, j int) bool {
		if !history[i].ResolvedAt.Equal(history[j].ResolvedAt) {
			return history[i].ResolvedAt.After(history[j].ResolvedAt)
		}
		return history[i].Key < history[j].Key
	})
	if len(history) > historySize {
		history = history[:historySize]
	}
	out.History = append(out.History, history...)
	return out
}

// MergeRuleGroups takes each rule of local (every node has the same
// rules) as the node that evaluated it last reports it.
func MergeRuleGroups(local RuleGroups, peers []RuleGroups) RuleGroups {
	latest := map[string]RuleState{}
	for _, g := range append([]RuleGroups{local}, peers...) {
		for _, grp := range g.Groups {
			for _, r := range grp.Rules {
				if l, ok := latest[r.Name]; !ok || r.LastEvaluation.After(l.LastEvaluation) {
					latest[r.Name] = r
				}
			}
		}
	}
	out := RuleGroups{Groups: make([]RuleGroup, len(local.Groups))}
	for i, grp := range local.Groups {
		out.Groups[i] = grp
		out.Groups[i].Rules = make([]RuleState, len(grp.Rules))
		for k, r := range grp.Rules {
			out.Groups[i].Rules[k] = latest[r.Name]
		}
	}
	return out
}

package alerting

import (
	"context"
	"sort"
	"time"
)

// A rule changes owner when a node stops answering or comes back. Its new
// owner continues the rule's alerts where the old one left them: a
// pending alert fires when its `for` has elapsed since it began pending
// (not `for` after the handover), and a firing one stays firing with the
// notifications already delivered, so no receiver hears of it again as
// new nor sees it resolved by the move. For that every node asks the
// others, at each evaluation, for the alerts of the rules they own
// (OwnerState) and remembers the last answer per rule: a node that
// stopped leaves its last state behind, which its successor adopts.

// OwnerState is what a node knows of the rules it owns, for the node that
// takes one over.
type OwnerState struct {
	// At is the node's clock when it answered; of two nodes claiming a
	// rule at once (while ownership moves) the later answer wins.
	At time.Time `json:"at"`
	// Rules are the rules the node owned at its last evaluation.
	Rules []string `json:"rules"`
	// Alerts are their alerts: pending, firing, and resolved ones whose
	// resolve some receiver has yet to get.
	Alerts []Alert `json:"alerts"`
}

// ruleHandover is the last known state of a rule another node owns.
type ruleHandover struct {
	at     time.Time
	alerts []Alert
}

// OwnerState is this node's answer to a peer's question for the state
// of the rules it owns.
func (m *Manager) OwnerState() OwnerState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := OwnerState{At: m.opt.Now(), Rules: []string{}, Alerts: []Alert{}}
	for rule, owned := range m.owned {
		if owned {
			st.Rules = append(st.Rules, rule)
		}
	}
	sort.Strings(st.Rules)
	for _, a := range m.alerts {
		if m.owned[a.Rule] {
			st.Alerts = append(st.Alerts, a.clone())
		}
	}
	sort.Slice(st.Alerts, func(i, j int) bool { return st.Alerts[i].Key < st.Alerts[j].Key })
	return st
}

// noteOwners remembers the state of the rules the other nodes own (the
// answers of those that answer; what a stopped node said last stays).
func (m *Manager) noteOwners(ctx context.Context, c Cluster) {
	if c.States == nil {
		return
	}
	states := c.States(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range states {
		byRule := map[string][]Alert{}
		for _, a := range st.Alerts {
			byRule[a.Rule] = append(byRule[a.Rule], a)
		}
		for _, rule := range st.Rules {
			if m.owned[rule] {
				continue // this node's own state is the one to keep
			}
			if h, ok := m.handover[rule]; ok && h.at.After(st.At) {
				continue
			}
			m.handover[rule] = ruleHandover{at: st.At, alerts: byRule[rule]}
		}
	}
}

// takeOver makes the alerts of rules this node owns from now on those
// their last owner reported (replacing any this node kept from an earlier
// time it owned them); the caller holds mu. Rules no other node reported
// keep the alerts this node has (after a restart, its saved ones). It
// says whether it changed any.
func (m *Manager) takeOver(rules []string) bool {
	changed := false
	for _, rule := range rules {
		h, ok := m.handover[rule]
		if !ok {
			continue
		}
		delete(m.handover, rule)
		for key, a := range m.alerts {
			if a.Rule == rule {
				delete(m.alerts, key)
			}
		}
		for _, a := range h.alerts {
			c := a.clone()
			m.alerts[c.Key] = &c
		}
		changed = true
		m.log.Info("alert rule taken over from its last owner", "rule", rule, "alerts", len(h.alerts))
	}
	return changed
}

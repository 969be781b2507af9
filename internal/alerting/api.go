package alerting

import (
	"sort"
	"strconv"
	"time"
)

// AlertsView is the body of GET /api/v1/alerts.
type AlertsView struct {
	Firing  []Alert `json:"firing"`
	Pending []Alert `json:"pending"`
	// History holds recently resolved alerts, newest first.
	History []Alert `json:"history"`
}

// Alerts returns the current alerts and the recent history.
func (m *Manager) Alerts() AlertsView {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := AlertsView{Firing: []Alert{}, Pending: []Alert{}, History: make([]Alert, 0, len(m.history))}
	for _, a := range m.alerts {
		switch a.State {
		case StateFiring:
			v.Firing = append(v.Firing, a.clone())
		case StatePending:
			v.Pending = append(v.Pending, a.clone())
		}
	}
	for i := len(m.history) - 1; i >= 0; i-- {
		v.History = append(v.History, m.history[i].clone())
	}
	sortByStart(v.Firing)
	sortByStart(v.Pending)
	return v
}

// sortByStart orders alerts newest first.
func sortByStart(l []Alert) {
	sort.Slice(l, func(i, j int) bool {
		if !l[i].ActiveAt.Equal(l[j].ActiveAt) {
			return l[i].ActiveAt.After(l[j].ActiveAt)
		}
		return l[i].Key < l[j].Key
	})
}

// RuleGroups is the data of GET /api/v1/rules, in the shape of
// Prometheus' rules API.
type RuleGroups struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string      `json:"name"`
	File     string      `json:"file"`
	Interval float64     `json:"interval"`
	Rules    []RuleState `json:"rules"`
}

// RuleState is one alerting rule with its health and active alerts.
type RuleState struct {
	Name        string            `json:"name"`
	Query       string            `json:"query"`
	Condition   string            `json:"condition"`
	Duration    float64           `json:"duration"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Alerts      []RuleAlert       `json:"alerts"`
	State       string            `json:"state"`
	Health      string            `json:"health"`
	LastError   string            `json:"lastError,omitempty"`
	// EvaluationTime is in seconds.
	EvaluationTime float64   `json:"evaluationTime"`
	LastEvaluation time.Time `json:"lastEvaluation"`
	Type           string    `json:"type"`
}

// RuleAlert is an active alert of a rule, Prometheus-style.
type RuleAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
	Value       string            `json:"value"`
}

// Rules returns the rules with their state.
func (m *Manager) Rules() RuleGroups {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := RuleGroup{Name: "tracedx", File: "", Interval: m.opt.Interval.Seconds(), Rules: make([]RuleState, 0, len(m.opt.Rules))}
	for i := range m.opt.Rules {
		r := &m.opt.Rules[i]
		h := m.health[r.Name]
		rs := RuleState{Name: r.Name, Query: r.Query(), Condition: r.Type(), Duration: r.For.Seconds(),
			Labels: nonNil(r.Labels), Annotations: nonNil(r.Annotations), Alerts: []RuleAlert{}, State: "inactive",
			Health: "unknown", LastError: h.err, EvaluationTime: h.duration.Seconds(), LastEvaluation: h.lastEval, Type: "alerting"}
		if !h.lastEval.IsZero() {
			rs.Health = "ok"
			if h.err != "" {
				rs.Health = "err"
			}
		}
		for _, a := range m.alerts {
			if a.Rule != r.Name || a.State == StateResolved {
				continue
			}
			rs.Alerts = append(rs.Alerts, RuleAlert{Labels: a.Labels, Annotations: a.Annotations, State: string(a.State),
				ActiveAt: a.ActiveAt, Value: strconv.FormatFloat(a.Value, 'g', -1, 64)})
			if a.State == StateFiring || rs.State == "inactive" {
				rs.State = string(a.State)
			}
		}
		sort.Slice(rs.Alerts, func(i, j int) bool { return alertKey(rs.Alerts[i].Labels) < alertKey(rs.Alerts[j].Labels) })
		g.Rules = append(g.Rules, rs)
	}
	return RuleGroups{Groups: []RuleGroup{g}}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

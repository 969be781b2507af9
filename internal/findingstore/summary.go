package findingstore

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// SummaryQuery selects the findings a Summary aggregates. Zero fields do
// not constrain; Groups caps the number of groups returned (the totals
// always cover every finding in the range).
type SummaryQuery struct {
	From, To time.Time
	Kind     string
	Service  string
	Systemic *bool
	Groups   int
}

// KindCount is one kind's share of the findings in the range.
type KindCount struct {
	Kind     string  `json:"kind"`
	Count    int     `json:"count"`
	Traces   int     `json:"traces"`
	ImpactMS float64 `json:"impact_ms"`
	Severity string  `json:"severity"`
}

// ServiceCount is one service's share of the findings in the range.
type ServiceCount struct {
	Service  string  `json:"service"`
	Count    int     `json:"count"`
	Traces   int     `json:"traces"`
	ImpactMS float64 `json:"impact_ms"`
	Severity string  `json:"severity"`
}

// Example is the finding of a group that cost the most, with the place
// to open it at.
type Example struct {
	TraceID  string  `json:"trace_id,omitempty"`
	SpanID   string  `json:"span_id,omitempty"`
	Title    string  `json:"title"`
	Severity string  `json:"severity"`
	ImpactMS float64 `json:"impact_ms"`
	Fix      string  `json:"fix,omitempty"`
}

// Group is one problem: the findings of one kind at one service and
// operation (repeats of the same problem across traces).
type Group struct {
	Kind      string    `json:"kind"`
	Service   string    `json:"service,omitempty"`
	Operation string    `json:"operation,omitempty"`
	Systemic  bool      `json:"systemic,omitempty"`
	Count     int       `json:"count"`
	Traces    int       `json:"traces"`
	ImpactMS  float64   `json:"impact_ms"`
	Severity  string    `json:"severity"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Example   *Example  `json:"example,omitempty"`
}

// Summary aggregates every finding in a range: never capped by a page
// size, ranked by impact (time on the critical path a fix would remove,
// then the number of traces hurt).
type Summary struct {
	Total      int            `json:"total"`
	Traces     int            `json:"traces"`
	ImpactMS   float64        `json:"impact_ms"`
	BySeverity map[string]int `json:"by_severity"`
	Kinds      []KindCount    `json:"kinds"`
	Services   []ServiceCount `json:"services"`
	// Groups are the top problems by impact; GroupsTotal counts them all.
	Groups      []Group `json:"groups"`
	GroupsTotal int     `json:"groups_total"`
}

type agg struct {
	count    int
	impact   float64
	severity int8
	traces   map[model.TraceID]struct{}
}

func (a *agg) add(e *entry) {
	a.count++
	a.impact += float64(e.impactMS)
	if e.severity > a.severity {
		a.severity = e.severity
	}
	if !e.trace.IsZero() {
		if a.traces == nil {
			a.traces = map[model.TraceID]struct{}{}
		}
		a.traces[e.trace] = struct{}{}
	}
}

type groupAgg struct {
	agg
	kind, service, operation string
	systemic                 bool
	first, last              int64
	best                     *entry
}

// betterExample: the costliest finding, then the more severe, then the newer.
func betterExample(a, b *entry) bool {
	if a.impactMS != b.impactMS {
		return a.impactMS > b.impactMS
	}
	if a.severity != b.severity {
		return a.severity > b.severity
	}
	return after(a, b)
}

var sevNames = [...]string{"", "info", "warning", "critical"}

func sevName(r int8) string {
	if r < 0 || int(r) >= len(sevNames) {
		return ""
	}
	return sevNames[r]
}

// rankBefore orders aggregates by impact, then severity, then count.
func rankBefore(a, b *agg) bool {
	if a.impact != b.impact {
		return a.impact > b.impact
	}
	if a.severity != b.severity {
		return a.severity > b.severity
	}
	return a.count > b.count
}

// Summarize aggregates the findings matching q.
func (s *Store) Summarize(ctx context.Context, q SummaryQuery) (Summary, error) {
	var kinds map[string]bool
	if q.Kind != "" {
		kinds = map[string]bool{}
		for _, k := range strings.Split(q.Kind, ",") {
			if k = strings.TrimSpace(k); k != "" {
				kinds[k] = true
			}
		}
	}
	if q.Groups <= 0 {
		q.Groups = 200
	}
	s.settle()
	s.mu.RLock()
	defer s.mu.RUnlock()
	cands := s.entries
	if q.Service != "" {
		cands = s.byService[q.Service]
	}
	lo := 0
	if !q.From.IsZero() {
		f := q.From.UnixNano()
		lo = sort.Search(len(cands), func(i int) bool { return cands[i].t >= f })
	}
	var total agg
	bySev := map[string]int{}
	byKind, bySvc := map[string]*agg{}, map[string]*agg{}
	type gkey struct {
		kind, service, operation string
		systemic                 bool
	}
	groups := map[gkey]*groupAgg{}
	for i, e := range cands[lo:] {
		if !q.To.IsZero() && e.t >= q.To.UnixNano() {
			break
		}
		if kinds != nil && !kinds[e.kind] || q.Systemic != nil && *q.Systemic != e.systemic {
			continue
		}
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return Summary{}, err
			}
		}
		total.add(e)
		bySev[sevName(e.severity)]++
		if byKind[e.kind] == nil {
			byKind[e.kind] = &agg{}
		}
		byKind[e.kind].add(e)
		if e.service != "" {
			if bySvc[e.service] == nil {
				bySvc[e.service] = &agg{}
			}
			bySvc[e.service].add(e)
		}
		k := gkey{e.kind, e.service, e.operation, e.systemic}
		g := groups[k]
		if g == nil {
			g = &groupAgg{kind: e.kind, service: e.service, operation: e.operation, systemic: e.systemic, first: e.t, best: e}
			groups[k] = g
		}
		g.add(e)
		g.last = e.t
		if betterExample(e, g.best) {
			g.best = e
		}
	}
	out := Summary{Total: total.count, Traces: len(total.traces), ImpactMS: total.impact, BySeverity: bySev,
		Kinds: []KindCount{}, Services: []ServiceCount{}, Groups: []Group{}, GroupsTotal: len(groups)}
	delete(bySev, "")
	for _, k := range sortedAggs(byKind) {
		a := byKind[k]
		out.Kinds = append(out.Kinds, KindCount{Kind: k, Count: a.count, Traces: len(a.traces), ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	for _, k := range sortedAggs(bySvc) {
		a := bySvc[k]
		out.Services = append(out.Services, ServiceCount{Service: k, Count: a.count, Traces: len(a.traces), ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	list := make([]*groupAgg, 0, len(groups))
	for _, g := range groups {
		list = append(list, g)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if rankBefore(&a.agg, &b.agg) != rankBefore(&b.agg, &a.agg) {
			return rankBefore(&a.agg, &b.agg)
		}
		return a.kind+"\x00"+a.service+"\x00"+a.operation < b.kind+"\x00"+b.service+"\x00"+b.operation
	})
	if len(list) > q.Groups {
		list = list[:q.Groups]
	}
	for _, g := range list {
		grp := Group{Kind: g.kind, Service: g.service, Operation: g.operation, Systemic: g.systemic, Count: g.count,
			Traces: len(g.traces), ImpactMS: g.impact, Severity: sevName(g.severity),
			FirstSeen: time.Unix(0, g.first).UTC(), LastSeen: time.Unix(0, g.last).UTC()}
		st, err := s.read(g.best)
		if err != nil {
			return Summary{}, err
		}
		grp.Example = exampleOf(&st)
		out.Groups = append(out.Groups, grp)
	}
	return out, nil
}

func sortedAggs(m map[string]*agg) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := m[keys[i]], m[keys[j]]
		if rankBefore(a, b) != rankBefore(b, a) {
			return rankBefore(a, b)
		}
		return keys[i] < keys[j]
	})
	return keys
}

// exampleOf opens a finding at the span that shows its cause: the
// culprit's span when the detector named one, else its first span.
func exampleOf(st *Stored) *Example {
	ex := &Example{TraceID: st.TraceID, Title: st.Title, Severity: string(st.Severity), ImpactMS: st.ImpactMS, Fix: st.Fix}
	if ex.TraceID == "" && len(st.ExampleTraceIDs) > 0 {
		ex.TraceID = st.ExampleTraceIDs[0]
	}
	if ex.TraceID == st.TraceID {
		switch {
		case st.Culprit != nil && st.Culprit.SpanID != "":
			ex.SpanID = st.Culprit.SpanID
		case len(st.SpanIDs) > 0:
			ex.SpanID = st.SpanIDs[0]
		}
	}
	return ex
}

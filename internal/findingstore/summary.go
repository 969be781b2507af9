package findingstore

import (
	"context"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
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
	// WithSystemic asks for the cross-trace findings themselves
	// (Summary.Systemic), as a node merging the cluster's summaries does.
	WithSystemic bool `json:",omitempty"`
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
	// Time is when the example happened (summaries of several nodes
	// pick the newer of two equally costly examples, as one node does).
	Time time.Time `json:"time"`
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
	// Systemic, when the query asks WithSystemic, are the cross-trace
	// findings counted, for MergeSummaries to count once a condition that
	// several nodes found.
	Systemic []SystemicRef `json:"systemic_findings,omitempty"`
}

// SystemicRef is a cross-trace finding as a summary counts it.
type SystemicRef struct {
	Kind      string    `json:"kind"`
	Key       string    `json:"key"`
	Service   string    `json:"service,omitempty"`
	Operation string    `json:"operation,omitempty"`
	Severity  string    `json:"severity"`
	Time      time.Time `json:"time"`
	// Updated is the finding's last rewrite (Stored.Updated): the merged
	// summary joins findings as JoinSystemic does.
	Updated  time.Time `json:"updated,omitzero"`
	WindowS  float64   `json:"window_s"`
	ImpactMS float64   `json:"impact_ms"`
	// Traced: the finding names a trace, counted among the traces hurt.
	Traced bool `json:"traced,omitempty"`
}

type agg struct {
	count    int
	impact   float64
	severity int8
	traces   map[model.TraceID]struct{}
}

func (a *agg) add(e *idxEntry) {
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
	best                     hit
}

// betterExample: the costliest finding, then the more severe, then the newer.
func betterExample(a, b *idxEntry) bool {
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

// summaryAcc accumulates a Summary over index entries.
type summaryAcc struct {
	total         agg
	bySev         map[string]int
	byKind, bySvc map[string]*agg
	groups        map[groupKey]*groupAgg
}

type groupKey struct {
	kind, service, operation string
	systemic                 bool
}

func (a *summaryAcc) add(seg *segment, x *segIndex, e *idxEntry) {
	kind := x.str(int(e.kind))
	var service, operation string
	if e.service > 0 {
		service = x.str(int(e.service) - 1)
	}
	if e.operation > 0 {
		operation = x.str(int(e.operation) - 1)
	}
	a.total.add(e)
	a.bySev[sevName(e.severity)]++
	if a.byKind[kind] == nil {
		a.byKind[kind] = &agg{}
	}
	a.byKind[kind].add(e)
	if service != "" {
		if a.bySvc[service] == nil {
			a.bySvc[service] = &agg{}
		}
		a.bySvc[service].add(e)
	}
	k := groupKey{kind, service, operation, e.systemic}
	g := a.groups[k]
	if g == nil {
		g = &groupAgg{kind: kind, service: service, operation: operation, systemic: e.systemic, first: e.t, last: e.t, best: hit{seg, *e}}
		a.groups[k] = g
	}
	g.add(e)
	g.first, g.last = min(g.first, e.t), max(g.last, e.t)
	if betterExample(e, &g.best.e) {
		g.best = hit{seg, *e}
	}
}

// Summarize aggregates the findings matching q. Like List it reads the
// index records of the segments whose metadata may match (not the
// findings), so memory grows with the groups and traces in the range, not
// with the store; only each returned group's example is read from its
// segment.
func (s *Store) Summarize(ctx context.Context, q SummaryQuery) (Summary, error) {
	kinds := kindSet(q.Kind)
	if q.Groups <= 0 {
		q.Groups = 200
	}
	from, to := nanoBounds(q.From, q.To)
	acc := summaryAcc{bySev: map[string]int{}, byKind: map[string]*agg{}, bySvc: map[string]*agg{}, groups: map[groupKey]*groupAgg{}}
	var systemic, versions []hit
	idxOf := map[*segment]*segIndex{}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, seg := range s.segs {
		if seg.b == nil && !seg.indexed {
			continue
		}
		if lo, hi := seg.timeRange(); seg.count() == 0 || hi < from || lo >= to {
			continue
		}
		if seg.b == nil && !seg.mayMatch(kinds, q.Service, model.TraceID{}) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return Summary{}, err
		}
		x, err := s.entries(seg)
		if err != nil {
			return Summary{}, err
		}
		for i := range x.entries {
			e := &x.entries[i]
			if e.t < from || e.t >= to || kinds != nil && !kinds[x.str(int(e.kind))] ||
				q.Service != "" && (e.service == 0 || x.str(int(e.service)-1) != q.Service) ||
				q.Systemic != nil && *q.Systemic != e.systemic {
				continue
			}
			if e.systemic {
				// Only a rewritten finding's newest version counts.
				versions = append(versions, hit{seg, *e})
				idxOf[seg] = x
				continue
			}
			acc.add(seg, x, e)
		}
	}
	for _, h := range latestVersions(versions) {
		acc.add(h.seg, idxOf[h.seg], &h.e)
		if q.WithSystemic {
			systemic = append(systemic, h)
		}
	}
	out, err := s.summaryOf(&acc, q.Groups)
	if err != nil {
		return Summary{}, err
	}
	for _, h := range systemic {
		st, err := s.read(h.seg, &h.e)
		if err != nil {
			return Summary{}, err
		}
		if st.Key != "" {
			out.Systemic = append(out.Systemic, SystemicRef{Kind: st.Kind, Key: st.Key, Service: st.Service, Operation: st.Operation,
				Severity: sevName(h.e.severity), Time: st.Time, Updated: st.Updated, WindowS: windowOf(&st).Seconds(), ImpactMS: float64(h.e.impactMS), Traced: !h.e.trace.IsZero()})
		}
	}
	return out, nil
}

// summaryOf ranks the accumulated aggregates and reads the examples of
// the top groups; the caller holds mu for reading.
func (s *Store) summaryOf(acc *summaryAcc, groups int) (Summary, error) {
	total, bySev := &acc.total, acc.bySev
	out := Summary{Total: total.count, Traces: len(total.traces), ImpactMS: total.impact, BySeverity: bySev,
		Kinds: []KindCount{}, Services: []ServiceCount{}, Groups: []Group{}, GroupsTotal: len(acc.groups)}
	delete(bySev, "")
	for _, k := range sortedAggs(acc.byKind) {
		a := acc.byKind[k]
		out.Kinds = append(out.Kinds, KindCount{Kind: k, Count: a.count, Traces: len(a.traces), ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	for _, k := range sortedAggs(acc.bySvc) {
		a := acc.bySvc[k]
		out.Services = append(out.Services, ServiceCount{Service: k, Count: a.count, Traces: len(a.traces), ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	list := make([]*groupAgg, 0, len(acc.groups))
	for _, g := range acc.groups {
		list = append(list, g)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if rankBefore(&a.agg, &b.agg) != rankBefore(&b.agg, &a.agg) {
			return rankBefore(&a.agg, &b.agg)
		}
		return a.kind+"\x00"+a.service+"\x00"+a.operation < b.kind+"\x00"+b.service+"\x00"+b.operation
	})
	if len(list) > groups {
		list = list[:groups]
	}
	for _, g := range list {
		grp := Group{Kind: g.kind, Service: g.service, Operation: g.operation, Systemic: g.systemic, Count: g.count,
			Traces: len(g.traces), ImpactMS: g.impact, Severity: sevName(g.severity),
			FirstSeen: time.Unix(0, g.first).UTC(), LastSeen: time.Unix(0, g.last).UTC()}
		st, err := s.read(g.best.seg, &g.best.e)
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
	ex := &Example{TraceID: st.TraceID, Title: st.Title, Severity: string(st.Severity), ImpactMS: st.ImpactMS, Fix: st.Fix, Time: st.Time}
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

func sevRank(name string) int8 {
	for i, n := range sevNames {
		if n == name && n != "" {
			return int8(i)
		}
	}
	return 0
}

// mergedAgg is an agg of summaries rather than of index entries: the
// nodes of a cluster store the findings of disjoint sets of traces, so
// counts, distinct traces and impact add up.
type mergedAgg struct {
	agg
	ntraces int
}

func (m *mergedAgg) add(count, traces int, impact float64, severity string) {
	m.count += count
	m.ntraces += traces
	m.impact += impact
	m.severity = max(m.severity, sevRank(severity))
}

func mergedKeys(m map[string]*mergedAgg) []string {
	aggs := make(map[string]*agg, len(m))
	for k, a := range m {
		aggs[k] = &a.agg
	}
	return sortedAggs(aggs)
}

// MergeSummaries merges the summaries of the nodes of a cluster (each
// stores the findings of the traces it owns, and its own cross-trace
// ones) into the cluster's: counts and impact add up, a group's example
// is the costliest of the nodes' examples, and groups are ranked again
// and cut to groups. Each part should hold all its groups (a part cut by
// its own group limit can leave a group's count short). A cross-trace
// condition that several nodes found in their shares of the traces counts
// once, as the merged list joins it (JoinSystemic), when the parts carry
// their Systemic findings.
func MergeSummaries(parts []Summary, groups int) Summary {
	out := Summary{BySeverity: map[string]int{}, Kinds: []KindCount{}, Services: []ServiceCount{}, Groups: []Group{}}
	kinds, svcs := map[string]*mergedAgg{}, map[string]*mergedAgg{}
	grps := map[groupKey]*mergedGroup{}
	var systemic []SystemicRef
	for _, p := range parts {
		systemic = append(systemic, p.Systemic...)
		out.GroupsTotal = max(out.GroupsTotal, p.GroupsTotal)
		out.Total += p.Total
		out.Traces += p.Traces
		out.ImpactMS += p.ImpactMS
		for s, n := range p.BySeverity {
			out.BySeverity[s] += n
		}
		for _, k := range p.Kinds {
			mergedAt(kinds, k.Kind).add(k.Count, k.Traces, k.ImpactMS, k.Severity)
		}
		for _, s := range p.Services {
			mergedAt(svcs, s.Service).add(s.Count, s.Traces, s.ImpactMS, s.Severity)
		}
		for _, g := range p.Groups {
			key := groupKey{g.Kind, g.Service, g.Operation, g.Systemic}
			m := grps[key]
			if m == nil {
				m = &mergedGroup{g: g}
				grps[key] = m
			} else {
				m.g.FirstSeen, m.g.LastSeen = minTime(m.g.FirstSeen, g.FirstSeen), maxTime(m.g.LastSeen, g.LastSeen)
				if betterMergedExample(g.Example, m.g.Example) {
					m.g.Example = g.Example
				}
			}
			m.add(g.Count, g.Traces, g.ImpactMS, g.Severity)
		}
	}
	for _, set := range joinedRefs(systemic) {
		countOnce(set, &out, kinds, svcs, grps)
	}
	for _, k := range mergedKeys(kinds) {
		a := kinds[k]
		out.Kinds = append(out.Kinds, KindCount{Kind: k, Count: a.count, Traces: a.ntraces, ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	for _, k := range mergedKeys(svcs) {
		a := svcs[k]
		out.Services = append(out.Services, ServiceCount{Service: k, Count: a.count, Traces: a.ntraces, ImpactMS: a.impact, Severity: sevName(a.severity)})
	}
	list := make([]*mergedGroup, 0, len(grps))
	for _, m := range grps {
		m.g.Count, m.g.Traces, m.g.ImpactMS, m.g.Severity = m.count, m.ntraces, m.impact, sevName(m.severity)
		list = append(list, m)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if rankBefore(&a.agg, &b.agg) != rankBefore(&b.agg, &a.agg) {
			return rankBefore(&a.agg, &b.agg)
		}
		return a.g.Kind+"\x00"+a.g.Service+"\x00"+a.g.Operation < b.g.Kind+"\x00"+b.g.Service+"\x00"+b.g.Operation
	})
	out.GroupsTotal = max(out.GroupsTotal, len(list))
	if groups > 0 && len(list) > groups {
		list = list[:groups]
	}
	for _, m := range list {
		out.Groups = append(out.Groups, m.g)
	}
	return out
}

type mergedGroup struct {
	mergedAgg
	g Group
}

func mergedAt(m map[string]*mergedAgg, k string) *mergedAgg {
	if m[k] == nil {
		m[k] = &mergedAgg{}
	}
	return m[k]
}

// joinedRefs returns the sets of cross-trace findings that JoinSystemic
// would join, each with the member of most impact first.
func joinedRefs(refs []SystemicRef) [][]SystemicRef {
	fs := make([]Stored, len(refs))
	byKey := map[string][]int{}
	for i, r := range refs {
		fs[i] = Stored{Finding: analyze.Finding{Kind: r.Kind, Evidence: map[string]any{"window_s": r.WindowS}}, Time: r.Time, Updated: r.Updated}
		byKey[r.Kind+"\x00"+r.Key] = append(byKey[r.Kind+"\x00"+r.Key], i)
	}
	var out [][]SystemicRef
	for _, set := range joinable(fs, byKey) {
		rs := make([]SystemicRef, len(set))
		for j, i := range set {
			rs[j] = refs[i]
		}
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].ImpactMS > rs[b].ImpactMS })
		out = append(out, rs)
	}
	return out
}

// countOnce makes the merged aggregates count the findings of set (one
// condition several nodes found) as one finding, of the first member's
// service and group: the others' counts come off, and their impact and
// traces move to the first's service and group where theirs differ.
func countOnce(set []SystemicRef, out *Summary, kinds, svcs map[string]*mergedAgg, grps map[groupKey]*mergedGroup) {
	p := set[0]
	pk := groupKey{p.Kind, p.Service, p.Operation, true}
	var sev int8
	for _, m := range set {
		sev = max(sev, sevRank(m.Severity))
		out.BySeverity[m.Severity]--
	}
	out.BySeverity[sevName(sev)]++
	move := func(from, to *mergedAgg, m SystemicRef) {
		from.count--
		if to == nil || to == from {
			return
		}
		traced := 0
		if m.Traced {
			traced = 1
		}
		from.impact -= m.ImpactMS
		from.ntraces -= traced
		to.impact += m.ImpactMS
		to.ntraces += traced
	}
	for _, m := range set[1:] {
		out.Total--
		if k := kinds[m.Kind]; k != nil {
			k.count--
		}
		if s := svcs[m.Service]; m.Service != "" && s != nil {
			var to *mergedAgg
			if p.Service != "" {
				to = mergedAt(svcs, p.Service)
			}
			move(s, to, m)
			if s.count <= 0 {
				delete(svcs, m.Service)
			}
		}
		mk := groupKey{m.Kind, m.Service, m.Operation, true}
		if g := grps[mk]; g != nil {
			var to *mergedAgg
			if pg := grps[pk]; pg != nil {
				to = &pg.mergedAgg
			}
			move(&g.mergedAgg, to, m)
			if g.count <= 0 {
				delete(grps, mk)
			}
		}
	}
	for s, n := range out.BySeverity {
		if n <= 0 {
			delete(out.BySeverity, s)
		}
	}
}

// betterMergedExample is betterExample for examples: the costlier, then
// the more severe, then the newer.
func betterMergedExample(a, b *Example) bool {
	if a == nil || b == nil {
		return b == nil && a != nil
	}
	if a.ImpactMS != b.ImpactMS {
		return a.ImpactMS > b.ImpactMS
	}
	if sa, sb := sevRank(a.Severity), sevRank(b.Severity); sa != sb {
		return sa > sb
	}
	return a.Time.After(b.Time)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// PeerGroups is how many groups a node asks each peer for when it merges
// summaries (the API's own maximum): a group cut from a peer's answer
// would miss that peer's share.
const PeerGroups = 5000

// SetPeerSummaries makes GET /api/v1/findings/summary answer for the
// whole cluster: peers returns the other nodes' summaries of a query
// (their Summarize). Call it before serving.
func (s *Store) SetPeerSummaries(peers func(ctx context.Context, q SummaryQuery) []Summary) {
	s.peerSummaries = peers
}

// clusterSummary is Summarize merged with the other nodes' summaries.
func (s *Store) clusterSummary(ctx context.Context, q SummaryQuery) (Summary, error) {
	if s.peerSummaries == nil {
		return s.Summarize(ctx, q)
	}
	groups := q.Groups
	q.Groups, q.WithSystemic = PeerGroups, true
	local, err := s.Summarize(ctx, q)
	if err != nil {
		return Summary{}, err
	}
	return MergeSummaries(append(s.peerSummaries(ctx, q), local), groups), nil
}

// SetPeerLists makes ClusterList merge the other nodes' findings: peers
// returns their List answers for a query. Call it before serving.
func (s *Store) SetPeerLists(peers func(ctx context.Context, q Query) [][]Stored) {
	s.peerLists = peers
}

// ClusterList is List over every node of a cluster (List alone on a
// single node): the nodes' answers merged newest first and cut to the
// limit, one condition's cross-trace findings of several nodes joined
// (JoinSystemic). Finding ids are per node.
func (s *Store) ClusterList(ctx context.Context, q Query) ([]Stored, error) {
	local, err := s.List(ctx, q)
	if err != nil || s.peerLists == nil {
		return local, err
	}
	all := local
	for _, l := range s.peerLists(ctx, q) {
		all = append(all, l...)
	}
	all = JoinSystemic(all)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.After(all[j].Time) })
	limit := q.Limit
	if limit <= 0 {
		limit = 100 // List's default
	}
	if len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

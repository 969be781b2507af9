// Package compare diffs two traces, or two groups of traces, of the same
// request: which calls happen on one side only, which repeated calls
// changed count (1 → 51 queries of one shape), which nodes got slower and
// whether that time is their own or their children's, and which spans fail
// on one side only.
//
// Spans are matched by their path of (service, operation) from the root and
// their order among equal siblings (shared/patterns.md, "Comparison").
// Database spans are matched by their normalised statement rather than the
// span name, because instrumentations often name every query "SELECT".
package compare

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Options tune a comparison.
type Options struct {
	// Limit caps each ranked list (default 20).
	Limit int
}

func (o Options) limit() int {
	if o.Limit <= 0 {
		return 20
	}
	return o.Limit
}

// TraceInfo describes one compared trace.
type TraceInfo struct {
	TraceID       string  `json:"trace_id"`
	RootService   string  `json:"root_service"`
	RootOperation string  `json:"root_operation"`
	DurationMS    float64 `json:"duration_ms"`
	SpanCount     int     `json:"span_count"`
	ErrorCount    int     `json:"error_count"`
}

// OnlyInOne is a call present on one side only.
type OnlyInOne struct {
	Side      string `json:"side"` // "a" or "b"
	Path      string `json:"path"`
	Service   string `json:"service"`
	Operation string `json:"operation"`
	Statement string `json:"statement,omitempty"`
	Target    string `json:"target,omitempty"` // callee of a non-database call
	// Count of spans at this place (trace mode) or mean per trace (groups).
	Count      float64  `json:"count"`
	DurationMS float64  `json:"duration_ms"` // total (trace) or per trace (groups)
	Failed     int      `json:"failed"`
	SpanIDs    []string `json:"span_ids,omitempty"`
}

// CountChange is a repeated call whose count differs.
type CountChange struct {
	Path        string  `json:"path"`
	Service     string  `json:"service"`
	Operation   string  `json:"operation"`
	Statement   string  `json:"statement,omitempty"`
	Target      string  `json:"target,omitempty"`
	CountA      float64 `json:"count_a"`
	CountB      float64 `json:"count_b"`
	DurationMSA float64 `json:"duration_ms_a"` // total time of those calls
	DurationMSB float64 `json:"duration_ms_b"`
}

// DurationDiff is a matched node whose duration differs; the difference is
// split into the node's own time and its children's.
type DurationDiff struct {
	Path           string  `json:"path"`
	Service        string  `json:"service"`
	Operation      string  `json:"operation"`
	Statement      string  `json:"statement,omitempty"`
	Target         string  `json:"target,omitempty"`
	SpanIDA        string  `json:"span_id_a,omitempty"`
	SpanIDB        string  `json:"span_id_b,omitempty"`
	DurationMSA    float64 `json:"duration_ms_a"`
	DurationMSB    float64 `json:"duration_ms_b"`
	DiffMS         float64 `json:"diff_ms"` // b - a
	SelfMSA        float64 `json:"self_ms_a"`
	SelfMSB        float64 `json:"self_ms_b"`
	SelfDiffMS     float64 `json:"self_diff_ms"`
	ChildrenDiffMS float64 `json:"children_diff_ms"`
}

// ErrorDiff is a matched node that fails on one side only (trace mode), or
// whose error share differs (groups).
type ErrorDiff struct {
	Path        string  `json:"path"`
	Service     string  `json:"service"`
	Operation   string  `json:"operation"`
	Statement   string  `json:"statement,omitempty"`
	Target      string  `json:"target,omitempty"`
	SpanIDA     string  `json:"span_id_a,omitempty"`
	SpanIDB     string  `json:"span_id_b,omitempty"`
	ErrorShareA float64 `json:"error_share_a"`
	ErrorShareB float64 `json:"error_share_b"`
	ErrorA      string  `json:"error_a,omitempty"`
	ErrorB      string  `json:"error_b,omitempty"`
}

// Result compares trace A with trace B; "diff" is always B minus A.
type Result struct {
	Mode         string         `json:"mode"` // "traces"
	A            TraceInfo      `json:"a"`
	B            TraceInfo      `json:"b"`
	Matched      int            `json:"matched"`
	OnlyInOne    []OnlyInOne    `json:"only_in_one"`
	CountChanges []CountChange  `json:"count_changes"`
	Durations    []DurationDiff `json:"duration_diffs"`
	Errors       []ErrorDiff    `json:"error_diffs"`
	Summary      []string       `json:"summary"`
}

// label identifies a node among its siblings.
type label struct {
	service, operation, statement, target string
}

func labelOf(n *analyze.Node) label {
	l := label{service: n.Span.Service, operation: n.Span.Name}
	if analyze.IsDB(n) {
		l.statement = analyze.DBShape(n.Span)
	} else if analyze.IsCall(n) {
		// Calls are often named by their method only ("GET"); the callee
		// tells them apart.
		svc, op := analyze.CallTarget(nil, n)
		l.target = strings.TrimSpace(svc + " " + op)
	}
	return l
}

func (l label) String() string {
	op := l.operation
	if l.statement != "" {
		op = model.Clip(l.statement, 80)
	} else if l.target != "" {
		op += " → " + model.Clip(l.target, 80)
	}
	return l.service + ": " + op
}

// selfTime is the part of n's duration not covered by any child (children
// cut at n's bounds).
func selfTime(n *analyze.Node) uint64 {
	lo, hi := n.Start(), n.End()
	if hi <= lo {
		return 0
	}
	var covered uint64
	curStart, curEnd := uint64(0), uint64(0)
	open := false
	// Children are sorted by start.
	for _, c := range n.Children {
		s, e := max(c.Start(), lo), min(c.End(), hi)
		if e <= s {
			continue
		}
		if open && s <= curEnd {
			curEnd = max(curEnd, e)
			continue
		}
		if open {
			covered += curEnd - curStart
		}
		curStart, curEnd, open = s, e, true
	}
	if open {
		covered += curEnd - curStart
	}
	return hi - lo - min(covered, hi-lo)
}

func errorText(n *analyze.Node) string {
	if !analyze.Failed(n) {
		return ""
	}
	typ, msg := analyze.ExceptionOf(n.Span)
	switch {
	case typ != "" && msg != "":
		return model.Clip(typ+": "+msg, 200)
	case typ != "":
		return typ
	case msg != "":
		return model.Clip(msg, 200)
	}
	if code, ok := analyze.HTTPStatus(n.Span); ok {
		return fmt.Sprintf("HTTP %d", code)
	}
	return "error"
}

func info(t *analyze.Trace) TraceInfo {
	ti := TraceInfo{TraceID: t.ID.String(), DurationMS: analyze.NS(t.Duration()), SpanCount: len(t.Spans)}
	if r := t.Root(); r != nil {
		ti.RootService, ti.RootOperation = r.Span.Service, r.Span.Name
	}
	for _, n := range t.Nodes {
		if analyze.Failed(n) {
			ti.ErrorCount++
		}
	}
	return ti
}

// group splits nodes by label keeping their order (by start time).
func group(nodes []*analyze.Node) (map[label][]*analyze.Node, []label) {
	m := map[label][]*analyze.Node{}
	var order []label
	for _, n := range nodes {
		l := labelOf(n)
		if _, ok := m[l]; !ok {
			order = append(order, l)
		}
		m[l] = append(m[l], n)
	}
	return m, order
}

func subtreeFailed(ns []*analyze.Node) int {
	k := 0
	for _, n := range ns {
		if analyze.Failed(n) {
			k++
		}
	}
	return k
}

func sumMS(ns []*analyze.Node) float64 {
	var d uint64
	for _, n := range ns {
		d += n.Duration()
	}
	return analyze.NS(d)
}

func spanIDs(ns []*analyze.Node, max int) []string {
	var out []string
	for i, n := range ns {
		if i == max {
			break
		}
		out = append(out, n.Span.SpanID.String())
	}
	return out
}

// Traces compares two traces given as span lists.
func Traces(a, b []model.Span, opt Options) Result {
	return TraceTrees(analyze.NewTrace(a), analyze.NewTrace(b), opt)
}

// TraceTrees compares two built traces.
func TraceTrees(ta, tb *analyze.Trace, opt Options) Result {
	res := Result{Mode: "traces", A: info(ta), B: info(tb)}
	type pair struct {
		a, b []*analyze.Node
		path string
	}
	stack := []pair{{a: ta.Roots, b: tb.Roots}}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ga, orderA := group(p.a)
		gb, orderB := group(p.b)
		order := orderA
		for _, l := range orderB {
			if _, ok := ga[l]; !ok {
				order = append(order, l)
			}
		}
		for _, l := range order {
			na, nb := ga[l], gb[l]
			path := l.String()
			if p.path != "" {
				path = p.path + " > " + path
			}
			switch {
			case len(nb) == 0:
				res.OnlyInOne = append(res.OnlyInOne, OnlyInOne{Side: "a", Path: path, Service: l.service, Operation: l.operation,
					Statement: l.statement, Target: l.target, Count: float64(len(na)), DurationMS: sumMS(na), Failed: subtreeFailed(na), SpanIDs: spanIDs(na, 5)})
				continue
			case len(na) == 0:
				res.OnlyInOne = append(res.OnlyInOne, OnlyInOne{Side: "b", Path: path, Service: l.service, Operation: l.operation,
					Statement: l.statement, Target: l.target, Count: float64(len(nb)), DurationMS: sumMS(nb), Failed: subtreeFailed(nb), SpanIDs: spanIDs(nb, 5)})
				continue
			case len(na) != len(nb):
				res.CountChanges = append(res.CountChanges, CountChange{Path: path, Service: l.service, Operation: l.operation,
					Statement: l.statement, Target: l.target, CountA: float64(len(na)), CountB: float64(len(nb)), DurationMSA: sumMS(na), DurationMSB: sumMS(nb)})
			}
			k := min(len(na), len(nb))
			for i := 0; i < k; i++ {
				x, y := na[i], nb[i]
				npath := path
				if max(len(na), len(nb)) > 1 {
					npath = fmt.Sprintf("%s[%d]", path, i)
				}
				res.Matched++
				sa, sb := selfTime(x), selfTime(y)
				dd := DurationDiff{Path: npath, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
					SpanIDA: x.Span.SpanID.String(), SpanIDB: y.Span.SpanID.String(),
					DurationMSA: analyze.NS(x.Duration()), DurationMSB: analyze.NS(y.Duration()),
					SelfMSA: analyze.NS(sa), SelfMSB: analyze.NS(sb)}
				dd.DiffMS = dd.DurationMSB - dd.DurationMSA
				dd.SelfDiffMS = dd.SelfMSB - dd.SelfMSA
				dd.ChildrenDiffMS = dd.DiffMS - dd.SelfDiffMS
				if dd.DiffMS != 0 {
					res.Durations = append(res.Durations, dd)
				}
				fa, fb := analyze.Failed(x), analyze.Failed(y)
				if fa != fb {
					ed := ErrorDiff{Path: npath, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
						SpanIDA: x.Span.SpanID.String(), SpanIDB: y.Span.SpanID.String(), ErrorA: errorText(x), ErrorB: errorText(y)}
					if fa {
						ed.ErrorShareA = 1
					}
					if fb {
						ed.ErrorShareB = 1
					}
					res.Errors = append(res.Errors, ed)
				}
				if len(x.Children) > 0 || len(y.Children) > 0 {
					stack = append(stack, pair{a: x.Children, b: y.Children, path: npath})
				}
			}
		}
	}
	lim := opt.limit()
	sort.SliceStable(res.Durations, func(i, j int) bool {
		return math.Abs(res.Durations[i].DiffMS) > math.Abs(res.Durations[j].DiffMS)
	})
	res.Durations = capList(res.Durations, lim)
	sort.SliceStable(res.CountChanges, func(i, j int) bool {
		return math.Abs(res.CountChanges[i].CountB-res.CountChanges[i].CountA) > math.Abs(res.CountChanges[j].CountB-res.CountChanges[j].CountA)
	})
	res.CountChanges = capList(res.CountChanges, lim)
	sort.SliceStable(res.OnlyInOne, func(i, j int) bool { return res.OnlyInOne[i].DurationMS > res.OnlyInOne[j].DurationMS })
	res.OnlyInOne = capList(res.OnlyInOne, lim)
	res.Errors = capList(res.Errors, lim)
	res.Summary = summarize(res.A.DurationMS, res.B.DurationMS, res.OnlyInOne, res.CountChanges, res.Durations, res.Errors, false)
	nonNil(&res.OnlyInOne, &res.CountChanges, &res.Durations, &res.Errors)
	return res
}

func capList[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func nonNil(o *[]OnlyInOne, c *[]CountChange, d *[]DurationDiff, e *[]ErrorDiff) {
	if *o == nil {
		*o = []OnlyInOne{}
	}
	if *c == nil {
		*c = []CountChange{}
	}
	if *d == nil {
		*d = []DurationDiff{}
	}
	if *e == nil {
		*e = []ErrorDiff{}
	}
}

func fmtCount(f float64) string {
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

// summarize writes the headline sentences, biggest effect first.
func summarize(durA, durB float64, only []OnlyInOne, counts []CountChange, durs []DurationDiff, errs []ErrorDiff, groups bool) []string {
	out := []string{}
	what := "B took"
	if groups {
		what = "group B took (mean)"
	}
	if durA > 0 {
		out = append(out, fmt.Sprintf("%s %.1f ms vs %.1f ms (%+.1f ms, %.2fx)", what, durB, durA, durB-durA, durB/durA))
	}
	for i, c := range counts {
		if i == 3 {
			break
		}
		out = append(out, fmt.Sprintf("%s: %s → %s calls (%.1f ms → %.1f ms)", c.Path, fmtCount(c.CountA), fmtCount(c.CountB), c.DurationMSA, c.DurationMSB))
	}
	for i, o := range only {
		if i == 3 {
			break
		}
		side := "A"
		if o.Side == "b" {
			side = "B"
		}
		out = append(out, fmt.Sprintf("only in %s: %s (%s calls, %.1f ms)", side, o.Path, fmtCount(o.Count), o.DurationMS))
	}
	for i, d := range durs {
		if i == 3 {
			break
		}
		where := "its own time"
		if math.Abs(d.ChildrenDiffMS) > math.Abs(d.SelfDiffMS) {
			where = "its children"
		}
		out = append(out, fmt.Sprintf("%s: %.1f ms → %.1f ms (%+.1f ms, mostly %s)", d.Path, d.DurationMSA, d.DurationMSB, d.DiffMS, where))
	}
	for i, e := range errs {
		if i == 3 {
			break
		}
		switch {
		case groups:
			out = append(out, fmt.Sprintf("%s fails in %.0f%% of B vs %.0f%% of A", e.Path, 100*e.ErrorShareB, 100*e.ErrorShareA))
		case e.ErrorShareB > 0:
			out = append(out, fmt.Sprintf("%s fails only in B: %s", e.Path, e.ErrorB))
		default:
			out = append(out, fmt.Sprintf("%s fails only in A: %s", e.Path, e.ErrorA))
		}
	}
	return out
}

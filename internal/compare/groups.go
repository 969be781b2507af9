package compare

import (
	"math"
	"sort"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// GroupInfo describes one side of a group comparison.
type GroupInfo struct {
	Traces         int      `json:"traces"`
	MeanDurationMS float64  `json:"mean_duration_ms"`
	P50DurationMS  float64  `json:"p50_duration_ms"`
	ErrorShare     float64  `json:"error_share"` // share of traces whose root failed
	MeanSpanCount  float64  `json:"mean_span_count"`
	ExampleTraces  []string `json:"example_trace_ids"`
}

// PathStats aggregates the spans found at one path across a group.
type PathStats struct {
	Presence   float64 `json:"presence"`     // share of traces having it
	MeanCount  float64 `json:"mean_count"`   // spans per trace, over all traces
	MeanMS     float64 `json:"mean_ms"`      // per span
	P50MS      float64 `json:"p50_ms"`       // per span
	PerTraceMS float64 `json:"per_trace_ms"` // summed duration per trace
	SelfMS     float64 `json:"self_ms"`      // own time per trace
	ErrorShare float64 `json:"error_share"`  // failed spans / spans
}

// PathDiff is one path with both sides' statistics.
type PathDiff struct {
	Path      string     `json:"path"`
	Service   string     `json:"service"`
	Operation string     `json:"operation"`
	Statement string     `json:"statement,omitempty"`
	Target    string     `json:"target,omitempty"`
	A         *PathStats `json:"a,omitempty"`
	B         *PathStats `json:"b,omitempty"`
	DiffMS    float64    `json:"diff_ms"` // per-trace time, b - a
}

// GroupResult compares group A with group B.
type GroupResult struct {
	Mode         string        `json:"mode"` // "groups"
	A            GroupInfo     `json:"a"`
	B            GroupInfo     `json:"b"`
	OnlyInOne    []OnlyInOne   `json:"only_in_one"`
	CountChanges []CountChange `json:"count_changes"`
	Durations    []PathDiff    `json:"duration_diffs"`
	Errors       []ErrorDiff   `json:"error_diffs"`
	Summary      []string      `json:"summary"`
}

// GroupOptions tune a group comparison.
type GroupOptions struct {
	Options
	// Root picks the node each trace is compared from (for example the
	// endpoint's entry span); nil uses the trace's main root. Traces where
	// it returns nil are skipped.
	Root func(t *analyze.Trace) *analyze.Node
}

type agg struct {
	label
	path   string
	traces int
	spans  int
	failed int
	durs   []float64
	total  float64
	self   float64
}

type side struct {
	paths map[string]*agg
	info  GroupInfo
	durs  []float64
}

func collect(traces [][]model.Span, opt GroupOptions) side {
	s := side{paths: map[string]*agg{}}
	var spanSum, failed int
	for _, spans := range traces {
		t := analyze.NewTrace(spans)
		var root *analyze.Node
		if opt.Root != nil {
			root = opt.Root(t)
		} else {
			root = t.Root()
		}
		if root == nil {
			continue
		}
		s.info.Traces++
		if len(s.info.ExampleTraces) < 5 {
			s.info.ExampleTraces = append(s.info.ExampleTraces, t.ID.String())
		}
		s.durs = append(s.durs, analyze.NS(root.Duration()))
		if analyze.Failed(root) {
			failed++
		}
		seen := map[string]bool{}
		type item struct {
			n    *analyze.Node
			path string
		}
		stack := []item{{root, labelOf(root).String()}}
		for len(stack) > 0 {
			it := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			spanSum++
			a := s.paths[it.path]
			if a == nil {
				a = &agg{label: labelOf(it.n), path: it.path}
				s.paths[it.path] = a
			}
			if !seen[it.path] {
				seen[it.path] = true
				a.traces++
			}
			a.spans++
			d := analyze.NS(it.n.Duration())
			a.durs = append(a.durs, d)
			a.total += d
			a.self += analyze.NS(selfTime(it.n))
			if analyze.Failed(it.n) {
				a.failed++
			}
			for _, c := range it.n.Children {
				stack = append(stack, item{c, it.path + " > " + labelOf(c).String()})
			}
		}
	}
	if n := s.info.Traces; n > 0 {
		s.info.MeanDurationMS = mean(s.durs)
		s.info.P50DurationMS = quantile(s.durs, 0.5)
		s.info.ErrorShare = float64(failed) / float64(n)
		s.info.MeanSpanCount = float64(spanSum) / float64(n)
	}
	if s.info.ExampleTraces == nil {
		s.info.ExampleTraces = []string{}
	}
	return s
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// quantile sorts v in place.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

func (a *agg) stats(traces int) *PathStats {
	if a == nil || traces == 0 {
		return nil
	}
	return &PathStats{Presence: float64(a.traces) / float64(traces), MeanCount: float64(a.spans) / float64(traces),
		MeanMS: a.total / float64(a.spans), P50MS: quantile(a.durs, 0.5), PerTraceMS: a.total / float64(traces),
		SelfMS: a.self / float64(traces), ErrorShare: float64(a.failed) / float64(a.spans)}
}

// Groups compares two groups of traces. Every span is placed by its label
// path from the chosen root (no sibling order: a group has no "third
// call"), and the paths' per-trace counts, durations and error shares are
// compared.
func Groups(a, b [][]model.Span, opt GroupOptions) GroupResult {
	sa, sb := collect(a, opt), collect(b, opt)
	res := GroupResult{Mode: "groups", A: sa.info, B: sb.info}
	keys := map[string]bool{}
	for k := range sa.paths {
		keys[k] = true
	}
	for k := range sb.paths {
		keys[k] = true
	}
	for k := range keys {
		pa, pb := sa.paths[k], sb.paths[k]
		xa, xb := pa.stats(sa.info.Traces), pb.stats(sb.info.Traces)
		var l label
		if pa != nil {
			l = pa.label
		} else {
			l = pb.label
		}
		// A path absent from a side whose group is empty says nothing.
		if sa.info.Traces == 0 || sb.info.Traces == 0 {
			continue
		}
		switch {
		case xb == nil:
			res.OnlyInOne = append(res.OnlyInOne, OnlyInOne{Side: "a", Path: k, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
				Count: round1(xa.MeanCount), DurationMS: round1(xa.PerTraceMS), Failed: pa.failed})
			continue
		case xa == nil:
			res.OnlyInOne = append(res.OnlyInOne, OnlyInOne{Side: "b", Path: k, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
				Count: round1(xb.MeanCount), DurationMS: round1(xb.PerTraceMS), Failed: pb.failed})
			continue
		}
		lo, hi := math.Min(xa.MeanCount, xb.MeanCount), math.Max(xa.MeanCount, xb.MeanCount)
		if hi-lo >= 1 && hi >= 1.5*lo {
			res.CountChanges = append(res.CountChanges, CountChange{Path: k, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
				CountA: round1(xa.MeanCount), CountB: round1(xb.MeanCount), DurationMSA: round1(xa.PerTraceMS), DurationMSB: round1(xb.PerTraceMS)})
		}
		if d := xb.PerTraceMS - xa.PerTraceMS; d != 0 {
			res.Durations = append(res.Durations, PathDiff{Path: k, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
				A: xa, B: xb, DiffMS: d})
		}
		if math.Abs(xb.ErrorShare-xa.ErrorShare) >= 0.2 {
			res.Errors = append(res.Errors, ErrorDiff{Path: k, Service: l.service, Operation: l.operation, Statement: l.statement, Target: l.target,
				ErrorShareA: xa.ErrorShare, ErrorShareB: xb.ErrorShare})
		}
	}
	lim := opt.limit()
	sort.Slice(res.OnlyInOne, func(i, j int) bool {
		if res.OnlyInOne[i].DurationMS != res.OnlyInOne[j].DurationMS {
			return res.OnlyInOne[i].DurationMS > res.OnlyInOne[j].DurationMS
		}
		return res.OnlyInOne[i].Path < res.OnlyInOne[j].Path
	})
	sort.Slice(res.CountChanges, func(i, j int) bool {
		di := math.Abs(res.CountChanges[i].CountB - res.CountChanges[i].CountA)
		dj := math.Abs(res.CountChanges[j].CountB - res.CountChanges[j].CountA)
		if di != dj {
			return di > dj
		}
		return res.CountChanges[i].Path < res.CountChanges[j].Path
	})
	sort.Slice(res.Durations, func(i, j int) bool {
		di, dj := math.Abs(res.Durations[i].DiffMS), math.Abs(res.Durations[j].DiffMS)
		if di != dj {
			return di > dj
		}
		return res.Durations[i].Path < res.Durations[j].Path
	})
	sort.Slice(res.Errors, func(i, j int) bool {
		di := math.Abs(res.Errors[i].ErrorShareB - res.Errors[i].ErrorShareA)
		dj := math.Abs(res.Errors[j].ErrorShareB - res.Errors[j].ErrorShareA)
		if di != dj {
			return di > dj
		}
		return res.Errors[i].Path < res.Errors[j].Path
	})
	res.OnlyInOne = capList(res.OnlyInOne, lim)
	res.CountChanges = capList(res.CountChanges, lim)
	res.Durations = capList(res.Durations, lim)
	res.Errors = capList(res.Errors, lim)
	// The summary speaks in the trace-mode shape; convert the path diffs.
	dd := make([]DurationDiff, 0, len(res.Durations))
	for _, d := range res.Durations {
		dd = append(dd, DurationDiff{Path: d.Path, DurationMSA: round1(d.A.PerTraceMS), DurationMSB: round1(d.B.PerTraceMS), DiffMS: d.DiffMS,
			SelfDiffMS: d.B.SelfMS - d.A.SelfMS, ChildrenDiffMS: d.DiffMS - (d.B.SelfMS - d.A.SelfMS)})
	}
	res.Summary = summarize(res.A.MeanDurationMS, res.B.MeanDurationMS, res.OnlyInOne, res.CountChanges, dd, res.Errors, true)
	if res.Durations == nil {
		res.Durations = []PathDiff{}
	}
	var unused []DurationDiff
	nonNil(&res.OnlyInOne, &res.CountChanges, &unused, &res.Errors)
	return res
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

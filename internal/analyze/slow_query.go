package analyze

import "fmt"

// SlowQuery finds one database span that takes most of its service-entry
// span, or that runs far slower than its statement shape usually does.
type SlowQuery struct {
	MinDurationMS float64 `yaml:"min_duration_ms"` // absolute floor of the share rule
	MinShare      float64 `yaml:"min_share"`       // of the service-entry span, 0..1
	HistoryFactor float64 `yaml:"history_factor"`  // x usual p50 of the same shape
	// MinHistoryMS keeps a 0.2 ms lookup that took 0.8 ms from being news.
	MinHistoryMS      float64 `yaml:"min_history_ms"`
	MinHistorySamples int     `yaml:"min_history_samples"`
}

// NewSlowQuery returns the detector with shared/patterns.md defaults.
func NewSlowQuery() *SlowQuery {
	return &SlowQuery{MinDurationMS: 100, MinShare: 0.5, HistoryFactor: 3, MinHistoryMS: 20, MinHistorySamples: 10}
}

func init() { Register(func() Detector { return NewSlowQuery() }) }

// Kind implements Detector.
func (*SlowQuery) Kind() string { return "slow_query" }

// SlowQueryEvidence is the evidence of a slow_query finding.
type SlowQueryEvidence struct {
	Shape      string  `json:"shape"`
	Statement  string  `json:"statement"`
	DBSystem   string  `json:"db_system"`
	DurationMS float64 `json:"duration_ms"`
	Entry      SpanRef `json:"entry"`
	// SharePct is the query's share of its service-entry span.
	SharePct float64 `json:"share_pct"`
	// UsualMS is the usual (p50) duration of the shape when history knows it.
	UsualMS    float64 `json:"usual_ms,omitempty"`
	UsualP95MS float64 `json:"usual_p95_ms,omitempty"`
	// TimesUsual is DurationMS / UsualMS.
	TimesUsual float64 `json:"times_usual,omitempty"`
	// Rule is "share" or "history": which threshold fired.
	Rule string `json:"rule"`
}

// Detect implements Detector. Severity: critical when the query's
// critical-path time is ≥ 50 % of the trace and ≥ 500 ms, warning at ≥ 20 %
// or ≥ 200 ms, info otherwise (SeverityForImpact); a query that became ≥ 10x
// slower than usual is at least a warning.
func (d *SlowQuery) Detect(t *Trace, env *Env) []Finding {
	var hist History = NoHistory{}
	if env != nil && env.History != nil {
		hist = env.History
	}
	var out []Finding
	for _, n := range t.Nodes {
		if !IsDB(n) || n.Parent == nil {
			continue
		}
		entry := EntryOf(n.Parent)
		if entry == nil {
			continue
		}
		dur := n.Duration()
		durMS := NS(dur)
		share := 0.0
		if ed := entry.Duration(); ed > 0 {
			share = float64(min(dur, ed)) / float64(ed)
		}
		_, shape := CallTarget(t, n)
		system := DBSystem(n.Span)
		base, hasBase := hist.StatementDuration(system, shape)
		hasBase = hasBase && base.Count >= d.MinHistorySamples && base.P50MS > 0
		rule := ""
		switch {
		case durMS >= d.MinDurationMS && share >= d.MinShare:
			rule = "share"
		case hasBase && durMS >= d.HistoryFactor*base.P50MS && durMS >= d.MinHistoryMS:
			rule = "history"
		default:
			continue
		}
		crit := critUnder(t, n)
		impact := crit
		ev := SlowQueryEvidence{
			Shape: shape, Statement: clipText(DBStatement(n.Span), 2000), DBSystem: system, DurationMS: roundMS(dur),
			Entry: RefOf(t, entry), SharePct: float64(int64(share*1000+0.5)) / 10, Rule: rule,
		}
		if hasBase {
			ev.UsualMS, ev.UsualP95MS = base.P50MS, base.P95MS
			ev.TimesUsual = float64(int64(durMS/base.P50MS*10+0.5)) / 10
			// A fixed query still takes its usual time.
			impact = subSat(crit, uint64(base.P50MS*1e6))
		}
		sev := SeverityForImpact(impact, critTotal(t))
		if ev.TimesUsual >= 10 && sev.Rank() < SeverityWarning.Rank() {
			sev = SeverityWarning
		}
		title := fmt.Sprintf("%s query took %.0f ms, %.0f%% of %s", system, durMS, ev.SharePct, displayOp(entry))
		if hasBase {
			title += fmt.Sprintf(" (%.1fx its usual %.0f ms)", ev.TimesUsual, base.P50MS)
		}
		out = append(out, Finding{
			Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: []string{n.Span.SpanID.String()},
			ImpactMS: roundMS(impact), Evidence: ev,
			Fix: "EXPLAIN the statement " + clipText(shape, 120) + ": add or fix the index it needs, fetch fewer rows or columns, " +
				"and check for lock waits if the plan is fine.",
		})
	}
	return out
}

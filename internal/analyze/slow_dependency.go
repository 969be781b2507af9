package analyze

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// SlowDependency finds a leaf call (an external API, an uninstrumented
// service: no spans below it) that dominates its parent.
type SlowDependency struct {
	MinDurationMS float64 `yaml:"min_duration_ms"`
	MinShare      float64 `yaml:"min_share"` // of the parent, 0..1
}

// NewSlowDependency returns the detector with docs/patterns.md defaults.
func NewSlowDependency() *SlowDependency { return &SlowDependency{MinDurationMS: 500, MinShare: 0.5} }

func init() { Register(func() Detector { return NewSlowDependency() }) }

// Kind implements Detector.
func (*SlowDependency) Kind() string { return "slow_dependency" }

// SlowDependencyEvidence is the evidence of a slow_dependency finding.
type SlowDependencyEvidence struct {
	Peer       string  `json:"peer"`
	Operation  string  `json:"operation"`
	Call       SpanRef `json:"call"`
	Parent     SpanRef `json:"parent"`
	DurationMS float64 `json:"duration_ms"`
	SharePct   float64 `json:"share_pct"`
	// LooksLikeTimeout: the call failed with a timeout, or its duration sits
	// on a round timeout value (TimeoutMS).
	LooksLikeTimeout bool    `json:"looks_like_timeout"`
	TimeoutMS        float64 `json:"timeout_ms,omitempty"`
	Failed           bool    `json:"failed"`
}

// Detect implements Detector. Database statements are slow_query's.
// Severity by the call's critical-path time (SeverityForImpact), at least
// warning when it looks like a timeout.
func (d *SlowDependency) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	for _, n := range t.Nodes {
		if n.Parent == nil || len(n.Children) > 0 || !IsCall(n) || IsDB(n) {
			continue
		}
		dur, pd := n.Duration(), n.Parent.Duration()
		// Time the call spent queueing for a lock or a pool (its events or
		// attributes say so) is lock_contention's finding: judge the
		// dependency on the rest, or it is blamed for the queue in front of it.
		ws := spanWaits(n.Span)
		waited := min(waitedNS(ws), dur)
		if NS(dur-waited) < d.MinDurationMS || pd == 0 || float64(dur-waited) < d.MinShare*float64(pd) || IsLongPoll(n) {
			continue
		}
		peer, op := CallTarget(t, n)
		tmo, onRound := roundTimeout(dur)
		timeoutLike := (n.Span.StatusCode != model.StatusOK && IsTimeoutLike(n.Span)) || (onRound && Failed(n))
		ev := SlowDependencyEvidence{
			Peer: peer, Operation: op, Call: RefOf(t, n), Parent: RefOf(t, n.Parent), DurationMS: NS(dur),
			SharePct: sharePct(min(dur, pd), pd), LooksLikeTimeout: timeoutLike || onRound, Failed: Failed(n),
		}
		if onRound {
			ev.TimeoutMS = tmo
		}
		impact := critUnder(t, n)
		if w := waitsOnPath(t, n, ws); w < impact {
			impact -= w
		} else {
			impact = 0
		}
		sev := SeverityForImpact(impact, critTotal(t))
		if ev.LooksLikeTimeout && sev.Rank() < SeverityWarning.Rank() {
			sev = SeverityWarning
		}
		title := fmt.Sprintf("call to %s %s took %.0f ms, %.0f%% of %s", peer, opName(n, op), NS(dur), ev.SharePct, displayOp(n.Parent))
		fix := "Cache the answer, call it asynchronously or concurrently with other work, and give it a timeout that matches the caller's budget."
		if ev.LooksLikeTimeout {
			title += " (looks like a timeout)"
			fix = "The call hit a timeout: check " + peer + "'s health and latency, lower the timeout to fit the caller's budget, " +
				"and degrade gracefully (cached or default answer) instead of waiting."
		}
		out = append(out, Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: []string{n.Span.SpanID.String()},
			ImpactMS: roundMS(impact), Evidence: ev, Fix: fix})
	}
	return out
}

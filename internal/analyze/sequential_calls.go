package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// SequentialCalls finds calls to different targets that run one after
// another, back to back: if they are independent, running them
// concurrently would cost only the slowest. Repeated calls to one target
// are fan_out's and n_plus_one_query's.
type SequentialCalls struct {
	MinCalls int `yaml:"min_calls"`
	// MaxGapMS: each call starts within this of the previous call's end.
	MaxGapMS    float64 `yaml:"max_gap_ms"`
	MinTotalMS  float64 `yaml:"min_total_ms"`
	MinShare    float64 `yaml:"min_share"` // of the parent, 0..1
	IncludeDB   bool    `yaml:"include_db"`
	MinSavingMS float64 `yaml:"min_saving_ms"`
	// The finding is a warning only when the critical-path saving is at
	// least WarnMinShare of the request and WarnMinSavingMS; info else.
	WarnMinShare    float64 `yaml:"warn_min_share"`
	WarnMinSavingMS float64 `yaml:"warn_min_saving_ms"`
}

// NewSequentialCalls returns the detector with docs/patterns.md defaults.
// Database statements are left out by default: consecutive statements of
// one handler usually depend on each other (same transaction).
func NewSequentialCalls() *SequentialCalls {
	return &SequentialCalls{MinCalls: 3, MaxGapMS: 5, MinTotalMS: 100, MinShare: 0.5, MinSavingMS: 10,
		WarnMinShare: 0.5, WarnMinSavingMS: 200}
}

func init() { Register(func() Detector { return NewSequentialCalls() }) }

// Kind implements Detector.
func (*SequentialCalls) Kind() string { return "sequential_calls" }

// SequentialCall is one call of a sequence.
type SequentialCall struct {
	SpanRef
	Target      string  `json:"target"`
	TargetOp    string  `json:"target_operation"`
	GapBeforeMS float64 `json:"gap_before_ms"`
}

// SequentialCallsEvidence is the evidence of a sequential_calls finding.
type SequentialCallsEvidence struct {
	Parent   SpanRef          `json:"parent"`
	Calls    []SequentialCall `json:"calls"`
	SumMS    float64          `json:"sum_ms"`
	MaxMS    float64          `json:"max_ms"`
	SharePct float64          `json:"share_pct"`
	// SavingMS is what running the calls concurrently would save (sum - max).
	SavingMS float64 `json:"saving_ms"`
	// Unexplained: values later calls send that neither the parent's
	// request nor anything recorded before them shows; they likely come
	// from an earlier call's answer.
	Unexplained []SeqInput `json:"unexplained_inputs,omitempty"`
	// Elsewhere: in earlier traces of the operation each call ran at the
	// same time as the one before it, or before it: they do not wait for
	// each other's answers.
	Elsewhere bool `json:"ran_together_elsewhere,omitempty"`
}

// Detect implements Detector. A run ends where a call sends what an
// earlier call of the run answered (sequential_deps.go); what is left is
// a hypothesis (the trace records no answers the calls may still depend
// on): info, or warning when the saving is at least WarnMinShare of the
// request and WarnMinSavingMS and no call sends a value of unknown origin.
// The why chain ranks it below measured causes.
func (d *SequentialCalls) Detect(t *Trace, env *Env) []Finding {
	var hist History = NoHistory{}
	if env != nil && env.History != nil {
		hist = env.History
	}
	maxGap := uint64(d.MaxGapMS * 1e6)
	var out []Finding
	var chain []*Node
	var calls []*Node
	var deps *seqDeps
	for _, p := range t.Nodes {
		if len(p.Children) < d.MinCalls {
			continue
		}
		calls = calls[:0]
		for _, c := range p.Children {
			if !IsCall(c) || c.Span.Kind == model.KindProducer || c.Span.Attrs.Str("messaging.system") != "" {
				continue
			}
			if isStatement(c) && !d.IncludeDB {
				continue
			}
			calls = append(calls, c)
		}
		chain = chain[:0]
		flush := func() {
			if f, ok := d.finding(t, p, chain, deps); ok {
				out = append(out, f)
			}
		}
		for _, c := range calls {
			// The calls after a credential check wait for it by design
			// (SmartThings' bookie checks the OAuth token, then reads the
			// location): a check is never part of a parallelisable run.
			if isGateCall(t, c) {
				flush()
				chain = chain[:0]
				continue
			}
			if len(chain) > 0 {
				prev := chain[len(chain)-1]
				// Two calls in a row to one service are a loop or a
				// conversation (fan_out, n_plus_one_query), not this.
				ps, _ := CallTarget(t, prev)
				cs, _ := CallTarget(t, c)
				// Back to back within the clocks' tolerance: an SDK that
				// rounds to whole ms shows sequential calls overlapping by
				// up to a millisecond (timing.go).
				if c.Start()+timingTolerance(prev, c) >= prev.End() && subSat(c.Start(), prev.End()) <= maxGap && ps != cs {
					if deps == nil {
						deps = newSeqDeps(t, hist)
					}
					// A call that sends what an earlier call of the run
					// answered waits for it by need: the run ends there.
					if deps.answeredBy(p, chain, c) == nil {
						chain = append(chain, c)
						continue
					}
				}
				flush()
				chain = chain[:0]
			}
			chain = append(chain, c)
		}
		flush()
	}
	return out
}

// isStatement reports a database statement. Brave's MySQL and p6spy
// instrumentation mark theirs only with a sql.query tag: SmartThings'
// bookie sends them as CLIENT spans named "\n" whose remote service is
// bookie itself, so without the tag they were calls to bookie between its
// real calls.
func isStatement(c *Node) bool {
	_, ok := c.Span.Attrs.Get("sql.query")
	return ok || IsDB(c)
}

// gateWords are the words of a call that checks credentials or
// permissions (token, OAuth, login, permission endpoints); words starting
// with authenticat or authoriz count too. "authors" does not.
var gateWords = []string{"token", "tokens", "oauth", "auth", "authn", "authz", "login", "signin", "permission", "permissions"}

// isGateCall reports a call to a credential or permission check. It runs
// on every call of every trace, so it reads the strings in place.
func isGateCall(t *Trace, c *Node) bool {
	_, op := CallTarget(t, c)
	if hasGateWord(op) || hasGateWord(c.Span.Name) || hasGateWord(pathOf(c.Span)) {
		return true
	}
	// The callee's span names the endpoint when the client span does not
	// (Brave's client span is just "post").
	e := calleeEntry(c)
	return e != nil && (hasGateWord(e.Span.Name) || hasGateWord(pathOf(e.Span)))
}

// hasGateWord reports whether s holds one of gateWords as a word (runs of
// ASCII letters, any case).
func hasGateWord(s string) bool {
	isLetter := func(b byte) bool { return b|0x20 >= 'a' && b|0x20 <= 'z' }
	return eachRun(s, isLetter, func(w string) bool {
		for _, g := range gateWords {
			if len(w) == len(g) && strings.EqualFold(w, g) {
				return true
			}
		}
		for _, pre := range [...]string{"authenticat", "authoriz"} {
			if len(w) >= len(pre) && strings.EqualFold(w[:len(pre)], pre) {
				return true
			}
		}
		return false
	})
}

// pathOf is the URL or path a span carries, under the OTel names and
// Brave's http.path.
func pathOf(s *model.Span) string {
	return s.Attrs.Str("url.full", "http.url", "url.path", "http.target", "http.route", "http.path")
}

func (d *SequentialCalls) finding(t *Trace, p *Node, chain []*Node, deps *seqDeps) (Finding, bool) {
	if len(chain) < d.MinCalls {
		return Finding{}, false
	}
	targets := map[string]struct{}{}
	var sum, longest uint64
	for _, c := range chain {
		s, _ := CallTarget(t, c)
		targets[s] = struct{}{}
		sum += c.Duration()
		longest = max(longest, c.Duration())
	}
	if len(targets) < d.MinCalls || NS(sum) < d.MinTotalMS || p.Duration() == 0 ||
		float64(sum) < d.MinShare*float64(p.Duration()) {
		return Finding{}, false
	}
	saving := sum - longest
	if NS(saving) < d.MinSavingMS {
		return Finding{}, false
	}
	impact := subSat(critUnder(t, chain...), longest)
	ev := SequentialCallsEvidence{Parent: RefOf(t, p), SumMS: roundMS(sum), MaxMS: roundMS(longest),
		SharePct: sharePct(sum, p.Duration()), SavingMS: roundMS(saving)}
	ids := make([]string, len(chain))
	var unexplained []string
	if deps != nil {
		unexplained = deps.unexplained(p, chain)
	}
	var prevEnd uint64
	for i, c := range chain {
		s, o := CallTarget(t, c)
		sc := SequentialCall{SpanRef: RefOf(t, c), Target: s, TargetOp: o}
		if i > 0 {
			sc.GapBeforeMS = roundMS(subSat(c.Start(), prevEnd))
		}
		prevEnd = c.End()
		ev.Calls = append(ev.Calls, sc)
		ids[i] = spanIDOf(t, c)
		if unexplained != nil && unexplained[i] != "" {
			ev.Unexplained = append(ev.Unexplained, SeqInput{Call: sc.SpanRef, Target: s, Value: unexplained[i]})
		}
	}
	// Apps chain calls on purpose (the customer's address, then the
	// drivers near it, then routes to them). Detect split the run where a
	// call sends what an earlier one answered; most traces record no
	// answers, so what is left is a hypothesis. It is worth a warning only
	// when the possible saving is most of the request and no call sends a
	// value of unknown origin.
	sev := SeverityInfo
	var request uint64
	if r := t.Root(); r != nil {
		request = r.Duration()
	}
	if len(ev.Unexplained) == 0 && request > 0 && NS(impact) >= d.WarnMinSavingMS && float64(impact) >= d.WarnMinShare*float64(request) {
		sev = SeverityWarning
	}
	// Distinct targets in call order with their counts: whole names, and
	// a title that does not grow with the number of calls.
	var names []string
	count := map[string]int{}
	for _, c := range ev.Calls {
		if count[c.Target] == 0 {
			names = append(names, c.Target)
		}
		count[c.Target]++
	}
	for i, name := range names {
		if k := count[name]; k > 1 {
			names[i] = fmt.Sprintf("%s ×%d", name, k)
		}
	}
	title := fmt.Sprintf("if these %d calls are independent, running them together under %s would save ~%.0f ms: %s run one "+
		"after another (%.0f ms in sequence vs %.0f ms for the slowest)",
		len(chain), displayOp(p), NS(saving), strings.Join(names, ", "), NS(sum), NS(longest))
	if deps != nil && len(ev.Unexplained) == 0 {
		ev.Elsewhere = true
		for i := 1; i < len(chain) && ev.Elsewhere; i++ {
			ev.Elsewhere = deps.independent(p, chain[i-1], chain[i])
		}
	}
	if ev.Elsewhere {
		// The history is the service entry's (the Node app's GET /seq, not
		// its "request handler" span).
		title = fmt.Sprintf("these %d calls ran at the same time or in another order in earlier requests of %s, here one after "+
			"another under %s: running them together would save ~%.0f ms (%s: %.0f ms in sequence vs %.0f ms for the slowest)",
			len(chain), displayOp(EntryOf(p)), displayOp(p), NS(saving), strings.Join(names, ", "), NS(sum), NS(longest))
	}
	if len(ev.Unexplained) > 0 {
		// The Node app's chain: b's request carries after=x34, which only
		// a's answer can have held; the trace records no answers.
		u := ev.Unexplained[0]
		title = fmt.Sprintf("these %d calls under %s look chained: the call to %s sends %q, which neither the request nor "+
			"an earlier call shows, so it likely comes from an earlier answer; only if it does not would running them together "+
			"save ~%.0f ms (%s: %.0f ms in sequence vs %.0f ms for the slowest)",
			len(chain), displayOp(p), u.Target, u.Value, NS(saving), strings.Join(names, ", "), NS(sum), NS(longest))
	}
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids,
		ImpactMS: roundMS(impact), Evidence: ev,
		Fix: "If these calls do not need each other's results (check the code: a later call often takes an earlier answer as input), issue them concurrently (errgroup, CompletableFuture.allOf, " +
			"Promise.all, asyncio.gather) so the caller waits only for the slowest.",
	}, true
}

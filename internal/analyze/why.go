package analyze

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// maxDescent caps the "N % of that was …" sentences of a why chain.
const maxDescent = 4

// whyChain explains the trace in a few sentences, each with a number (the
// five whys, done by the machine): how long the request took, then down
// the critical path while one child holds most of the time, then the
// failure's origin when the request failed, then the finding that explains
// where the descent stopped and its fix.
func whyChain(t *Trace, findings []Finding, h History) []string {
	root := t.Root()
	if root == nil {
		return []string{}
	}
	if h == nil {
		h = NoHistory{}
	}
	crit := critTotals(t)
	var out []string
	first := fmt.Sprintf("%s took %s", nodeLabel(t, root), fmtDur(root.Duration()))
	if Failed(root) {
		if code, ok := HTTPStatus(root.Span); ok && code >= 400 {
			first += fmt.Sprintf(" and failed with HTTP %d", code)
		} else {
			first += " and failed"
		}
	}
	if d := t.Duration(); d > root.Duration()+root.Duration()/2 && d-root.Duration() >= 1e9 {
		first += fmt.Sprintf("; with its asynchronous work the trace spans %s", fmtDur(d))
	}
	out = append(out, first+".")

	// Descend: at each span, the child with most critical-path time, while
	// it holds at least half of its parent's.
	var path []*Node
	for cur := root; ; {
		var best *Node
		for _, c := range cur.Children {
			if best == nil || crit[c.Index] > crit[best.Index] {
				best = c
			}
		}
		if best == nil || crit[cur.Index] == 0 || float64(crit[best.Index]) < 0.5*float64(crit[cur.Index]) || crit[best.Index] < 1e6 {
			break
		}
		path = append(path, best)
		cur = best
	}
	// Say each hop once: a call whose callee's entry span holds nearly all
	// of it is named by the callee; keep service changes and the deepest
	// span, and only the last few of them.
	var steps []*Node
	for i, n := range path {
		if i+1 < len(path) && IsCall(n) && IsServiceEntry(path[i+1]) && float64(crit[path[i+1].Index]) >= 0.95*float64(crit[n.Index]) {
			continue
		}
		if i+1 < len(path) && n.Span.Service == path[i+1].Span.Service && !IsCall(n) && !IsServiceEntry(n) &&
			float64(crit[path[i+1].Index]) >= 0.95*float64(crit[n.Index]) {
			continue // an internal wrapper around the next span
		}
		steps = append(steps, n)
	}
	if len(steps) > maxDescent {
		steps = append(steps[:1:1], steps[len(steps)-(maxDescent-1):]...)
	}
	prev := root
	for _, n := range steps {
		share := 100 * float64(crit[n.Index]) / float64(max(crit[prev.Index], 1))
		s := fmt.Sprintf("%.0f %% of that (%s) was %s", math.Min(99, math.Floor(share)), fmtDur(crit[n.Index]), nodeLabel(t, n))
		if n == steps[len(steps)-1] {
			s += usualTime(n, h)
		}
		out = append(out, s+".")
		prev = n
	}
	if s := repeatedCallsStep(t, prev, crit); s != "" {
		out = append(out, s)
	}

	// A failed request: say where the error started.
	explained := map[string]bool{}
	var primary *Finding // whose culprit ends the chain
	for i, f := range findings {
		ev, ok := f.Evidence.(ErrorOriginEvidence)
		if !ok || !ev.RootFailed {
			continue
		}
		primary = &findings[i]
		where := ev.Origin.Service + " " + ev.Origin.Operation
		if n := nodeByHex(t, ev.Origin.SpanID); n != nil {
			where = nodeLabel(t, n)
		}
		s := "The error started in " + where
		typ := ev.ExceptionType
		if IsWrapperErrorType(typ) {
			typ = ""
		}
		if what := strings.Trim(typ+": "+model.Clip(ev.ExceptionMessage, 90), ": "); what != "" {
			s += ": " + what
		}
		if ev.PropagatedLayers > 0 {
			s += fmt.Sprintf(" (%d layers passed it up, %d re-wrapped it)", ev.PropagatedLayers, ev.RewrappedLayers)
		}
		out = append(out, s+".")
		explained[f.Kind] = true
		if f.Fix != "" {
			out = append(out, "Fix: "+f.Fix)
		}
		break
	}

	// The cause: the most severe, costliest finding about the spans where
	// the descent ended (or, failing that, the first finding).
	if f := causeFinding(t, findings, steps, explained); f != nil {
		s := "Cause: " + f.Title
		if isHypothesis(f) {
			s = "Possible cause: " + f.Title
		}
		if primary == nil {
			primary = f
		}
		if f.ImpactMS >= 1 {
			of := "the request"
			if f.ImpactMS*1e6 > float64(root.Duration()) {
				of = "end-to-end time"
			}
			if failureKinds[f.Kind] {
				// A failure's impact is the time its failed work took;
				// fixing the failure does not give that time back.
				s += fmt.Sprintf(" — the failed work took %s of %s", fmtDur(uint64(f.ImpactMS*1e6)), of)
			} else {
				s += fmt.Sprintf(" — %s of %s could be saved", fmtDur(uint64(f.ImpactMS*1e6)), of)
			}
		}
		out = append(out, s+".")
		if f.Fix != "" {
			out = append(out, "Fix: "+f.Fix)
		}
	}
	if primary != nil && primary.Culprit != nil && primary.Culprit.Service != "" {
		c := primary.Culprit
		out = append(out, fmt.Sprintf("Culprit: %s — %s", strings.TrimSpace(c.Service+" "+model.Clip(c.Operation, 80)),
			strings.TrimSuffix(c.Reason, ".")+"."))
	}
	return out
}

// repeatedCallsStep says where the time of n went when no one child holds
// most of it but calls to one target together do: the order service that
// calls the database's add_item_to_cart once per item, 118 ms each, spent
// its time in those calls, below any single finding's threshold. "" when
// no target's calls hold half of n's critical-path time.
func repeatedCallsStep(t *Trace, n *Node, crit []uint64) string {
	if crit[n.Index] == 0 {
		return ""
	}
	var best []*Node
	var bestNS uint64
	for _, g := range groupCallsByTarget(t, n, nil) {
		var sum uint64
		for _, c := range g {
			sum += crit[c.Index]
		}
		if len(g) >= 2 && sum > bestNS {
			best, bestNS = g, sum
		}
	}
	// Sub-millisecond time is not worth a sentence, as in the descent.
	if best == nil || float64(bestNS) < 0.5*float64(crit[n.Index]) || bestNS < 1e6 {
		return ""
	}
	how := "one after another"
	for i := 1; i < len(best); i++ {
		if best[i].Start()+timingTolerance(best[i-1], best[i]) < best[i-1].End() {
			how = "some at once"
			break
		}
	}
	svc, op := CallTarget(t, best[0])
	share := 100 * float64(bestNS) / float64(crit[n.Index])
	return fmt.Sprintf("%.0f %% of that (%s) was %d calls to %s %s, %s.", math.Min(99, math.Floor(share)), fmtDur(bestNS),
		len(best), svc, opName(best[0], op), how)
}

// failureKinds are the findings about a request's failure rather than its
// time.
var failureKinds = map[string]bool{"error_origin": true, "swallowed_error": true, "partial_failure": true, "poison_message": true}

// isHypothesis: findings whose cause the trace cannot prove. Calls in
// sequence may need each other's answers; only the code can tell.
func isHypothesis(f *Finding) bool { return f.Kind == "sequential_calls" }

// causeRank orders candidate causes: measured ones (with a critical-path
// time a fix would remove) first, then hypotheses, then findings that
// cost no request time (telemetry hygiene, work after the caller left).
func causeRank(f *Finding) int {
	switch {
	case isHypothesis(f):
		return 1
	case f.ImpactMS >= 1:
		return 0
	}
	return 2
}

func causeFinding(t *Trace, findings []Finding, steps []*Node, skip map[string]bool) *Finding {
	var candidates []*Finding
	for i := range findings {
		if !skip[findings[i].Kind] {
			candidates = append(candidates, &findings[i])
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	// A measured cause always beats a hypothesis; within a rank, a finding
	// about the spans where the descent ended beats the costliest one.
	sort.SliceStable(candidates, func(i, j int) bool { return causeRank(candidates[i]) < causeRank(candidates[j]) })
	// onPath reports a finding about the deepest step itself (exact) or
	// about a span above or below it.
	onPath := func(f *Finding, exact bool) bool {
		if len(steps) == 0 {
			return false
		}
		deepest := steps[len(steps)-1]
		for _, id := range f.SpanIDs {
			if n := nodeByHex(t, id); n != nil && (n == deepest || !exact && (IsAncestor(deepest, n) || IsAncestor(n, deepest))) {
				return true
			}
		}
		return false
	}
	// A finding about the span the time went to explains the time; one
	// about the layers above it (an entry that answered 200 over that
	// call's failure) explains what the caller got, not the wait.
	best := candidates[0]
pick:
	for _, exact := range []bool{true, false} {
		for _, f := range candidates {
			if causeRank(f) != causeRank(candidates[0]) {
				break
			}
			if onPath(f, exact) {
				best = f
				break pick
			}
		}
	}
	if len(skip) > 0 && best.ImpactMS < 1 {
		return nil // the failure is explained; a stray info finding is not a cause
	}
	return best
}

func nodeByHex(t *Trace, id string) *Node {
	sid, err := model.ParseSpanID(id)
	if err != nil {
		return nil
	}
	return t.ByID[sid]
}

// nodeLabel names a span for a sentence: "inventory GetStock", or for a
// call that reached no instrumented callee "checkout → stripe POST /v1/charges".
func nodeLabel(t *Trace, n *Node) string {
	if IsDB(n) {
		sys := DBSystem(n.Span)
		return fmt.Sprintf("one %s %s", sys, model.Clip(DBShape(n.Span), 80))
	}
	if IsCall(n) {
		return spanLabel(t, n)
	}
	return n.Span.Service + " " + model.Clip(displayOp(n), 80)
}

// usualTime compares a span with its usual duration when history knows it.
func usualTime(n *Node, h History) string {
	var b Baseline
	var ok bool
	if IsDB(n) {
		b, ok = h.StatementDuration(DBSystem(n.Span), DBShape(n.Span))
	} else {
		b, ok = h.OperationDuration(n.Span.Service, n.Span.Name)
	}
	if !ok || b.P50MS <= 0 {
		return ""
	}
	ratio := NS(n.Duration()) / b.P50MS
	if ratio < 2 {
		return fmt.Sprintf(", about its usual time (p50 %.0f ms)", b.P50MS)
	}
	return fmt.Sprintf(", %.0fx its usual time (p50 %.0f ms)", ratio, b.P50MS)
}

// critTotals returns, per node, the critical-path time spent in it and its
// descendants, in one pass over the path and one over the tree.
func critTotals(t *Trace) []uint64 {
	cp := t.CriticalPath()
	total := make([]uint64, len(t.Nodes))
	copy(total, cp.self)
	// Children before parents: walk in pre-order, then accumulate in reverse.
	order := make([]*Node, 0, len(t.Nodes))
	t.Walk(func(n *Node) { order = append(order, n) })
	for i := len(order) - 1; i >= 0; i-- {
		n := order[i]
		if n.Parent != nil && total[n.Index] > 0 {
			total[n.Parent.Index] += total[n.Index]
		}
	}
	return total
}

func fmtDur(ns uint64) string {
	switch {
	case ns >= 10e9:
		return fmt.Sprintf("%.0f s", float64(ns)/1e9)
	case ns >= 1e9:
		return fmt.Sprintf("%.1f s", float64(ns)/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.0f ms", float64(ns)/1e6)
	default:
		return fmt.Sprintf("%.2f ms", float64(ns)/1e6)
	}
}

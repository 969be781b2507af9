package analyze

import (
	"fmt"
	"math"

	"github.com/tracedx/tracedx/internal/model"
)

// whyChain explains the trace in a few sentences, each with a number: from
// the root, follow the critical path down while one child holds most of the
// time, then name the finding that explains where the descent stopped.
func whyChain(t *Trace, findings []Finding) []string {
	root := t.Root()
	if root == nil {
		return []string{}
	}
	crit := critTotals(t)
	var out []string
	first := fmt.Sprintf("%s %s took %s", root.Span.Service, root.Span.Name, fmtDur(root.Duration()))
	if root.Failed() {
		first += " and failed"
	}
	out = append(out, first+".")

	cur := root
	for steps := 0; steps < 5; steps++ {
		var best *Node
		for _, c := range cur.Children {
			if best == nil || crit[c] > crit[best] {
				best = c
			}
		}
		if best == nil || crit[cur] == 0 || float64(crit[best]) < 0.5*float64(crit[cur]) || crit[best] < 1e6 {
			break
		}
		share := 100 * float64(crit[best]) / float64(crit[cur])
		// A call and the server span it reached are one hop to a reader:
		// say it once.
		hop := (cur.Span.Kind == model.KindClient || cur.Span.Kind == model.KindProducer) && share >= 95
		if !hop {
			out = append(out, fmt.Sprintf("%.0f %% of that (%s) was %s %s.", math.Floor(share), fmtDur(crit[best]), best.Span.Service, best.Span.Name))
		}
		cur = best
	}
	// The findings are sorted most severe and costly first.
	if len(findings) > 0 {
		f := findings[0]
		s := fmt.Sprintf("Cause: %s", f.Title)
		if f.ImpactMS >= 1 {
			s += fmt.Sprintf(" — %s of the request could be saved", fmtDur(uint64(f.ImpactMS*1e6)))
		}
		out = append(out, s+".")
		if f.Fix != "" {
			out = append(out, "Fix: "+f.Fix)
		}
	}
	return out
}

// critTotals returns, per node, the critical-path time spent in it and its
// descendants, in one pass over the path and one over the tree.
func critTotals(t *Trace) map[*Node]uint64 {
	cp := t.CriticalPath()
	total := make(map[*Node]uint64, len(cp.self))
	for n, v := range cp.self {
		total[n] = v
	}
	// Children before parents: walk in pre-order, then accumulate in reverse.
	var order []*Node
	t.Walk(func(n *Node) { order = append(order, n) })
	for i := len(order) - 1; i >= 0; i-- {
		n := order[i]
		if n.Parent != nil {
			total[n.Parent] += total[n]
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

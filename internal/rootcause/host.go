package rootcause

import (
	"fmt"
	"sort"
	"strings"
)

// Time lost in front of a callee is the callee's by default: a delay on
// its link or in its accept queue. When the host of a caller is slow on
// the network (a saturated interface, a delay on everything it sends), all
// of that caller's calls wait longer, to every callee, while other callers
// of the same callees do not: then the time is the caller's.

// minEdgeCalls is the least calls on an edge in each window before its
// client-minus-server time is compared.
const minEdgeCalls = 5

// edgeRose reports whether the median client-minus-server time of an edge
// rose beyond ms rounding and a fifth of its usual value.
func (r *ranker) edgeRose(e edge) (base, inc float64, rose bool) {
	bs, is := r.b.edges[e], r.i.edges[e]
	if bs == nil || is == nil || len(bs.gapSamples) < minEdgeCalls || len(is.gapSamples) < minEdgeCalls {
		return 0, 0, false
	}
	base, inc = median(bs.gapSamples), median(is.gapSamples)
	return base, inc, inc-base > max(minGapMS, 0.2*base)
}

// hostEdges returns, per caller service, the edges whose lost time is
// charged to the caller: no other caller of the callee waits longer, and
// the caller waits longer on calls to two or more services or its own
// callers wait longer for it (one slow host explains both directions; a
// delay in front of the callee would not delay calls into the caller).
func (r *ranker) hostEdges() map[string][]edge {
	var edges []edge
	for e := range r.i.edges {
		edges = append(edges, e)
	}
	sort.Slice(edges, func(a, b int) bool { return edgeName(edges[a]) < edgeName(edges[b]) })
	rose := map[edge]bool{}
	byCaller := map[string]map[string]bool{} // caller service → callee services with a risen edge
	calledLate := map[string]bool{}          // services whose callers wait longer for them
	for _, e := range edges {
		if _, _, ok := r.edgeRose(e); ok {
			rose[e] = true
			if byCaller[e.caller.Service] == nil {
				byCaller[e.caller.Service] = map[string]bool{}
			}
			byCaller[e.caller.Service][e.callee.Service] = true
			calledLate[e.callee.Service] = true
		}
	}
	out := map[string][]edge{}
	for _, e := range edges {
		s := e.caller.Service
		if !rose[e] || (len(byCaller[s]) < 2 && !calledLate[s]) {
			continue
		}
		othersRose := false
		for _, o := range edges {
			if o.callee.Service == e.callee.Service && o.caller.Service != s && rose[o] {
				othersRose = true
				break
			}
		}
		if !othersRose {
			out[s] = append(out[s], e)
		}
	}
	return out
}

func edgeName(e edge) string {
	return e.caller.Service + "\x00" + e.caller.Operation + "\x00" + e.callee.Service + "\x00" + e.callee.Operation
}

// moveHostTime charges the rises of the host edges to their callers.
func (r *ranker) moveHostTime(hosts map[string][]edge, cpRise, offRise map[Key]float64) {
	for _, list := range hosts {
		for _, e := range list {
			cp := r.rise(func(w *window) float64 { return r.edgeStat(w, e).cpFront })
			off := r.rise(func(w *window) float64 { return r.edgeStat(w, e).selfFront })
			cpRise[e.callee] -= cp
			offRise[e.callee] -= off
			cpRise[e.caller] += cp
			offRise[e.caller] += off
		}
	}
}

func (r *ranker) edgeStat(w *window, e edge) *edgeStat {
	if s := w.edges[e]; s != nil {
		return s
	}
	return &edgeStat{}
}

// hostEvidence describes the calls of svc charged to its host.
func (r *ranker) hostEvidence(svc string, list []edge) Evidence {
	var base, inc []float64
	var callees []string
	seen := map[string]bool{}
	var added float64
	for _, e := range list {
		base = append(base, r.edgeStat(r.b, e).gapSamples...)
		inc = append(inc, r.edgeStat(r.i, e).gapSamples...)
		added += r.rise(func(w *window) float64 { return r.edgeStat(w, e).cpFront })
		if !seen[e.callee.Service] {
			seen[e.callee.Service] = true
			callees = append(callees, e.callee.Service)
		}
	}
	b, i := median(base), median(inc)
	return Evidence{Kind: KindHostDelay, Baseline: fp(b), Incident: fp(i), AddedMS: fp(added), Count: ip(len(callees)),
		Text: fmt.Sprintf("calls from %s to %s wait %.1f ms more outside their server spans (p50 %.1f → %.1f ms) while other callers of %[2]s do not: the time is lost on %[1]s's host or its network",
			svc, strings.Join(callees, ", "), i-b, b, i)}
}

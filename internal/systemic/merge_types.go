package systemic

import "time"

// typesSeen is what one node knows of exception types: those it saw, and
// those it saw for the first time lately.
type typesSeen struct {
	seen map[[2]string]time.Time
	news map[[2]string]newType
}

// judgeNewTypes reports an exception type as new when it is new to the
// cluster: some node saw it for the first time lately (the earliest such
// sighting speaks) and no other node saw it within ErrorTypeMemory before,
// nor after without finding it new (it knew it already). A node keeps
// its new types for six evaluations, so the owner of the key sees them.
func (d *Detector) judgeNewTypes(now time.Time, m *merged, add func(Finding, time.Duration)) {
	keep := now.Add(-6 * d.cfg.EvalInterval)
	kept := d.newTypes[:0]
	for _, nt := range d.newTypes {
		if !nt.r.t.Before(keep) {
			kept = append(kept, nt)
		}
	}
	d.newTypes = kept
	nodes := []typesSeen{{seen: d.errTypes, news: map[[2]string]newType{}}}
	for _, nt := range d.newTypes {
		nodes[0].news[[2]string{nt.service, nt.typ}] = nt
	}
	for _, p := range m.peers {
		n := typesSeen{seen: make(map[[2]string]time.Time, len(p.ErrorTypes)), news: map[[2]string]newType{}}
		for _, e := range p.ErrorTypes {
			n.seen[[2]string{e.Service, e.Type}] = e.Last
		}
		for _, e := range p.NewTypes {
			if r := refsOf([]RefShare{e.RefShare}); len(r) == 1 {
				n.news[[2]string{e.Service, e.Type}] = newType{service: e.Service, op: e.Operation, typ: e.Type, msg: e.Message, r: r[0]}
			}
		}
		nodes = append(nodes, n)
	}
	first := map[[2]string]newType{}
	for _, n := range nodes {
		for k, nt := range n.news {
			if f, ok := first[k]; !ok || nt.r.t.Before(f.r.t) {
				first[k] = nt
			}
		}
	}
	for k, nt := range first {
		known := false
		for _, n := range nodes {
			if _, isNew := n.news[k]; isNew {
				continue
			}
			if last, ok := n.seen[k]; ok && nt.r.t.Sub(last) < d.cfg.ErrorTypeMemory {
				known = true
				break
			}
		}
		if !known {
			add(newErrorType(nt), d.cfg.ErrorWindow)
		}
	}
}

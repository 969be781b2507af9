package systemic

import (
	"sort"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Culprits of cross-trace findings: the place to fix, which is often not
// the endpoint where the pattern shows. What they need beyond the windows
// (where errors start, who calls whom) is learnt from the whole traces
// ObserveTrace sees, the needed ones and the uniform sample; it is not
// snapshotted: after a restart a culprit falls back to the finding's own
// endpoint until traces have been seen again.

// originCap bounds the counts of one entry operation's error origins:
// past it they are halved, so recent failures outweigh old ones.
const originCap = 200

// observeCulprits learns, from one whole trace, where its errors start
// (per failing entry span on the way up) and which operation calls each
// service. Called with d.mu held.
func (d *Detector) observeCulprits(spans []model.Span) {
	byID := d.spanIndex(spans)
	parent := func(i int) (int, bool) {
		s := &spans[i]
		if s.ParentSpanID.IsZero() {
			return 0, false
		}
		p, ok := byID[s.ParentSpanID]
		return p, ok && p != i
	}
	var failedChild []bool
	for i := range spans {
		s := &spans[i]
		if s.Kind == model.KindServer || s.Kind == model.KindConsumer {
			if p, ok := parent(i); ok && spans[p].Service != s.Service {
				if d.callers == nil {
					d.callers = map[string]opKey{}
				}
				d.callers[s.Service] = opKey{spans[p].Service, spans[p].Name}
			}
		}
		if !failed(s) {
			continue
		}
		if failedChild == nil {
			failedChild = make([]bool, len(spans))
		}
		if p, ok := parent(i); ok {
			failedChild[p] = true
		}
	}
	if failedChild == nil {
		return
	}
	for i := range spans {
		if !failed(&spans[i]) || failedChild[i] {
			continue
		}
		origin := opKey{spans[i].Service, spans[i].Name}
		// Credit every failing entry span on the way up; the walk is
		// bounded in case of a parent cycle.
		for j, steps := i, 0; steps < len(spans); steps++ {
			s := &spans[j]
			if failed(s) && (s.ParentSpanID.IsZero() || s.Kind == model.KindServer || s.Kind == model.KindConsumer) {
				d.creditOrigin(opKey{s.Service, s.Name}, origin)
			}
			p, ok := parent(j)
			if !ok {
				break
			}
			j = p
		}
	}
}

// spanIndex maps span ids to their index in spans, in a map reused from
// trace to trace (observeTrace runs for many of them).
func (d *Detector) spanIndex(spans []model.Span) map[model.SpanID]int {
	if d.idScratch == nil {
		d.idScratch = make(map[model.SpanID]int, len(spans))
	}
	clear(d.idScratch)
	for i := range spans {
		d.idScratch[spans[i].SpanID] = i
	}
	return d.idScratch
}

func (d *Detector) creditOrigin(entry, origin opKey) {
	if d.origins == nil {
		d.origins = map[opKey]map[opKey]float64{}
	}
	m := d.origins[entry]
	if m == nil {
		m = map[opKey]float64{}
		d.origins[entry] = m
	}
	m[origin]++
	var total float64
	for _, v := range m {
		total += v
	}
	if total > originCap {
		for k, v := range m {
			if v /= 2; v < 0.5 {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
	}
}

// errorCulprit names where the errors of the entries start: the origin
// seen most often under them (origins counts them per entry), or the
// entry itself when no whole failing trace was seen.
func errorCulprit(origins map[opKey]map[opKey]float64, entries []opKey, what string) *analyze.Culprit {
	merged := map[opKey]float64{}
	var total float64
	for _, e := range entries {
		for o, v := range origins[e] {
			merged[o] += v
			total += v
		}
	}
	keys := make([]opKey, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if merged[keys[i]] != merged[keys[j]] {
			return merged[keys[i]] > merged[keys[j]]
		}
		return keys[i].service+keys[i].op < keys[j].service+keys[j].op
	})
	if len(keys) == 0 {
		e := entries[0]
		return &analyze.Culprit{Service: e.service, Operation: e.op,
			Reason: sprintf("%s fails itself as far as the traces seen show; open an example trace for the failing span", what)}
	}
	o := keys[0]
	return &analyze.Culprit{Service: o.service, Operation: o.op,
		Reason: sprintf("the errors of %s start in %s %s in %.0f%% of the failing traces seen (the deepest failing span whose children did not fail)",
			what, o.service, o.op, 100*merged[o]/total)}
}

// callerOf returns the operation last seen calling service.
func (d *Detector) callerOf(service string) (opKey, bool) {
	k, ok := d.callers[service]
	return k, ok
}

func endpointCulprit(k opKey, reason string) *analyze.Culprit {
	return &analyze.Culprit{Service: k.service, Operation: k.op, Reason: reason}
}

// selfMark is an entry span of a whole trace that became a latency sample,
// slow or normal.
type selfMark struct {
	span int
	slow bool
}

// selfAgg sums the self time one operation spends under an entry operation
// in its slow and in its normal samples.
type selfAgg struct {
	slow, normal float64 // ms
}

// selfCounts is the key under which an entry's sample counts are kept.
var selfCounts = opKey{service: "\x00samples"}

// selfCap bounds the samples behind an entry's self times: past it they
// are halved, so recent samples outweigh old ones.
const selfCap = 400

// learnSelfTimes adds, for each marked entry span, the self time of every
// operation in its subtree (time no child covers; a client span's time
// outside its server child belongs to the callee, in front of which it was
// lost). Called with d.mu held.
func (d *Detector) learnSelfTimes(spans []model.Span, marks []selfMark) {
	if len(marks) == 0 {
		return
	}
	byID := d.spanIndex(spans)
	children := make([][]int, len(spans))
	for i := range spans {
		if p, ok := byID[spans[i].ParentSpanID]; ok && p != i && !spans[i].ParentSpanID.IsZero() {
			children[p] = append(children[p], i)
		}
	}
	self := make([]float64, len(spans))
	key := make([]opKey, len(spans))
	for i := range spans {
		s := &spans[i]
		kids := children[i]
		sort.Slice(kids, func(a, b int) bool { return spans[kids[a]].StartUnixNano < spans[kids[b]].StartUnixNano })
		var covered uint64
		cursor, end := s.StartUnixNano, s.EndUnixNano
		key[i] = opKey{s.Service, s.Name}
		for _, c := range kids {
			cs := &spans[c]
			if lo, hi := max(cs.StartUnixNano, cursor), min(cs.EndUnixNano, end); hi > lo {
				covered += hi - lo
				cursor = hi
			}
			if s.Kind == model.KindClient && cs.Service != s.Service && (cs.Kind == model.KindServer || cs.Kind == model.KindConsumer) {
				key[i] = opKey{cs.Service, cs.Name}
			}
		}
		if end > s.StartUnixNano+covered {
			self[i] = float64(end-s.StartUnixNano-covered) / 1e6
		}
	}
	if d.selfs == nil {
		d.selfs = map[opKey]map[opKey]*selfAgg{}
	}
	for _, m := range marks {
		e := &spans[m.span]
		aggs := d.selfs[opKey{e.Service, e.Name}]
		if aggs == nil {
			aggs = map[opKey]*selfAgg{}
			d.selfs[opKey{e.Service, e.Name}] = aggs
		}
		stack := []int{m.span}
		for steps := 0; len(stack) > 0 && steps < len(spans); steps++ {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			stack = append(stack, children[i]...)
			a := aggs[key[i]]
			if a == nil {
				a = &selfAgg{}
				aggs[key[i]] = a
			}
			if m.slow {
				a.slow += self[i]
			} else {
				a.normal += self[i]
			}
		}
		n := aggs[selfCounts]
		if n == nil {
			n = &selfAgg{}
			aggs[selfCounts] = n
		}
		if m.slow {
			n.slow++
		} else {
			n.normal++
		}
		if n.slow+n.normal > selfCap {
			for _, a := range aggs {
				a.slow /= 2
				a.normal /= 2
			}
		}
	}
}

// latencyCulprit names the operation under the entry k whose self time is
// larger in its slow samples than in its normal ones by the most (aggs:
// the self times under k), or k itself when too few whole traces were
// seen.
func latencyCulprit(k opKey, aggs map[opKey]*selfAgg) *analyze.Culprit {
	n := aggs[selfCounts]
	if n == nil || n.slow < 3 || n.normal < 3 {
		return endpointCulprit(k, "the endpoint whose p95 rose; too few whole traces were seen to name the operation inside it (GET /api/v1/rootcause over the window does)")
	}
	var best opKey
	var bestRise float64
	keys := make([]opKey, 0, len(aggs))
	for o := range aggs {
		if o != selfCounts {
			keys = append(keys, o)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].service+"\x00"+keys[i].op < keys[j].service+"\x00"+keys[j].op })
	for _, o := range keys {
		a := aggs[o]
		if rise := a.slow/n.slow - a.normal/n.normal; rise > bestRise {
			best, bestRise = o, rise
		}
	}
	if bestRise <= 0 {
		return endpointCulprit(k, "the endpoint whose p95 rose; no operation inside it takes longer in the slow requests")
	}
	a := aggs[best]
	return &analyze.Culprit{Service: best.service, Operation: best.op,
		Reason: sprintf("in the slow requests of %s %s, %s %s takes %.1f ms of its own time against %.1f ms in the usual ones, the largest rise inside the endpoint",
			k.service, k.op, best.service, best.op, a.slow/n.slow, a.normal/n.normal)}
}

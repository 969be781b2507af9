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
	byID := make(map[model.SpanID]int, len(spans))
	for i := range spans {
		byID[spans[i].SpanID] = i
	}
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
// seen most often under them, or the entry itself when no whole failing
// trace was seen.
func (d *Detector) errorCulprit(entries []opKey, what string) *analyze.Culprit {
	merged := map[opKey]float64{}
	var total float64
	for _, e := range entries {
		for o, v := range d.origins[e] {
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

package systemic

import (
	"maps"
	"sort"
	"time"
)

// RootShare holds a node's traces of one flow (trace root): its
// baseline and its windows.
type RootShare struct {
	Service   string    `json:"service"`
	Operation string    `json:"op"`
	Created   time.Time `json:"created"`
	// BaseSeconds is the (decayed) time the baseline covers.
	BaseSeconds float64     `json:"base_s"`
	Base        WindowShare `json:"base"`
	Throughput  WindowShare `json:"throughput"`
	Missing     WindowShare `json:"missing"`
	Spans       WindowShare `json:"spans"`
	// WindowsFrom is when the node's windows restarted empty after a long
	// downtime (zero: they did not).
	WindowsFrom time.Time  `json:"windows_from,omitzero"`
	Recent      []RefShare `json:"recent,omitempty"`
}

// WindowShare is the sum of a flow's traces over a window or baseline.
type WindowShare struct {
	Traces float64 `json:"n"`
	Spans  float64 `json:"spans"`
	// Versions holds the traces and spans per "service version".
	Versions map[string][2]float64 `json:"versions,omitempty"`
	// Services counts the traces each service appears in.
	Services map[string]float64 `json:"services,omitempty"`
}

// rootView is what evalRoots judges of one flow: one node's root series,
// or the sum of every node's.
type rootView struct {
	key                       opKey
	created, windowsFrom      time.Time
	baseSec, baseRate         float64
	base                      *bucket
	throughput, missing, span *bucket
	recent                    []ref
}

// localRoots are this node's flows at now, sorted.
func (d *Detector) localRoots(now time.Time) []rootView {
	out := make([]rootView, 0, len(d.roots))
	for k, s := range d.roots {
		v := rootView{key: k, created: s.created, windowsFrom: d.windowsFrom, baseSec: s.baseSec, base: &s.base,
			throughput: d.window(s, now, d.cfg.ThroughputWindow), missing: d.window(s, now, d.cfg.MissingWindow),
			span: d.window(s, now, d.cfg.SpanWindow), recent: s.recent}
		if s.baseSec > 0 {
			v.baseRate = s.base.n / s.baseSec
		}
		out = append(out, v)
	}
	sortRoots(out)
	return out
}

func sortRoots(vs []rootView) {
	sort.Slice(vs, func(i, j int) bool { return vs[i].key.service+vs[i].key.op < vs[j].key.service+vs[j].key.op })
}

func (v *rootView) share() RootShare {
	r := RootShare{Service: v.key.service, Operation: v.key.op, Created: v.created, BaseSeconds: v.baseSec,
		Base: windowShare(v.base), Throughput: windowShare(v.throughput), Missing: windowShare(v.missing), Spans: windowShare(v.span),
		WindowsFrom: v.windowsFrom}
	for _, x := range v.recent {
		r.Recent = append(r.Recent, RefShare{Trace: x.trace.String(), Span: x.span.String(), Time: x.t})
	}
	return r
}

func windowShare(b *bucket) WindowShare {
	w := WindowShare{Traces: b.n, Spans: b.spans}
	w.Versions, w.Services = bucketMixes(b)
	return w
}

// bucketMixes copies a bucket's traces and spans per version and its
// traces per service, nil when empty; shares and snapshots carry them.
func bucketMixes(b *bucket) (versions map[string][2]float64, services map[string]float64) {
	if len(b.versions) > 0 {
		versions = make(map[string][2]float64, len(b.versions))
		for k, v := range b.versions {
			versions[k] = [2]float64{v.n, v.spans}
		}
	}
	if len(b.services) > 0 {
		services = maps.Clone(b.services)
	}
	return versions, services
}

// addWindow adds w to b.
func addWindow(b *bucket, w WindowShare) {
	src := bucket{n: w.Traces, spans: w.Spans, services: w.Services}
	if len(w.Versions) > 0 {
		src.versions = make(map[string]*vstat, len(w.Versions))
		for k, v := range w.Versions {
			src.versions[k] = &vstat{n: v[0], spans: v[1]}
		}
	}
	addBucket(b, &src, 1)
}

// mergeRoots sums the flows of every node: traces and baselines add up,
// the baseline covers the time of the node that saw the flow first (as
// one node would have: the baselines of the others cover their part of
// it) and the flow is as old as that node's series; the windows are fresh
// when every node's are.
func mergeRoots(local []rootView, peers []Share) []rootView {
	at := map[opKey]int{}
	var out []rootView
	view := func(k opKey) *rootView {
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, rootView{key: k, base: &bucket{}, throughput: &bucket{}, missing: &bucket{}, span: &bucket{}})
		}
		return &out[i]
	}
	join := func(v *rootView, created, windowsFrom time.Time, baseSec float64, recent []ref) {
		if v.created.IsZero() || created.Before(v.created) {
			v.created = created
		}
		if windowsFrom.After(v.windowsFrom) {
			v.windowsFrom = windowsFrom
		}
		v.baseSec = max(v.baseSec, baseSec)
		v.recent = append(v.recent, recent...)
	}
	for _, l := range local {
		v := view(l.key)
		for _, p := range []struct{ dst, src *bucket }{{v.base, l.base}, {v.throughput, l.throughput}, {v.missing, l.missing}, {v.span, l.span}} {
			addBucket(p.dst, p.src, 1)
		}
		join(v, l.created, l.windowsFrom, l.baseSec, l.recent)
	}
	for _, p := range peers {
		for _, r := range p.Roots {
			v := view(opKey{r.Service, r.Operation})
			addWindow(v.base, r.Base)
			addWindow(v.throughput, r.Throughput)
			addWindow(v.missing, r.Missing)
			addWindow(v.span, r.Spans)
			join(v, r.Created, r.WindowsFrom, r.BaseSeconds, refsOf(r.Recent))
		}
	}
	for i := range out {
		rs := out[i].recent
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].t.Before(rs[b].t) })
		if len(rs) > 3 {
			out[i].recent = rs[len(rs)-3:]
		}
		if out[i].baseSec > 0 {
			out[i].baseRate = out[i].base.n / out[i].baseSec
		}
	}
	sortRoots(out)
	return out
}

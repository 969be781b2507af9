package rootcause

import (
	"sort"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Key is one place to blame: a service and one of its operations (span
// names).
type Key struct {
	Service   string
	Operation string
}

// keyStat sums what one window says about a key. Times are totals over
// the window's traces in ms; divide by the trace count for means.
type keyStat struct {
	// cpOwn is critical-path time in the key's own spans, cpFront the
	// critical-path time of client spans calling the key that their server
	// span does not cover (network, queue or accept backlog in front of it).
	cpOwn, cpFront float64
	// selfOwn and selfFront are the same over every span, on the critical
	// path or not, so a fault on a parallel branch with slack still shows.
	selfOwn, selfFront float64
	// ownSamples are per-trace critical-path self times (traces where the
	// key is on the path); gapSamples are client-minus-server durations per
	// call, which no clock skew between the two hosts can distort.
	ownSamples, gapSamples []float64
	// presence counts traces holding a span of the key; origins traces
	// whose error started in it.
	presence, origins int
	// timeouts counts, of origins, traces where a caller's timeout failed
	// while this operation was still working: the error is reported by the
	// caller and started here.
	timeouts  int
	exception string
}

// edge is a call from an operation of one service to an operation of
// another: where time in front of a callee was lost.
type edge struct {
	caller Key // the calling service and its entry operation
	callee Key
}

// edgeStat is the time in front of the callee on one edge: on the
// critical path, on all calls, and the client-minus-server gap per call.
type edgeStat struct {
	cpFront, selfFront float64
	gapSamples         []float64
}

// traceRec is what the ranking keeps of one trace for examples and the
// "slow traces" figures.
type traceRec struct {
	id      string
	cpMS    float64
	failed  bool
	svcCP   map[string]float64
	origins map[string]bool
}

// window is the digest of one side (baseline or incident).
type window struct {
	traces []traceRec
	keys   map[Key]*keyStat
	cpMS   float64 // total critical-path time
	failed int
	edges  map[edge]*edgeStat
	// strata are the same digests per entry endpoint (root service and
	// span name), so a shift in the mix of requests between the windows
	// is not mistaken for a change inside them.
	strata map[string]*window
}

func newWindow() *window {
	return &window{keys: map[Key]*keyStat{}, edges: map[edge]*edgeStat{}, strata: map[string]*window{}}
}

func (w *window) edge(e edge) *edgeStat { return entry(w.edges, e) }

// entry returns m[k], adding a zero value first when it is missing.
func entry[K comparable, V any](m map[K]*V, k K) *V {
	v := m[k]
	if v == nil {
		v = new(V)
		m[k] = v
	}
	return v
}

// edgeOf is the edge of a client span calling another service: the caller
// is named by the entry span (server, consumer or root) above the call.
func edgeOf(n, callee *analyze.Node) edge {
	e := edge{callee: Key{callee.Span.Service, callee.Span.Name}, caller: Key{Service: n.Span.Service, Operation: n.Span.Name}}
	for p := n.Parent; p != nil && p.Span.Service == n.Span.Service; p = p.Parent {
		e.caller.Operation = p.Span.Name
		if p.Span.Kind == model.KindServer || p.Span.Kind == model.KindConsumer {
			break
		}
	}
	return e
}

// merge adds the digest of src into w.
func (w *window) merge(src *window) {
	for k, s := range src.keys {
		d := w.stat(k)
		d.cpOwn += s.cpOwn
		d.cpFront += s.cpFront
		d.selfOwn += s.selfOwn
		d.selfFront += s.selfFront
		d.ownSamples = append(d.ownSamples, s.ownSamples...)
		d.gapSamples = append(d.gapSamples, s.gapSamples...)
		d.presence += s.presence
		d.origins += s.origins
		d.timeouts += s.timeouts
		if d.exception == "" {
			d.exception = s.exception
		}
	}
	for e, s := range src.edges {
		d := w.edge(e)
		d.cpFront += s.cpFront
		d.selfFront += s.selfFront
		d.gapSamples = append(d.gapSamples, s.gapSamples...)
	}
	w.traces = append(w.traces, src.traces...)
	w.cpMS += src.cpMS
	w.failed += src.failed
}

func (w *window) stat(k Key) *keyStat { return entry(w.keys, k) }

func ms(ns uint64) float64 { return float64(ns) / 1e6 }

// entryOf returns the spans of the subtree under the first span of the
// endpoint (service, operation), re-rooted there, or the whole trace when
// no endpoint is asked for. ok is false when the trace lacks the endpoint.
func entryOf(spans []model.Span, service, operation string) ([]model.Span, bool) {
	if service == "" {
		return spans, true
	}
	t := analyze.NewTrace(spans)
	var entry *analyze.Node
	for _, n := range t.Nodes {
		if n.Span.Service == service && (operation == "" || n.Span.Name == operation) &&
			(entry == nil || n.Start() < entry.Start()) {
			entry = n
		}
	}
	if entry == nil {
		return nil, false
	}
	var out []model.Span
	stack := []*analyze.Node{entry}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		s := *n.Span
		if n == entry {
			s.ParentSpanID = model.SpanID{}
		}
		out = append(out, s)
		stack = append(stack, n.Children...)
	}
	return out, true
}

// frontOf returns the callee server span of a client span, when the call
// went to an instrumented service: time in the client span outside its
// server child belongs in front of that callee.
func frontOf(n *analyze.Node) *analyze.Node {
	if n.Span.Kind != model.KindClient && n.Span.Kind != model.KindProducer {
		return nil
	}
	for _, c := range n.Children {
		if c.Span.Kind == model.KindServer || c.Span.Kind == model.KindConsumer ||
			(c.Span.Service != n.Span.Service && c.Span.Service != "") {
			return c
		}
	}
	return nil
}

// blame returns the key a span's own time is charged to and whether that
// time sits in front of a callee.
func blame(n *analyze.Node) (Key, bool) {
	if c := frontOf(n); c != nil && n.Span.Kind == model.KindClient {
		return Key{c.Span.Service, c.Span.Name}, true
	}
	return Key{n.Span.Service, n.Span.Name}, false
}

// uncovered is the part of n's duration no child covers.
func uncovered(n *analyze.Node) uint64 {
	lo, hi := n.Start(), n.End()
	if hi <= lo {
		return 0
	}
	var covered uint64
	cursor := lo
	// Children are sorted by start.
	for _, c := range n.Children {
		s, e := max(c.Start(), cursor), min(c.End(), hi)
		if e > s {
			covered += e - s
			cursor = e
		}
	}
	return hi - lo - covered
}

// add digests one trace into the window and into its endpoint's stratum.
func (w *window) add(spans []model.Span, service, operation string) bool {
	spans, ok := entryOf(withTemplateNames(model.WithInferredKinds(spans)), service, templateName(operation))
	if !ok || len(spans) == 0 {
		return false
	}
	t := analyze.NewTrace(deskew(spans))
	root := t.Root()
	if root == nil {
		return false
	}
	one := &window{keys: map[Key]*keyStat{}, edges: map[edge]*edgeStat{}}
	one.digest(t, root)
	w.merge(one)
	endpoint := root.Span.Service + " " + root.Span.Name
	st := w.strata[endpoint]
	if st == nil {
		st = &window{keys: map[Key]*keyStat{}, edges: map[edge]*edgeStat{}}
		w.strata[endpoint] = st
	}
	st.merge(one)
	return true
}

// digest adds one trace, deskewed, into an empty window.
func (w *window) digest(t *analyze.Trace, root *analyze.Node) {
	rec := traceRec{id: t.ID.String(), svcCP: map[string]float64{}, origins: map[string]bool{}}
	cp := t.CriticalPath()
	ownCP := map[Key]float64{}
	for _, seg := range cp.Segments {
		d := ms(seg.End - seg.Start)
		k, front := blame(seg.Node)
		st := w.stat(k)
		if front {
			st.cpFront += d
			w.edge(edgeOf(seg.Node, frontOf(seg.Node))).cpFront += d
		} else {
			st.cpOwn += d
			ownCP[k] += d
		}
		rec.svcCP[k.Service] += d
		rec.cpMS += d
	}
	for k, d := range ownCP {
		st := w.stat(k)
		st.ownSamples = append(st.ownSamples, d)
	}
	seen := map[Key]bool{}
	for _, n := range t.Nodes {
		k, front := blame(n)
		st := w.stat(k)
		if front {
			c := frontOf(n)
			gap := ms(n.Duration()) - ms(c.Duration())
			st.gapSamples = append(st.gapSamples, gap)
			st.selfFront += max(gap, 0)
			es := w.edge(edgeOf(n, c))
			es.gapSamples = append(es.gapSamples, gap)
			es.selfFront += max(gap, 0)
		} else {
			st.selfOwn += ms(uncovered(n))
		}
		own := Key{n.Span.Service, n.Span.Name}
		if !seen[own] {
			seen[own] = true
			w.stat(own).presence++
		}
		if !analyze.Failed(n) {
			continue
		}
		if analyze.FailedBelow(n) {
			continue
		}
		timedOut := false
		if e := analyze.SlowCallee(n); e != nil {
			// A call that gave up on a callee still working: the time,
			// and so the error, started in the callee, as error_origin's
			// culprit says; the caller's timeout only reported it.
			own, timedOut = Key{e.Span.Service, e.Span.Name}, true
		}
		if !rec.origins[own.Service+"\x00"+own.Operation] {
			rec.origins[own.Service+"\x00"+own.Operation] = true
			os := w.stat(own)
			os.origins++
			if timedOut {
				os.timeouts++
			}
			if os.exception == "" {
				if typ, _ := analyze.ExceptionOf(n.Span); typ != "" {
					os.exception = typ
				}
			}
		}
	}
	rec.failed = analyze.Failed(root) || len(rec.origins) > 0
	if rec.failed {
		w.failed++
	}
	w.cpMS += rec.cpMS
	w.traces = append(w.traces, rec)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

// deskew returns a copy of the spans in which every server span called
// by a client span of another host, with its whole subtree, sits centred
// in the client span. Host clocks differ by a constant, so raw timestamps
// can put a callee before or after its caller's call, and which parallel
// branch looks critical would then depend on the skew; centring assumes a
// symmetric network and makes the attribution depend only on durations,
// which no clock offset changes.
func deskew(spans []model.Span) []model.Span {
	t := analyze.NewTrace(spans)
	out := make([]model.Span, len(spans))
	copy(out, spans)
	type item struct {
		n     *analyze.Node
		shift int64
	}
	stack := make([]item, 0, len(t.Roots))
	for _, r := range t.Roots {
		stack = append(stack, item{r, 0})
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n, shift := it.n, it.shift
		if p := n.Parent; p != nil && p.Span.Kind == model.KindClient && frontOf(p) == n {
			pc := int64(p.Start()/2+p.End()/2) + it.shift
			shift = pc - int64(n.Start()/2+n.End()/2)
		}
		o := &out[n.Index]
		o.StartUnixNano = uint64(int64(o.StartUnixNano) + shift)
		o.EndUnixNano = uint64(int64(o.EndUnixNano) + shift)
		for _, c := range n.Children {
			stack = append(stack, item{c, shift})
		}
	}
	return out
}

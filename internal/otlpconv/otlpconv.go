// Package otlpconv converts between OTLP (collector pdata, or protobuf
// straight from the wire: DecodeTracesProto) and tracedx's span model. It
// is on the ingest hot path, so resource and scope data are converted once
// per ResourceSpans/ScopeSpans and shared (read-only) by the spans that
// carry them.
package otlpconv

import (
	"sort"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
)

// FromTraces converts every span in td under DefaultLimits. Resource
// attribute slices are shared between spans of one resource and must be
// treated as immutable.
func FromTraces(td ptrace.Traces) []model.Span {
	spans, _ := FromTracesLimited(td, DefaultLimits())
	return spans
}

// FromTracesLimited converts every span in td, cutting values and dropping
// attributes, events and links beyond lim (counted in the span's dropped
// counts and in the returned Stats).
func FromTracesLimited(td ptrace.Traces, lim Limits) ([]model.Span, Stats) {
	c := converter{lim: lim}
	out := make([]model.Span, 0, td.SpanCount())
	// One backing array for every span's attributes: on the ingest path a
	// per-span allocation is the largest cost after protobuf decoding. Each
	// span gets a capacity-capped window so an append cannot spill into its
	// neighbour.
	a := arena{c: &c}
	a.attrs = make([]model.Attr, 0, countSpanAttrs(td, lim.MaxAttrs))
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := c.attrsFromMap(rs.Resource().Attributes())
		service := res.Str("service.name")
		if service == "" {
			service = model.UnknownService
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			scopeName, scopeVersion := c.clipStr(ss.Scope().Name()), c.clipStr(ss.Scope().Version())
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				out = append(out, c.span(spans.At(k), service, res, scopeName, scopeVersion, &a))
			}
		}
	}
	return out, c.stats
}

type arena struct {
	c     *converter
	attrs []model.Attr
}

// take appends m's attributes to the arena and returns them as a
// capacity-capped slice, and the number dropped over the limit.
func (a *arena) take(m pcommon.Map) (model.Attrs, int) {
	n := min(m.Len(), a.c.lim.MaxAttrs)
	if n == 0 {
		return nil, m.Len()
	}
	if cap(a.attrs)-len(a.attrs) < n {
		return a.c.attrs(make(model.Attrs, 0, n), m)
	}
	start := len(a.attrs)
	var dropped int
	a.attrs, dropped = a.c.attrs(a.attrs, m)
	return model.Attrs(a.attrs[start:len(a.attrs):len(a.attrs)]), dropped
}

func countSpanAttrs(td ptrace.Traces, limit int) int {
	n := 0
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				n += min(spans.At(k).Attributes().Len(), limit)
			}
		}
	}
	return n
}

func (c *converter) span(s ptrace.Span, service string, res model.Attrs, scopeName, scopeVersion string, a *arena) model.Span {
	attrs, dropped := a.take(s.Attributes())
	sp := model.Span{
		TraceID:                model.TraceID(s.TraceID()),
		SpanID:                 model.SpanID(s.SpanID()),
		ParentSpanID:           model.SpanID(s.ParentSpanID()),
		TraceState:             c.clipStr(s.TraceState().AsRaw()),
		Flags:                  s.Flags(),
		Name:                   c.clipStr(s.Name()),
		Kind:                   model.SpanKind(s.Kind()),
		StartUnixNano:          uint64(s.StartTimestamp()),
		EndUnixNano:            uint64(s.EndTimestamp()),
		StatusCode:             model.StatusCode(s.Status().Code()),
		StatusMessage:          c.clipStr(s.Status().Message()),
		Service:                service,
		Resource:               res,
		ScopeName:              scopeName,
		ScopeVersion:           scopeVersion,
		Attrs:                  attrs,
		DroppedAttributesCount: saturatingAdd(s.DroppedAttributesCount(), dropped),
		DroppedEventsCount:     s.DroppedEventsCount(),
		DroppedLinksCount:      s.DroppedLinksCount(),
	}
	if evs := s.Events(); evs.Len() > 0 {
		n := min(evs.Len(), c.lim.MaxEvents)
		sp.Events = make([]model.Event, n)
		for i := 0; i < n; i++ {
			e := evs.At(i)
			sp.Events[i] = model.Event{TimeUnixNano: uint64(e.Timestamp()), Name: c.clipStr(e.Name()), Attrs: c.attrsFromMap(e.Attributes())}
		}
		c.stats.DroppedEvents += evs.Len() - n
		sp.DroppedEventsCount = saturatingAdd(sp.DroppedEventsCount, evs.Len()-n)
	}
	if ls := s.Links(); ls.Len() > 0 {
		n := min(ls.Len(), c.lim.MaxLinks)
		sp.Links = make([]model.Link, n)
		for i := 0; i < n; i++ {
			l := ls.At(i)
			sp.Links[i] = model.Link{TraceID: model.TraceID(l.TraceID()), SpanID: model.SpanID(l.SpanID()),
				TraceState: c.clipStr(l.TraceState().AsRaw()), Attrs: c.attrsFromMap(l.Attributes())}
		}
		c.stats.DroppedLinks += ls.Len() - n
		sp.DroppedLinksCount = saturatingAdd(sp.DroppedLinksCount, ls.Len()-n)
	}
	if len(sp.Events) == 0 {
		sp.Events = nil
	}
	if len(sp.Links) == 0 {
		sp.Links = nil
	}
	return sp
}

func saturatingAdd(a uint32, b int) uint32 {
	if sum := uint64(a) + uint64(b); sum <= 1<<32-1 {
		return uint32(sum)
	}
	return 1<<32 - 1
}

// AttrsFromMap converts an OTLP attribute map (order preserved) under
// DefaultLimits.
func AttrsFromMap(m pcommon.Map) model.Attrs {
	c := converter{lim: DefaultLimits()}
	return c.attrsFromMap(m)
}

// ValueFrom converts one OTLP value under DefaultLimits. Arrays and maps
// keep their JSON text.
func ValueFrom(v pcommon.Value) model.Value {
	c := converter{lim: DefaultLimits()}
	return c.value(v)
}

// PutValue stores v into dst.
func PutValue(dst pcommon.Value, v model.Value) {
	switch v.Type {
	case model.TypeString:
		dst.SetStr(v.Str)
	case model.TypeInt:
		dst.SetInt(v.Int)
	case model.TypeDouble:
		dst.SetDouble(v.Float)
	case model.TypeBool:
		dst.SetBool(v.Bool)
	case model.TypeBytes:
		dst.SetEmptyBytes().FromRaw(v.Bytes)
	case model.TypeArray, model.TypeMap:
		if putJSON(dst, v.Str) != nil {
			// Cut to MaxValueBytes (or not JSON at all): the text as it is.
			dst.SetStr(v.Str)
		}
	}
}

// putJSON sets dst to the array or map whose JSON text (as ingest renders
// them) is text, read by parseComposite so that a map keeps its keys in
// their order (decoded into a Go map they came out in a random one) and a
// number written as an integer comes back as an int, not a double. JSON
// loses what the text does not say: a whole double comes back as an int,
// bytes as their base64 text.
func putJSON(dst pcommon.Value, text string) error {
	n, err := parseComposite(text)
	if err != nil {
		return err
	}
	putNode(dst, &n)
	return nil
}

func putNode(dst pcommon.Value, n *jsonNode) {
	switch n.kind {
	case 'm':
		m := dst.SetEmptyMap()
		m.EnsureCapacity(len(n.items))
		for i := range n.items {
			putNode(m.PutEmpty(n.keys[i]), &n.items[i])
		}
	case 'a':
		sl := dst.SetEmptySlice()
		sl.EnsureCapacity(len(n.items))
		for i := range n.items {
			putNode(sl.AppendEmpty(), &n.items[i])
		}
	case 's':
		dst.SetStr(n.str)
	case 'i':
		dst.SetInt(n.i)
	case 'd':
		dst.SetDouble(n.f)
	case 'b':
		dst.SetBool(n.bool)
	}
	// Otherwise empty, as pdata's FromRaw makes of a nil.
}

// PutAttrs appends attrs to an OTLP map.
func PutAttrs(dst pcommon.Map, attrs model.Attrs) {
	dst.EnsureCapacity(dst.Len() + len(attrs))
	for _, a := range attrs {
		PutValue(dst.PutEmpty(a.Key), a.Value)
	}
}

// ToTraces converts spans back to OTLP, grouping them by resource (service
// plus resource attributes) and scope, in a deterministic order.
func ToTraces(spans []model.Span) ptrace.Traces {
	return TracesOf([][]model.Span{spans})
}

// TracesOf is ToTraces over the spans of several traces taken in turn: the
// same OTLP as ToTraces over them appended into one slice, without that
// slice (for a search of 20 traces of 20 spans it was ~350 KB copied per
// response, with GC write barriers on every span's pointers).
func TracesOf(traces [][]model.Span) ptrace.Traces {
	td := ptrace.NewTraces()
	for _, g := range groupTraces(traces) {
		rs := td.ResourceSpans().AppendEmpty()
		PutAttrs(rs.Resource().Attributes(), g.first.Resource)
		if _, has := rs.Resource().Attributes().Get("service.name"); !has && g.first.Service != "" {
			rs.Resource().Attributes().PutStr("service.name", g.first.Service)
		}
		for _, sc := range g.scopes {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(sc.name)
			ss.Scope().SetVersion(sc.version)
			ss.Spans().EnsureCapacity(len(sc.spans))
			for _, s := range sc.spans {
				putSpan(ss.Spans().AppendEmpty(), s)
			}
		}
	}
	return td
}

func resourceKey(s *model.Span) string {
	// Resource attrs are short; a canonical text form keys them well enough.
	keys := make([]string, 0, len(s.Resource)+1)
	for _, a := range s.Resource {
		keys = append(keys, a.Key+"\x00"+a.Value.AsString())
	}
	sort.Strings(keys)
	k := s.Service
	for _, x := range keys {
		k += "\x01" + x
	}
	return k
}

func putSpan(d ptrace.Span, s *model.Span) {
	d.SetTraceID(pcommon.TraceID(s.TraceID))
	d.SetSpanID(pcommon.SpanID(s.SpanID))
	d.SetParentSpanID(pcommon.SpanID(s.ParentSpanID))
	d.TraceState().FromRaw(s.TraceState)
	d.SetFlags(s.Flags)
	d.SetName(s.Name)
	d.SetKind(ptrace.SpanKind(s.Kind))
	d.SetStartTimestamp(pcommon.Timestamp(s.StartUnixNano))
	d.SetEndTimestamp(pcommon.Timestamp(s.EndUnixNano))
	d.Status().SetCode(ptrace.StatusCode(s.StatusCode))
	d.Status().SetMessage(s.StatusMessage)
	PutAttrs(d.Attributes(), s.Attrs)
	d.SetDroppedAttributesCount(s.DroppedAttributesCount)
	d.SetDroppedEventsCount(s.DroppedEventsCount)
	d.SetDroppedLinksCount(s.DroppedLinksCount)
	for _, e := range s.Events {
		de := d.Events().AppendEmpty()
		de.SetTimestamp(pcommon.Timestamp(e.TimeUnixNano))
		de.SetName(e.Name)
		PutAttrs(de.Attributes(), e.Attrs)
	}
	for _, l := range s.Links {
		dl := d.Links().AppendEmpty()
		dl.SetTraceID(pcommon.TraceID(l.TraceID))
		dl.SetSpanID(pcommon.SpanID(l.SpanID))
		dl.TraceState().FromRaw(l.TraceState)
		PutAttrs(dl.Attributes(), l.Attrs)
	}
}

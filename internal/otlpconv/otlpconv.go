// Package otlpconv converts between OTLP (collector pdata) and tracedx's
// span model. It is on the ingest hot path, so resource and scope data are
// converted once per ResourceSpans/ScopeSpans and shared (read-only) by the
// spans that carry them.
package otlpconv

import (
	"encoding/json"
	"sort"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
)

// FromTraces converts every span in td. Resource attribute slices are shared
// between spans of one resource and must be treated as immutable.
func FromTraces(td ptrace.Traces) []model.Span {
	out := make([]model.Span, 0, td.SpanCount())
	// One backing array for every span's attributes: on the ingest path a
	// per-span allocation is the largest cost after protobuf decoding. Each
	// span gets a capacity-capped window so an append cannot spill into its
	// neighbour.
	var a arena
	a.attrs = make([]model.Attr, 0, countSpanAttrs(td))
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := AttrsFromMap(rs.Resource().Attributes())
		service := res.Str("service.name")
		if service == "" {
			service = model.UnknownService
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			scopeName, scopeVersion := ss.Scope().Name(), ss.Scope().Version()
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				out = append(out, spanFrom(spans.At(k), service, res, scopeName, scopeVersion, &a))
			}
		}
	}
	return out
}

type arena struct{ attrs []model.Attr }

// take appends m's attributes to the arena and returns them as a
// capacity-capped slice.
func (a *arena) take(m pcommon.Map) model.Attrs {
	n := m.Len()
	if n == 0 {
		return nil
	}
	if cap(a.attrs)-len(a.attrs) < n {
		return AttrsFromMap(m)
	}
	start := len(a.attrs)
	m.Range(func(k string, v pcommon.Value) bool {
		a.attrs = append(a.attrs, model.Attr{Key: k, Value: ValueFrom(v)})
		return true
	})
	return model.Attrs(a.attrs[start:len(a.attrs):len(a.attrs)])
}

func countSpanAttrs(td ptrace.Traces) int {
	n := 0
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				n += spans.At(k).Attributes().Len()
			}
		}
	}
	return n
}

func spanFrom(s ptrace.Span, service string, res model.Attrs, scopeName, scopeVersion string, a *arena) model.Span {
	sp := model.Span{
		TraceID:                model.TraceID(s.TraceID()),
		SpanID:                 model.SpanID(s.SpanID()),
		ParentSpanID:           model.SpanID(s.ParentSpanID()),
		TraceState:             s.TraceState().AsRaw(),
		Flags:                  s.Flags(),
		Name:                   s.Name(),
		Kind:                   model.SpanKind(s.Kind()),
		StartUnixNano:          uint64(s.StartTimestamp()),
		EndUnixNano:            uint64(s.EndTimestamp()),
		StatusCode:             model.StatusCode(s.Status().Code()),
		StatusMessage:          s.Status().Message(),
		Service:                service,
		Resource:               res,
		ScopeName:              scopeName,
		ScopeVersion:           scopeVersion,
		Attrs:                  a.take(s.Attributes()),
		DroppedAttributesCount: s.DroppedAttributesCount(),
		DroppedEventsCount:     s.DroppedEventsCount(),
		DroppedLinksCount:      s.DroppedLinksCount(),
	}
	if evs := s.Events(); evs.Len() > 0 {
		sp.Events = make([]model.Event, evs.Len())
		for i := 0; i < evs.Len(); i++ {
			e := evs.At(i)
			sp.Events[i] = model.Event{TimeUnixNano: uint64(e.Timestamp()), Name: e.Name(), Attrs: AttrsFromMap(e.Attributes())}
		}
	}
	if ls := s.Links(); ls.Len() > 0 {
		sp.Links = make([]model.Link, ls.Len())
		for i := 0; i < ls.Len(); i++ {
			l := ls.At(i)
			sp.Links[i] = model.Link{TraceID: model.TraceID(l.TraceID()), SpanID: model.SpanID(l.SpanID()),
				TraceState: l.TraceState().AsRaw(), Attrs: AttrsFromMap(l.Attributes())}
		}
	}
	return sp
}

// AttrsFromMap converts an OTLP attribute map (order preserved).
func AttrsFromMap(m pcommon.Map) model.Attrs {
	if m.Len() == 0 {
		return nil
	}
	out := make(model.Attrs, 0, m.Len())
	m.Range(func(k string, v pcommon.Value) bool {
		out = append(out, model.Attr{Key: k, Value: ValueFrom(v)})
		return true
	})
	return out
}

// ValueFrom converts one OTLP value. Arrays and maps keep their JSON text.
func ValueFrom(v pcommon.Value) model.Value {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return model.Value{Type: model.TypeString, Str: v.Str()}
	case pcommon.ValueTypeInt:
		return model.Value{Type: model.TypeInt, Int: v.Int()}
	case pcommon.ValueTypeDouble:
		return model.Value{Type: model.TypeDouble, Float: v.Double()}
	case pcommon.ValueTypeBool:
		return model.Value{Type: model.TypeBool, Bool: v.Bool()}
	case pcommon.ValueTypeBytes:
		return model.Value{Type: model.TypeBytes, Bytes: v.Bytes().AsRaw()}
	case pcommon.ValueTypeSlice:
		return model.Value{Type: model.TypeArray, Str: v.AsString()}
	case pcommon.ValueTypeMap:
		return model.Value{Type: model.TypeMap, Str: v.AsString()}
	}
	return model.Value{}
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
	case model.TypeArray:
		var raw []any
		if json.Unmarshal([]byte(v.Str), &raw) == nil {
			_ = dst.SetEmptySlice().FromRaw(raw)
		} else {
			dst.SetStr(v.Str)
		}
	case model.TypeMap:
		var raw map[string]any
		if json.Unmarshal([]byte(v.Str), &raw) == nil {
			_ = dst.SetEmptyMap().FromRaw(raw)
		} else {
			dst.SetStr(v.Str)
		}
	}
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
	td := ptrace.NewTraces()
	type scopeKey struct {
		res           string
		name, version string
	}
	resIdx := map[string]ptrace.ResourceSpans{}
	scopeIdx := map[scopeKey]ptrace.SpanSlice{}
	for i := range spans {
		s := &spans[i]
		rk := resourceKey(s)
		rs, ok := resIdx[rk]
		if !ok {
			rs = td.ResourceSpans().AppendEmpty()
			PutAttrs(rs.Resource().Attributes(), s.Resource)
			if _, has := rs.Resource().Attributes().Get("service.name"); !has && s.Service != "" {
				rs.Resource().Attributes().PutStr("service.name", s.Service)
			}
			resIdx[rk] = rs
		}
		sk := scopeKey{rk, s.ScopeName, s.ScopeVersion}
		ss, ok := scopeIdx[sk]
		if !ok {
			sc := rs.ScopeSpans().AppendEmpty()
			sc.Scope().SetName(s.ScopeName)
			sc.Scope().SetVersion(s.ScopeVersion)
			ss = sc.Spans()
			scopeIdx[sk] = ss
		}
		putSpan(ss.AppendEmpty(), s)
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

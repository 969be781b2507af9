package otlpconv

import (
	"encoding/json"
	"math"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// Field numbers of the OTLP messages AppendExportRequest writes
// (opentelemetry/proto/collector/trace/v1, trace/v1, common/v1,
// resource/v1).
const (
	fRequestResourceSpans protowire.Number = 1

	fResourceSpansResource   protowire.Number = 1
	fResourceSpansScopeSpans protowire.Number = 2
	fResourceAttributes      protowire.Number = 1

	fScopeSpansScope protowire.Number = 1
	fScopeSpansSpans protowire.Number = 2
	fScopeName       protowire.Number = 1
	fScopeVersion    protowire.Number = 2

	fSpanTraceID          protowire.Number = 1
	fSpanSpanID           protowire.Number = 2
	fSpanTraceState       protowire.Number = 3
	fSpanParentSpanID     protowire.Number = 4
	fSpanName             protowire.Number = 5
	fSpanKind             protowire.Number = 6
	fSpanStart            protowire.Number = 7
	fSpanEnd              protowire.Number = 8
	fSpanAttributes       protowire.Number = 9
	fSpanDroppedAttrs     protowire.Number = 10
	fSpanEvents           protowire.Number = 11
	fSpanDroppedEvents    protowire.Number = 12
	fSpanLinks            protowire.Number = 13
	fSpanDroppedLinks     protowire.Number = 14
	fSpanStatus           protowire.Number = 15
	fSpanFlags            protowire.Number = 16
	fStatusMessage        protowire.Number = 2
	fStatusCode           protowire.Number = 3
	fEventTime            protowire.Number = 1
	fEventName            protowire.Number = 2
	fEventAttributes      protowire.Number = 3
	fLinkTraceID          protowire.Number = 1
	fLinkSpanID           protowire.Number = 2
	fLinkTraceState       protowire.Number = 3
	fLinkAttributes       protowire.Number = 4
	fKeyValueKey          protowire.Number = 1
	fKeyValueValue        protowire.Number = 2
	fAnyString            protowire.Number = 1
	fAnyBool              protowire.Number = 2
	fAnyInt               protowire.Number = 3
	fAnyDouble            protowire.Number = 4
	fAnyArray             protowire.Number = 5
	fAnyKvlist            protowire.Number = 6
	fAnyBytes             protowire.Number = 7
	fArrayOrKvlistValues  protowire.Number = 1
	serviceNameAttribute                   = "service.name"
	maxOneByteMessageSize                  = 1<<7 - 1
)

// AppendExportRequest appends the protobuf encoding of an OTLP
// ExportTraceServiceRequest holding spans to b. Decoded, it gives the
// spans ToTraces gives (resources and scopes grouped the same way), but it
// writes the wire format straight from the model: a cluster node
// forwarding spans to their owner pays for one encoding instead of
// building a pdata tree and then encoding that.
//
// Spans are grouped by resource identity (service and the backing array of
// Resource, which spans decoded from one OTLP resource share) rather than
// by content, so equal resources from different requests may be written
// twice; a receiver sees the same spans either way.
func AppendExportRequest(b []byte, spans []model.Span) []byte {
	for _, rg := range groupByResource(spans) {
		rs := beginMessage(&b, fRequestResourceSpans)
		first := &spans[rg.scopes[0].spans[0]]
		res := beginMessage(&b, fResourceSpansResource)
		b = appendAttrs(b, fResourceAttributes, first.Resource)
		if first.Service != "" && !hasKey(first.Resource, serviceNameAttribute) {
			b = appendKeyValue(b, fResourceAttributes, serviceNameAttribute, model.Str(first.Service))
		}
		b = endMessage(b, res)
		for _, sg := range rg.scopes {
			ss := beginMessage(&b, fResourceSpansScopeSpans)
			sc := beginMessage(&b, fScopeSpansScope)
			b = appendString(b, fScopeName, spans[sg.spans[0]].ScopeName)
			b = appendString(b, fScopeVersion, spans[sg.spans[0]].ScopeVersion)
			b = endMessage(b, sc)
			for _, i := range sg.spans {
				sp := beginMessage(&b, fScopeSpansSpans)
				b = appendSpan(b, &spans[i])
				b = endMessage(b, sp)
			}
			b = endMessage(b, ss)
		}
		b = endMessage(b, rs)
	}
	return b
}

type resourceGroup struct {
	scopes []scopeGroup
}

type scopeGroup struct {
	name, version string
	spans         []int
}

type resourceIdentity struct {
	service string
	attrs   *model.Attr
	n       int
}

func identityOf(s *model.Span) resourceIdentity {
	id := resourceIdentity{service: s.Service, n: len(s.Resource)}
	if len(s.Resource) > 0 {
		id.attrs = &s.Resource[0]
	}
	return id
}

// groupByResource keeps the order in which resources and scopes first
// appear, as ToTraces does.
func groupByResource(spans []model.Span) []resourceGroup {
	var groups []resourceGroup
	index := map[resourceIdentity]int{}
	last, lastGroup := resourceIdentity{}, -1
	for i := range spans {
		s := &spans[i]
		id := identityOf(s)
		g := lastGroup
		if g < 0 || id != last {
			var ok bool
			if g, ok = index[id]; !ok {
				g = len(groups)
				groups = append(groups, resourceGroup{})
				index[id] = g
			}
			last, lastGroup = id, g
		}
		rg := &groups[g]
		k := len(rg.scopes) - 1
		if k < 0 || rg.scopes[k].name != s.ScopeName || rg.scopes[k].version != s.ScopeVersion {
			k = 0
			for k < len(rg.scopes) && (rg.scopes[k].name != s.ScopeName || rg.scopes[k].version != s.ScopeVersion) {
				k++
			}
			if k == len(rg.scopes) {
				rg.scopes = append(rg.scopes, scopeGroup{name: s.ScopeName, version: s.ScopeVersion})
			}
		}
		rg.scopes[k].spans = append(rg.scopes[k].spans, i)
	}
	return groups
}

func hasKey(attrs model.Attrs, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// beginMessage starts an embedded message field whose length is not known
// yet: it writes the tag and a one-byte length placeholder and returns
// where the length goes.
func beginMessage(b *[]byte, num protowire.Number) int {
	*b = protowire.AppendTag(*b, num, protowire.BytesType)
	*b = append(*b, 0)
	return len(*b) - 1
}

// endMessage writes the length of the message begun at at. Most attribute
// and value messages fit the one-byte placeholder; longer ones shift their
// body right by the extra length bytes (spans by one, the enclosing
// ResourceSpans once per request).
func endMessage(b []byte, at int) []byte {
	n := len(b) - at - 1
	if n <= maxOneByteMessageSize {
		b[at] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, extra)...)
	copy(b[at+1+extra:], b[at+1:at+1+n])
	protowire.AppendVarint(b[:at], uint64(n))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendID(b []byte, num protowire.Number, id []byte, zero bool) []byte {
	if zero {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, id)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendSpan(b []byte, s *model.Span) []byte {
	b = appendID(b, fSpanTraceID, s.TraceID[:], s.TraceID.IsZero())
	b = appendID(b, fSpanSpanID, s.SpanID[:], s.SpanID.IsZero())
	b = appendString(b, fSpanTraceState, s.TraceState)
	b = appendID(b, fSpanParentSpanID, s.ParentSpanID[:], s.ParentSpanID.IsZero())
	b = appendString(b, fSpanName, s.Name)
	b = appendVarint(b, fSpanKind, uint64(s.Kind))
	b = appendFixed64(b, fSpanStart, s.StartUnixNano)
	b = appendFixed64(b, fSpanEnd, s.EndUnixNano)
	b = appendAttrs(b, fSpanAttributes, s.Attrs)
	b = appendVarint(b, fSpanDroppedAttrs, uint64(s.DroppedAttributesCount))
	for i := range s.Events {
		e := &s.Events[i]
		m := beginMessage(&b, fSpanEvents)
		b = appendFixed64(b, fEventTime, e.TimeUnixNano)
		b = appendString(b, fEventName, e.Name)
		b = appendAttrs(b, fEventAttributes, e.Attrs)
		b = endMessage(b, m)
	}
	b = appendVarint(b, fSpanDroppedEvents, uint64(s.DroppedEventsCount))
	for i := range s.Links {
		l := &s.Links[i]
		m := beginMessage(&b, fSpanLinks)
		b = appendID(b, fLinkTraceID, l.TraceID[:], l.TraceID.IsZero())
		b = appendID(b, fLinkSpanID, l.SpanID[:], l.SpanID.IsZero())
		b = appendString(b, fLinkTraceState, l.TraceState)
		b = appendAttrs(b, fLinkAttributes, l.Attrs)
		b = endMessage(b, m)
	}
	b = appendVarint(b, fSpanDroppedLinks, uint64(s.DroppedLinksCount))
	if s.StatusCode != 0 || s.StatusMessage != "" {
		m := beginMessage(&b, fSpanStatus)
		b = appendString(b, fStatusMessage, s.StatusMessage)
		b = appendVarint(b, fStatusCode, uint64(s.StatusCode))
		b = endMessage(b, m)
	}
	if s.Flags != 0 {
		b = protowire.AppendTag(b, fSpanFlags, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, s.Flags)
	}
	return b
}

func appendAttrs(b []byte, num protowire.Number, attrs model.Attrs) []byte {
	for i := range attrs {
		b = appendKeyValue(b, num, attrs[i].Key, attrs[i].Value)
	}
	return b
}

func appendKeyValue(b []byte, num protowire.Number, key string, v model.Value) []byte {
	m := beginMessage(&b, num)
	b = appendString(b, fKeyValueKey, key)
	b = appendValue(b, v)
	return endMessage(b, m)
}

// appendValue writes v as the KeyValue's AnyValue. A oneof member is
// written even when it holds its zero value, or the receiver would see an
// empty value instead of "", 0 or false.
func appendValue(b []byte, v model.Value) []byte {
	m := beginMessage(&b, fKeyValueValue)
	switch v.Type {
	case model.TypeString:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		b = protowire.AppendString(b, v.Str)
	case model.TypeBool:
		b = appendAnyBool(b, v.Bool)
	case model.TypeInt:
		b = protowire.AppendTag(b, fAnyInt, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.Int))
	case model.TypeDouble:
		b = appendAnyDouble(b, v.Float)
	case model.TypeBytes:
		b = protowire.AppendTag(b, fAnyBytes, protowire.BytesType)
		b = protowire.AppendBytes(b, v.Bytes)
	case model.TypeArray, model.TypeMap:
		b = appendComposite(b, v.Str)
	}
	return endMessage(b, m)
}

func appendAnyBool(b []byte, v bool) []byte {
	b = protowire.AppendTag(b, fAnyBool, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeBool(v))
}

func appendAnyDouble(b []byte, v float64) []byte {
	b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// appendComposite writes an array or map kept as its JSON text, as
// PutValue does: the parsed JSON (numbers as doubles), or the text as a
// string when it does not parse (a value cut at the size limit).
func appendComposite(b []byte, text string) []byte {
	var raw any
	if json.Unmarshal([]byte(text), &raw) != nil {
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		return protowire.AppendString(b, text)
	}
	return appendRaw(b, raw)
}

// appendRaw writes the AnyValue members of a value decoded from JSON.
func appendRaw(b []byte, raw any) []byte {
	switch x := raw.(type) {
	case string:
		b = protowire.AppendTag(b, fAnyString, protowire.BytesType)
		b = protowire.AppendString(b, x)
	case bool:
		b = appendAnyBool(b, x)
	case float64:
		b = appendAnyDouble(b, x)
	case []any:
		list := beginMessage(&b, fAnyArray)
		for _, e := range x {
			m := beginMessage(&b, fArrayOrKvlistValues)
			b = appendRaw(b, e)
			b = endMessage(b, m)
		}
		b = endMessage(b, list)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		list := beginMessage(&b, fAnyKvlist)
		for _, k := range keys {
			kv := beginMessage(&b, fArrayOrKvlistValues)
			b = appendString(b, fKeyValueKey, k)
			val := beginMessage(&b, fKeyValueValue)
			b = appendRaw(b, x[k])
			b = endMessage(b, val)
			b = endMessage(b, kv)
		}
		b = endMessage(b, list)
	}
	return b
}

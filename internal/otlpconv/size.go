package otlpconv

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// SpanSize is the size of the span as an OTLP protobuf Span message, what
// Tempo's traces_spanmetrics_size_total adds up. It is computed from the
// fields (no marshalling, no allocation); array and map attribute values,
// which tracedx keeps as JSON text, count with their text length.
func SpanSize(s *model.Span) uint64 {
	n := lenField(1, 16) + lenField(2, 8)
	n += strField(3, s.TraceState)
	if !s.ParentSpanID.IsZero() {
		n += lenField(4, 8)
	}
	n += strField(5, s.Name)
	n += varintField(6, uint64(s.Kind))
	n += fixed64Field(7, s.StartUnixNano) + fixed64Field(8, s.EndUnixNano)
	n += attrsSize(9, s.Attrs)
	n += varintField(10, uint64(s.DroppedAttributesCount))
	for i := range s.Events {
		e := &s.Events[i]
		n += lenField(11, fixed64Field(1, e.TimeUnixNano)+strField(2, e.Name)+attrsSize(3, e.Attrs))
	}
	n += varintField(12, uint64(s.DroppedEventsCount))
	for i := range s.Links {
		l := &s.Links[i]
		n += lenField(13, lenField(1, 16)+lenField(2, 8)+strField(3, l.TraceState)+attrsSize(4, l.Attrs))
	}
	n += varintField(14, uint64(s.DroppedLinksCount))
	if st := strField(2, s.StatusMessage) + varintField(3, uint64(s.StatusCode)); st > 0 {
		n += lenField(15, st)
	}
	if s.Flags != 0 {
		n += protowire.SizeTag(16) + protowire.SizeFixed32()
	}
	return uint64(n)
}

func attrsSize(num protowire.Number, attrs model.Attrs) int {
	n := 0
	for _, a := range attrs {
		n += lenField(num, strField(1, a.Key)+lenField(2, valueSize(a.Value)))
	}
	return n
}

func valueSize(v model.Value) int {
	switch v.Type {
	case model.TypeString:
		return lenField(1, len(v.Str))
	case model.TypeBool:
		return protowire.SizeTag(2) + 1
	case model.TypeInt:
		return protowire.SizeTag(3) + protowire.SizeVarint(uint64(v.Int))
	case model.TypeDouble:
		return protowire.SizeTag(4) + protowire.SizeFixed64()
	case model.TypeArray:
		return lenField(5, len(v.Str))
	case model.TypeMap:
		return lenField(6, len(v.Str))
	case model.TypeBytes:
		return lenField(7, len(v.Bytes))
	}
	return 0
}

// lenField is a length-delimited field of l bytes.
func lenField(num protowire.Number, l int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(l)
}

// strField is a string field, absent (0) when empty as proto3 omits it.
func strField(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return lenField(num, len(s))
}

func varintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func fixed64Field(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeFixed64()
}

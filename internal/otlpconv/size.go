package otlpconv

import (
	"math/bits"

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

// attrsSize is the size of attrs as repeated KeyValue field num. RED
// metrics size every span, most of whose bytes are attributes: the loop
// keeps to arithmetic the compiler inlines, reading each Value in place.
func attrsSize(num protowire.Number, attrs model.Attrs) int {
	tag := protowire.SizeTag(num)
	n := 0
	for i := range attrs {
		a := &attrs[i]
		v := valueSize(&a.Value)
		kv := 1 + sizeVarint(v) + v // value is always present
		if l := len(a.Key); l > 0 {
			kv += 1 + sizeVarint(l) + l
		}
		n += tag + sizeVarint(kv) + kv
	}
	return n
}

// valueSize is the size of an AnyValue message holding v (each of its
// fields has a one-byte tag).
func valueSize(v *model.Value) int {
	switch v.Type {
	case model.TypeString, model.TypeArray, model.TypeMap:
		return 1 + sizeVarint(len(v.Str)) + len(v.Str)
	case model.TypeBool:
		return 2
	case model.TypeInt:
		return 1 + protowire.SizeVarint(uint64(v.Int))
	case model.TypeDouble:
		return 9
	case model.TypeBytes:
		return 1 + sizeVarint(len(v.Bytes)) + len(v.Bytes)
	}
	return 0
}

// sizeVarint is protowire.SizeVarint of a length.
func sizeVarint(l int) int { return int(9*uint32(bits.Len64(uint64(l)))+64) / 64 }

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

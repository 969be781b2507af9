// Package otlpconvtest builds hostile OTLP payloads for tests. They are
// written with protowire directly because pdata cannot build them: its
// own encoder recurses per nesting level, as its decoder does.
package otlpconvtest

import "google.golang.org/protobuf/encoding/protowire"

// NestedArray encodes an AnyValue holding arrays nested depth levels deep,
// the innermost one empty. Sizes are computed inside out, then the bytes
// written outside in, so building a 1,000,000-level value is linear.
func NestedArray(depth int) []byte {
	sizes := make([]int, depth+1) // sizes[i]: AnyValue of level i, 0 innermost
	arraySize := func(i int) int { return 1 + protowire.SizeVarint(uint64(sizes[i-1])) + sizes[i-1] }
	for i := 1; i <= depth; i++ {
		a := arraySize(i)
		sizes[i] = 1 + protowire.SizeVarint(uint64(a)) + a
	}
	b := make([]byte, 0, sizes[depth])
	for i := depth; i >= 1; i-- {
		b = protowire.AppendTag(b, 5, protowire.BytesType) // AnyValue.array_value
		b = protowire.AppendVarint(b, uint64(arraySize(i)))
		b = protowire.AppendTag(b, 1, protowire.BytesType) // ArrayValue.values
		b = protowire.AppendVarint(b, uint64(sizes[i-1]))
	}
	return b
}

func field(b []byte, num protowire.Number, payload []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, payload)
}

// KeyValue encodes an attribute with an encoded AnyValue.
func KeyValue(key string, anyValue []byte) []byte {
	return field(field(nil, 1, []byte(key)), 2, anyValue)
}

// TraceRequest encodes an ExportTraceServiceRequest with one span of the
// given ids (16 and 8 bytes) carrying the encoded attributes.
func TraceRequest(traceID, spanID []byte, name string, attrs ...[]byte) []byte {
	span := field(field(nil, 1, traceID), 2, spanID)
	span = field(span, 5, []byte(name))
	span = protowire.AppendTag(span, 7, protowire.Fixed64Type) // start_time_unix_nano
	span = protowire.AppendFixed64(span, 1_700_000_000_000_000_000)
	span = protowire.AppendTag(span, 8, protowire.Fixed64Type) // end_time_unix_nano
	span = protowire.AppendFixed64(span, 1_700_000_000_001_000_000)
	for _, a := range attrs {
		span = field(span, 9, a)
	}
	return field(nil, 1, field(nil, 2, field(nil, 2, span)))
}

// LogsRequest encodes an ExportLogsServiceRequest with one record whose
// body is the encoded AnyValue.
func LogsRequest(body []byte) []byte {
	rec := field(nil, 5, body)
	return field(nil, 1, field(nil, 2, field(nil, 2, rec)))
}

// NestedArrayJSON is NestedArray as OTLP JSON AnyValue text.
func NestedArrayJSON(depth int) []byte {
	const open, close = `{"arrayValue":{"values":[`, `]}}`
	b := make([]byte, 0, depth*(len(open)+len(close))+2)
	for i := 0; i < depth; i++ {
		b = append(b, open...)
	}
	b = append(b, "{}"...)
	for i := 0; i < depth; i++ {
		b = append(b, close...)
	}
	return b
}

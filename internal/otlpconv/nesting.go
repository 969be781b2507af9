package otlpconv

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// MaxNesting is the deepest nesting of attribute values (AnyValue inside
// arrays and key-value lists) a request may carry at all. The OTLP decoders
// (pdata's protobuf and JSON) recurse once per level with no limit of their
// own: a 9.5 MB request nested a million levels deep costs them half a
// gigabyte of stack, and deeper ones overflow it and kill the process. So
// the raw bytes are scanned, without recursion, before they are decoded,
// and a request above this depth is refused as a whole. Values that pass
// are still cut to Limits.MaxDepth during conversion.
const MaxNesting = 128

// MalformedError says the scan could not read a request. The request is
// refused, not left to the decoder: pdata reads some encodings protobuf's
// own reader refuses (varints with a tenth byte over 1, groups skipped its
// own way), and past the point the scan stopped it could recurse into a
// value nested without limit.
type MalformedError struct {
	Offset int
	Err    error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("not valid protobuf at byte %d: %v", e.Offset, e.Err)
}

func (e *MalformedError) Unwrap() error { return e.Err }

// NestingError says a request is nested deeper than MaxNesting.
type NestingError struct{ Limit int }

func (e *NestingError) Error() string {
	return fmt.Sprintf("an attribute value is nested more than %d levels deep (arrays or maps inside each other): refused before decoding", e.Limit)
}

// Message kinds of the OTLP schema that can lead to an AnyValue.
type msgKind uint8

const (
	kindOther msgKind = iota
	kindTraceRequest
	kindLogsRequest
	kindResourceSpans
	kindResourceLogs
	kindResource
	kindScopeSpans
	kindScopeLogs
	kindScope
	kindSpan
	kindEvent
	kindLink
	kindLogRecord
	kindKeyValue
	kindAnyValue
	kindArray
	kindKVList
	numKinds
)

type fieldOf struct {
	in  msgKind
	num protowire.Number
}

// childKinds is childFields as a table, indexed by kind and field number:
// the scan looks up every length-delimited field of the request.
var childKinds = func() (t [numKinds][16]msgKind) {
	for f, k := range childFields {
		t[f.in][f.num] = k
	}
	return t
}()

// childFields are the length-delimited fields that hold messages on the way
// to an attribute value (field numbers of opentelemetry-proto); any other
// field is skipped unread.
var childFields = map[fieldOf]msgKind{
	{kindTraceRequest, 1}:  kindResourceSpans,
	{kindResourceSpans, 1}: kindResource,
	{kindResourceSpans, 2}: kindScopeSpans,
	{kindScopeSpans, 1}:    kindScope,
	{kindScopeSpans, 2}:    kindSpan,
	{kindSpan, 9}:          kindKeyValue,
	{kindSpan, 11}:         kindEvent,
	{kindSpan, 13}:         kindLink,
	{kindEvent, 3}:         kindKeyValue,
	{kindLink, 4}:          kindKeyValue,
	{kindLogsRequest, 1}:   kindResourceLogs,
	{kindResourceLogs, 1}:  kindResource,
	{kindResourceLogs, 2}:  kindScopeLogs,
	{kindScopeLogs, 1}:     kindScope,
	{kindScopeLogs, 2}:     kindLogRecord,
	{kindLogRecord, 5}:     kindAnyValue, // body
	{kindLogRecord, 6}:     kindKeyValue,
	{kindResource, 1}:      kindKeyValue,
	{kindScope, 3}:         kindKeyValue,
	{kindKeyValue, 2}:      kindAnyValue,
	{kindAnyValue, 5}:      kindArray,
	{kindAnyValue, 6}:      kindKVList,
	{kindArray, 1}:         kindAnyValue,
	{kindKVList, 1}:        kindKeyValue,
}

// CheckTracesProtoNesting scans an encoded ExportTraceServiceRequest (or
// TracesData, which has the same layout) and returns a *NestingError when
// an attribute value nests deeper than limit, and a *MalformedError when
// it cannot read the bytes.
func CheckTracesProtoNesting(data []byte, limit int) error {
	return checkProtoNesting(data, kindTraceRequest, limit)
}

// CheckLogsProtoNesting is CheckTracesProtoNesting for ExportLogsServiceRequest.
func CheckLogsProtoNesting(data []byte, limit int) error {
	return checkProtoNesting(data, kindLogsRequest, limit)
}

func checkProtoNesting(data []byte, root msgKind, limit int) error {
	type frame struct {
		kind  msgKind
		end   int
		depth int // AnyValues on the path
	}
	stack := []frame{{kind: root, end: len(data)}}
	pos := 0
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		if pos >= f.end {
			stack = stack[:len(stack)-1]
			continue
		}
		num, typ, n := tag(data[pos:f.end])
		if n < 0 {
			return malformed(pos, "unreadable field tag")
		}
		pos += n
		if typ != protowire.BytesType {
			if n = skipScalar(typ, num, data[pos:f.end]); n < 0 {
				return malformed(pos, fmt.Sprintf("unreadable value of field %d (wire type %d)", num, typ))
			}
			pos += n
			continue
		}
		size, n := varint(data[pos:f.end])
		if n < 0 || size > uint64(f.end-pos-n) {
			return malformed(pos, fmt.Sprintf("field %d: length runs past the end of its message", num))
		}
		pos += n
		child := childKind(f.kind, num)
		if child == kindOther {
			pos += int(size)
			continue
		}
		// The common attribute, a key and a scalar, is checked in place
		// (its value is one level deeper than this message).
		if child == kindKeyValue && f.depth < limit && scalarKeyValue(data[pos:pos+int(size)]) {
			pos += int(size)
			continue
		}
		depth := f.depth
		if child == kindAnyValue {
			if depth++; depth > limit {
				return &NestingError{Limit: limit}
			}
			if scalarAnyValue(data[pos : pos+int(size)]) {
				pos += int(size) // most values: nothing nested to look at
				continue
			}
		}
		stack = append(stack, frame{kind: child, end: pos + int(size), depth: depth})
	}
	return nil
}

func malformed(pos int, what string) error {
	return &MalformedError{Offset: pos, Err: errors.New(what)}
}

// childKind is the kind of message field num of a kind holds (kindOther
// for anything else). Field 1000 is the deprecated scope_spans or
// scope_logs, which pdata decodes (and uses when the current field is
// empty).
func childKind(in msgKind, num protowire.Number) msgKind {
	switch {
	case num > 0 && num < 16:
		return childKinds[in][num]
	case num == 1000 && in == kindResourceSpans:
		return kindScopeSpans
	case num == 1000 && in == kindResourceLogs:
		return kindScopeLogs
	}
	return kindOther
}

// varint, tag and skipScalar are protowire's, with the one-byte case
// inlined: the scan reads every field of a request, most of them small.
func varint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// tag reads a field number as pdata does: the low 32 bits of the tag's
// number, refused unless positive.
func tag(b []byte) (protowire.Number, protowire.Type, int) {
	v, n := varint(b)
	if n < 0 || int32(v>>3) <= 0 {
		return 0, 0, -1
	}
	return protowire.Number(int32(v >> 3)), protowire.Type(v & 7), n
}

// skipScalar returns the size of a field value that is not length-delimited.
func skipScalar(typ protowire.Type, num protowire.Number, b []byte) int {
	switch typ {
	case protowire.VarintType:
		_, n := varint(b)
		return n
	case protowire.Fixed64Type:
		if len(b) < 8 {
			return -1
		}
		return 8
	case protowire.Fixed32Type:
		if len(b) < 4 {
			return -1
		}
		return 4
	}
	// Groups (none in OTLP) are where pdata and protobuf part ways.
	return -1
}

// skipField returns the size of any field value.
func skipField(typ protowire.Type, num protowire.Number, b []byte) int {
	if typ != protowire.BytesType {
		return skipScalar(typ, num, b)
	}
	size, n := varint(b)
	if n < 0 || size > uint64(len(b)-n) {
		return -1
	}
	return n + int(size)
}

// scalarAnyValue reports whether an encoded AnyValue is exactly one field
// that is not an array or a key-value list.
func scalarAnyValue(b []byte) bool {
	num, typ, n := tag(b)
	if n < 0 || num == 5 || num == 6 {
		return false
	}
	m := skipField(typ, num, b[n:])
	return m >= 0 && n+m == len(b)
}

// scalarKeyValue reports whether an encoded KeyValue is well formed and
// its value, if any, a scalar.
func scalarKeyValue(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := skipField(typ, num, b)
		if m < 0 {
			return false
		}
		if num == 2 {
			size, k := varint(b)
			if typ != protowire.BytesType || !scalarAnyValue(b[k:k+int(size)]) {
				return false
			}
		}
		b = b[m:]
	}
	return true
}

// JSONNestingLimit is the bracket depth of OTLP JSON that holds attribute
// values nested up to MaxNesting: the envelope down to an event's
// attribute takes 14 levels, each further value level at most 4.
const JSONNestingLimit = 16 + 4*MaxNesting

// CheckJSONNesting returns a *NestingError when objects and arrays in data
// nest deeper than JSONNestingLimit. It reads bytes only, so it is safe on
// any input; syntax errors are left for the decoder.
func CheckJSONNesting(data []byte) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > JSONNestingLimit {
				return &NestingError{Limit: MaxNesting}
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

package otlpconv

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// AppendTracesJSON appends to b the OTLP JSON (a TracesData object) that
// pdata's ptrace.JSONMarshaler writes for TracesOf(traces), byte for byte,
// without building the pdata values: for an api_v3 search of 20 traces of
// 20 spans those were ~5,000 allocations and pdata's marshaller copied its
// result once more, allocations that drew GC mark phases into searches
// under ingest. json_test.go compares the two on awkward and random spans.
func AppendTracesJSON(b []byte, traces [][]model.Span) []byte {
	groups := groupTraces(traces)
	b = append(b, '{')
	if len(groups) > 0 {
		b = append(b, `"resourceSpans":[`...)
		for i := range groups {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendResourceSpansJSON(b, &groups[i])
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// tracesGroup is one ResourceSpans of TracesOf: the spans whose resource
// key (resourceKey) is the same, by scope, in the order both first appear.
type tracesGroup struct {
	first  *model.Span // its resource is the group's
	scopes []tracesScope
}

type tracesScope struct {
	name, version string
	spans         []*model.Span
}

// groupTraces groups the spans of traces as TracesOf puts them into
// ResourceSpans and ScopeSpans.
func groupTraces(traces [][]model.Span) []tracesGroup {
	var groups []tracesGroup
	resIdx := map[string]int{}
	// Resource keys already built: a span whose service and resource equal
	// an earlier span's has its key, and building one (sorted, joined text)
	// cost a handful of allocations per span of every api_v3 response.
	type known struct {
		service string
		res     model.Attrs
		key     string
	}
	var keys []known
	for _, spans := range traces {
		for i := range spans {
			s := &spans[i]
			rk := ""
			for _, k := range keys {
				if k.service == s.Service && k.res.Same(s.Resource) {
					rk = k.key
					break
				}
			}
			if rk == "" {
				rk = resourceKey(s)
				if len(keys) < 64 {
					keys = append(keys, known{s.Service, s.Resource, rk})
				}
			}
			g, ok := resIdx[rk]
			if !ok {
				g = len(groups)
				groups = append(groups, tracesGroup{first: s})
				resIdx[rk] = g
			}
			rg := &groups[g]
			k := 0
			for k < len(rg.scopes) && (rg.scopes[k].name != s.ScopeName || rg.scopes[k].version != s.ScopeVersion) {
				k++
			}
			if k == len(rg.scopes) {
				rg.scopes = append(rg.scopes, tracesScope{name: s.ScopeName, version: s.ScopeVersion})
			}
			rg.scopes[k].spans = append(rg.scopes[k].spans, s)
		}
	}
	return groups
}

func appendResourceSpansJSON(b []byte, g *tracesGroup) []byte {
	b = append(b, `{"resource":{`...)
	res := g.first.Resource
	addService := g.first.Service != "" && !hasKey(res, "service.name")
	if len(res) > 0 || addService {
		b = append(b, `"attributes":[`...)
		b = appendKeyValuesJSON(b, res)
		if addService {
			if len(res) > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"key":"service.name","value":{"stringValue":`...)
			b = appendJSONStr(b, g.first.Service)
			b = append(b, "}}"...)
		}
		b = append(b, ']')
	}
	b = append(b, `},"scopeSpans":[`...)
	for i := range g.scopes {
		sc := &g.scopes[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"scope":{`...)
		if sc.name != "" {
			b = append(b, `"name":`...)
			b = appendJSONStr(b, sc.name)
		}
		if sc.version != "" {
			if sc.name != "" {
				b = append(b, ',')
			}
			b = append(b, `"version":`...)
			b = appendJSONStr(b, sc.version)
		}
		b = append(b, `},"spans":[`...)
		for j, s := range sc.spans {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendSpanJSON(b, s)
		}
		b = append(b, "]}"...)
	}
	return append(b, "]}"...)
}

// jsonFields writes the comma between an object's fields: pdata leaves
// out empty ones, so whether one is needed depends on what came before.
type jsonFields struct{ any bool }

func (f *jsonFields) name(b []byte, name string) []byte {
	if f.any {
		b = append(b, ',')
	}
	f.any = true
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func (f *jsonFields) str(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONStr(f.name(b, name), v)
}

func (f *jsonFields) quotedUint(b []byte, name string, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = append(f.name(b, name), '"')
	b = strconv.AppendUint(b, v, 10)
	return append(b, '"')
}

func (f *jsonFields) int(b []byte, name string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(f.name(b, name), v, 10)
}

func (f *jsonFields) id(b []byte, name string, id []byte) []byte {
	for _, c := range id {
		if c != 0 {
			b = append(f.name(b, name), '"')
			b = hex.AppendEncode(b, id)
			return append(b, '"')
		}
	}
	return b
}

func (f *jsonFields) attrs(b []byte, attrs model.Attrs) []byte {
	if len(attrs) == 0 {
		return b
	}
	b = append(f.name(b, "attributes"), '[')
	b = appendKeyValuesJSON(b, attrs)
	return append(b, ']')
}

// appendSpanJSON writes the fields putSpan sets, in the order and with the
// omissions of pdata's Span JSON.
func appendSpanJSON(b []byte, s *model.Span) []byte {
	var f jsonFields
	b = append(b, '{')
	b = f.id(b, "traceId", s.TraceID[:])
	b = f.id(b, "spanId", s.SpanID[:])
	b = f.str(b, "traceState", s.TraceState)
	b = f.id(b, "parentSpanId", s.ParentSpanID[:])
	b = f.int(b, "flags", int64(s.Flags))
	b = f.str(b, "name", s.Name)
	b = f.int(b, "kind", int64(int32(s.Kind)))
	b = f.quotedUint(b, "startTimeUnixNano", s.StartUnixNano)
	b = f.quotedUint(b, "endTimeUnixNano", s.EndUnixNano)
	b = f.attrs(b, s.Attrs)
	b = f.int(b, "droppedAttributesCount", int64(s.DroppedAttributesCount))
	if len(s.Events) > 0 {
		b = append(f.name(b, "events"), '[')
		for i := range s.Events {
			e := &s.Events[i]
			if i > 0 {
				b = append(b, ',')
			}
			var ef jsonFields
			b = append(b, '{')
			b = ef.quotedUint(b, "timeUnixNano", e.TimeUnixNano)
			b = ef.str(b, "name", e.Name)
			b = ef.attrs(b, e.Attrs)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = f.int(b, "droppedEventsCount", int64(s.DroppedEventsCount))
	if len(s.Links) > 0 {
		b = append(f.name(b, "links"), '[')
		for i := range s.Links {
			l := &s.Links[i]
			if i > 0 {
				b = append(b, ',')
			}
			var lf jsonFields
			b = append(b, '{')
			b = lf.id(b, "traceId", l.TraceID[:])
			b = lf.id(b, "spanId", l.SpanID[:])
			b = lf.str(b, "traceState", l.TraceState)
			b = lf.attrs(b, l.Attrs)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = f.int(b, "droppedLinksCount", int64(s.DroppedLinksCount))
	b = append(f.name(b, "status"), '{')
	var sf jsonFields
	b = sf.str(b, "message", s.StatusMessage)
	b = sf.int(b, "code", int64(int32(s.StatusCode)))
	return append(b, "}}"...)
}

// appendKeyValuesJSON writes attrs as PutAttrs puts them into a pdata map:
// a key given twice keeps its first place and takes its last value
// (pcommon.Map.PutEmpty).
func appendKeyValuesJSON(b []byte, attrs model.Attrs) []byte {
	dup := hasDuplicateKey(attrs)
	n := 0
	for i := range attrs {
		a := &attrs[i]
		if dup {
			if firstKeyAt(attrs, a.Key) < i {
				continue
			}
			a = &attrs[lastKeyAt(attrs, a.Key)]
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendKeyJSON(b, a.Key)
		b = appendValueJSON(b, a.Value)
		b = append(b, '}')
	}
	return b
}

// appendKeyJSON opens a KeyValue up to its value: pdata leaves an empty
// key out.
func appendKeyJSON(b []byte, key string) []byte {
	b = append(b, '{')
	if key != "" {
		b = append(b, `"key":`...)
		b = appendJSONStr(b, key)
		b = append(b, ',')
	}
	return append(b, `"value":`...)
}

func hasDuplicateKey(attrs model.Attrs) bool {
	if len(attrs) > 32 {
		seen := make(map[string]struct{}, len(attrs))
		for i := range attrs {
			if _, ok := seen[attrs[i].Key]; ok {
				return true
			}
			seen[attrs[i].Key] = struct{}{}
		}
		return false
	}
	for i := range attrs {
		for j := range i {
			if attrs[j].Key == attrs[i].Key {
				return true
			}
		}
	}
	return false
}

func firstKeyAt(attrs model.Attrs, key string) int {
	for i := range attrs {
		if attrs[i].Key == key {
			return i
		}
	}
	return -1
}

func lastKeyAt(attrs model.Attrs, key string) int {
	for i := len(attrs) - 1; i >= 0; i-- {
		if attrs[i].Key == key {
			return i
		}
	}
	return -1
}

// appendValueJSON writes the AnyValue PutValue makes of v.
func appendValueJSON(b []byte, v model.Value) []byte {
	switch v.Type {
	case model.TypeString:
		b = append(b, `{"stringValue":`...)
		b = appendJSONStr(b, v.Str)
	case model.TypeInt:
		b = append(b, `{"intValue":"`...)
		b = strconv.AppendInt(b, v.Int, 10)
		b = append(b, '"')
	case model.TypeDouble:
		b = append(b, `{"doubleValue":`...)
		b = appendJSONDouble(b, v.Float)
	case model.TypeBool:
		b = append(b, `{"boolValue":`...)
		b = strconv.AppendBool(b, v.Bool)
	case model.TypeBytes:
		b = append(b, `{"bytesValue":"`...)
		b = base64.StdEncoding.AppendEncode(b, v.Bytes)
		b = append(b, '"')
	case model.TypeArray, model.TypeMap:
		n, err := parseComposite(v.Str)
		if err != nil {
			// Cut to MaxValueBytes (or not JSON at all): the text as it is.
			b = append(b, `{"stringValue":`...)
			b = appendJSONStr(b, v.Str)
			break
		}
		return appendNodeJSON(b, &n)
	default:
		b = append(b, '{')
	}
	return append(b, '}')
}

// appendJSONDouble writes a double as pdata does: the special values as
// protobuf JSON's strings, others as jsoniter formats a float64.
func appendJSONDouble(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

// appendJSONStr quotes s as pdata's JSON stream (jsoniter's fastest
// configuration) does: only '"', '\\' and control bytes are escaped, bytes
// from 0x80 up are copied as they are, valid UTF-8 or not.
func appendJSONStr(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonNode is an array or map value parsed from its stored JSON text, for
// pdata (putJSON) and for the JSON written straight (appendNodeJSON):
// whether the text converts at all is only known at its end, and then the
// text is written as a string instead.
type jsonNode struct {
	kind  byte // 'a' array, 'm' map, 's' string, 'i' int, 'd' double, 'b' bool, 0 empty
	str   string
	i     int64
	f     float64
	bool  bool
	keys  []string
	items []jsonNode
}

// parseComposite reads the JSON text of an array or map value: the
// decoder's tokens, numbers as ints when they parse as int64, and nothing
// after the value.
func parseComposite(text string) (jsonNode, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var n jsonNode
	if err := parseNode(&n, dec); err != nil {
		return n, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return n, errors.New("text after the JSON value")
	}
	return n, nil
}

func parseNode(n *jsonNode, dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n.kind = 'm'
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := k.(string)
				// A key given twice keeps its first place and takes the
				// later value, as pcommon.Map.PutEmpty does.
				at := len(n.items)
				for j, have := range n.keys {
					if have == key {
						at = j
						break
					}
				}
				if at == len(n.items) {
					n.keys = append(n.keys, key)
					n.items = append(n.items, jsonNode{})
				} else {
					n.items[at] = jsonNode{}
				}
				if err := parseNode(&n.items[at], dec); err != nil {
					return err
				}
			}
		case '[':
			n.kind = 'a'
			for dec.More() {
				n.items = append(n.items, jsonNode{})
				if err := parseNode(&n.items[len(n.items)-1], dec); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unexpected %q", t)
		}
		_, err := dec.Token() // the closing delimiter
		return err
	case string:
		n.kind, n.str = 's', t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			n.kind, n.i = 'i', i
		} else if f, err := t.Float64(); err == nil {
			n.kind, n.f = 'd', f
		} else {
			return err
		}
	case bool:
		n.kind, n.bool = 'b', t
	case nil:
		// An empty value, as pdata's FromRaw makes of a nil.
	}
	return nil
}

func appendNodeJSON(b []byte, n *jsonNode) []byte {
	switch n.kind {
	case 's':
		b = append(b, `{"stringValue":`...)
		b = appendJSONStr(b, n.str)
	case 'i':
		b = append(b, `{"intValue":"`...)
		b = strconv.AppendInt(b, n.i, 10)
		b = append(b, '"')
	case 'd':
		b = append(b, `{"doubleValue":`...)
		b = appendJSONDouble(b, n.f)
	case 'b':
		b = append(b, `{"boolValue":`...)
		b = strconv.AppendBool(b, n.bool)
	case 'a', 'm':
		if n.kind == 'a' {
			b = append(b, `{"arrayValue":{`...)
		} else {
			b = append(b, `{"kvlistValue":{`...)
		}
		if len(n.items) > 0 {
			b = append(b, `"values":[`...)
			for i := range n.items {
				if i > 0 {
					b = append(b, ',')
				}
				if n.kind == 'm' {
					b = appendKeyJSON(b, n.keys[i])
					b = appendNodeJSON(b, &n.items[i])
					b = append(b, '}')
				} else {
					b = appendNodeJSON(b, &n.items[i])
				}
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	default:
		b = append(b, '{')
	}
	return append(b, '}')
}

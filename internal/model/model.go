// Package model holds tracedx's in-memory span model. Every part of tracedx
// (ingest, storage, query, analysis) speaks this model; wire formats are
// converted at the edges.
//
// The model is deliberately flat (one Span value carries its resource and
// scope) because storage is columnar and analysis walks spans, and both want
// a span to be self-describing. Dictionary encoding in storage removes the
// repetition of resource attributes.
package model

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TraceID is a 128-bit W3C trace id.
type TraceID [16]byte

// SpanID is a 64-bit W3C span id.
type SpanID [8]byte

// IsZero reports whether the id is all zero (invalid per W3C).
func (t TraceID) IsZero() bool { return t == TraceID{} }

// IsZero reports whether the id is all zero (no parent / invalid).
func (s SpanID) IsZero() bool { return s == SpanID{} }

// String returns the 32-char lowercase hex form.
func (t TraceID) String() string { return hex.EncodeToString(t[:]) }

// String returns the 16-char lowercase hex form.
func (s SpanID) String() string { return hex.EncodeToString(s[:]) }

// ErrBadID is returned for ids that are not valid hex of an accepted length.
var ErrBadID = errors.New("invalid id")

// ParseTraceID accepts 32 hex chars, or 16 hex chars (64-bit Zipkin/Jaeger
// ids, left-padded with zeros as Jaeger and Zipkin do). Shorter odd-length
// forms that Jaeger emits without leading zeros are also accepted.
func ParseTraceID(s string) (TraceID, error) {
	var t TraceID
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > 32 {
		return t, fmt.Errorf("%w: trace id %q must be 16 or 32 hex characters", ErrBadID, Clip(s, 40))
	}
	if len(s) < 32 {
		s = strings.Repeat("0", 32-len(s)) + s
	}
	if _, err := hex.Decode(t[:], []byte(s)); err != nil {
		return t, fmt.Errorf("%w: trace id %q is not hex", ErrBadID, Clip(s, 40))
	}
	return t, nil
}

// ParseSpanID accepts up to 16 hex chars (left-padded).
func ParseSpanID(s string) (SpanID, error) {
	var id SpanID
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > 16 {
		return id, fmt.Errorf("%w: span id %q must be 16 hex characters", ErrBadID, Clip(s, 40))
	}
	if len(s) < 16 {
		s = strings.Repeat("0", 16-len(s)) + s
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: span id %q is not hex", ErrBadID, Clip(s, 40))
	}
	return id, nil
}

// Clip shortens s to at most n bytes plus "…" for titles and messages,
// without splitting a UTF-8 sequence (a cut rune would show as U+FFFD).
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// SpanKind follows OTLP numbering so conversion is a cast.
type SpanKind uint8

const (
	KindUnspecified SpanKind = 0
	KindInternal    SpanKind = 1
	KindServer      SpanKind = 2
	KindClient      SpanKind = 3
	KindProducer    SpanKind = 4
	KindConsumer    SpanKind = 5
)

var kindNames = [...]string{"unspecified", "internal", "server", "client", "producer", "consumer"}

// String returns the lowercase name used by TraceQL and our API
// ("server", "client", ...).
func (k SpanKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unspecified"
}

// ParseSpanKind accepts "server", "SERVER", "SPAN_KIND_SERVER" and the like.
func ParseSpanKind(s string) (SpanKind, bool) {
	s = strings.ToLower(strings.TrimPrefix(strings.ToUpper(s), "SPAN_KIND_"))
	for i, n := range kindNames {
		if n == s {
			return SpanKind(i), true
		}
	}
	return 0, false
}

// StatusCode follows OTLP numbering.
type StatusCode uint8

const (
	StatusUnset StatusCode = 0
	StatusOK    StatusCode = 1
	StatusError StatusCode = 2
)

// String returns "unset", "ok" or "error".
func (c StatusCode) String() string {
	switch c {
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	default:
		return "unset"
	}
}

// ValueType is the type of an attribute value.
type ValueType uint8

const (
	TypeEmpty ValueType = iota
	TypeString
	TypeBool
	TypeInt
	TypeDouble
	TypeBytes
	// TypeArray and TypeMap values keep their OTLP JSON encoding in Str so the
	// model stays flat; they are rare in practice and only ever displayed.
	TypeArray
	TypeMap
)

// Value is an attribute value. Only the field matching Type is meaningful.
type Value struct {
	Type  ValueType
	Str   string // TypeString; JSON text for TypeArray/TypeMap
	Int   int64
	Float float64
	Bool  bool
	Bytes []byte
}

// Str returns a string value.
func Str(s string) Value { return Value{Type: TypeString, Str: s} }

// Int returns an int value.
func Int(i int64) Value { return Value{Type: TypeInt, Int: i} }

// Float returns a double value.
func Float(f float64) Value { return Value{Type: TypeDouble, Float: f} }

// Bool returns a bool value.
func Bool(b bool) Value { return Value{Type: TypeBool, Bool: b} }

// AsString renders any value as text (for display, search by equality on
// strings, and normalisation).
func (v Value) AsString() string {
	switch v.Type {
	case TypeString, TypeArray, TypeMap:
		return v.Str
	case TypeBool:
		return strconv.FormatBool(v.Bool)
	case TypeInt:
		return strconv.FormatInt(v.Int, 10)
	case TypeDouble:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	case TypeBytes:
		return hex.EncodeToString(v.Bytes)
	}
	return ""
}

// AsFloat returns the numeric value of ints, doubles and numeric strings.
func (v Value) AsFloat() (float64, bool) {
	switch v.Type {
	case TypeInt:
		return float64(v.Int), true
	case TypeDouble:
		return v.Float, true
	case TypeString:
		if !mayBeFloat(v.Str) {
			// Most string attributes are words; ParseFloat would allocate
			// an error for each of them.
			return 0, false
		}
		f, err := strconv.ParseFloat(v.Str, 64)
		return f, err == nil
	}
	return 0, false
}

// mayBeFloat: the first byte of anything strconv.ParseFloat accepts (a
// digit, a sign, a point, or the start of inf, infinity and nan).
func mayBeFloat(s string) bool {
	if s == "" {
		return false
	}
	switch c := s[0]; {
	case c >= '0' && c <= '9', c == '+', c == '-', c == '.':
		return true
	case c|0x20 == 'i', c|0x20 == 'n':
		return true
	}
	return false
}

// AsInt returns the integer value of ints, integral doubles and numeric strings.
func (v Value) AsInt() (int64, bool) {
	switch v.Type {
	case TypeInt:
		return v.Int, true
	case TypeDouble:
		return int64(v.Float), v.Float == float64(int64(v.Float))
	case TypeString:
		i, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64)
		return i, err == nil
	}
	return 0, false
}

// Attr is one key/value pair.
type Attr struct {
	Key   string
	Value Value
}

// Attrs is an ordered attribute list. Lists are short (tens), so linear
// lookup beats a map in both speed and memory.
type Attrs []Attr

// Get returns the value for key.
func (a Attrs) Get(key string) (Value, bool) {
	for i := range a {
		if a[i].Key == key {
			return a[i].Value, true
		}
	}
	return Value{}, false
}

// First returns the value of the first key present, so callers can read old
// and current semantic-convention names in one call:
// a.First("http.response.status_code", "http.status_code").
func (a Attrs) First(keys ...string) (Value, bool) {
	for _, k := range keys {
		if v, ok := a.Get(k); ok {
			return v, true
		}
	}
	return Value{}, false
}

// Str returns the string form of the first present key, or "".
func (a Attrs) Str(keys ...string) string {
	// First's answer would be copied twice on its way here; diagnosis
	// reads attributes of every span many times over.
	for _, k := range keys {
		for i := range a {
			if v := &a[i].Value; a[i].Key == k {
				if v.Type == TypeString {
					return v.Str
				}
				return v.AsString()
			}
		}
	}
	return ""
}

// Event is a span event (OTLP) / log (Jaeger) / annotation (Zipkin).
type Event struct {
	TimeUnixNano uint64
	Name         string
	Attrs        Attrs
}

// Link is a span link.
type Link struct {
	TraceID    TraceID
	SpanID     SpanID
	TraceState string
	Attrs      Attrs
}

// Span is one span with its resource and scope.
type Span struct {
	TraceID       TraceID
	SpanID        SpanID
	ParentSpanID  SpanID
	TraceState    string
	Flags         uint32
	Name          string
	Kind          SpanKind
	StartUnixNano uint64
	EndUnixNano   uint64
	StatusCode    StatusCode
	StatusMessage string

	// Service is resource attribute service.name, denormalised because
	// nearly every query and detector needs it. "unknown_service" when absent.
	Service      string
	Resource     Attrs
	ScopeName    string
	ScopeVersion string

	Attrs  Attrs
	Events []Event
	Links  []Link

	DroppedAttributesCount uint32
	DroppedEventsCount     uint32
	DroppedLinksCount      uint32
}

// Clone returns a copy of s that shares no slice with it (strings are
// shared: they cannot change). A receiver reuses the memory of the spans
// it hands to its sink, so a sink that keeps spans keeps clones.
func (s *Span) Clone() Span {
	c := *s
	c.Resource, c.Attrs = s.Resource.Clone(), s.Attrs.Clone()
	if s.Events != nil {
		c.Events = make([]Event, len(s.Events))
		for i, e := range s.Events {
			e.Attrs = e.Attrs.Clone()
			c.Events[i] = e
		}
	}
	if s.Links != nil {
		c.Links = make([]Link, len(s.Links))
		for i, l := range s.Links {
			l.Attrs = l.Attrs.Clone()
			c.Links[i] = l
		}
	}
	return c
}

// AppendClones appends clones of spans to dst.
func AppendClones(dst []Span, spans []Span) []Span {
	for i := range spans {
		dst = append(dst, spans[i].Clone())
	}
	return dst
}

// Same reports whether a and b hold the same keys and values with the
// same types, in order. Lists that are one slice (spans of one batch
// share their resource's) are the same without a look at their contents.
func (a Attrs) Same(b Attrs) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		x, y := &a[i].Value, &b[i].Value
		if a[i].Key != b[i].Key || x.Type != y.Type || x.Str != y.Str || x.Int != y.Int ||
			x.Float != y.Float || x.Bool != y.Bool || !bytes.Equal(x.Bytes, y.Bytes) {
			return false
		}
	}
	return true
}

// Clone returns a copy of a that shares no slice with it.
func (a Attrs) Clone() Attrs {
	if a == nil {
		return nil
	}
	c := make(Attrs, len(a))
	for i, x := range a {
		if x.Value.Bytes != nil {
			x.Value.Bytes = append([]byte{}, x.Value.Bytes...)
		}
		c[i] = x
	}
	return c
}

// DurationNano returns end-start, or 0 when end precedes start.
func (s *Span) DurationNano() uint64 {
	if s.EndUnixNano < s.StartUnixNano {
		return 0
	}
	return s.EndUnixNano - s.StartUnixNano
}

// IsRoot reports whether the span has no parent.
func (s *Span) IsRoot() bool { return s.ParentSpanID.IsZero() }

// Attr looks a key up in span attributes, then resource attributes.
func (s *Span) Attr(keys ...string) (Value, bool) {
	if v, ok := s.Attrs.First(keys...); ok {
		return v, true
	}
	return s.Resource.First(keys...)
}

// UnknownService is used when a resource carries no service.name, as the
// OpenTelemetry SDKs do.
const UnknownService = "unknown_service"

// TraceSummary describes one trace in search results.
type TraceSummary struct {
	TraceID       TraceID
	RootService   string // "" when the root span has not arrived
	RootName      string
	StartUnixNano uint64 // earliest span start
	EndUnixNano   uint64 // latest span end
	SpanCount     int
	ErrorCount    int
	// Services lists each service with its span and error counts.
	Services []ServiceStats
}

// ServiceStats is a per-service span count inside a trace.
type ServiceStats struct {
	Name       string
	SpanCount  int
	ErrorCount int
}

// DurationNano of the trace.
func (t *TraceSummary) DurationNano() uint64 {
	if t.EndUnixNano < t.StartUnixNano {
		return 0
	}
	return t.EndUnixNano - t.StartUnixNano
}

// Summarize builds the summary of one trace's spans.
func Summarize(spans []Span) TraceSummary {
	var ts TraceSummary
	if len(spans) == 0 {
		return ts
	}
	ts.TraceID = spans[0].TraceID
	idx := map[string]int{}
	var rootStart uint64
	for i := range spans {
		s := &spans[i]
		if ts.StartUnixNano == 0 || s.StartUnixNano < ts.StartUnixNano {
			ts.StartUnixNano = s.StartUnixNano
		}
		if s.EndUnixNano > ts.EndUnixNano {
			ts.EndUnixNano = s.EndUnixNano
		}
		// Several roots happen with broken propagation; the earliest one is
		// what a user thinks of as "the request".
		if s.IsRoot() && (ts.RootName == "" || s.StartUnixNano < rootStart) {
			ts.RootService, ts.RootName, rootStart = s.Service, s.Name, s.StartUnixNano
		}
		ts.SpanCount++
		j, ok := idx[s.Service]
		if !ok {
			j = len(ts.Services)
			idx[s.Service] = j
			ts.Services = append(ts.Services, ServiceStats{Name: s.Service})
		}
		ts.Services[j].SpanCount++
		if s.StatusCode == StatusError {
			ts.ErrorCount++
			ts.Services[j].ErrorCount++
		}
	}
	return ts
}

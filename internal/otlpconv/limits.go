package otlpconv

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tracedx/tracedx/internal/model"
)

// Limits bound what one span may cost after conversion. A hostile client
// can send an attribute value nested a million levels deep or megabytes
// long inside an otherwise small request; conversion keeps the span but
// cuts the value, and drops attributes, events and links beyond the counts
// the way OpenTelemetry SDKs do (counting them in the span's dropped
// counts), so one bad attribute never costs the whole request.
type Limits struct {
	// MaxDepth is the deepest nesting of arrays and maps kept inside one
	// attribute value; deeper parts are replaced by DepthMarker.
	MaxDepth int
	// MaxValueBytes bounds a string or bytes value and the JSON text of an
	// array or map value; longer values are cut and end in ValueMarker.
	MaxValueBytes int
	// MaxAttrs bounds each attribute set (span, resource, scope, event,
	// link, log record).
	MaxAttrs  int
	MaxEvents int
	MaxLinks  int
}

// DefaultLimits are generous for real instrumentation: OpenTelemetry SDKs
// default to 128 attributes, events and links per span.
func DefaultLimits() Limits {
	return Limits{MaxDepth: 32, MaxValueBytes: 64 << 10, MaxAttrs: 128, MaxEvents: 128, MaxLinks: 128}
}

// Validate reports limits that cannot work.
func (l Limits) Validate() error {
	switch {
	case l.MaxDepth < 1 || l.MaxDepth > MaxNesting:
		return fmt.Errorf("attribute depth limit %d: want 1..%d", l.MaxDepth, MaxNesting)
	case l.MaxValueBytes < 64:
		return fmt.Errorf("attribute value limit %d bytes: want at least 64", l.MaxValueBytes)
	case l.MaxAttrs < 1, l.MaxEvents < 0, l.MaxLinks < 0:
		return fmt.Errorf("attribute, event and link limits must be positive (got %d, %d, %d)", l.MaxAttrs, l.MaxEvents, l.MaxLinks)
	}
	return nil
}

// Markers left where conversion cut a value.
const (
	DepthMarker = "…[truncated: nested too deep]"
	ValueMarker = "…[truncated]"
)

// Stats counts what conversion cut or dropped.
type Stats struct {
	TruncatedValues int // values cut for depth or size
	DroppedAttrs    int
	DroppedEvents   int
	DroppedLinks    int
}

// Any reports whether anything was cut.
func (s Stats) Any() bool {
	return s.TruncatedValues+s.DroppedAttrs+s.DroppedEvents+s.DroppedLinks > 0
}

func (s Stats) String() string {
	return fmt.Sprintf("%d value(s) truncated, %d attribute(s), %d event(s) and %d link(s) dropped over the limits",
		s.TruncatedValues, s.DroppedAttrs, s.DroppedEvents, s.DroppedLinks)
}

// converter carries the limits and the running stats through one request.
type converter struct {
	lim   Limits
	stats Stats
}

func (c *converter) value(v pcommon.Value) model.Value {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return model.Value{Type: model.TypeString, Str: c.clipStr(v.Str())}
	case pcommon.ValueTypeInt:
		return model.Value{Type: model.TypeInt, Int: v.Int()}
	case pcommon.ValueTypeDouble:
		return model.Value{Type: model.TypeDouble, Float: v.Double()}
	case pcommon.ValueTypeBool:
		return model.Value{Type: model.TypeBool, Bool: v.Bool()}
	case pcommon.ValueTypeBytes:
		b := v.Bytes().AsRaw()
		if len(b) > c.lim.MaxValueBytes {
			c.stats.TruncatedValues++
			b = b[:c.lim.MaxValueBytes]
		}
		return model.Value{Type: model.TypeBytes, Bytes: b}
	case pcommon.ValueTypeSlice:
		return model.Value{Type: model.TypeArray, Str: c.composite(v)}
	case pcommon.ValueTypeMap:
		return model.Value{Type: model.TypeMap, Str: c.composite(v)}
	}
	return model.Value{}
}

func (c *converter) clipStr(s string) string {
	if len(s) <= c.lim.MaxValueBytes {
		return s
	}
	c.stats.TruncatedValues++
	return clipUTF8(s, c.lim.MaxValueBytes-len(ValueMarker)) + ValueMarker
}

// clipUTF8 cuts s to at most n bytes without splitting a rune.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// composite renders an array or map as JSON text (the form the model keeps),
// with map keys sorted as encoding/json does. Recursion is bounded by
// MaxDepth, not by the input, and output stops growing at MaxValueBytes.
func (c *converter) composite(v pcommon.Value) string {
	w := jsonWriter{lim: c.lim}
	w.value(v, 0)
	return c.compositeText(&w)
}

// compositeText is the text of a rendered array or map, cut to
// MaxValueBytes.
func (c *converter) compositeText(w *jsonWriter) string {
	if w.cutDepth || len(w.buf) > c.lim.MaxValueBytes {
		c.stats.TruncatedValues++
	}
	if len(w.buf) > c.lim.MaxValueBytes {
		return clipUTF8(string(w.buf), c.lim.MaxValueBytes-len(ValueMarker)) + ValueMarker
	}
	return string(w.buf)
}

type jsonWriter struct {
	lim      Limits
	buf      []byte
	cutDepth bool
	enc      *json.Encoder
	tmp      bytes.Buffer
}

func (w *jsonWriter) full() bool { return len(w.buf) > w.lim.MaxValueBytes }

func (w *jsonWriter) value(v pcommon.Value, depth int) {
	if w.full() {
		return
	}
	switch v.Type() {
	case pcommon.ValueTypeSlice, pcommon.ValueTypeMap:
		if depth >= w.lim.MaxDepth {
			w.cutDepth = true
			w.str(DepthMarker)
			return
		}
	}
	switch v.Type() {
	case pcommon.ValueTypeStr:
		w.str(v.Str())
	case pcommon.ValueTypeInt, pcommon.ValueTypeBool:
		w.buf = append(w.buf, v.AsString()...)
	case pcommon.ValueTypeDouble:
		w.double(v.Double())
	case pcommon.ValueTypeBytes:
		w.bytes(v.Bytes().AsRaw())
	case pcommon.ValueTypeSlice:
		s := v.Slice()
		w.buf = append(w.buf, '[')
		for i := 0; i < s.Len() && !w.full(); i++ {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.value(s.At(i), depth+1)
		}
		w.buf = append(w.buf, ']')
	case pcommon.ValueTypeMap:
		m := v.Map()
		keys := make([]string, 0, m.Len())
		m.Range(func(k string, _ pcommon.Value) bool { keys = append(keys, k); return true })
		sort.Strings(keys)
		w.buf = append(w.buf, '{')
		for i, k := range keys {
			if w.full() {
				break
			}
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.str(k)
			w.buf = append(w.buf, ':')
			mv, _ := m.Get(k)
			w.value(mv, depth+1)
		}
		w.buf = append(w.buf, '}')
	default:
		w.buf = append(w.buf, "null"...)
	}
}

func (w *jsonWriter) double(f float64) {
	b, err := json.Marshal(f)
	if err != nil { // NaN and infinities have no JSON form
		b = []byte("null")
	}
	w.buf = append(w.buf, b...)
}

func (w *jsonWriter) bytes(b []byte) {
	w.buf = append(w.buf, '"')
	w.buf = base64.StdEncoding.AppendEncode(w.buf, b)
	w.buf = append(w.buf, '"')
}

// str writes s as a JSON string the way pdata's AsString does (no HTML
// escaping).
func (w *jsonWriter) str(s string) {
	if w.enc == nil {
		w.enc = json.NewEncoder(&w.tmp)
		w.enc.SetEscapeHTML(false)
	}
	w.tmp.Reset()
	_ = w.enc.Encode(s) // a string always encodes
	w.buf = append(w.buf, bytes.TrimSuffix(w.tmp.Bytes(), []byte("\n"))...)
}

// attrs converts up to MaxAttrs attributes of m into dst and returns it
// and the number dropped.
func (c *converter) attrs(dst model.Attrs, m pcommon.Map) (model.Attrs, int) {
	n := 0
	m.Range(func(k string, v pcommon.Value) bool {
		if n == c.lim.MaxAttrs {
			return false
		}
		dst = append(dst, model.Attr{Key: c.clipStr(k), Value: c.value(v)})
		n++
		return true
	})
	dropped := m.Len() - n
	c.stats.DroppedAttrs += dropped
	return dst, dropped
}

func (c *converter) attrsFromMap(m pcommon.Map) model.Attrs {
	if m.Len() == 0 {
		return nil
	}
	out, _ := c.attrs(make(model.Attrs, 0, min(m.Len(), c.lim.MaxAttrs)), m)
	return out
}

// AttrsFromMapLimited converts an OTLP attribute map under lim.
func AttrsFromMapLimited(m pcommon.Map, lim Limits) model.Attrs {
	c := converter{lim: lim}
	return c.attrsFromMap(m)
}

// ValueTextLimited renders a value as text under lim ("" for an empty
// value); arrays and maps as JSON.
func ValueTextLimited(v pcommon.Value, lim Limits) string {
	switch v.Type() {
	case pcommon.ValueTypeEmpty:
		return ""
	case pcommon.ValueTypeBytes: // base64, as pdata renders bytes
		b := v.Bytes().AsRaw()
		return base64.StdEncoding.EncodeToString(b[:min(len(b), lim.MaxValueBytes)])
	}
	c := converter{lim: lim}
	return c.value(v).AsString()
}

// LimitSpans applies lim to spans converted from formats without nested
// values (Zipkin): strings are cut, attributes and events over the counts
// dropped and counted in the spans' dropped counts.
func LimitSpans(spans []model.Span, lim Limits) Stats {
	c := converter{lim: lim}
	for i := range spans {
		sp := &spans[i]
		sp.Name, sp.StatusMessage = c.clipStr(sp.Name), c.clipStr(sp.StatusMessage)
		var dropped int
		sp.Attrs, dropped = c.clipAttrs(sp.Attrs)
		sp.DroppedAttributesCount = saturatingAdd(sp.DroppedAttributesCount, dropped)
		if n := len(sp.Events) - lim.MaxEvents; n > 0 {
			sp.Events = sp.Events[:lim.MaxEvents]
			sp.DroppedEventsCount = saturatingAdd(sp.DroppedEventsCount, n)
			c.stats.DroppedEvents += n
		}
		for j := range sp.Events {
			sp.Events[j].Name = c.clipStr(sp.Events[j].Name)
			sp.Events[j].Attrs, _ = c.clipAttrs(sp.Events[j].Attrs)
		}
	}
	return c.stats
}

func (c *converter) clipAttrs(a model.Attrs) (model.Attrs, int) {
	dropped := max(len(a)-c.lim.MaxAttrs, 0)
	a = a[:len(a)-dropped]
	c.stats.DroppedAttrs += dropped
	for i := range a {
		a[i].Key = c.clipStr(a[i].Key)
		if a[i].Value.Type == model.TypeString {
			a[i].Value.Str = c.clipStr(a[i].Value.Str)
		}
	}
	return a, dropped
}

package tempo

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/api/jsonappend"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

func (h *handler) traceV1(w http.ResponseWriter, r *http.Request) { h.trace(w, r, false) }
func (h *handler) traceV2(w http.ResponseWriter, r *http.Request) { h.trace(w, r, true) }

// trace answers /api/traces/{id} (v1: a bare tempopb.Trace) and
// /api/v2/traces/{id} (a tempopb.TraceByIDResponse wrapping it).
func (h *handler) trace(w http.ResponseWriter, r *http.Request, v2 bool) {
	id, err := model.ParseTraceID(r.PathValue("traceID"))
	if err != nil {
		h.fail(w, r, badRequest{fmt.Sprintf("invalid trace id: %v", err)})
		return
	}
	q := r.URL.Query()
	start, err := parseUnixSeconds(q.Get("start"), "start")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	end, err := parseUnixSeconds(q.Get("end"), "end")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if start != 0 && end != 0 && end <= start {
		h.fail(w, r, badRequest{fmt.Sprintf("http parameter start must be before end. received start=%s end=%s", q.Get("start"), q.Get("end"))})
		return
	}
	spans, _, err := store.TraceCapped(r.Context(), h.st, id, store.TimeRange{Start: start, End: end}, h.opts.MaxTraceSpans)
	if err == nil && len(spans) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	td := otlpconv.ToTraces(spans)
	if wantsProtobuf(r) {
		// tempopb.Trace is wire-identical to OTLP TracesData (field 1:
		// repeated ResourceSpans); TraceByIDResponse holds it in field 1.
		var m ptrace.ProtoMarshaler
		body, err := m.MarshalTraces(td)
		if err != nil {
			h.fail(w, r, fmt.Errorf("encode trace: %w", err))
			return
		}
		if v2 {
			wrapped := protowire.AppendTag(nil, 1, protowire.BytesType)
			body = protowire.AppendBytes(wrapped, body)
		}
		w.Header().Set("Content-Type", "application/protobuf")
		_, _ = w.Write(body)
		return
	}
	b := jsonBufs.Get().(*bytes.Buffer)
	defer putJSONBuf(b)
	b.Reset()
	if v2 {
		b.WriteString(`{"trace":{"resourceSpans":`)
		writeResourceSpans(b, td)
		b.WriteString("}}")
	} else {
		// Tempo keeps the pre-OTLP "batches" key on the v1 JSON endpoint.
		b.WriteString(`{"batches":`)
		writeResourceSpans(b, td)
		b.WriteString("}")
	}
	b.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}

// jsonBufs are the buffers trace JSON is written into. A trace's JSON is
// tens of KB and a new buffer grew by doubling to twice that per request:
// garbage for which, while ingest kept the collector busy, the request
// itself had to assist it.
var jsonBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledJSONBuf keeps the buffer of a huge trace from staying behind.
const maxPooledJSONBuf = 1 << 20

func putJSONBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledJSONBuf {
		jsonBufs.Put(b)
	}
}

func wantsProtobuf(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/protobuf")
}

// parseUnixSeconds parses an optional unix-seconds parameter into ns.
func parseUnixSeconds(s, name string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > apiparam.MaxUnixSeconds {
		return 0, badRequest{fmt.Sprintf("invalid %s: %q is not unix seconds between 0 and %d", name, s, apiparam.MaxUnixSeconds)}
	}
	return uint64(n) * 1e9, nil
}

var spanKindNames = [...]string{"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"}
var statusCodeNames = [...]string{"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"}

// jw writes protobuf-JSON (jsonpb defaults: zero values omitted) into a
// buffer, tracking whether a comma is needed.
type jw struct {
	b     *bytes.Buffer
	comma []bool
}

func (j *jw) open(c byte) {
	j.b.WriteByte(c)
	j.comma = append(j.comma, false)
}

func (j *jw) close(c byte) {
	j.b.WriteByte(c)
	j.comma = j.comma[:len(j.comma)-1]
}

func (j *jw) sep() {
	if n := len(j.comma); n > 0 {
		if j.comma[n-1] {
			j.b.WriteByte(',')
		}
		j.comma[n-1] = true
	}
}

func (j *jw) key(k string) {
	j.sep()
	j.b.WriteByte('"')
	j.b.WriteString(k)
	j.b.WriteString(`":`)
}

func (j *jw) str(k, v string) {
	if v == "" {
		return
	}
	j.key(k)
	writeJSONString(j.b, v)
}

func (j *jw) u64(k string, v uint64) {
	if v == 0 {
		return
	}
	j.key(k)
	j.b.WriteByte('"')
	j.b.WriteString(strconv.FormatUint(v, 10))
	j.b.WriteByte('"')
}

func (j *jw) u32(k string, v uint32) {
	if v == 0 {
		return
	}
	j.key(k)
	j.b.WriteString(strconv.FormatUint(uint64(v), 10))
}

func (j *jw) bytesB64(k string, v []byte) {
	allZero := true
	for _, c := range v {
		if c != 0 {
			allZero = false
			break
		}
	}
	if allZero {
		return
	}
	j.key(k)
	j.b.WriteByte('"')
	j.b.WriteString(base64.StdEncoding.EncodeToString(v))
	j.b.WriteByte('"')
}

func writeResourceSpans(b *bytes.Buffer, td ptrace.Traces) {
	j := &jw{b: b}
	j.open('[')
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		j.sep()
		j.open('{')
		j.key("resource")
		j.open('{')
		writeAttrs(j, "attributes", rs.Resource().Attributes())
		j.u32("droppedAttributesCount", rs.Resource().DroppedAttributesCount())
		j.close('}')
		j.key("scopeSpans")
		j.open('[')
		sss := rs.ScopeSpans()
		for k := 0; k < sss.Len(); k++ {
			ss := sss.At(k)
			j.sep()
			j.open('{')
			j.key("scope")
			j.open('{')
			j.str("name", ss.Scope().Name())
			j.str("version", ss.Scope().Version())
			writeAttrs(j, "attributes", ss.Scope().Attributes())
			j.close('}')
			j.key("spans")
			j.open('[')
			spans := ss.Spans()
			for n := 0; n < spans.Len(); n++ {
				j.sep()
				writeSpan(j, spans.At(n))
			}
			j.close(']')
			j.str("schemaUrl", ss.SchemaUrl())
			j.close('}')
		}
		j.close(']')
		j.str("schemaUrl", rs.SchemaUrl())
		j.close('}')
	}
	j.close(']')
}

func writeSpan(j *jw, s ptrace.Span) {
	j.open('{')
	tid, sid, pid := s.TraceID(), s.SpanID(), s.ParentSpanID()
	j.bytesB64("traceId", tid[:])
	j.bytesB64("spanId", sid[:])
	j.str("traceState", s.TraceState().AsRaw())
	j.bytesB64("parentSpanId", pid[:])
	j.u32("flags", s.Flags())
	j.str("name", s.Name())
	if k := int(s.Kind()); k > 0 && k < len(spanKindNames) {
		j.key("kind")
		j.b.WriteString(`"` + spanKindNames[k] + `"`)
	}
	j.u64("startTimeUnixNano", uint64(s.StartTimestamp()))
	j.u64("endTimeUnixNano", uint64(s.EndTimestamp()))
	writeAttrs(j, "attributes", s.Attributes())
	j.u32("droppedAttributesCount", s.DroppedAttributesCount())
	if evs := s.Events(); evs.Len() > 0 {
		j.key("events")
		j.open('[')
		for i := 0; i < evs.Len(); i++ {
			e := evs.At(i)
			j.sep()
			j.open('{')
			j.u64("timeUnixNano", uint64(e.Timestamp()))
			j.str("name", e.Name())
			writeAttrs(j, "attributes", e.Attributes())
			j.u32("droppedAttributesCount", e.DroppedAttributesCount())
			j.close('}')
		}
		j.close(']')
	}
	j.u32("droppedEventsCount", s.DroppedEventsCount())
	if ls := s.Links(); ls.Len() > 0 {
		j.key("links")
		j.open('[')
		for i := 0; i < ls.Len(); i++ {
			l := ls.At(i)
			j.sep()
			j.open('{')
			ltid, lsid := l.TraceID(), l.SpanID()
			j.bytesB64("traceId", ltid[:])
			j.bytesB64("spanId", lsid[:])
			j.str("traceState", l.TraceState().AsRaw())
			writeAttrs(j, "attributes", l.Attributes())
			j.close('}')
		}
		j.close(']')
	}
	j.u32("droppedLinksCount", s.DroppedLinksCount())
	j.key("status")
	j.open('{')
	j.str("message", s.Status().Message())
	if c := int(s.Status().Code()); c > 0 && c < len(statusCodeNames) {
		j.key("code")
		j.b.WriteString(`"` + statusCodeNames[c] + `"`)
	}
	j.close('}')
	j.close('}')
}

func writeAttrs(j *jw, key string, m pcommon.Map) {
	if m.Len() == 0 {
		return
	}
	j.key(key)
	writeKVList(j, m)
}

func writeKVList(j *jw, m pcommon.Map) {
	j.open('[')
	m.Range(func(k string, v pcommon.Value) bool {
		j.sep()
		j.open('{')
		j.key("key")
		writeJSONString(j.b, k)
		j.key("value")
		writeAnyValue(j, v)
		j.close('}')
		return true
	})
	j.close(']')
}

func writeAnyValue(j *jw, v pcommon.Value) {
	j.open('{')
	switch v.Type() {
	case pcommon.ValueTypeStr:
		j.key("stringValue")
		writeJSONString(j.b, v.Str())
	case pcommon.ValueTypeBool:
		j.key("boolValue")
		j.b.WriteString(strconv.FormatBool(v.Bool()))
	case pcommon.ValueTypeInt:
		j.key("intValue")
		j.b.WriteString(`"` + strconv.FormatInt(v.Int(), 10) + `"`)
	case pcommon.ValueTypeDouble:
		j.key("doubleValue")
		writeJSONFloat(j.b, v.Double())
	case pcommon.ValueTypeBytes:
		j.key("bytesValue")
		j.b.WriteString(`"` + base64.StdEncoding.EncodeToString(v.Bytes().AsRaw()) + `"`)
	case pcommon.ValueTypeSlice:
		j.key("arrayValue")
		j.open('{')
		s := v.Slice()
		if s.Len() > 0 {
			j.key("values")
			j.open('[')
			for i := 0; i < s.Len(); i++ {
				j.sep()
				writeAnyValue(j, s.At(i))
			}
			j.close(']')
		}
		j.close('}')
	case pcommon.ValueTypeMap:
		j.key("kvlistValue")
		j.open('{')
		if v.Map().Len() > 0 {
			j.key("values")
			writeKVList(j, v.Map())
		}
		j.close('}')
	}
	j.close('}')
}

// writeJSONFloat writes a double as jsonpb does (NaN and infinities as strings).
func writeJSONFloat(b *bytes.Buffer, f float64) {
	switch {
	case math.IsNaN(f):
		b.WriteString(`"NaN"`)
	case math.IsInf(f, 1):
		b.WriteString(`"Infinity"`)
	case math.IsInf(f, -1):
		b.WriteString(`"-Infinity"`)
	default:
		b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	}
}

// writeJSONString quotes s as a JSON string (as encoding/json would);
// invalid UTF-8 becomes U+FFFD.
func writeJSONString(b *bytes.Buffer, s string) {
	b.Write(jsonappend.String(b.AvailableBuffer(), s))
}

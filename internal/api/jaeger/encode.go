package jaeger

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tracedx/tracedx/internal/api/jsonappend"
	"github.com/tracedx/tracedx/internal/model"
)

// The v1 trace responses (search, trace by id) are appended to one byte
// buffer straight from the model spans. Building the Trace/Span/KeyValue
// values for encoding/json cost a dozen allocations per span (tag values
// boxed in interfaces, hex ids, slices) and encoding/json then walked them
// by reflection; under ingest those allocations were what brought GC mark
// phases, and their assists, into searches. The output is byte for byte
// what json.Encoder writes for those values, indented or not
// (encode_test.go compares the two, with the values and their conversion,
// ToTrace, kept as the reference in reference_test.go).

// v1Encoder holds the scratch space one response reuses across its traces.
type v1Encoder struct {
	buf     []byte
	order   []int
	present map[model.SpanID]struct{}
	procs   []procEntry
	procIDs map[string]int
	pids    []int
}

// procEntry is one (service, resource) of a trace seen so far, with its
// process number.
type procEntry struct {
	service string
	res     model.Attrs
	idx     int
}

var v1EncoderPool = sync.Pool{New: func() any { return &v1Encoder{present: map[model.SpanID]struct{}{}, procIDs: map[string]int{}} }}

// maxPooledBuf keeps one huge response from pinning its buffer in the pool.
const maxPooledBuf = 4 << 20

func getV1Encoder() *v1Encoder { return v1EncoderPool.Get().(*v1Encoder) }

func putV1Encoder(e *v1Encoder) {
	if cap(e.buf) > maxPooledBuf {
		e.buf = nil
	}
	e.buf = e.buf[:0]
	// A map keeps its buckets when cleared: one huge trace's would stay.
	if len(e.present) > maxPooledSpans {
		e.present = map[model.SpanID]struct{}{}
	}
	clear(e.present)
	clear(e.procIDs)
	// The memo holds the response's resource slices; a pooled encoder must
	// not keep its spans alive.
	clear(e.procs[:cap(e.procs)])
	e.procs = e.procs[:0]
	v1EncoderPool.Put(e)
}

// maxPooledSpans bounds the span-id set a pooled encoder keeps.
const maxPooledSpans = 1 << 14

// v1Trace is one trace of a response: its spans and trace-level warnings.
type v1Trace struct {
	spans    []model.Span
	warnings []string
}

// writeTraces writes the v1 envelope around traces, as writeData would,
// indented when the client asks for it.
func (h *handler) writeTraces(w http.ResponseWriter, r *http.Request, traces []v1Trace, total int, errs []apiError) {
	e := getV1Encoder()
	defer putV1Encoder(e)
	e.appendEnvelope(traces, total, errs)
	writeV1Body(w, r, e.buf)
}

// writeV1Body writes an encoded v1 envelope, indented when the client
// asks for it.
func writeV1Body(w http.ResponseWriter, r *http.Request, body []byte) {
	if prettyPrint(r) {
		body = indented(body)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// indented returns b as json.Encoder writes it with writeJSON's indent
// (json.Indent keeps the trailing newline, as the encoder does).
func indented(b []byte) []byte {
	var out bytes.Buffer
	out.Grow(2 * len(b))
	if err := json.Indent(&out, b, "", prettyIndent); err != nil {
		// Not JSON: a bug of the encoder, which the compact response
		// shows as well; indenting it would hide where.
		return b
	}
	return out.Bytes()
}

// appendEnvelope appends the envelope json.Encoder writes for
// envelope{Data: traces, Total: total, Errors: errs}, newline included.
func (e *v1Encoder) appendEnvelope(traces []v1Trace, total int, errs []apiError) {
	e.buf = append(e.buf, `{"data":[`...)
	for i := range traces {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.appendTrace(traces[i].spans, traces[i].warnings)
	}
	e.closeEnvelope(total, errs)
}

// closeEnvelope appends what follows the data of appendEnvelope.
func (e *v1Encoder) closeEnvelope(total int, errs []apiError) {
	b := append(e.buf, `],"total":`...)
	b = strconv.AppendInt(b, int64(total), 10)
	b = append(b, `,"limit":0,"offset":0,"errors":`...)
	if errs == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, ae := range errs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			if ae.Code != 0 {
				b = append(b, `"code":`...)
				b = strconv.AppendInt(b, int64(ae.Code), 10)
				b = append(b, ',')
			}
			b = append(b, `"msg":`...)
			b = jsonappend.String(b, ae.Msg)
			if ae.TraceID != "" {
				b = append(b, `,"traceID":`...)
				b = jsonappend.String(b, ae.TraceID)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	e.buf = append(b, "}\n"...)
}

// appendTrace appends one trace as ToTrace renders it.
func (e *v1Encoder) appendTrace(spans []model.Span, warnings []string) {
	// The trace id as written, for every span's traceID and references.
	idStart := len(e.buf) + len(`{"traceID":"`)
	b := append(e.buf, `{"traceID":"`...)
	if len(spans) == 0 {
		e.buf = append(b, `","spans":[],"processes":{},"warnings":`...)
		e.appendStrings(warnings)
		e.buf = append(e.buf, '}')
		return
	}
	b = appendJaegerTraceID(b, spans[0].TraceID)
	idEnd := len(b)
	b = append(b, `","spans":[`...)
	e.buf = b

	e.order = e.order[:0]
	for i := range spans {
		e.order = append(e.order, i)
	}
	slices.SortStableFunc(e.order, func(x, y int) int {
		sx, sy := spans[x].StartUnixNano, spans[y].StartUnixNano
		switch {
		case sx < sy:
			return -1
		case sx > sy:
			return 1
		}
		return 0
	})
	clear(e.present)
	for i := range spans {
		e.present[spans[i].SpanID] = struct{}{}
	}
	e.procs = e.procs[:0]
	clear(e.procIDs)
	e.pids = e.pids[:0]
	for n, i := range e.order {
		if n > 0 {
			e.buf = append(e.buf, ',')
		}
		s := &spans[i]
		pid := e.processOf(spans, i)
		e.appendSpan(s, pid, idStart, idEnd)
	}
	e.buf = append(e.buf, `],"processes":{`...)
	e.appendProcesses(spans)
	e.buf = append(e.buf, `},"warnings":`...)
	e.appendStrings(warnings)
	e.buf = append(e.buf, '}')
}

// processOf returns the 1-based process number of spans[i], numbering
// new processes in order of first appearance (as ToTrace does); e.pids
// keeps, per process, the index of the span that first showed it. A span
// whose service and resource attributes equal those of a process seen
// before has that process's key, so the key (a string built per span) is
// only built for the rest: ToTrace would also merge resources that differ
// in value type but render alike.
func (e *v1Encoder) processOf(spans []model.Span, i int) int {
	s := &spans[i]
	for _, p := range e.procs {
		if p.service == s.Service && p.res.Same(s.Resource) {
			return p.idx
		}
	}
	key := processKey(s)
	idx, ok := e.procIDs[key]
	if !ok {
		e.pids = append(e.pids, i)
		idx = len(e.pids)
		e.procIDs[key] = idx
	}
	// Bounded: a trace with many distinct resources falls back to keys.
	if len(e.procs) < 64 {
		e.procs = append(e.procs, procEntry{service: s.Service, res: s.Resource, idx: idx})
	}
	return idx
}

// appendProcesses appends the processes keyed p1, p2, ..., in the order
// encoding/json writes a map: sorted by key as text (p1, p10, p2, ...).
func (e *v1Encoder) appendProcesses(spans []model.Span) {
	n := len(e.pids)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i + 1
	}
	if n >= 10 {
		var xb, yb [24]byte
		slices.SortFunc(idx, func(x, y int) int {
			return compareBytes(strconv.AppendInt(xb[:0], int64(x), 10), strconv.AppendInt(yb[:0], int64(y), 10))
		})
	}
	for k, p := range idx {
		if k > 0 {
			e.buf = append(e.buf, ',')
		}
		s := &spans[e.pids[p-1]]
		b := append(e.buf, `"p`...)
		b = strconv.AppendInt(b, int64(p), 10)
		b = append(b, `":{"serviceName":`...)
		b = jsonappend.String(b, s.Service)
		b = append(b, `,"tags":[`...)
		first := true
		for _, a := range s.Resource {
			// service.name is the process's serviceName, not a tag.
			if a.Key == "service.name" {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendKeyValue(b, a.Key, a.Value)
		}
		e.buf = append(b, "]}"...)
	}
}

func compareBytes(x, y []byte) int {
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] != y[i] {
			return int(x[i]) - int(y[i])
		}
	}
	return len(x) - len(y)
}

// appendSpan appends one span as toSpan renders it; the trace id is
// e.buf[idStart:idEnd].
func (e *v1Encoder) appendSpan(s *model.Span, pid, idStart, idEnd int) {
	b := append(e.buf, `{"traceID":"`...)
	b = append(b, b[idStart:idEnd]...)
	b = append(b, `","spanID":"`...)
	b = appendHex(b, s.SpanID[:])
	b = append(b, '"')
	if f := s.Flags & 0xff; f != 0 {
		b = append(b, `,"flags":`...)
		b = strconv.AppendUint(b, uint64(f), 10)
	}
	b = append(b, `,"operationName":`...)
	b = jsonappend.String(b, s.Name)
	b = append(b, `,"references":[`...)
	// The parent reference must come first: the UI takes the first
	// reference it can resolve as the parent.
	nref := 0
	if !s.ParentSpanID.IsZero() {
		b = append(b, `{"refType":"CHILD_OF","traceID":"`...)
		b = append(b, b[idStart:idEnd]...)
		b = append(b, `","spanID":"`...)
		b = appendHex(b, s.ParentSpanID[:])
		b = append(b, `"}`...)
		nref++
	}
	for _, l := range s.Links {
		if nref > 0 {
			b = append(b, ',')
		}
		nref++
		b = append(b, `{"refType":"FOLLOWS_FROM","traceID":"`...)
		b = appendJaegerTraceID(b, l.TraceID)
		b = append(b, `","spanID":"`...)
		b = appendHex(b, l.SpanID[:])
		b = append(b, `"}`...)
	}
	b = append(b, `],"startTime":`...)
	b = strconv.AppendUint(b, us(s.StartUnixNano), 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendUint(b, us(s.DurationNano()), 10)
	b = append(b, `,"tags":[`...)
	b = appendSpanTags(b, s)
	b = append(b, `],"logs":[`...)
	for i, ev := range s.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"timestamp":`...)
		b = strconv.AppendUint(b, us(ev.TimeUnixNano), 10)
		b = append(b, `,"fields":[`...)
		n := 0
		// The event name goes into an "event" field unless an attribute
		// of that name already says it (OpenTracing log convention).
		if _, has := ev.Attrs.Get("event"); !has && ev.Name != "" {
			b = appendStrTag(b, "event", ev.Name)
			n++
		}
		for _, a := range ev.Attrs {
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendKeyValue(b, a.Key, a.Value)
		}
		b = append(b, "]}"...)
	}
	b = append(b, `],"processID":"p`...)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, `","warnings":`...)
	if !s.ParentSpanID.IsZero() {
		if _, ok := e.present[s.ParentSpanID]; !ok {
			b = append(b, `["parent span `...)
			b = appendHex(b, s.ParentSpanID[:])
			b = append(b, ` is not in the trace (not received yet, or lost)"]}`...)
			e.buf = b
			return
		}
	}
	e.buf = append(b, "null}"...)
}

// appendSpanTags appends the tags toSpan builds: the attributes, then the
// OTLP fields Jaeger has no field for. An error status overrides the first
// "otel.status_code" and "error" attributes in place (toSpan's setTag) and
// appends them when absent.
func appendSpanTags(b []byte, s *model.Span) []byte {
	status := ""
	switch s.StatusCode {
	case model.StatusError:
		status = "ERROR"
	case model.StatusOK:
		status = "OK"
	}
	isErr := s.StatusCode == model.StatusError
	statusSet, errorSet := status == "", !isErr
	n := 0
	sep := func(b []byte) []byte {
		if n > 0 {
			b = append(b, ',')
		}
		n++
		return b
	}
	for _, a := range s.Attrs {
		b = sep(b)
		switch {
		case !statusSet && a.Key == "otel.status_code":
			statusSet = true
			b = appendStrTag(b, a.Key, status)
		case !errorSet && a.Key == "error":
			errorSet = true
			b = append(b, `{"key":"error","type":"bool","value":true}`...)
		default:
			b = appendKeyValue(b, a.Key, a.Value)
		}
	}
	if s.ScopeName != "" {
		b = appendStrTag(sep(b), "otel.scope.name", s.ScopeName)
	}
	if s.ScopeVersion != "" {
		b = appendStrTag(sep(b), "otel.scope.version", s.ScopeVersion)
	}
	switch s.Kind {
	case model.KindServer, model.KindClient, model.KindProducer, model.KindConsumer, model.KindInternal:
		b = appendStrTag(sep(b), "span.kind", s.Kind.String())
	}
	if !statusSet {
		b = appendStrTag(sep(b), "otel.status_code", status)
	}
	if !errorSet {
		b = append(sep(b), `{"key":"error","type":"bool","value":true}`...)
	}
	if s.StatusMessage != "" {
		b = appendStrTag(sep(b), "otel.status_description", s.StatusMessage)
	}
	if s.TraceState != "" {
		b = appendStrTag(sep(b), "w3c.tracestate", s.TraceState)
	}
	if s.DroppedAttributesCount > 0 {
		b = appendIntTag(sep(b), "otel.dropped_attributes_count", int64(s.DroppedAttributesCount))
	}
	if s.DroppedEventsCount > 0 {
		b = appendIntTag(sep(b), "otel.dropped_events_count", int64(s.DroppedEventsCount))
	}
	if s.DroppedLinksCount > 0 {
		b = appendIntTag(sep(b), "otel.dropped_links_count", int64(s.DroppedLinksCount))
	}
	return b
}

func (e *v1Encoder) appendStrings(ss []string) {
	if ss == nil {
		e.buf = append(e.buf, "null"...)
		return
	}
	e.buf = append(e.buf, '[')
	for i, s := range ss {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = jsonappend.String(e.buf, s)
	}
	e.buf = append(e.buf, ']')
}

func appendTagHead(b []byte, k, typ string) []byte {
	b = append(b, `{"key":`...)
	b = jsonappend.String(b, k)
	b = append(b, `,"type":"`...)
	b = append(b, typ...)
	return append(b, `","value":`...)
}

func appendStrTag(b []byte, k, v string) []byte {
	b = appendTagHead(b, k, "string")
	b = jsonappend.String(b, v)
	return append(b, '}')
}

func appendIntTag(b []byte, k string, v int64) []byte {
	b = appendTagHead(b, k, "int64")
	b = strconv.AppendInt(b, v, 10)
	return append(b, '}')
}

// appendKeyValue appends what toKeyValue(k, v) encodes to.
func appendKeyValue(b []byte, k string, v model.Value) []byte {
	switch v.Type {
	case model.TypeBool:
		b = appendTagHead(b, k, "bool")
		b = strconv.AppendBool(b, v.Bool)
	case model.TypeInt:
		b = appendTagHead(b, k, "int64")
		// Beyond ±2^53 JavaScript loses digits: sent as a string.
		big := v.Int > jsMaxSafeInt || v.Int < -jsMaxSafeInt
		if big {
			b = append(b, '"')
		}
		b = strconv.AppendInt(b, v.Int, 10)
		if big {
			b = append(b, '"')
		}
	case model.TypeDouble:
		b = appendTagHead(b, k, "float64")
		if math.IsNaN(v.Float) || math.IsInf(v.Float, 0) {
			b = append(b, '"')
			b = strconv.AppendFloat(b, v.Float, 'g', -1, 64)
			b = append(b, '"')
		} else {
			b = appendJSONFloat(b, v.Float)
		}
	case model.TypeBytes:
		b = appendTagHead(b, k, "binary")
		if v.Bytes == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, v.Bytes)
			b = append(b, '"')
		}
	default:
		// Strings, and arrays/maps as their JSON text (OTel mapping rule).
		b = appendTagHead(b, k, "string")
		b = jsonappend.String(b, v.AsString())
	}
	return append(b, '}')
}

// appendJSONFloat formats a finite float64 as encoding/json does: like
// ES6, plain decimal between 1e-6 and 1e21, otherwise an exponent without
// leading zeros.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJaegerTraceID appends what jaegerTraceID returns.
func appendJaegerTraceID(b []byte, id model.TraceID) []byte {
	if id[0]|id[1]|id[2]|id[3]|id[4]|id[5]|id[6]|id[7] == 0 {
		return appendHex(b, id[8:])
	}
	return appendHex(b, id[:])
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// JavaScript numbers are doubles: integers beyond ±2^53 lose digits, so
// Jaeger sends them as strings, and so do we.
const jsMaxSafeInt = int64(1)<<53 - 1

// jaegerTraceID renders a trace id the way Jaeger does: 64-bit ids (upper
// half zero, e.g. from Zipkin B3 or Jaeger clients) as 16 hex chars, others
// as 32. Both forms are accepted back in URLs.
func jaegerTraceID(id model.TraceID) string {
	for _, b := range id[:8] {
		if b != 0 {
			return hex.EncodeToString(id[:])
		}
	}
	return hex.EncodeToString(id[8:])
}

func us(ns uint64) uint64 { return ns / 1000 }

// processKey identifies a process: spans with equal keys share one.
func processKey(s *model.Span) string {
	var b strings.Builder
	b.WriteString(s.Service)
	for _, a := range s.Resource {
		b.WriteByte(0)
		b.WriteString(a.Key)
		b.WriteByte(1)
		b.WriteString(a.Value.AsString())
	}
	return b.String()
}

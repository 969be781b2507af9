package jaeger

import (
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/tracedx/tracedx/internal/model"
)

// The UI model of Jaeger's v1 JSON API, as values for encoding/json: the
// reference the appending encoder (encode.go) is checked against. Field
// names and omitempty choices mirror what Jaeger's query service writes,
// since the Jaeger UI and Grafana parse exactly this. It was the encoder
// itself before encode.go; kept here it still spells the format out field
// by field, independently of the encoder it checks.

// Trace is one trace in the Jaeger UI format.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
	Warnings  []string           `json:"warnings"`
}

// Span is one span in the Jaeger UI format. Times are microseconds.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	Flags         uint32      `json:"flags,omitempty"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     uint64      `json:"startTime"`
	Duration      uint64      `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
	Warnings      []string    `json:"warnings"`
}

// Reference links a span to its parent (CHILD_OF) or to linked spans
// (FOLLOWS_FROM).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Process is the emitting service with its resource attributes as tags.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Log is a span event.
type Log struct {
	Timestamp uint64     `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// KeyValue is a typed tag: type is string, bool, int64, float64 or binary.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

const (
	refChildOf     = "CHILD_OF"
	refFollowsFrom = "FOLLOWS_FROM"
)

// ToTrace converts the spans of one trace to the Jaeger UI format. Spans
// are ordered by start time; processes are numbered p1, p2, ... in order of
// first appearance, one per distinct (service, resource).
func ToTrace(spans []model.Span) Trace {
	t := Trace{Spans: make([]Span, 0, len(spans)), Processes: map[string]Process{}}
	if len(spans) == 0 {
		return t
	}
	t.TraceID = jaegerTraceID(spans[0].TraceID)
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return spans[order[a]].StartUnixNano < spans[order[b]].StartUnixNano
	})
	present := make(map[model.SpanID]bool, len(spans))
	for i := range spans {
		present[spans[i].SpanID] = true
	}
	procIDs := map[string]string{}
	for _, i := range order {
		s := &spans[i]
		key := processKey(s)
		pid, ok := procIDs[key]
		if !ok {
			pid = "p" + strconv.Itoa(len(procIDs)+1)
			procIDs[key] = pid
			t.Processes[pid] = toProcess(s)
		}
		js := toSpan(s, pid, t.TraceID)
		if !s.ParentSpanID.IsZero() && !present[s.ParentSpanID] {
			js.Warnings = append(js.Warnings, fmt.Sprintf("parent span %s is not in the trace (not received yet, or lost)", s.ParentSpanID))
		}
		t.Spans = append(t.Spans, js)
	}
	return t
}

func toProcess(s *model.Span) Process {
	p := Process{ServiceName: s.Service, Tags: make([]KeyValue, 0, len(s.Resource))}
	for _, a := range s.Resource {
		// service.name is the process's serviceName, not a tag (as in Jaeger).
		if a.Key == "service.name" {
			continue
		}
		p.Tags = append(p.Tags, toKeyValue(a.Key, a.Value))
	}
	return p
}

// toSpan converts one span; traceID is its trace's id as ToTrace renders
// it, one string for all the spans rather than one each.
func toSpan(s *model.Span, pid, traceID string) Span {
	js := Span{
		TraceID:       traceID,
		SpanID:        s.SpanID.String(),
		Flags:         s.Flags & 0xff,
		OperationName: s.Name,
		References:    make([]Reference, 0, 1+len(s.Links)),
		StartTime:     us(s.StartUnixNano),
		Duration:      us(s.DurationNano()),
		Tags:          make([]KeyValue, 0, len(s.Attrs)+6),
		Logs:          make([]Log, 0, len(s.Events)),
		ProcessID:     pid,
	}
	// The parent reference must come first: the UI takes the first
	// reference it can resolve as the parent.
	if !s.ParentSpanID.IsZero() {
		js.References = append(js.References, Reference{RefType: refChildOf, TraceID: js.TraceID, SpanID: s.ParentSpanID.String()})
	}
	for _, l := range s.Links {
		js.References = append(js.References, Reference{RefType: refFollowsFrom, TraceID: jaegerTraceID(l.TraceID), SpanID: l.SpanID.String()})
	}
	for _, a := range s.Attrs {
		js.Tags = append(js.Tags, toKeyValue(a.Key, a.Value))
	}
	// OTLP fields without a Jaeger field become tags, with the names of the
	// OpenTelemetry "mapping to non-OTLP formats" rules.
	if s.ScopeName != "" {
		js.Tags = append(js.Tags, strTag("otel.scope.name", s.ScopeName))
	}
	if s.ScopeVersion != "" {
		js.Tags = append(js.Tags, strTag("otel.scope.version", s.ScopeVersion))
	}
	switch s.Kind {
	case model.KindServer, model.KindClient, model.KindProducer, model.KindConsumer, model.KindInternal:
		js.Tags = append(js.Tags, strTag("span.kind", s.Kind.String()))
	}
	switch s.StatusCode {
	case model.StatusError:
		js.Tags = setTag(js.Tags, strTag("otel.status_code", "ERROR"))
		// The UI paints spans red on error=true; it overrides any
		// application-set error tag.
		js.Tags = setTag(js.Tags, KeyValue{Key: "error", Type: "bool", Value: true})
	case model.StatusOK:
		js.Tags = setTag(js.Tags, strTag("otel.status_code", "OK"))
	}
	if s.StatusMessage != "" {
		js.Tags = append(js.Tags, strTag("otel.status_description", s.StatusMessage))
	}
	if s.TraceState != "" {
		js.Tags = append(js.Tags, strTag("w3c.tracestate", s.TraceState))
	}
	if s.DroppedAttributesCount > 0 {
		js.Tags = append(js.Tags, intTag("otel.dropped_attributes_count", int64(s.DroppedAttributesCount)))
	}
	if s.DroppedEventsCount > 0 {
		js.Tags = append(js.Tags, intTag("otel.dropped_events_count", int64(s.DroppedEventsCount)))
	}
	if s.DroppedLinksCount > 0 {
		js.Tags = append(js.Tags, intTag("otel.dropped_links_count", int64(s.DroppedLinksCount)))
	}
	for _, e := range s.Events {
		l := Log{Timestamp: us(e.TimeUnixNano), Fields: make([]KeyValue, 0, len(e.Attrs)+1)}
		// The event name goes into an "event" field unless an attribute
		// of that name already says it (OpenTracing log convention).
		if _, has := e.Attrs.Get("event"); !has && e.Name != "" {
			l.Fields = append(l.Fields, strTag("event", e.Name))
		}
		for _, a := range e.Attrs {
			l.Fields = append(l.Fields, toKeyValue(a.Key, a.Value))
		}
		js.Logs = append(js.Logs, l)
	}
	return js
}

func setTag(tags []KeyValue, kv KeyValue) []KeyValue {
	for i := range tags {
		if tags[i].Key == kv.Key {
			tags[i] = kv
			return tags
		}
	}
	return append(tags, kv)
}

func strTag(k, v string) KeyValue { return KeyValue{Key: k, Type: "string", Value: v} }
func intTag(k string, v int64) KeyValue {
	return KeyValue{Key: k, Type: "int64", Value: v}
}

func toKeyValue(k string, v model.Value) KeyValue {
	switch v.Type {
	case model.TypeBool:
		return KeyValue{Key: k, Type: "bool", Value: v.Bool}
	case model.TypeInt:
		if v.Int > jsMaxSafeInt || v.Int < -jsMaxSafeInt {
			return KeyValue{Key: k, Type: "int64", Value: strconv.FormatInt(v.Int, 10)}
		}
		return KeyValue{Key: k, Type: "int64", Value: v.Int}
	case model.TypeDouble:
		// JSON has no NaN or infinities; send them as text like Jaeger's
		// protobuf JSON does.
		if math.IsNaN(v.Float) || math.IsInf(v.Float, 0) {
			return KeyValue{Key: k, Type: "float64", Value: strconv.FormatFloat(v.Float, 'g', -1, 64)}
		}
		return KeyValue{Key: k, Type: "float64", Value: v.Float}
	case model.TypeBytes:
		// encoding/json writes []byte as base64, as Jaeger does for binary.
		return KeyValue{Key: k, Type: "binary", Value: v.Bytes}
	}
	// Strings, and arrays/maps as their JSON text (OTel mapping rule).
	return KeyValue{Key: k, Type: "string", Value: v.AsString()}
}

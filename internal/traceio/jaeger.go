package traceio

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// Jaeger v1 JSON as the Jaeger UI downloads it and its query API returns.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string         `json:"traceID"`
	SpanID        string         `json:"spanID"`
	OperationName string         `json:"operationName"`
	References    []jaegerRef    `json:"references"`
	ParentSpanID  string         `json:"parentSpanID"` // older exports
	Flags         uint32         `json:"flags"`
	StartTime     uint64         `json:"startTime"` // µs
	Duration      uint64         `json:"duration"`  // µs
	Tags          []jaegerKV     `json:"tags"`
	Logs          []jaegerLog    `json:"logs"`
	ProcessID     string         `json:"processID"`
	Process       *jaegerProcess `json:"process"` // inline variant
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerKV struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

type jaegerLog struct {
	Timestamp uint64     `json:"timestamp"`
	Fields    []jaegerKV `json:"fields"`
}

type jaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []jaegerKV `json:"tags"`
}

func fromJaeger(traces []jaegerTrace) ([]model.Span, error) {
	var out []model.Span
	for ti := range traces {
		tr := &traces[ti]
		for si := range tr.Spans {
			s, err := jaegerSpanToModel(tr, &tr.Spans[si])
			if err != nil {
				return nil, fmt.Errorf("trace %d span %d: %w", ti, si, err)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func jaegerSpanToModel(tr *jaegerTrace, js *jaegerSpan) (model.Span, error) {
	var s model.Span
	var err error
	tid := js.TraceID
	if tid == "" {
		tid = tr.TraceID
	}
	if s.TraceID, err = model.ParseTraceID(tid); err != nil {
		return s, err
	}
	if s.SpanID, err = model.ParseSpanID(js.SpanID); err != nil {
		return s, err
	}
	// The first CHILD_OF reference is the parent; without one, a
	// FOLLOWS_FROM reference is (Jaeger's UI nests those too). Other
	// references become links.
	parent := -1
	for i, r := range js.References {
		if strings.EqualFold(r.RefType, "CHILD_OF") {
			parent = i
			break
		}
	}
	if parent < 0 {
		for i, r := range js.References {
			if strings.EqualFold(r.RefType, "FOLLOWS_FROM") {
				parent = i
				break
			}
		}
	}
	for i, r := range js.References {
		sid, err := model.ParseSpanID(r.SpanID)
		if err != nil {
			return s, fmt.Errorf("reference: %w", err)
		}
		rtid := s.TraceID
		if r.TraceID != "" {
			if rtid, err = model.ParseTraceID(r.TraceID); err != nil {
				return s, fmt.Errorf("reference: %w", err)
			}
		}
		if i == parent && rtid == s.TraceID {
			s.ParentSpanID = sid
			continue
		}
		s.Links = append(s.Links, model.Link{TraceID: rtid, SpanID: sid,
			Attrs: model.Attrs{{Key: "opentracing.ref_type", Value: model.Str(strings.ToLower(r.RefType))}}})
	}
	if s.ParentSpanID.IsZero() && js.ParentSpanID != "" && js.ParentSpanID != "0" {
		if s.ParentSpanID, err = model.ParseSpanID(js.ParentSpanID); err != nil {
			return s, fmt.Errorf("parentSpanID: %w", err)
		}
	}
	s.Name, s.Flags = js.OperationName, js.Flags
	s.StartUnixNano = js.StartTime * 1000
	s.EndUnixNano = (js.StartTime + js.Duration) * 1000

	proc := js.Process
	if proc == nil {
		if p, ok := tr.Processes[js.ProcessID]; ok {
			proc = &p
		}
	}
	s.Service = model.UnknownService
	if proc != nil {
		if proc.ServiceName != "" {
			s.Service = proc.ServiceName
		}
		s.Resource = append(s.Resource, model.Attr{Key: "service.name", Value: model.Str(s.Service)})
		for _, kv := range proc.Tags {
			s.Resource = append(s.Resource, model.Attr{Key: kv.Key, Value: jaegerValue(kv)})
		}
	}

	errorTag := false
	for _, kv := range js.Tags {
		v := jaegerValue(kv)
		switch kv.Key {
		case "span.kind":
			if k, ok := model.ParseSpanKind(v.AsString()); ok {
				s.Kind = k
			}
		case "error":
			errorTag = v.AsString() == "true"
		case "otel.status_code":
			switch strings.ToUpper(v.AsString()) {
			case "ERROR":
				s.StatusCode = model.StatusError
			case "OK":
				s.StatusCode = model.StatusOK
			}
		case "otel.status_description":
			s.StatusMessage = v.AsString()
		case "otel.scope.name", "otel.library.name":
			s.ScopeName = v.AsString()
		case "otel.scope.version", "otel.library.version":
			s.ScopeVersion = v.AsString()
		case "internal.span.format", "w3c.tracestate":
			if kv.Key == "w3c.tracestate" {
				s.TraceState = v.AsString()
			}
		default:
			s.Attrs = append(s.Attrs, model.Attr{Key: kv.Key, Value: v})
		}
	}
	if errorTag && s.StatusCode == model.StatusUnset {
		s.StatusCode = model.StatusError
	}
	for _, l := range js.Logs {
		e := model.Event{TimeUnixNano: l.Timestamp * 1000, Name: "log"}
		for _, f := range l.Fields {
			v := jaegerValue(f)
			if f.Key == "event" && v.Type == model.TypeString {
				e.Name = v.Str
				continue
			}
			e.Attrs = append(e.Attrs, model.Attr{Key: f.Key, Value: v})
		}
		s.Events = append(s.Events, e)
	}
	return s, nil
}

// jaegerValue decodes a tag value; exporters disagree on whether numbers
// and booleans are JSON numbers/booleans or strings, so both are accepted.
func jaegerValue(kv jaegerKV) model.Value {
	raw := kv.Value
	var str string
	isStr := json.Unmarshal(raw, &str) == nil
	switch strings.ToLower(kv.Type) {
	case "bool":
		if isStr {
			b, _ := strconv.ParseBool(str)
			return model.Bool(b)
		}
		var b bool
		_ = json.Unmarshal(raw, &b)
		return model.Bool(b)
	case "int64":
		text := string(raw)
		if isStr {
			text = str
		}
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			return model.Int(i)
		}
		if f, err := strconv.ParseFloat(text, 64); err == nil {
			return model.Int(int64(f))
		}
	case "float64":
		text := string(raw)
		if isStr {
			text = str
		}
		if f, err := strconv.ParseFloat(text, 64); err == nil {
			return model.Float(f)
		}
	case "binary":
		if isStr {
			if b, err := base64.StdEncoding.DecodeString(str); err == nil {
				return model.Value{Type: model.TypeBytes, Bytes: b}
			}
		}
	}
	if isStr {
		return model.Str(str)
	}
	return model.Str(string(raw))
}

package traceio

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// tracedx's own trace JSON (GET /api/v1/traces/{id}): snake_case, hex ids,
// typed attributes {key, type, value}. The fields mirror api/v1's
// TraceJSON, but values stay raw JSON until their type is known, so 64-bit
// integers keep every digit (decoding into api/v1's `any` would make them
// float64).
type txTrace struct {
	Spans []txSpan `json:"spans"`
}

type txSpan struct {
	TraceID       string   `json:"trace_id"`
	SpanID        string   `json:"span_id"`
	ParentSpanID  string   `json:"parent_span_id"`
	TraceState    string   `json:"trace_state"`
	Flags         uint32   `json:"flags"`
	Name          string   `json:"name"`
	Kind          string   `json:"kind"`
	Service       string   `json:"service"`
	StartUnixNano uint64   `json:"start_unix_nano"`
	EndUnixNano   uint64   `json:"end_unix_nano"`
	Status        txStatus `json:"status"`
	Resource      []txAttr `json:"resource"`
	Scope         struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"scope"`
	Attributes []txAttr `json:"attributes"`
	Events     []struct {
		Name         string   `json:"name"`
		TimeUnixNano uint64   `json:"time_unix_nano"`
		Attributes   []txAttr `json:"attributes"`
	} `json:"events"`
	Links []struct {
		TraceID    string   `json:"trace_id"`
		SpanID     string   `json:"span_id"`
		TraceState string   `json:"trace_state"`
		Attributes []txAttr `json:"attributes"`
	} `json:"links"`
	DroppedAttributesCount uint32 `json:"dropped_attributes_count"`
	DroppedEventsCount     uint32 `json:"dropped_events_count"`
	DroppedLinksCount      uint32 `json:"dropped_links_count"`
}

type txStatus struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type txAttr struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

func tracedxJSON(raw []byte) ([]model.Span, error) {
	var tr txTrace
	if err := json.Unmarshal(raw, &tr); err != nil {
		return nil, err
	}
	out := make([]model.Span, 0, len(tr.Spans))
	for i := range tr.Spans {
		s, err := tr.Spans[i].toModel()
		if err != nil {
			return nil, fmt.Errorf("span %d: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func (j *txSpan) toModel() (model.Span, error) {
	s := model.Span{
		TraceState: j.TraceState, Flags: j.Flags, Name: j.Name, Service: j.Service,
		StartUnixNano: j.StartUnixNano, EndUnixNano: j.EndUnixNano, StatusMessage: j.Status.Message,
		ScopeName: j.Scope.Name, ScopeVersion: j.Scope.Version,
		DroppedAttributesCount: j.DroppedAttributesCount, DroppedEventsCount: j.DroppedEventsCount, DroppedLinksCount: j.DroppedLinksCount,
	}
	var err error
	if s.TraceID, err = model.ParseTraceID(j.TraceID); err != nil {
		return s, fmt.Errorf("trace_id: %w", err)
	}
	if s.SpanID, err = model.ParseSpanID(j.SpanID); err != nil {
		return s, fmt.Errorf("span_id: %w", err)
	}
	if j.ParentSpanID != "" {
		if s.ParentSpanID, err = model.ParseSpanID(j.ParentSpanID); err != nil {
			return s, fmt.Errorf("parent_span_id: %w", err)
		}
	}
	if k, ok := model.ParseSpanKind(j.Kind); ok {
		s.Kind = k
	}
	switch j.Status.Code {
	case "ok":
		s.StatusCode = model.StatusOK
	case "error":
		s.StatusCode = model.StatusError
	}
	if s.Resource, err = txAttrs(j.Resource); err != nil {
		return s, err
	}
	if s.Attrs, err = txAttrs(j.Attributes); err != nil {
		return s, err
	}
	if s.Service == "" {
		s.Service = s.Resource.Str("service.name")
	}
	for _, e := range j.Events {
		attrs, err := txAttrs(e.Attributes)
		if err != nil {
			return s, err
		}
		s.Events = append(s.Events, model.Event{Name: e.Name, TimeUnixNano: e.TimeUnixNano, Attrs: attrs})
	}
	for _, l := range j.Links {
		var ml model.Link
		if ml.TraceID, err = model.ParseTraceID(l.TraceID); err != nil {
			return s, fmt.Errorf("link trace_id: %w", err)
		}
		if ml.SpanID, err = model.ParseSpanID(l.SpanID); err != nil {
			return s, fmt.Errorf("link span_id: %w", err)
		}
		ml.TraceState = l.TraceState
		if ml.Attrs, err = txAttrs(l.Attributes); err != nil {
			return s, err
		}
		s.Links = append(s.Links, ml)
	}
	return s, nil
}

func txAttrs(in []txAttr) (model.Attrs, error) {
	out := make(model.Attrs, 0, len(in))
	for _, a := range in {
		v, err := txValue(a)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", a.Key, err)
		}
		out = append(out, model.Attr{Key: a.Key, Value: v})
	}
	return out, nil
}

// txValue decodes a typed value; doubles that JSON cannot hold (NaN, ±Inf)
// arrive as their text.
func txValue(a txAttr) (model.Value, error) {
	var v model.Value
	var err error
	switch a.Type {
	case "string":
		v.Type = model.TypeString
		err = json.Unmarshal(a.Value, &v.Str)
	case "bool":
		v.Type = model.TypeBool
		err = json.Unmarshal(a.Value, &v.Bool)
	case "int":
		v.Type = model.TypeInt
		err = json.Unmarshal(a.Value, &v.Int)
	case "double":
		v.Type = model.TypeDouble
		if err = json.Unmarshal(a.Value, &v.Float); err != nil {
			var text string
			if json.Unmarshal(a.Value, &text) == nil {
				_, err = fmt.Sscan(text, &v.Float)
			}
		}
	case "bytes":
		v.Type = model.TypeBytes
		var s string
		if err = json.Unmarshal(a.Value, &s); err == nil {
			v.Bytes, err = base64.StdEncoding.DecodeString(s)
		}
	case "array", "map":
		v.Type = model.TypeArray
		if a.Type == "map" {
			v.Type = model.TypeMap
		}
		var s string
		if json.Unmarshal(a.Value, &s) == nil {
			v.Str = s
		} else {
			v.Str = string(a.Value)
		}
	case "empty", "":
	default:
		return v, fmt.Errorf("unknown type %q", a.Type)
	}
	return v, err
}

package v1

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// TraceJSON is the response of GET /api/v1/traces/{id}.
type TraceJSON struct {
	TraceID string `json:"trace_id"`
	TimesJSON
	SpanCount int        `json:"span_count"`
	Spans     []SpanJSON `json:"spans"`
}

// TimesJSON is the start/end/duration triple used by traces and spans.
type TimesJSON struct {
	StartTime     string  `json:"start_time"`
	StartUnixNano uint64  `json:"start_unix_nano"`
	EndTime       string  `json:"end_time"`
	EndUnixNano   uint64  `json:"end_unix_nano"`
	DurationMS    float64 `json:"duration_ms"`
}

// SpanJSON is one span with every OTLP field.
type SpanJSON struct {
	TraceID      string `json:"trace_id"`
	SpanID       string `json:"span_id"`
	ParentSpanID string `json:"parent_span_id"`
	TraceState   string `json:"trace_state"`
	Flags        uint32 `json:"flags"`
	Name         string `json:"name"`
	Kind         string `json:"kind"`
	Service      string `json:"service"`
	TimesJSON
	Status                 StatusJSON  `json:"status"`
	Resource               []AttrJSON  `json:"resource"`
	Scope                  ScopeJSON   `json:"scope"`
	Attributes             []AttrJSON  `json:"attributes"`
	Events                 []EventJSON `json:"events"`
	Links                  []LinkJSON  `json:"links"`
	DroppedAttributesCount uint32      `json:"dropped_attributes_count"`
	DroppedEventsCount     uint32      `json:"dropped_events_count"`
	DroppedLinksCount      uint32      `json:"dropped_links_count"`
}

// StatusJSON is the span status: code is "unset", "ok" or "error".
type StatusJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ScopeJSON is the instrumentation scope.
type ScopeJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// AttrJSON is a typed attribute. type is string, bool, int, double,
// bytes (value base64), array or map (value is the JSON array/object).
type AttrJSON struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// ValueJSON is a typed value without a key (attribute value lists).
type ValueJSON struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// EventJSON is a span event.
type EventJSON struct {
	Name         string     `json:"name"`
	Time         string     `json:"time"`
	TimeUnixNano uint64     `json:"time_unix_nano"`
	Attributes   []AttrJSON `json:"attributes"`
}

// LinkJSON is a span link.
type LinkJSON struct {
	TraceID    string     `json:"trace_id"`
	SpanID     string     `json:"span_id"`
	TraceState string     `json:"trace_state"`
	Attributes []AttrJSON `json:"attributes"`
}

// SummaryJSON is one search result.
type SummaryJSON struct {
	TraceID       string `json:"trace_id"`
	RootService   string `json:"root_service"`
	RootOperation string `json:"root_operation"`
	TimesJSON
	SpanCount  int           `json:"span_count"`
	ErrorCount int           `json:"error_count"`
	Services   []ServiceJSON `json:"services"`
	// Sampled is the tail-sampling decision about the trace: why it was
	// kept ("error", "finding", "slow", "rate", ...) or "dropped" (its
	// spans are about to leave storage). Absent when sampling is off or
	// the decision is no longer remembered.
	Sampled string `json:"sampled,omitempty"`
	// TraceAvailable is false for a trace whose spans retention deleted:
	// its summary comes from the archive (kept for retention.findings)
	// and /api/v1/traces/{id} no longer finds it. Absent: stored.
	TraceAvailable *bool `json:"trace_available,omitempty"`
	// RetentionDays is how long the spans of a trace that is gone were
	// kept, so a reader knows why they are missing.
	RetentionDays float64 `json:"retention_days,omitempty"`
}

// ServiceJSON counts one service's spans in a trace.
type ServiceJSON struct {
	Name       string `json:"name"`
	SpanCount  int    `json:"span_count"`
	ErrorCount int    `json:"error_count"`
}

func rfc3339(ns uint64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, int64(ns)).UTC().Format(time.RFC3339Nano)
}

func ms(ns uint64) float64 { return float64(ns) / 1e6 }

func times(start, end uint64) TimesJSON {
	d := uint64(0)
	if end > start {
		d = end - start
	}
	return TimesJSON{StartTime: rfc3339(start), StartUnixNano: start, EndTime: rfc3339(end), EndUnixNano: end, DurationMS: ms(d)}
}

func valueJSON(v model.Value) ValueJSON {
	switch v.Type {
	case model.TypeString:
		return ValueJSON{"string", v.Str}
	case model.TypeBool:
		return ValueJSON{"bool", v.Bool}
	case model.TypeInt:
		return ValueJSON{"int", v.Int}
	case model.TypeDouble:
		if math.IsNaN(v.Float) || math.IsInf(v.Float, 0) {
			// JSON has no NaN/Inf: send the text.
			return ValueJSON{"double", strconv.FormatFloat(v.Float, 'g', -1, 64)}
		}
		return ValueJSON{"double", v.Float}
	case model.TypeBytes:
		return ValueJSON{"bytes", v.Bytes}
	case model.TypeArray, model.TypeMap:
		typ := "array"
		if v.Type == model.TypeMap {
			typ = "map"
		}
		if json.Valid([]byte(v.Str)) {
			return ValueJSON{typ, json.RawMessage(v.Str)}
		}
		return ValueJSON{typ, v.Str}
	}
	return ValueJSON{"empty", nil}
}

func attrsJSON(attrs model.Attrs) []AttrJSON {
	out := make([]AttrJSON, len(attrs))
	for i, a := range attrs {
		v := valueJSON(a.Value)
		out[i] = AttrJSON{Key: a.Key, Type: v.Type, Value: v.Value}
	}
	return out
}

func spanJSON(s *model.Span) SpanJSON {
	j := SpanJSON{
		TraceID:                s.TraceID.String(),
		SpanID:                 s.SpanID.String(),
		TraceState:             s.TraceState,
		Flags:                  s.Flags,
		Name:                   s.Name,
		Kind:                   s.Kind.String(),
		Service:                s.Service,
		TimesJSON:              times(s.StartUnixNano, s.EndUnixNano),
		Status:                 StatusJSON{Code: s.StatusCode.String(), Message: s.StatusMessage},
		Resource:               attrsJSON(s.Resource),
		Scope:                  ScopeJSON{Name: s.ScopeName, Version: s.ScopeVersion},
		Attributes:             attrsJSON(s.Attrs),
		Events:                 make([]EventJSON, len(s.Events)),
		Links:                  make([]LinkJSON, len(s.Links)),
		DroppedAttributesCount: s.DroppedAttributesCount,
		DroppedEventsCount:     s.DroppedEventsCount,
		DroppedLinksCount:      s.DroppedLinksCount,
	}
	if !s.ParentSpanID.IsZero() {
		j.ParentSpanID = s.ParentSpanID.String()
	}
	for i, e := range s.Events {
		j.Events[i] = EventJSON{Name: e.Name, Time: rfc3339(e.TimeUnixNano), TimeUnixNano: e.TimeUnixNano, Attributes: attrsJSON(e.Attrs)}
	}
	for i, l := range s.Links {
		j.Links[i] = LinkJSON{TraceID: l.TraceID.String(), SpanID: l.SpanID.String(), TraceState: l.TraceState, Attributes: attrsJSON(l.Attrs)}
	}
	return j
}

func summaryJSON(s *model.TraceSummary) SummaryJSON {
	j := SummaryJSON{
		TraceID: s.TraceID.String(), RootService: s.RootService, RootOperation: s.RootName,
		TimesJSON: times(s.StartUnixNano, s.EndUnixNano),
		SpanCount: s.SpanCount, ErrorCount: s.ErrorCount, Services: make([]ServiceJSON, len(s.Services)),
	}
	for i, sv := range s.Services {
		j.Services[i] = ServiceJSON{Name: sv.Name, SpanCount: sv.SpanCount, ErrorCount: sv.ErrorCount}
	}
	return j
}

// analysisJSON is the analysis of one trace. Source says whether the
// findings are the ones stored when the server analysed the trace
// ("stored") or were computed for this request ("computed").
type analysisJSON struct {
	analyze.Result
	Source   string         `json:"source"`
	Rejudged []rejudgedJSON `json:"rejudged"`
	Note     string         `json:"note,omitempty"`
	// Findings and CriticalPath hold at most maxAnalysisItems entries;
	// the totals say how many there were, Truncated whether either was cut.
	TotalFindings     int  `json:"total_findings"`
	TotalCriticalPath int  `json:"total_critical_path"`
	Truncated         bool `json:"truncated"`
}

// rejudgedJSON is a stored finding that today's baselines would judge
// differently; "none" stands for "not reported".
type rejudgedJSON struct {
	Kind           string   `json:"kind"`
	SpanIDs        []string `json:"span_ids"`
	StoredSeverity string   `json:"stored_severity"`
	NowSeverity    string   `json:"now_severity"`
	NowTitle       string   `json:"now_title,omitempty"`
}

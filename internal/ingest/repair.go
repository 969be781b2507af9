package ingest

import (
	"encoding/hex"
	"encoding/json"
	"errors"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The repair functions run only after the fast pdata decoder refused a
// request. They find spans whose trace, span, parent or link ids have the
// wrong length and blank the span's own ids, so that the normal pipeline
// rejects exactly those spans (partial success) and keeps the rest. They
// report how many spans they blanked; 0 means the request is broken for
// another reason and must be refused as a whole.

func validIDLen(b []byte, n int) bool { return len(b) == 0 || len(b) == n }

func repairTraceProto(data []byte) ([]byte, int, error) {
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, 0, err
	}
	fixed := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				ok := validIDLen(sp.TraceId, 16) && validIDLen(sp.SpanId, 8) && validIDLen(sp.ParentSpanId, 8)
				for _, l := range sp.Links {
					ok = ok && validIDLen(l.TraceId, 16) && validIDLen(l.SpanId, 8)
				}
				if !ok {
					sp.TraceId, sp.SpanId, sp.ParentSpanId, sp.Links = nil, nil, nil, nil
					fixed++
				}
			}
		}
	}
	if fixed == 0 {
		return nil, 0, errors.New("no invalid ids found")
	}
	out, err := proto.Marshal(&req)
	return out, fixed, err
}

// jsonObj keeps unknown members verbatim while ids are checked.
type jsonObj = map[string]json.RawMessage

func repairTraceJSON(data []byte) ([]byte, int, error) {
	var top jsonObj
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, 0, err
	}
	fixed := 0
	err := editArray(top, []string{"resourceSpans", "resource_spans"}, func(rs jsonObj) error {
		return editArray(rs, []string{"scopeSpans", "scope_spans"}, func(ss jsonObj) error {
			return editArray(ss, []string{"spans"}, func(sp jsonObj) error {
				ok := hexIDOK(sp, 16, "traceId", "trace_id") && hexIDOK(sp, 8, "spanId", "span_id") &&
					hexIDOK(sp, 8, "parentSpanId", "parent_span_id")
				if ok {
					_ = editArray(sp, []string{"links"}, func(l jsonObj) error {
						ok = ok && hexIDOK(l, 16, "traceId", "trace_id") && hexIDOK(l, 8, "spanId", "span_id")
						return nil
					})
				}
				if !ok {
					for _, k := range []string{"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id", "links"} {
						delete(sp, k)
					}
					fixed++
				}
				return nil
			})
		})
	})
	if err != nil {
		return nil, 0, err
	}
	if fixed == 0 {
		return nil, 0, errors.New("no invalid ids found")
	}
	out, err := json.Marshal(top)
	return out, fixed, err
}

// editArray calls fn on each object of the array member (first key found)
// and writes the edited array back.
func editArray(obj jsonObj, keys []string, fn func(jsonObj) error) error {
	for _, k := range keys {
		raw, ok := obj[k]
		if !ok {
			continue
		}
		var items []jsonObj
		if err := json.Unmarshal(raw, &items); err != nil {
			return err
		}
		for _, it := range items {
			if err := fn(it); err != nil {
				return err
			}
		}
		b, err := json.Marshal(items)
		if err != nil {
			return err
		}
		obj[k] = b
		return nil
	}
	return nil
}

func hexIDOK(obj jsonObj, n int, keys ...string) bool {
	for _, k := range keys {
		raw, ok := obj[k]
		if !ok {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return false
		}
		if s == "" {
			return true
		}
		b, err := hex.DecodeString(s)
		return err == nil && len(b) == n
	}
	return true
}

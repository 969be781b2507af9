package ingest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The repair functions run only after the fast pdata decoder refused a
// request. pdata refuses a whole request when one id has the wrong length;
// to reject only the offending spans or log records (partial success),
// the request is re-read leniently and the items whose ids have the wrong
// length are removed. They return the repaired bytes and a repair note with
// the number removed and a message naming the first (with the id as sent);
// no removal means the request is broken for another reason and must be
// refused as a whole.

// repaired describes what a repair removed.
type repaired struct {
	removed int
	first   string // the first removal's reason
}

func (r *repaired) add(reason string) {
	if r.removed == 0 {
		r.first = reason
	}
	r.removed++
}

var errNothingToRepair = errors.New("no invalid ids found")

// idField is one id as sent and its required length in bytes.
type idField struct {
	what string
	b    []byte
	n    int
}

// badID describes the first id of fields with a wrong length ("" if none).
// Empty ids are left to the pipeline (zero ids are rejected there; an
// empty parent is a root).
func badID(item, name string, fields ...idField) string {
	for _, f := range fields {
		if len(f.b) != 0 && len(f.b) != f.n {
			return fmt.Sprintf("%s %q: %s id %s has %d bytes, want %d", item, model.Clip(name, 64), f.what, clipHex(f.b), len(f.b), f.n)
		}
	}
	return ""
}

// clipHex shows an id as sent, clipped so a huge id cannot flood a reply.
func clipHex(b []byte) string {
	const max = 32
	if len(b) > max {
		return hex.EncodeToString(b[:max]) + "…"
	}
	return hex.EncodeToString(b)
}

// dropBad keeps the items for which why returns "", noting the others.
func dropBad[T any](items []T, rep *repaired, why func(T) string) []T {
	kept := items[:0]
	for _, it := range items {
		if reason := why(it); reason != "" {
			rep.add(reason)
			continue
		}
		kept = append(kept, it)
	}
	return kept
}

// repairedProto encodes req after its bad items were dropped.
func repairedProto(req proto.Message, rep repaired) ([]byte, repaired, error) {
	if rep.removed == 0 {
		return nil, rep, errNothingToRepair
	}
	out, err := proto.Marshal(req)
	return out, rep, err
}

func repairTraceProto(data []byte) ([]byte, repaired, error) {
	var req coltracepb.ExportTraceServiceRequest
	var rep repaired
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, rep, err
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			ss.Spans = dropBad(ss.Spans, &rep, func(sp *tracepb.Span) string {
				fields := []idField{{"trace", sp.TraceId, 16}, {"span", sp.SpanId, 8}, {"parent span", sp.ParentSpanId, 8}}
				for _, l := range sp.Links {
					fields = append(fields, idField{"link trace", l.TraceId, 16}, idField{"link span", l.SpanId, 8})
				}
				return badID("span", sp.Name, fields...)
			})
		}
	}
	return repairedProto(&req, rep)
}

func repairLogsProto(data []byte) ([]byte, repaired, error) {
	var req collogspb.ExportLogsServiceRequest
	var rep repaired
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, rep, err
	}
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			sl.LogRecords = dropBad(sl.LogRecords, &rep, func(lr *logspb.LogRecord) string {
				return badID("log record", lr.EventName, idField{"trace", lr.TraceId, 16}, idField{"span", lr.SpanId, 8})
			})
		}
	}
	return repairedProto(&req, rep)
}

// jsonObj keeps unknown members verbatim while ids are checked.
type jsonObj = map[string]json.RawMessage

// jsonIDKeys are the id members of a span, link or log record in OTLP JSON
// (lowerCamelCase, or the proto names some encoders write).
type jsonIDKey struct {
	what        string
	camel, orig string
	n           int
}

var (
	spanIDKeys = []jsonIDKey{{"trace", "traceId", "trace_id", 16}, {"span", "spanId", "span_id", 8}, {"parent span", "parentSpanId", "parent_span_id", 8}}
	linkIDKeys = []jsonIDKey{{"link trace", "traceId", "trace_id", 16}, {"link span", "spanId", "span_id", 8}}
	logIDKeys  = []jsonIDKey{{"trace", "traceId", "trace_id", 16}, {"span", "spanId", "span_id", 8}}
)

func repairTraceJSON(data []byte) ([]byte, repaired, error) {
	return repairJSON(data, [3][2]string{{"resourceSpans", "resource_spans"}, {"scopeSpans", "scope_spans"}, {"spans", "spans"}},
		func(sp jsonObj) string {
			why := badJSONID("span", sp, spanIDKeys)
			if why == "" {
				_, _ = editArray(sp, "links", "links", func(l jsonObj) bool {
					if why == "" {
						why = badJSONID("span", jsonObj{"name": sp["name"], "traceId": l["traceId"], "trace_id": l["trace_id"],
							"spanId": l["spanId"], "span_id": l["span_id"]}, linkIDKeys)
					}
					return true
				})
			}
			return why
		})
}

func repairLogsJSON(data []byte) ([]byte, repaired, error) {
	return repairJSON(data, [3][2]string{{"resourceLogs", "resource_logs"}, {"scopeLogs", "scope_logs"}, {"logRecords", "log_records"}},
		func(lr jsonObj) string {
			return badJSONID("log record", jsonObj{"name": lr["eventName"], "traceId": lr["traceId"], "trace_id": lr["trace_id"],
				"spanId": lr["spanId"], "span_id": lr["span_id"]}, logIDKeys)
		})
}

// repairJSON removes the items (third level of path) for which bad
// returns a reason.
func repairJSON(data []byte, path [3][2]string, bad func(jsonObj) string) ([]byte, repaired, error) {
	var top jsonObj
	var rep repaired
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, rep, err
	}
	var ferr error
	note := func(err error) bool {
		if err != nil && ferr == nil {
			ferr = err
		}
		return true
	}
	_, err := editArray(top, path[0][0], path[0][1], func(outer jsonObj) bool {
		_, err := editArray(outer, path[1][0], path[1][1], func(scope jsonObj) bool {
			_, err := editArray(scope, path[2][0], path[2][1], func(item jsonObj) bool {
				if why := bad(item); why != "" {
					rep.add(why)
					return false
				}
				return true
			})
			return note(err)
		})
		return note(err)
	})
	if err = errors.Join(err, ferr); err != nil {
		return nil, rep, err
	}
	if rep.removed == 0 {
		return nil, rep, errNothingToRepair
	}
	out, err := json.Marshal(top)
	return out, rep, err
}

// editArray calls keep on each object of the array member (either spelling
// of its key), writes back the objects it keeps and returns how many.
func editArray(obj jsonObj, camel, orig string, keep func(jsonObj) bool) (int, error) {
	for _, k := range []string{camel, orig} {
		raw, ok := obj[k]
		if !ok {
			continue
		}
		var items []jsonObj
		if err := json.Unmarshal(raw, &items); err != nil {
			return 0, err
		}
		kept := items[:0]
		for _, it := range items {
			if keep(it) {
				kept = append(kept, it)
			}
		}
		b, err := json.Marshal(kept)
		if err != nil {
			return 0, err
		}
		obj[k] = b
		return len(kept), nil
	}
	return 0, nil
}

// badJSONID describes the first id member that is not hex of the right
// length ("" if none), quoting the id as sent.
func badJSONID(item string, obj jsonObj, keys []jsonIDKey) string {
	var name string
	_ = json.Unmarshal(obj["name"], &name)
	for _, k := range keys {
		raw, ok := obj[k.camel]
		if !ok {
			raw, ok = obj[k.orig]
		}
		if !ok || raw == nil {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Sprintf("%s %q: %s id %s is not a string", item, model.Clip(name, 64), k.what, model.Clip(string(raw), 64))
		}
		if s == "" {
			continue
		}
		if b, err := hex.DecodeString(s); err != nil || len(b) != k.n {
			return fmt.Sprintf("%s %q: %s id %q is not %d hex characters", item, model.Clip(name, 64), k.what, model.Clip(s, 64), 2*k.n)
		}
	}
	return ""
}

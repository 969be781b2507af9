package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/zipkin"
)

// The traceio samples: the ML-OOM trace as the Jaeger UI downloads it
// (and as a bare trace object), and two traces as a Zipkin v2 array. They
// sit one directory deeper than the per-kind OTLP fixtures, so globs over
// testdata/traces/*/*.json see only OTLP.
func init() {
	extra = append(extra, func(out string) error {
		oom := build("error_origin", "positive-ml-model-oom")
		lag := build("consumer_lag", "positive-kafka-45s")
		ui := map[string]any{"data": []any{jaegerTrace(oom), jaegerTrace(lag)}, "total": 0, "limit": 0, "offset": 0, "errors": nil}
		if err := writeJSON(filepath.Join(out, "jaeger", "v1", "ui-download-two-traces.json"), ui); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(out, "jaeger", "v1", "bare-trace-ml-oom.json"), jaegerTrace(oom)); err != nil {
			return err
		}
		both := append(append([]model.Span(nil), build("swallowed_error", "positive-product-page-timeouts")...),
			build("cache_miss", "positive-product-cache-aside")...)
		b, err := zipkin.FromModel(both)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(out, "zipkin", "v2"), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, "zipkin", "v2", "two-traces.json"), append(b, '\n'), 0o644)
	})
}

func build(kind, name string) []model.Span {
	for _, f := range fixtures {
		if f.kind == kind && f.name == name {
			return f.build().spans
		}
	}
	panic("no fixture " + kind + "/" + name)
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func jTag(k string, v model.Value) map[string]any {
	switch v.Type {
	case model.TypeInt:
		return map[string]any{"key": k, "type": "int64", "value": v.Int}
	case model.TypeDouble:
		return map[string]any{"key": k, "type": "float64", "value": v.Float}
	case model.TypeBool:
		return map[string]any{"key": k, "type": "bool", "value": v.Bool}
	}
	return map[string]any{"key": k, "type": "string", "value": v.AsString()}
}

// jaegerTrace renders spans the way Jaeger's query service does: span kind,
// status and scope as tags, events as logs with an "event" field, one
// process per service.
func jaegerTrace(spans []model.Span) map[string]any {
	procs := map[string]any{}
	pid := map[string]string{}
	var js []any
	for _, s := range spans {
		p, ok := pid[s.Service]
		if !ok {
			p = fmt.Sprintf("p%d", len(pid)+1)
			pid[s.Service] = p
			var tags []any
			for _, a := range s.Resource {
				if a.Key != "service.name" {
					tags = append(tags, jTag(a.Key, a.Value))
				}
			}
			procs[p] = map[string]any{"serviceName": s.Service, "tags": tags}
		}
		refs := []any{}
		if !s.ParentSpanID.IsZero() {
			refs = append(refs, map[string]any{"refType": "CHILD_OF", "traceID": s.TraceID.String(), "spanID": s.ParentSpanID.String()})
		}
		tags := []any{jTag("otel.scope.name", model.Str(s.ScopeName))}
		for _, a := range s.Attrs {
			tags = append(tags, jTag(a.Key, a.Value))
		}
		if s.Kind != model.KindUnspecified && s.Kind != model.KindInternal {
			tags = append(tags, jTag("span.kind", model.Str(s.Kind.String())))
		}
		if s.StatusCode == model.StatusError {
			tags = append(tags, jTag("otel.status_code", model.Str("ERROR")), jTag("error", model.Bool(true)))
			if s.StatusMessage != "" {
				tags = append(tags, jTag("otel.status_description", model.Str(s.StatusMessage)))
			}
		}
		logs := []any{}
		for _, e := range s.Events {
			fields := []any{jTag("event", model.Str(e.Name))}
			for _, a := range e.Attrs {
				fields = append(fields, jTag(a.Key, a.Value))
			}
			logs = append(logs, map[string]any{"timestamp": e.TimeUnixNano / 1000, "fields": fields})
		}
		js = append(js, map[string]any{
			"traceID": s.TraceID.String(), "spanID": s.SpanID.String(), "operationName": s.Name, "references": refs,
			"startTime": s.StartUnixNano / 1000, "duration": (s.EndUnixNano - s.StartUnixNano) / 1000, "flags": 1,
			"tags": tags, "logs": logs, "processID": p, "warnings": nil,
		})
	}
	return map[string]any{"traceID": spans[0].TraceID.String(), "spans": js, "processes": procs, "warnings": nil}
}

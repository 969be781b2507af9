package traceio

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// tempoJSON reads the trace JSON of Tempo's API: /api/traces/{id} answers
// {"batches": [ResourceSpans…]} and /api/v2/traces/{id} {"trace":
// {"resourceSpans": […]}}. Tempo renders protobuf bytes the jsonpb way, so
// span and trace ids are base64 rather than OTLP JSON's hex; both are read.
func tempoJSON(raw json.RawMessage, keys map[string]json.RawMessage) ([]model.Span, error) {
	body := raw
	if t, ok := keys["trace"]; ok {
		body = t
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	if b, ok := obj["batches"]; ok {
		delete(obj, "batches")
		obj["resourceSpans"] = b
	}
	rss, _ := obj["resourceSpans"].([]any)
	for _, rs := range rss {
		for _, ss := range listOf(rs, "scopeSpans", "instrumentationLibrarySpans") {
			for _, sp := range listOf(ss, "spans") {
				if err := hexIDs(sp, "traceId", "spanId", "parentSpanId"); err != nil {
					return nil, err
				}
				for _, l := range listOf(sp, "links") {
					if err := hexIDs(l, "traceId", "spanId"); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	fixed, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return otlpJSON(fixed)
}

// listOf returns the first of keys that holds a JSON array in object v.
func listOf(v any, keys ...string) []any {
	m, _ := v.(map[string]any)
	for _, k := range keys {
		if l, ok := m[k].([]any); ok {
			return l
		}
	}
	return nil
}

// hexIDs rewrites base64 ids (24 characters for a trace id, 12 for a span
// id) to hex; hex ids pass unchanged.
func hexIDs(v any, keys ...string) error {
	m, _ := v.(map[string]any)
	for _, k := range keys {
		s, ok := m[k].(string)
		if !ok || (len(s) != 24 && len(s) != 12) {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || (len(b) != 16 && len(b) != 8) {
			return fmt.Errorf("%s %q is neither hex nor a base64 id", k, s)
		}
		m[k] = hex.EncodeToString(b)
	}
	return nil
}

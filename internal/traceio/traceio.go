// Package traceio reads trace files for `tracedx analyze` and friends:
// OTLP JSON (an ExportTraceServiceRequest, or the Collector file exporter's
// one request per line), OTLP protobuf, Jaeger JSON (the UI's download
// format, the query API's answer and a bare trace object), Tempo's trace
// JSON (v1 and v2), tracedx's own /api/v1/traces/{id} and Zipkin v2 JSON
// arrays. The format is
// detected from the content, never from the file name, so stdin works too.
package traceio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/zipkin"
)

// Format names an input format.
type Format string

const (
	FormatOTLPJSON   Format = "otlp-json"
	FormatOTLPProto  Format = "otlp-protobuf"
	FormatJaegerJSON Format = "jaeger-json"
	FormatZipkinJSON Format = "zipkin-json"
	// FormatTempoJSON is Tempo's trace by id: {"batches": …} (v1) or
	// {"trace": {"resourceSpans": …}} (v2), ids in base64.
	FormatTempoJSON Format = "tempo-json"
	// FormatTracedxJSON is tracedx's own GET /api/v1/traces/{id}.
	FormatTracedxJSON Format = "tracedx-json"
)

// Trace is the spans of one trace, in input order.
type Trace struct {
	ID    model.TraceID
	Spans []model.Span
}

// ErrUnrecognized is wrapped by errors for input of no supported format.
var ErrUnrecognized = errors.New("unrecognised trace format")

// MaxInput bounds what Read accepts, so a wrong file (a disk image piped
// in by mistake) fails clearly instead of exhausting memory.
const MaxInput = 1 << 30

// ReadFile reads one file; "-" is not special here (see Read).
func ReadFile(path string) ([]Trace, Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	tr, format, err := Read(f)
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", path, err)
	}
	return tr, format, nil
}

// ReadInput reads the input a command line names: a file path, or "-" for
// stdin. Errors name the input ("stdin" for "-").
func ReadInput(path string, stdin io.Reader) ([]Trace, Format, error) {
	if path != "-" {
		return ReadFile(path)
	}
	if stdin == nil {
		return nil, "", errors.New("stdin: no standard input")
	}
	tr, format, err := Read(stdin)
	if err != nil {
		return nil, format, fmt.Errorf("stdin: %w", err)
	}
	return tr, format, nil
}

// Read reads a whole input and returns its spans grouped per trace, in
// order of first appearance.
func Read(r io.Reader) ([]Trace, Format, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, "", fmt.Errorf("read input: %w", err)
	}
	if len(data) > MaxInput {
		return nil, "", fmt.Errorf("input larger than %d bytes", MaxInput)
	}
	spans, format, err := Parse(data)
	if err != nil {
		return nil, format, err
	}
	return Group(spans), format, nil
}

// Parse detects the format of data and converts it to spans.
func Parse(data []byte) ([]model.Span, Format, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	trimmed = bytes.TrimPrefix(trimmed, []byte("\xef\xbb\xbf"))
	if len(trimmed) == 0 {
		return nil, "", errors.New("empty input: no traces to read")
	}
	var jsonErr error
	var jsonFormat Format
	// The OTLP decoders recurse once per nested attribute value: a hostile
	// file could overflow the stack (see otlpconv.MaxNesting).
	// A protobuf body starts with 0x0a, which TrimLeft takes for a newline,
	// so a nesting error only counts when the input cannot be protobuf.
	first := trimmed[0]
	if first == '[' || first == '{' {
		if err := otlpconv.CheckJSONNesting(trimmed); err != nil {
			if data[0] != 0x0a {
				return nil, "", err
			}
			jsonErr, first = err, 0
		}
	}
	switch first {
	case '[':
		spans, f, err := parseArray(trimmed)
		if err == nil || data[0] != 0x0a {
			return spans, f, err
		}
		jsonErr, jsonFormat = err, f
	case '{':
		spans, f, err := parseObjects(trimmed)
		if err == nil || data[0] != 0x0a {
			return spans, f, err
		}
		jsonErr, jsonFormat = err, f
	}
	// OTLP protobuf: ExportTraceServiceRequest and TracesData both start
	// with field 1 (resource_spans), length-delimited: tag byte 0x0a — which
	// is also a newline, so JSON after an empty line is tried first.
	if data[0] == 0x0a {
		var td ptrace.Traces
		err := otlpconv.CheckTracesProtoNesting(data, otlpconv.MaxNesting)
		var ne *otlpconv.NestingError
		if errors.As(err, &ne) {
			return nil, FormatOTLPProto, err
		}
		if err == nil {
			var u ptrace.ProtoUnmarshaler
			td, err = u.UnmarshalTraces(data)
		}
		if err == nil {
			return otlpconv.FromTraces(td), FormatOTLPProto, nil
		}
		if jsonErr != nil {
			return nil, jsonFormat, jsonErr
		}
		return nil, FormatOTLPProto, fmt.Errorf("decode OTLP protobuf: %w", err)
	}
	head := trimmed
	if len(head) > 16 {
		head = head[:16]
	}
	return nil, "", fmt.Errorf("%w: input starts with %q; expected OTLP JSON or protobuf, Jaeger JSON or a Zipkin v2 JSON array", ErrUnrecognized, head)
}

// parseArray handles Zipkin v2 (an array of spans, or the query API's
// /api/v2/traces: an array of such arrays) and an array of Jaeger trace
// objects.
func parseArray(data []byte) ([]model.Span, Format, error) {
	if inner := bytes.TrimLeft(data[1:], " \t\r\n"); len(inner) > 0 && inner[0] == '[' {
		var traces []json.RawMessage
		if err := json.Unmarshal(data, &traces); err != nil {
			return nil, "", fmt.Errorf("%w: a JSON array of arrays, but not of Zipkin v2 traces: %v", ErrUnrecognized, err)
		}
		var spans []model.Span
		for i, tr := range traces {
			got, f, err := parseArray(tr)
			if err != nil {
				return spans, f, fmt.Errorf("trace %d: %w", i+1, err)
			}
			if f != FormatZipkinJSON {
				return nil, f, fmt.Errorf("%w: trace %d of an array of arrays is %s, not Zipkin v2", ErrUnrecognized, i+1, f)
			}
			spans = append(spans, got...)
		}
		return spans, FormatZipkinJSON, nil
	}
	var elems []map[string]json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		return nil, "", fmt.Errorf("%w: a JSON array, but not of span or trace objects: %v", ErrUnrecognized, err)
	}
	if len(elems) == 0 {
		return nil, FormatZipkinJSON, nil
	}
	if _, ok := elems[0]["spans"]; ok {
		var traces []jaegerTrace
		if err := json.Unmarshal(data, &traces); err != nil {
			return nil, FormatJaegerJSON, fmt.Errorf("decode Jaeger JSON: %w", err)
		}
		spans, err := fromJaeger(traces)
		return spans, FormatJaegerJSON, err
	}
	if _, ok := elems[0]["traceId"]; !ok {
		return nil, "", fmt.Errorf("%w: a JSON array whose objects have no traceId (Zipkin v2) or spans (Jaeger)", ErrUnrecognized)
	}
	spans, err := zipkin.ToModel(data)
	if err != nil {
		if bad, ok := zipkin.IsInvalidSpans(err); ok && len(spans) > 0 {
			// Keep the valid spans; the caller sees the dropped ones.
			return spans, FormatZipkinJSON, fmt.Errorf("some Zipkin v2 spans are invalid: %w", bad)
		}
		return nil, FormatZipkinJSON, fmt.Errorf("decode Zipkin v2 JSON: %w", err)
	}
	return spans, FormatZipkinJSON, nil
}

// parseObjects reads one or more JSON objects (one per line for the
// Collector's file exporter) and dispatches on their keys.
func parseObjects(data []byte) ([]model.Span, Format, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var spans []model.Span
	var format Format
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, format, fmt.Errorf("object %d: invalid JSON: %w", n, err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(raw, &keys); err != nil {
			return nil, format, fmt.Errorf("object %d: expected a JSON object: %w", n, err)
		}
		var got []model.Span
		var f Format
		var err error
		switch {
		case keys["resourceSpans"] != nil || keys["resource_spans"] != nil:
			f = FormatOTLPJSON
			got, err = otlpJSON(raw)
		case keys["batches"] != nil || keys["trace"] != nil:
			f = FormatTempoJSON
			got, err = tempoJSON(raw, keys)
		case keys["trace_id"] != nil && keys["spans"] != nil:
			f = FormatTracedxJSON
			got, err = tracedxJSON(raw)
		case keys["result"] != nil:
			// Jaeger api_v3 wraps OTLP JSON in {"result": …}.
			f = FormatOTLPJSON
			got, err = otlpJSON(keys["result"])
		case keys["data"] != nil:
			f = FormatJaegerJSON
			var env struct {
				Data []jaegerTrace `json:"data"`
			}
			if err = json.Unmarshal(raw, &env); err == nil {
				got, err = fromJaeger(env.Data)
			}
		case keys["spans"] != nil && (keys["traceID"] != nil || keys["processes"] != nil):
			f = FormatJaegerJSON
			var tr jaegerTrace
			if err = json.Unmarshal(raw, &tr); err == nil {
				got, err = fromJaeger([]jaegerTrace{tr})
			}
		default:
			names := make([]string, 0, len(keys))
			for k := range keys {
				names = append(names, k)
			}
			sort.Strings(names)
			return nil, "", fmt.Errorf("%w: object %d has keys %v; expected resourceSpans (OTLP), batches or trace (Tempo), trace_id and spans (tracedx), data or spans (Jaeger)", ErrUnrecognized, n, names)
		}
		if err != nil {
			return nil, f, fmt.Errorf("object %d: decode %s: %w", n, f, err)
		}
		if format != "" && f != format {
			return nil, format, fmt.Errorf("object %d is %s, earlier objects were %s", n, f, format)
		}
		format = f
		spans = append(spans, got...)
	}
	return spans, format, nil
}

func otlpJSON(raw []byte) ([]model.Span, error) {
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(raw)
	if err != nil {
		return nil, err
	}
	return otlpconv.FromTraces(td), nil
}

// DropUntimed removes spans that carry no start time (a Zipkin span
// without timestamp or annotations, an OTLP span with startTimeUnixNano
// left out) and the traces left without spans. Live ingest rejects such
// spans; shown, they would sit at 1970 and stretch their trace over 56
// years. It returns how many spans it dropped.
func DropUntimed(traces []Trace) ([]Trace, int) {
	dropped := 0
	out := traces[:0]
	for _, t := range traces {
		kept := t.Spans[:0]
		for _, s := range t.Spans {
			if s.StartUnixNano == 0 {
				dropped++
				continue
			}
			kept = append(kept, s)
		}
		if len(kept) > 0 {
			t.Spans = kept
			out = append(out, t)
		}
	}
	return out, dropped
}

// Group splits spans per trace id, in order of first appearance.
func Group(spans []model.Span) []Trace {
	idx := map[model.TraceID]int{}
	var out []Trace
	for i := range spans {
		id := spans[i].TraceID
		j, ok := idx[id]
		if !ok {
			j = len(out)
			idx[id] = j
			out = append(out, Trace{ID: id})
		}
		out[j].Spans = append(out[j].Spans, spans[i])
	}
	return out
}

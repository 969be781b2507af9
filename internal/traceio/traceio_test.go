package traceio

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

var fixtures = filepath.Join("..", "..", "testdata", "traces")

func readFixture(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRead(t *testing.T, data []byte, want Format) []Trace {
	t.Helper()
	tr, f, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if f != want {
		t.Fatalf("format %q, want %q", f, want)
	}
	return tr
}

func TestOTLPJSONSingleAndLines(t *testing.T) {
	a := readFixture(t, "error_origin/positive-ml-model-oom.json")
	b := readFixture(t, "consumer_lag/positive-kafka-45s.json")
	one := mustRead(t, a, FormatOTLPJSON)
	if len(one) != 1 || len(one[0].Spans) < 10 {
		t.Fatalf("got %d traces", len(one))
	}
	// The Collector's file exporter: one request per line.
	lines := mustRead(t, append(append(bytes.TrimSpace(a), '\n'), b...), FormatOTLPJSON)
	if len(lines) != 2 || lines[0].ID != one[0].ID || lines[1].ID == one[0].ID {
		t.Fatalf("lines: %d traces", len(lines))
	}
	// Jaeger api_v3 wraps OTLP JSON in "result".
	wrapped := mustRead(t, append(append([]byte(`{"result":`), a...), '}'), FormatOTLPJSON)
	if len(wrapped) != 1 || len(wrapped[0].Spans) != len(one[0].Spans) {
		t.Fatalf("api_v3 wrapper: %d traces", len(wrapped))
	}
}

func TestOTLPProtobuf(t *testing.T) {
	var u ptrace.JSONUnmarshaler
	td, err := u.UnmarshalTraces(readFixture(t, "poison_message/positive-kafka-retries-to-dlt.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m ptrace.ProtoMarshaler
	pb, err := m.MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	tr := mustRead(t, pb, FormatOTLPProto)
	if len(tr) != 1 || len(tr[0].Spans) != td.SpanCount() {
		t.Fatalf("got %d traces", len(tr))
	}
	res := analyze.Analyze(tr[0].Spans, analyze.Options{})
	if !hasKind(res, "poison_message") {
		t.Errorf("poison_message not found after protobuf round trip: %v", res.Findings)
	}
}

func TestJaegerUIDownload(t *testing.T) {
	tr := mustRead(t, readFixture(t, "jaeger/v1/ui-download-two-traces.json"), FormatJaegerJSON)
	if len(tr) != 2 {
		t.Fatalf("got %d traces", len(tr))
	}
	// The same trace as OTLP must diagnose the same way from Jaeger JSON:
	// kinds from tags, status from otel.status_code, exceptions from logs.
	otlp := mustRead(t, readFixture(t, "error_origin/positive-ml-model-oom.json"), FormatOTLPJSON)[0]
	if tr[0].ID != otlp.ID || len(tr[0].Spans) != len(otlp.Spans) {
		t.Fatalf("trace 0: id %s spans %d", tr[0].ID, len(tr[0].Spans))
	}
	res := analyze.Analyze(tr[0].Spans, analyze.Options{})
	var origin *analyze.ErrorOriginEvidence
	for _, f := range res.Findings {
		if ev, ok := f.Evidence.(analyze.ErrorOriginEvidence); ok {
			origin = &ev
		}
	}
	if origin == nil || origin.ExceptionType != "torch.cuda.OutOfMemoryError" || origin.Origin.Service != "ml-inference" {
		t.Fatalf("error origin from Jaeger JSON: %+v", origin)
	}
	var server *model.Span
	for i := range tr[0].Spans {
		if tr[0].Spans[i].ParentSpanID.IsZero() {
			server = &tr[0].Spans[i]
		}
	}
	if server == nil || server.Kind != model.KindServer || server.StatusCode != model.StatusError || server.Service != "api-gateway" ||
		server.Resource.Str("k8s.namespace.name") != "shop" {
		t.Errorf("root span %+v", server)
	}
	if v, ok := server.Attrs.Get("http.response.status_code"); !ok || v.Type != model.TypeInt || v.Int != 500 {
		t.Errorf("typed tag: %+v", v)
	}
	if !hasKind(analyze.Analyze(tr[1].Spans, analyze.Options{}), "consumer_lag") {
		t.Errorf("consumer_lag not found in the second Jaeger trace")
	}
}

func TestJaegerBareTraceAndStringValues(t *testing.T) {
	tr := mustRead(t, readFixture(t, "jaeger/v1/bare-trace-ml-oom.json"), FormatJaegerJSON)
	if len(tr) != 1 || len(tr[0].Spans) < 10 {
		t.Fatalf("got %d traces", len(tr))
	}
	// Some exporters write every value as a string, and old exports carry
	// the process inline and FOLLOWS_FROM references.
	in := `{"traceID":"abc","spans":[
	 {"traceID":"abc","spanID":"1","operationName":"root","references":[],"startTime":1700000000000000,"duration":1500,
	  "tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"http.status_code","type":"int64","value":"503"},
	          {"key":"error","type":"bool","value":"true"},{"key":"ratio","type":"float64","value":0.5}],
	  "process":{"serviceName":"legacy","tags":[]}},
	 {"traceID":"abc","spanID":"2","operationName":"async","references":[{"refType":"FOLLOWS_FROM","traceID":"abc","spanID":"1"}],
	  "startTime":1700000000001000,"duration":10,"tags":[],"logs":[{"timestamp":1700000000001005,"fields":[{"key":"message","type":"string","value":"hi"}]}],
	  "process":{"serviceName":"legacy","tags":[]}}]}`
	tr = mustRead(t, []byte(in), FormatJaegerJSON)
	s := tr[0].Spans
	if len(s) != 2 || s[0].StatusCode != model.StatusError || s[0].Kind != model.KindServer || s[1].ParentSpanID != s[0].SpanID ||
		s[0].Service != "legacy" || s[1].Events[0].Name != "log" || s[0].EndUnixNano-s[0].StartUnixNano != 1_500_000 {
		t.Fatalf("spans %+v", s)
	}
	if v, _ := s[0].Attrs.Get("http.status_code"); v.Int != 503 {
		t.Errorf("int from string: %+v", v)
	}
	if v, _ := s[0].Attrs.Get("ratio"); v.Float != 0.5 {
		t.Errorf("float: %+v", v)
	}
}

func TestZipkinArray(t *testing.T) {
	tr := mustRead(t, readFixture(t, "zipkin/v2/two-traces.json"), FormatZipkinJSON)
	if len(tr) != 2 {
		t.Fatalf("got %d traces", len(tr))
	}
	if !hasKind(analyze.Analyze(tr[0].Spans, analyze.Options{}), "swallowed_error") {
		t.Errorf("swallowed_error not found from Zipkin JSON")
	}
}

func TestUnreadableInput(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          "  \n",
		"text":           "hello world",
		"unknown object": `{"foo": 1}`,
		"truncated":      `{"resourceSpans": [`,
		"bad otlp":       `{"resourceSpans": 3}`,
		"array of nums":  `[1,2,3]`,
		"array no ids":   `[{"name":"x"}]`,
		"binary":         "\x00\x01\x02\x03",
		"bad proto":      "\x0a\xff\xff\xff\xff\x0f",
		"mixed lines":    `{"data":[]}` + "\n" + `{"resourceSpans":[]}`,
		"bad jaeger id":  `{"data":[{"traceID":"zz","spans":[{"traceID":"zz","spanID":"1"}]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Read(strings.NewReader(in))
			if err == nil {
				t.Fatalf("no error")
			}
			if len(err.Error()) < 15 {
				t.Errorf("unhelpful error %q", err)
			}
		})
	}
	_, _, err := Read(strings.NewReader("hello"))
	if !errors.Is(err, ErrUnrecognized) {
		t.Errorf("want ErrUnrecognized, got %v", err)
	}
}

func TestGroupKeepsOrder(t *testing.T) {
	var spans []model.Span
	for i, id := range []byte{3, 1, 3, 2, 1} {
		spans = append(spans, model.Span{TraceID: model.TraceID{id}, SpanID: model.SpanID{byte(i + 1)}})
	}
	g := Group(spans)
	if len(g) != 3 || g[0].ID[0] != 3 || g[1].ID[0] != 1 || g[2].ID[0] != 2 || len(g[0].Spans) != 2 || g[0].Spans[1].SpanID[0] != 3 {
		t.Fatalf("groups %+v", g)
	}
}

func hasKind(res analyze.Result, kind string) bool {
	for _, f := range res.Findings {
		if f.Kind == kind {
			return true
		}
	}
	return false
}

func TestReadInputStdinAndFile(t *testing.T) {
	data := readFixture(t, "zipkin/v2/two-traces.json")
	tr, f, err := ReadInput("-", bytes.NewReader(data))
	if err != nil || f != FormatZipkinJSON || len(tr) != 2 {
		t.Fatalf("stdin: %d traces, format %q, err %v", len(tr), f, err)
	}
	fromFile, f, err := ReadInput(filepath.Join(fixtures, "zipkin/v2/two-traces.json"), nil)
	if err != nil || f != FormatZipkinJSON || len(fromFile) != 2 || len(fromFile[0].Spans) != len(tr[0].Spans) {
		t.Fatalf("file: %d traces, format %q, err %v", len(fromFile), f, err)
	}
	if _, _, err := ReadInput("-", strings.NewReader("garbage")); err == nil || !strings.HasPrefix(err.Error(), "stdin: ") {
		t.Errorf("bad stdin: error %v does not name stdin", err)
	}
	if _, _, err := ReadInput("-", nil); err == nil {
		t.Error("nil stdin: no error")
	}
	missing := filepath.Join(t.TempDir(), "missing.json")
	if _, _, err := ReadInput(missing, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: error %v does not name the file", err)
	}
}

// TestZipkinTracesArray reads the answer of Zipkin's /api/v2/traces: one
// array of spans per trace.
func TestZipkinTracesArray(t *testing.T) {
	var spans []json.RawMessage
	if err := json.Unmarshal(readFixture(t, "zipkin/v2/two-traces.json"), &spans); err != nil {
		t.Fatal(err)
	}
	byTrace := map[string][]json.RawMessage{}
	var order []string
	for _, s := range spans {
		var k struct {
			TraceID string `json:"traceId"`
		}
		_ = json.Unmarshal(s, &k)
		if byTrace[k.TraceID] == nil {
			order = append(order, k.TraceID)
		}
		byTrace[k.TraceID] = append(byTrace[k.TraceID], s)
	}
	var nested [][]json.RawMessage
	for _, id := range order {
		nested = append(nested, byTrace[id])
	}
	in, _ := json.Marshal(nested)
	tr := mustRead(t, in, FormatZipkinJSON)
	flat := mustRead(t, readFixture(t, "zipkin/v2/two-traces.json"), FormatZipkinJSON)
	if len(tr) != 2 || len(tr[0].Spans)+len(tr[1].Spans) != len(flat[0].Spans)+len(flat[1].Spans) {
		t.Fatalf("got %d traces", len(tr))
	}
	if _, _, err := Parse([]byte(`[[{"spans": []}]]`)); err == nil {
		t.Error("an array of Jaeger traces inside an array must be refused")
	}
}

// A trace file nested a million levels deep is refused, not a crash of
// `tracedx analyze`.
func TestDeeplyNestedFileIsRefused(t *testing.T) {
	deep := otlpconvtest.TraceRequest(bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8), "s",
		otlpconvtest.KeyValue("d", otlpconvtest.NestedArray(1_000_000)))
	js := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"d","value":` +
		string(otlpconvtest.NestedArrayJSON(1_000_000)) + `}]}]}]}]}`)
	for name, data := range map[string][]byte{"protobuf": deep, "json": js} {
		var ne *otlpconv.NestingError
		if _, _, err := Parse(data); !errors.As(err, &ne) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

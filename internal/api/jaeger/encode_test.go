package jaeger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// referenceEncoding is what the v1 handlers wrote before the appending
// encoder: json.Encoder over ToTrace's values, indented as writeJSON
// indents when indent is set.
func referenceEncoding(t *testing.T, traces []v1Trace, total int, errs []apiError, indent bool) []byte {
	t.Helper()
	data := make([]Trace, 0, len(traces))
	for _, tr := range traces {
		jt := ToTrace(tr.spans)
		jt.Warnings = tr.warnings
		data = append(data, jt)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if indent {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(envelope{Data: data, Total: total, Errors: errs}); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return buf.Bytes()
}

func newEncoding(traces []v1Trace, total int, errs []apiError) []byte {
	e := getV1Encoder()
	defer putV1Encoder(e)
	e.appendEnvelope(traces, total, errs)
	return bytes.Clone(e.buf)
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-80)
	t.Fatalf("%s: encodings differ at byte %d of %d/%d\n got: %s\nwant: %s", what, i, len(got), len(want),
		got[lo:min(len(got), i+80)], want[lo:min(len(want), i+80)])
}

// awkwardStrings are the texts whose escaping differs between JSON
// encoders: quotes, controls, HTML characters, line separators, invalid
// UTF-8, multi-byte runes.
var awkwardStrings = []string{
	"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rcr\bbs\fff", "\x00\x01\x1f\x7f",
	"<script>&amp;</script>", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3", "日本語 ✓ 😀",
	"\u00e9\u0301 combining", strings.Repeat("long ", 50),
}

func awkwardSpans() []model.Span {
	tid := model.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	res := model.Attrs{{Key: "service.name", Value: model.Str("svc \"a\"")}, {Key: "host.name", Value: model.Str("h<1>")}}
	root := model.Span{
		TraceID: tid, SpanID: model.SpanID{1}, Name: "root <op> & \u2028", Kind: model.KindServer,
		StartUnixNano: 1_700_000_000_123_456_789, EndUnixNano: 1_700_000_001_000_000_000,
		Service: "svc \"a\"", Resource: res, ScopeName: "scope", ScopeVersion: "1.0", Flags: 0x301,
		StatusCode: model.StatusError, StatusMessage: "boom \xff",
		TraceState: "k=v,x=y", DroppedAttributesCount: 3, DroppedEventsCount: 1, DroppedLinksCount: 2,
		Attrs: model.Attrs{
			{Key: "big", Value: model.Int(1 << 60)}, {Key: "negbig", Value: model.Int(-(1 << 55))},
			{Key: "maxsafe", Value: model.Int(1<<53 - 1)}, {Key: "zero", Value: model.Int(0)},
			{Key: "f", Value: model.Float(3.25)}, {Key: "tiny", Value: model.Float(1.5e-9)},
			{Key: "huge", Value: model.Float(2.5e22)}, {Key: "neg", Value: model.Float(-0.000001)},
			{Key: "nan", Value: model.Float(math.NaN())}, {Key: "inf", Value: model.Float(math.Inf(-1))},
			{Key: "b", Value: model.Bool(false)}, {Key: "bytes", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{0, 1, 254, 255}}},
			{Key: "nilbytes", Value: model.Value{Type: model.TypeBytes}},
			{Key: "emptybytes", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{}}},
			{Key: "arr", Value: model.Value{Type: model.TypeArray, Str: `["x",1]`}},
			{Key: "empty", Value: model.Value{}},
			{Key: "error", Value: model.Str("app says no")}, {Key: "error", Value: model.Str("second")},
		},
		Events: []model.Event{
			{TimeUnixNano: 1_700_000_000_500_000_000, Name: "exception", Attrs: model.Attrs{{Key: "exception.message", Value: model.Str("nil <deref>")}}},
			{TimeUnixNano: 1_700_000_000_600_000_000, Name: "named", Attrs: model.Attrs{{Key: "event", Value: model.Str("own")}}},
			{TimeUnixNano: 1_700_000_000_700_000_000},
		},
		Links: []model.Link{
			{TraceID: model.TraceID{8: 0xab, 15: 1}, SpanID: model.SpanID{7}},
			{TraceID: tid, SpanID: model.SpanID{9, 9}},
		},
	}
	child := model.Span{
		TraceID: tid, SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{1}, Name: "child",
		Kind: model.KindClient, StartUnixNano: root.StartUnixNano + 10, EndUnixNano: root.StartUnixNano + 5000,
		Service: "svc \"a\"", Resource: res, StatusCode: model.StatusOK,
		Attrs: model.Attrs{{Key: "otel.status_code", Value: model.Str("custom")}},
	}
	// An orphan (parent not received) with an equal resource in another
	// slice, an error status without error attributes, and the same start
	// as the child (the sort must keep receive order).
	orphan := model.Span{
		TraceID: tid, SpanID: model.SpanID{3}, ParentSpanID: model.SpanID{0xde, 0xad}, Name: "orphan",
		StartUnixNano: child.StartUnixNano, EndUnixNano: child.StartUnixNano, Service: "svc \"a\"",
		Resource:   model.Attrs{{Key: "service.name", Value: model.Str("svc \"a\"")}, {Key: "host.name", Value: model.Str("h<1>")}},
		StatusCode: model.StatusError, Kind: model.SpanKind(42),
	}
	other := model.Span{
		TraceID: tid, SpanID: model.SpanID{4}, ParentSpanID: model.SpanID{2}, Name: "",
		StartUnixNano: root.StartUnixNano - 1, EndUnixNano: root.StartUnixNano + 1, Service: "",
		StatusCode: model.StatusError, Attrs: model.Attrs{{Key: "otel.status_code", Value: model.Int(2)}, {Key: "error", Value: model.Bool(false)}},
	}
	// Ends before it starts: the duration is clamped, not negative.
	backwards := model.Span{
		TraceID: tid, SpanID: model.SpanID{5}, ParentSpanID: model.SpanID{1}, Name: "backwards",
		StartUnixNano: root.StartUnixNano + 100, EndUnixNano: root.StartUnixNano, Service: "日本",
		Resource: model.Attrs{{Key: "k", Value: model.Int(1 << 62)}},
	}
	return []model.Span{child, root, orphan, other, backwards}
}

// randomSpans builds a trace of n spans over procs processes with random
// attributes drawn from awkwardStrings and random numbers.
func randomSpans(r *rand.Rand, n, procs int) []model.Span {
	var tid model.TraceID
	for i := range tid {
		tid[i] = byte(r.IntN(256))
	}
	if r.IntN(3) == 0 {
		clear(tid[:8]) // a 64-bit id
	}
	resources := make([]model.Attrs, procs)
	for i := range resources {
		resources[i] = model.Attrs{{Key: "service.name", Value: model.Str(fmt.Sprintf("svc-%d", i))}, {Key: "pid", Value: model.Int(int64(i))}}
	}
	str := func() string { return awkwardStrings[r.IntN(len(awkwardStrings))] }
	val := func() model.Value {
		switch r.IntN(6) {
		case 0:
			return model.Int(r.Int64() - r.Int64())
		case 1:
			return model.Float(r.NormFloat64() * math.Pow(10, float64(r.IntN(50)-25)))
		case 2:
			return model.Bool(r.IntN(2) == 0)
		case 3:
			b := binary.LittleEndian.AppendUint64(nil, r.Uint64())[:r.IntN(5)]
			return model.Value{Type: model.TypeBytes, Bytes: b}
		case 4:
			return model.Int(int64(r.IntN(1000)))
		}
		return model.Str(str())
	}
	attrs := func(k int) model.Attrs {
		var a model.Attrs
		for range k {
			key := str()
			if r.IntN(8) == 0 {
				key = []string{"error", "otel.status_code", "event"}[r.IntN(3)]
			}
			a = append(a, model.Attr{Key: key, Value: val()})
		}
		return a
	}
	spans := make([]model.Span, n)
	base := uint64(1_700_000_000_000_000_000)
	for i := range spans {
		s := &spans[i]
		s.TraceID = tid
		s.SpanID = model.SpanID{byte(i >> 8), byte(i), 1}
		if i > 0 {
			s.ParentSpanID = spans[r.IntN(i)].SpanID
			if r.IntN(10) == 0 {
				s.ParentSpanID = model.SpanID{0xff, byte(i)}
			}
		}
		p := r.IntN(procs)
		s.Service = fmt.Sprintf("svc-%d", p)
		s.Resource = resources[p]
		s.Name = str()
		s.Kind = model.SpanKind(r.IntN(7))
		s.StatusCode = model.StatusCode(r.IntN(3))
		s.StartUnixNano = base + uint64(r.IntN(1000))*1000
		s.EndUnixNano = s.StartUnixNano + uint64(r.IntN(1_000_000))
		s.Flags = uint32(r.IntN(3))
		s.Attrs = attrs(r.IntN(6))
		if r.IntN(4) == 0 {
			s.StatusMessage = str()
		}
		for range r.IntN(3) {
			s.Events = append(s.Events, model.Event{TimeUnixNano: s.StartUnixNano + 7, Name: str(), Attrs: attrs(r.IntN(3))})
		}
		for range r.IntN(2) {
			s.Links = append(s.Links, model.Link{TraceID: tid, SpanID: model.SpanID{byte(r.IntN(256))}})
		}
	}
	return spans
}

func TestV1EncoderMatchesEncodingJSON(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1.5, 1e-6, 9.99e-7, 1e20, 1e21, 123456789.125, 5e-324, math.MaxFloat64, 1.0 / 3} {
		want, _ := json.Marshal(f)
		sameBytes(t, fmt.Sprintf("float %v", f), appendJSONFloat(nil, f), want)
	}

	cases := map[string]struct {
		traces []v1Trace
		errs   []apiError
	}{
		"no traces":        {traces: []v1Trace{}},
		"empty trace":      {traces: []v1Trace{{}}},
		"awkward":          {traces: []v1Trace{{spans: awkwardSpans()}}},
		"warnings":         {traces: []v1Trace{{spans: awkwardSpans(), warnings: []string{cutWarning(5, 9), "<&>"}}}},
		"errors by id":     {traces: []v1Trace{{spans: awkwardSpans()}}, errs: []apiError{{Msg: "trace not found", TraceID: "00ab"}, {Code: 500, Msg: "x\ny"}}},
		"fixture":          {traces: []v1Trace{{spans: apitest.SynthTrace(0, 20)}, {spans: apitest.SynthTrace(1, 3)}}},
		"twelve processes": {traces: []v1Trace{{spans: randomSpans(rand.New(rand.NewPCG(1, 2)), 60, 12)}}},
		// More spans than a pooled encoder keeps room for.
		"large trace": {traces: []v1Trace{{spans: randomSpans(rand.New(rand.NewPCG(3, 4)), maxPooledSpans+100, 5)}}},
	}
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 40 {
		var traces []v1Trace
		for range 1 + r.IntN(4) {
			traces = append(traces, v1Trace{spans: randomSpans(r, 1+r.IntN(40), 1+r.IntN(14))})
		}
		cases[fmt.Sprintf("random %d", i)] = struct {
			traces []v1Trace
			errs   []apiError
		}{traces: traces}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			want := referenceEncoding(t, c.traces, len(c.traces), c.errs, false)
			got := newEncoding(c.traces, len(c.traces), c.errs)
			sameBytes(t, name, got, want)
			// A pooled encoder carries nothing over to the next response.
			sameBytes(t, name+" again", newEncoding(c.traces, len(c.traces), c.errs), want)
			// prettyPrint (the UI's JSON buttons)
			sameBytes(t, name+" indented", indented(got), referenceEncoding(t, c.traces, len(c.traces), c.errs, true))
		})
	}
}

// TestV1ResponsesMatchPrettyPrint checks, through the handler, that the
// search and trace-by-id responses asked for with prettyPrint are the
// plain ones indented (their content is checked against the reference
// encoding above).
func TestV1ResponsesMatchPrettyPrint(t *testing.T) {
	srv := newServer(t, Options{})
	get := func(path string) []byte {
		t.Helper()
		status, body := apitest.GetBody(t, srv, path)
		if status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", path, status, body)
		}
		return body
	}
	for _, path := range []string{
		"/api/traces?service=frontend&limit=20",
		"/api/traces?service=worker",
		"/api/traces/" + apitest.TraceA,
		"/api/traces?traceID=" + apitest.TraceA + "&traceID=00000000000000000000000000000bad",
	} {
		got := get(path)
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		pretty := get(path + sep + "prettyPrint=true")
		if !bytes.HasPrefix(pretty, []byte("{\n    \"data\": [\n")) {
			t.Fatalf("%s: prettyPrint response not indented: %.80s", path, pretty)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, pretty); err != nil {
			t.Fatal(err)
		}
		want.WriteByte('\n')
		if bytes.Count(got, []byte(`"spanID"`)) == 0 {
			t.Fatalf("%s: no spans in %s", path, got)
		}
		sameBytes(t, path, got, want.Bytes())
	}
}

// BenchmarkV1Encode compares, on 20 traces of 20 spans, the reference
// encoding (ToTrace and encoding/json, the encoder before encode.go) with
// the appending encoder.
func BenchmarkV1Encode(b *testing.B) {
	traces := make([]v1Trace, 20)
	for i := range traces {
		traces[i].spans = apitest.SynthTrace(i, 20)
	}
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data := make([]Trace, 0, len(traces))
			for _, tr := range traces {
				data = append(data, ToTrace(tr.spans))
			}
			_ = json.NewEncoder(io.Discard).Encode(envelope{Data: data, Total: len(data)})
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := getV1Encoder()
			e.appendEnvelope(traces, len(traces), nil)
			putV1Encoder(e)
		}
	})
}

// BenchmarkV3Encode is what an api_v3 search of 20 traces of 20 spans
// spends building its response: otlpconv.AppendTracesJSON into the pooled
// buffer the handler uses, and the pdata way it replaced: otlpconv.TracesOf (and, for comparison,
// ToTraces over the spans appended into one slice, as before), then pdata's
// JSON, with pdata's pooled buffer warm and just after collections have
// emptied its pool.
func BenchmarkV3Encode(b *testing.B) {
	var traces [][]model.Span
	for i := range 20 {
		traces = append(traces, apitest.SynthTrace(i, 20))
	}
	b.Run("totraces_appended", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var all []model.Span
			for _, t := range traces {
				all = append(all, t...)
			}
			_ = otlpconv.ToTraces(all)
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := getV1Encoder()
			e.buf = otlpconv.AppendTracesJSON(e.buf, traces)
			putV1Encoder(e)
		}
	})
	b.Run("tracesof", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = otlpconv.TracesOf(traces)
		}
	})
	for _, gc := range []bool{false, true} {
		suffix := ""
		if gc {
			suffix = "_after_gc"
		}
		b.Run("marshal"+suffix, func(b *testing.B) {
			td := otlpconv.TracesOf(traces)
			b.ReportAllocs()
			for b.Loop() {
				if gc {
					b.StopTimer()
					runtime.GC()
					runtime.GC()
					b.StartTimer()
				}
				if _, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

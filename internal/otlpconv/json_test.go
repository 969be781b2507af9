package otlpconv

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// pdataTracesJSON is the reference: pdata's JSON of TracesOf.
func pdataTracesJSON(t *testing.T, traces [][]model.Span) []byte {
	t.Helper()
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(TracesOf(traces))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkTracesJSON(t *testing.T, name string, traces [][]model.Span) {
	t.Helper()
	want := pdataTracesJSON(t, traces)
	prefix := []byte("prefix")
	got := AppendTracesJSON(prefix, traces)
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("%s: the prefix was overwritten", name)
	}
	if got = got[len(prefix):]; !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		lo := max(0, i-80)
		t.Fatalf("%s: differs at byte %d\ngot:  %q\nwant: %q", name, i, got[lo:min(len(got), i+80)], want[lo:min(len(want), i+80)])
	}
}

func TestAppendTracesJSONMatchesPdataOnAwkwardSpans(t *testing.T) {
	comp := func(typ model.ValueType, text string) model.Value { return model.Value{Type: typ, Str: text} }
	res := model.Attrs{{Key: "service.name", Value: model.Str("svc")}, {Key: "host", Value: model.Int(7)}}
	s := model.Span{
		TraceID: model.TraceID{1, 2}, SpanID: model.SpanID{3}, ParentSpanID: model.SpanID{4},
		TraceState: "a=b", Flags: 0x301, Name: "quote \" back \\ nl \n cr \r tab \t bell \x07 del \x7f <html> & \u2028 \xff\xfe é",
		Kind: model.SpanKind(42), StartUnixNano: math.MaxUint64, EndUnixNano: 1,
		StatusCode: model.StatusError, StatusMessage: "boom",
		Service: "svc", Resource: res, ScopeName: "", ScopeVersion: "v1",
		Attrs: model.Attrs{
			{Key: "", Value: model.Str("empty key")},
			{Key: "dup", Value: model.Int(1)},
			{Key: "f", Value: model.Float(3.25)}, {Key: "tiny", Value: model.Float(1.5e-9)},
			{Key: "huge", Value: model.Float(2.5e22)}, {Key: "edge", Value: model.Float(1e21)},
			{Key: "small", Value: model.Float(1e-6)}, {Key: "below", Value: model.Float(5e-7)}, {Key: "negzero", Value: model.Float(math.Copysign(0, -1))},
			{Key: "nan", Value: model.Float(math.NaN())}, {Key: "inf", Value: model.Float(math.Inf(1))},
			{Key: "-inf", Value: model.Float(math.Inf(-1))}, {Key: "minint", Value: model.Int(math.MinInt64)},
			{Key: "t", Value: model.Bool(true)}, {Key: "bytes", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{0, 1, 254, 255}}},
			{Key: "nilbytes", Value: model.Value{Type: model.TypeBytes}}, {Key: "empty", Value: model.Value{}},
			{Key: "unknown type", Value: model.Value{Type: 200, Str: "x"}},
			{Key: "arr", Value: comp(model.TypeArray, `["x",1,true,null,1e3,-0,2.5,12345678901234567890,{"k":[2.5]},[],{}]`)},
			{Key: "map", Value: comp(model.TypeMap, `{"b":1,"a":{"z":null,"y":[]},"b":"again","":"\u00e9\ud800"}`)},
			{Key: "cut", Value: comp(model.TypeMap, `{"a":[1,2`)},
			{Key: "trailing", Value: comp(model.TypeArray, `[1] [2]`)},
			{Key: "overflow", Value: comp(model.TypeArray, `[1e400]`)},
			{Key: "scalar", Value: comp(model.TypeMap, `"just a string"`)},
			{Key: "dup", Value: model.Str("last wins")},
		},
		DroppedAttributesCount: 1, DroppedEventsCount: 2, DroppedLinksCount: 3,
		Events: []model.Event{{TimeUnixNano: 5, Name: "e", Attrs: model.Attrs{{Key: "k", Value: model.Str("v")}}}, {}},
		Links:  []model.Link{{TraceID: model.TraceID{9}, SpanID: model.SpanID{8}, TraceState: "x=y", Attrs: model.Attrs{{Key: "l", Value: model.Int(1)}}}, {}},
	}
	zero := model.Span{}
	noService := model.Span{Service: "from field", Resource: model.Attrs{{Key: "host", Value: model.Int(7)}}, ScopeName: "only name"}
	// The same resource key from a different attribute list: grouped with
	// the first, whose attributes the resource shows.
	sameKey := s
	sameKey.Resource = model.Attrs{{Key: "host", Value: model.Str("7")}, {Key: "service.name", Value: model.Str("svc")}}
	otherScope := s
	otherScope.ScopeName, otherScope.ScopeVersion = "other", ""
	cases := map[string][][]model.Span{
		"none":          nil,
		"empty traces":  {nil, {}},
		"awkward":       {{s}},
		"zero span":     {{zero}},
		"groups":        {{s, noService, zero}, {sameKey, otherScope, s}, {noService}},
		"no attributes": {{{TraceID: model.TraceID{1}, Service: "svc"}}},
	}
	for name, traces := range cases {
		checkTracesJSON(t, name, traces)
	}
}

// TestAppendTracesJSONMatchesPdataOnRandomRequests: spans decoded from
// random OTLP requests (every value type, nested values, odd strings,
// missing fields) come out as pdata writes them.
func TestAppendTracesJSONMatchesPdataOnRandomRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 43))
	n := 0
	for range 300 {
		g := otlpconvtest.TraceRequests{R: rng}
		spans, _, err := DecodeTracesProto(g.Request(), DefaultLimits())
		if err != nil || len(spans) == 0 {
			continue
		}
		n++
		cut := rng.IntN(len(spans) + 1)
		checkTracesJSON(t, "random request", [][]model.Span{spans[:cut], spans[cut:]})
	}
	if n < 100 {
		t.Fatalf("only %d of 300 random requests decoded to spans", n)
	}
}

func BenchmarkAppendTracesJSON(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var traces [][]model.Span
	for range 20 {
		g := otlpconvtest.TraceRequests{R: rng}
		spans, _, _ := DecodeTracesProto(g.Request(), DefaultLimits())
		traces = append(traces, spans)
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = AppendTracesJSON(buf[:0], traces)
		}
	})
	b.Run("pdata", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := (&ptrace.JSONMarshaler{}).MarshalTraces(TracesOf(traces)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package otlpconv

import (
	"reflect"
	"slices"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
)

func sampleSpans() []model.Span {
	res := model.Attrs{{Key: "service.name", Value: model.Str("checkout")}, {Key: "host.name", Value: model.Str("h1")}}
	return []model.Span{
		{
			TraceID: model.TraceID{1, 2, 3}, SpanID: model.SpanID{9}, Name: "GET /orders", Kind: model.KindServer,
			StartUnixNano: 1_700_000_000_000_000_000, EndUnixNano: 1_700_000_000_250_000_000,
			StatusCode: model.StatusError, StatusMessage: "boom", Service: "checkout", Resource: res,
			ScopeName: "net/http", ScopeVersion: "1.0", TraceState: "k=v", Flags: 1,
			Attrs: model.Attrs{
				{Key: "http.route", Value: model.Str("/orders/{id}")},
				{Key: "http.response.status_code", Value: model.Int(500)},
				{Key: "ratio", Value: model.Float(0.5)},
				{Key: "cached", Value: model.Bool(false)},
				{Key: "raw", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{1, 2}}},
				{Key: "list", Value: model.Value{Type: model.TypeArray, Str: `["a","b"]`}},
			},
			Events: []model.Event{{TimeUnixNano: 1_700_000_000_100_000_000, Name: "exception",
				Attrs: model.Attrs{{Key: "exception.type", Value: model.Str("IOError")}}}},
			Links:                  []model.Link{{TraceID: model.TraceID{7}, SpanID: model.SpanID{8}, Attrs: model.Attrs{{Key: "l", Value: model.Int(1)}}}},
			DroppedAttributesCount: 2,
		},
		{
			TraceID: model.TraceID{1, 2, 3}, SpanID: model.SpanID{10}, ParentSpanID: model.SpanID{9}, Name: "SELECT",
			Kind: model.KindClient, StartUnixNano: 1_700_000_000_010_000_000, EndUnixNano: 1_700_000_000_020_000_000,
			Service: "checkout", Resource: res, ScopeName: "net/http", ScopeVersion: "1.0",
		},
	}
}

func TestRoundTripThroughProtobuf(t *testing.T) {
	in := sampleSpans()
	td := ToTraces(in)
	if td.ResourceSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().Len() != 1 {
		t.Fatalf("spans of one resource and scope must be grouped together")
	}
	buf, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	back, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
	if err != nil {
		t.Fatal(err)
	}
	out := FromTraces(back)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed spans:\n in=%+v\nout=%+v", in, out)
	}
}

func TestMissingServiceName(t *testing.T) {
	td := ptrace.NewTraces()
	s := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetName("x")
	got := FromTraces(td)
	if len(got) != 1 || got[0].Service != model.UnknownService {
		t.Fatalf("want unknown_service, got %+v", got)
	}
}

// ToTraces remembers the resource keys it built; the grouping must stay
// that of the keys: equal resources in separate slices, and values that
// render alike with different types, share a ResourceSpans, others not.
func TestToTracesGroupsResourcesByKey(t *testing.T) {
	res := func(v model.Value) model.Attrs {
		return model.Attrs{{Key: "service.name", Value: model.Str("a")}, {Key: "k", Value: v}}
	}
	mk := func(svc string, r model.Attrs, scope string) model.Span {
		return model.Span{TraceID: model.TraceID{1}, SpanID: model.SpanID{byte(len(scope))}, Service: svc, Resource: r, ScopeName: scope}
	}
	spans := []model.Span{
		mk("a", res(model.Int(1)), "s1"),
		mk("a", res(model.Int(1)), "s2"),   // equal, another slice
		mk("a", res(model.Str("1")), "s1"), // renders alike
		mk("a", res(model.Int(2)), "s1"),
		mk("b", res(model.Int(1)), "s1"), // another service
		mk("", nil, "s1"),
		mk("", nil, "s2"),
	}
	td := ToTraces(spans)
	var got []int
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		n := 0
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			n += rs.ScopeSpans().At(j).Spans().Len()
		}
		got = append(got, n)
	}
	if want := []int{3, 1, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("spans per resource %v, want %v", got, want)
	}
	if n := td.ResourceSpans().At(0).ScopeSpans().Len(); n != 2 {
		t.Errorf("first resource has %d scopes, want 2", n)
	}
}

// TracesOf over several traces is ToTraces over their spans appended.
func TestTracesOfIsToTracesOfTheConcatenation(t *testing.T) {
	a, b := sampleSpans(), sampleSpans()
	for i := range b {
		b[i].TraceID[0] ^= 0xff
		b[i].Service = "other"
		b[i].Resource = model.Attrs{{Key: "service.name", Value: model.Str("other")}}
	}
	traces := [][]model.Span{a, b, a[:1], nil}
	m := &ptrace.JSONMarshaler{}
	got, err := m.MarshalTraces(TracesOf(traces))
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.MarshalTraces(ToTraces(slices.Concat(traces...)))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("TracesOf:\n%s\nToTraces:\n%s", got, want)
	}
	if td := TracesOf(traces); td.ResourceSpans().Len() != 2 {
		t.Fatalf("%d resources, want 2", td.ResourceSpans().Len())
	}
}

// Maps and arrays in attributes come back from the stored JSON text with
// their keys in the text's order, which ingest sorts as pdata's AsString
// does (many keys, so that the random order of a Go map would show),
// integers as ints, doubles as doubles, nesting kept. Their text cut to
// the value limit comes back as that text.
func TestCompositeValuesKeepOrderAndTypes(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID([16]byte{1})
	sp.SetSpanID([8]byte{2})
	sp.SetStartTimestamp(1)
	sp.SetEndTimestamp(2)
	m := sp.Attributes().PutEmptyMap("order")
	for _, k := range []string{"zeta", "alpha", "mid", "beta", "omega", "gamma", "delta", "kappa"} {
		m.PutStr(k, k+"-value")
	}
	m.PutInt("count", 3)
	m.PutDouble("ratio", 0.25)
	m.PutBool("paid", true)
	m.PutEmpty("none")
	inner := m.PutEmptySlice("items")
	inner.AppendEmpty().SetInt(7)
	im := inner.AppendEmpty().SetEmptyMap()
	im.PutStr("sku", "A-1")
	im.PutInt("qty", 2)
	arr := sp.Attributes().PutEmptySlice("codes")
	arr.AppendEmpty().SetInt(200)
	arr.AppendEmpty().SetDouble(1.5)
	arr.AppendEmpty().SetStr("x")

	want := ptrace.NewTraces()
	td.CopyTo(want)
	got := ToTraces(FromTraces(td))
	wantAttrs := want.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()
	gotAttrs := got.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()
	for _, k := range []string{"order", "codes"} {
		w, _ := wantAttrs.Get(k)
		g, ok := gotAttrs.Get(k)
		if !ok || !reflect.DeepEqual(w.AsRaw(), g.AsRaw()) || w.Type() != g.Type() {
			t.Fatalf("%s: got %v (%s), want %v (%s)", k, g.AsRaw(), g.Type(), w.AsRaw(), w.Type())
		}
		// AsRaw's Go map hides the order: compare the keys in turn.
		if w.Type() == pcommon.ValueTypeMap {
			var wk, gk []string
			w.Map().Range(func(k string, _ pcommon.Value) bool { wk = append(wk, k); return true })
			g.Map().Range(func(k string, _ pcommon.Value) bool { gk = append(gk, k); return true })
			slices.Sort(wk)
			if !slices.Equal(wk, gk) {
				t.Fatalf("%s: keys %v, want %v", k, gk, wk)
			}
		}
	}
	g, _ := gotAttrs.Get("order")
	if c, _ := g.Map().Get("count"); c.Type() != pcommon.ValueTypeInt {
		t.Fatalf("an int in a map came back as %s", c.Type())
	}

	var cut pcommon.Value = pcommon.NewValueEmpty()
	PutValue(cut, model.Value{Type: model.TypeMap, Str: `{"a":"abc` + ValueMarker})
	if cut.Type() != pcommon.ValueTypeStr || cut.Str() != `{"a":"abc`+ValueMarker {
		t.Fatalf("a cut map: %s %q", cut.Type(), cut.AsString())
	}
}

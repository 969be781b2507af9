package otlpconv

import (
	"reflect"
	"slices"
	"testing"

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

package otlpconv

import (
	"reflect"
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

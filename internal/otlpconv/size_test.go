package otlpconv

import (
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// TestSpanSizeIsTheOTLPEncoding compares SpanSize with the collector's own
// protobuf encoding of the same span.
func TestSpanSizeIsTheOTLPEncoding(t *testing.T) {
	td := ptrace.NewTraces()
	sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID([16]byte{1, 2, 3})
	sp.SetSpanID([8]byte{4, 5})
	sp.SetParentSpanID([8]byte{6})
	sp.SetName("SELECT orders")
	sp.SetKind(ptrace.SpanKindClient)
	sp.SetStartTimestamp(1_700_000_000_000_000_000)
	sp.SetEndTimestamp(1_700_000_000_250_000_000)
	sp.TraceState().FromRaw("rojo=00f067aa0ba902b7")
	sp.SetFlags(1)
	sp.Attributes().PutStr("db.system", "postgresql")
	sp.Attributes().PutInt("db.rows", 300)
	sp.Attributes().PutInt("negative", -1)
	sp.Attributes().PutBool("cached", false)
	sp.Attributes().PutDouble("ratio", 0.25)
	sp.Attributes().PutEmptyBytes("blob").FromRaw([]byte{1, 2, 3})
	sp.Attributes().PutStr("empty", "")
	sp.Attributes().PutStr("long", strings.Repeat("x", 200)) // two-byte lengths
	ev := sp.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(1_700_000_000_100_000_000)
	ev.Attributes().PutStr("exception.message", "boom")
	ln := sp.Links().AppendEmpty()
	ln.SetTraceID([16]byte{9})
	ln.SetSpanID([8]byte{9})
	sp.Status().SetCode(ptrace.StatusCodeError)
	sp.Status().SetMessage("deadline exceeded")
	sp.SetDroppedAttributesCount(2)

	enc, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	// TracesData.resource_spans(1).scope_spans(2).spans(2): the span message.
	spanMsg := enc
	for _, field := range []protowire.Number{1, 2, 2} {
		spanMsg = subMessage(t, spanMsg, field)
	}
	want := len(spanMsg)

	m := model.Span{
		TraceID: model.TraceID{1, 2, 3}, SpanID: model.SpanID{4, 5}, ParentSpanID: model.SpanID{6},
		Name: "SELECT orders", Kind: model.KindClient, StartUnixNano: 1_700_000_000_000_000_000, EndUnixNano: 1_700_000_000_250_000_000,
		TraceState: "rojo=00f067aa0ba902b7", Flags: 1, StatusCode: model.StatusError, StatusMessage: "deadline exceeded", DroppedAttributesCount: 2,
		Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")}, {Key: "db.rows", Value: model.Int(300)},
			{Key: "negative", Value: model.Int(-1)}, {Key: "cached", Value: model.Bool(false)}, {Key: "ratio", Value: model.Float(0.25)},
			{Key: "blob", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{1, 2, 3}}},
			{Key: "empty", Value: model.Str("")}, {Key: "long", Value: model.Str(strings.Repeat("x", 200))}},
		Events: []model.Event{{Name: "exception", TimeUnixNano: 1_700_000_000_100_000_000, Attrs: model.Attrs{{Key: "exception.message", Value: model.Str("boom")}}}},
		Links:  []model.Link{{TraceID: model.TraceID{9}, SpanID: model.SpanID{9}}},
	}
	if got := int(SpanSize(&m)); got != want {
		t.Errorf("SpanSize %d, the collector encodes %d bytes", got, want)
	}
}

// subMessage returns the first field num of message b.
func subMessage(t *testing.T, b []byte, num protowire.Number) []byte {
	t.Helper()
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			return v
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			t.Fatal("bad encoding")
		}
		b = b[l:]
	}
	t.Fatalf("field %d not found", num)
	return nil
}

package otlpconv

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/model"
)

// randomModelValue returns a value of every type the model has, with the
// zero values ("" 0 false, empty bytes) a oneof must still carry, long
// strings whose lengths take multi-byte varints, and arrays and maps
// (nested, and cut JSON that stays a string).
func randomModelValue(r *rand.Rand) model.Value {
	switch r.IntN(12) {
	case 0:
		return model.Value{}
	case 1:
		return model.Str("")
	case 2:
		return model.Str(strings.Repeat("ü", r.IntN(300)))
	case 3:
		return model.Bool(r.IntN(2) == 0)
	case 4:
		return model.Int([]int64{0, -1, math.MinInt64, math.MaxInt64, r.Int64()}[r.IntN(5)])
	case 5:
		return model.Float([]float64{0, -0.5, math.Inf(1), r.NormFloat64() * 1e9}[r.IntN(4)])
	case 6:
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return model.Value{Type: model.TypeBytes, Bytes: b}
	case 7:
		return model.Value{Type: model.TypeArray, Str: `["a",1.5,true,null,[2,{"k":"v"}],{}]`}
	case 8:
		return model.Value{Type: model.TypeMap, Str: `{"z":1,"a":{"b":[false,"x"]},"e":""}`}
	case 9:
		return model.Value{Type: model.TypeArray, Str: `[]`}
	case 10:
		return model.Value{Type: model.TypeArray, Str: `["cut at the li`}
	default:
		return model.Str(fmt.Sprintf("v%d", r.IntN(1000)))
	}
}

func randomAttrs(r *rand.Rand, max int) model.Attrs {
	n := r.IntN(max + 1)
	if n == 0 {
		return nil
	}
	attrs := make(model.Attrs, n)
	for i := range attrs {
		attrs[i] = model.Attr{Key: fmt.Sprintf("k%d.%d", i, r.IntN(5)), Value: randomModelValue(r)}
	}
	return attrs
}

func randomID(r *rand.Rand, b []byte) {
	if r.IntN(8) == 0 {
		return // a zero id is left out of the encoding
	}
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
}

// randomSpans builds spans as FromTraces leaves them: spans of one
// resource share its attribute slice.
func randomSpans(r *rand.Rand, n int) []model.Span {
	type resource struct {
		service string
		attrs   model.Attrs
	}
	resources := make([]resource, 1+r.IntN(4))
	for i := range resources {
		resources[i].attrs = randomAttrs(r, 4)
		switch r.IntN(3) {
		case 0: // service.name among the attributes, as SDKs send it
			resources[i].service = fmt.Sprintf("svc%d", i)
			resources[i].attrs = append(resources[i].attrs, model.Attr{Key: "service.name", Value: model.Str(resources[i].service)})
		case 1:
			resources[i].service = fmt.Sprintf("svc%d", i)
		}
	}
	spans := make([]model.Span, n)
	for i := range spans {
		res := resources[r.IntN(len(resources))]
		s := &spans[i]
		randomID(r, s.TraceID[:])
		randomID(r, s.SpanID[:])
		randomID(r, s.ParentSpanID[:])
		s.Service, s.Resource = res.service, res.attrs
		s.ScopeName, s.ScopeVersion = []string{"", "net/http", "db"}[r.IntN(3)], []string{"", "1.2.0"}[r.IntN(2)]
		s.Name = strings.Repeat("op", r.IntN(100))
		s.TraceState = []string{"", "a=1,b=2"}[r.IntN(2)]
		s.Flags = uint32(r.IntN(3))
		s.Kind = model.SpanKind(r.IntN(6))
		s.StartUnixNano = r.Uint64N(1 << 62)
		s.EndUnixNano = s.StartUnixNano + r.Uint64N(1e9)
		s.StatusCode = model.StatusCode(r.IntN(3))
		s.StatusMessage = []string{"", "deadline exceeded"}[r.IntN(2)]
		s.Attrs = randomAttrs(r, 30)
		for e := r.IntN(3); e > 0; e-- {
			s.Events = append(s.Events, model.Event{TimeUnixNano: r.Uint64N(1 << 62), Name: "exception", Attrs: randomAttrs(r, 3)})
		}
		for l := r.IntN(3); l > 0; l-- {
			var link model.Link
			randomID(r, link.TraceID[:])
			randomID(r, link.SpanID[:])
			link.TraceState = []string{"", "x=y"}[r.IntN(2)]
			link.Attrs = randomAttrs(r, 3)
			s.Links = append(s.Links, link)
		}
		s.DroppedAttributesCount, s.DroppedEventsCount, s.DroppedLinksCount = r.Uint32N(3), r.Uint32N(3), r.Uint32N(300)
	}
	return spans
}

func decodeRequest(t *testing.T, b []byte) []model.Span {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(b); err != nil {
		t.Fatalf("decoding the request: %v", err)
	}
	return FromTraces(req.Traces())
}

func sortSpans(spans []model.Span) {
	sort.SliceStable(spans, func(i, j int) bool {
		if c := bytes.Compare(spans[i].TraceID[:], spans[j].TraceID[:]); c != 0 {
			return c < 0
		}
		return bytes.Compare(spans[i].SpanID[:], spans[j].SpanID[:]) < 0
	})
}

// TestAppendExportRequestMatchesPdata decodes what AppendExportRequest
// writes and what pdata writes for the same spans (ToTraces, then pdata's
// encoder) and wants the same model spans, in the same order.
func TestAppendExportRequestMatchesPdata(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 16))
	for round := 0; round < 200; round++ {
		spans := randomSpans(r, r.IntN(60))
		viaPdata, err := ptraceotlp.NewExportRequestFromTraces(ToTraces(spans)).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("kept")
		direct := AppendExportRequest(prefix, spans)
		if !bytes.Equal(direct[:len(prefix)], prefix) {
			t.Fatal("AppendExportRequest changed the bytes it appends to")
		}
		want, got := decodeRequest(t, viaPdata), decodeRequest(t, direct[len(prefix):])
		if len(got) != len(spans) {
			t.Fatalf("round %d: %d spans decoded from %d", round, len(got), len(spans))
		}
		if !reflect.DeepEqual(want, got) {
			for i := range want {
				if !reflect.DeepEqual(want[i], got[i]) {
					t.Fatalf("round %d, span %d:\npdata  %+v\ndirect %+v", round, i, want[i], got[i])
				}
			}
			t.Fatalf("round %d: spans differ", round)
		}
	}
}

// TestAppendExportRequestEqualResourcesApart: spans whose resources are
// equal but not shared (from two requests) may be grouped apart; a
// receiver still gets the same spans.
func TestAppendExportRequestEqualResourcesApart(t *testing.T) {
	a := sampleSpans()
	b := sampleSpans()
	b[0].SpanID, b[1].SpanID = model.SpanID{11}, model.SpanID{12}
	spans := append(a, b...)
	viaPdata, err := ptraceotlp.NewExportRequestFromTraces(ToTraces(spans)).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	want, got := decodeRequest(t, viaPdata), decodeRequest(t, AppendExportRequest(nil, spans))
	sortSpans(want)
	sortSpans(got)
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("spans differ:\npdata  %+v\ndirect %+v", want, got)
	}
}

// BenchmarkEncodeRequest encodes 500 spans of the usual shape: a shared
// resource, a few string and int attributes, no events.
func BenchmarkEncodeRequest(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	res := model.Attrs{{Key: "service.name", Value: model.Str("cart")}, {Key: "host.name", Value: model.Str("cart-7f9c")}}
	spans := make([]model.Span, 500)
	for i := range spans {
		s := &spans[i]
		randomID(r, s.TraceID[:])
		randomID(r, s.SpanID[:])
		s.Service, s.Resource, s.ScopeName, s.Name, s.Kind = "cart", res, "net/http", "GET /cart/{id}", model.KindServer
		s.StartUnixNano = r.Uint64N(1 << 62)
		s.EndUnixNano = s.StartUnixNano + 1e6
		s.Attrs = model.Attrs{{Key: "http.request.method", Value: model.Str("GET")}, {Key: "http.route", Value: model.Str("/cart/{id}")},
			{Key: "http.response.status_code", Value: model.Int(200)}, {Key: "server.address", Value: model.Str("cart")}}
	}
	b.Run("pdata", func(b *testing.B) {
		for range b.N {
			if _, err := ptraceotlp.NewExportRequestFromTraces(ToTraces(spans)).MarshalProto(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		var buf []byte
		for range b.N {
			buf = AppendExportRequest(buf[:0], spans)
		}
	})
}

package otlpconv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// decodeViaPdata is the path DecodeTracesProto replaces: pdata's decoder,
// then conversion to the model.
func decodeViaPdata(data []byte, lim Limits) ([]model.Span, Stats, error) {
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(data); err != nil {
		return nil, Stats{}, err
	}
	spans, st := FromTracesLimited(req.Traces(), lim)
	return spans, st, nil
}

// tightLimits make conversion cut values, drop attributes, events and
// links, and cut nesting in random requests.
var tightLimits = Limits{MaxDepth: 2, MaxValueBytes: 64, MaxAttrs: 3, MaxEvents: 2, MaxLinks: 1}

// sameAsPdata checks that whenever the direct decoder accepts data, pdata
// does too and both give the same spans and stats; it reports whether the
// direct decoder accepted it.
func sameAsPdata(t testing.TB, data []byte, lim Limits) bool {
	t.Helper()
	got, gotStats, err := DecodeTracesProto(data, lim)
	if err != nil {
		return false
	}
	// The server runs the nesting check only before pdata.
	if err := CheckTracesProtoNesting(data, MaxNesting); err != nil {
		t.Fatalf("direct decoder accepted a request the nesting check refuses (%v): %x", err, data)
	}
	want, wantStats, wantErr := decodeViaPdata(data, lim)
	if wantErr != nil {
		t.Fatalf("direct decoder accepted a request pdata refuses (%v): %x", wantErr, data)
	}
	// %#v, not reflect.DeepEqual: NaN attribute values must compare equal,
	// and nil and empty slices must not.
	if g, w := fmt.Sprintf("%#v", got), fmt.Sprintf("%#v", want); g != w {
		for i := range min(len(got), len(want)) {
			if gs, ws := fmt.Sprintf("%#v", got[i]), fmt.Sprintf("%#v", want[i]); gs != ws {
				t.Fatalf("span %d differs:\ndirect %s\npdata  %s\nrequest %x", i, gs, ws, data)
			}
		}
		t.Fatalf("%d spans decoded directly, %d through pdata; request %x", len(got), len(want), data)
	}
	if gotStats != wantStats {
		t.Fatalf("stats: direct %+v, pdata %+v; request %x", gotStats, wantStats, data)
	}
	return true
}

func TestDirectDecodeMatchesPdataOnModelSpans(t *testing.T) {
	raw, err := ptraceotlp.NewExportRequestFromTraces(ToTraces(sampleSpans())).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	for _, lim := range []Limits{DefaultLimits(), tightLimits} {
		if !sameAsPdata(t, raw, lim) {
			t.Fatal("direct decoder refused a request pdata wrote")
		}
	}
}

func TestDirectDecodeMatchesPdataOnLoadgenRequests(t *testing.T) {
	ts, err := gen.Templates(3, 4, 30)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tpl := range ts {
		body := tpl.Fill(nil, rng)
		for _, lim := range []Limits{DefaultLimits(), tightLimits} {
			if !sameAsPdata(t, body, lim) {
				t.Fatal("direct decoder refused a load generator request")
			}
		}
	}
}

func TestDirectDecodeMatchesPdataOnRandomRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	accepted := 0
	for i := range 3000 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%2 == 1}
		data := g.Request()
		for _, lim := range []Limits{DefaultLimits(), tightLimits} {
			if sameAsPdata(t, data, lim) {
				accepted++
			} else if !g.LeftToPdata {
				_, _, err := DecodeTracesProto(data, lim)
				t.Fatalf("direct decoder refused a well-formed request: %v; %x", err, data)
			}
		}
	}
	if accepted < 4000 {
		t.Fatalf("only %d of 6000 decodes took the direct path", accepted)
	}
}

func TestDirectDecodeNeverAcceptsWhatPdataRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	refused := 0
	for range 3000 {
		g := otlpconvtest.TraceRequests{R: rng}
		data := otlpconvtest.Mutate(rng, g.Request()) // nested a few levels at most
		if _, _, err := decodeViaPdata(data, tightLimits); err != nil {
			refused++
		}
		sameAsPdata(t, data, tightLimits)
	}
	if refused < 300 {
		t.Fatalf("only %d of 3000 mutated requests were malformed: the test proves little", refused)
	}
}

func TestDirectDecodeLeavesOddInputToPdata(t *testing.T) {
	span := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), make([]byte, 16))
	scope := otlpconvtest.Field(nil, 2, span)
	for name, data := range map[string][]byte{
		// pdata refuses these; its path words the error and repairs ids.
		"trace id of 5 bytes": otlpconvtest.Field(nil, 1, otlpconvtest.Field(nil, 2, otlpconvtest.Field(nil, 2, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), make([]byte, 5))))),
		"truncated":           otlpconvtest.Field(nil, 1, scope)[:5],
		"wrong wire type":     protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3),
		// pdata accepts these in ways of its own.
		"group":                  protowire.AppendTag(protowire.AppendTag(nil, 7, protowire.StartGroupType), 7, protowire.EndGroupType),
		"deprecated scope spans": otlpconvtest.Field(nil, 1, otlpconvtest.Field(nil, 1000, scope)),
	} {
		if _, _, err := DecodeTracesProto(data, DefaultLimits()); err == nil {
			t.Errorf("%s: decoded directly, want it left to pdata", name)
		}
	}
}

// nestedMap encodes an AnyValue of maps nested depth levels deep, the
// innermost value empty.
func nestedMap(depth int) []byte {
	var v []byte
	for range depth {
		kv := otlpconvtest.KeyValue("k", v)
		v = otlpconvtest.Field(nil, 6, otlpconvtest.Field(nil, 1, kv))
	}
	return v
}

// The server skips the nesting check before the direct decoder, so the
// decoder must refuse exactly what the check refuses.
func TestDirectDecodeRefusesWhatTheNestingCheckRefuses(t *testing.T) {
	tid, sid := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8)
	for _, depth := range []int{MaxNesting - 2, MaxNesting - 1, MaxNesting, MaxNesting + 1, 1000} {
		for name, v := range map[string][]byte{"arrays": otlpconvtest.NestedArray(depth), "maps": nestedMap(depth)} {
			data := otlpconvtest.TraceRequest(tid, sid, "s", otlpconvtest.KeyValue("d", v))
			checkErr := CheckTracesProtoNesting(data, MaxNesting)
			_, _, err := DecodeTracesProto(data, DefaultLimits())
			if (err == nil) != (checkErr == nil) {
				t.Errorf("%s %d deep: direct decoder %v, nesting check %v", name, depth, err, checkErr)
			}
			if checkErr == nil && !sameAsPdata(t, data, DefaultLimits()) {
				t.Errorf("%s %d deep: not decoded directly", name, depth)
			}
		}
	}
}

// FuzzDecodeTracesProto compares the direct decoder with pdata's on
// arbitrary bytes: whatever it accepts, pdata must accept and convert to
// the same spans. The seeds are random requests of TraceRequests.
func FuzzDecodeTracesProto(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 8 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%2 == 1}
		f.Add(g.Request())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsPdata(t, data, DefaultLimits())
		sameAsPdata(t, data, tightLimits)
	})
}

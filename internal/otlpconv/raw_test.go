package otlpconv

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// forwardRequest builds the request a cluster node forwards for spans
// (some of a decoded request's, in any order): the spans Lookup finds are
// copied as they came, the others encoded from the model. It reports how
// many were copied.
func forwardRequest(x *RawIndex, spans []model.Span) ([]byte, int) {
	var encode []model.Span
	var raws []int32
	for i := range spans {
		if raw, ok := x.Lookup(&spans[i]); ok {
			raws = append(raws, raw)
		} else {
			encode = append(encode, spans[i])
		}
	}
	return x.AppendResourceSpans(AppendExportRequest(nil, encode), raws), len(raws)
}

// spanTexts renders spans for comparison as sets: the order of a
// forwarded request is not the order the spans came in.
func spanTexts(spans []model.Span) []string {
	out := make([]string, len(spans))
	for i := range spans {
		out[i] = fmt.Sprintf("%#v", spans[i])
	}
	slices.Sort(out)
	return out
}

// checkRawForward decodes data under lim and forwards a random part of
// its spans in random order, as the forwarder does, both as raw spans and
// encoded from the model; the owner must decode the same spans and stats
// from both. It returns how many spans were forwarded and how many of them
// were copied raw.
func checkRawForward(t *testing.T, rng *rand.Rand, data []byte, lim Limits) (total, copied int) {
	t.Helper()
	want, wantStats, err := DecodeTracesProto(data, lim)
	if err != nil {
		return 0, 0
	}
	spans, raws, stats, err := DecodeTracesProtoRaw(data, lim)
	if err != nil {
		t.Fatalf("the raw decoder refused what the decoder took: %v", err)
	}
	if fmt.Sprintf("%#v", spans) != fmt.Sprintf("%#v", want) || stats != wantStats {
		t.Fatal("recording raw spans changed the decoded spans")
	}
	if len(raws.spans) != len(spans) {
		t.Fatalf("%d raw spans for %d spans", len(raws.spans), len(spans))
	}
	part := slices.Clone(spans)
	rng.Shuffle(len(part), func(a, b int) { part[a], part[b] = part[b], part[a] })
	part = part[:rng.IntN(len(part)+1)]

	viaRaw, copied := forwardRequest(NewRawIndex(raws), part)
	got, gotStats, err := DecodeTracesProto(viaRaw, lim)
	if err != nil {
		t.Fatalf("the owner cannot decode the raw forward: %v", err)
	}
	exp, expStats, err := DecodeTracesProto(AppendExportRequest(nil, part), lim)
	if err != nil {
		t.Fatalf("the owner cannot decode the encoded forward: %v", err)
	}
	if g, w := spanTexts(got), spanTexts(exp); !slices.Equal(g, w) {
		t.Fatalf("limits %+v: the owner stores\n%v\nfrom raw spans, and\n%v\nfrom encoded ones; request %x", lim, g, w, data)
	}
	if gotStats != expStats {
		t.Fatalf("owner's stats %+v from raw spans, %+v from encoded ones", gotStats, expStats)
	}
	return len(part), copied
}

// TestRawForwardStoresWhatEncodingStores: an owner decoding the request
// built from raw spans gets exactly the spans it gets from the request
// encoded from the model, for random requests (unknown fields, repeated
// fields, composite values, spans the limits cut) and for load generator
// requests, under limits that cut nothing and limits that cut a lot.
func TestRawForwardStoresWhatEncodingStores(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var total, copied int
	for range 600 {
		g := otlpconvtest.TraceRequests{R: rng}
		data := g.Request()
		for _, lim := range []Limits{DefaultLimits(), tightLimits} {
			n, c := checkRawForward(t, rng, data, lim)
			total, copied = total+n, copied+c
		}
	}
	// Most random spans have something the model does not encode back.
	if copied == 0 || copied == total {
		t.Fatalf("%d of %d random spans were copied raw; the test wants both ways used", copied, total)
	}
	ts, err := gen.Templates(3, 4, 30)
	if err != nil {
		t.Fatal(err)
	}
	total, copied = 0, 0
	for _, tpl := range ts {
		for range 3 {
			body := tpl.Fill(nil, rng)
			n, c := checkRawForward(t, rng, body, DefaultLimits())
			total, copied = total+n, copied+c
			checkRawForward(t, rng, body, tightLimits)
		}
	}
	// What instrumentation sends is copied.
	if copied < total*9/10 {
		t.Fatalf("only %d of %d load generator spans were copied raw", copied, total)
	}
}

// TestRawSpanOfMalformedRequest: a request the decoder refuses yields no
// raw spans, so nothing of it can be forwarded as it came.
func TestRawSpanOfMalformedRequest(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	refused := 0
	for range 3000 {
		g := otlpconvtest.TraceRequests{R: rng}
		data := otlpconvtest.Mutate(rng, g.Request())
		_, _, err := DecodeTracesProto(data, DefaultLimits())
		spans, raws, _, rawErr := DecodeTracesProtoRaw(data, DefaultLimits())
		if (err == nil) != (rawErr == nil) {
			t.Fatalf("decoder error %v, raw decoder error %v", err, rawErr)
		}
		if rawErr != nil {
			refused++
			if spans != nil || raws != nil {
				t.Fatal("a refused request returned spans")
			}
		}
	}
	if refused == 0 {
		t.Fatal("no mutated request was refused")
	}
}

package otlpconv

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
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
	want, wantStats, wantErr := decodeViaPdata(data, lim)
	if err != nil {
		return false
	}
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
		g := reqGen{r: rng, odd: i%2 == 1}
		data := g.request()
		for _, lim := range []Limits{DefaultLimits(), tightLimits} {
			if sameAsPdata(t, data, lim) {
				accepted++
			} else if !g.leftToPdata {
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
		g := reqGen{r: rng}
		data := mutate(rng, g.request())
		if CheckTracesProtoNesting(data, MaxNesting) != nil {
			continue
		}
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
	scope := field2(nil, 2, span)
	for name, data := range map[string][]byte{
		// pdata refuses these; its path words the error and repairs ids.
		"trace id of 5 bytes": field2(nil, 1, field2(nil, 2, field2(nil, 2, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), make([]byte, 5))))),
		"truncated":           field2(nil, 1, scope)[:5],
		"wrong wire type":     protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3),
		// pdata accepts these in ways of its own.
		"group":                  protowire.AppendTag(protowire.AppendTag(nil, 7, protowire.StartGroupType), 7, protowire.EndGroupType),
		"deprecated scope spans": field2(nil, 1, field2(nil, 1000, scope)),
	} {
		if _, _, err := DecodeTracesProto(data, DefaultLimits()); err == nil {
			t.Errorf("%s: decoded directly, want it left to pdata", name)
		}
	}
}

// FuzzDecodeTracesProto compares the direct decoder with pdata's on
// arbitrary bytes: whatever it accepts, pdata must accept and convert to
// the same spans. Seeds are in testdata/fuzz/FuzzDecodeTracesProto.
func FuzzDecodeTracesProto(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 8 {
		g := reqGen{r: rng, odd: i%2 == 1}
		f.Add(g.request())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if CheckTracesProtoNesting(data, MaxNesting) != nil {
			return // pdata would recurse without limit; the server refuses these first
		}
		sameAsPdata(t, data, DefaultLimits())
		sameAsPdata(t, data, tightLimits)
	})
}

// mutate damages an encoded request the way broken clients and proxies do.
func mutate(r *rand.Rand, b []byte) []byte {
	if len(b) == 0 {
		return []byte{byte(r.IntN(256))}
	}
	b = append([]byte(nil), b...)
	for range 1 + r.IntN(3) {
		i := r.IntN(len(b))
		switch r.IntN(4) {
		case 0:
			b[i] = byte(r.IntN(256))
		case 1:
			b[i] ^= 1 << r.IntN(8)
		case 2:
			b = b[:i]
		default:
			b = append(b[:i], append([]byte{byte(r.IntN(256))}, b[i:]...)...)
		}
		if len(b) == 0 {
			break
		}
	}
	return b
}

// reqGen writes random ExportTraceServiceRequests field by field, in
// random order, with every value type, repeated singular fields, empty
// and missing fields, unknown fields and nested values. odd adds what
// pdata leaves to its own rules (string indexes, deprecated fields);
// leftToPdata says the request has something the direct decoder refuses.
type reqGen struct {
	r           *rand.Rand
	odd         bool
	leftToPdata bool
}

func field2(b []byte, num protowire.Number, msg []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), msg)
}

func (g *reqGen) n(max int) int { return g.r.IntN(max + 1) }

// join shuffles fields into one message, adding an unknown field now and
// then.
func (g *reqGen) join(fields [][]byte) []byte {
	if g.r.IntN(4) == 0 {
		fields = append(fields, g.unknown())
	}
	g.r.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	var out []byte
	for _, f := range fields {
		out = append(out, f...)
	}
	return out
}

func (g *reqGen) unknown() []byte {
	num := []protowire.Number{17, 20, 99, 5000, 1 << 20}[g.r.IntN(5)]
	switch g.r.IntN(4) {
	case 0:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), g.r.Uint64())
	case 1:
		return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), g.r.Uint32())
	case 2:
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), g.r.Uint64())
	}
	return field2(nil, num, []byte(g.text()))
}

func (g *reqGen) text() string {
	switch g.r.IntN(8) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("é", 20+g.r.IntN(40)) // over tight limits, cut inside a rune
	case 2:
		return "\xff\xfe not utf-8"
	}
	return []string{"GET /a", "db", "service.name", "k", "http.method", "x"}[g.r.IntN(6)]
}

func (g *reqGen) str(num protowire.Number) []byte { return field2(nil, num, []byte(g.text())) }

func (g *reqGen) varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func (g *reqGen) fixed64(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

func (g *reqGen) fixed32(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func (g *reqGen) id(num protowire.Number, size int) []byte {
	b := make([]byte, size)
	if g.r.IntN(8) == 0 {
		b = nil // absent id: all zero
	}
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	return field2(nil, num, b)
}

func (g *reqGen) request() []byte {
	var fields [][]byte
	for range g.n(3) {
		fields = append(fields, field2(nil, 1, g.resourceSpans()))
	}
	return g.join(fields)
}

func (g *reqGen) resourceSpans() []byte {
	var fields [][]byte
	for range g.n(2) {
		fields = append(fields, field2(nil, 1, g.resource()))
	}
	for range g.n(3) {
		fields = append(fields, field2(nil, 2, g.scopeSpans()))
	}
	if g.r.IntN(3) == 0 {
		fields = append(fields, g.str(3))
	}
	if g.odd && g.r.IntN(20) == 0 {
		fields = append(fields, field2(nil, 1000, g.scopeSpans()))
		g.leftToPdata = true
	}
	return g.join(fields)
}

func (g *reqGen) resource() []byte {
	fields := g.attrs(1, 5)
	if g.r.IntN(3) == 0 {
		fields = append(fields, g.varint(2, uint64(g.n(5))))
	}
	if g.odd && g.r.IntN(20) == 0 {
		fields = append(fields, field2(nil, 3, g.str(1)))
		g.leftToPdata = true
	}
	if g.r.IntN(2) == 0 {
		fields = append(fields, field2(nil, 1, g.keyValue("service.name", 1)))
	}
	return g.join(fields)
}

func (g *reqGen) scopeSpans() []byte {
	var fields [][]byte
	for range g.n(2) {
		sc := [][]byte{g.str(1), g.str(2), g.varint(4, uint64(g.n(3)))}
		sc = append(sc, g.attrs(3, 2)...)
		fields = append(fields, field2(nil, 1, g.join(sc[:g.n(len(sc))])))
	}
	for range g.n(4) {
		fields = append(fields, field2(nil, 2, g.span()))
	}
	if g.r.IntN(3) == 0 {
		fields = append(fields, g.str(3))
	}
	return g.join(fields)
}

func (g *reqGen) span() []byte {
	fields := [][]byte{g.id(1, 16), g.id(2, 8)}
	if g.r.IntN(10) == 0 {
		fields = append(fields, g.id(1, 16)) // repeated: the last wins
	}
	optional := [][]byte{
		g.id(4, 8), g.str(3), g.str(5), g.varint(6, uint64(g.n(7))),
		g.fixed64(7, g.r.Uint64()), g.fixed64(8, g.r.Uint64()),
		g.varint(10, uint64(g.n(3))), g.varint(12, uint64(g.n(3))), g.varint(14, uint64(g.n(3))),
		g.fixed32(16, g.r.Uint32()), g.varint(10, math.MaxUint32),
	}
	for _, f := range optional {
		if g.r.IntN(2) == 0 {
			fields = append(fields, f)
		}
	}
	if g.r.IntN(20) == 0 {
		fields = append(fields, g.varint(6, 1<<40+2)) // kind beyond uint8
	}
	fields = append(fields, g.attrs(9, 6)...)
	for range g.n(3) {
		ev := [][]byte{g.fixed64(1, g.r.Uint64()), g.str(2), g.varint(4, 1)}
		ev = append(ev[:g.n(3)], g.attrs(3, 4)...)
		fields = append(fields, field2(nil, 11, g.join(ev)))
	}
	for range g.n(2) {
		l := [][]byte{g.id(1, 16), g.id(2, 8), g.str(3), g.varint(5, 2), g.fixed32(6, 1)}
		l = append(l[:g.n(5)], g.attrs(4, 3)...)
		fields = append(fields, field2(nil, 13, g.join(l)))
	}
	for range g.n(2) {
		st := [][]byte{g.str(2), g.varint(3, uint64(g.n(3))), g.varint(1, 1)}
		fields = append(fields, field2(nil, 15, g.join(st[:g.n(3)])))
	}
	return g.join(fields)
}

// attrs returns up to max attribute fields numbered num.
func (g *reqGen) attrs(num protowire.Number, max int) [][]byte {
	var out [][]byte
	for range g.n(max) {
		out = append(out, field2(nil, num, g.keyValue(g.text(), 1)))
	}
	return out
}

func (g *reqGen) keyValue(key string, depth int) []byte {
	var fields [][]byte
	if g.r.IntN(10) > 0 {
		fields = append(fields, field2(nil, 1, []byte(key)))
	}
	for range g.n(2) {
		fields = append(fields, field2(nil, 2, g.anyValue(depth)))
	}
	if g.odd && g.r.IntN(10) == 0 {
		fields = append(fields, g.varint(3, 4))
	}
	return g.join(fields)
}

func (g *reqGen) anyValue(depth int) []byte {
	var fields [][]byte
	for range g.n(2) {
		fields = append(fields, g.valueField(depth))
	}
	return g.join(fields)
}

func (g *reqGen) valueField(depth int) []byte {
	kinds := 8
	if depth > 4 {
		kinds = 5 // no deeper arrays or maps
	}
	switch g.r.IntN(kinds) {
	case 0:
		return g.str(1)
	case 1:
		return g.varint(2, uint64(g.n(2)))
	case 2:
		return g.varint(3, g.r.Uint64())
	case 3:
		f := []float64{0.5, math.NaN(), math.Inf(-1), math.Copysign(0, -1), 1e300}[g.r.IntN(5)]
		return g.fixed64(4, math.Float64bits(f))
	case 4:
		b := make([]byte, g.n(100))
		for i := range b {
			b[i] = byte(g.r.IntN(256))
		}
		return field2(nil, 7, b)
	case 5:
		var elems [][]byte
		for range g.n(4) {
			elems = append(elems, field2(nil, 1, g.anyValue(depth+1)))
		}
		return field2(nil, 5, g.join(elems))
	case 6:
		var kvs [][]byte
		for range g.n(4) {
			kvs = append(kvs, field2(nil, 1, g.keyValue([]string{"a", "b", "a", ""}[g.r.IntN(4)], depth+1)))
		}
		return field2(nil, 6, g.join(kvs))
	}
	if g.odd {
		return g.varint(8, 3) // string_value_strindex
	}
	return g.str(1)
}

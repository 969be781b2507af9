package otlpconvtest

import (
	"math"
	"math/rand/v2"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Mutate damages an encoded request the way broken clients and proxies do.
func Mutate(r *rand.Rand, b []byte) []byte {
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

// TraceRequests writes random ExportTraceServiceRequests field by field, in
// random order, with every value type, repeated singular fields, empty
// and missing fields, unknown fields and nested values. Odd adds what
// pdata leaves to its own rules (string indexes, deprecated fields);
// LeftToPdata says the request has something the direct decoder refuses.
type TraceRequests struct {
	R           *rand.Rand
	Odd         bool
	LeftToPdata bool
	// NowUnixNano, when set, puts most spans within a minute before it (a
	// server keeps those); others get any times.
	NowUnixNano uint64
}

// Field appends a length-delimited field.
func Field(b []byte, num protowire.Number, msg []byte) []byte { return field(b, num, msg) }

func (g *TraceRequests) n(max int) int { return g.R.IntN(max + 1) }

// join shuffles fields into one message, adding an unknown field now and
// then.
func (g *TraceRequests) join(fields [][]byte) []byte {
	if g.R.IntN(4) == 0 {
		fields = append(fields, g.unknown())
	}
	g.R.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	var out []byte
	for _, f := range fields {
		out = append(out, f...)
	}
	return out
}

func (g *TraceRequests) unknown() []byte {
	num := []protowire.Number{17, 20, 99, 5000, 1 << 20}[g.R.IntN(5)]
	switch g.R.IntN(4) {
	case 0:
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), g.R.Uint64())
	case 1:
		return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), g.R.Uint32())
	case 2:
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), g.R.Uint64())
	}
	return field(nil, num, []byte(g.text()))
}

func (g *TraceRequests) text() string {
	switch g.R.IntN(8) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("é", 20+g.R.IntN(40)) // over tight limits, cut inside a rune
	case 2:
		return "\xff\xfe not utf-8"
	}
	return []string{"GET /a", "db", "service.name", "k", "http.method", "x"}[g.R.IntN(6)]
}

func (g *TraceRequests) str(num protowire.Number) []byte { return field(nil, num, []byte(g.text())) }

func (g *TraceRequests) varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func (g *TraceRequests) fixed64(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

func (g *TraceRequests) fixed32(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func (g *TraceRequests) id(num protowire.Number, size int) []byte {
	b := make([]byte, size)
	if g.R.IntN(20) == 0 {
		b = nil // absent id: all zero
	}
	for i := range b {
		b[i] = byte(g.R.IntN(256))
	}
	return field(nil, num, b)
}

// Request returns one encoded ExportTraceServiceRequest.
func (g *TraceRequests) Request() []byte {
	var fields [][]byte
	for range g.n(3) {
		fields = append(fields, field(nil, 1, g.resourceSpans()))
	}
	return g.join(fields)
}

func (g *TraceRequests) resourceSpans() []byte {
	var fields [][]byte
	for range g.n(2) {
		fields = append(fields, field(nil, 1, g.resource()))
	}
	for range g.n(3) {
		fields = append(fields, field(nil, 2, g.scopeSpans()))
	}
	if g.R.IntN(3) == 0 {
		fields = append(fields, g.str(3))
	}
	if g.Odd && g.R.IntN(20) == 0 {
		fields = append(fields, field(nil, 1000, g.scopeSpans()))
		g.LeftToPdata = true
	}
	return g.join(fields)
}

func (g *TraceRequests) resource() []byte {
	fields := g.attrs(1, 5)
	if g.R.IntN(3) == 0 {
		fields = append(fields, g.varint(2, uint64(g.n(5))))
	}
	if g.Odd && g.R.IntN(20) == 0 {
		fields = append(fields, field(nil, 3, g.str(1)))
		g.LeftToPdata = true
	}
	if g.R.IntN(2) == 0 {
		fields = append(fields, field(nil, 1, g.keyValue("service.name", 1)))
	}
	return g.join(fields)
}

func (g *TraceRequests) scopeSpans() []byte {
	var fields [][]byte
	for range g.n(2) {
		sc := [][]byte{g.str(1), g.str(2), g.varint(4, uint64(g.n(3)))}
		sc = append(sc, g.attrs(3, 2)...)
		fields = append(fields, field(nil, 1, g.join(sc[:g.n(len(sc))])))
	}
	for range g.n(4) {
		fields = append(fields, field(nil, 2, g.span()))
	}
	if g.R.IntN(3) == 0 {
		fields = append(fields, g.str(3))
	}
	return g.join(fields)
}

func (g *TraceRequests) span() []byte {
	start, end := g.times()
	fields := [][]byte{g.id(1, 16), g.id(2, 8)}
	if g.NowUnixNano != 0 {
		fields = append(fields, g.fixed64(7, start), g.fixed64(8, end))
	}
	if g.R.IntN(10) == 0 {
		fields = append(fields, g.id(1, 16)) // repeated: the last wins
	}
	optional := [][]byte{
		g.id(4, 8), g.str(3), g.str(5), g.varint(6, uint64(g.n(7))),
		g.fixed64(7, start), g.fixed64(8, end),
		g.varint(10, uint64(g.n(3))), g.varint(12, uint64(g.n(3))), g.varint(14, uint64(g.n(3))),
		g.fixed32(16, g.R.Uint32()), g.varint(10, math.MaxUint32),
	}
	for _, f := range optional {
		if g.R.IntN(2) == 0 {
			fields = append(fields, f)
		}
	}
	if g.R.IntN(20) == 0 {
		fields = append(fields, g.varint(6, 1<<40+2)) // kind beyond uint8
	}
	fields = append(fields, g.attrs(9, 6)...)
	for range g.n(3) {
		ev := [][]byte{g.fixed64(1, g.R.Uint64()), g.str(2), g.varint(4, 1)}
		ev = append(ev[:g.n(3)], g.attrs(3, 4)...)
		fields = append(fields, field(nil, 11, g.join(ev)))
	}
	for range g.n(2) {
		l := [][]byte{g.id(1, 16), g.id(2, 8), g.str(3), g.varint(5, 2), g.fixed32(6, 1)}
		l = append(l[:g.n(5)], g.attrs(4, 3)...)
		fields = append(fields, field(nil, 13, g.join(l)))
	}
	for range g.n(2) {
		st := [][]byte{g.str(2), g.varint(3, uint64(g.n(3))), g.varint(1, 1)}
		fields = append(fields, field(nil, 15, g.join(st[:g.n(3)])))
	}
	return g.join(fields)
}

// attrs returns up to max attribute fields numbered num.
func (g *TraceRequests) attrs(num protowire.Number, max int) [][]byte {
	var out [][]byte
	for range g.n(max) {
		out = append(out, field(nil, num, g.keyValue(g.text(), 1)))
	}
	return out
}

// KeyValue returns one random encoded KeyValue, as a span's attributes
// hold them.
func (g *TraceRequests) KeyValue() []byte { return g.keyValue(g.text(), 1) }

func (g *TraceRequests) keyValue(key string, depth int) []byte {
	var fields [][]byte
	if g.R.IntN(10) > 0 {
		fields = append(fields, field(nil, 1, []byte(key)))
	}
	for range g.n(2) {
		fields = append(fields, field(nil, 2, g.anyValue(depth)))
	}
	if g.Odd && g.R.IntN(10) == 0 {
		fields = append(fields, g.varint(3, 4))
	}
	return g.join(fields)
}

func (g *TraceRequests) anyValue(depth int) []byte {
	var fields [][]byte
	for range g.n(2) {
		fields = append(fields, g.valueField(depth))
	}
	return g.join(fields)
}

func (g *TraceRequests) valueField(depth int) []byte {
	kinds := 8
	if depth > 4 {
		kinds = 5 // no deeper arrays or maps
	}
	switch g.R.IntN(kinds) {
	case 0:
		return g.str(1)
	case 1:
		return g.varint(2, uint64(g.n(2)))
	case 2:
		return g.varint(3, g.R.Uint64())
	case 3:
		f := []float64{0.5, math.NaN(), math.Inf(-1), math.Copysign(0, -1), 1e300}[g.R.IntN(5)]
		return g.fixed64(4, math.Float64bits(f))
	case 4:
		b := make([]byte, g.n(100))
		for i := range b {
			b[i] = byte(g.R.IntN(256))
		}
		return field(nil, 7, b)
	case 5:
		var elems [][]byte
		for range g.n(4) {
			elems = append(elems, field(nil, 1, g.anyValue(depth+1)))
		}
		return field(nil, 5, g.join(elems))
	case 6:
		var kvs [][]byte
		for range g.n(4) {
			kvs = append(kvs, field(nil, 1, g.keyValue([]string{"a", "b", "a", ""}[g.R.IntN(4)], depth+1)))
		}
		return field(nil, 6, g.join(kvs))
	}
	if g.Odd {
		return g.varint(8, 3) // string_value_strindex
	}
	return g.str(1)
}

func (g *TraceRequests) times() (start, end uint64) {
	if g.NowUnixNano == 0 || g.R.IntN(10) == 0 {
		return g.R.Uint64(), g.R.Uint64()
	}
	start = g.NowUnixNano - uint64(g.R.Int64N(60e9))
	return start, start + uint64(g.R.Int64N(1e9))
}

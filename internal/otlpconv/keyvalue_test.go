package otlpconv

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// sameKeyValue checks that whatever commonKeyValue reads, parseKeyValue
// reads the same way; it reports whether commonKeyValue took b.
func sameKeyValue(t testing.TB, b []byte) bool {
	t.Helper()
	key, v, ok := commonKeyValue(b)
	if !ok {
		return false
	}
	wantKey, want, err := parseKeyValue(b, 1, true)
	if err != nil {
		t.Fatalf("commonKeyValue read a KeyValue parseKeyValue refuses (%v): %x", err, b)
	}
	if string(key) != string(wantKey) || v.kind != want.kind || v.u != want.u || string(v.b) != string(want.b) || (v.b == nil) != (want.b == nil) {
		t.Fatalf("commonKeyValue read %q %+v, parseKeyValue %q %+v: %x", key, v, wantKey, want, b)
	}
	return true
}

// nextValueField returns the contents of kv's first value field.
func nextValueField(kv []byte) (protowire.Number, []byte, bool) {
	for len(kv) > 0 {
		var f field
		rest, err := nextField(kv, &f)
		if err != nil {
			return 0, nil, false
		}
		if f.num == 2 {
			return f.num, f.b, true
		}
		kv = rest
	}
	return 0, nil, false
}

func scalarKV(key string, value []byte) []byte {
	return otlpconvtest.KeyValue(key, value)
}

func TestCommonKeyValueMatchesParseKeyValue(t *testing.T) {
	varint := func(num protowire.Number, u uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), u)
	}
	fixed := func(u uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, 4, protowire.Fixed64Type), u)
	}
	str := func(s string) []byte { return otlpconvtest.Field(nil, 1, []byte(s)) }
	long := strings.Repeat("x", 125)
	taken := map[string][]byte{
		"string":               scalarKV("http.method", str("GET")),
		"empty key":            scalarKV("", str("v")),
		"empty string":         scalarKV("k", str("")),
		"invalid UTF-8":        scalarKV("k\xff", str("\xc3\x28")),
		"int":                  scalarKV("n", varint(3, 200)),
		"negative int":         scalarKV("n", varint(3, math.MaxUint64)),
		"bool true":            scalarKV("b", varint(2, 1)),
		"bool of 2":            scalarKV("b", varint(2, 2)),
		"bool false":           scalarKV("b", varint(2, 0)),
		"double":               scalarKV("d", fixed(math.Float64bits(math.NaN()))),
		"value of 127 bytes":   scalarKV("k", str(long)),
		"key of 127 bytes":     scalarKV(long+"yy", varint(3, 1)),
		"string of 125 bytes":  scalarKV("k", str(long)),
		"zero-length varint 0": scalarKV("k", varint(3, 0)),
		"value before key":     append(otlpconvtest.Field(nil, 2, str("v")), otlpconvtest.Field(nil, 1, []byte("k"))...),
		"int before key":       append(otlpconvtest.Field(nil, 2, varint(3, 7)), otlpconvtest.Field(nil, 1, []byte("k"))...),
	}
	for name, b := range taken {
		if !sameKeyValue(t, b) {
			t.Errorf("%s: not read by commonKeyValue", name)
		}
	}
	left := map[string][]byte{
		"string of 128 bytes":   scalarKV("k", str(long+"xxx")),
		"key of 128 bytes":      scalarKV(long+"yyy", varint(3, 1)),
		"empty value":           scalarKV("k", nil),
		"no value":              otlpconvtest.Field(nil, 1, []byte("k")),
		"two keys":              append(otlpconvtest.Field(nil, 1, []byte("k")), otlpconvtest.Field(nil, 1, []byte("k"))...),
		"two values":            append(otlpconvtest.Field(nil, 2, str("v")), otlpconvtest.Field(nil, 2, str("w"))...),
		"two value fields":      append(scalarKV("k", str("a")), otlpconvtest.Field(nil, 2, str("b"))...),
		"two oneof fields":      scalarKV("k", append(str("a"), varint(3, 1)...)),
		"unknown field after":   append(scalarKV("k", str("a")), varint(9, 1)...),
		"unknown value field":   scalarKV("k", append(str("a"), varint(9, 1)...)),
		"bytes value":           scalarKV("k", otlpconvtest.Field(nil, 7, []byte{1, 2})),
		"array value":           scalarKV("k", otlpconvtest.Field(nil, 5, nil)),
		"map value":             scalarKV("k", otlpconvtest.Field(nil, 6, nil)),
		"string as varint":      scalarKV("k", varint(1, 3)),
		"int as bytes":          scalarKV("k", otlpconvtest.Field(nil, 3, []byte{1})),
		"double cut short":      scalarKV("k", fixed(1)[:5]),
		"varint overflow":       scalarKV("k", append([]byte{3 << 3}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)),
		"value length past end": scalarKV("k", str("abc"))[:7],
		"string_value_strindex": scalarKV("k", varint(8, 3)),
		"key_strindex":          append(scalarKV("k", str("a")), varint(3, 4)...),
	}
	for name, b := range left {
		if sameKeyValue(t, b) {
			t.Errorf("%s: read by commonKeyValue, want the general path", name)
		}
	}
	// Random KeyValues of the generator's shapes and random scalar ones
	// of every length around the one-byte limits, some mutated: every one
	// commonKeyValue reads, parseKeyValue reads the same way.
	rng := rand.New(rand.NewPCG(13, 14))
	took := 0
	for i := range 20000 {
		var kv []byte
		if i%2 == 0 {
			g := otlpconvtest.TraceRequests{R: rng, Odd: i%4 == 0}
			kv = g.KeyValue()
		} else {
			key := strings.Repeat("k", rng.IntN(130))
			switch rng.IntN(4) {
			case 0:
				kv = scalarKV(key, str(strings.Repeat("v", rng.IntN(130))))
			case 1:
				kv = scalarKV(key, varint(protowire.Number(2+rng.IntN(2)), rng.Uint64()>>rng.IntN(64)))
			case 2:
				kv = scalarKV(key, fixed(rng.Uint64()))
			default:
				kv = scalarKV(key, varint(protowire.Number(rng.IntN(10)), 1))
			}
		}
		if i%5 == 1 {
			// The same fields, value first.
			if key, v, err := parseKeyValue(kv, 1, false); err == nil && v.kind != valEmpty {
				_, val, _ := nextValueField(kv)
				kv = append(otlpconvtest.Field(nil, 2, val), otlpconvtest.Field(nil, 1, key)...)
			}
		}
		if i%3 == 0 {
			kv = otlpconvtest.Mutate(rng, kv)
		}
		if sameKeyValue(t, kv) {
			took++
		}
	}
	if took < 4000 {
		t.Fatalf("commonKeyValue read only %d of 20000 random KeyValues: the test proves little", took)
	}
}

// FuzzCommonKeyValue: on any bytes, commonKeyValue reads only what
// parseKeyValue reads, and the same way.
func FuzzCommonKeyValue(f *testing.F) {
	rng := rand.New(rand.NewPCG(15, 16))
	for range 8 {
		g := otlpconvtest.TraceRequests{R: rng}
		f.Add(g.KeyValue())
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameKeyValue(t, b) })
}

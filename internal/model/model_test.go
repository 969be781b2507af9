package model

import (
	"math"
	"strconv"
	"testing"
	"unicode/utf8"
)

func TestClipKeepsRunesWhole(t *testing.T) {
	if got := Clip("short", 10); got != "short" {
		t.Fatalf("Clip of a short string: %q", got)
	}
	// "é" is two bytes; a cut at byte 4 falls inside the second one.
	got := Clip("caféé-order", 4)
	if !utf8.ValidString(got) || got != "caf…" {
		t.Fatalf("Clip split a rune: %q", got)
	}
}

func TestAttrsSame(t *testing.T) {
	a := Attrs{{Key: "k", Value: Str("v")}, {Key: "b", Value: Value{Type: TypeBytes, Bytes: []byte{1}}}}
	cases := []struct {
		b    Attrs
		want bool
	}{
		{a, true},
		{a.Clone(), true},
		{a[:1], false},
		{Attrs{{Key: "k", Value: Str("v")}, {Key: "b", Value: Value{Type: TypeBytes, Bytes: []byte{2}}}}, false},
		{Attrs{{Key: "k", Value: Str("w")}, a[1]}, false},
		{Attrs{{Key: "x", Value: Str("v")}, a[1]}, false},
		{Attrs{{Key: "k", Value: Value{Type: TypeArray, Str: "v"}}, a[1]}, false},
	}
	for i, c := range cases {
		if got := a.Same(c.b); got != c.want {
			t.Errorf("case %d: Same = %v, want %v", i, got, c.want)
		}
	}
	if !Attrs(nil).Same(Attrs{}) {
		t.Error("nil and empty lists differ")
	}
}

// AsFloat's quick refusal of words must not refuse anything ParseFloat
// reads.
func TestAsFloatReadsWhatParseFloatReads(t *testing.T) {
	for _, s := range []string{"12", "-3.5", "+7", ".5", "1e3", "0x1p-2", "Inf", "-inf", "NaN", "infinity", "1_000"} {
		want, err := strconv.ParseFloat(s, 64)
		got, ok := Str(s).AsFloat()
		if ok != (err == nil) || (ok && got != want && !math.IsNaN(want)) {
			t.Errorf("AsFloat(%q) = %v, %v; ParseFloat gives %v, %v", s, got, ok, want, err)
		}
	}
	for _, s := range []string{"", "GET", "true", "x12"} {
		if _, ok := Str(s).AsFloat(); ok {
			t.Errorf("AsFloat(%q) read a number", s)
		}
	}
}

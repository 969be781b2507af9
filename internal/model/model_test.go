package model

import (
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

package engine

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/tracedx/tracedx/internal/model"
)

// decodeFramed decodes whole buffers through an arena (shared string copy,
// shared attribute arrays, shared resources); it must give exactly what
// span-by-span decoding gives.
func TestDecodeFramedArenaMatchesDecodeSpan(t *testing.T) {
	g := newGen(21)
	spans := g.batch(300, 1_700_000_000e9, 1e6)
	spans[3].Events = []model.Event{{TimeUnixNano: spans[3].StartUnixNano + 5, Name: "ev", Attrs: model.Attrs{{Key: "k", Value: model.Str("v")}}}}
	spans[4].Links = []model.Link{{TraceID: spans[0].TraceID, SpanID: spans[0].SpanID, TraceState: "a=b", Attrs: model.Attrs{{Key: "n", Value: model.Int(3)}}}}
	spans[5].Resource = nil
	// Resources the shortcut for a repeated resource must tell apart: one
	// that extends another, one with the same keys and a longer value.
	a := model.Attrs{{Key: "service.name", Value: model.Str("x")}}
	spans[6].Resource = a
	spans[7].Resource = append(a[:1:1], model.Attr{Key: "host.name", Value: model.Str("h")})
	spans[8].Resource = a
	spans[9].Resource = model.Attrs{{Key: "service.name", Value: model.Str("xy")}}
	spans[10].Resource = a
	var buf []byte
	for i := range spans {
		buf = appendFramed(buf, &spans[i])
	}
	got, err := decodeFramed(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(spans) {
		t.Fatalf("decoded %d spans, want %d", len(got), len(spans))
	}
	i := 0
	err = forEachFramed(buf, func(p []byte) error {
		var want model.Span
		if err := decodeSpan(p, &want); err != nil {
			return err
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Fatalf("span %d:\n got %+v\nwant %+v", i, got[i], want)
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Decoding a buffer handed over (strings pointing into it) gives the
	// same spans.
	owned, err := decodeFramedOwned(append([]byte(nil), buf...), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(owned, got) {
		t.Fatal("decodeFramedOwned and decodeFramed disagree")
	}
	// Appending to a decoded attribute list must not clobber the next span's.
	before := got[1].Attrs.Str(got[1].Attrs[0].Key)
	got[0].Attrs = append(got[0].Attrs, model.Attr{Key: "x", Value: model.Str("y")})
	if got[1].Attrs.Str(got[1].Attrs[0].Key) != before {
		t.Fatal("append to one span's attributes changed another's")
	}
	// Truncated input fails cleanly.
	if _, err := decodeFramed(buf[:len(buf)-3], nil); err == nil {
		t.Fatal("truncated buffer decoded without error")
	}
}

// The cut parses spans with the last resource as a hint; it must find the
// same fields as parsing without one, whatever resource comes next.
func TestParseRawResourceHint(t *testing.T) {
	g := newGen(22)
	spans := g.batch(200, 1_700_000_000e9, 1e6)
	a := model.Attrs{{Key: "service.name", Value: model.Str("x")}}
	spans[1].Resource = a
	spans[2].Resource = append(a[:1:1], model.Attr{Key: "host.name", Value: model.Str("h")})
	spans[3].Resource = a
	spans[4].Resource = nil
	spans[5].Resource = model.Attrs{{Key: "service.name", Value: model.Str("xy")}}
	var hinted rawSpan
	var last []byte
	hits := 0
	for i := range spans {
		p := appendSpanRes(nil, &spans[i], nil)
		var plain rawSpan
		if err := parseRawCatalog(p, 0, len(p), &plain, nil); err != nil {
			t.Fatal(err)
		}
		if err := parseRawCatalog(p, 0, len(p), &hinted, last); err != nil {
			t.Fatal(err)
		}
		if len(last) > 0 && string(hinted.resource.in(p)) == string(last) {
			hits++
		}
		if !reflect.DeepEqual(plain, hinted) {
			t.Fatalf("span %d: with hint %+v, without %+v", i, hinted, plain)
		}
		last = append(last[:0], plain.resource.in(p)...)
	}
	if hits < len(spans)/2 {
		t.Fatalf("the hint matched %d of %d spans; runs of one resource should match", hits, len(spans))
	}
}

// The arena sizes its attribute arrays from the density of the spans
// decoded so far: input far denser than the first guess (short keys, small
// integers) still needs only a couple of arrays, not one per few spans.
func TestDecodeFramedDenseAttrsFewArrays(t *testing.T) {
	g := newGen(23)
	spans := g.batch(200, 1_700_000_000e9, 1e6)
	var buf []byte
	for i := range spans {
		spans[i].Resource = spans[0].Resource
		spans[i].Events, spans[i].Links = nil, nil
		spans[i].Attrs = nil
		for k := range 30 {
			spans[i].Attrs = append(spans[i].Attrs, model.Attr{Key: string(rune('a' + k%26)), Value: model.Int(int64(k))})
		}
		buf = appendFramed(buf, &spans[i])
	}
	got, err := decodeFramedOwned(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(spans) || !reflect.DeepEqual(got[len(got)-1].Attrs, spans[len(spans)-1].Attrs) {
		t.Fatal("dense spans decoded wrong")
	}
	// A span whose slots do not follow the previous span's starts a new
	// backing array.
	arrays := 1
	for i := 1; i < len(got); i++ {
		prev := got[i-1].Attrs
		end := unsafe.Add(unsafe.Pointer(unsafe.SliceData(prev)), uintptr(len(prev))*unsafe.Sizeof(model.Attr{}))
		if unsafe.Pointer(unsafe.SliceData(got[i].Attrs)) != end {
			arrays++
		}
	}
	// The first guessed array and one sized from what was measured.
	if arrays > 2 {
		t.Fatalf("decoding %d dense spans took %d attribute arrays, want at most 2", len(spans), arrays)
	}
	// Every span's slots stay its own whatever the arrays' sizes.
	for i := range got[:len(got)-1] {
		next := got[i+1].Attrs[0]
		got[i].Attrs = append(got[i].Attrs, model.Attr{Key: "x", Value: model.Str("y")})
		if !reflect.DeepEqual(got[i+1].Attrs[0], next) {
			t.Fatalf("append to span %d's attributes changed span %d's", i, i+1)
		}
	}
}

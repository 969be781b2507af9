package engine

import (
	"reflect"
	"testing"

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

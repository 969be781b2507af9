package otlpconv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
)

// pooledCase is a request with what DecodeTracesProto makes of it.
type pooledCase struct {
	data  []byte
	lim   Limits
	want  string // %#v of the spans, "" when refused
	stats Stats
}

func newPooledCase(t *testing.T, data []byte, lim Limits) pooledCase {
	t.Helper()
	spans, st, err := DecodeTracesProto(data, lim)
	c := pooledCase{data: data, lim: lim, stats: st}
	if err == nil {
		c.want = fmt.Sprintf("%#v", spans)
	}
	return c
}

// manyAttrsRequest is a request of spans with attrs attributes each, in
// resource spans of their own, so that its arena outgrows every chunk.
func manyAttrsRequest(spans, attrs int) []byte {
	var kvs [][]byte
	for i := range attrs {
		kvs = append(kvs, otlpconvtest.KeyValue("key."+strconv.Itoa(i), otlpconvtest.Field(nil, 1, []byte("value "+strconv.Itoa(i)))))
	}
	var data []byte
	for i := range spans {
		tid, sid := bytes.Repeat([]byte{byte(i + 1)}, 16), bytes.Repeat([]byte{byte(i + 2)}, 8)
		data = append(data, otlpconvtest.TraceRequest(tid, sid, "span "+strconv.Itoa(i), kvs...)...)
	}
	return data
}

// The pooled decoder must give exactly what DecodeTracesProto gives,
// while earlier batches are still held (they must not share memory with
// it) and after batches were released (their memory is reused).
func TestPooledDecodeMatchesDirectDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var cases []pooledCase
	ts, err := gen.Templates(3, 4, 30)
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range ts {
		cases = append(cases, newPooledCase(t, tpl.Fill(nil, rng), DefaultLimits()))
	}
	cases = append(cases,
		newPooledCase(t, manyAttrsRequest(60, 300), DefaultLimits()), // over maxPooledAttrs
		newPooledCase(t, manyAttrsRequest(5, 3), DefaultLimits()),
		newPooledCase(t, manyAttrsRequest(40, 200), tightLimits))
	for i := range 1500 {
		g := otlpconvtest.TraceRequests{R: rng, Odd: i%2 == 1}
		data := g.Request()
		if i%5 == 4 {
			data = otlpconvtest.Mutate(rng, data)
		}
		lim := DefaultLimits()
		if i%3 == 0 {
			lim = tightLimits
		}
		cases = append(cases, newPooledCase(t, data, lim))
	}
	refused := 0
	type held struct {
		c *pooledCase
		b *Decoded
	}
	var live []held
	check := func(h held) {
		if got := fmt.Sprintf("%#v", h.b.Spans); got != h.c.want {
			t.Fatalf("pooled decode differs from DecodeTracesProto (while %d batches were held):\npooled %s\ndirect %s\nrequest %x", len(live), got, h.c.want, h.c.data)
		}
		if h.b.Stats != h.c.stats {
			t.Fatalf("stats: pooled %+v, direct %+v; request %x", h.b.Stats, h.c.stats, h.c.data)
		}
	}
	for round := range 2 {
		for i := range cases {
			c := &cases[i]
			b, err := DecodeTracesProtoPooled(c.data, c.lim)
			if (err == nil) != (c.want != "") {
				t.Fatalf("pooled decoder error %v, direct decoder accepted: %v; request %x", err, c.want != "", c.data)
			}
			if err != nil {
				refused++
				continue
			}
			live = append(live, held{c, b})
			// Up to three batches are held at once, in the order the
			// round picks, then checked and released.
			if len(live) > 1+(i+round)%3 {
				check(live[0])
				live[0].b.Release()
				live = live[1:]
			}
		}
	}
	for _, h := range live {
		check(h)
		h.b.Release()
	}
	if refused < 100 || refused > len(cases) {
		t.Fatalf("%d of %d decodes refused: the mutated requests prove little", refused, 2*len(cases))
	}
}

// Release clears the memory it pools, and the next request reuses it.
func TestReleasedBatchMemoryIsClearedAndReused(t *testing.T) {
	// Other batches may be pooled from earlier tests: take them out.
	drain := func() {
		for {
			select {
			case <-idleAttrChunks:
			case <-idleSpanSlices:
			default:
				return
			}
		}
	}
	drain()
	defer drain()
	data := manyAttrsRequest(60, 30)
	b, err := DecodeTracesProtoPooled(data, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	spans := b.Spans
	if len(spans) != 60 || len(spans[0].Attrs) != 30 {
		t.Fatalf("decoded %d spans, first with %d attributes", len(spans), len(spans[0].Attrs))
	}
	// The small first chunk stays out of the pool; the one sized for the
	// rest of the request goes in.
	var pooled, small []model.Attr
	for _, c := range b.chunks {
		if cap(c) >= minPooledAttrs {
			pooled = c[:cap(c)]
		} else {
			small = c[:cap(c)]
		}
	}
	if pooled == nil || small == nil {
		t.Fatalf("chunks of %d attributes or more: %v, smaller: %v", minPooledAttrs, pooled != nil, small != nil)
	}
	b.Release()
	for i := range spans {
		if fmt.Sprintf("%#v", spans[i]) != fmt.Sprintf("%#v", model.Span{}) {
			t.Fatalf("released span %d not cleared: %+v", i, spans[i])
		}
	}
	for i := range pooled {
		if fmt.Sprintf("%#v", pooled[i]) != fmt.Sprintf("%#v", model.Attr{}) {
			t.Fatalf("released attribute %d not cleared: %+v", i, pooled[i])
		}
	}
	b2, err := DecodeTracesProtoPooled(data, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if &b2.Spans[0] != &spans[0] {
		t.Error("the next request's spans are not in the released span slice")
	}
	if &b2.Spans[0].Attrs[0] != &pooled[0] {
		t.Error("the next request's attributes do not start in the released chunk")
	}
	if len(b2.chunks) != 1 {
		t.Errorf("the next request used %d chunks, want the released one alone", len(b2.chunks))
	}
	if b2.Spans[59].Attrs.Str("key.3") != "value 3" {
		t.Errorf("attributes of the reused chunk: %v", b2.Spans[59].Attrs)
	}
	b2.Release()
	// A chunk too small for a larger request is replaced by one sized for
	// it, which the next such request fits in.
	larger := manyAttrsRequest(150, 30)
	for i, want := range []int{2, 1, 1} {
		b3, err := DecodeTracesProtoPooled(larger, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		if len(b3.chunks) != want {
			t.Errorf("larger request %d used %d chunks, want %d", i, len(b3.chunks), want)
		}
		b3.Release()
	}
}

// A released nil batch (a decode that failed) is a no-op.
func TestReleaseOfNilBatch(t *testing.T) {
	var b *Decoded
	b.Release()
	if _, err := DecodeTracesProtoPooled([]byte{0xff}, DefaultLimits()); err == nil {
		t.Fatal("a malformed request decoded")
	}
}

package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/tracedx/tracedx/internal/model"
)

// The span codec is a compact, self-delimiting binary form of model.Span.
// It is used for WAL records, for the head's in-memory buffers (so the head
// costs roughly the encoded size, not the size of Go structs full of
// pointers), and, piecewise, for the blob columns of blocks (events, links,
// resource and non-dedicated attributes).

var errCorrupt = errors.New("corrupt span encoding")

type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) byte1(v byte)     { e.b = append(e.b, v) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) raw(p []byte)     { e.b = append(e.b, p...) }

// dec reads by advancing off, not by reslicing b: a slice header written
// through *dec costs a GC write barrier whenever a collection is running,
// and near its memory limit the server collects much of the time, which
// made these small readers the hottest code of the cut and the conversion.
type dec struct {
	b   []byte // the whole input
	off int    // where reading continues
	err error
	// a, when set, makes decoding cheaper for whole traces: strings are
	// substrings of one copy of the input, attribute lists come out of
	// shared backing arrays, and a resource equal to the previous span's
	// is shared.
	a *decArena
}

type decArena struct {
	src    string // copy of the input; substrings of it are returned
	srcLen int    // len of the input: the offset of d.rest() is srcLen-d.left()
	attrs  []model.Attr
	// taken counts the attribute slots handed out; doneAttrs and doneBytes
	// are taken and the input offset when the last whole span was decoded,
	// the measured density that sizes the next backing array.
	taken, doneAttrs, doneBytes int
	// recent resources (a trace has one per service), most recent first
	resRaw [4][]byte
	res    [4]model.Attrs
}

// defaultAttrBytes is the encoded bytes per attribute slot assumed before
// a whole span has been decoded. The harness's traces take 53–60 (each
// span repeats its resource's bytes, but a trace decodes a resource once),
// so one backing array, rounded up to its size class, usually serves a
// whole trace; denser input costs a second array, sized from the density
// measured by then.
const defaultAttrBytes = 56

func newDecArena(p []byte) *decArena { return &decArena{src: string(p), srcLen: len(p)} }

// spanDone records that a whole span ends at off in the input.
func (a *decArena) spanDone(off int) { a.doneAttrs, a.doneBytes = a.taken, off }

// take returns n attribute slots, capacity-capped so an append by a
// consumer cannot overwrite the neighbour.
func (a *decArena) take(n int) model.Attrs {
	if cap(a.attrs)-len(a.attrs) < n {
		// Grow rounds the capacity up to the allocation's size class: the
		// slots are paid for anyway.
		a.attrs = slices.Grow([]model.Attr(nil), n+a.restAttrs())
	}
	s := a.attrs[len(a.attrs) : len(a.attrs)+n : len(a.attrs)+n]
	a.attrs = a.attrs[:len(a.attrs)+n]
	a.taken += n
	return model.Attrs(s)
}

// restAttrs estimates the slots the input still needs after the current
// request: from the density of the spans decoded so far, which within a
// trace is close to that of the rest (a backing array a third empty was
// 16 % of the server's allocated bytes), else from defaultAttrBytes. An
// underestimate costs one more, smaller, array; an overestimate memory.
func (a *decArena) restAttrs() int {
	if a.doneAttrs == 0 || a.doneBytes == 0 {
		// The current span's own remaining slots are unknown too: its bytes
		// count with the rest.
		return (len(a.src) - a.doneBytes) / defaultAttrBytes
	}
	// Slots the rest of the current span and the later spans need at the
	// density seen, less those the current span has already taken.
	want := (len(a.src)-a.doneBytes)*a.doneAttrs/a.doneBytes - (a.taken - a.doneAttrs)
	return max(want, 0)
}

func (d *dec) rest() []byte   { return d.b[d.off:] }
func (d *dec) left() int      { return len(d.b) - d.off }
func (d *dec) reset(p []byte) { d.b, d.off = p, 0 }
func (d *dec) skip(n int)     { d.off += n }

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.off = len(d.b)
}

func (d *dec) uvarint() uint64 {
	if d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := d.b[d.off]
		d.off++
		return uint64(v)
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *dec) byte1() byte {
	if d.off >= len(d.b) {
		d.fail()
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *dec) rawN(n int) []byte {
	if n < 0 || d.left() < n {
		d.fail()
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *dec) str() string {
	n := d.uvarint()
	if n > uint64(d.left()) {
		d.fail()
		return ""
	}
	if d.a != nil {
		off := d.a.srcLen - d.left()
		d.off += int(n)
		return d.a.src[off : off+int(n)]
	}
	return string(d.rawN(int(n)))
}

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if n > uint64(d.left()) {
		d.fail()
		return nil
	}
	p := d.rawN(int(n))
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

// count reads a list length and rejects lengths that cannot fit in the
// remaining input (each element takes at least one byte), so corrupt input
// cannot trigger huge allocations.
func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(d.left()) {
		d.fail()
		return 0
	}
	return int(n)
}

func encValue(e *enc, v model.Value) {
	e.byte1(byte(v.Type))
	switch v.Type {
	case model.TypeString, model.TypeArray, model.TypeMap:
		e.str(v.Str)
	case model.TypeBool:
		if v.Bool {
			e.byte1(1)
		} else {
			e.byte1(0)
		}
	case model.TypeInt:
		e.varint(v.Int)
	case model.TypeDouble:
		e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v.Float))
	case model.TypeBytes:
		e.bytes(v.Bytes)
	}
}

func decValue(d *dec) model.Value {
	v := model.Value{Type: model.ValueType(d.byte1())}
	switch v.Type {
	case model.TypeEmpty:
	case model.TypeString, model.TypeArray, model.TypeMap:
		v.Str = d.str()
	case model.TypeBool:
		v.Bool = d.byte1() == 1
	case model.TypeInt:
		v.Int = d.varint()
	case model.TypeDouble:
		p := d.rawN(8)
		if p != nil {
			v.Float = math.Float64frombits(binary.LittleEndian.Uint64(p))
		}
	case model.TypeBytes:
		v.Bytes = d.bytes()
	default:
		d.fail()
	}
	return v
}

func encAttrs(e *enc, a model.Attrs) {
	e.uvarint(uint64(len(a)))
	for i := range a {
		e.str(a[i].Key)
		encValue(e, a[i].Value)
	}
}

func decAttrs(d *dec) model.Attrs {
	n := d.count()
	if n == 0 {
		return nil
	}
	var a model.Attrs
	if d.a != nil {
		a = d.a.take(n)
	} else {
		a = make(model.Attrs, n)
	}
	for i := range a {
		a[i].Key = d.str()
		a[i].Value = decValue(d)
	}
	if d.err != nil {
		return nil
	}
	return a
}

// encEvents stores event times relative to the span start: they are close
// to it, so the varints are short and compress well.
func encEvents(e *enc, ev []model.Event, base uint64) {
	e.uvarint(uint64(len(ev)))
	for i := range ev {
		e.varint(int64(ev[i].TimeUnixNano - base))
		e.str(ev[i].Name)
		encAttrs(e, ev[i].Attrs)
	}
}

func decEvents(d *dec, base uint64) []model.Event {
	n := d.count()
	if n == 0 {
		return nil
	}
	ev := make([]model.Event, n)
	for i := range ev {
		ev[i].TimeUnixNano = base + uint64(d.varint())
		ev[i].Name = d.str()
		ev[i].Attrs = decAttrs(d)
	}
	return ev
}

func encLinks(e *enc, l []model.Link) {
	e.uvarint(uint64(len(l)))
	for i := range l {
		e.raw(l[i].TraceID[:])
		e.raw(l[i].SpanID[:])
		e.str(l[i].TraceState)
		encAttrs(e, l[i].Attrs)
	}
}

func decLinks(d *dec) []model.Link {
	n := d.count()
	if n == 0 {
		return nil
	}
	l := make([]model.Link, n)
	for i := range l {
		copy(l[i].TraceID[:], d.rawN(16))
		copy(l[i].SpanID[:], d.rawN(8))
		l[i].TraceState = d.str()
		l[i].Attrs = decAttrs(d)
	}
	return l
}

// appendSpan appends the full encoding of s.
func appendSpan(b []byte, s *model.Span) []byte { return appendSpanRes(b, s, nil) }

// appendSpanRes is appendSpan with s.Resource already encoded (by encAttrs)
// in res, when res is not nil: spans of one batch usually share a few
// resources, which need encoding only once.
func appendSpanRes(b []byte, s *model.Span, res []byte) []byte {
	e := enc{b: b}
	encSpanHead(&e, s)
	if res != nil {
		e.raw(res)
	} else {
		encAttrs(&e, s.Resource)
	}
	encSpanTail(&e, s)
	return e.b
}

// encSpanHead encodes the fields before the resource.
func encSpanHead(e *enc, s *model.Span) {
	e.raw(s.TraceID[:])
	e.raw(s.SpanID[:])
	e.raw(s.ParentSpanID[:])
	e.uvarint(uint64(s.Flags))
	e.byte1(byte(s.Kind))
	e.byte1(byte(s.StatusCode))
	e.uvarint(s.StartUnixNano)
	e.varint(int64(s.EndUnixNano - s.StartUnixNano))
	e.str(s.Name)
	e.str(s.TraceState)
	e.str(s.StatusMessage)
	e.str(s.Service)
	e.str(s.ScopeName)
	e.str(s.ScopeVersion)
}

// encSpanTail encodes the fields after the resource.
func encSpanTail(e *enc, s *model.Span) {
	encAttrs(e, s.Attrs)
	encEvents(e, s.Events, s.StartUnixNano)
	encLinks(e, s.Links)
	e.uvarint(uint64(s.DroppedAttributesCount))
	e.uvarint(uint64(s.DroppedEventsCount))
	e.uvarint(uint64(s.DroppedLinksCount))
}

// Resource references. A span's resource is most often that of the span
// before it: SDKs batch by resource, so a request holds each trace in
// runs of spans of one process. Encoded in full in every span, resources
// were ~170 of the ~650 bytes per span the head holds and the cut parses.
// Within a run of spans of one trace written together (one Write), a
// resource met before is a back-reference instead:
//
//	0x80 0x00 | uvarint distance | uvarint length
//
// where distance leads from the reference's first byte back to the first
// byte of the resource's full encoding, earlier in the same run. 0x80 0x00
// is a uvarint that binary.AppendUvarint never writes (a non-minimal 0),
// so no full encoding starts with it: WAL records and level-0 chunks
// written before references existed read as they did.
//
// A distance holds wherever the run's bytes go together: the head appends
// whole runs to a trace's buffer, and the WAL, the cut, level-0 chunks,
// the cold tier and every reader move whole trace buffers (or whole WAL
// records). Whatever decodes a span must see the bytes before it in its
// buffer: decodeSpanAt and parseRawHead read in the buffer's coordinates.

// minResRef is the shortest resource encoding worth a reference (one is
// at least four bytes).
const minResRef = 8

// isResRef reports whether a resource reference starts at b[off].
func isResRef(b []byte, off int) bool { return off+1 < len(b) && b[off] == 0x80 && b[off+1] == 0 }

// resRef reads the reference at d.off (isResRef is true there) and returns
// where the full encoding it refers to lies in d.b.
func (d *dec) resRef() (start, n int) {
	at := d.off
	d.off += 2
	back, ln := d.uvarint(), d.uvarint()
	if d.err != nil || back == 0 || back > uint64(at) || ln > back {
		d.fail()
		return 0, 0
	}
	return at - int(back), int(ln)
}

// resRun remembers where the resources of the run being encoded (spans of
// one trace, consecutive in a batch) lie in the buffer, most recent first.
type resRun struct {
	at, n [4]int
	k     int
}

// reset starts a new run: references never reach into an earlier one.
func (r *resRun) reset() { r.k = 0 }

// ref replaces the resource encoding at b[at:] by a reference when the run
// holds the same bytes already, else remembers where they are.
func (r *resRun) ref(b []byte, at int) []byte {
	res := b[at:]
	if len(res) < minResRef {
		return b
	}
	for i := 0; i < r.k; i++ {
		if r.n[i] == len(res) && bytes.Equal(b[r.at[i]:r.at[i]+r.n[i]], res) {
			b = append(b[:at], 0x80, 0)
			b = binary.AppendUvarint(b, uint64(at-r.at[i]))
			return binary.AppendUvarint(b, uint64(len(res)))
		}
	}
	copy(r.at[1:], r.at[:len(r.at)-1])
	copy(r.n[1:], r.n[:len(r.n)-1])
	r.at[0], r.n[0] = at, len(res)
	r.k = min(r.k+1, len(r.at))
	return b
}

// decodeSpan decodes one span produced by appendSpan; p must hold exactly
// one span, with its resource in full.
func decodeSpan(p []byte, s *model.Span) error {
	return decodeSpanAt(p, 0, len(p), s, nil)
}

// decResource decodes a resource; with an arena, spans with the same
// encoded resource as the previous one share its (immutable) attributes.
func decResource(d *dec) model.Attrs {
	if isResRef(d.b, d.off) {
		start, n := d.resRef()
		if d.err != nil {
			return nil
		}
		return d.resourceAt(start, n)
	}
	if d.a == nil {
		return decAttrs(d)
	}
	// Attribute lists are self-delimiting, so input that starts with the
	// whole encoding of a recent resource is that resource: no need to
	// walk its attributes to find where it ends.
	for i, r := range d.a.resRaw {
		if len(r) > 0 && bytes.HasPrefix(d.rest(), r) {
			d.skip(len(r))
			return d.a.res[i]
		}
	}
	start := d.off
	skipAttrs(d)
	if d.err != nil {
		return nil
	}
	return d.newResource(start, d.off-start)
}

// resourceAt decodes the resource encoded in full at d.b[start:start+n],
// through the arena's recent resources when there is one.
func (d *dec) resourceAt(start, n int) model.Attrs {
	if d.a != nil {
		raw := d.b[start : start+n]
		for i, r := range d.a.resRaw {
			if len(r) == n && bytes.Equal(r, raw) {
				return d.a.res[i]
			}
		}
	}
	return d.newResource(start, n)
}

// newResource decodes the resource at d.b[start:start+n] and, with an
// arena, makes it the most recent.
func (d *dec) newResource(start, n int) model.Attrs {
	raw := d.b[start : start+n]
	// Decode in d.b's coordinates, which are the arena's: the arena finds
	// a string's offset from the end of the input, which meanwhile is the
	// resource's end.
	sub := dec{b: d.b[:start+n], off: start, a: d.a}
	var res model.Attrs
	if d.a != nil {
		end := d.a.srcLen
		d.a.srcLen = start + n
		res = decAttrs(&sub)
		d.a.srcLen = end
	} else {
		res = decAttrs(&sub)
	}
	if sub.err != nil || sub.off != start+n {
		d.fail()
		return nil
	}
	if d.a != nil {
		copy(d.a.resRaw[1:], d.a.resRaw[:3])
		copy(d.a.res[1:], d.a.res[:3])
		d.a.resRaw[0], d.a.res[0] = raw, res
	}
	return res
}

// decodeSpanAt decodes the span at src[off:off+n] (a framed span's
// payload). A resource reference in it is resolved in src, which must
// hold the bytes before the span. With an arena, src is the arena's input
// and the arena's srcLen is off+n.
func decodeSpanAt(src []byte, off, n int, s *model.Span, a *decArena) error {
	d := dec{b: src[:off+n], off: off, a: a}
	copy(s.TraceID[:], d.rawN(16))
	copy(s.SpanID[:], d.rawN(8))
	copy(s.ParentSpanID[:], d.rawN(8))
	s.Flags = uint32(d.uvarint())
	s.Kind = model.SpanKind(d.byte1())
	s.StatusCode = model.StatusCode(d.byte1())
	s.StartUnixNano = d.uvarint()
	s.EndUnixNano = s.StartUnixNano + uint64(d.varint())
	s.Name = d.str()
	s.TraceState = d.str()
	s.StatusMessage = d.str()
	s.Service = d.str()
	s.ScopeName = d.str()
	s.ScopeVersion = d.str()
	s.Resource = decResource(&d)
	s.Attrs = decAttrs(&d)
	s.Events = decEvents(&d, s.StartUnixNano)
	s.Links = decLinks(&d)
	s.DroppedAttributesCount = uint32(d.uvarint())
	s.DroppedEventsCount = uint32(d.uvarint())
	s.DroppedLinksCount = uint32(d.uvarint())
	if d.err != nil {
		return fmt.Errorf("decode span: %w", d.err)
	}
	if d.left() != 0 {
		return fmt.Errorf("decode span: %d trailing bytes: %w", d.left(), errCorrupt)
	}
	return nil
}

// appendFramed appends a span prefixed with its encoded length, the framing
// used inside WAL records and head buffers.
func appendFramed(b []byte, s *model.Span) []byte { return appendFramedRes(b, s, nil, nil) }

// appendFramedRes is appendFramed with the resource encoded in res as for
// appendSpanRes; with run, the resource is a reference when the run has
// met it already.
func appendFramedRes(b []byte, s *model.Span, res []byte, run *resRun) []byte {
	// Reserve a fixed 4-byte length so the span can be encoded in place.
	off := len(b)
	e := enc{b: append(b, 0, 0, 0, 0)}
	encSpanHead(&e, s)
	at := len(e.b)
	if res != nil {
		e.raw(res)
	} else {
		encAttrs(&e, s.Resource)
	}
	if run != nil {
		e.b = run.ref(e.b, at)
	}
	encSpanTail(&e, s)
	binary.LittleEndian.PutUint32(e.b[off:], uint32(len(e.b)-off-4))
	return e.b
}

// resEncCache remembers the encodings of the resources met in one batch,
// keyed by the identity of their attribute slices (converters share one
// slice between the spans of a resource).
type resEncCache struct {
	keys []*model.Attr
	lens []int
	enc  [][]byte
	buf  enc
}

func (c *resEncCache) reset() {
	c.keys, c.lens, c.enc = c.keys[:0], c.lens[:0], c.enc[:0]
	c.buf.b = c.buf.b[:0]
}

func (c *resEncCache) get(res model.Attrs) []byte {
	if len(res) == 0 {
		return nil // encAttrs of nothing is one byte; not worth caching
	}
	k := &res[0]
	for i := range c.keys {
		if c.keys[i] == k && c.lens[i] == len(res) {
			return c.enc[i]
		}
	}
	if len(c.keys) >= 16 {
		return nil
	}
	start := len(c.buf.b)
	encAttrs(&c.buf, res)
	// buf may move when it grows; earlier entries keep their old backing
	// arrays, which stay valid.
	e := c.buf.b[start:len(c.buf.b):len(c.buf.b)]
	c.keys, c.lens, c.enc = append(c.keys, k), append(c.lens, len(res)), append(c.enc, e)
	return e
}

// forEachFramed calls fn with each framed span payload in p.
func forEachFramed(p []byte, fn func(span []byte) error) error {
	return forEachFramedAt(p, func(off, n int) error { return fn(p[off : off+n]) })
}

// forEachFramedAt is forEachFramed giving each span's place in p.
func forEachFramedAt(p []byte, fn func(off, n int) error) error {
	for off := 0; off < len(p); {
		if len(p)-off < 4 {
			return fmt.Errorf("framed span header: %w", errCorrupt)
		}
		n := int(binary.LittleEndian.Uint32(p[off:]))
		if n > len(p)-off-4 {
			return fmt.Errorf("framed span of %d bytes past end: %w", n, errCorrupt)
		}
		if err := fn(off+4, n); err != nil {
			return err
		}
		off += 4 + n
	}
	return nil
}

// decodeFramed decodes every framed span in p.
func decodeFramed(p []byte, out []model.Span) ([]model.Span, error) {
	if len(p) == 0 {
		return out, nil
	}
	return decodeFramedArena(p, out, newDecArena(p))
}

// decodeFramedOwned is decodeFramed for a buffer that nothing writes to
// again (a completed trace's, handed over by the head or the cold tier):
// the decoded strings point into p itself instead of into a copy of it,
// which saved the completion path a copy of every span it decodes.
func decodeFramedOwned(p []byte, out []model.Span) ([]model.Span, error) {
	if len(p) == 0 {
		return out, nil
	}
	return decodeFramedArena(p, out, &decArena{src: unsafe.String(unsafe.SliceData(p), len(p)), srcLen: len(p)})
}

func decodeFramedArena(p []byte, out []model.Span, a *decArena) ([]model.Span, error) {
	for off := 0; off < len(p); {
		if len(p)-off < 4 {
			return out, fmt.Errorf("framed span header: %w", errCorrupt)
		}
		n := int(binary.LittleEndian.Uint32(p[off:]))
		if n > len(p)-off-4 {
			return out, fmt.Errorf("framed span of %d bytes past end: %w", n, errCorrupt)
		}
		end := off + 4 + n
		// The arena finds a string's offset in p from where the span ends.
		a.srcLen = end
		out = append(out, model.Span{})
		if err := decodeSpanAt(p, off+4, n, &out[len(out)-1], a); err != nil {
			return out, err
		}
		a.spanDone(end)
		off = end
	}
	return out, nil
}

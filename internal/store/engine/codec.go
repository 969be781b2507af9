package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

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

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) byte1() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) rawN(n int) []byte {
	if n < 0 || len(d.b) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	return string(d.rawN(int(n)))
}

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
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
	if n > uint64(len(d.b)) {
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
	a := make(model.Attrs, n)
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
func appendSpan(b []byte, s *model.Span) []byte {
	e := enc{b: b}
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
	encAttrs(&e, s.Resource)
	encAttrs(&e, s.Attrs)
	encEvents(&e, s.Events, s.StartUnixNano)
	encLinks(&e, s.Links)
	e.uvarint(uint64(s.DroppedAttributesCount))
	e.uvarint(uint64(s.DroppedEventsCount))
	e.uvarint(uint64(s.DroppedLinksCount))
	return e.b
}

// decodeSpan decodes one span produced by appendSpan; p must hold exactly
// one span.
func decodeSpan(p []byte, s *model.Span) error {
	d := dec{b: p}
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
	s.Resource = decAttrs(&d)
	s.Attrs = decAttrs(&d)
	s.Events = decEvents(&d, s.StartUnixNano)
	s.Links = decLinks(&d)
	s.DroppedAttributesCount = uint32(d.uvarint())
	s.DroppedEventsCount = uint32(d.uvarint())
	s.DroppedLinksCount = uint32(d.uvarint())
	if d.err != nil {
		return fmt.Errorf("decode span: %w", d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("decode span: %d trailing bytes: %w", len(d.b), errCorrupt)
	}
	return nil
}

// appendFramed appends a span prefixed with its encoded length, the framing
// used inside WAL records and head buffers.
func appendFramed(b []byte, s *model.Span) []byte {
	// Reserve a fixed 4-byte length so the span can be encoded in place.
	off := len(b)
	b = append(b, 0, 0, 0, 0)
	b = appendSpan(b, s)
	binary.LittleEndian.PutUint32(b[off:], uint32(len(b)-off-4))
	return b
}

// forEachFramed calls fn with each framed span payload in p.
func forEachFramed(p []byte, fn func(span []byte) error) error {
	for len(p) > 0 {
		if len(p) < 4 {
			return fmt.Errorf("framed span header: %w", errCorrupt)
		}
		n := int(binary.LittleEndian.Uint32(p))
		if n > len(p)-4 {
			return fmt.Errorf("framed span of %d bytes past end: %w", n, errCorrupt)
		}
		if err := fn(p[4 : 4+n]); err != nil {
			return err
		}
		p = p[4+n:]
	}
	return nil
}

// decodeFramed decodes every framed span in p.
func decodeFramed(p []byte, out []model.Span) ([]model.Span, error) {
	err := forEachFramed(p, func(b []byte) error {
		out = append(out, model.Span{})
		return decodeSpan(b, &out[len(out)-1])
	})
	return out, err
}

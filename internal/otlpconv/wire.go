package otlpconv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/quickhash"
)

// DecodeTracesProto converts an encoded ExportTraceServiceRequest (or
// TracesData, which has the same layout) straight into model spans under
// lim. The result is the one pdata's UnmarshalProto followed by
// FromTracesLimited gives, without building pdata's object tree: decoding
// into pdata and then copying into the model was a third of the server's
// CPU per span, most of it allocation.
//
// It accepts only what pdata accepts, and it leaves to pdata everything
// OTLP senders do not send (groups, the deprecated scope spans field,
// entity refs) and every error: an error here means "decode this request
// with pdata", whose answer is authoritative (a decode error for the
// client, or the repair of ids of the wrong length). It needs no
// CheckTracesProtoNesting first (only pdata does): it refuses a value
// nested deeper than MaxNesting, counted as the check counts, rather than
// recurse on it, and what it accepts the check passes.
func DecodeTracesProto(data []byte, lim Limits) ([]model.Span, Stats, error) {
	return decodeTraces(data, lim, nil)
}

// decodeTraces is DecodeTracesProto, recording each span's bytes in raws
// when that is not nil.
func decodeTraces(data []byte, lim Limits, raws *rawRecorder) ([]model.Span, Stats, error) {
	return decodeTracesInto(data, lim, raws, nil)
}

// decodeTracesInto is decodeTraces that, when batch is not nil, decodes
// into reused memory and records it in batch for Release.
func decodeTracesInto(data []byte, lim Limits, raws *rawRecorder, batch *Decoded) ([]model.Span, Stats, error) {
	n, err := countSpans(data)
	if err != nil {
		return nil, Stats{}, err
	}
	d := getDecoder()
	defer d.release()
	d.converter, d.spansTotal = converter{lim: lim}, n
	d.batch = batch
	if batch != nil {
		d.out = batch.spanSlice(n)
	} else {
		d.out = make([]model.Span, 0, n)
	}
	d.raws = raws
	if raws != nil {
		raws.raws.spans = make([]rawSpan, 0, n)
	}
	for b := data; len(b) > 0; {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return nil, Stats{}, err
		}
		b = rest
		if f.num == 1 {
			if err := f.want(protowire.BytesType); err != nil {
				return nil, Stats{}, err
			}
			if err := d.resourceSpans(f.b); err != nil {
				return nil, Stats{}, err
			}
		}
	}
	if batch != nil {
		batch.keep(d.arena)
	}
	return d.out, d.stats, nil
}

// errLeftToPdata marks what the decoder does not handle itself.
var errLeftToPdata = errors.New("left to the pdata decoder")

// field is one decoded protobuf field: u holds varint and fixed values, b
// the contents of a length-delimited one.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64
	b   []byte
}

// nextField reads the field at the front of b into f and returns the rest.
func nextField(b []byte, f *field) ([]byte, error) {
	// Most fields of a request have a one-byte tag and either a one-byte
	// varint or a length under 128 (keys, short values, ids, nested
	// attribute values): read those without protowire's general varint
	// decoding, which is most of the cost of a field.
	// Span times are fixed64 fields with a one-byte tag, two or more in
	// every span and event.
	if len(b) >= 2 && b[0] < 0x80 && b[0]>>3 != 0 {
		switch typ := protowire.Type(b[0] & 7); typ {
		case protowire.VarintType:
			if b[1] < 0x80 {
				f.num, f.typ, f.u, f.b = protowire.Number(b[0]>>3), typ, uint64(b[1]), nil
				return b[2:], nil
			}
		case protowire.BytesType:
			if end := 2 + int(b[1]); b[1] < 0x80 && end <= len(b) {
				f.num, f.typ, f.u, f.b = protowire.Number(b[0]>>3), typ, 0, b[2:end]
				return b[end:], nil
			}
		case protowire.Fixed64Type:
			if len(b) >= 9 {
				f.num, f.typ, f.u, f.b = protowire.Number(b[0]>>3), typ, binary.LittleEndian.Uint64(b[1:9]), nil
				return b[9:], nil
			}
		}
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return nil, protowire.ParseError(n)
	}
	b = b[n:]
	f.num, f.typ, f.u, f.b = num, typ, 0, nil
	switch typ {
	case protowire.VarintType:
		f.u, n = protowire.ConsumeVarint(b)
	case protowire.Fixed64Type:
		f.u, n = protowire.ConsumeFixed64(b)
	case protowire.Fixed32Type:
		var v uint32
		v, n = protowire.ConsumeFixed32(b)
		f.u = uint64(v)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	default:
		// pdata skips groups in a way of its own (it stops at a group's
		// first field); OTLP has none, so they are pdata's to judge.
		return nil, errLeftToPdata
	}
	if n < 0 {
		return nil, protowire.ParseError(n)
	}
	return b[n:], nil
}

// want refuses a known field of the wrong wire type, as pdata does.
func (f *field) want(t protowire.Type) error {
	if f.typ == t {
		return nil
	}
	return f.wrongType(t)
}

func (f *field) wrongType(t protowire.Type) error {
	return fmt.Errorf("field %d has wire type %d, want %d", f.num, f.typ, t)
}

// countSpans counts the spans of a request, walking only the envelope.
func countSpans(data []byte) (int, error) {
	n := 0
	err := eachMessage(data, 1, func(rs []byte) error {
		return eachMessage(rs, 2, func(ss []byte) error {
			return eachMessage(ss, 2, func([]byte) error { n++; return nil })
		})
	})
	return n, err
}

// eachMessage calls fn with every field num of b, which must be
// length-delimited; other fields are checked for well-formedness only.
func eachMessage(b []byte, num protowire.Number, fn func([]byte) error) error {
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		if f.num != num {
			continue
		}
		if err := f.want(protowire.BytesType); err != nil {
			return err
		}
		if err := fn(f.b); err != nil {
			return err
		}
	}
	return nil
}

const strTableBits = 10

// idleDecoders keep their scratch space and string table between
// requests. Not a sync.Pool: that empties at every other collection, and
// the server collects several times a second under load.
var idleDecoders = make(chan *wireDecoder, 16)

func getDecoder() *wireDecoder {
	select {
	case d := <-idleDecoders:
		return d
	default:
		return new(wireDecoder)
	}
}

type wireDecoder struct {
	converter
	// strs holds one copy of text seen in recent requests: attribute keys,
	// span names and most values repeat from span to span, and reusing a
	// copy saves allocating it and collecting it later.
	strs [1 << strTableBits]string
	out  []model.Span
	// arena holds the spans' attributes, as FromTracesLimited's does; it
	// is grown in chunks sized from the spans decoded so far because the
	// count is only known once a span is read.
	arena      []model.Attr
	spansTotal int
	spanAttrs  int // attributes kept on the spans decoded so far
	spansDone  int
	scratch    []model.Attr // event, link and resource attributes
	events     []model.Event
	links      []model.Link
	// composites counts array and map values decoded: their JSON text in
	// the model does not encode back to what was sent.
	composites int
	// raws, when not nil, collects each span's bytes (DecodeTracesProtoRaw).
	raws *rawRecorder
	// batch, when not nil, supplies reused memory for the spans and their
	// attributes (DecodeTracesProtoPooled).
	batch *Decoded
}

// resourceSpans decodes one ResourceSpans. Its resource is read first
// (pdata merges every occurrence of the field, wherever it is) since each
// span carries it.
func (d *wireDecoder) resourceSpans(b []byte) error {
	d.scratch = d.scratch[:0]
	if d.raws != nil {
		d.raws.beginResource(d)
	}
	total := 0
	for r := b; len(r) > 0; {
		var f field
		rest, err := nextField(r, &f)
		if err != nil {
			return err
		}
		r = rest
		switch f.num {
		case 1: // resource
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			if d.raws != nil {
				d.raws.resourceField(f.b)
			}
			if err := d.resource(f.b, &total); err != nil {
				return err
			}
		case 2, 3: // scope spans (below), schema URL
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
		case 1000: // deprecated scope spans: pdata migrates them
			return errLeftToPdata
		}
	}
	res := d.keptAttrs(total)
	if d.raws != nil {
		d.raws.endResource(d, res)
	}
	service := res.Str("service.name")
	if service == "" {
		service = model.UnknownService
	}
	return eachMessage(b, 2, func(ss []byte) error { return d.scopeSpans(ss, service, res) })
}

func (d *wireDecoder) resource(b []byte, total *int) error {
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case 1:
			if err := d.attr(&f, total); err != nil {
				return err
			}
		case 2:
			if err := f.want(protowire.VarintType); err != nil {
				return err
			}
		case 3: // entity refs
			return errLeftToPdata
		}
	}
	return nil
}

// attr converts the attribute f into d.scratch while fewer than MaxAttrs
// are there, and validates it otherwise; *total counts them all.
func (d *wireDecoder) attr(f *field, total *int) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	*total++
	if *total > d.lim.MaxAttrs {
		return validKeyValue(f.b, 1)
	}
	d.scratch = append(d.scratch, model.Attr{})
	return d.keyValue(f.b, &d.scratch[len(d.scratch)-1])
}

// keptAttrs copies d.scratch into an attribute set of its own, counting
// those beyond the limit as dropped; nil when there were none.
func (d *wireDecoder) keptAttrs(total int) model.Attrs {
	d.stats.DroppedAttrs += total - len(d.scratch)
	if len(d.scratch) == 0 {
		return nil
	}
	return append(make(model.Attrs, 0, len(d.scratch)), d.scratch...)
}

func (d *wireDecoder) scopeSpans(b []byte, service string, res model.Attrs) error {
	var name, version []byte
	if d.raws != nil {
		d.raws.beginScope(d)
	}
	for r := b; len(r) > 0; {
		var f field
		rest, err := nextField(r, &f)
		if err != nil {
			return err
		}
		r = rest
		switch f.num {
		case 1: // scope; pdata merges repeats
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			if d.raws != nil {
				d.raws.scopeField(f.b)
			}
			if err := scope(f.b, &name, &version); err != nil {
				return err
			}
		case 2, 3: // spans (below), schema URL
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
		}
	}
	sc := spanScope{service: service, res: res, name: d.clipBytes(name), version: d.clipBytes(version)}
	if d.raws != nil {
		d.raws.endScope(d)
	}
	return eachMessage(b, 2, func(sp []byte) error { return d.span(sp, &sc) })
}

// scope reads an InstrumentationScope's name and version; its attributes
// are not kept (the model has none), only checked.
func scope(b []byte, name, version *[]byte) error {
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case 1, 2:
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			if f.num == 1 {
				*name = f.b
			} else {
				*version = f.b
			}
		case 3:
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			if err := validKeyValue(f.b, 1); err != nil {
				return err
			}
		case 4:
			if err := f.want(protowire.VarintType); err != nil {
				return err
			}
		}
	}
	return nil
}

// spanScope is what the spans of one ScopeSpans share.
type spanScope struct {
	service       string
	res           model.Attrs
	name, version string
}

// spanState is a span being read. Its text fields are kept as sent until
// the span is read whole: a repeated field replaces the earlier one, and
// only the last is converted (and counted if cut).
type spanState struct {
	sp                              *model.Span // in d.out
	traceState, name, statusMessage []byte
	start                           int // its first attribute in the arena
	nAttrs, nEvents, nLinks         int // as sent, kept or not
}

func (d *wireDecoder) span(b []byte, sc *spanScope) error {
	// Decoded in place in the output, not copied there: a span is large.
	d.out = append(d.out, model.Span{Service: sc.service, Resource: sc.res, ScopeName: sc.name, ScopeVersion: sc.version})
	st := spanState{sp: &d.out[len(d.out)-1], start: len(d.arena)}
	d.events, d.links = d.events[:0], d.links[:0]
	if d.raws != nil {
		d.raws.beginSpan(d, b)
	}
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		if err := d.spanField(&f, &st); err != nil {
			return err
		}
	}
	sp := st.sp
	sp.TraceState, sp.Name, sp.StatusMessage = d.clipBytes(st.traceState), d.clipBytes(st.name), d.clipBytes(st.statusMessage)
	if kept := len(d.arena) - st.start; kept > 0 {
		sp.Attrs = model.Attrs(d.arena[st.start:len(d.arena):len(d.arena)])
		d.spanAttrs += kept
	}
	dropped := st.nAttrs - min(st.nAttrs, d.lim.MaxAttrs)
	d.stats.DroppedAttrs += dropped
	sp.DroppedAttributesCount = saturatingAdd(sp.DroppedAttributesCount, dropped)
	if st.nEvents > 0 {
		sp.Events = append(make([]model.Event, 0, len(d.events)), d.events...)
		d.stats.DroppedEvents += st.nEvents - len(d.events)
		sp.DroppedEventsCount = saturatingAdd(sp.DroppedEventsCount, st.nEvents-len(d.events))
	}
	if st.nLinks > 0 {
		sp.Links = append(make([]model.Link, 0, len(d.links)), d.links...)
		d.stats.DroppedLinks += st.nLinks - len(d.links)
		sp.DroppedLinksCount = saturatingAdd(sp.DroppedLinksCount, st.nLinks-len(d.links))
	}
	if len(sp.Events) == 0 {
		sp.Events = nil
	}
	if len(sp.Links) == 0 {
		sp.Links = nil
	}
	d.spansDone++
	if d.raws != nil {
		d.raws.endSpan(d, sp)
	}
	return nil
}

// spanField applies one field of a Span (field numbers of
// opentelemetry-proto's trace.proto).
func (d *wireDecoder) spanField(f *field, st *spanState) error {
	sp := st.sp
	var err error
	switch f.num {
	case 1:
		err = traceID(f, &sp.TraceID)
	case 2:
		err = spanID(f, &sp.SpanID)
	case 3:
		err = bytesField(f, &st.traceState)
	case 4:
		err = spanID(f, &sp.ParentSpanID)
	case 5:
		err = bytesField(f, &st.name)
	case 6:
		if err = f.want(protowire.VarintType); err == nil {
			sp.Kind = model.SpanKind(f.u)
		}
	case 7, 8:
		if err = f.want(protowire.Fixed64Type); err == nil {
			if f.num == 7 {
				sp.StartUnixNano = f.u
			} else {
				sp.EndUnixNano = f.u
			}
		}
	case 9:
		if err = f.want(protowire.BytesType); err != nil {
			return err
		}
		if st.nAttrs++; st.nAttrs > d.lim.MaxAttrs {
			return validKeyValue(f.b, 1)
		}
		err = d.keyValue(f.b, d.pushSpanAttr(&st.start))
	case 10, 12, 14:
		if err = f.want(protowire.VarintType); err == nil {
			switch f.num {
			case 10:
				sp.DroppedAttributesCount = uint32(f.u)
			case 12:
				sp.DroppedEventsCount = uint32(f.u)
			default:
				sp.DroppedLinksCount = uint32(f.u)
			}
		}
	case 11:
		if err = f.want(protowire.BytesType); err == nil {
			st.nEvents++
			err = d.event(f.b, st.nEvents <= d.lim.MaxEvents)
		}
	case 13:
		if err = f.want(protowire.BytesType); err == nil {
			st.nLinks++
			err = d.link(f.b, st.nLinks <= d.lim.MaxLinks)
		}
	case 15:
		if err = f.want(protowire.BytesType); err == nil {
			err = status(f.b, sp, &st.statusMessage)
		}
	case 16:
		if err = f.want(protowire.Fixed32Type); err == nil {
			sp.Flags = uint32(f.u)
		}
	}
	return err
}

// pushSpanAttr appends an empty attribute to the current span's (from
// *start in the arena), moving them to a new chunk when the arena is
// full, and returns it to be filled.
func (d *wireDecoder) pushSpanAttr(start *int) *model.Attr {
	if len(d.arena) == cap(d.arena) {
		have := len(d.arena) - *start
		// Size the chunk for the rest of the request at the rate seen so
		// far; a small one until a span has been read whole, so a guess
		// cannot cost megabytes on a request of many bare spans.
		want := 64
		if d.spansDone > 0 {
			perSpan := (d.spanAttrs + d.spansDone - 1) / d.spansDone // rounded up
			spans := d.spansTotal - d.spansDone
			if d.batch != nil {
				// A pooled chunk serves later requests: size it for the
				// whole of one like this.
				spans = d.spansTotal
			}
			want = perSpan * spans
		}
		var chunk []model.Attr
		if d.batch != nil {
			d.batch.keep(d.arena)
			chunk = d.batch.attrChunk(max(2*have+1, 16), want)
		} else {
			chunk = make([]model.Attr, 0, max(want, 2*have+1, 16))
		}
		d.arena = append(chunk, d.arena[*start:]...)
		*start = 0
	}
	d.arena = append(d.arena, model.Attr{})
	return &d.arena[len(d.arena)-1]
}

func status(b []byte, sp *model.Span, msg *[]byte) error {
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case 2:
			if err := bytesField(&f, msg); err != nil {
				return err
			}
		case 3:
			if err := f.want(protowire.VarintType); err != nil {
				return err
			}
			sp.StatusCode = model.StatusCode(f.u)
		}
	}
	return nil
}

// event decodes a Span.Event, keeping it when keep (under MaxEvents) and
// only checking it otherwise.
func (d *wireDecoder) event(b []byte, keep bool) error {
	var ev model.Event
	var name []byte
	d.scratch = d.scratch[:0]
	total := 0
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case 1:
			if err := f.want(protowire.Fixed64Type); err != nil {
				return err
			}
			ev.TimeUnixNano = f.u
		case 2:
			if err := bytesField(&f, &name); err != nil {
				return err
			}
		case 3:
			if err := d.eventAttr(&f, keep, &total); err != nil {
				return err
			}
		case 4:
			if err := f.want(protowire.VarintType); err != nil {
				return err
			}
		}
	}
	if keep {
		ev.Name = d.clipBytes(name)
		ev.Attrs = d.keptAttrs(total)
		d.events = append(d.events, ev)
	}
	return nil
}

// eventAttr is attr for events and links, which are only checked when
// they are over their own limit.
func (d *wireDecoder) eventAttr(f *field, keep bool, total *int) error {
	if keep {
		return d.attr(f, total)
	}
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	return validKeyValue(f.b, 1)
}

func (d *wireDecoder) link(b []byte, keep bool) error {
	var l model.Link
	var traceState []byte
	d.scratch = d.scratch[:0]
	total := 0
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		switch f.num {
		case 1:
			err = traceID(&f, &l.TraceID)
		case 2:
			err = spanID(&f, &l.SpanID)
		case 3:
			err = bytesField(&f, &traceState)
		case 4:
			err = d.eventAttr(&f, keep, &total)
		case 5:
			err = f.want(protowire.VarintType)
		case 6:
			err = f.want(protowire.Fixed32Type)
		}
		if err != nil {
			return err
		}
	}
	if keep {
		l.TraceState = d.clipBytes(traceState)
		l.Attrs = d.keptAttrs(total)
		d.links = append(d.links, l)
	}
	return nil
}

// bytesField keeps the contents of a length-delimited field.
func bytesField(f *field, dst *[]byte) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	*dst = f.b
	return nil
}

// traceID and spanID take an id of its length or none (all zero), as
// pdata does; any other length is an error pdata's path repairs.
func traceID(f *field, dst *model.TraceID) error { return idField(f, dst[:]) }

func spanID(f *field, dst *model.SpanID) error { return idField(f, dst[:]) }

func idField(f *field, dst []byte) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	switch len(f.b) {
	case 0:
		clear(dst)
	case len(dst):
		copy(dst, f.b)
	default:
		return fmt.Errorf("id of %d bytes, want %d", len(f.b), len(dst))
	}
	return nil
}

// maxStrBytes bounds the text kept in the string table.
const maxStrBytes = 256

// clipBytes is clipStr for text as sent, through the string table.
func (d *wireDecoder) clipBytes(b []byte) string {
	switch {
	case len(b) > d.lim.MaxValueBytes:
		return d.clipStr(string(b))
	case len(b) == 0:
		return ""
	case len(b) > maxStrBytes:
		return string(b)
	}
	slot := &d.strs[strSlot(b)]
	if *slot == string(b) { // compared in place, not copied
		return *slot
	}
	*slot = string(b)
	return *slot
}

// strSlot picks b's place in the string table (quickhash): cheaper than a
// map lookup, and a text that shares a slot with another only costs a copy.
func strSlot(b []byte) uint {
	return uint(quickhash.Bytes(b)) >> (64 - strTableBits)
}

// release returns d to the idle decoders without what it handed out.
func (d *wireDecoder) release() {
	d.out, d.arena, d.raws, d.batch = nil, nil, nil, nil
	d.spanAttrs, d.spansDone, d.composites = 0, 0, 0
	clear(d.scratch[:cap(d.scratch)])
	clear(d.events[:cap(d.events)])
	clear(d.links[:cap(d.links)])
	select {
	case idleDecoders <- d:
	default:
	}
}

// Kinds of AnyValue, after the oneof field that set it last.
const (
	valEmpty uint8 = iota
	valStr
	valBool
	valInt
	valDouble
	valArray
	valMap
	valBytes
)

// wireValue is an AnyValue as sent: u holds bool, int and double values,
// b the contents of strings, bytes, arrays and maps.
type wireValue struct {
	kind uint8
	u    uint64
	b    []byte
}

// keyValue converts an encoded KeyValue. A repeated value field merges
// into the one before, so its last oneof field wins.
func (d *wireDecoder) keyValue(b []byte, dst *model.Attr) error {
	key, v, ok := commonKeyValue(b)
	if !ok {
		var err error
		if key, v, err = parseKeyValue(b, 1, true); err != nil {
			return err
		}
	}
	dst.Key = d.clipBytes(key)
	d.setValue(&dst.Value, v)
	return nil
}

// commonKeyValue reads the KeyValue nearly every attribute is: a key and
// a value, each under 128 bytes, in either order (SDKs send the key
// first, some encoders the value), the value one string, int, bool or
// double field, nothing else. It is parseKeyValue for that shape without
// its loops over fields (the largest part of decoding an attribute); ok
// is false for any other shape.
func commonKeyValue(b []byte) (key []byte, v wireValue, ok bool) {
	const (
		keyTag   = 1<<3 | byte(protowire.BytesType)
		valueTag = 2<<3 | byte(protowire.BytesType)
	)
	if len(b) < 4 || b[1] >= 0x80 {
		return nil, v, false
	}
	at := 2 + int(b[1]) // the second field
	if at+2 > len(b) || b[at+1] >= 0x80 || at+2+int(b[at+1]) != len(b) {
		return nil, v, false
	}
	var val []byte
	switch {
	case b[0] == keyTag && b[at] == valueTag:
		key, val = b[2:at], b[at+2:]
	case b[0] == valueTag && b[at] == keyTag:
		key, val = b[at+2:], b[2:at]
	default:
		return nil, v, false
	}
	if len(val) < 2 {
		return nil, v, false
	}
	rest := val[1:]
	switch val[0] {
	case 1<<3 | byte(protowire.BytesType): // string_value
		if rest[0] >= 0x80 || 1+int(rest[0]) != len(rest) {
			return nil, v, false
		}
		return key, wireValue{kind: valStr, b: rest[1:]}, true
	case 2<<3 | byte(protowire.VarintType), 3<<3 | byte(protowire.VarintType): // bool_value, int_value
		u, n := protowire.ConsumeVarint(rest)
		if n != len(rest) {
			return nil, v, false
		}
		kind := valInt
		if val[0]>>3 == 2 {
			kind = valBool
		}
		return key, wireValue{kind: kind, u: u}, true
	case 4<<3 | byte(protowire.Fixed64Type): // double_value
		u, n := protowire.ConsumeFixed64(rest)
		if n != len(rest) {
			return nil, v, false
		}
		return key, wireValue{kind: valDouble, u: u}, true
	}
	return nil, v, false
}

// setValue converts v into dst, which is zero. In place: a Value
// returned, copied into its attribute and the attribute into the arena
// was a large part of decoding one.
func (d *wireDecoder) setValue(dst *model.Value, v wireValue) {
	switch v.kind {
	case valStr:
		dst.Type, dst.Str = model.TypeString, d.clipBytes(v.b)
	case valInt:
		dst.Type, dst.Int = model.TypeInt, int64(v.u)
	case valDouble:
		dst.Type, dst.Float = model.TypeDouble, math.Float64frombits(v.u)
	case valBool:
		dst.Type, dst.Bool = model.TypeBool, v.u != 0
	case valBytes:
		dst.Type = model.TypeBytes
		if len(v.b) > 0 {
			if len(v.b) > d.lim.MaxValueBytes {
				d.stats.TruncatedValues++
				v.b = v.b[:d.lim.MaxValueBytes]
			}
			dst.Bytes = append([]byte(nil), v.b...)
		}
	case valArray:
		d.composites++
		dst.Type, dst.Str = model.TypeArray, d.wireComposite(v)
	case valMap:
		d.composites++
		dst.Type, dst.Str = model.TypeMap, d.wireComposite(v)
	}
}

func validKeyValue(b []byte, depth int) error {
	// The common shape holds one scalar value: nothing nested to check,
	// at a depth the parser takes.
	if depth <= MaxNesting {
		if _, _, ok := commonKeyValue(b); ok {
			return nil
		}
	}
	_, _, err := parseKeyValue(b, depth, true)
	return err
}

// parseKeyValue reads a KeyValue whose value is at depth; with check, the
// value's nested arrays and maps are read whole (pdata decodes them all).
func parseKeyValue(b []byte, depth int, check bool) ([]byte, wireValue, error) {
	var key []byte
	var v wireValue
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return nil, v, err
		}
		b = rest
		switch f.num {
		case 1:
			err = bytesField(&f, &key)
		case 2:
			if err = f.want(protowire.BytesType); err == nil {
				err = parseAnyValue(f.b, &v, depth, check)
			}
		case 3: // key_strindex (profiles only)
			err = f.want(protowire.VarintType)
		}
		if err != nil {
			return nil, v, err
		}
	}
	return key, v, nil
}

// parseAnyValue merges an encoded AnyValue at depth into v.
func parseAnyValue(b []byte, v *wireValue, depth int, check bool) error {
	if depth > MaxNesting {
		return errLeftToPdata
	}
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		b = rest
		kind, typ := valueField(f.num)
		if typ < 0 {
			continue
		}
		if err := f.want(typ); err != nil {
			return err
		}
		if check {
			switch kind {
			case valArray:
				err = eachMessage(f.b, 1, func(e []byte) error {
					var ev wireValue
					return parseAnyValue(e, &ev, depth+1, true)
				})
			case valMap:
				err = eachMessage(f.b, 1, func(kv []byte) error { return validKeyValue(kv, depth+1) })
			}
			if err != nil {
				return err
			}
		}
		*v = wireValue{kind: kind, u: f.u, b: f.b}
	}
	return nil
}

// valueField maps an AnyValue field number to the kind it sets and its
// wire type (-1: not a value field).
func valueField(num protowire.Number) (uint8, protowire.Type) {
	switch num {
	case 1:
		return valStr, protowire.BytesType
	case 2:
		return valBool, protowire.VarintType
	case 3:
		return valInt, protowire.VarintType
	case 4:
		return valDouble, protowire.Fixed64Type
	case 5:
		return valArray, protowire.BytesType
	case 6:
		return valMap, protowire.BytesType
	case 7:
		return valBytes, protowire.BytesType
	case 8: // string_value_strindex (profiles): pdata has no type for it
		return valEmpty, protowire.VarintType
	}
	return 0, -1
}

// wireComposite renders an array or map value, already checked by
// parseAnyValue, as composite renders pdata's.
func (d *wireDecoder) wireComposite(v wireValue) string {
	w := jsonWriter{lim: d.lim}
	w.wire(v, 0)
	return d.compositeText(&w)
}

// mapEntry is one KeyValue of a map value.
type mapEntry struct {
	key []byte
	v   wireValue
}

// wire is value for a value as sent. A map's keys are sorted, and a key
// sent twice shows its first value each time (pdata's Map.Get).
func (w *jsonWriter) wire(v wireValue, depth int) {
	if w.full() {
		return
	}
	if (v.kind == valArray || v.kind == valMap) && depth >= w.lim.MaxDepth {
		w.cutDepth = true
		w.str(DepthMarker)
		return
	}
	switch v.kind {
	case valStr:
		w.str(string(v.b))
	case valInt:
		w.buf = strconv.AppendInt(w.buf, int64(v.u), 10)
	case valBool:
		w.buf = strconv.AppendBool(w.buf, v.u != 0)
	case valDouble:
		w.double(math.Float64frombits(v.u))
	case valBytes:
		w.bytes(v.b)
	case valArray:
		w.buf = append(w.buf, '[')
		n := 0
		_ = eachMessage(v.b, 1, func(e []byte) error {
			if w.full() {
				return errFull
			}
			if n > 0 {
				w.buf = append(w.buf, ',')
			}
			n++
			var ev wireValue
			_ = parseAnyValue(e, &ev, 1, false)
			w.wire(ev, depth+1)
			return nil
		})
		w.buf = append(w.buf, ']')
	case valMap:
		var entries []mapEntry
		_ = eachMessage(v.b, 1, func(kv []byte) error {
			key, ev, _ := parseKeyValue(kv, 1, false)
			entries = append(entries, mapEntry{key, ev})
			return nil
		})
		slices.SortStableFunc(entries, func(a, b mapEntry) int { return bytes.Compare(a.key, b.key) })
		w.buf = append(w.buf, '{')
		first := 0
		for i := range entries {
			if w.full() {
				break
			}
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.str(string(entries[i].key))
			w.buf = append(w.buf, ':')
			if !bytes.Equal(entries[first].key, entries[i].key) {
				first = i
			}
			w.wire(entries[first].v, depth+1)
		}
		w.buf = append(w.buf, '}')
	default:
		w.buf = append(w.buf, "null"...)
	}
}

var errFull = errors.New("value text full")

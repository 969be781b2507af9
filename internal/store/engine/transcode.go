package engine

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"unsafe"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/quickhash"
	"github.com/tracedx/tracedx/internal/store"
)

// Cutting the head into a block is the hottest background path, so it
// transcodes the head's encoded spans straight into Parquet rows: resource,
// events and links are already in block encoding and are copied as bytes,
// strings are interned, and nothing goes through model.Span.

// rawSpan is a parsed span whose variable parts are places in the
// buffer it was parsed from (the caller's src). Places, not slices: a
// rawSpan then holds no pointer, and filling, copying and clearing
// thousands of them per block cost no GC write barriers while a
// collection runs (near its memory limit the server collects much of the
// time).
type rawSpan struct {
	traceID                                               model.TraceID
	spanID, parent                                        model.SpanID
	flags                                                 uint32
	kind, status                                          byte
	start, end                                            uint64
	name, traceState, statusMsg, service, scope, scopeVer part
	resource, attrs, events, links                        part
	droppedAttrs, droppedEvents, droppedLinks             uint32
}

// part is where a field lies in the buffer a rawSpan was parsed from.
type part struct{ off, n uint32 }

func (p part) in(src []byte) []byte { return src[p.off : p.off+p.n] }

// spanDec is a decoder over the framed span at src[off:off+n], reading in
// src's coordinates so that the parts it finds are places in src.
func spanDec(src []byte, off, n int) dec { return dec{b: src[:off+n], off: off} }

func (d *dec) bstr() []byte {
	n := d.uvarint()
	if n > uint64(d.left()) {
		d.fail()
		return nil
	}
	return d.rawN(int(n))
}

func skipValue(d *dec) {
	switch model.ValueType(d.byte1()) {
	case model.TypeEmpty:
	case model.TypeString, model.TypeArray, model.TypeMap, model.TypeBytes:
		d.bstr()
	case model.TypeBool:
		d.byte1()
	case model.TypeInt:
		d.varint()
	case model.TypeDouble:
		d.rawN(8)
	default:
		d.fail()
	}
}

func skipAttrs(d *dec) {
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		d.bstr()
		skipValue(d)
	}
}

// partOf returns where the bytes fn consumes lie.
func (d *dec) partOf(fn func(d *dec)) part {
	before := d.off
	fn(d)
	if d.err != nil {
		return part{}
	}
	return part{uint32(before), uint32(d.off - before)}
}

// strPart reads a length-prefixed string and returns where it lies.
func (d *dec) strPart() part {
	n := d.uvarint()
	if n > uint64(d.left()) {
		d.fail()
		return part{}
	}
	p := part{uint32(d.off), uint32(n)}
	d.off += int(n)
	return p
}

// span returns the bytes consumed by fn.
func (d *dec) span(fn func(d *dec)) []byte {
	before := d.off
	fn(d)
	if d.err != nil {
		return nil
	}
	return d.b[before:d.off]
}

// parseRaw parses the framed span at src[off:off+n]; hint is as for
// parseRawHead.
func parseRaw(src []byte, off, n int, r *rawSpan, hint []byte) error {
	d := spanDec(src, off, n)
	parseRawPrefix(&d, r, hint)
	r.events = d.partOf(func(d *dec) {
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			d.varint()
			d.bstr()
			skipAttrs(d)
		}
	})
	r.links = d.partOf(func(d *dec) {
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			d.rawN(24)
			d.bstr()
			skipAttrs(d)
		}
	})
	r.droppedAttrs = uint32(d.uvarint())
	r.droppedEvents = uint32(d.uvarint())
	r.droppedLinks = uint32(d.uvarint())
	if d.err != nil {
		return fmt.Errorf("parse span: %w", d.err)
	}
	return nil
}

// parseRawPrefix parses the fields up to and including the span attributes
// (all the catalog needs).
func parseRawPrefix(d *dec, r *rawSpan, hint []byte) {
	parseRawHead(d, r, hint)
	r.attrs = d.partOf(skipAttrs)
}

// parseRawHead parses the fields up to and including the resource, leaving
// d at the span attributes. hint, when set, is the whole encoding of a
// resource likely to come next (spans of one process come in runs); bytes
// that start with it are that resource, found without walking it.
func parseRawHead(d *dec, r *rawSpan, hint []byte) {
	copy(r.traceID[:], d.rawN(16))
	copy(r.spanID[:], d.rawN(8))
	copy(r.parent[:], d.rawN(8))
	r.flags = uint32(d.uvarint())
	r.kind = d.byte1()
	r.status = d.byte1()
	r.start = d.uvarint()
	r.end = r.start + uint64(d.varint())
	r.name = d.strPart()
	r.traceState = d.strPart()
	r.statusMsg = d.strPart()
	r.service = d.strPart()
	r.scope = d.strPart()
	r.scopeVer = d.strPart()
	switch {
	case isResRef(d.b, d.off):
		// The resource of an earlier span of the run, in d.b.
		start, n := d.resRef()
		r.resource = part{uint32(start), uint32(n)}
	case len(hint) > 0 && bytes.HasPrefix(d.rest(), hint):
		r.resource = part{uint32(d.off), uint32(len(hint))}
		d.skip(len(hint))
	default:
		r.resource = d.partOf(skipAttrs)
	}
}

// parseRawCatalog parses only what the catalog needs of the framed span at
// src[off:off+n]; hint is as for parseRawHead.
func parseRawCatalog(src []byte, off, n int, r *rawSpan, hint []byte) error {
	d := spanDec(src, off, n)
	parseRawPrefix(&d, r, hint)
	if d.err != nil {
		return fmt.Errorf("parse span: %w", d.err)
	}
	return nil
}

// interner shares string allocations for the few distinct service and
// operation names, which outlive the rows (trace index, catalog).
type interner struct{ m map[string]string }

func (in *interner) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < 200_000 {
		in.m[s] = s
	}
	return s
}

// rawCatalog collects the block catalog from raw spans.
type rawCatalog struct {
	services  map[string]*seen
	ops       map[opKey]*seen
	attrs     [3]map[string]*rawAttr // by store.Scope
	keyCache  [3][64]keySlot         // by store.Scope, then quickhash of the key
	recentOps [16]opSlot
	nextOp    int
}

type opSlot struct {
	k     opKey
	o, sv *seen
}

type keySlot struct {
	key []byte
	a   *rawAttr
}

type rawAttr struct {
	seen
	values map[string]model.Value // by encoded value bytes
	// recent holds encoded values already in values (or not for the
	// catalog), by quickhash: methods, routes, systems and status codes
	// repeat from span to span, and finding them here costs no map lookup.
	recent [8][]byte
}

func newRawCatalog() *rawCatalog {
	c := &rawCatalog{services: map[string]*seen{}, ops: map[opKey]*seen{}}
	c.attrs[store.ScopeSpan] = map[string]*rawAttr{}
	c.attrs[store.ScopeResource] = map[string]*rawAttr{}
	return c
}

func (c *rawCatalog) addAttrs(scope store.Scope, enc []byte, t uint64) {
	d := dec{b: enc}
	c.addAttrsFrom(scope, &d, t)
}

// addAttrsFrom is addAttrs reading the encoded attributes from d, which it
// leaves after them (d.err set if they are malformed).
func (c *rawCatalog) addAttrsFrom(scope store.Scope, d *dec, t uint64) {
	m := c.attrs[scope]
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		k := d.bstr()
		vb := d.span(skipValue)
		if d.err != nil {
			return
		}
		// Spans of different kinds (server, client, database) interleave,
		// each with its own keys: a cache by the key's hash finds the
		// entry without the map for all of them.
		slot := &c.keyCache[scope][quickhash.Bytes(k)>>58]
		if slot.a == nil || !bytes.Equal(slot.key, k) {
			a := m[string(k)]
			if a == nil {
				a = &rawAttr{values: map[string]model.Value{}}
				m[string(k)] = a
				// Time ranges are widened to the block's at export.
				a.add(t)
			}
			slot.key, slot.a = append(slot.key[:0], k...), a
		}
		a := slot.a
		if len(a.values) >= maxValuesPerKey || len(vb) > maxValueLen+4 {
			continue
		}
		r := &a.recent[quickhash.Bytes(vb)>>61]
		if bytes.Equal(*r, vb) {
			continue
		}
		*r = append((*r)[:0], vb...)
		if _, ok := a.values[string(vb)]; ok {
			continue
		}
		switch model.ValueType(vb[0]) {
		case model.TypeBytes, model.TypeArray, model.TypeMap:
			continue
		}
		vd := dec{b: vb}
		a.values[string(vb)] = decValue(&vd)
	}
}

func (c *rawCatalog) add(src []byte, r *rawSpan, svc, name string, newRes bool) {
	c.addOp(r, svc, name)
	c.addAttrs(store.ScopeSpan, r.attrs.in(src), r.start)
	// Spans of one process share their resource; only a resource new to
	// the block needs looking at (export widens resource attributes to the
	// block's time range).
	if newRes {
		c.addAttrs(store.ScopeResource, r.resource.in(src), r.start)
	}
}

// addOp records the span's service and operation.
func (c *rawCatalog) addOp(r *rawSpan, svc, name string) {
	k := opKey{svc, name, model.SpanKind(r.kind)}
	// A few operations make up most spans; their strings are interned, so
	// comparing against recent ones is cheaper than hashing.
	var hit *opSlot
	for i := range c.recentOps {
		if c.recentOps[i].o != nil && c.recentOps[i].k == k {
			hit = &c.recentOps[i]
			break
		}
	}
	if hit == nil {
		sv := c.services[svc]
		if sv == nil {
			sv = &seen{}
			c.services[svc] = sv
		}
		o := c.ops[k]
		if o == nil {
			o = &seen{}
			c.ops[k] = o
		}
		hit = &c.recentOps[c.nextOp%len(c.recentOps)]
		c.nextOp++
		*hit = opSlot{k: k, o: o, sv: sv}
	}
	hit.sv.add(r.start)
	hit.o.add(r.start)
}

func (c *rawCatalog) export(minT, maxT uint64) *catalogJSON {
	for _, scope := range []store.Scope{store.ScopeSpan, store.ScopeResource} {
		for _, a := range c.attrs[scope] {
			a.add(minT)
			a.add(maxT)
		}
	}
	out := &catalogJSON{}
	for n, s := range c.services {
		out.Services = append(out.Services, namedSeen{n, *s})
	}
	for k, s := range c.ops {
		out.Operations = append(out.Operations, opSeen{k.Service, k.Name, k.Kind, *s})
	}
	for _, scope := range []store.Scope{store.ScopeSpan, store.ScopeResource} {
		for k, a := range c.attrs[scope] {
			as := attrSeen{Scope: scope, Key: k, Seen: a.seen}
			for _, v := range a.values {
				as.Values = append(as.Values, v)
			}
			out.Attrs = append(out.Attrs, as)
		}
	}
	return out
}

// addRawTrace appends one trace given as framed encoded spans (the head's
// buffer). Same contract as addTrace.
func (b *blockBuilder) addRawTrace(buf []byte, n int) error {
	raws := b.raws[:0]
	err := forEachFramedAt(buf, func(off, n int) error {
		raws = append(raws, rawSpan{})
		r := &raws[len(raws)-1]
		if err := parseRaw(buf, off, n, r, b.lastRes); err != nil {
			return err
		}
		// Spans of one process come in runs: the next span's resource is
		// likely this one, found without walking its attributes. A copy,
		// as buf is written over for the next trace.
		if res := r.resource.in(buf); !bytes.Equal(res, b.lastRes) {
			b.lastRes = append(b.lastRes[:0], res...)
		}
		return nil
	})
	b.raws = raws
	if err != nil {
		return err
	}
	if len(raws) == 0 {
		return nil
	}
	id := raws[0].traceID
	if b.any && bytes.Compare(id[:], b.last[:]) <= 0 {
		return fmt.Errorf("block builder: trace %s out of order", id)
	}
	b.any, b.last = true, id
	raws = b.sortByStart(raws)

	// Summary, exactly as model.Summarize computes it.
	ts := model.TraceSummary{TraceID: id}
	var rootStart uint64
	clear(b.pos)
	for i := range raws {
		b.pos[raws[i].spanID] = i
		// The trace start as model.Summarize defines it (see addTrace).
		if ts.StartUnixNano == 0 || raws[i].start < ts.StartUnixNano {
			ts.StartUnixNano = raws[i].start
		}
	}
	traceStart := ts.StartUnixNano
	for i := range raws {
		r := &raws[i]
		svc := b.in.str(r.service.in(buf))
		name := b.in.str(r.name.in(buf))
		if ts.StartUnixNano == 0 || r.start < ts.StartUnixNano {
			ts.StartUnixNano = r.start
		}
		if r.end > ts.EndUnixNano {
			ts.EndUnixNano = r.end
		}
		if r.parent.IsZero() && (ts.RootName == "" || r.start < rootStart) {
			ts.RootService, ts.RootName, rootStart = svc, name, r.start
		}
		ts.SpanCount++
		isErr := model.StatusCode(r.status) == model.StatusError
		if isErr {
			ts.ErrorCount++
		}
		found := false
		for j := range ts.Services {
			if ts.Services[j].Name == svc {
				ts.Services[j].SpanCount++
				if isErr {
					ts.Services[j].ErrorCount++
				}
				found = true
				break
			}
		}
		if !found {
			st := model.ServiceStats{Name: svc, SpanCount: 1}
			if isErr {
				st.ErrorCount = 1
			}
			ts.Services = append(ts.Services, st)
		}

		row, err := b.nextRow()
		if err != nil {
			return err
		}
		row.TraceID = r.traceID
		row.SpanID = r.spanID
		if !r.parent.IsZero() {
			if j, ok := b.pos[r.parent]; ok && raws[j].spanID != r.spanID {
				row.ParentIdx = int32(j + 1)
			} else {
				row.ParentID = b.keep(r.parent[:])
			}
		}
		row.TraceStart = int64(traceStart)
		row.StartOff = int64(r.start - traceStart)
		row.Duration = int64(r.end - r.start)
		row.Service = svc
		row.Name = name
		row.Kind = int32(r.kind)
		row.Status = int32(r.status)
		row.StatusMsg = b.keepStr(r.statusMsg.in(buf))
		row.TraceState = b.keepStr(r.traceState.in(buf))
		row.Flags = int32(r.flags)
		row.ScopeName = b.keepStr(r.scope.in(buf))
		row.ScopeVer = b.keepStr(r.scopeVer.in(buf))
		var newRes bool
		row.Resource, newRes = b.internBytes(r.resource.in(buf))
		if r.attrs.n > 1 {
			b.transcodeAttrs(r.attrs.in(buf), row)
		}
		if r.events.n > 1 {
			row.Events = b.keep(r.events.in(buf))
		}
		if r.links.n > 1 {
			row.Links = b.keep(r.links.in(buf))
		}
		if r.droppedAttrs|r.droppedEvents|r.droppedLinks != 0 {
			e := enc{}
			e.uvarint(uint64(r.droppedAttrs))
			e.uvarint(uint64(r.droppedEvents))
			e.uvarint(uint64(r.droppedLinks))
			row.Dropped = e.b
		}
		if b.meta.MinTime == 0 || r.start < b.meta.MinTime {
			b.meta.MinTime = r.start
		}
		if r.end > b.meta.MaxTime {
			b.meta.MaxTime = r.end
		}
		if b.rcat != nil {
			b.rcat.add(buf, r, svc, name, newRes)
		}
	}
	b.idx.add(b.nrows, &ts)
	b.nrows += uint32(len(raws))
	b.meta.Spans += int64(len(raws))
	b.meta.Traces++
	if len(b.rows) >= flushRowsAt {
		return b.flushRows()
	}
	return nil
}

// sortByStart orders a trace's spans by start, ties in arrival order.
// Spans arrive roughly in end order (children first), so most traces need
// sorting; a rawSpan is ~300 bytes, and moving small keys, then each span
// once, costs far less than a sort moving the spans themselves.
func (b *blockBuilder) sortByStart(raws []rawSpan) []rawSpan {
	if slices.IsSortedFunc(raws, func(x, y rawSpan) int { return cmp.Compare(x.start, y.start) }) {
		return raws
	}
	keys := b.order[:0]
	for i := range raws {
		keys = append(keys, startKey{raws[i].start, int32(i)})
	}
	slices.SortFunc(keys, func(x, y startKey) int {
		if c := cmp.Compare(x.start, y.start); c != 0 {
			return c
		}
		return cmp.Compare(x.i, y.i)
	})
	sorted := b.sorted[:0]
	for _, k := range keys {
		sorted = append(sorted, raws[k.i])
	}
	b.order = keys
	// The two buffers swap roles, so neither is allocated again.
	b.raws, b.sorted = sorted, raws
	return sorted
}

type startKey struct {
	start uint64
	i     int32
}

// internBytes shares identical resource encodings between rows.
// It reports whether p was not seen before in this block.
// Spans of one process come in runs, so the last result is compared
// first: a comparison instead of hashing a few hundred bytes.
func (b *blockBuilder) internBytes(p []byte) ([]byte, bool) {
	if b.lastIntern != nil && bytes.Equal(p, b.lastIntern) {
		return b.lastIntern, false
	}
	v, ok := b.resIntern[string(p)]
	if !ok {
		v = append([]byte(nil), p...)
		if len(b.resIntern) < 100_000 {
			b.resIntern[string(v)] = v
		}
	}
	b.lastIntern = v
	return v, !ok
}

// keep copies p into the builder's byte arena: rows buffered for the
// Parquet writer point into it until flushRows, which resets it (the
// writer copies values into its own column buffers). A full arena is
// replaced by one twice its size, so after the first flushes one array
// holds a whole batch of rows and is reused from then on. The arena's
// fill is an offset rather than its slice's length, so keeping a value
// writes no slice header into the builder (a GC write barrier per value
// while a collection runs).
func (b *blockBuilder) keep(p []byte) []byte {
	if len(b.arena)-b.arenaUsed < len(p) {
		b.arena = make([]byte, max(len(p), 2*len(b.arena), 256<<10))
		b.arenaUsed = 0
	}
	n := b.arenaUsed
	b.arenaUsed += copy(b.arena[n:], p)
	return b.arena[n:b.arenaUsed:b.arenaUsed]
}

// keepStr is keep for a string column: the row's string lives in the
// arena until flushRows. Values that only go to Parquet (URLs, statements,
// scopes) need neither a lasting allocation nor interning, and interning
// high-cardinality ones (url.path, db.query.text) cost a failed map lookup,
// an allocation and a map insert per span.
func (b *blockBuilder) keepStr(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	k := b.keep(p)
	return unsafe.String(unsafe.SliceData(k), len(k))
}

// dedicatedIndex looks up the dedicated column of attribute key k. It
// runs for every attribute of every span converted; comparing k with the
// few dedicated keys of its length (at most five) is cheaper than hashing
// it, and spans of different kinds interleave too much for a cache by
// position to hit.
func dedicatedIndex(k []byte) (int, bool) {
	if len(k) >= len(dedicatedByLen) {
		return -1, false
	}
	for _, j := range dedicatedByLen[len(k)] {
		if string(k) == dedicated[j].key {
			return j, true
		}
	}
	return -1, false
}

var dedicatedByLen = func() [][]int {
	var out [][]int
	for j, d := range dedicated {
		for len(out) <= len(d.key) {
			out = append(out, nil)
		}
		out[len(d.key)] = append(out[len(d.key)], j)
	}
	return out
}()

// transcodeAttrs moves dedicated-key values into their columns and keeps
// the rest, in order, in the blob (placeholders keep the order exact).
func (b *blockBuilder) transcodeAttrs(attrs []byte, row *spanRow) {
	d := dec{b: attrs}
	n := d.count()
	// A local encoder, so that its appends write no slice header into
	// the builder (a GC write barrier each while a collection runs).
	e := &enc{b: b.enc.b[:0]}
	e.uvarint(uint64(n))
	for i := 0; i < n && d.err == nil; i++ {
		k := d.bstr()
		vb := d.span(skipValue)
		if d.err != nil {
			break
		}
		if j, ok := dedicatedIndex(k); ok {
			if b.placeRaw(row, j, vb) {
				e.byte1(byte(j + 1))
				continue
			}
			row.Spill = true
			row.SpillKeys |= spillBit(j)
		}
		e.byte1(attrGeneric)
		e.bytes(k)
		e.raw(vb)
	}
	row.Attrs = b.keep(e.b)
	b.enc.b = e.b
}

func (b *blockBuilder) placeRaw(row *spanRow, j int, vb []byte) bool {
	c := &dedicated[j]
	d := dec{b: vb}
	t := model.ValueType(d.byte1())
	if c.str != nil {
		if t != model.TypeString {
			return false
		}
		s := d.bstr()
		p := c.str(row)
		if len(s) == 0 || *p != "" || d.err != nil {
			return false
		}
		*p = b.keepStr(s)
		return true
	}
	if t != model.TypeInt {
		return false
	}
	v := d.varint()
	p := c.num(row)
	if v == 0 || *p != 0 || d.err != nil {
		return false
	}
	*p = v
	return true
}

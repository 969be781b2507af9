package engine

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/tracedx/tracedx/internal/freelist"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/quickhash"
	"github.com/tracedx/tracedx/internal/store"
)

// Level-0 blocks keep spans in the head's own encoding instead of Parquet.
// A head cut only groups the already-encoded spans by trace, compresses
// them in chunks with S2 and writes them out with the same index and
// meta.json as a Parquet block; Parquet is written once per span, when
// compaction converts level-0 blocks (see convertL0). The block directory
// holds data.l0 instead of data.parquet:
//
//	"TDXL0\x02"
//	chunk*          S2 block encoding of the framed spans of whole traces,
//	                traces in trace-id order (a trace larger than a chunk
//	                gets a chunk of its own)
//	footer          uvarint #chunks; per chunk: uvarint compressed length,
//	                uvarint raw length, u32 CRC-32C of the compressed bytes,
//	                uvarint #traces, then per trace uvarint framed length
//	u32 footer length | "TDXL0\x02" ("TDXL0\x01" before resource references)
//
// Trace i of the index is the i-th trace of the file, so the footer needs
// no trace ids.

const (
	fileL0       = "data.l0"
	formatL0     = "l0"
	l0ChunkBytes = 256 << 10
)

// l0Magic marks files whose spans may hold resource references (see
// resRun); l0MagicV1 files were written before them and read the same way,
// as their spans never start a resource with a reference. An older build
// refuses a file with the new magic instead of misreading its spans.
var (
	l0Magic   = []byte("TDXL0\x02")
	l0MagicV1 = []byte("TDXL0\x01")
)

// l0Data is the in-memory location table of a level-0 block.
type l0Data struct {
	chunkOff []int64  // file offset of each chunk, plus the end of the last
	chunkRaw []uint32 // decompressed size
	chunkCRC []uint32
	firstTr  []uint32 // first trace position of each chunk, plus #traces
	traceOff []uint32 // offset of each trace in its decompressed chunk
	traceLen []uint32
}

func (l *l0Data) chunkOf(i int) int {
	return sort.Search(len(l.firstTr)-1, func(c int) bool { return l.firstTr[c+1] > uint32(i) })
}

func readL0Footer(f BlockFile, ntraces int) (*l0Data, error) {
	size := f.Size()
	tail := int64(4 + len(l0Magic))
	if size < int64(len(l0Magic))+tail {
		return nil, fmt.Errorf("level-0 data too short: %w", errCorrupt)
	}
	t := make([]byte, tail)
	if _, err := f.ReadAt(t, size-tail); err != nil {
		return nil, fmt.Errorf("read level-0 trailer: %w", err)
	}
	if !bytes.Equal(t[4:], l0Magic) && !bytes.Equal(t[4:], l0MagicV1) {
		return nil, fmt.Errorf("level-0 trailer: bad magic: %w", errCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(t))
	if n > size-tail-int64(len(l0Magic)) {
		return nil, fmt.Errorf("level-0 footer length %d: %w", n, errCorrupt)
	}
	foot := make([]byte, n)
	if _, err := f.ReadAt(foot, size-tail-n); err != nil {
		return nil, fmt.Errorf("read level-0 footer: %w", err)
	}
	d := dec{b: foot}
	nc := d.count()
	l := &l0Data{
		chunkOff: make([]int64, 0, nc+1), chunkRaw: make([]uint32, 0, nc),
		chunkCRC: make([]uint32, 0, nc), firstTr: make([]uint32, 0, nc+1),
		traceOff: make([]uint32, 0, ntraces), traceLen: make([]uint32, 0, ntraces),
	}
	off := int64(len(l0Magic))
	for c := 0; c < nc && d.err == nil; c++ {
		l.chunkOff = append(l.chunkOff, off)
		off += int64(d.uvarint())
		l.chunkRaw = append(l.chunkRaw, uint32(d.uvarint()))
		l.chunkCRC = append(l.chunkCRC, binary.LittleEndian.Uint32(d.rawN(4)))
		l.firstTr = append(l.firstTr, uint32(len(l.traceOff)))
		k := d.count()
		var pos uint32
		for j := 0; j < k && d.err == nil; j++ {
			ln := uint32(d.uvarint())
			l.traceOff = append(l.traceOff, pos)
			l.traceLen = append(l.traceLen, ln)
			pos += ln
		}
		if pos > l.chunkRaw[c] {
			d.fail()
		}
	}
	l.chunkOff = append(l.chunkOff, off)
	l.firstTr = append(l.firstTr, uint32(len(l.traceOff)))
	if d.err != nil {
		return nil, fmt.Errorf("level-0 footer: %w", d.err)
	}
	if len(l.traceOff) != ntraces || off != size-tail-n {
		return nil, fmt.Errorf("level-0 footer describes %d traces / %d bytes, index %d traces / file %d bytes: %w",
			len(l.traceOff), off, ntraces, size-tail-n, errCorrupt)
	}
	return l, nil
}

// chunk reads and decompresses chunk c into dst (reused when big enough).
func (b *block) l0Chunk(c int, zbuf, dst []byte) (raw, z []byte, err error) {
	l := b.l0
	n := int(l.chunkOff[c+1] - l.chunkOff[c])
	if cap(zbuf) < n {
		zbuf = make([]byte, n)
	}
	zbuf = zbuf[:n]
	if _, err := b.file.ReadAt(zbuf, l.chunkOff[c]); err != nil && !(err == io.EOF && n == 0) {
		return nil, zbuf, fmt.Errorf("block %s: read chunk %d: %w", b.id, c, err)
	}
	if crc32.Checksum(zbuf, crcTable) != l.chunkCRC[c] {
		return nil, zbuf, fmt.Errorf("block %s: chunk %d checksum mismatch: %w", b.id, c, errCorrupt)
	}
	if cap(dst) < int(l.chunkRaw[c]) {
		dst = make([]byte, l.chunkRaw[c])
	}
	raw, err = s2.Decode(dst[:cap(dst)], zbuf)
	if err != nil {
		return nil, zbuf, fmt.Errorf("block %s: decompress chunk %d: %w", b.id, c, err)
	}
	if len(raw) != int(l.chunkRaw[c]) {
		return nil, zbuf, fmt.Errorf("block %s: chunk %d has %d bytes, want %d: %w", b.id, c, len(raw), l.chunkRaw[c], errCorrupt)
	}
	return raw, zbuf, nil
}

// chunkBufs are the compressed and decompressed buffers of a background
// chunk read (read-back, completion, span-filter scans of level-0 data).
// At the maximum rate read-back reads thousands of chunks a second, and
// new buffers for each were 7 % of the bytes the server allocated; idle
// ones wait in a freelist, which outlives collections.
type chunkBufs struct{ z, raw []byte }

var idleChunkBufs = freelist.New[*chunkBufs](4)

// maxIdleChunkBytes keeps buffers of a chunk grown by one huge trace out
// of the freelist; a chunk is usually l0ChunkBytes.
const maxIdleChunkBytes = 4 * l0ChunkBytes

func getChunkBufs() *chunkBufs {
	if cb, ok := idleChunkBufs.Get(); ok {
		return cb
	}
	return new(chunkBufs)
}

// putChunkBufs hands cb back; nothing may use its buffers afterwards.
func putChunkBufs(cb *chunkBufs) {
	if cap(cb.z) > maxIdleChunkBytes {
		cb.z = nil
	}
	if cap(cb.raw) > maxIdleChunkBytes {
		cb.raw = nil
	}
	idleChunkBufs.Put(cb)
}

func (b *block) l0Trace(raw []byte, i int) []byte {
	l := b.l0
	return raw[l.traceOff[i] : l.traceOff[i]+l.traceLen[i]]
}

// l0ReadTrace appends the spans of trace position i to out (a new slice
// when nil), ordered by start time among themselves, reading through the
// query chunk cache when query is set.
func (b *block) l0ReadTrace(i int, query bool, out []model.Span) ([]model.Span, error) {
	c := b.l0.chunkOf(i)
	var raw []byte
	var err error
	decode := decodeFramed
	if query {
		// A query's chunk is never written again (cached chunks are
		// shared read-only; one too large to cache is this read's own), so
		// the spans' strings point into it instead of into a copy of the
		// trace's bytes: that copy was most of what a trace by id
		// allocated, and queries' garbage is what GC assists charge them
		// for on a server whose heap sits at its limit. A query's spans
		// live as long as its response, so pinning the chunk costs
		// nothing; background readers keep their spans for analysis and
		// would hold whole chunks for a few traces, so they copy.
		raw, err = b.l0QueryChunk(c)
		decode = decodeFramedOwned
	} else {
		// decodeFramed copies what it keeps: the chunk's buffers go back
		// to the freelist once the trace is decoded.
		cb := getChunkBufs()
		raw, cb.z, err = b.l0Chunk(c, cb.z, cb.raw)
		if raw != nil {
			cb.raw = raw
		}
		defer putChunkBufs(cb)
	}
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = make([]model.Span, 0, b.idx.nspans[i])
	}
	n := len(out)
	out, err = decode(b.l0Trace(raw, i), out)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", b.id, err)
	}
	sortSpans(out[n:])
	return out, nil
}

// l0Scan calls fn with the framed spans of every trace position that want
// accepts (nil: all), in trace-id order, reading only chunks that hold
// one. buf is only valid during the call.
func (b *block) l0Scan(ctx context.Context, want func(i int) bool, fn func(i int, buf []byte) error) error {
	l := b.l0
	cb := getChunkBufs()
	zbuf, raw := cb.z, cb.raw
	defer func() {
		cb.z, cb.raw = zbuf, raw
		putChunkBufs(cb)
	}()
	for c := 0; c+1 < len(l.chunkOff); c++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		lo, hi := int(l.firstTr[c]), int(l.firstTr[c+1])
		if want != nil {
			any := false
			for i := lo; i < hi && !any; i++ {
				any = want(i)
			}
			if !any {
				continue
			}
		}
		var err error
		raw, zbuf, err = b.l0Chunk(c, zbuf, raw)
		if err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			if want != nil && !want(i) {
				continue
			}
			if err := fn(i, b.l0Trace(raw, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *block) l0ScanTraces(ctx context.Context, want func(i int) bool, fn func(i int, spans []model.Span) error) error {
	return b.l0Scan(ctx, want, func(i int, buf []byte) error {
		spans, err := decodeFramed(buf, make([]model.Span, 0, b.idx.nspans[i]))
		if err != nil {
			return fmt.Errorf("block %s: %w", b.id, err)
		}
		sortSpans(spans)
		return fn(i, spans)
	})
}

// l0ScanMatches is scanMatches for a level-0 block: each span is parsed in
// place, a partial span with the fields the plan needs is built, and
// store.MatchSpan decides.
func (b *block) l0ScanMatches(ctx context.Context, p *scanPlan) ([]bool, error) {
	match := make([]bool, len(b.idx.ids))
	resCache := map[string]model.Attrs{}
	var r rawSpan
	var sp model.Span
	var in interner
	in.m = map[string]string{}
	err := b.l0Scan(ctx, nil, func(i int, buf []byte) error {
		return forEachFramedAt(buf, func(off, n int) error {
			if match[i] {
				return nil
			}
			if err := parseRawCatalog(buf, off, n, &r, nil); err != nil {
				return fmt.Errorf("block %s: %w", b.id, err)
			}
			sp = model.Span{}
			if p.service {
				sp.Service = in.str(r.service.in(buf))
			}
			if p.name {
				sp.Name = in.str(r.name.in(buf))
			}
			sp.Kind = model.SpanKind(r.kind)
			sp.StatusCode = model.StatusCode(r.status)
			sp.StartUnixNano, sp.EndUnixNano = r.start, r.end
			if p.attrs {
				d := dec{b: r.attrs.in(buf)}
				sp.Attrs = decAttrs(&d)
			}
			if p.resource {
				res := r.resource.in(buf)
				ra, ok := resCache[string(res)]
				if !ok {
					d := dec{b: res}
					ra = decAttrs(&d)
					resCache[string(res)] = ra
				}
				sp.Resource = ra
			}
			if store.MatchSpan(p.q, &sp) {
				match[i] = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return match, nil
}

// l0Builder writes a level-0 block from head traces given in increasing
// trace-id order.
type l0Builder struct {
	bw    BlockWriter
	data  io.WriteCloser
	n     int64 // bytes written to data
	raw   []byte
	z     []byte
	bufs  *chunkBufs // where raw and z came from; nil once handed back
	foot  enc
	lens  []uint32 // framed lengths of the traces in raw
	idx   indexBuilder
	meta  blockMeta
	nrows uint32

	in      interner
	names   [128]opName // by quickhash of the span name
	rcat    *rawCatalog
	seenRs  map[string]struct{}
	lastRes []byte
	r       rawSpan

	nchunks int

	// keep lists the traces whose chunks go to onKept (with the refs of
	// those traces in the decompressed chunk) as they are written.
	keep     map[model.TraceID]bool
	onKept   func(c *coldChunk, ids []model.TraceID, refs []coldRef)
	keptIDs  []model.TraceID
	keptRefs []coldRef
}

func newL0Builder(ctx context.Context, st BlockStorage, id string) (*l0Builder, error) {
	bw, err := st.Create(ctx, id)
	if err != nil {
		return nil, err
	}
	data, err := bw.File(fileL0)
	if err != nil {
		bw.Abort()
		return nil, err
	}
	lb := &l0Builder{
		bw: bw, data: data,
		meta:   blockMeta{Version: blockFormatVersion, ID: id, Level: 0, Format: formatL0},
		in:     interner{m: map[string]string{}},
		rcat:   newRawCatalog(),
		seenRs: map[string]struct{}{},
		bufs:   getChunkBufs(),
	}
	lb.raw, lb.z = lb.bufs.raw[:0], lb.bufs.z[:0]
	if err := lb.write(l0Magic); err != nil {
		lb.abort()
		return nil, err
	}
	return lb, nil
}

func (lb *l0Builder) write(p []byte) error {
	n, err := lb.data.Write(p)
	lb.n += int64(n)
	if err != nil {
		return fmt.Errorf("write level-0 data: %w", err)
	}
	return nil
}

func (lb *l0Builder) abort() {
	lb.data.Close()
	lb.bw.Abort()
	lb.releaseBufs()
}

// releaseBufs hands the chunk buffers back once the last chunk is
// written (data.Write does not keep them); later calls do nothing.
func (lb *l0Builder) releaseBufs() {
	if lb.bufs == nil {
		return
	}
	lb.bufs.raw, lb.bufs.z = lb.raw, lb.z
	putChunkBufs(lb.bufs)
	lb.bufs, lb.raw, lb.z = nil, nil, nil
}

// add appends one head trace: its framed spans as they are, its running
// summary to the index and its spans to the block catalog.
func (lb *l0Builder) add(t *headTrace) error {
	if len(lb.raw) > 0 && len(lb.raw)+len(t.buf) > l0ChunkBytes {
		if err := lb.flushChunk(); err != nil {
			return err
		}
	}
	src := t.buf
	err := forEachFramedAt(src, func(off, n int) error {
		// One pass over the span: the catalog reads the span attributes
		// where the parse stops, instead of the parse skipping them first.
		d := spanDec(src, off, n)
		r := &lb.r
		parseRawHead(&d, r, lb.lastRes) // lastRes is a copy: stays whole while t.buf changes
		if d.err != nil {
			return fmt.Errorf("parse span: %w", d.err)
		}
		// Spans of one process come in runs: compare with the last
		// resource before hashing.
		res := r.resource.in(src)
		seen := bytes.Equal(lb.lastRes, res)
		if !seen {
			_, seen = lb.seenRs[string(res)]
			if !seen && len(lb.seenRs) < 100_000 {
				lb.seenRs[string(res)] = struct{}{}
			}
			lb.lastRes = append(lb.lastRes[:0], res...)
		}
		svc, name := lb.opName(r.service.in(src), r.name.in(src))
		lb.rcat.addOp(r, svc, name)
		lb.rcat.addAttrsFrom(store.ScopeSpan, &d, r.start)
		if d.err != nil {
			return fmt.Errorf("parse span attributes: %w", d.err)
		}
		if !seen {
			// Spans of one process share their resource; only a resource
			// new to the block needs looking at.
			lb.rcat.addAttrs(store.ScopeResource, res, r.start)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("head trace %s: %w", t.sum.TraceID, err)
	}
	ts := &t.sum
	lb.idx.add(lb.nrows, ts)
	lb.nrows += uint32(t.n)
	lb.meta.Spans += int64(t.n)
	lb.meta.Traces++
	if lb.meta.MinTime == 0 || ts.StartUnixNano < lb.meta.MinTime {
		lb.meta.MinTime = ts.StartUnixNano
	}
	if ts.EndUnixNano > lb.meta.MaxTime {
		lb.meta.MaxTime = ts.EndUnixNano
	}
	if lb.keep[ts.TraceID] {
		lb.keptIDs = append(lb.keptIDs, ts.TraceID)
		lb.keptRefs = append(lb.keptRefs, coldRef{off: uint32(len(lb.raw)), n: uint32(len(t.buf)), spans: t.n})
	}
	lb.raw = append(lb.raw, t.buf...)
	lb.lens = append(lb.lens, uint32(len(t.buf)))
	return nil
}

// opName is a span's service and name, interned.
type opName struct{ svc, name string }

// opName interns a span's service and name. A few operations make up most
// spans, so a slot by the name's hash usually holds both already, found
// without the interner's two map lookups.
func (lb *l0Builder) opName(svc, name []byte) (string, string) {
	o := &lb.names[quickhash.Bytes(name)>>57]
	if o.name != string(name) || o.svc != string(svc) {
		o.svc, o.name = lb.in.str(svc), lb.in.str(name)
	}
	return o.svc, o.name
}

func (lb *l0Builder) flushChunk() error {
	if len(lb.lens) == 0 {
		return nil
	}
	lb.z = s2.Encode(lb.z[:cap(lb.z)], lb.raw)
	lb.foot.uvarint(uint64(len(lb.z)))
	lb.foot.uvarint(uint64(len(lb.raw)))
	lb.foot.b = binary.LittleEndian.AppendUint32(lb.foot.b, crc32.Checksum(lb.z, crcTable))
	lb.foot.uvarint(uint64(len(lb.lens)))
	for _, n := range lb.lens {
		lb.foot.uvarint(uint64(n))
	}
	lb.nchunks++
	lb.raw, lb.lens = lb.raw[:0], lb.lens[:0]
	if len(lb.keptIDs) > 0 {
		// An exact-size copy: the chunk outlives the builder's buffer.
		c := &coldChunk{data: append([]byte(nil), lb.z...), live: len(lb.keptIDs)}
		for i := range lb.keptRefs {
			lb.keptRefs[i].c = c
		}
		lb.onKept(c, lb.keptIDs, lb.keptRefs)
		lb.keptIDs, lb.keptRefs = lb.keptIDs[:0], lb.keptRefs[:0]
	}
	return lb.write(lb.z)
}

// finish writes the footer, index and meta.json and commits the block.
func (lb *l0Builder) finish() (blockMeta, error) {
	fail := func(err error) (blockMeta, error) {
		lb.abort()
		return blockMeta{}, err
	}
	if err := lb.flushChunk(); err != nil {
		return fail(err)
	}
	lb.releaseBufs()
	var foot enc
	foot.uvarint(uint64(lb.nchunks))
	foot.raw(lb.foot.b)
	foot.b = binary.LittleEndian.AppendUint32(foot.b, uint32(len(foot.b)))
	foot.raw(l0Magic)
	if err := lb.write(foot.b); err != nil {
		return fail(err)
	}
	if err := lb.data.Close(); err != nil {
		return fail(err)
	}
	lb.meta.DataBytes = lb.n
	idx, err := lb.idx.x.marshal()
	if err != nil {
		return fail(fmt.Errorf("encode index: %w", err))
	}
	lb.meta.Catalog = lb.rcat.export(lb.meta.MinTime, lb.meta.MaxTime)
	if err := commitBlock(lb.bw, &lb.meta, idx); err != nil {
		return fail(err)
	}
	return lb.meta, nil
}

// open opens the block just committed, from the meta and index in memory
// (reading them back would cost a JSON parse of the catalog per cut).
func (lb *l0Builder) open(ctx context.Context, st BlockStorage) (*block, error) {
	return openBlockData(ctx, st, &block{id: lb.meta.ID, opened: time.Now(), meta: lb.meta, idx: lb.idx.x.exact()})
}

// l0Cursor streams the traces of a level-0 block in trace-id order, one
// decompressed chunk at a time.
type l0Cursor struct {
	b    *block
	c, i int // chunk loaded (-1: none), next trace position
	raw  []byte
	// zbuf is the compressed read buffer, shared by the cursors of one
	// merge: only raw must live from one read to the next. A conversion of
	// up to l0MaxInputs inputs runs when a burst of ingest ends, when
	// memory is tightest; chunk buffers were 21-23 MB of the live heap in
	// profiles then, a quarter of it compressed copies no longer needed.
	zbuf *[]byte
	id   model.TraceID
	buf  []byte // framed spans of the current trace
	n    int
}

// next moves to the next trace; false at the end or on error.
func (cu *l0Cursor) next() (bool, error) {
	l := cu.b.l0
	if cu.i >= len(cu.b.idx.ids) {
		cu.raw, cu.buf = nil, nil // the merge may run long after this input ends
		return false, nil
	}
	for cu.c < 0 || uint32(cu.i) >= l.firstTr[cu.c+1] {
		cu.c++
		var err error
		if cu.raw, *cu.zbuf, err = cu.b.l0Chunk(cu.c, *cu.zbuf, cu.raw); err != nil {
			return false, err
		}
	}
	cu.id = cu.b.idx.ids[cu.i]
	cu.buf = cu.b.l0Trace(cu.raw, cu.i)
	cu.n = int(cu.b.idx.nspans[cu.i])
	cu.i++
	return true, nil
}

// l0MaxInputs bounds the level-0 blocks converted together (each input
// holds one decompressed chunk while they are merged).
const l0MaxInputs = 64

// convertOnce converts the oldest level-0 blocks into one Parquet block
// when enough of them accumulated: half a compacted block's worth of
// spans, more than one conversion takes, or a block older than one
// compaction interval (so level-0 data, twice the size of Parquet, lives
// at most about two intervals). Converting in big batches makes the
// outputs big, so they are rarely merged again. An output holds at most
// maxSpans spans (unless one input has more). Before converting it waits
// while memory is tight, until waitUntil at most (zero: no wait). Callers
// hold bgMu.
func (e *Engine) convertOnce(ctx context.Context, force bool, maxSpans int64, waitUntil time.Time) (bool, error) {
	e.mu.RLock()
	var l0s []*block
	for _, b := range e.blocks {
		if b.l0 != nil && e.owns(b) {
			l0s = append(l0s, b)
		}
	}
	// Ids are time-ordered: cut order.
	sort.Slice(l0s, func(i, j int) bool { return l0s[i].id < l0s[j].id })
	pick, total := e.pickBlocks(l0s, l0MaxInputs, maxSpans)
	run := len(pick) > 0 && (force || total >= e.opts.BlockMaxSpans/2 || len(pick) < len(l0s) ||
		time.Since(pick[0].opened) >= e.opts.CompactInterval)
	if !run {
		pick = nil
	}
	acquireAll(pick)
	e.mu.RUnlock()
	if pick == nil {
		return false, nil
	}
	defer releaseAll(pick)
	// Waiting under bgMu holds up only retention, which runs on the same
	// goroutine as compaction anyway.
	e.waitForMemory(ctx, waitUntil)
	start := time.Now()
	nbs, err := e.convertL0(ctx, pick)
	if err != nil {
		return false, err
	}
	err = e.replaceBlocks(ctx, pick, nbs...)
	e.compactions.Add(1)
	e.log.Info("converted level-0 blocks", "inputs", len(pick), "outputs", len(nbs), "spans", nbs[0].meta.Spans, "bytes", nbs[0].diskBytes(), "took", time.Since(start))
	return true, err
}

type l0Heap []*l0Cursor

func (h l0Heap) Len() int           { return len(h) }
func (h l0Heap) Less(i, j int) bool { return bytes.Compare(h[i].id[:], h[j].id[:]) < 0 }
func (h l0Heap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *l0Heap) Push(x any)        { *h = append(*h, x.(*l0Cursor)) }
func (h *l0Heap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// convertL0 k-way merges level-0 blocks by trace id into one level-1
// Parquet block, transcoding each trace's encoded spans (fragments of a
// trace from several inputs joined) with the same code the head cut used
// to: no Parquet is read. The catalog is the union of the inputs', unless
// traces are being dropped (sampling): then it is built from the traces
// kept, or it would carry every dropped trace's attribute values and
// outweigh the few spans kept. Dropped traces go to an unkept-tier block
// or nowhere (tierSplit).
func (e *Engine) convertL0(ctx context.Context, in []*block) ([]*block, error) {
	bb, err := e.newCompactedBuilder(ctx, in, 1)
	if err != nil {
		return nil, err
	}
	if pending, _ := e.drops.stats(); pending > 0 {
		bb.cat = newCatalog()
	} else {
		bb.rcat = nil
	}
	split := &tierSplit{e: e, main: bb}
	fail := func(err error) ([]*block, error) {
		split.abort()
		return nil, err
	}
	h := &l0Heap{}
	var zbuf []byte
	for _, b := range in {
		cu := &l0Cursor{b: b, c: -1, zbuf: &zbuf}
		ok, err := cu.next()
		if err != nil {
			return fail(fmt.Errorf("compaction read: %w", err))
		}
		if ok {
			heap.Push(h, cu)
		}
	}
	var buf []byte
	for k := 0; h.Len() > 0; k++ {
		if k%128 == 127 {
			if err := ctx.Err(); err != nil {
				return fail(err)
			}
			e.opts.YieldBackground(ctx) // background work: let ingest and queries go first
		}
		top := (*h)[0]
		id := top.id
		buf = buf[:0]
		n := 0
		for h.Len() > 0 && (*h)[0].id == id {
			cu := (*h)[0]
			buf = append(buf, cu.buf...)
			n += cu.n
			ok, err := cu.next()
			if err != nil {
				return fail(fmt.Errorf("compaction read: %w", err))
			}
			if ok {
				heap.Fix(h, 0)
			} else {
				heap.Pop(h)
			}
		}
		out, reason, err := split.route(ctx, id, "")
		if err != nil {
			return fail(err)
		}
		if out == nil {
			continue
		}
		if err := out.addRawTrace(buf, n); err != nil {
			return fail(fmt.Errorf("convert trace %s: %w", id, err))
		}
		out.idx.setSampled(reason)
	}
	return split.finish(ctx)
}

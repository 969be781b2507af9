package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// A block is three files:
//
//	data.parquet  spans, one row per span, sorted by (trace id, start)
//	index.bin     zstd-compressed trace index: per trace (sorted by id) its
//	              first row and row count, start/end, error count, root
//	              service/operation, per-service span counts and the
//	              tail-sampling decision
//	meta.json     time range, counts, level and the block's catalog;
//	              written last, so its presence marks a complete block
//
// The index is loaded into memory: it answers "is trace X here, which
// rows" with a binary search and serves search-by-summary without reading
// span data.

const (
	fileData  = "data.parquet"
	fileIndex = "index.bin"
	fileMeta  = "meta.json"

	blockFormatVersion = 1
)

// rowsPerRowGroup, pageBufferSize and dictMaxBytes are variables so that
// tests can write blocks with many row groups, pages and dictionary
// fallbacks.
var (
	rowsPerRowGroup int64 = 1 << 17
	pageBufferSize        = 64 << 10
	// dictMaxBytes bounds a column chunk's dictionary: past it the chunk's
	// next pages are plain. A dictionary that large holds values repeated
	// too rarely to pay for their inserts (a hash and a copy each) and
	// indexes; url.full in the harness's spans, whose dictionary saves
	// 45 % of the column, stays under it (128 KiB did not).
	dictMaxBytes int64 = 256 << 10
)

type blockMeta struct {
	Version    int          `json:"version"`
	ID         string       `json:"id"`
	MinTime    uint64       `json:"min_time_unix_nano"`
	MaxTime    uint64       `json:"max_time_unix_nano"`
	Spans      int64        `json:"spans"`
	Traces     int64        `json:"traces"`
	Level      int          `json:"level"` // 0: cut from the head; n: n compactions deep
	DataBytes  int64        `json:"data_bytes"`
	IndexBytes int64        `json:"index_bytes"`
	Catalog    *catalogJSON `json:"catalog,omitempty"`
	// Format is "" for Parquet (data.parquet) and "l0" for a level-0
	// block in the head's encoding (data.l0, see l0.go).
	Format string `json:"format,omitempty"`
	// Unkept marks a block of traces tail sampling did not keep: it
	// expires after Options.UnkeptRetention rather than Retention.
	Unkept bool `json:"unkept,omitempty"`
	// Sources are the blocks this one was compacted from. A crash after
	// this block is committed but before they are deleted leaves both; Open
	// then deletes the sources, so no span is seen twice.
	Sources []string `json:"sources,omitempty"`
}

// blockIndex is the in-memory trace index of a block, as parallel arrays
// (far fewer pointers for the GC than a slice of structs with slices).
type blockIndex struct {
	ids      []model.TraceID
	firstRow []uint32
	nspans   []uint32
	start    []uint64
	end      []uint64
	errs     []uint32
	rootSvc  []uint32 // index into strs, or noStr
	rootName []uint32
	svcOff   []uint32 // len(ids)+1, into svcs
	svcs     []svcStat
	sampled  []uint32 // the sampling decision's reason, into strs, or noStr; nil: none recorded
	strs     []string
	byStart  []uint32 // trace positions, newest start first
}

type svcStat struct{ name, count, errs uint32 }

const noStr = ^uint32(0)

func (x *blockIndex) find(id model.TraceID) int {
	i := sort.Search(len(x.ids), func(i int) bool { return bytes.Compare(x.ids[i][:], id[:]) >= 0 })
	if i < len(x.ids) && x.ids[i] == id {
		return i
	}
	return -1
}

func (x *blockIndex) str(i uint32) string {
	if i == noStr || int(i) >= len(x.strs) {
		return ""
	}
	return x.strs[i]
}

func (x *blockIndex) strIdx(s string) uint32 {
	// strs is small (services and root names); linear search is fine and
	// it runs once per query.
	for i, v := range x.strs {
		if v == s {
			return uint32(i)
		}
	}
	return noStr
}

// summary rebuilds the per-block summary of trace position i.
func (x *blockIndex) summary(i int) model.TraceSummary {
	ts := model.TraceSummary{
		TraceID:       x.ids[i],
		RootService:   x.str(x.rootSvc[i]),
		RootName:      x.str(x.rootName[i]),
		StartUnixNano: x.start[i],
		EndUnixNano:   x.end[i],
		SpanCount:     int(x.nspans[i]),
		ErrorCount:    int(x.errs[i]),
	}
	for _, s := range x.svcs[x.svcOff[i]:x.svcOff[i+1]] {
		ts.Services = append(ts.Services, model.ServiceStats{Name: x.str(s.name), SpanCount: int(s.count), ErrorCount: int(s.errs)})
	}
	return ts
}

// sampledOf returns the sampling decision recorded for trace position i.
func (x *blockIndex) sampledOf(i int) string { return x.str(x.sampledIdx(i)) }

func (x *blockIndex) sampledIdx(i int) uint32 {
	if i >= len(x.sampled) {
		return noStr
	}
	return x.sampled[i]
}

func (x *blockIndex) hasService(i int, svc uint32) bool {
	for _, s := range x.svcs[x.svcOff[i]:x.svcOff[i+1]] {
		if s.name == svc {
			return true
		}
	}
	return false
}

// exact copies an index built in memory into exact-size arrays, ready
// for queries: the block lives for minutes and must not keep the builder
// (arrays grown by append, up to twice their length, and its buffers)
// reachable. A sampling column without a decision is left out, as
// unmarshalIndex leaves it.
func (x *blockIndex) exact() *blockIndex {
	c := &blockIndex{
		ids: slices.Clone(x.ids), firstRow: slices.Clone(x.firstRow), nspans: slices.Clone(x.nspans),
		start: slices.Clone(x.start), end: slices.Clone(x.end), errs: slices.Clone(x.errs),
		rootSvc: slices.Clone(x.rootSvc), rootName: slices.Clone(x.rootName),
		svcOff: slices.Clone(x.svcOff), svcs: slices.Clone(x.svcs), strs: slices.Clone(x.strs),
	}
	if slices.ContainsFunc(x.sampled, func(r uint32) bool { return r != noStr }) {
		c.sampled = slices.Clone(x.sampled)
	}
	if len(c.svcOff) == 0 {
		c.svcOff = []uint32{0}
	}
	c.sortByStart()
	return c
}

// indexBuilder accumulates index entries while a block is written.
type indexBuilder struct {
	x      blockIndex
	strMap map[string]uint32
}

func (b *indexBuilder) intern(s string) uint32 {
	if b.strMap == nil {
		b.strMap = map[string]uint32{}
	}
	if i, ok := b.strMap[s]; ok {
		return i
	}
	i := uint32(len(b.x.strs))
	b.x.strs = append(b.x.strs, s)
	b.strMap[s] = i
	return i
}

func (b *indexBuilder) add(firstRow uint32, ts *model.TraceSummary) {
	x := &b.x
	if len(x.svcOff) == 0 {
		x.svcOff = append(x.svcOff, 0)
	}
	x.ids = append(x.ids, ts.TraceID)
	x.firstRow = append(x.firstRow, firstRow)
	x.nspans = append(x.nspans, uint32(ts.SpanCount))
	x.start = append(x.start, ts.StartUnixNano)
	x.end = append(x.end, ts.EndUnixNano)
	x.errs = append(x.errs, uint32(ts.ErrorCount))
	rs, rn := noStr, noStr
	if ts.RootName != "" || ts.RootService != "" {
		rs, rn = b.intern(ts.RootService), b.intern(ts.RootName)
	}
	x.rootSvc = append(x.rootSvc, rs)
	x.rootName = append(x.rootName, rn)
	for _, s := range ts.Services {
		x.svcs = append(x.svcs, svcStat{b.intern(s.Name), uint32(s.SpanCount), uint32(s.ErrorCount)})
	}
	x.svcOff = append(x.svcOff, uint32(len(x.svcs)))
	x.sampled = append(x.sampled, noStr)
}

// setSampled records the sampling decision about the trace added last.
func (b *indexBuilder) setSampled(reason string) {
	if reason != "" && len(b.x.sampled) > 0 {
		b.x.sampled[len(b.x.sampled)-1] = b.intern(reason)
	}
}

// indexMagic starts the current index format; indexMagicV2 the one before
// the sampling decision was recorded (read as "no decision").
var (
	indexMagic   = []byte("TDXI\x03")
	indexMagicV2 = []byte("TDXI\x02")
)

func (x *blockIndex) marshal() ([]byte, error) {
	e := enc{}
	e.raw(indexMagic)
	e.uvarint(uint64(len(x.strs)))
	for _, s := range x.strs {
		e.str(s)
	}
	e.uvarint(uint64(len(x.ids)))
	// Starts are stored relative to the earliest one (shorter varints);
	// first rows are not stored at all: they are running sums of counts.
	var base uint64
	for i := range x.start {
		if i == 0 || x.start[i] < base {
			base = x.start[i]
		}
	}
	e.uvarint(base)
	for i := range x.ids {
		e.raw(x.ids[i][:])
		e.uvarint(uint64(x.nspans[i]))
		e.uvarint(x.start[i] - base)
		e.varint(int64(x.end[i] - x.start[i]))
		e.uvarint(uint64(x.errs[i]))
		e.uvarint(uint64(x.rootSvc[i] + 1))
		e.uvarint(uint64(x.rootName[i] + 1))
		svcs := x.svcs[x.svcOff[i]:x.svcOff[i+1]]
		e.uvarint(uint64(len(svcs)))
		for _, s := range svcs {
			e.uvarint(uint64(s.name))
			e.uvarint(uint64(s.count))
			e.uvarint(uint64(s.errs))
		}
		e.uvarint(uint64(x.sampledIdx(i) + 1))
	}
	// The encoder's history is twice its window: with the default 8 MiB
	// window every index larger than one zstd block (a cut of a few
	// thousand traces) allocated 16 MiB, which at high rates stood out in
	// the live heap. Indexes are ids and small numbers, with no long-range
	// matches to lose. A fresh encoder each time: a cached one would stay
	// in the live heap between cuts.
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(1<<20), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("index encoder: %w", err)
	}
	defer zw.Close()
	return zw.EncodeAll(e.b, nil), nil
}

var zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))

func unmarshalIndex(p []byte) (*blockIndex, error) {
	raw, err := zdec.DecodeAll(p, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress index: %w", err)
	}
	v2 := bytes.HasPrefix(raw, indexMagicV2)
	if !v2 && !bytes.HasPrefix(raw, indexMagic) {
		return nil, fmt.Errorf("index: bad magic: %w", errCorrupt)
	}
	d := dec{b: raw[len(indexMagic):]}
	x := &blockIndex{}
	ns := d.count()
	x.strs = make([]string, ns)
	for i := range x.strs {
		x.strs[i] = d.str()
	}
	n := d.count()
	x.ids = make([]model.TraceID, n)
	x.firstRow = make([]uint32, n)
	x.nspans = make([]uint32, n)
	x.start = make([]uint64, n)
	x.end = make([]uint64, n)
	x.errs = make([]uint32, n)
	x.rootSvc = make([]uint32, n)
	x.rootName = make([]uint32, n)
	x.svcOff = make([]uint32, n+1)
	base := d.uvarint()
	var row uint32
	for i := 0; i < n && d.err == nil; i++ {
		copy(x.ids[i][:], d.rawN(16))
		x.firstRow[i] = row
		x.nspans[i] = uint32(d.uvarint())
		row += x.nspans[i]
		x.start[i] = base + d.uvarint()
		x.end[i] = x.start[i] + uint64(d.varint())
		x.errs[i] = uint32(d.uvarint())
		x.rootSvc[i] = uint32(d.uvarint()) - 1
		x.rootName[i] = uint32(d.uvarint()) - 1
		k := d.count()
		for j := 0; j < k; j++ {
			x.svcs = append(x.svcs, svcStat{uint32(d.uvarint()), uint32(d.uvarint()), uint32(d.uvarint())})
		}
		x.svcOff[i+1] = uint32(len(x.svcs))
		if !v2 {
			// Allocated at the first decision: most blocks (sampling
			// off, level 0) record none.
			if r := uint32(d.uvarint()) - 1; r != noStr {
				if x.sampled == nil {
					x.sampled = slices.Repeat([]uint32{noStr}, n)
				}
				x.sampled[i] = r
			}
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("index: %w", d.err)
	}
	x.sortByStart()
	return x, nil
}

func (x *blockIndex) sortByStart() {
	x.byStart = make([]uint32, len(x.ids))
	for i := range x.byStart {
		x.byStart[i] = uint32(i)
	}
	sort.Slice(x.byStart, func(a, b int) bool { return x.start[x.byStart[a]] > x.start[x.byStart[b]] })
}

// blockBuilder streams traces (in increasing trace-id order) into a new
// block.
type blockBuilder struct {
	bw    BlockWriter
	data  io.WriteCloser
	cw    *countingWriter
	w     *parquet.GenericWriter[spanRow]
	rw    *rowWriter
	rows  []spanRow
	nrows uint32
	idx   indexBuilder
	meta  blockMeta
	cat   *catalog
	enc   enc
	last  model.TraceID
	any   bool
	pos   map[model.SpanID]int

	// raw (transcoding) path
	raws       []rawSpan
	sorted     []rawSpan  // raws in start order (see sortByStart)
	order      []startKey // sortByStart's keys
	lastRes    []byte     // the last span's resource (a copy): parseRaw's hint
	lastIntern []byte     // internBytes' last result
	in         interner
	resIntern  map[string][]byte
	rcat       *rawCatalog
	arena      []byte // see keep
	arenaUsed  int
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var zstdCodec = newPageCodec()

// writerOptions configure block writers. Page bounds (min/max per page in
// the column index) are written for the columns the span-filter scan
// prunes pages by (boundedColumns) and skipped for the others: rows are
// sorted by trace id and found through the block index, and computing
// bounds of every column is a sizeable part of writing. Page headers
// carry no statistics: no reader looks at them (the column index has the
// bounds), and computing them walked every page's values a second time.
func writerOptions() []parquet.WriterOption {
	opts := []parquet.WriterOption{
		parquet.Compression(zstdCodec),
		parquet.MaxRowsPerRowGroup(rowsPerRowGroup),
		parquet.PageBufferSize(pageBufferSize),
		parquet.KeyValueMetadata(pageBoundsKey, strings.Join(boundedColumns, ",")),
		parquet.DataPageStatistics(false),
		parquet.DictionaryMaxBytes(dictMaxBytes),
	}
	for _, path := range parquet.SchemaOf(spanRow{}).Columns() {
		if len(path) == 1 && slices.Contains(boundedColumns, path[0]) {
			continue
		}
		opts = append(opts, parquet.SkipPageBounds(path...))
	}
	return opts
}

// boundedColumns have page bounds (see prunePages): an integer and a
// dictionary-encoded string, cheap to bound.
var boundedColumns = []string{"service", "duration"}

// pageBoundsKey names, in a block file's key/value metadata, the columns
// with page bounds. Without bounds parquet-go still writes some (zeros for
// integers), so a reader must know which it may trust: none in blocks
// written before the key.
const pageBoundsKey = "tracedx.page_bounds"

func newBlockBuilder(ctx context.Context, st BlockStorage, id string, level int) (*blockBuilder, error) {
	bw, err := st.Create(ctx, id)
	if err != nil {
		return nil, err
	}
	data, err := bw.File(fileData)
	if err != nil {
		bw.Abort()
		return nil, err
	}
	cw := &countingWriter{w: data}
	w := parquet.NewGenericWriter[spanRow](cw, writerOptions()...)
	return &blockBuilder{
		bw: bw, data: data, cw: cw, w: w, rw: newRowWriter(w, rowsPerRowGroup),
		meta: blockMeta{Version: blockFormatVersion, ID: id, Level: level},
		cat:  newCatalog(),
		pos:  map[model.SpanID]int{},
		in:   interner{m: map[string]string{}},

		resIntern: map[string][]byte{},
		rcat:      newRawCatalog(),
	}, nil
}

// flushRowsAt is how many rows the builder buffers before writing them to
// the Parquet writer, whole traces or not.
const flushRowsAt = 4096

// nextRow appends a zero row and returns it, writing the buffered rows out
// first when flushRowsAt are buffered, also in the middle of a trace: the
// rows of one trace of 200,000 spans (~1 KiB each) held 200 MB, and the
// copies of the slice's growth as much again, while the head and the
// detectors held that trace too.
func (b *blockBuilder) nextRow() (*spanRow, error) {
	if len(b.rows) >= flushRowsAt {
		if err := b.flushRows(); err != nil {
			return nil, err
		}
	}
	b.rows = append(b.rows, spanRow{})
	return &b.rows[len(b.rows)-1], nil
}

func (b *blockBuilder) flushRows() error {
	if len(b.rows) == 0 {
		return nil
	}
	if err := b.rw.write(b.rows); err != nil {
		return fmt.Errorf("write block rows: %w", err)
	}
	clear(b.rows)
	b.rows = b.rows[:0]
	// The rows are gone; the arena's current array may be written over.
	// (Earlier arrays were dropped when it grew.)
	b.arenaUsed = 0
	return nil
}

func (b *blockBuilder) abort() {
	b.data.Close()
	b.bw.Abort()
}

// finish writes index and meta and commits the block.
func (b *blockBuilder) finish() (blockMeta, error) {
	fail := func(err error) (blockMeta, error) {
		b.abort()
		return blockMeta{}, err
	}
	if err := b.flushRows(); err != nil {
		return fail(err)
	}
	if err := b.w.Close(); err != nil {
		return fail(fmt.Errorf("close parquet writer: %w", err))
	}
	if err := b.data.Close(); err != nil {
		return fail(err)
	}
	b.meta.DataBytes = b.cw.n
	idx, err := b.idx.x.marshal()
	if err != nil {
		return fail(fmt.Errorf("encode index: %w", err))
	}
	b.meta.Catalog = b.cat.export()
	if b.rcat == nil {
		// Converted from level-0 blocks: their catalogs were merged into cat.
	} else if rc := b.rcat.export(b.meta.MinTime, b.meta.MaxTime); len(rc.Services) > 0 {
		b.meta.Catalog.Services = append(b.meta.Catalog.Services, rc.Services...)
		b.meta.Catalog.Operations = append(b.meta.Catalog.Operations, rc.Operations...)
		b.meta.Catalog.Attrs = append(b.meta.Catalog.Attrs, rc.Attrs...)
	}
	if err := commitBlock(b.bw, &b.meta, idx); err != nil {
		return fail(err)
	}
	return b.meta, nil
}

// commitBlock writes a finished block's index, then its meta.json (the
// file that makes a block complete), and commits it. The caller aborts the
// builder on error.
func commitBlock(bw BlockWriter, meta *blockMeta, idx []byte) error {
	if err := writeFile(bw, fileIndex, idx); err != nil {
		return err
	}
	meta.IndexBytes = int64(len(idx))
	mj, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encode meta: %w", err)
	}
	if err := writeFile(bw, fileMeta, mj); err != nil {
		return err
	}
	return bw.Commit()
}

func writeFile(bw BlockWriter, name string, p []byte) error {
	f, err := bw.File(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(p); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Close()
}

// block is an open, immutable block.
type block struct {
	id      string
	meta    blockMeta
	idx     *blockIndex
	file    BlockFile
	pf      *parquet.File // Parquet blocks
	l0      *l0Data       // level-0 blocks
	opened  time.Time     // when this process opened it (age of level-0 blocks)
	readers sync.Pool
	// traceReaders are the *traceReader of trace reads (traceread.go).
	traceReaders sync.Pool
	// refs counts users; the engine's block list holds one reference, each
	// query holds one while it reads. The file closes when it drops to 0.
	refs atomic.Int32
}

func openBlock(ctx context.Context, st BlockStorage, id string) (*block, error) {
	return openBlockWith(ctx, st, id, func(mj []byte, m *blockMeta) error { return json.Unmarshal(mj, m) })
}

// openBlockWith is openBlock with decodeMeta decoding meta.json.
func openBlockWith(ctx context.Context, st BlockStorage, id string, decodeMeta func([]byte, *blockMeta) error) (*block, error) {
	mj, err := st.ReadAll(ctx, id, fileMeta)
	if err != nil {
		return nil, err
	}
	b := &block{id: id, opened: time.Now()}
	if err := decodeMeta(mj, &b.meta); err != nil {
		return nil, fmt.Errorf("block %s meta: %w", id, err)
	}
	if b.meta.Version != blockFormatVersion {
		return nil, fmt.Errorf("block %s: unsupported format version %d", id, b.meta.Version)
	}
	ib, err := st.ReadAll(ctx, id, fileIndex)
	if err != nil {
		return nil, err
	}
	if b.idx, err = unmarshalIndex(ib); err != nil {
		return nil, fmt.Errorf("block %s: %w", id, err)
	}
	return openBlockData(ctx, st, b)
}

// openBlockData opens the data file of a block whose meta and index are
// loaded.
func openBlockData(ctx context.Context, st BlockStorage, b *block) (*block, error) {
	id := b.id
	if b.meta.Format == formatL0 {
		f, err := st.Open(ctx, id, fileL0)
		if err != nil {
			return nil, err
		}
		if b.l0, err = readL0Footer(f, len(b.idx.ids)); err != nil {
			f.Close()
			return nil, fmt.Errorf("block %s: %w", id, err)
		}
		if k, ok := f.(blockio.TailKeeper); ok {
			// The footer starts where the chunks end. Best effort.
			_ = k.KeepTail(ctx, b.l0.chunkOff[len(b.l0.chunkOff)-1])
		}
		b.file = f
		b.refs.Store(1)
		return b, nil
	} else if b.meta.Format != "" {
		return nil, fmt.Errorf("block %s: unknown data format %q", id, b.meta.Format)
	}
	f, err := st.Open(ctx, id, fileData)
	if err != nil {
		return nil, err
	}
	opts := []parquet.FileOption{parquet.SkipBloomFilters(true)}
	k, remote := f.(blockio.TailKeeper)
	if remote {
		// The magic at the start is a request of its own, one more round
		// trip per block opened; the one at the end is still checked.
		opts = append(opts, parquet.SkipMagicBytes(true))
	}
	pf, err := parquet.OpenFile(f, f.Size(), opts...)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("block %s: open parquet: %w", id, err)
	}
	if remote {
		if off := pageIndexOffset(pf); off > 0 {
			// Best effort: without it the next open fetches the tail.
			_ = k.KeepTail(ctx, off)
		}
	}
	b.file, b.pf = f, pf
	b.refs.Store(1)
	// Catalog is merged by the engine at load; no need to keep it around.
	return b, nil
}

// pageIndexOffset is where a Parquet file's page index starts (0: it has
// none): from there to the end is what opening the file reads.
func pageIndexOffset(pf *parquet.File) int64 {
	var off int64
	for _, rg := range pf.Metadata().RowGroups {
		for _, c := range rg.Columns {
			for _, o := range []int64{c.ColumnIndexOffset, c.OffsetIndexOffset} {
				if o > 0 && (off == 0 || o < off) {
					off = o
				}
			}
		}
	}
	return off
}

func (b *block) acquire() { b.refs.Add(1) }

func (b *block) release() {
	if b.refs.Add(-1) == 0 {
		tracePages.dropBlock(b)
		l0Chunks.dropBlock(b)
		b.file.Close()
	}
}

func (b *block) reader() *parquet.GenericReader[spanRow] {
	if r, ok := b.readers.Get().(*parquet.GenericReader[spanRow]); ok {
		return r
	}
	return parquet.NewGenericReader[spanRow](b.pf)
}

// readTrace returns the spans of trace position i for a query.
func (b *block) readTrace(i int) ([]model.Span, error) { return b.readTraceFor(i, true) }

// readTraceOnce is readTrace for background work, whose reads must not
// push out the level-0 chunks queries just read.
func (b *block) readTraceOnce(i int) ([]model.Span, error) { return b.readTraceFor(i, false) }

func (b *block) readTraceFor(i int, query bool) ([]model.Span, error) {
	if b.l0 != nil {
		return b.l0ReadTrace(i, query, nil)
	}
	rows := make([]spanRow, b.idx.nspans[i])
	if err := b.readParquetRows(int64(b.idx.firstRow[i]), rows); err != nil {
		return nil, err
	}
	b.fillTrace(rows, i)
	return rowsToSpans(rows, nil)
}

// fillTrace sets the per-trace fields kept in the index rather than in the
// Parquet file.
func (b *block) fillTrace(rows []spanRow, i int) {
	for k := range rows {
		rows[k].TraceID = b.idx.ids[i]
		rows[k].TraceStart = int64(b.idx.start[i])
	}
}

// rowsToSpans converts the rows of one trace.
func rowsToSpans(rows []spanRow, out []model.Span) ([]model.Span, error) {
	for i := range rows {
		out = append(out, model.Span{})
		if err := rowToSpan(&rows[i], &out[len(out)-1], len(rows), func(k int) model.SpanID { return rows[k].SpanID }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// rowToSpan converts one row of a trace of nrows rows; idOf gives the span
// id of the trace's k-th row (parents are stored as row indexes).
func rowToSpan(r *spanRow, s *model.Span, nrows int, idOf func(k int) model.SpanID) error {
	if err := fromRow(r, s); err != nil {
		return fmt.Errorf("decode row: %w", err)
	}
	if p := r.ParentIdx; p > 0 {
		if int(p) > nrows {
			return fmt.Errorf("decode row: parent index %d out of range: %w", p, errCorrupt)
		}
		s.ParentSpanID = idOf(int(p) - 1)
	} else if len(r.ParentID) == 8 {
		copy(s.ParentSpanID[:], r.ParentID)
	}
	return nil
}

// forEachTrace streams every trace of the block in trace-id order.
func (b *block) forEachTrace(ctx context.Context, fn func(spans []model.Span) error) error {
	return b.scanTraces(ctx, nil, func(_ int, spans []model.Span) error { return fn(spans) })
}

// scanTraces reads the block sequentially and calls fn for each trace
// position that want accepts (nil: all), skipping span decoding for the
// others.
func (b *block) scanTraces(ctx context.Context, want func(i int) bool, fn func(i int, spans []model.Span) error) error {
	if b.l0 != nil {
		return b.l0ScanTraces(ctx, want, fn)
	}
	return b.scanRows(ctx, func(i int, rows []spanRow) error {
		if want != nil && !want(i) {
			return nil
		}
		spans, err := rowsToSpans(rows, nil)
		if err != nil {
			return fmt.Errorf("block %s: %w", b.id, err)
		}
		return fn(i, spans)
	})
}

// scanRows reads the block sequentially and calls fn with the rows of each
// trace (trace id and start filled in from the index). The rows are only
// valid during the call.
func (b *block) scanRows(ctx context.Context, fn func(i int, rows []spanRow) error) error {
	r := parquet.NewGenericReader[spanRow](b.pf)
	defer r.Close()
	buf := make([]spanRow, 0, 1024)
	chunk := make([]spanRow, 512)
	eof := false
	for i := range b.idx.ids {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n := int(b.idx.nspans[i])
		for len(buf) < n && !eof {
			k, err := r.Read(chunk)
			buf = append(buf, chunk[:k]...)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					return fmt.Errorf("block %s: read rows: %w", b.id, err)
				}
				eof = true
			}
		}
		if len(buf) < n {
			return fmt.Errorf("block %s: index says %d more rows than the data holds: %w", b.id, n-len(buf), errCorrupt)
		}
		b.fillTrace(buf[:n], i)
		if err := fn(i, buf[:n]); err != nil {
			return err
		}
		rest := copy(buf, buf[n:])
		clear(buf[rest:])
		buf = buf[:rest]
	}
	return nil
}

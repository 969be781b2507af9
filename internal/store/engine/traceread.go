package engine

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Reading one trace from a Parquet block used to seek a GenericReader to
// the trace's first row: parquet-go then read, decompressed and decoded
// the page holding that row in each of the ~60 columns, and the dictionary
// page of each dictionary-encoded column, for every lookup (1–2 ms of CPU
// for a 20-span trace). Pages are ~64 KiB of rows sorted by trace id, so
// the traces of a search, a search followed by opening one of its
// results, or repeated lookups of a recent trace hit the same pages; they
// are decoded once and kept in a bounded LRU shared by all blocks.

// defaultPageCacheBytes bounds the decoded pages kept for trace reads (by
// parquet-go's in-memory page size).
const defaultPageCacheBytes = 32 << 20

// tracePages is process-wide: a server runs one engine, and tests open
// many whose blocks must not each hold a budget.
var tracePages = newPageCache(defaultPageCacheBytes)

// SetTracePageCache replaces the process-wide page cache of trace reads by
// an empty one bounded to max bytes (0 turns it off) and returns the
// previous bound. Benchmarks of the APIs use it to measure first reads of
// traces; it must not be called while reads run.
func SetTracePageCache(max int64) (previous int64) {
	previous = tracePages.max
	tracePages = newPageCache(max)
	return previous
}

// uncachedRows: reads of more rows than this (traces of thousands of
// spans) do not go through the cache.
const uncachedRows = 4096

// pageRef names one data page: its block, row group, column and position
// in the column chunk's offset index.
type pageRef struct {
	b              *block
	rg, col, index int32
}

type cachedPage struct {
	ref  pageRef
	page parquet.Page
	dict parquet.Dictionary // nil for plain pages
	size int64
}

// pageCache counts a page's parquet-go size plus, once per column chunk,
// the dictionary its pages point into.
type pageCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	lru   list.List // of *cachedPage, most recent first
	pages map[pageRef]*list.Element
	dicts map[parquet.Dictionary]int // cached pages using each dictionary

	hits, misses uint64
}

func newPageCache(max int64) *pageCache {
	return &pageCache{max: max, pages: map[pageRef]*list.Element{}, dicts: map[parquet.Dictionary]int{}}
}

// get returns a cached page with a reference taken for the caller, who
// releases it (parquet.Release) when done reading it.
func (c *pageCache) get(r pageRef) parquet.Page {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.pages[r]
	if !ok {
		c.misses++
		return nil
	}
	c.hits++
	c.lru.MoveToFront(e)
	p := e.Value.(*cachedPage).page
	parquet.Retain(p)
	return p
}

// has reports whether r is cached, without counting a lookup.
func (c *pageCache) has(r pageRef) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pages[r]
	return ok
}

// put takes over the caller's reference to p: the cache releases it when
// it evicts p, or at once when p does not fit. Readers of p hold
// references of their own, so p's buffers go back to parquet-go's pools
// only after the last one is done.
func (c *pageCache) put(r pageRef, p parquet.Page) {
	size := p.Size()
	if size > c.max/8 {
		parquet.Release(p)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pages[r]; ok {
		parquet.Release(p)
		return
	}
	cp := &cachedPage{ref: r, page: p, dict: p.Dictionary(), size: size}
	if cp.dict != nil {
		if c.dicts[cp.dict] == 0 {
			c.size += cp.dict.Size()
		}
		c.dicts[cp.dict]++
	}
	c.pages[r] = c.lru.PushFront(cp)
	c.size += size
	for c.size > c.max && c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
}

func (c *pageCache) remove(e *list.Element) {
	cp := c.lru.Remove(e).(*cachedPage)
	delete(c.pages, cp.ref)
	c.size -= cp.size
	if cp.dict != nil {
		if c.dicts[cp.dict]--; c.dicts[cp.dict] == 0 {
			delete(c.dicts, cp.dict)
			c.size -= cp.dict.Size()
		}
	}
	parquet.Release(cp.page)
}

// stats returns the page lookups that hit and missed and the bytes held.
func (c *pageCache) stats() (hits, misses uint64, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses, c.size
}

// dropBlock forgets the pages of a closed block.
func (c *pageCache) dropBlock(b *block) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*cachedPage).ref.b == b {
			c.remove(e)
		}
		e = next
	}
}

// readParquetRows reads rows [first, first+len(rows)) of the block (one
// trace's, which may cross row groups) through the page cache.
func (b *block) readParquetRows(first int64, rows []spanRow) error {
	return b.readParquetRanges(context.Background(), []rowRange{{first, rows}})
}

// rowRange is rows [first, first+len(rows)) of a block, read into rows.
type rowRange struct {
	first int64
	rows  []spanRow
}

// rowSeg is the part of a rowRange inside one row group: rows [lo, hi) of
// the row group.
type rowSeg struct {
	first  int64 // in the block
	lo, hi int64
	rows   []spanRow
}

// readParquetRanges reads several row ranges (the traces of a search),
// sorted by first row and disjoint, in one pass over each row group: per
// column one page reader serves all of them, so a column chunk's
// dictionary is decoded and a page shared by two traces is read once per
// pass rather than once per trace, and on object storage the row group's
// missing pages of all the ranges come in one batch of requests. Row
// groups are read in parallel.
func (b *block) readParquetRanges(ctx context.Context, ranges []rowRange) error {
	type job struct {
		g    int
		rg   parquet.RowGroup
		segs []rowSeg
	}
	var jobs []job
	var base int64
	k := 0 // the first range not wholly before the row group
	for g, rg := range b.pf.RowGroups() {
		nr := rg.NumRows()
		for k < len(ranges) && ranges[k].first+int64(len(ranges[k].rows)) <= base {
			k++
		}
		var segs []rowSeg
		for _, r := range ranges[k:] {
			if r.first >= base+nr {
				break
			}
			lo := max(r.first, base)
			hi := min(r.first+int64(len(r.rows)), base+nr)
			segs = append(segs, rowSeg{first: lo, lo: lo - base, hi: hi - base, rows: r.rows[lo-r.first : hi-r.first]})
		}
		if len(segs) > 0 {
			jobs = append(jobs, job{g, rg, segs})
		}
		base += nr
	}
	if n := len(ranges); n > 0 {
		if last := ranges[n-1]; last.first+int64(len(last.rows)) > base {
			return fmt.Errorf("block %s: rows %d..%d beyond the data: %w", b.id, max(last.first, base), last.first+int64(len(last.rows)), errCorrupt)
		}
	}
	// On object storage row groups are read at once, overlapping their
	// round trips. On local disk reading two at once cost ~15 % more CPU
	// per search on two cores (BenchmarkSearchWholeTraces) for a wall
	// time no better on a busy machine, so they overlap only on machines
	// with cores to spare, at most half of them, leaving the rest to
	// ingest.
	return inParallel(ctx, len(jobs), b.rowGroupWorkers(min(4, max(1, priority.CPUs()/2))), func(i int) error {
		return b.readRowGroupSegs(jobs[i].g, jobs[i].rg, jobs[i].segs)
	})
}

// readRowGroupSegs reads the segments of row group g, in row order.
func (b *block) readRowGroupSegs(g int, rg parquet.RowGroup, segs []rowSeg) error {
	src, err := b.fetchPages(g, rg, segs)
	if err != nil {
		return err
	}
	tr := b.traceReader(rg)
	reuse, err := tr.readSegs(b, g, rg, segs, src)
	tr.closeCursors()
	if reuse {
		b.traceReaders.Put(tr)
	}
	return err
}

// readSegs reads segs through tr; reuse reports whether tr is in a state
// to be used again.
func (tr *traceReader) readSegs(b *block, g int, rg parquet.RowGroup, segs []rowSeg, src io.ReaderAt) (reuse bool, err error) {
	for i, s := range segs {
		err := tr.fill(b, g, rg, s.lo, s.hi, src)
		if errors.Is(err, parquet.ErrMissingOffsetIndex) {
			// Not written by parquet-go, which always writes one.
			for _, s := range segs[i:] {
				if err := b.seekReadRows(s.first, s.rows); err != nil {
					return true, err
				}
			}
			return true, nil
		}
		if err != nil {
			return true, err
		}
		tr.r.Reset()
		_, err = readFull(tr.r, s.rows)
		tr.release()
		if err != nil {
			// The reader may be anywhere; it is not reused.
			return false, fmt.Errorf("block %s: read rows: %w", b.id, err)
		}
	}
	return true, nil
}

// readSlack is how far past a page parquet-go may read: its buffered page
// reader fills 4 KiB at a time (parquet.ReadBufferSize's default).
const readSlack = 4 << 10

// fetchPages has a block file on object storage fetch, concurrently, the
// pages of every column holding the segments' rows of row group g that are
// not decoded in the page cache, and the dictionary pages of their column
// chunks: read column by column they cost a round trip or more each. It
// returns the reader serving those bytes, nil for local files (they read
// as they go).
func (b *block) fetchPages(g int, rg parquet.RowGroup, segs []rowSeg) (io.ReaderAt, error) {
	rf, ok := b.file.(blockio.RangeFetcher)
	if !ok {
		return nil, nil
	}
	var ranges []blockio.Range
	var pages []int
	for j, cc := range rg.ColumnChunks() {
		oi, err := cc.OffsetIndex()
		if err != nil {
			return nil, nil // read without fetching first; the read reports it
		}
		np := oi.NumPages()
		pages = pages[:0]
		for _, s := range segs {
			p0 := sort.Search(np, func(i int) bool { return oi.FirstRowIndex(i) > s.lo }) - 1
			for p := max(p0, 0); p < np && oi.FirstRowIndex(p) < s.hi; p++ {
				// Segments are in row order: a page shared with the one
				// before is the last one listed.
				if n := len(pages); n > 0 && pages[n-1] >= p {
					continue
				}
				if !tracePages.has(pageRef{b, int32(g), int32(j), int32(p)}) {
					pages = append(pages, p)
				}
			}
		}
		ranges = b.pageRanges(ranges, g, j, oi, pages)
	}
	if len(ranges) == 0 {
		return nil, nil
	}
	ranges = mergeRanges(ranges)
	bufs, err := rf.FetchRanges(context.Background(), ranges)
	if err != nil {
		return nil, fmt.Errorf("block %s: fetch pages: %w", b.id, err)
	}
	return &fetched{ranges: ranges, bufs: bufs, file: b.file}, nil
}

// pageRanges appends the byte ranges parquet-go reads to read pages of
// column j of row group g: each page, and the chunk's dictionary page when
// it has one.
func (b *block) pageRanges(out []blockio.Range, g, j int, oi parquet.OffsetIndex, pages []int) []blockio.Range {
	if len(pages) == 0 {
		return out
	}
	for _, p := range pages {
		out = append(out, blockio.Range{Off: oi.Offset(p), Len: oi.CompressedPageSize(p) + readSlack})
	}
	if md := b.pf.Metadata().RowGroups[g].Columns[j].MetaData; md.DictionaryPageOffset > 0 {
		out = append(out, blockio.Range{Off: md.DictionaryPageOffset, Len: md.DataPageOffset - md.DictionaryPageOffset + readSlack})
	}
	return out
}

// mergeRanges sorts ranges and joins those that overlap or touch.
func mergeRanges(rs []blockio.Range) []blockio.Range {
	slices.SortFunc(rs, func(a, b blockio.Range) int { return cmp.Compare(a.Off, b.Off) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].Off+out[n-1].Len {
			out[n-1].Len = max(out[n-1].Len, r.Off+r.Len-out[n-1].Off)
			continue
		}
		out = append(out, r)
	}
	return out
}

// fetched serves reads inside the fetched ranges from memory and any
// other from the file.
type fetched struct {
	ranges []blockio.Range // sorted, disjoint
	bufs   [][]byte
	file   io.ReaderAt
}

func (f *fetched) ReadAt(p []byte, off int64) (int, error) {
	i := sort.Search(len(f.ranges), func(i int) bool { return f.ranges[i].Off > off }) - 1
	if i >= 0 {
		buf := f.bufs[i]
		if lo := off - f.ranges[i].Off; lo+int64(len(p)) <= int64(len(buf)) {
			return copy(p, buf[lo:]), nil
		}
	}
	return f.file.ReadAt(p, off)
}

// seekReadRows reads rows [first, first+len(rows)) with a row reader
// seeked to the first: parquet-go finds the pages by scanning their
// headers.
func (b *block) seekReadRows(first int64, rows []spanRow) error {
	r := b.reader()
	defer b.readers.Put(r)
	if err := r.SeekToRow(first); err != nil {
		return fmt.Errorf("block %s: seek: %w", b.id, err)
	}
	if _, err := readFull(r, rows); err != nil {
		return fmt.Errorf("block %s: read rows: %w", b.id, err)
	}
	return nil
}

func readFull(r *parquet.GenericReader[spanRow], rows []spanRow) (int, error) {
	got := 0
	for got < len(rows) {
		k, err := r.Read(rows[got:])
		got += k
		if err != nil {
			if errors.Is(err, io.EOF) && got == len(rows) {
				break
			}
			if errors.Is(err, io.EOF) {
				return got, io.ErrUnexpectedEOF
			}
			return got, err
		}
		if k == 0 {
			return got, io.ErrNoProgress
		}
	}
	return got, nil
}

// traceReader reads rows of one row group from page parts. It is reused
// (pooled per block): a row reader allocates and clears ~0.3 MB of value
// buffers when it is created, more than reading a cached trace costs.
type traceReader struct {
	rows    rowSlice
	chunks  []sliceChunk
	cursors []pageCursor // per column, for the segments of one row group
	r       *parquet.GenericReader[spanRow]
}

func (b *block) traceReader(rg parquet.RowGroup) *traceReader {
	if tr, ok := b.traceReaders.Get().(*traceReader); ok {
		return tr
	}
	cols := rg.ColumnChunks()
	tr := &traceReader{chunks: make([]sliceChunk, len(cols)), cursors: make([]pageCursor, len(cols))}
	tr.rows = rowSlice{schema: rg.Schema(), chunks: make([]parquet.ColumnChunk, len(cols))}
	for j := range tr.chunks {
		tr.chunks[j].ColumnChunk = cols[j]
		tr.rows.chunks[j] = &tr.chunks[j]
	}
	tr.r = parquet.NewGenericRowGroupReader[spanRow](&tr.rows)
	return tr
}

// fill points the reader at rows [lo, hi) of row group g; release drops
// the page references it takes. Successive fills for one row group go
// forward through its rows, sharing the cursors until closeCursors.
// src, when not nil, holds the bytes of the pages not in the page cache.
func (tr *traceReader) fill(b *block, g int, rg parquet.RowGroup, lo, hi int64, src io.ReaderAt) error {
	tr.rows.n = hi - lo
	for j, cc := range rg.ColumnChunks() {
		parts, err := b.chunkPages(g, j, cc, lo, hi, src, &tr.cursors[j])
		if err != nil {
			tr.release()
			return fmt.Errorf("block %s: row group %d column %d: %w", b.id, g, j, err)
		}
		tr.chunks[j].ColumnChunk = cc
		tr.chunks[j].src = slicePages{pages: parts}
	}
	return nil
}

func (tr *traceReader) release() {
	for j := range tr.chunks {
		releaseParts(tr.chunks[j].src.pages)
		tr.chunks[j].src = slicePages{}
	}
}

func (tr *traceReader) closeCursors() {
	for j := range tr.cursors {
		tr.cursors[j].close()
	}
}

// pageCursor reads the pages of one column chunk for the segments of a
// row group, in row order. One page reader serves them all: parquet-go
// decodes a chunk's dictionary once per page reader, which per trace was
// a fifth of the cost of reading it. The last page stays held, since the
// next segment often starts in it (small columns have few pages).
type pageCursor struct {
	fp   parquet.Pages
	next int // the page fp reads next, -1 after a seek is needed
	last int // the index of page
	page parquet.Page
}

func (c *pageCursor) close() {
	if c.fp != nil {
		c.fp.Close()
		c.fp = nil
	}
	if c.page != nil {
		parquet.Release(c.page)
		c.page = nil
	}
}

// hold keeps page p (taking a reference) for the next segment.
func (c *pageCursor) hold(p int, page parquet.Page) {
	parquet.Retain(page)
	if c.page != nil {
		parquet.Release(c.page)
	}
	c.page, c.last = page, p
}

// chunkPages returns the parts of the pages of column chunk cc that hold
// rows [lo, hi) of the row group, reading those not held by the cursor
// nor cached through it.
func (b *block) chunkPages(g, j int, cc parquet.ColumnChunk, lo, hi int64, src io.ReaderAt, cur *pageCursor) ([]pagePart, error) {
	oi, err := cc.OffsetIndex()
	if err != nil {
		return nil, fmt.Errorf("offset index: %w", err)
	}
	np := oi.NumPages()
	// The last page starting at or before lo.
	p0 := sort.Search(np, func(i int) bool { return oi.FirstRowIndex(i) > lo }) - 1
	if p0 < 0 {
		return nil, fmt.Errorf("no page holds row %d: %w", lo, errCorrupt)
	}
	var out []pagePart
	fail := func(err error) ([]pagePart, error) {
		releaseParts(out)
		return nil, err
	}
	for p := p0; p < np && oi.FirstRowIndex(p) < hi; p++ {
		var page parquet.Page
		if cur.page != nil && cur.last == p {
			page = cur.page
			parquet.Retain(page)
		} else if page = tracePages.get(pageRef{b, int32(g), int32(j), int32(p)}); page == nil {
			if page, err = cur.read(cc, oi, p, src); err != nil {
				return fail(err)
			}
			// A huge trace would push out the pages of many small ones; it
			// keeps the only reference, released after its read.
			if hi-lo <= uncachedRows {
				parquet.Retain(page) // this read's; the cache takes the other
				tracePages.put(pageRef{b, int32(g), int32(j), int32(p)}, page)
			}
		}
		if page != cur.page {
			cur.hold(p, page)
		}
		start := oi.FirstRowIndex(p)
		end := start + page.NumRows()
		out = append(out, pagePart{page, max(lo, start) - start, min(hi, end) - start})
	}
	return out, nil
}

// read reads page p of column chunk cc, opening the cursor's page reader
// on its first read.
func (c *pageCursor) read(cc parquet.ColumnChunk, oi parquet.OffsetIndex, p int, src io.ReaderAt) (parquet.Page, error) {
	if c.fp == nil {
		if fc, ok := cc.(*parquet.FileColumnChunk); ok && src != nil {
			c.fp = fc.PagesFrom(src)
		} else {
			c.fp = cc.Pages()
		}
		c.next = -1
	}
	if c.next != p {
		if err := c.fp.SeekToRow(oi.FirstRowIndex(p)); err != nil {
			return nil, fmt.Errorf("seek to page %d: %w", p, err)
		}
	}
	page, err := c.fp.ReadPage()
	if err != nil {
		c.next = -1
		return nil, fmt.Errorf("read page %d: %w", p, err)
	}
	c.next = p + 1
	return page, nil
}

// rowSlice is a row group made of page parts: rows of one trace.
type rowSlice struct {
	schema *parquet.Schema
	n      int64
	chunks []parquet.ColumnChunk
}

func (r *rowSlice) NumRows() int64                          { return r.n }
func (r *rowSlice) ColumnChunks() []parquet.ColumnChunk     { return r.chunks }
func (r *rowSlice) Schema() *parquet.Schema                 { return r.schema }
func (r *rowSlice) SortingColumns() []parquet.SortingColumn { return nil }
func (r *rowSlice) Rows() parquet.Rows                      { return parquet.NewRowGroupRowReader(r) }

func releaseParts(parts []pagePart) {
	for _, p := range parts {
		parquet.Release(p.page)
	}
}

// pagePart is rows [from, to) of a page, holding a reference to it.
type pagePart struct {
	page     parquet.Page
	from, to int64
}

// sliceChunk serves its page parts in order; type and column come from
// the file's chunk, whose indexes do not describe the parts. Its one page
// reader is refilled for each read (the row reader keeps it).
type sliceChunk struct {
	parquet.ColumnChunk
	src slicePages
}

func (c *sliceChunk) Pages() parquet.Pages { return &c.src }

func (c *sliceChunk) ColumnIndex() (parquet.ColumnIndex, error) {
	return nil, parquet.ErrMissingColumnIndex
}

func (c *sliceChunk) OffsetIndex() (parquet.OffsetIndex, error) {
	return nil, parquet.ErrMissingOffsetIndex
}

func (c *sliceChunk) BloomFilter() parquet.BloomFilter { return nil }

func (c *sliceChunk) NumValues() int64 {
	var n int64
	for _, p := range c.src.pages {
		n += p.page.Slice(p.from, p.to).NumValues()
	}
	return n
}

type slicePages struct {
	pages []pagePart
	next  int
}

// ReadPage returns a new slice each time, also of a whole page: the row
// reader releases the pages it is given, and a slice takes references of
// its own to the cached page's buffers.
func (s *slicePages) ReadPage() (parquet.Page, error) {
	if s.next >= len(s.pages) {
		return nil, io.EOF
	}
	p := s.pages[s.next]
	s.next++
	return p.page.Slice(p.from, p.to), nil
}

func (s *slicePages) SeekToRow(row int64) error {
	if row != 0 {
		return fmt.Errorf("seek to row %d of a trace's page slices: %w", row, errors.ErrUnsupported)
	}
	s.next = 0
	return nil
}

func (s *slicePages) Close() error { return nil }

// readTraces returns the spans of trace positions is (in any order, no
// repeats) of a Parquet block in out[k] for is[k], the rows of all of them
// read in one pass (readParquetRanges).
func (b *block) readTraces(ctx context.Context, is []int) ([][]model.Span, error) {
	out := make([][]model.Span, len(is))
	order := make([]int, len(is))
	for k := range order {
		order[k] = k
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(b.idx.firstRow[is[x]], b.idx.firstRow[is[y]]) })
	rows := make([][]spanRow, len(is))
	ranges := make([]rowRange, len(is))
	for n, k := range order {
		rows[k] = make([]spanRow, b.idx.nspans[is[k]])
		ranges[n] = rowRange{int64(b.idx.firstRow[is[k]]), rows[k]}
	}
	if err := b.readParquetRanges(ctx, ranges); err != nil {
		return nil, err
	}
	for k, i := range is {
		b.fillTrace(rows[k], i)
		spans, err := rowsToSpans(rows[k], nil)
		if err != nil {
			return nil, err
		}
		out[k] = spans
	}
	return out, nil
}

// fragment is the part of the k-th trace of a batched read held by a
// block, at trace position i.
type fragment struct {
	b    *block
	i, k int
}

// readFragments reads block fragments grouped by block, one batched read
// per block, appending each trace's spans to out[k].
func readFragments(ctx context.Context, frags []fragment, out [][]model.Span) error {
	slices.SortStableFunc(frags, func(x, y fragment) int { return cmp.Compare(x.b.id, y.b.id) })
	for len(frags) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 1
		for n < len(frags) && frags[n].b == frags[0].b {
			n++
		}
		if b := frags[0].b; b.l0 != nil {
			// Level-0 traces decode straight into each trace's slice
			// (sized by the caller) rather than into one of their own
			// first that is then copied.
			for _, f := range frags[:n] {
				var err error
				if out[f.k], err = b.l0ReadTrace(f.i, true, out[f.k]); err != nil {
					return err
				}
			}
			frags = frags[n:]
			continue
		}
		is := make([]int, n)
		for m := range is {
			is[m] = frags[m].i
		}
		spans, err := frags[0].b.readTraces(ctx, is)
		if err != nil {
			return err
		}
		for m, f := range frags[:n] {
			out[f.k] = append(out[f.k], spans[m]...)
		}
		frags = frags[n:]
	}
	return nil
}

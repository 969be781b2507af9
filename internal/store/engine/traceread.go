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
	var base int64
	got := 0
	for g, rg := range b.pf.RowGroups() {
		nr := rg.NumRows()
		if got == len(rows) {
			break
		}
		at := first + int64(got)
		if at >= base+nr {
			base += nr
			continue
		}
		lo := at - base
		hi := min(nr, first+int64(len(rows))-base)
		src, err := b.fetchPages(g, rg, lo, hi)
		if err != nil {
			return err
		}
		tr := b.traceReader(rg)
		err = tr.fill(b, g, rg, lo, hi, src)
		if errors.Is(err, parquet.ErrMissingOffsetIndex) {
			// Not written by parquet-go, which always writes one.
			return b.seekReadRows(first, rows)
		}
		if err != nil {
			return err
		}
		tr.r.Reset()
		k, err := readFull(tr.r, rows[got:got+int(hi-lo)])
		tr.release()
		if err != nil {
			// The reader may be anywhere; it is not reused.
			return fmt.Errorf("block %s: read rows: %w", b.id, err)
		}
		b.traceReaders.Put(tr)
		got += k
		base += nr
	}
	if got < len(rows) {
		return fmt.Errorf("block %s: rows %d..%d beyond the data: %w", b.id, first+int64(got), first+int64(len(rows)), errCorrupt)
	}
	return nil
}

// readSlack is how far past a page parquet-go may read: its buffered page
// reader fills 4 KiB at a time (parquet.ReadBufferSize's default).
const readSlack = 4 << 10

// fetchPages has a block file on object storage fetch, concurrently, the
// pages of every column holding rows [lo, hi) of row group g that are not
// decoded in the page cache, and the dictionary pages of their column
// chunks: read column by column they cost a round trip or more each. It
// returns the reader serving those bytes, nil for local files (they read
// as they go).
func (b *block) fetchPages(g int, rg parquet.RowGroup, lo, hi int64) (io.ReaderAt, error) {
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
		p0 := sort.Search(np, func(i int) bool { return oi.FirstRowIndex(i) > lo }) - 1
		pages = pages[:0]
		for p := max(p0, 0); p < np && oi.FirstRowIndex(p) < hi; p++ {
			if !tracePages.has(pageRef{b, int32(g), int32(j), int32(p)}) {
				pages = append(pages, p)
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
	rows   rowSlice
	chunks []sliceChunk
	r      *parquet.GenericReader[spanRow]
}

func (b *block) traceReader(rg parquet.RowGroup) *traceReader {
	if tr, ok := b.traceReaders.Get().(*traceReader); ok {
		return tr
	}
	cols := rg.ColumnChunks()
	tr := &traceReader{chunks: make([]sliceChunk, len(cols))}
	tr.rows = rowSlice{schema: rg.Schema(), chunks: make([]parquet.ColumnChunk, len(cols))}
	for j := range tr.chunks {
		tr.chunks[j].ColumnChunk = cols[j]
		tr.rows.chunks[j] = &tr.chunks[j]
	}
	tr.r = parquet.NewGenericRowGroupReader[spanRow](&tr.rows)
	return tr
}

// fill points the reader at rows [lo, hi) of row group g; release drops
// the page references it takes.
// src, when not nil, holds the bytes of the pages not in the page cache.
func (tr *traceReader) fill(b *block, g int, rg parquet.RowGroup, lo, hi int64, src io.ReaderAt) error {
	tr.rows.n = hi - lo
	for j, cc := range rg.ColumnChunks() {
		parts, err := b.chunkPages(g, j, cc, lo, hi, src)
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

// chunkPages returns the parts of the pages of column chunk cc that hold
// rows [lo, hi) of the row group.
func (b *block) chunkPages(g, j int, cc parquet.ColumnChunk, lo, hi int64, src io.ReaderAt) ([]pagePart, error) {
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
	var fp parquet.Pages // opened on the first miss, read on sequentially
	next := -1           // the page fp reads next
	defer func() {
		if fp != nil {
			fp.Close()
		}
	}()
	fail := func(err error) ([]pagePart, error) {
		releaseParts(out)
		return nil, err
	}
	for p := p0; p < np && oi.FirstRowIndex(p) < hi; p++ {
		ref := pageRef{b, int32(g), int32(j), int32(p)}
		page := tracePages.get(ref)
		if page == nil {
			if fc, ok := cc.(*parquet.FileColumnChunk); ok && fp == nil && src != nil {
				fp = fc.PagesFrom(src)
			} else if fp == nil {
				fp = cc.Pages()
			}
			if next != p {
				if err := fp.SeekToRow(oi.FirstRowIndex(p)); err != nil {
					return fail(fmt.Errorf("seek to page %d: %w", p, err))
				}
			}
			if page, err = fp.ReadPage(); err != nil {
				return fail(fmt.Errorf("read page %d: %w", p, err))
			}
			next = p + 1
			// A huge trace would push out the pages of many small ones; it
			// keeps the only reference, released after its read.
			if hi-lo <= uncachedRows {
				parquet.Retain(page) // this read's; the cache takes the other
				tracePages.put(ref, page)
			}
		}
		start := oi.FirstRowIndex(p)
		end := start + page.NumRows()
		out = append(out, pagePart{page, max(lo, start) - start, min(hi, end) - start})
	}
	return out, nil
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

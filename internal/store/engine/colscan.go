package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding"
	"github.com/parquet-go/parquet-go/format"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// A row group is scanned as a shrinking selection of rows: each condition
// of the query reads one column, and only the pages of it that still hold
// a selected row, so the cheap, selective conditions (service, kind,
// duration: small dictionary indexes and integers) leave few rows for the
// costly ones, and the attribute blob is read only for the few rows it can
// still decide. Conditions on dictionary columns are evaluated once per
// dictionary entry, not per row; a dictionary without the wanted value
// empties the selection without touching another column.
//
// A condition that a column cannot decide exactly for a row (an attribute
// that may sit in the blob, a resource-scoped service.name) keeps the row
// and marks it for confirmation: the row's partial span is then assembled
// from every column the query needs and store.MatchSpan decides, as it
// does for every other engine.

type rgScan struct {
	ctx  context.Context // of the search: cancels its fetches
	b    *block
	p    *scanPlan
	g    int // row group
	ccs  []parquet.ColumnChunk
	row0 int64
	n    int
	// runs holds the selection as runs of whole traces' rows until the
	// first condition narrows it to rows (materialize; then nil)
	runs []rowRun
	sel  []int32 // selected rows of the row group (local indexes), ascending
	tr   []int32 // trace position of each selected row
	// match[i]: trace position t0+i has a matching span in this row group
	t0    int32
	match []bool
	conf  []bool // the row still needs confirmation by MatchSpan
	// spill of each selected row, read once the first attribute condition
	// needs it
	spill     []bool
	spillKeys []int64 // nil when the block predates the column
	spillRead bool
	// residual holds the conditions some row of the selection was left
	// to confirm for; the others hold for every selected row.
	residual store.Query
}

// keepIf compacts the selection to the rows whose position k in it got a
// verdict other than drop.
func (s *rgScan) keepIf(v []verdict) {
	w := 0
	for k := range s.sel {
		switch v[k] {
		case vDrop:
			continue
		case vConfirm:
			s.conf[k] = true
		}
		s.sel[w], s.tr[w], s.conf[w] = s.sel[k], s.tr[k], s.conf[k]
		if s.spillRead {
			s.spill[w] = s.spill[k]
			if s.spillKeys != nil {
				s.spillKeys[w] = s.spillKeys[k]
			}
		}
		w++
	}
	s.sel, s.tr, s.conf = s.sel[:w], s.tr[:w], s.conf[:w]
	if s.spillRead {
		s.spill = s.spill[:w]
		if s.spillKeys != nil {
			s.spillKeys = s.spillKeys[:w]
		}
	}
}

type verdict int8

const (
	vUnknown verdict = iota // not evaluated yet (dictionary caches)
	vDrop
	vKeep
	vConfirm // keep, MatchSpan decides later
	vResource
)

// colVisitor receives the values of a column at selected rows. Pages with
// a dictionary report indexes (di, -1 for null) after dict announced the
// dictionary; other pages report values, through i64 when set and the page
// holds plain int64 values.
type colVisitor struct {
	dict  func(d parquet.Dictionary)
	index func(k int, di int32)
	value func(k int, v parquet.Value)
	i64   func(k int, v int64)
}

// visit walks the pages of column col that hold one of rows (local row
// indexes, ascending) and reports each row's value with its position k in
// rows. Pages without a wanted row are skipped through the offset index
// without being decompressed.
func (s *rgScan) visit(col int, rows []int32, cv colVisitor) error {
	if len(rows) == 0 {
		return nil
	}
	pages := s.ccs[col].Pages()
	defer pages.Close()
	return s.visitPages(pages, col, rows, cv)
}

// visitPages is visit over pages, column col's page reader, which may have
// read the dictionary already (it is not read again).
func (s *rgScan) visitPages(pages parquet.Pages, col int, rows []int32, cv colVisitor) error {
	cc := s.ccs[col]
	var starts []int64
	if oi, err := cc.OffsetIndex(); err == nil && oi != nil {
		starts = pageStarts(oi)
		if err := s.prefetch(col, oi, starts, rows); err != nil {
			return err
		}
	}
	var lastDict parquet.Dictionary
	first := int64(0)
	for k := 0; k < len(rows); {
		want := int64(rows[k])
		if len(starts) > 0 {
			p := sort.Search(len(starts), func(i int) bool { return starts[i] > want }) - 1
			if p < 0 {
				return fmt.Errorf("row %d before the first page: %w", want, errCorrupt)
			}
			if starts[p] != first || k == 0 {
				if err := pages.SeekToRow(starts[p]); err != nil {
					return fmt.Errorf("seek to row %d: %w", starts[p], err)
				}
				first = starts[p]
			}
		}
		pg, err := readPage(pages, want)
		if err != nil {
			return err
		}
		end := first + pg.NumRows()
		hi := k
		for hi < len(rows) && int64(rows[hi]) < end {
			hi++
		}
		if hi > k {
			if d := pg.Dictionary(); d != nil && cv.index != nil {
				if d != lastDict {
					lastDict = d
					cv.dict(d)
				}
				visitIndexes(pg, first, rows[k:hi], k, cv.index)
			} else {
				visitValues(pg, first, rows[k:hi], k, cv)
			}
		}
		parquet.Release(pg)
		k, first = hi, end
	}
	return nil
}

// readPage reads the next page of pages, which should hold row.
func readPage(pages parquet.Pages, row int64) (parquet.Page, error) {
	pg, err := pages.ReadPage()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("row %d past the last page: %w", row, errCorrupt)
	}
	return pg, err
}

// prefetch has a block file on object storage cache the pages of column
// col holding rows, concurrently: read page by page they cost a round trip
// per read-ahead, one after the other.
func (s *rgScan) prefetch(col int, oi parquet.OffsetIndex, starts []int64, rows []int32) error {
	if _, ok := s.b.file.(blockio.Prefetcher); !ok {
		return nil
	}
	return s.prefetchPages(col, oi, pagesHolding(starts, rows))
}

// prefetchPages is prefetch for the pages of column col numbered pages.
func (s *rgScan) prefetchPages(col int, oi parquet.OffsetIndex, pages []int) error {
	pf, ok := s.b.file.(blockio.Prefetcher)
	if !ok {
		return nil
	}
	ranges := s.b.pageRanges(nil, s.g, col, oi, pages)
	if err := pf.Prefetch(s.context(), ranges); err != nil {
		return fmt.Errorf("block %s: fetch column %d: %w", s.b.id, col, err)
	}
	return nil
}

func (s *rgScan) context() context.Context {
	if s.ctx == nil {
		return context.Background()
	}
	return s.ctx
}

// pagesOverlapping returns the pages (by their first rows, starts)
// holding a row of one of runs (ascending, disjoint); rows before the
// first page are left for the read to report.
func pagesOverlapping(starts []int64, runs []rowRun) []int {
	var pages []int
	p := 0
	for _, r := range runs {
		for p+1 < len(starts) && starts[p+1] <= int64(r.lo) {
			p++
		}
		for ; p < len(starts) && starts[p] < int64(r.hi); p++ {
			if len(pages) == 0 || pages[len(pages)-1] != p {
				pages = append(pages, p)
			}
		}
		// The next run may start in the last page this one reached.
		p = max(p-1, 0)
	}
	return pages
}

// selectService narrows the runs of selectRows to the rows of service
// want (the first condition, since it is the most selective for a
// column this cheap). It walks the pages of the service column holding a
// run's rows and compares each row's dictionary index with the entries
// equal to want, rather than materialising every row of the runs and
// judging them one by one through filterColumn: the runs hold the rows of
// every trace with a span of the service, half the row group for a
// common one.
func (s *rgScan) selectService(col int, want []byte) error {
	runs := s.runs
	cc := s.ccs[col]
	oi, err := cc.OffsetIndex()
	if runs == nil || err != nil || oi == nil || oi.NumPages() == 0 {
		s.materialize()
		return s.filterColumn(col, func(v parquet.Value) verdict { return keepWhen(bytes.Equal(v.ByteArray(), want)) }, vDrop)
	}
	s.runs = nil
	starts := pageStarts(oi)
	pl := pagesOverlapping(starts, runs)
	if err := s.prefetchPages(col, oi, pl); err != nil {
		return err
	}
	pages := cc.Pages()
	defer pages.Close()
	s.sel, s.tr = nil, nil
	var (
		dict parquet.Dictionary
		keep []bool // by dictionary index: the entry is want
		rows []int32
		trs  []int32
	)
	next := int64(-1) // the first row of the page the reader is at
	ri := 0           // the first run not wholly before the page
	for _, p := range pl {
		first := starts[p]
		if first != next {
			if err := pages.SeekToRow(first); err != nil {
				return fmt.Errorf("seek to row %d: %w", first, err)
			}
		}
		pg, err := readPage(pages, first)
		if err != nil {
			return err
		}
		end := first + pg.NumRows()
		next = end
		for ri < len(runs) && int64(runs[ri].hi) <= first {
			ri++
		}
		d := pg.Dictionary()
		if d != nil && len(pg.DefinitionLevels()) == 0 {
			if d != dict {
				dict = d
				keep = make([]bool, d.Len())
				for i := range keep {
					keep[i] = bytes.Equal(d.Index(int32(i)).ByteArray(), want)
				}
			}
			data := pg.Data()
			idx := data.Int32()
			if int64(len(idx)) < end-first {
				parquet.Release(pg)
				return fmt.Errorf("page %d of column %d: %d indexes for %d rows: %w", p, col, len(idx), end-first, errCorrupt)
			}
			for j := ri; j < len(runs) && int64(runs[j].lo) < end; j++ {
				lo, hi := max(int64(runs[j].lo), first), min(int64(runs[j].hi), end)
				for _, x := range idx[lo-first : hi-first] {
					if uint32(x) >= uint32(len(keep)) {
						parquet.Release(pg)
						return fmt.Errorf("dictionary index %d of %d: %w", x, len(keep), errCorrupt)
					}
					if keep[x] {
						s.sel = append(s.sel, int32(lo))
						s.tr = append(s.tr, runs[j].t)
					}
					lo++
				}
			}
		} else {
			// Plain values (the dictionary overflowed) or nulls: row by
			// row, as filterColumn does.
			rows, trs = rows[:0], trs[:0]
			for j := ri; j < len(runs) && int64(runs[j].lo) < end; j++ {
				for r := max(int64(runs[j].lo), first); r < min(int64(runs[j].hi), end); r++ {
					rows, trs = append(rows, int32(r)), append(trs, runs[j].t)
				}
			}
			test := func(k int, v parquet.Value) {
				if !v.IsNull() && bytes.Equal(v.ByteArray(), want) {
					s.sel, s.tr = append(s.sel, rows[k]), append(s.tr, trs[k])
				}
			}
			if d != nil {
				visitIndexes(pg, first, rows, 0, func(k int, di int32) {
					if di >= 0 {
						test(k, d.Index(di))
					}
				})
			} else {
				visitValues(pg, first, rows, 0, colVisitor{value: test})
			}
		}
		parquet.Release(pg)
	}
	s.conf = make([]bool, len(s.sel))
	return nil
}

// pagesHolding returns the pages (by their first rows, starts) holding
// one of rows (ascending); a row before the first page is left for the
// read to report. It skips a page's rows by bisection: a scan's selection
// holds tens of thousands of rows of a row group before it narrows, its
// pages a few dozen, and each condition column asks this of it.
func pagesHolding(starts []int64, rows []int32) []int {
	var pages []int
	for k := 0; k < len(rows); {
		p := sort.Search(len(starts), func(i int) bool { return starts[i] > int64(rows[k]) }) - 1
		if p < 0 {
			return pages
		}
		pages = append(pages, p)
		if p+1 == len(starts) {
			break
		}
		next, rest := starts[p+1], rows[k:]
		k += sort.Search(len(rest), func(i int) bool { return int64(rest[i]) >= next })
	}
	return pages
}

// pageStarts returns the first row of each page of an offset index.
func pageStarts(oi parquet.OffsetIndex) []int64 {
	starts := make([]int64, oi.NumPages())
	for i := range starts {
		starts[i] = oi.FirstRowIndex(i)
	}
	return starts
}

// visitIndexes reports the dictionary indexes of rows (all inside pg,
// which starts at row first); k0 is the position of rows[0].
func visitIndexes(pg parquet.Page, first int64, rows []int32, k0 int, fn func(k int, di int32)) {
	data := pg.Data()
	idx := data.Int32()
	defs := pg.DefinitionLevels()
	if len(defs) == 0 {
		for j, r := range rows {
			fn(k0+j, idx[int64(r)-first])
		}
		return
	}
	// Optional column: values are stored for non-null rows only.
	vi, at := 0, 0
	for j, r := range rows {
		i := int(int64(r) - first)
		vi += countDefined(defs[at:i])
		at = i
		if defs[at] == 0 {
			fn(k0+j, -1)
		} else {
			fn(k0+j, idx[vi])
		}
	}
}

// visitValues reports the values of rows (all inside pg, which starts at
// row first), read straight from the page's decoded arrays: going through
// parquet-go's value reader would build a Value for every row of the page.
func visitValues(pg parquet.Page, first int64, rows []int32, k0 int, cv colVisitor) {
	data := pg.Data()
	dict := pg.Dictionary()
	defs := pg.DefinitionLevels()
	var (
		idx  []int32
		i64  []int64
		bits []byte
		buf  []byte
		offs []uint32
	)
	kind := data.Kind()
	switch {
	case dict != nil:
		idx = data.Int32()
	case kind == encoding.Int32:
		idx = data.Int32()
	case kind == encoding.Int64:
		i64 = data.Int64()
	case kind == encoding.Boolean:
		// Pages come whole from the file (the scan seeks to page starts
		// only), so their bits start at bit 0.
		bits = data.Boolean()
	case kind == encoding.ByteArray:
		buf, offs = data.ByteArray()
	default:
		visitReader(pg, first, rows, k0, cv)
		return
	}
	vi, at := 0, 0
	for j, r := range rows {
		i := int(int64(r) - first)
		if len(defs) > 0 {
			// Optional column: values are stored for non-null rows only.
			vi += countDefined(defs[at:i])
			at = i
			if defs[i] == 0 {
				cv.report(k0+j, parquet.Value{})
				continue
			}
		} else {
			vi = i
		}
		var v parquet.Value
		switch {
		case dict != nil:
			v = dict.Index(idx[vi])
		case i64 != nil:
			if cv.i64 != nil {
				cv.i64(k0+j, i64[vi])
				continue
			}
			v = parquet.Int64Value(i64[vi])
		case idx != nil:
			v = parquet.Int32Value(idx[vi])
		case bits != nil:
			v = parquet.BooleanValue(bits[vi/8]>>(vi%8)&1 != 0)
		default:
			v = parquet.ByteArrayValue(buf[offs[vi]:offs[vi+1]])
		}
		cv.report(k0+j, v)
	}
}

// countDefined counts the non-null values among definition levels defs:
// the levels other than 0. Eight at a time, since the scan walks the
// levels of a page up to each selected row: in a cold search at 10M spans
// the walk, a level at a time, was a tenth of the CPU.
func countDefined(defs []byte) int {
	const low7, high = 0x7f7f7f7f7f7f7f7f, 0x8080808080808080
	n := 0
	for len(defs) >= 8 {
		x := binary.LittleEndian.Uint64(defs)
		// A byte's high bit ends up set when the byte is not 0: its own,
		// or a carry out of its low seven bits (never into the next byte).
		n += bits.OnesCount64(((x & low7) + low7 | x) & high)
		defs = defs[8:]
	}
	for _, d := range defs {
		if d != 0 {
			n++
		}
	}
	return n
}

func (cv *colVisitor) report(k int, v parquet.Value) {
	if cv.value != nil {
		cv.value(k, v)
	} else if cv.i64 != nil {
		cv.i64(k, v.Int64())
	}
}

// visitReader is visitValues for page types without a direct path.
func visitReader(pg parquet.Page, first int64, rows []int32, k0 int, cv colVisitor) {
	n := int(pg.NumRows())
	buf := make([]parquet.Value, n)
	got := 0
	vr := pg.Values()
	for got < n {
		m, err := vr.ReadValues(buf[got:])
		got += m
		if err != nil || m == 0 {
			break
		}
	}
	for j, r := range rows {
		v := parquet.Value{}
		if i := int(int64(r) - first); i < got {
			v = buf[i]
		}
		cv.report(k0+j, v)
	}
}

// dictVerdicts caches a verdict per dictionary entry of the current page
// dictionary.
type dictVerdicts struct {
	d    parquet.Dictionary
	v    []verdict
	eval func(v parquet.Value) verdict
}

func (c *dictVerdicts) reset(d parquet.Dictionary) {
	if d == c.d {
		return // the verdicts so far stay good
	}
	c.d = d
	c.v = append(c.v[:0], make([]verdict, d.Len())...)
}

func (c *dictVerdicts) of(di int32) verdict {
	if v := c.v[di]; v != vUnknown {
		return v
	}
	v := c.eval(c.d.Index(di))
	c.v[di] = v
	return v
}

// filterColumn evaluates test on the value of column col at each selected
// row (onNull for null values) and keeps the rows it does not drop.
func (s *rgScan) filterColumn(col int, test func(v parquet.Value) verdict, onNull verdict) error {
	if len(s.sel) == 0 {
		return nil
	}
	out := make([]verdict, len(s.sel))
	dv := &dictVerdicts{eval: test}
	err := s.visit(col, s.sel, colVisitor{
		dict: dv.reset,
		index: func(k int, di int32) {
			if di < 0 {
				out[k] = onNull
			} else {
				out[k] = dv.of(di)
			}
		},
		value: func(k int, v parquet.Value) {
			if v.IsNull() {
				out[k] = onNull
			} else {
				out[k] = test(v)
			}
		},
	})
	if err != nil {
		return err
	}
	s.keepIf(out)
	return nil
}

func keepWhen(ok bool) verdict {
	if ok {
		return vKeep
	}
	return vDrop
}

// readSpill loads the spill flags of every selected row (keysCol < 0: the
// block has no spill_keys column).
func (s *rgScan) readSpill(col, keysCol int) error {
	if s.spillRead {
		return nil
	}
	s.spill = make([]bool, len(s.sel))
	if err := s.visit(col, s.sel, colVisitor{value: func(k int, v parquet.Value) { s.spill[k] = v.Boolean() }}); err != nil {
		return err
	}
	if keysCol >= 0 {
		// Only the spilled rows have keys; the others stay 0.
		var rows []int32
		var pos []int
		for k, sp := range s.spill {
			if sp {
				rows, pos = append(rows, s.sel[k]), append(pos, k)
			}
		}
		s.spillKeys = make([]int64, len(s.sel))
		if err := s.visit(keysCol, rows, colVisitor{value: func(i int, v parquet.Value) {
			if !v.IsNull() {
				s.spillKeys[pos[i]] = v.Int64()
			}
		}}); err != nil {
			return err
		}
	}
	s.spillRead = true
	return nil
}

// spilled reports whether the blob of selected row k may hold dedicated
// column j's key.
func (s *rgScan) spilled(k, j int) bool {
	if !s.spill[k] {
		return false
	}
	// 0: written before spill_keys existed.
	return s.spillKeys == nil || s.spillKeys[k] == 0 || s.spillKeys[k]&spillBit(j) != 0
}

// resourceVerdicts evaluates f on the resource of the selected rows whose
// verdict is vResource (the span itself cannot decide f for them).
func (s *rgScan) resourceVerdicts(col int, f *store.AttrFilter, out []verdict) error {
	var rows []int32
	var pos []int
	for k, v := range out {
		if v == vResource {
			rows = append(rows, s.sel[k])
			pos = append(pos, k)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	test := resourceTest(f)
	// One page reader for both: the dictionary sameVerdict reads, and the
	// verdicts it gave its entries, serve the page-by-page walk when the
	// entries disagree.
	pages := s.ccs[col].Pages()
	defer pages.Close()
	dv := &dictVerdicts{eval: test}
	if v, ok := s.sameVerdict(col, pages, dv); ok {
		for _, k := range pos {
			out[k] = v
		}
		return nil
	}
	return s.visitPages(pages, col, rows, colVisitor{
		dict:  dv.reset,
		index: func(j int, di int32) { out[pos[j]] = dv.of(max(di, 0)) },
		value: func(j int, v parquet.Value) { out[pos[j]] = test(v) },
	})
}

// resourceTest is f's verdict on an encoded resource (a value of the
// resource column).
func resourceTest(f *store.AttrFilter) func(v parquet.Value) verdict {
	return func(v parquet.Value) verdict {
		d := dec{b: v.ByteArray()}
		sp := model.Span{Resource: decAttrs(&d)}
		if d.err != nil {
			return vConfirm
		}
		if _, ok := sp.Resource.Get(f.Key); !ok && f.Key == "service.name" {
			return vConfirm // falls back to the span's service
		}
		return keepWhen(store.MatchAttr(f, &sp))
	}
}

// sameVerdict returns the verdict dv gives every value of column col in
// the row group when it gives every entry of the chunk's dictionary the
// same one and every data page indexes the dictionary (none fell back to
// plain values), so the pages' indexes need not be decoded: a block holds
// a few resources, and a condition on a span attribute that no resource
// has (most are) rules them all out the same way. It reads the dictionary
// through pages, column col's page reader, and leaves dv on it with the
// verdicts it evaluated.
func (s *rgScan) sameVerdict(col int, pages parquet.Pages, dv *dictVerdicts) (verdict, bool) {
	md := &s.b.pf.Metadata().RowGroups[s.g].Columns[col].MetaData
	if md.DictionaryPageOffset <= 0 || len(md.EncodingStats) == 0 {
		return vUnknown, false
	}
	for _, st := range md.EncodingStats {
		data := st.PageType == format.DataPage || st.PageType == format.DataPageV2
		// parquet-go writes RLE_DICTIONARY; pages of other writers'
		// PLAIN_DICTIONARY take the page-by-page path.
		if data && st.Encoding != format.RLEDictionary {
			return vUnknown, false
		}
	}
	dr, ok := pages.(interface {
		ReadDictionary() (parquet.Dictionary, error)
	})
	if !ok {
		return vUnknown, false
	}
	d, err := dr.ReadDictionary()
	if err != nil || d == nil || d.Len() == 0 {
		return vUnknown, false // visit reads the pages and reports errors
	}
	dv.reset(d)
	v := dv.of(0)
	for i := 1; i < d.Len(); i++ {
		if dv.of(int32(i)) != v {
			return vUnknown, false
		}
	}
	return v, true
}

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// smallPagesBlock writes rows as a Parquet block with 300-row row groups
// and small pages, so that row ranges cross pages and row groups often.
func smallPagesBlock(t *testing.T, rows []spanRow) *block {
	t.Helper()
	data := smallPagesFile(t, rows)
	pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(pf.RowGroups()) < 3 {
		t.Fatalf("%d row groups, want several", len(pf.RowGroups()))
	}
	if oi, err := pf.RowGroups()[0].ColumnChunks()[0].OffsetIndex(); err != nil || oi.NumPages() < 3 {
		t.Fatalf("span_id column: want several pages per row group (%v)", err)
	}
	return &block{id: "small-pages", pf: pf}
}

func smallPagesFile(t *testing.T, rows []spanRow) []byte {
	t.Helper()
	var buf bytes.Buffer
	opts := append([]parquet.WriterOption{}, writerOptions()...)
	opts = append(opts, parquet.MaxRowsPerRowGroup(300), parquet.PageBufferSize(256))
	w := parquet.NewGenericWriter[spanRow](&buf, opts...)
	for i := 0; i < len(rows); i += 10 {
		if _, err := w.Write(rows[i:min(len(rows), i+10)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// objectFile is a block file on object storage in memory: it counts the
// reads that would each be a round trip.
type objectFile struct {
	data           []byte
	reads, fetches atomic.Int64
}

func (f *objectFile) Size() int64  { return int64(len(f.data)) }
func (f *objectFile) Close() error { return nil }

func (f *objectFile) ReadAt(p []byte, off int64) (int, error) {
	f.reads.Add(1)
	return bytes.NewReader(f.data).ReadAt(p, off)
}

func (f *objectFile) FetchRanges(_ context.Context, ranges []blockio.Range) ([][]byte, error) {
	f.fetches.Add(1)
	out := make([][]byte, len(ranges))
	for i, r := range ranges {
		out[i] = f.data[min(r.Off, f.Size()):min(r.Off+r.Len, f.Size())]
	}
	return out, nil
}

// On object storage a trace read fetches the pages it needs in all
// columns, and their dictionaries, with one FetchRanges per row group and
// no other read; pages in the page cache are not fetched again.
func TestTraceReadFetchesPagesAtOnce(t *testing.T) {
	const nrows = 3000
	rows := genRows(t, nrows)[:nrows]
	b, of := objectBlock(t, rows)
	pf := b.pf
	defer withPageCache(4 << 20)()
	for _, rg := range [][2]int{{0, 1}, {299, 2}, {250, 400}, {nrows - 7, 7}, {1234, 50}} {
		first, n := rg[0], rg[1]
		want := referenceRows(t, pf, int64(first), n)
		reads, fetches := of.reads.Load(), of.fetches.Load()
		for round := 0; round < 2; round++ { // the second from the page cache
			got := make([]spanRow, n)
			if err := b.readParquetRows(int64(first), got); err != nil {
				t.Fatalf("rows %d+%d: %v", first, n, err)
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("round %d, rows %d+%d differ from a row reader's", round, first, n)
			}
		}
		groups := int64((first+n-1)/300 - first/300 + 1)
		if r := of.reads.Load() - reads; r != 0 {
			t.Errorf("rows %d+%d: %d reads besides the fetch", first, n, r)
		}
		if f := of.fetches.Load() - fetches; f != groups {
			t.Errorf("rows %d+%d: %d fetches, want one per row group (%d)", first, n, f, groups)
		}
	}
}

// objectBlock is a small-pages block of rows on object storage.
func objectBlock(t *testing.T, rows []spanRow) (*block, *objectFile) {
	t.Helper()
	of := &objectFile{data: smallPagesFile(t, rows)}
	pf, err := parquet.OpenFile(of, of.Size())
	if err != nil {
		t.Fatal(err)
	}
	return &block{id: "object", pf: pf, file: of}, of
}

// referenceRows is the read of rows before the page cache: a row reader
// seeked to the first row.
func referenceRows(t *testing.T, pf *parquet.File, first int64, n int) []spanRow {
	t.Helper()
	r := parquet.NewGenericReader[spanRow](pf)
	defer r.Close()
	if err := r.SeekToRow(first); err != nil {
		t.Fatal(err)
	}
	rows := make([]spanRow, n)
	got := 0
	for got < n {
		k, err := r.Read(rows[got:])
		got += k
		if err != nil && !(errors.Is(err, io.EOF) && got == n) {
			t.Fatalf("reference read at %d: %v", first, err)
		}
	}
	return rows
}

// genRows makes at least n rows of realistic spans (optional and
// dictionary columns set on some rows, null on others) by converting them
// into a block and reading its rows back.
func genRows(t *testing.T, n int) []spanRow {
	t.Helper()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	writeRetrying(t, e, newGen(11).batch(n, 1_700_000_000e9, 1e7))
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.convertAll(ctx); err != nil {
		t.Fatal(err)
	}
	var rows []spanRow
	for _, b := range e.blocks {
		err := b.scanRows(ctx, func(_ int, rs []spanRow) error {
			for _, r := range rs {
				r.TraceID, r.TraceStart = model.TraceID{}, 0 // not stored in the file
				rows = append(rows, r)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(rows) < n {
		t.Fatalf("%d rows, want %d", len(rows), n)
	}
	return rows
}

func TestReadParquetRowsMatchesSeekingReader(t *testing.T) {
	const nrows = 4500 // one read of all of them bypasses the cache
	rows := genRows(t, nrows)[:nrows]
	b := smallPagesBlock(t, rows)
	defer withPageCache(64 << 10)() // small: pages get evicted between reads
	r := rand.New(rand.NewPCG(5, 6))
	ranges := [][2]int{{0, 1}, {0, nrows}, {299, 2}, {nrows - 1, 1}, {250, 400}, {600, 300}}
	for i := 0; i < 60; i++ {
		first := r.IntN(nrows)
		ranges = append(ranges, [2]int{first, 1 + r.IntN(min(nrows-first, 120))})
	}
	for round := 0; round < 3; round++ { // the second round hits the cache
		for _, rg := range ranges {
			first, n := rg[0], rg[1]
			want := referenceRows(t, b.pf, int64(first), n)
			got := make([]spanRow, n)
			read := b.readParquetRows
			if round == 2 {
				read = b.seekReadRows // the fallback for files without offset index
			}
			if err := read(int64(first), got); err != nil {
				t.Fatalf("rows %d+%d: %v", first, n, err)
			}
			for k := range want {
				if !reflect.DeepEqual(want[k], got[k]) {
					t.Fatalf("round %d, rows %d+%d: row %d differs:\nwant %+v\ngot  %+v", round, first, n, first+k, want[k], got[k])
				}
			}
		}
	}
	if tracePages.size > tracePages.max {
		t.Fatalf("page cache holds %d bytes, bound %d", tracePages.size, tracePages.max)
	}
	if err := b.readParquetRows(nrows-10, make([]spanRow, 20)); !errors.Is(err, errCorrupt) {
		t.Fatalf("rows beyond the data: %v, want errCorrupt", err)
	}
}

// Traces whose spans lie in the head, level-0 blocks and Parquet blocks
// read the same as written, repeatedly (cache hits), concurrently, and
// after compaction replaced the blocks whose pages were cached.
func TestTraceReadThroughPageCache(t *testing.T) {
	defer withPageCache(4 << 20)() // room for the pages of all blocks here
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	g := newGen(8)
	all := g.batch(3000, 1_700_000_000e9, 1e7)
	// A trace of 2,000 spans: more rows than a page of the attrs column.
	for i := 0; i < 1; i++ {
		tr := g.trace(1_700_000_100e9 + uint64(i)*1e9)
		for len(tr) < 2000 {
			more := g.trace(1_700_000_100e9 + uint64(i)*1e9)
			for k := range more {
				more[k].TraceID = tr[0].TraceID
			}
			tr = append(tr, more...)
		}
		all = append(all, tr...)
	}
	var parts [4][]model.Span
	for i, s := range all {
		parts[i%4] = append(parts[i%4], s)
	}
	// parts 0 and 1: Parquet blocks; 2: a level-0 block; 3: the head.
	for i, p := range parts {
		writeRetrying(t, e, p)
		if i < 3 {
			if err := e.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if i < 2 {
			if err := e.convertAll(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	kinds := map[bool]int{}
	for _, b := range e.blocks {
		kinds[b.l0 != nil]++
	}
	if kinds[true] != 1 || kinds[false] != 2 {
		t.Fatalf("blocks: %d level-0, %d Parquet; want 1 and 2", kinds[true], kinds[false])
	}
	checkAllTraces(t, e, all)
	st := e.Stats()
	checkAllTraces(t, e, all) // from cached pages
	st2 := e.Stats()
	if st2.TracePageHitsTotal <= st.TracePageHitsTotal || st.TracePageMissesTotal == 0 {
		t.Fatalf("page cache: %d hits, %d misses after the first reads, %d hits after the second", st.TracePageHitsTotal, st.TracePageMissesTotal, st2.TracePageHitsTotal)
	}
	if st2.TracePageCacheBytes <= 0 || st2.TracePageCacheBytes > tracePages.max {
		t.Fatalf("page cache holds %d bytes, bound %d", st2.TracePageCacheBytes, tracePages.max)
	}

	byID := groupByTrace(all)
	var ids []model.TraceID
	for id := range byID {
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := w; k < len(ids); k += 4 {
				got, err := e.Trace(ctx, ids[k], store.TimeRange{})
				if err == nil && len(got) != len(byID[ids[k]]) {
					err = errors.New("wrong span count")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent reads: %v", err)
	}

	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllTraces(t, e, all)
	tracePages.mu.Lock()
	defer tracePages.mu.Unlock()
	for el := tracePages.lru.Front(); el != nil; el = el.Next() {
		if b := el.Value.(*cachedPage).ref.b; b.refs.Load() <= 0 {
			t.Fatalf("page cache holds pages of closed block %s", b.id)
		}
	}
}

// randomRanges picks up to n disjoint row ranges of [0, nrows), sorted:
// some touching (sharing a page), some crossing row groups.
func randomRanges(r *rand.Rand, nrows, n int) [][2]int {
	var out [][2]int
	at := r.IntN(50)
	for len(out) < n && at < nrows {
		k := 1 + r.IntN(min(nrows-at, 80))
		out = append(out, [2]int{at, k})
		at += k
		if r.IntN(3) > 0 { // else the next range starts where this one ends
			at += r.IntN(nrows / n)
		}
	}
	return out
}

// Several traces' rows read in one pass equal what a seeking row reader
// reads, with the page cache off, small (pages evicted between reads) and
// holding every page, concurrently.
func TestReadParquetRangesMatchesSeekingReader(t *testing.T) {
	const nrows = 4500
	rows := genRows(t, nrows)[:nrows]
	b := smallPagesBlock(t, rows)
	// The reference reader's rows, read once: a seek per range cost as
	// much as the reads under test.
	all := referenceRows(t, b.pf, 0, nrows)
	r := rand.New(rand.NewPCG(7, 8))
	for _, cache := range []int64{0, 64 << 10, 16 << 20} {
		func() {
			defer withPageCache(cache)()
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for w := 0; w < 4; w++ {
				sets := make([][][2]int, 10)
				wants := make([][][]spanRow, len(sets))
				for i := range sets {
					sets[i] = randomRanges(r, nrows, 1+r.IntN(25))
					for _, rg := range sets[i] {
						wants[i] = append(wants[i], all[rg[0]:rg[0]+rg[1]])
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i, set := range sets {
						ranges := make([]rowRange, len(set))
						for k, rg := range set {
							ranges[k] = rowRange{int64(rg[0]), make([]spanRow, rg[1])}
						}
						if err := b.readParquetRanges(context.Background(), ranges); err != nil {
							errs <- err
							return
						}
						for k, rg := range set {
							want := wants[i][k]
							for m := range want {
								if !reflect.DeepEqual(want[m], ranges[k].rows[m]) {
									errs <- fmt.Errorf("cache %d: rows %d+%d of a batch %v: row %d differs: %s", cache, rg[0], rg[1], set, rg[0]+m, rowDiff(want[m], ranges[k].rows[m]))
									return
								}
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		}()
	}
	beyond := []rowRange{{10, make([]spanRow, 5)}, {nrows - 10, make([]spanRow, 20)}}
	if err := b.readParquetRanges(context.Background(), beyond); !errors.Is(err, errCorrupt) {
		t.Fatalf("rows beyond the data: %v, want errCorrupt", err)
	}
}

// On object storage the traces of a batched read are fetched with one
// FetchRanges per row group holding some of them, and no other read.
func TestBatchedReadFetchesPerRowGroup(t *testing.T) {
	const nrows = 3000
	rows := genRows(t, nrows)[:nrows]
	b, of := objectBlock(t, rows)
	pf := b.pf
	defer withPageCache(0)()
	set := [][2]int{{5, 3}, {40, 2}, {290, 20}, {1200, 4}, {1210, 9}, {2990, 10}} // row groups 0, 1, 4, 9
	ranges := make([]rowRange, len(set))
	for k, rg := range set {
		ranges[k] = rowRange{int64(rg[0]), make([]spanRow, rg[1])}
	}
	before := of.reads.Load()
	if err := b.readParquetRanges(context.Background(), ranges); err != nil {
		t.Fatal(err)
	}
	reads := of.reads.Load() - before
	for k, rg := range set {
		if !reflect.DeepEqual(referenceRows(t, pf, int64(rg[0]), rg[1]), ranges[k].rows) {
			t.Fatalf("rows %d+%d differ", rg[0], rg[1])
		}
	}
	if n := reads; n != 0 {
		t.Errorf("%d reads besides the fetches", n)
	}
	if n := of.fetches.Load(); n != 4 {
		t.Errorf("%d fetches, want one per row group read (4)", n)
	}
}

// rowDiff names the fields in which two rows differ.
func rowDiff(want, got spanRow) string {
	var out []string
	w, g := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := 0; i < w.NumField(); i++ {
		if !reflect.DeepEqual(w.Field(i).Interface(), g.Field(i).Interface()) {
			out = append(out, fmt.Sprintf("%s: want %v, got %v", w.Type().Field(i).Name, w.Field(i), g.Field(i)))
		}
	}
	return strings.Join(out, "; ")
}

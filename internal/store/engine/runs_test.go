package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/store"
)

// pagesOverlapping finds the pages a row-by-row walk over the runs finds.
func TestPagesOverlapping(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for range 1000 {
		starts := []int64{0}
		for range r.IntN(20) {
			starts = append(starts, starts[len(starts)-1]+1+int64(r.IntN(50)))
		}
		var runs []rowRun
		for row := int32(r.IntN(5)); len(runs) < r.IntN(30); {
			n := 1 + int32(r.IntN(60))
			runs = append(runs, rowRun{lo: row, hi: row + n})
			row += n + int32(r.IntN(30))
		}
		var want []int
		for _, run := range runs {
			for row := run.lo; row < run.hi; row++ {
				p := 0
				for i, s := range starts {
					if s <= int64(row) {
						p = i
					}
				}
				if len(want) == 0 || want[len(want)-1] != p {
					want = append(want, p)
				}
			}
		}
		if got := pagesOverlapping(starts, runs); !slices.Equal(got, want) {
			t.Fatalf("pages of runs %v with starts %v: %v, want %v", runs, starts, got, want)
		}
	}
}

// twinScans returns the scan columns of q in b and two scans of the same
// random row group selecting the same random traces' rows, as runs.
func twinScans(t *testing.T, r *rand.Rand, b *block, q *store.Query) (*scanCols, *rgScan, *rgScan) {
	t.Helper()
	p := newScanPlan(q)
	c, err := b.scanColumns(p)
	if err != nil {
		t.Fatal(err)
	}
	g := r.IntN(len(b.pf.RowGroups()))
	seed := r.Uint64()
	return c, randomRuns(rand.New(rand.NewPCG(seed, 1)), b, p, g), randomRuns(rand.New(rand.NewPCG(seed, 1)), b, p, g)
}

// randomRuns is a scan of row group g of b selecting the rows of a random
// subset of its traces, as selectRows makes them.
func randomRuns(r *rand.Rand, b *block, p *scanPlan, g int) *rgScan {
	rgs := b.pf.RowGroups()
	var row0 int64
	for _, rg := range rgs[:g] {
		row0 += rg.NumRows()
	}
	sc := &rgScan{b: b, p: p, g: g, ccs: rgs[g].ColumnChunks(), row0: row0, n: int(rgs[g].NumRows())}
	keep := r.Float64()
	sc.selectRows(func(int) bool { return r.Float64() < keep })
	return sc
}

// Selecting a service straight from the runs (dictionary indexes compared
// run by run, plain pages row by row) keeps exactly the rows, with their
// traces, that materialising every row and filtering the service column
// keeps; on blocks whose service chunks fall back to plain pages too.
func TestSelectServiceKeepsWhatFilterColumnKeeps(t *testing.T) {
	oldRows, oldPage, oldDict := rowsPerRowGroup, pageBufferSize, dictMaxBytes
	rowsPerRowGroup, pageBufferSize, dictMaxBytes = 3000, 2<<10, 1<<10
	defer func() { rowsPerRowGroup, pageBufferSize, dictMaxBytes = oldRows, oldPage, oldDict }()
	r := rand.New(rand.NewPCG(43, 44))
	spans := scanTestSpans(r, 800)
	// A service per trace (in one span of three): more names than a
	// dictionary of 1 KiB holds.
	for i := range spans {
		if i%3 == 0 {
			spans[i].Service = fmt.Sprintf("svc-%x", spans[i].TraceID[:4])
		}
	}
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	writeCompacted(t, e, spans, 5000)
	s := e.snap()
	defer s.release()
	mixed, checked, kept := 0, 0, 0
	for _, b := range s.blocks {
		if b.l0 != nil {
			t.Fatal("a level-0 block is left after compaction")
		}
		mixed += countMixedChunks(t, b, "service")
		for range 40 {
			svc := spans[r.IntN(len(spans))].Service
			if r.IntN(8) == 0 {
				svc = "absent"
			}
			c, got, want := twinScans(t, r, b, &store.Query{Service: svc})
			if err := got.selectService(c.service, []byte(svc)); err != nil {
				t.Fatal(err)
			}
			want.materialize()
			if err := want.filterColumn(c.service, func(v parquet.Value) verdict { return keepWhen(bytes.Equal(v.ByteArray(), []byte(svc))) }, vDrop); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.sel, want.sel) || !slices.Equal(got.tr, want.tr) || len(got.conf) != len(got.sel) || got.runs != nil {
				t.Fatalf("block %s row group %d service %q: rows %v traces %v, want %v %v", b.id, got.g, svc, got.sel, got.tr, want.sel, want.tr)
			}
			checked++
			kept += len(got.sel)
		}
	}
	if mixed == 0 {
		t.Fatal("no service column chunk has both dictionary and plain pages: the fallback is not tested")
	}
	if checked == 0 || kept == 0 {
		t.Fatalf("%d selections checked, %d rows kept: the test tests too little", checked, kept)
	}
}

// Pruning pages on the runs of selectRows drops exactly the selected rows
// of the pages the column index rules out, and keeps each row's trace.
func TestDropPagesOnRunsDropsTheRowsOfRuledOutPages(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	spans := scanTestSpans(r, 1500)
	e := smallPagesEngine(t, spans)
	defer e.Close()
	s := e.snap()
	defer s.release()
	pruned := 0
	for _, b := range s.blocks {
		if b.l0 != nil {
			continue
		}
		for range 30 {
			q := store.Query{MinDuration: uint64(r.IntN(150e6))}
			c, sc, all := twinScans(t, r, b, &q)
			all.materialize()
			cc := sc.ccs[c.duration]
			ci, _ := cc.ColumnIndex()
			oi, _ := cc.OffsetIndex()
			var wantRows, wantTr []int32
			for k, row := range all.sel {
				pg := 0
				for i := range oi.NumPages() {
					if oi.FirstRowIndex(i) <= int64(row) {
						pg = i
					}
				}
				if !ci.NullPage(pg) && uint64(max(ci.MaxValue(pg).Int64(), 0)) < q.MinDuration {
					continue
				}
				wantRows, wantTr = append(wantRows, row), append(wantTr, all.tr[k])
			}
			sc.prunePages(c)
			sc.materialize()
			if !slices.Equal(sc.sel, wantRows) || !slices.Equal(sc.tr, wantTr) {
				t.Fatalf("block %s row group %d, min duration %d: %d rows left, want %d", b.id, sc.g, q.MinDuration, len(sc.sel), len(wantRows))
			}
			pruned += len(all.sel) - len(wantRows)
		}
	}
	if pruned == 0 {
		t.Fatal("no row was pruned: the test does not exercise the pruning")
	}
}

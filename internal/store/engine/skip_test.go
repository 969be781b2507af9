package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// smallPagesEngine writes spans into compacted Parquet blocks of many row
// groups and small pages, so that page bounds can rule pages out.
func smallPagesEngine(t *testing.T, spans []model.Span) *Engine {
	t.Helper()
	oldRows, oldPage := rowsPerRowGroup, pageBufferSize
	rowsPerRowGroup, pageBufferSize = 3000, 2<<10
	defer func() { rowsPerRowGroup, pageBufferSize = oldRows, oldPage }()
	o := testOpts(t.TempDir())
	o.BlockMaxSpans = 8000 // several blocks, for the scan ahead
	e := openT(t, o)
	writeCompacted(t, e, spans, 5000)
	return e
}

// allRowsScan is the scan of row group g of b with every row selected,
// as one run (materialize makes rows of it).
func allRowsScan(b *block, p *scanPlan, g int) *rgScan {
	rg := b.pf.RowGroups()[g]
	sc := &rgScan{b: b, p: p, g: g, ccs: rg.ColumnChunks(), n: int(rg.NumRows())}
	sc.runs = []rowRun{{lo: 0, hi: int32(sc.n)}}
	return sc
}

// withScanTuning sets the scan's shortcuts until the returned func runs.
func withScanTuning(prune, look, ahead bool) func() {
	old := scanTuning
	scanTuning.prunePages, scanTuning.lookahead, scanTuning.scanAhead = prune, look, ahead
	return func() { scanTuning = old }
}

// asRemote has the engine's Parquet blocks read through a file that
// prefetches as object storage does (coveredFile), so that the scan takes
// its object-storage paths on local files too.
func asRemote(t *testing.T, e *Engine) (blocks int) {
	t.Helper()
	s := e.snap()
	defer s.release()
	for _, b := range s.blocks {
		if b.l0 != nil {
			continue
		}
		if _, ok := b.file.(blockio.Prefetcher); ok {
			blocks++
			continue
		}
		cf := &coveredFile{BlockFile: b.file}
		pf, err := parquet.OpenFile(cf, cf.Size(), parquet.SkipBloomFilters(true))
		if err != nil {
			t.Fatal(err)
		}
		b.file, b.pf = cf, pf
		blocks++
	}
	return blocks
}

// Pruning pages by their bounds, fetching the columns ahead and scanning
// the next block ahead (on blocks read as from object storage) change
// what a search reads, never what it finds: random span-filter queries
// (and queries for slow spans, which prune most) find the same traces,
// in the same order, as the scan without them and as a brute-force
// MatchSpan.
func TestSearchSkipsFindWhatThePlainScanFinds(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	spans := scanTestSpans(r, 1500)
	e := smallPagesEngine(t, spans)
	defer e.Close()
	if n := asRemote(t, e); n < 2 {
		t.Fatalf("%d Parquet blocks: the scan ahead needs a next block", n)
	}
	before := e.Stats()
	checkSearches(t, e, spans, r, 150)
	search := func(q store.Query) []model.TraceID {
		got, err := e.Search(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]model.TraceID, len(got))
		for i := range got {
			ids[i] = got[i].TraceID
		}
		return ids
	}
	nonEmpty := 0
	for i := 0; i < 200; i++ {
		q := scanTestQuery(r, spans)
		if i%2 == 0 {
			// Slow spans: the pages whose longest span is shorter go.
			q.MinDuration = uint64(50e6 + r.IntN(200e6))
		}
		q.Limit = []int{1 << 20, 20, 1 + r.IntN(5)}[i%3]
		skipped := search(q)
		restore := withScanTuning(false, false, false)
		plain := search(q)
		restore()
		if !slices.Equal(skipped, plain) {
			t.Fatalf("query %d %+v: %d traces with pruning and lookahead, %d without", i, q, len(skipped), len(plain))
		}
		if len(plain) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 40 {
		t.Fatalf("only %d of 200 queries matched anything", nonEmpty)
	}
	after := e.Stats()
	if after.SearchBlocksScannedAheadTotal == before.SearchBlocksScannedAheadTotal {
		t.Fatal("no block was scanned ahead: the test does not exercise it")
	}
	if after.SearchPagesPrunedTotal == before.SearchPagesPrunedTotal {
		t.Fatal("no page was pruned: the test does not exercise the pruning")
	}
}

// Blocks whose file does not name its bounded columns (written before the
// scan pruned pages) hold zeros where bounds would be, which would rule
// out every page of a query for spans over a millisecond: the scan trusts
// the bounds of the columns the file names only.
func TestSearchTrustsOnlyNamedPageBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	spans := scanTestSpans(r, 300)
	e := smallPagesEngine(t, spans)
	defer e.Close()
	s := e.snap()
	defer s.release()
	// Longer than any span: pages with trusted bounds all go.
	q := store.Query{MinDuration: 1 << 40}
	left := func(b *block, c *scanCols, g int) int {
		sc := allRowsScan(b, newScanPlan(&q), g)
		sc.prunePages(c)
		sc.materialize()
		return len(sc.sel)
	}
	for _, b := range s.blocks {
		c, err := b.scanColumns(newScanPlan(&q))
		if err != nil {
			t.Fatal(err)
		}
		if !c.bounded[c.duration] || !c.bounded[c.service] || c.bounded[c.name] {
			t.Fatalf("bounded columns %v: want service and duration only", c.bounded)
		}
		for g, rg := range b.pf.RowGroups() {
			if n := left(b, c, g); n != 0 {
				t.Fatalf("row group %d: %d of %d rows left by bounds below the minimum duration", g, n, rg.NumRows())
			}
		}
		clear(c.bounded) // as in a block without the key
		for g, rg := range b.pf.RowGroups() {
			if n := left(b, c, g); n != int(rg.NumRows()) {
				t.Fatalf("row group %d: %d of %d rows left by pages without trusted bounds", g, n, rg.NumRows())
			}
		}
	}
}

// roundTripFile is a block file on object storage that counts round
// trips: a Prefetch that asks for a byte not fetched before is one.
type roundTripFile struct {
	coveredFile
	trips int
}

func (f *roundTripFile) Prefetch(ctx context.Context, ranges []blockio.Range) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range ranges {
		if !slices.ContainsFunc(f.fetched, func(d blockio.Range) bool {
			return d.Off <= r.Off && r.Off+r.Len <= d.Off+d.Len
		}) {
			f.trips++
			break
		}
	}
	f.fetched = append(f.fetched, ranges...)
	return nil
}

// A span-filter search on service, minimum duration and a dedicated
// attribute waits, per row group, for one round of fetches before the
// selection narrows (and one for the rows left to confirm), not for one
// per condition.
func TestSearchSpanFiltersFetchConditionColumnsAtOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	spans := scanTestSpans(r, 1500)
	e := smallPagesEngine(t, spans)
	defer e.Close()
	q := store.Query{Service: "cart", MinDuration: 2e6, Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpEq, Value: model.Str("postgresql")}}, Limit: 1 << 20}
	trips := func(look bool) (int, int) {
		defer withScanTuning(true, look, false)()
		var files []*roundTripFile
		groups := 0
		s := e.snap()
		for _, b := range s.blocks {
			f := &roundTripFile{coveredFile: coveredFile{BlockFile: b.file}}
			pf, err := parquet.OpenFile(f, f.Size(), parquet.SkipBloomFilters(true))
			if err != nil {
				t.Fatal(err)
			}
			b.file, b.pf = f, pf
			files = append(files, f)
			groups += len(pf.RowGroups())
		}
		s.release()
		if _, err := e.Search(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range files {
			n += f.trips
		}
		return n, groups
	}
	ahead, groups := trips(true)
	stepwise, _ := trips(false)
	if ahead > 2*groups {
		t.Fatalf("%d round trips for %d row groups with the lookahead: more than 2 each", ahead, groups)
	}
	if stepwise < 4*groups {
		t.Fatalf("%d round trips for %d row groups without the lookahead: the query should need one per condition column", stepwise, groups)
	}
}

// pagesHolding finds the pages a row-by-row walk finds, rows before the
// first page and after the last included.
func TestPagesHolding(t *testing.T) {
	r := rand.New(rand.NewPCG(39, 40))
	for range 500 {
		starts := []int64{int64(r.IntN(3))}
		for range r.IntN(20) {
			starts = append(starts, starts[len(starts)-1]+1+int64(r.IntN(50)))
		}
		var rows []int32
		for row := int32(r.IntN(3)); len(rows) < r.IntN(100); row += 1 + int32(r.IntN(40)) {
			rows = append(rows, row)
		}
		var want []int
		for _, row := range rows {
			p := -1
			for i, s := range starts {
				if s <= int64(row) {
					p = i
				}
			}
			if p < 0 {
				break // left for the read to report
			}
			if len(want) == 0 || want[len(want)-1] != p {
				want = append(want, p)
			}
		}
		if got := pagesHolding(starts, rows); !slices.Equal(got, want) {
			t.Fatalf("pages of rows %v with starts %v: %v, want %v", rows, starts, got, want)
		}
	}
}

// countDefined counts the levels other than 0, whatever their values and
// the length of the run.
func TestCountDefined(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for range 2000 {
		defs := make([]byte, r.IntN(40))
		for i := range defs {
			switch r.IntN(4) {
			case 0, 1:
			case 2:
				defs[i] = 1
			default:
				defs[i] = byte(r.UintN(256))
			}
		}
		want := 0
		for _, d := range defs {
			if d != 0 {
				want++
			}
		}
		if got := countDefined(defs); got != want {
			t.Fatalf("countDefined(%v) = %d, want %d", defs, got, want)
		}
	}
}

// Where no resource of a row group holds a condition's key, one look at
// the resource dictionary decides every row the span cannot (its pages'
// indexes are not decoded), and searches find what brute force finds;
// where some resource holds it, the rows are looked at one by one.
func TestSearchSpanFiltersDecideResourcesByDictionary(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	spans := scanTestSpans(r, 1500)
	// Half the traces keep resources holding db.system, in the first
	// blocks' row groups only.
	for i := len(spans) / 2; i < len(spans); i++ {
		s := &spans[i]
		if _, ok := s.Resource.Get("db.system"); ok {
			s.Resource = slices.DeleteFunc(slices.Clone(s.Resource), func(a model.Attr) bool { return a.Key == "db.system" })
		}
	}
	e := smallPagesEngine(t, spans)
	defer e.Close()
	asRemote(t, e)
	checkSearches(t, e, spans, r, 150)

	// Row group by row group: the dictionary decides where no resource has
	// the key, and resourceVerdicts gives every row the verdict of its own
	// resource, decided by the dictionary or not.
	f := &store.AttrFilter{Key: "db.system", Op: store.OpEq, Value: model.Str("postgresql")}
	test := resourceTest(f)
	s := e.snap()
	defer s.release()
	decided, undecided := 0, 0
	for _, b := range s.blocks {
		if b.l0 != nil {
			continue
		}
		c, err := b.scanColumns(newScanPlan(&store.Query{Attrs: []store.AttrFilter{*f}}))
		if err != nil {
			t.Fatal(err)
		}
		for g := range b.pf.RowGroups() {
			sc := allRowsScan(b, nil, g)
			sc.materialize()
			want := make([]verdict, sc.n)
			var dict parquet.Dictionary
			err := sc.visit(c.resource, sc.sel, colVisitor{
				dict:  func(d parquet.Dictionary) { dict = d },
				index: func(k int, di int32) { want[k] = test(dict.Index(di)) },
				value: func(k int, v parquet.Value) { want[k] = test(v) },
			})
			if err != nil {
				t.Fatal(err)
			}
			pages := sc.ccs[c.resource].Pages()
			v, ok := sc.sameVerdict(c.resource, pages, &dictVerdicts{eval: test})
			pages.Close()
			if ok {
				decided++
				if slices.ContainsFunc(want, func(w verdict) bool { return w != v }) {
					t.Fatalf("block %s row group %d: the dictionary decided %v, not every row's verdict", b.id, g, v)
				}
			} else {
				undecided++
			}
			got := slices.Repeat([]verdict{vResource}, sc.n)
			if err := sc.resourceVerdicts(c.resource, f, got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("block %s row group %d: resource verdicts differ from the rows' own", b.id, g)
			}
		}
	}
	if decided == 0 || undecided == 0 {
		t.Fatalf("%d row groups decided by the dictionary, %d not (want some of each)", decided, undecided)
	}
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// scanTestSpans returns realistic traces roughened with what the column
// scan must not get wrong: dedicated keys holding a zero value or the
// wrong type (they spill into the blob), a dedicated key only in the
// resource, ends before starts, a key without a column, errors.
func scanTestSpans(r *rand.Rand, traces int) []model.Span {
	g := newGen(r.Uint64())
	var spans []model.Span
	base := uint64(1_700_000_000e9)
	for i := 0; i < traces; i++ {
		tr := g.trace(base + uint64(i)*1_000_003)
		for k := range tr {
			s := &tr[k]
			switch r.IntN(12) {
			case 0:
				s.Attrs = append(s.Attrs, model.Attr{Key: "db.system", Value: model.Int(int64(r.IntN(3)))})
			case 1:
				s.Attrs = append(s.Attrs, model.Attr{Key: "db.system", Value: model.Str("")})
			case 2:
				s.Resource = append(slices.Clone(s.Resource), model.Attr{Key: "db.system", Value: model.Str("postgresql")})
			case 3:
				s.EndUnixNano = s.StartUnixNano - uint64(r.IntN(1000)+1)
			case 4:
				s.Attrs = append(s.Attrs, model.Attr{Key: "http.response.status_code", Value: model.Str("500")})
			case 5:
				s.StatusCode = model.StatusError
			case 6:
				s.StatusCode = model.StatusOK
			}
			if r.IntN(3) == 0 {
				s.Attrs = append(s.Attrs, model.Attr{Key: "tenant", Value: model.Str(fmt.Sprintf("t%d", r.IntN(4)))})
			}
		}
		spans = append(spans, tr...)
	}
	return spans
}

// scanTestQuery draws a query combining span conditions at random.
func scanTestQuery(r *rand.Rand, spans []model.Span) store.Query {
	var q store.Query
	pick := func() *model.Span { return &spans[r.IntN(len(spans))] }
	for q.Service == "" && q.Operation == "" && len(q.Kinds) == 0 && q.Status == nil && q.MinDuration == 0 && q.MaxDuration == 0 && len(q.Attrs) == 0 && q.Range.Start == 0 {
		if r.IntN(2) == 0 {
			q.Service = genServices[r.IntN(len(genServices))]
		}
		if r.IntN(6) == 0 {
			q.Operation = pick().Name
		}
		if r.IntN(5) == 0 {
			q.Kinds = []model.SpanKind{model.KindClient, model.KindServer}[:1+r.IntN(2)]
		}
		if r.IntN(5) == 0 {
			st := []model.StatusCode{model.StatusError, model.StatusError, model.StatusUnset, model.StatusOK}[r.IntN(4)]
			q.Status = &st
		}
		switch r.IntN(4) {
		case 0:
			q.MinDuration = uint64(r.IntN(60e6))
		case 1:
			q.MaxDuration = uint64(r.IntN(5e6))
		case 2:
			q.MinDuration = uint64(r.IntN(10e6))
			q.MaxDuration = q.MinDuration + uint64(r.IntN(40e6))
		}
		if r.IntN(5) == 0 {
			a := pick().StartUnixNano
			q.Range = store.TimeRange{Start: a, End: a + uint64(r.IntN(2e9))}
		}
		for n := r.IntN(3); n > 0; n-- {
			q.Attrs = append(q.Attrs, scanTestFilter(r))
		}
	}
	q.Limit = 1 << 20
	return q
}

func scanTestFilter(r *rand.Rand) store.AttrFilter {
	scope := []store.Scope{store.ScopeAny, store.ScopeSpan, store.ScopeResource}[r.IntN(3)]
	switch r.IntN(8) {
	case 0:
		return store.AttrFilter{Scope: scope, Key: "db.system", Op: store.OpEq, Value: model.Str([]string{"postgresql", "redis", "", "1"}[r.IntN(4)])}
	case 1:
		return store.AttrFilter{Scope: scope, Key: "db.system", Op: []store.Op{store.OpNeq, store.OpExists, store.OpNotRegex, store.OpRegex}[r.IntN(4)], Value: model.Str("post.*")}
	case 2:
		return store.AttrFilter{Scope: scope, Key: "http.response.status_code", Op: []store.Op{store.OpEq, store.OpGte, store.OpLt}[r.IntN(3)], Value: model.Int([]int64{200, 500}[r.IntN(2)])}
	case 3:
		return store.AttrFilter{Scope: scope, Key: "thread.id", Op: []store.Op{store.OpEq, store.OpLt}[r.IntN(2)], Value: model.Int(int64(r.IntN(3)))}
	case 4:
		return store.AttrFilter{Scope: scope, Key: "tenant", Op: store.OpEq, Value: model.Str(fmt.Sprintf("t%d", r.IntN(5)))}
	case 5:
		return store.AttrFilter{Scope: scope, Key: "service.name", Op: store.OpEq, Value: model.Str(genServices[r.IntN(len(genServices))])}
	case 6:
		return store.AttrFilter{Scope: scope, Key: "host.name", Op: store.OpRegex, Value: model.Str("cart-[01].*")}
	default:
		return store.AttrFilter{Scope: scope, Key: "db.statement", Op: store.OpRegex, Value: model.Str("SELECT .*")}
	}
}

// Span-filter searches on Parquet blocks (many row groups and pages, so
// that the scan skips some) return exactly the traces a brute-force
// MatchSpan over the same spans finds, and with a limit the newest of
// them.
func TestSearchSpanFiltersMatchBruteForce(t *testing.T) {
	old := rowsPerRowGroup
	rowsPerRowGroup = 3000
	defer func() { rowsPerRowGroup = old }()
	r := rand.New(rand.NewPCG(11, 12))
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	spans := scanTestSpans(r, 1500)
	writeCompacted(t, e, spans, 5000)
	groups := 0
	for _, b := range e.snap().blocks {
		if b.l0 != nil {
			t.Fatal("a level-0 block is left after compaction")
		}
		groups += len(b.pf.RowGroups())
		b.release()
	}
	if groups < 5 {
		t.Fatalf("%d row groups: the test needs several", groups)
	}
	checkSearches(t, e, spans, r, 200)
}

// checkSearches runs n random span-filter queries against e and compares
// each with a brute-force MatchSpan over spans, all of which e holds.
func checkSearches(t *testing.T, e *Engine, spans []model.Span, r *rand.Rand, n int) {
	t.Helper()
	traces := groupByTrace(spans)
	start := map[model.TraceID]uint64{}
	for id, ss := range traces {
		for _, s := range ss {
			if start[id] == 0 || s.StartUnixNano < start[id] {
				start[id] = s.StartUnixNano
			}
		}
	}
	nonEmpty := 0
	for i := 0; i < n; i++ {
		q := scanTestQuery(r, spans)
		var want []model.TraceID
		for id, ss := range traces {
			if slices.ContainsFunc(ss, func(s model.Span) bool { return store.MatchSpan(&q, &s) }) {
				want = append(want, id)
			}
		}
		sort.Slice(want, func(i, j int) bool { return start[want[i]] > start[want[j]] })
		got, err := e.Search(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		gotIDs := make([]model.TraceID, len(got))
		for i := range got {
			gotIDs[i] = got[i].TraceID
		}
		if !slices.Equal(gotIDs, want) {
			t.Fatalf("query %d %+v: %d traces, brute force finds %d", i, q, len(gotIDs), len(want))
		}
		if len(want) > 0 {
			nonEmpty++
		}
		q.Limit = 1 + r.IntN(5)
		if got, err = e.Search(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		if len(got) != min(q.Limit, len(want)) {
			t.Fatalf("query %d with limit %d: %d traces, want %d", i, q.Limit, len(got), min(q.Limit, len(want)))
		}
		for j := range got {
			if got[j].TraceID != want[j] {
				t.Fatalf("query %d with limit %d: result %d is %s, want the newest match %s", i, q.Limit, j, got[j].TraceID, want[j])
			}
		}
	}
	if nonEmpty < n*3/10 {
		t.Fatalf("only %d of %d queries matched anything: the queries test too little", nonEmpty, n)
	}
}

// Blocks written before the spill_keys column existed (testdata: 120
// traces of scanTestSpans with seed 21/22, written by the engine as of
// commit c361ad4) are searched as correctly as new ones: a spilled row
// there may hold any key, so its blob is always consulted.
func TestSearchSpanFiltersOnBlocksWithoutSpillKeys(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/preSpillKeys")); err != nil {
		t.Fatal(err)
	}
	e := openT(t, Options{Dir: dir, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	defer e.Close()
	s := e.snap()
	for _, b := range s.blocks {
		if b.l0 != nil {
			t.Fatal("testdata holds a level-0 block")
		}
		if _, ok := b.pf.Schema().Lookup("spill_keys"); ok {
			t.Fatal("testdata block has spill_keys: it no longer stands for old blocks")
		}
	}
	s.release()
	spans := scanTestSpans(rand.New(rand.NewPCG(21, 22)), 120)
	if st := e.Stats(); st.BlockSpans != int64(len(spans)) {
		t.Fatalf("testdata holds %d spans, the generator makes %d: it changed since the block was written", st.BlockSpans, len(spans))
	}
	checkSearches(t, e, spans, rand.New(rand.NewPCG(5, 6)), 200)
}

// coveredFile is a block file on object storage that checks every read
// falls inside ranges fetched before: each read outside is a round trip a
// prefetch missed.
type coveredFile struct {
	BlockFile
	mu      sync.Mutex
	fetched []blockio.Range
	outside int
}

func (f *coveredFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	in := slices.ContainsFunc(f.fetched, func(r blockio.Range) bool {
		return r.Off <= off && off+int64(len(p)) <= min(r.Off+r.Len, f.Size())
	})
	if !in {
		f.outside++
	}
	f.mu.Unlock()
	return f.BlockFile.ReadAt(p, off)
}

func (f *coveredFile) Prefetch(_ context.Context, ranges []blockio.Range) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetched = append(f.fetched, ranges...)
	return nil
}

func (f *coveredFile) FetchRanges(ctx context.Context, ranges []blockio.Range) ([][]byte, error) {
	out := make([][]byte, len(ranges))
	for i, r := range ranges {
		out[i] = make([]byte, max(0, min(r.Off+r.Len, f.Size())-r.Off))
		if _, err := f.BlockFile.ReadAt(out[i], r.Off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return out, nil
}

// On object storage the span-filter scan reads only pages it had fetched
// for the column first, and finds what it finds on local files.
func TestSearchSpanFiltersPrefetchWhatTheyRead(t *testing.T) {
	old := rowsPerRowGroup
	rowsPerRowGroup = 3000
	defer func() { rowsPerRowGroup = old }()
	r := rand.New(rand.NewPCG(13, 14))
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	spans := scanTestSpans(r, 600)
	writeRetrying(t, e, spans)
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	var files []*coveredFile
	for _, b := range e.snap().blocks {
		if b.l0 != nil {
			t.Fatal("a level-0 block is left after compaction")
		}
		cf := &coveredFile{BlockFile: b.file}
		pf, err := parquet.OpenFile(cf, cf.Size(), parquet.SkipBloomFilters(true))
		if err != nil {
			t.Fatal(err)
		}
		b.file, b.pf = cf, pf
		cf.outside = 0 // the footer and indexes, read when a block opens
		files = append(files, cf)
		b.release()
	}
	checkSearches(t, e, spans, r, 60)
	for _, cf := range files {
		if len(cf.fetched) == 0 {
			t.Fatal("no prefetch")
		}
		if cf.outside > 0 {
			t.Fatalf("%d reads outside the prefetched ranges", cf.outside)
		}
	}
}

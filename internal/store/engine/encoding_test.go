package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// A dictionary column whose dictionary outgrows dictMaxBytes switches to
// plain pages in the middle of its column chunk (values unique per span
// here); trace by id and span-filter searches (page by page, dictionary
// and plain) still find exactly what the spans hold.
func TestHighCardinalityColumnsKeepEveryQueryPath(t *testing.T) {
	oldRows, oldPage, oldDict := rowsPerRowGroup, pageBufferSize, dictMaxBytes
	rowsPerRowGroup, pageBufferSize, dictMaxBytes = 3000, 2<<10, 4<<10
	defer func() { rowsPerRowGroup, pageBufferSize, dictMaxBytes = oldRows, oldPage, oldDict }()
	r := rand.New(rand.NewPCG(31, 32))
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	spans := scanTestSpans(r, 800)
	for i := range spans {
		s := &spans[i]
		s.Attrs = append(slices.Clone(s.Attrs),
			model.Attr{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT * FROM t%d WHERE id = %d", r.IntN(3), r.IntN(1_000_000)))},
			model.Attr{Key: "url.path", Value: model.Str(fmt.Sprintf("/api/orders/%d", r.IntN(1_000_000)))},
			model.Attr{Key: "client.address", Value: model.Str(fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256)))})
	}
	writeCompacted(t, e, spans, 5000)
	mixed := map[string]int{}
	for _, b := range e.snap().blocks {
		if b.l0 != nil {
			t.Fatal("a level-0 block is left after compaction")
		}
		for _, col := range []string{"a_db_statement", "a_url_path", "a_client_address", "service"} {
			mixed[col] += countMixedChunks(t, b, col)
		}
		b.release()
	}
	for _, col := range []string{"a_db_statement", "a_url_path", "a_client_address"} {
		if mixed[col] == 0 {
			t.Errorf("no %s column chunk has both dictionary and plain pages: the fallback is not tested", col)
		}
	}
	if mixed["service"] != 0 {
		t.Errorf("%d service column chunks fell back to plain pages: its few values fit any dictionary", mixed["service"])
	}
	checkAllTraces(t, e, spans)
	checkSearches(t, e, spans, r, 60)

	traces := groupByTrace(spans)
	for i := 0; i < 60; i++ {
		s := &spans[r.IntN(len(spans))]
		key := []string{"db.statement", "url.path", "client.address"}[i%3]
		v, _ := s.Attrs.Get(key)
		q := store.Query{Attrs: []store.AttrFilter{{Scope: store.ScopeSpan, Key: key, Op: store.OpEq, Value: v}}, Limit: 1 << 20}
		if i%2 == 1 {
			q.Attrs[0] = store.AttrFilter{Scope: store.ScopeSpan, Key: key, Op: store.OpRegex, Value: model.Str(".*" + regexp.QuoteMeta(v.AsString()[len(v.AsString())-3:]))}
		}
		want := map[model.TraceID]bool{}
		for id, ss := range traces {
			if slices.ContainsFunc(ss, func(s model.Span) bool { return store.MatchSpan(&q, &s) }) {
				want[id] = true
			}
		}
		got, err := e.Search(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || !want[s.TraceID] {
			t.Fatalf("%s %v: %d traces, brute force finds %d (with %s: %v)", key, q.Attrs[0], len(got), len(want), s.TraceID, want[s.TraceID])
		}
		for _, ts := range got {
			if !want[ts.TraceID] {
				t.Fatalf("%s %v: trace %s does not match", key, q.Attrs[0], ts.TraceID)
			}
		}
	}
}

// pageKinds counts the dictionary-encoded and the other pages of column
// name in each row group of b.
func pageKinds(t *testing.T, b *block, name string, fn func(dict, plain int)) {
	t.Helper()
	leaf, ok := b.pf.Schema().Lookup(name)
	if !ok {
		t.Fatalf("block %s has no column %s", b.id, name)
	}
	for _, rg := range b.pf.RowGroups() {
		pages := rg.ColumnChunks()[leaf.ColumnIndex].Pages()
		var dict, plain int
		for {
			pg, err := pages.ReadPage()
			if err != nil {
				break
			}
			if pg.Dictionary() != nil {
				dict++
			} else {
				plain++
			}
		}
		pages.Close()
		fn(dict, plain)
	}
}

func countMixedChunks(t *testing.T, b *block, name string) (n int) {
	pageKinds(t, b, name, func(dict, plain int) {
		if dict > 0 && plain > 0 {
			n++
		}
	})
	return n
}

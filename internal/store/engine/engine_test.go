package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

func testOpts(dir string) Options {
	return Options{
		Dir:             dir,
		Storage:         testStorage(dir),
		IdleTimeout:     time.Hour, // tests flush explicitly unless they test idleness
		FlushInterval:   time.Hour,
		CompactInterval: time.Hour,
	}
}

func openT(t *testing.T, o Options) *Engine {
	t.Helper()
	e, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return e
}

// convertSpans writes spans, cuts them into a level-0 block and converts
// that to Parquet.
func convertSpans(t *testing.T, e *Engine, spans []model.Span) {
	t.Helper()
	ctx := context.Background()
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
}

func groupByTrace(spans []model.Span) map[model.TraceID][]model.Span {
	m := map[model.TraceID][]model.Span{}
	for _, s := range spans {
		m[s.TraceID] = append(m[s.TraceID], s)
	}
	return m
}

// sameSpans compares span sets field by field, ignoring order.
func sameSpans(t *testing.T, want, got []model.Span) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("span count: want %d, got %d", len(want), len(got))
	}
	idx := map[model.SpanID]*model.Span{}
	for i := range got {
		idx[got[i].SpanID] = &got[i]
	}
	for i := range want {
		g := idx[want[i].SpanID]
		if g == nil {
			t.Fatalf("span %s missing", want[i].SpanID)
		}
		if !reflect.DeepEqual(want[i], *g) {
			t.Fatalf("span %s differs:\nwant %+v\ngot  %+v", want[i].SpanID, want[i], *g)
		}
	}
}

// checkAllTraces reads every trace first and compares afterwards, so a
// result that still pointed into reused read buffers would be caught.
func checkAllTraces(t *testing.T, e *Engine, spans []model.Span) {
	t.Helper()
	byID := groupByTrace(spans)
	got := map[model.TraceID][]model.Span{}
	for id := range byID {
		g, err := e.Trace(context.Background(), id, store.TimeRange{})
		if err != nil {
			t.Fatalf("trace %s: %v", id, err)
		}
		got[id] = g
	}
	for id, want := range byID {
		sameSpans(t, want, got[id])
	}
	checkBatchedTraces(t, e, byID)
}

// checkBatchedTraces reads the traces through Engine.Traces, 20 at a time
// (a search's results) with one id repeated and one not stored, and
// compares them with the spans written.
func checkBatchedTraces(t *testing.T, e *Engine, byID map[model.TraceID][]model.Span) {
	t.Helper()
	var refs []store.TraceRef
	for id := range byID {
		refs = append(refs, store.TraceRef{ID: id})
	}
	absent := model.TraceID{0xff, 0xfe}
	for len(refs) > 0 {
		batch := refs[:min(20, len(refs))]
		refs = refs[len(batch):]
		batch = append(slices.Clone(batch), batch[0], store.TraceRef{ID: absent})
		got, err := e.Traces(context.Background(), batch)
		if err != nil {
			t.Fatalf("traces: %v", err)
		}
		if len(got) != len(batch) {
			t.Fatalf("%d traces for %d refs", len(got), len(batch))
		}
		for k, r := range batch {
			if r.ID == absent {
				if got[k] != nil {
					t.Fatalf("trace not stored: %d spans", len(got[k]))
				}
				continue
			}
			sameSpans(t, byID[r.ID], got[k])
		}
	}
}

func fullSpan() model.Span {
	return model.Span{
		TraceID: model.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: model.SpanID{1, 1, 1, 1, 1, 1, 1, 2},
		ParentSpanID: model.SpanID{9, 9, 9, 9, 9, 9, 9, 9}, TraceState: "vendor=x", Flags: 257, Name: "op",
		Kind: model.KindProducer, StartUnixNano: 1_700_000_000_000_000_123, EndUnixNano: 1_700_000_000_000_000_100, // end before start on purpose
		StatusCode: model.StatusError, StatusMessage: "boom", Service: "svc",
		Resource:  model.Attrs{{Key: "service.name", Value: model.Str("svc")}, {Key: "k8s.pod.uid", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{0, 1, 2}}}},
		ScopeName: "scope", ScopeVersion: "v1",
		Attrs: model.Attrs{
			{Key: "http.status_code", Value: model.Str("200")}, // dedicated int column, wrong type: stays generic
			{Key: "http.route", Value: model.Str("/a/{id}")},
			{Key: "db.statement", Value: model.Str("")}, // empty: stays generic
			{Key: "server.port", Value: model.Int(0)},   // zero: stays generic
			{Key: "http.response.status_code", Value: model.Int(503)},
			{Key: "f", Value: model.Float(1.5)}, {Key: "b", Value: model.Bool(true)},
			{Key: "arr", Value: model.Value{Type: model.TypeArray, Str: `[1,2]`}}, {Key: "m", Value: model.Value{Type: model.TypeMap, Str: `{"a":1}`}},
			{Key: "empty", Value: model.Value{}}, {Key: "neg", Value: model.Int(-42)},
		},
		Events:                 []model.Event{{TimeUnixNano: 1_700_000_000_000_000_000, Name: "exception", Attrs: model.Attrs{{Key: "exception.type", Value: model.Str("E")}}}, {TimeUnixNano: 5, Name: "early"}},
		Links:                  []model.Link{{TraceID: model.TraceID{7}, SpanID: model.SpanID{8}, TraceState: "a=b", Attrs: model.Attrs{{Key: "l", Value: model.Int(1)}}}},
		DroppedAttributesCount: 1, DroppedEventsCount: 2, DroppedLinksCount: 3,
	}
}

func TestCodecAndBlockRoundTrip(t *testing.T) {
	s := fullSpan()
	var got model.Span
	if err := decodeSpan(appendSpan(nil, &s), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, got) {
		t.Fatalf("codec round trip:\nwant %+v\ngot  %+v", s, got)
	}
	// Truncated input must fail cleanly, never panic.
	enc := appendSpan(nil, &s)
	for i := 0; i < len(enc); i++ {
		if err := decodeSpan(enc[:i], &got); err == nil {
			t.Fatalf("truncated at %d decoded without error", i)
		}
	}

	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	child := s
	child.SpanID, child.ParentSpanID = model.SpanID{3}, s.SpanID // parent inside the trace
	child.Attrs, child.Events, child.Links = nil, nil, nil
	child.DroppedAttributesCount, child.DroppedEventsCount, child.DroppedLinksCount = 0, 0, 0
	in := []model.Span{s, child}
	if err := e.Write(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	checkAllTraces(t, e, in) // from the head
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Blocks != 1 || st.HeadSpans != 0 {
		t.Fatalf("after flush: %+v", st)
	}
	checkAllTraces(t, e, in) // from the block
}

func TestWALReplayTornRecord(t *testing.T) {
	dir := t.TempDir()
	g := newGen(1)
	spans := g.batch(300, 1_700_000_000e9, 1e6)
	e := openT(t, testOpts(dir))
	for i := 0; i < len(spans); i += 50 {
		if err := e.Write(context.Background(), spans[i:min(i+50, len(spans))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(filepath.Join(dir, "wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	last := filepath.Join(dir, "wal", segName(segs[len(segs)-1]))
	fi, _ := os.Stat(last)
	// A torn record: header announcing 1000 bytes, only 10 present, as a
	// crash in the middle of write(2) leaves it.
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0xe8, 0x03, 0, 0, 1, 2, 3, 4, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'})
	f.Close()

	e = openT(t, testOpts(dir))
	checkAllTraces(t, e, spans)
	if fi2, _ := os.Stat(last); fi2.Size() != fi.Size() {
		t.Fatalf("torn tail not truncated: %d bytes, want %d", fi2.Size(), fi.Size())
	}
	// The engine keeps working after recovery.
	more := newGen(2).batch(20, 1_700_000_100e9, 1e6)
	if err := e.Write(context.Background(), more); err != nil {
		t.Fatal(err)
	}
	e.Close()

	// A corrupted checksum in the last record also ends replay there.
	segs, _ = listSegments(filepath.Join(dir, "wal"))
	last = filepath.Join(dir, "wal", segName(segs[len(segs)-1]))
	data, _ := os.ReadFile(last)
	data[len(data)-1] ^= 0xff
	os.WriteFile(last, data, 0o644)
	e = openT(t, testOpts(dir))
	defer e.Close()
	checkAllTraces(t, e, spans)
	lost := 0
	for id := range groupByTrace(more) {
		if _, err := e.Trace(context.Background(), id, store.TimeRange{}); errors.Is(err, store.ErrNotFound) {
			lost++
		}
	}
	if lost == 0 {
		t.Fatalf("corrupt last record was replayed")
	}
}

func TestLookupAcrossHeadAndBlocks(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	g := newGen(3)
	all := g.batch(2000, 1_700_000_000e9, 1e7)
	// Split every trace in three parts: two go to separate blocks, the last
	// stays in the head.
	var parts [3][]model.Span
	for i, s := range all {
		parts[i%3] = append(parts[i%3], s)
	}
	ctx := context.Background()
	for i, p := range parts {
		if err := e.Write(ctx, p); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if err := e.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := e.Stats(); st.Blocks != 2 || st.HeadSpans != int64(len(parts[2])) {
		t.Fatalf("stats %+v", st)
	}
	checkAllTraces(t, e, all)

	// Summaries merge all fragments.
	byID := groupByTrace(all)
	res, err := e.Search(ctx, store.Query{Service: "frontend", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(byID) {
		t.Fatalf("search found %d traces, want %d", len(res), len(byID))
	}
	for _, r := range res {
		want := model.Summarize(byID[r.TraceID])
		sort.Slice(want.Services, func(i, j int) bool { return want.Services[i].Name < want.Services[j].Name })
		sort.Slice(r.Services, func(i, j int) bool { return r.Services[i].Name < r.Services[j].Name })
		if !reflect.DeepEqual(want, r) {
			t.Fatalf("summary:\nwant %+v\ngot  %+v", want, r)
		}
	}
	// The time hint skips blocks but still finds the trace.
	first := all[0]
	got, err := e.Trace(ctx, first.TraceID, store.TimeRange{Start: first.StartUnixNano - 1e9, End: first.StartUnixNano + 1e9})
	if err != nil || len(got) != len(byID[first.TraceID]) {
		t.Fatalf("hinted lookup: %d spans, %v", len(got), err)
	}
	if _, err := e.Trace(ctx, model.TraceID{0xff}, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing trace: %v", err)
	}
	e.Close()
	// Reopen: blocks load, the head replays from the WAL.
	e = openT(t, testOpts(dir))
	defer e.Close()
	checkAllTraces(t, e, all)
}

func TestReplayDoesNotDuplicateFlushedSpans(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	spans := newGen(4).batch(500, 1_700_000_000e9, 1e6)
	if err := e.Write(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	// Keep a copy of the WAL as it was before the flush deleted it: this is
	// what a crash between block commit and segment deletion leaves.
	saved := map[string][]byte{}
	walDir := filepath.Join(dir, "wal")
	filepath.WalkDir(walDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			saved[p], _ = os.ReadFile(p)
		}
		return nil
	})
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Close()
	for p, b := range saved {
		os.WriteFile(p, b, 0o644)
	}
	e = openT(t, testOpts(dir))
	defer e.Close()
	checkAllTraces(t, e, spans)
}

// bruteSearch is the reference: MatchTrace over whole traces, newest first.
func bruteSearch(all []model.Span, q store.Query) []model.TraceID {
	var sums []model.TraceSummary
	for _, spans := range groupByTrace(all) {
		if store.MatchTrace(&q, spans) {
			sums = append(sums, model.Summarize(spans))
		}
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i].StartUnixNano > sums[j].StartUnixNano })
	if len(sums) > q.Limit {
		sums = sums[:q.Limit]
	}
	ids := make([]model.TraceID, len(sums))
	for i := range sums {
		ids[i] = sums[i].TraceID
	}
	return ids
}

func TestSearchFiltersNewestFirst(t *testing.T) {
	// Parallel tests run after every sequential one has finished, so only
	// tests that neither set package variables (rowsPerRowGroup,
	// pageBufferSize, dictMaxBytes, scanTuning, readBackBytes, the caches)
	// nor read the shared caches' sizes may be parallel.
	t.Parallel()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	g := newGen(5)
	base := uint64(1_700_000_000e9)
	var all []model.Span
	for round := 0; round < 3; round++ {
		spans := g.batch(1500, base+uint64(round)*100e9, 37e6)
		// Some dedicated-key values with an unexpected type spill into the
		// generic attribute blob; column scans must still see them.
		for i := range spans {
			for j := range spans[i].Attrs {
				if spans[i].Attrs[j].Key == "db.system" && i%29 == 0 {
					spans[i].Attrs[j].Value = model.Int(7)
				}
			}
		}
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if round < 2 {
			if err := e.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	errStatus := model.StatusError
	okStatus := model.StatusUnset
	someID := all[len(all)/2].TraceID
	queries := map[string]store.Query{
		"all":             {Limit: 20},
		"service":         {Service: "inventory", Limit: 20},
		"service+range":   {Service: "payment", Range: store.TimeRange{Start: base + 50e9, End: base + 150e9}, Limit: 15},
		"operation":       {Service: "frontend", Operation: "GET /api/cart", Limit: 10},
		"kind client":     {Kinds: []model.SpanKind{model.KindClient}, Service: "cart", Limit: 25},
		"kinds":           {Kinds: []model.SpanKind{model.KindProducer, model.KindServer}, Limit: 25},
		"status error":    {Status: &errStatus, Limit: 30},
		"status unset":    {Status: &okStatus, Service: "users", Limit: 5},
		"min dur":         {MinDuration: 150e6, Limit: 20},
		"max dur":         {Service: "checkout", MaxDuration: 1e6, Limit: 20},
		"attr eq":         {Attrs: []store.AttrFilter{{Key: "db.statement", Op: store.OpEq, Value: model.Str(genStmts[2])}}, Limit: 20},
		"attr eq numstr":  {Attrs: []store.AttrFilter{{Key: "http.response.status_code", Op: store.OpEq, Value: model.Str("500")}}, Limit: 20},
		"attr neq":        {Attrs: []store.AttrFilter{{Scope: store.ScopeSpan, Key: "http.request.method", Op: store.OpNeq, Value: model.Str("GET")}}, Limit: 20},
		"attr gt":         {Attrs: []store.AttrFilter{{Key: "thread.id", Op: store.OpGt, Value: model.Int(62)}}, Limit: 20},
		"attr gte lte":    {Attrs: []store.AttrFilter{{Key: "thread.id", Op: store.OpGte, Value: model.Int(10)}, {Key: "thread.id", Op: store.OpLte, Value: model.Int(11)}}, Limit: 20},
		"attr lt":         {Attrs: []store.AttrFilter{{Key: "server.port", Op: store.OpLt, Value: model.Int(500)}}, Limit: 20},
		"attr regex":      {Attrs: []store.AttrFilter{{Key: "url.full", Op: store.OpRegex, Value: model.Str("http://(payment|users):8080/api/.*")}}, Limit: 20},
		"attr not regex":  {Service: "shipping", Attrs: []store.AttrFilter{{Key: "db.operation", Op: store.OpNotRegex, Value: model.Str("SELECT|GET")}}, Limit: 20},
		"attr spilled":    {Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpEq, Value: model.Int(7)}}, Limit: 20},
		"attr exists":     {Attrs: []store.AttrFilter{{Key: "cache.hit", Op: store.OpExists}}, Limit: 20},
		"resource attr":   {Attrs: []store.AttrFilter{{Scope: store.ScopeResource, Key: "host.name", Op: store.OpEq, Value: model.Str("search-2.prod.internal")}}, Limit: 20},
		"resource svc":    {Attrs: []store.AttrFilter{{Scope: store.ScopeResource, Key: "service.name", Op: store.OpEq, Value: model.Str("cart")}}, Limit: 20},
		"trace dur":       {MinTraceDuration: 120e6, MaxTraceDuration: 150e6, Limit: 20},
		"trace dur+svc":   {Service: "users", MinTraceDuration: 180e6, Limit: 20},
		"trace ids":       {TraceIDs: []model.TraceID{someID, all[0].TraceID, {0xaa}}, Limit: 20},
		"range only":      {Range: store.TimeRange{Start: base + 120e9, End: base + 130e9}, Limit: 50},
		"no match":        {Service: "nope", Limit: 20},
		"combined":        {Service: "frontend", Kinds: []model.SpanKind{model.KindServer}, MinDuration: 50e6, Attrs: []store.AttrFilter{{Key: "http.request.method", Op: store.OpEq, Value: model.Str("POST")}}, Limit: 20},
		"attr on missing": {Service: "frontend", Attrs: []store.AttrFilter{{Key: "db.system", Op: store.OpNeq, Value: model.Str("redis")}}, Limit: 20},
	}
	// Level-0 blocks (the cuts) and their Parquet conversion answer alike.
	for _, phase := range []string{"level0", "parquet"} {
		if phase == "parquet" {
			if err := e.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
				t.Fatalf("after compaction: %d level-0, %d Parquet blocks", l0, pq)
			}
		}
		searchCases(t, e, all, phase, queries)
	}
	// ErrStop ends a scan without error.
	n := 0
	if err := e.ScanTraces(ctx, store.Query{}, func([]model.Span) error { n++; return store.ErrStop }); err != nil || n != 1 {
		t.Fatalf("ErrStop: n=%d err=%v", n, err)
	}
}

func searchCases(t *testing.T, e *Engine, all []model.Span, phase string, queries map[string]store.Query) {
	ctx := context.Background()
	for name, q := range queries {
		t.Run(phase+"/"+name, func(t *testing.T) {
			want := bruteSearch(all, q)
			res, err := e.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]model.TraceID, len(res))
			for i := range res {
				got[i] = res[i].TraceID
				if i > 0 && res[i].StartUnixNano > res[i-1].StartUnixNano {
					t.Fatalf("not newest first at %d", i)
				}
			}
			if len(want) == 0 && len(got) == 0 {
				return
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("want %d traces %v\ngot %d traces %v", len(want), want, len(got), got)
			}
			// ScanTraces agrees and hands out whole traces.
			var scanned []model.TraceID
			err = e.ScanTraces(ctx, q, func(spans []model.Span) error {
				scanned = append(scanned, spans[0].TraceID)
				if len(spans) != len(groupByTrace(all)[spans[0].TraceID]) {
					return fmt.Errorf("partial trace")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			sort.Slice(scanned, func(i, j int) bool { return scanned[i].String() < scanned[j].String() })
			sort.Slice(got, func(i, j int) bool { return got[i].String() < got[j].String() })
			if !reflect.DeepEqual(scanned, got) {
				t.Fatalf("scan %v != search %v", scanned, got)
			}
		})
	}
}

func TestCatalogs(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	ctx := context.Background()
	spans := newGen(6).batch(3000, 1_700_000_000e9, 1e7)
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	svcs, _ := e.Services(ctx, store.TimeRange{})
	if len(svcs) == 0 || svcs[0] != "cart" {
		t.Fatalf("services from head: %v", svcs)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e = openT(t, testOpts(dir))
	defer e.Close()
	check := func() {
		svcs, _ := e.Services(ctx, store.TimeRange{})
		want := map[string]bool{}
		for _, s := range spans {
			want[s.Service] = true
		}
		if len(svcs) != len(want) {
			t.Fatalf("services %v, want %v", svcs, want)
		}
		if got, _ := e.Services(ctx, store.TimeRange{End: 1_600_000_000e9}); len(got) != 0 {
			t.Fatalf("services before any data: %v", got)
		}
		ops, _ := e.Operations(ctx, "frontend", store.TimeRange{})
		found := false
		for _, op := range ops {
			if op.Name == "GET /api/cart" && op.Kind == model.KindServer {
				found = true
			}
		}
		if !found {
			t.Fatalf("operations: %v", ops)
		}
		names, _ := e.AttributeNames(ctx, store.ScopeResource, store.TimeRange{})
		if !contains(names, "host.name") || contains(names, "db.statement") {
			t.Fatalf("resource attribute names: %v", names)
		}
		vals, _ := e.AttributeValues(ctx, store.ScopeSpan, "http.request.method", store.TimeRange{}, 10)
		var vs []string
		for _, v := range vals {
			vs = append(vs, v.AsString())
		}
		if !reflect.DeepEqual(vs, []string{"DELETE", "GET", "POST", "PUT"}) {
			t.Fatalf("values: %v", vs)
		}
	}
	check()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestCompactionKeepsAllSpans(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := testOpts(dir)
	o.BlockMaxSpans = 1 << 20
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	g := newGen(7)
	var all []model.Span
	for i := 0; i < 6; i++ {
		spans := g.batch(2500, 1_700_000_000e9+uint64(i)*10e9, 5e6)
		// Late spans of an earlier trace land in a later block.
		if i > 0 {
			late := all[0]
			late.SpanID = model.SpanID{byte(i), 0xee}
			spans = append(spans, late)
		}
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := e.Stats()
	if before.Blocks != 6 {
		t.Fatalf("blocks before: %d", before.Blocks)
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := e.Stats()
	if after.Blocks != 1 || after.BlockSpans != int64(len(all)) || after.CompactionsTotal != 1 {
		t.Fatalf("after compaction: %+v", after)
	}
	if ents := storedBlocks(t, dir); len(ents) != 1 {
		t.Fatalf("old blocks remain: %d blocks", len(ents))
	}
	checkAllTraces(t, e, all)
	bps := float64(after.BlockBytes) / float64(after.BlockSpans)
	t.Logf("bytes/span after compaction: %.1f", bps)
	// The block layout (index-held trace ids and starts, parent positions,
	// dedicated dictionary columns) is what keeps realistic spans near
	// 30 B; a regression in it shows here first.
	if bps > 33 {
		t.Fatalf("compacted block uses %.1f bytes/span, want <= 33", bps)
	}

	// A sequential scan of the merged block (many read chunks) returns
	// every trace intact; results are compared after the whole scan.
	byID := groupByTrace(all)
	scanned := map[model.TraceID][]model.Span{}
	if err := e.blocks[0].forEachTrace(ctx, func(spans []model.Span) error {
		scanned[spans[0].TraceID] = spans
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(scanned) != len(byID) {
		t.Fatalf("scan saw %d traces, want %d", len(scanned), len(byID))
	}
	for id, want := range byID {
		sameSpans(t, want, scanned[id])
	}
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	o := testOpts(dir)
	o.Retention = 24 * time.Hour
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	old := newGen(8).batch(3000, now-72*3600e9, 1e6)
	mid := newGen(9).batch(3000, now-2*3600e9, 1e6)
	fresh := newGen(10).batch(3000, now-60e9, 1e6)
	for _, b := range [][]model.Span{old, mid, fresh} {
		if err := e.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sizeBefore := storedBytes(t, dir)
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Trace(ctx, old[0].TraceID, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired trace still readable: %v", err)
	}
	checkAllTraces(t, e, mid)
	sizeAfter := storedBytes(t, dir)
	if sizeAfter >= sizeBefore {
		t.Fatalf("disk not freed: %d -> %d", sizeBefore, sizeAfter)
	}
	// Size-based: a budget whose share for blocks (all but the WAL's
	// eighth) is just under the blocks' size drops only the oldest
	// remaining block.
	st := e.Stats()
	// (B-2)·8/7 leaves at most B-1 bytes for blocks after integer division.
	e.opts.MaxDiskBytes = (st.BlockBytes - 2) * 8 / 7
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Trace(ctx, mid[0].TraceID, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("over-budget block kept: %v", err)
	}
	checkAllTraces(t, e, fresh)
	if got := e.Stats(); got.Blocks != 1 || got.RetentionDeletedTotal != 2 {
		t.Fatalf("stats after retention: %+v", got)
	}
	if d := storedBytes(t, dir); d >= sizeAfter {
		t.Fatalf("disk not freed by size retention: %d -> %d", sizeAfter, d)
	}
}

func TestTraceCompletion(t *testing.T) {
	var mu sync.Mutex
	got := map[model.TraceID][]int{}
	o := testOpts(t.TempDir())
	// Both writes below must land within one idle timeout, or the trace
	// completes twice by design: a goroutine of a loaded 2-core machine
	// under -race can stall for longer than 150 ms between them.
	o.IdleTimeout = time.Second
	o.FlushInterval = 20 * time.Millisecond
	o.OnTraceComplete = func(c CompletedTrace) {
		id, spans := c.ID, c.Spans
		mu.Lock()
		got[id] = append(got[id], len(spans))
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	spans := newGen(11).trace(1_700_000_000e9)
	id := spans[0].TraceID
	if err := e.Write(ctx, spans[:2]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if err := e.Write(ctx, spans[2:]); err != nil { // resets the idle clock
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got[id]) == 1 })
	mu.Lock()
	if got[id][0] != len(spans) {
		t.Fatalf("completed with %d spans, want %d", got[id][0], len(spans))
	}
	mu.Unlock()
	// A late span is stored and completes the trace again, whole.
	late := spans[0]
	late.SpanID = model.SpanID{0xab}
	if err := e.Write(ctx, []model.Span{late}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got[id]) == 2 })
	mu.Lock()
	if got[id][1] != len(spans)+1 {
		t.Fatalf("second completion with %d spans, want %d", got[id][1], len(spans)+1)
	}
	mu.Unlock()
	all, err := e.Trace(ctx, id, store.TimeRange{})
	if err != nil || len(all) != len(spans)+1 {
		t.Fatalf("stored %d spans (%v)", len(all), err)
	}
}

// Under memory pressure traces are cut into blocks before they are idle;
// they must still complete, once, with all their spans.
func TestCompletionAfterForcedCut(t *testing.T) {
	var mu sync.Mutex
	got := map[model.TraceID]int{}
	calls := map[model.TraceID]int{}
	o := testOpts(t.TempDir())
	o.IdleTimeout = 2 * time.Second
	o.FlushInterval = 20 * time.Millisecond
	o.HeadMaxBytes = 256 << 10
	o.OnTraceComplete = func(c CompletedTrace) {
		id, spans := c.ID, c.Spans
		mu.Lock()
		got[id] = len(spans)
		calls[id]++
		mu.Unlock()
	}
	e := openT(t, o)
	defer e.Close()
	g := newGen(13)
	want := map[model.TraceID]int{}
	written := map[model.TraceID][]time.Time{}
	var traces [][]model.Span
	for i := 0; i < 100; i++ {
		traces = append(traces, g.trace(1_700_000_000e9+uint64(i)*1e9))
	}
	// Send every trace in two halves, far enough apart that the first half
	// is cut under pressure before the second arrives.
	for half := 0; half < 2; half++ {
		for _, tr := range traces {
			part := tr[:len(tr)/2]
			if half == 1 {
				part = tr[len(tr)/2:]
			}
			want[tr[0].TraceID] = len(tr)
			writeRetrying(t, e, part)
			written[tr[0].TraceID] = append(written[tr[0].TraceID], time.Now())
		}
		time.Sleep(150 * time.Millisecond)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	time.Sleep(o.IdleTimeout / 2) // no second completion may follow
	mu.Lock()
	defer mu.Unlock()
	for id, n := range want {
		if got[id] != n {
			t.Fatalf("trace %s completed with %d spans, want %d", id, got[id], n)
		}
	}
	for id, n := range calls {
		// A second completion is right only when the halves were written
		// further apart than the idle timeout (a slow, loaded machine).
		if n > 1 && written[id][1].Sub(written[id][0]) < o.IdleTimeout-100*time.Millisecond {
			t.Fatalf("trace %s completed %d times; halves written %v apart", id, n, written[id][1].Sub(written[id][0]))
		}
	}
	if e.Stats().BlocksFlushedTotal < 2 {
		t.Fatalf("expected forced cuts, stats %+v", e.Stats())
	}
}

// writeRetrying writes spans, waiting out back-pressure as a client's
// retries would.
func writeRetrying(t *testing.T, e *Engine, spans []model.Span) {
	t.Helper()
	for {
		err := e.Write(context.Background(), spans)
		if errors.Is(err, store.ErrOverloaded) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// writeCompacted writes spans part spans at a time, each part flushed to
// its own level-0 block, then compacts them into Parquet blocks.
func writeCompacted(t *testing.T, e *Engine, spans []model.Span, part int) {
	t.Helper()
	for i := 0; i < len(spans); i += part {
		writeRetrying(t, e, spans[i:min(i+part, len(spans))])
		if err := e.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitForWithin(t, 10*time.Second, cond)
}

func waitForWithin(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBackPressure(t *testing.T) {
	o := testOpts(t.TempDir())
	o.HeadMaxBytes = 64 << 10
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	g := newGen(12)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = e.Write(ctx, g.batch(100, 1_700_000_000e9, 1e6))
	}
	if !errors.Is(err, store.ErrOverloaded) {
		t.Fatalf("want ErrOverloaded, got %v", err)
	}
	if e.Stats().OverloadedTotal == 0 {
		t.Fatal("overload not counted")
	}
	// Once the head drains, writes are accepted again.
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Write(ctx, g.batch(10, 1_700_000_000e9, 1e6)); err != nil {
		t.Fatalf("after flush: %v", err)
	}
}

// TestConcurrentWriters checks that concurrent writers all get their spans
// stored; how many of them shared an fsync is logged (group commit depends on
// timing, so it is measured by BenchmarkWrite, not asserted).
func TestConcurrentWriters(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var all [8][]model.Span
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			g := newGen(uint64(100 + w))
			for i := 0; i < 20; i++ {
				b := g.batch(50, 1_700_000_000e9+uint64(i)*1e9, 1e6)
				if err := e.Write(ctx, b); err != nil {
					t.Error(err)
					return
				}
				all[w] = append(all[w], b...)
			}
		}(w)
	}
	wg.Wait()
	st := e.Stats()
	if st.WriteBatchesTotal != 160 || st.SpansWrittenTotal != uint64(countSpans(all[:])) {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d batches, %d fsyncs", st.WriteBatchesTotal, st.WALFsyncsTotal)
	for w := range all {
		checkAllTraces(t, e, all[w])
	}
}

func countSpans(all [][]model.Span) int {
	n := 0
	for _, a := range all {
		n += len(a)
	}
	return n
}

func TestDirLocked(t *testing.T) {
	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	defer e.Close()
	if _, err := Open(context.Background(), testOpts(dir)); err == nil {
		t.Fatal("second open of the same dir succeeded")
	}
}

// With a CutInterval, idle traces wait for it and go in fewer, larger
// blocks, and still all complete; complete traces over HeadMaxBytes/16
// are cut at every flush as before.
func TestCutInterval(t *testing.T) {
	run := func(t *testing.T, headMax int64, interval time.Duration) (blocks int, took time.Duration) {
		var mu sync.Mutex
		done := map[model.TraceID]bool{}
		o := testOpts(t.TempDir())
		o.IdleTimeout = 50 * time.Millisecond
		o.FlushInterval = 10 * time.Millisecond
		o.CutInterval = interval
		o.HeadMaxBytes = headMax
		o.OnTraceComplete = func(c CompletedTrace) {
			mu.Lock()
			done[c.ID] = true
			mu.Unlock()
		}
		e := openT(t, o)
		defer e.Close()
		ctx := context.Background()
		g := newGen(12)
		var ids []model.TraceID
		start := time.Now()
		for i := 0; i < 60; i++ {
			spans := g.trace(1_700_000_000e9 + uint64(i)*1e9)
			ids = append(ids, spans[0].TraceID)
			if err := e.Write(ctx, spans); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		waitFor(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if !done[id] {
					return false
				}
			}
			return true
		})
		return e.Stats().Blocks, time.Since(start)
	}
	// 60 traces over 1.2 s or more: every 10 ms flush would cut up to 60
	// blocks, one every 400 ms at most 5 (and one more per 400 ms a slow
	// machine adds).
	if n, took := run(t, 0, 400*time.Millisecond); n > int(took/(400*time.Millisecond))+2 {
		t.Fatalf("%d blocks cut in %v with a 400 ms cut interval", n, took)
	}
	// The generator's traces take 4-17 KB in the head: a complete one or
	// two pass 16 KB (HeadMaxBytes/16) and are cut without waiting for a
	// 2 s interval: 28-29 blocks on a quiet machine. Held back for the
	// interval, the run cut 11 (the head's pressure, above HeadMaxBytes/4,
	// cuts some anyway).
	if n, took := run(t, 256<<10, 2*time.Second); n < 16 {
		t.Fatalf("%d blocks cut in %v with complete traces over HeadMaxBytes/16: held back for the cut interval", n, took)
	}
}

// The flusher looks every FlushInterval, and the tick that reaches
// CutInterval may be read a little earlier after the last cut than that
// cut's was: it must cut then, not a whole FlushInterval later (a cluster
// node's 3 s interval became 4 s in about half its cuts).
func TestCutIntervalDueOnTheTickThatReachesIt(t *testing.T) {
	o := testOpts(t.TempDir())
	o.FlushInterval = time.Second
	o.CutInterval = 3 * time.Second
	e := openT(t, o)
	defer e.Close()
	for _, since := range []time.Duration{3*time.Second - 50*time.Microsecond, 3 * time.Second, 3*time.Second + 20*time.Millisecond} {
		if e.cutLater(since) {
			t.Errorf("cut held back %v after the last one (flush every %v, cut interval %v)", since, o.FlushInterval, o.CutInterval)
		}
	}
	for _, since := range []time.Duration{time.Second, 2*time.Second + 20*time.Millisecond} {
		if !e.cutLater(since) {
			t.Errorf("cut %v after the last one, before the cut interval %v", since, o.CutInterval)
		}
	}
}

// Traces still open do not make the flusher cut before CutInterval,
// however much of the head they take (a cluster node's head at 2,000
// spans/s passed HeadMaxBytes/16 with them alone); complete ones over
// HeadMaxBytes/16 do.
func TestCutIntervalHoldsBackOnlyCompleteTraces(t *testing.T) {
	o := testOpts(t.TempDir())
	o.IdleTimeout = 300 * time.Millisecond
	o.FlushInterval = time.Hour
	o.CutInterval = time.Hour
	o.HeadMaxBytes = 1 << 20 // a sixteenth 64 KB, pressure above 256 KB
	e := openT(t, o)
	defer e.Close()
	g := newGen(12)
	for i := 0; e.head.bytes.Load() < 100<<10; i++ {
		if err := e.Write(context.Background(), g.trace(1_700_000_000e9+uint64(i)*1e9)); err != nil {
			t.Fatal(err)
		}
	}
	if !e.cutLater(0) {
		t.Fatalf("open traces of %d bytes (over HeadMaxBytes/16) cut before the cut interval", e.head.bytes.Load())
	}
	time.Sleep(400 * time.Millisecond) // every trace idle: complete
	if e.cutLater(0) {
		t.Fatalf("complete traces of %d bytes (over HeadMaxBytes/16) held back", e.head.bytes.Load())
	}
}

// A write that finds the head over half its budget waits for a cut: the
// stall is counted, with the time it waited; writes below that are not.
func TestWriteStallCounted(t *testing.T) {
	o := testOpts(t.TempDir())
	o.HeadMaxBytes = 256 << 10
	e := openT(t, o)
	defer e.Close()
	// No cut may bring the head back under half its budget meanwhile (a
	// kicked one takes the traces not written to for 250 ms).
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	ctx := context.Background()
	g := newGen(14)
	for i := 0; e.head.bytes.Load() <= o.HeadMaxBytes/2; i++ {
		if st := e.Stats(); st.WriteStallsTotal != 0 || st.WriteStallSeconds != 0 {
			t.Fatalf("stall counted at %d head bytes of %d: %+v", e.head.bytes.Load(), o.HeadMaxBytes, st)
		}
		if err := e.Write(ctx, g.batch(5, 1_700_000_000e9+uint64(i)*1e9, 1e6)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := e.Write(ctx, g.batch(5, 1_700_000_000e9, 1e6)); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st := e.Stats()
	if st.WriteStallsTotal != 1 || st.WriteStallSeconds < writeStallMax.Seconds() || st.WriteStallSeconds > took.Seconds() {
		t.Fatalf("one write over half the head budget, %v: stalls %d, %v s stalled", took, st.WriteStallsTotal, st.WriteStallSeconds)
	}
}

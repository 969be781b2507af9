package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// resRefBatch is a batch whose traces have spans of several services on
// several hosts, interleaved, plus (odd parts) late spans of the previous
// part's traces from other processes: the head's buffers then hold runs
// from several batches, each with its own references.
func resRefBatch(part int) []model.Span {
	spans := newGen(uint64(300+part)).batch(400, 1_700_000_000e9+uint64(part)*40e9, 5e6)
	if part%2 == 1 {
		prev := resRefBatch(part - 1)
		for i := 0; i < len(prev); i += 7 {
			late := prev[i]
			late.SpanID = model.SpanID{0xee, byte(part), byte(i >> 8), byte(i)}
			late.Service = "late-" + late.Service
			late.Resource = resourceFor(late.Service, i%3)
			late.StartUnixNano += 1e6
			late.EndUnixNano += 1e6
			// Two spans in a row from the same late process: a run of
			// two, the second a reference.
			late2 := late
			late2.SpanID[0] = 0xef
			spans = append(spans, late, late2)
		}
	}
	return spans
}

// resourceRefs counts the spans of the head whose resource is a reference,
// and the bytes the head's buffers would take with every resource in full.
func resourceRefs(t *testing.T, e *Engine) (spans, refs, held, full int) {
	t.Helper()
	e.head.each(func(ht *headTrace) {
		held += len(ht.buf)
		err := forEachFramedAt(ht.buf, func(off, n int) error {
			d := spanDec(ht.buf, off, n)
			var r rawSpan
			parseRawHead(&d, &r, nil)
			if d.err != nil {
				return d.err
			}
			spans++
			full += n + 4
			if isResRef(ht.buf, int(r.scopeVer.off+r.scopeVer.n)) {
				refs++
				full += int(r.resource.n) - (d.off - int(r.scopeVer.off+r.scopeVer.n))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("head trace %s: %v", ht.sum.TraceID, err)
		}
	})
	return
}

// resRefQueries search by a resource attribute, a service only late
// processes have, and a span attribute.
var resRefQueries = map[string]store.Query{
	"resource": {Attrs: []store.AttrFilter{{Scope: store.ScopeResource, Key: "host.name", Op: store.OpEq, Value: model.Str("search-2.prod.internal")}}, Limit: 1000},
	"late":     {Attrs: []store.AttrFilter{{Scope: store.ScopeResource, Key: "service.name", Op: store.OpEq, Value: model.Str("late-payment")}}, Limit: 1000},
	"service":  {Service: "late-cart", Limit: 1000},
	"span":     {Attrs: []store.AttrFilter{{Key: "http.request.method", Op: store.OpEq, Value: model.Str("POST")}}, Limit: 1000},
}

func checkResRefQueries(t *testing.T, e *Engine, all []model.Span, phase string) {
	t.Helper()
	checkAllTraces(t, e, all)
	for name, q := range resRefQueries {
		want := bruteSearch(all, q)
		if len(want) == 0 {
			t.Fatalf("%s: query %s matches nothing: the test data is wrong", phase, name)
		}
		res, err := e.Search(context.Background(), q)
		if err != nil {
			t.Fatalf("%s: %s: %v", phase, name, err)
		}
		if len(res) != len(want) {
			t.Fatalf("%s: %s: %d results, want %d", phase, name, len(res), len(want))
		}
	}
	if phase == "head" {
		return // the head's resource attributes enter the catalog with the cut
	}
	if vals, err := e.AttributeValues(context.Background(), store.ScopeResource, "host.name", store.TimeRange{}, 1000); err != nil || len(vals) < 8 {
		t.Fatalf("%s: resource host names %v, %v", phase, vals, err)
	}
}

// Spans whose resources are references to earlier spans' come back exactly
// from the head, from a level-0 block (before and after a reopen) and from
// the Parquet block it converts to, by id and by search.
func TestResourceReferencesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e := openT(t, testOpts(dir))
	var all []model.Span
	for part := 0; part < 2; part++ {
		spans := resRefBatch(part)
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
	}
	n, refs, held, full := resourceRefs(t, e)
	if n != len(all) || refs < n/2 {
		t.Fatalf("head: %d spans, %d with a resource reference; want %d spans, most with one", n, refs, len(all))
	}
	t.Logf("head: %d spans, %d resource references, %.0f bytes/span against %.0f in full", n, refs, float64(held)/float64(n), float64(full)/float64(n))
	checkResRefQueries(t, e, all, "head")

	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 1 || pq != 0 {
		t.Fatalf("after the cut: %d level-0 and %d Parquet blocks", l0, pq)
	}
	checkResRefQueries(t, e, all, "level 0")
	e.Close()

	e = openT(t, testOpts(dir))
	defer e.Close()
	checkResRefQueries(t, e, all, "level 0 reopened")
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
		t.Fatalf("after conversion: %d level-0 and %d Parquet blocks", l0, pq)
	}
	checkResRefQueries(t, e, all, "Parquet")
}

// A reference must not be resolved outside its buffer: a span alone, or
// one whose distance or length point past the bytes before it, is corrupt.
func TestResourceReferenceBounds(t *testing.T) {
	spans := resRefBatch(0)[:3]
	spans[1].Resource, spans[2].Resource = spans[0].Resource, spans[0].Resource
	var run resRun
	var buf []byte
	for i := range spans {
		buf = appendFramedRes(buf, &spans[i], nil, &run)
	}
	got, err := decodeFramed(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	sameSpans(t, spans, got)
	var offs, lens []int
	_ = forEachFramedAt(buf, func(off, n int) error { offs, lens = append(offs, off), append(lens, n); return nil })
	second := buf[offs[1] : offs[1]+lens[1]]
	if full := appendSpan(nil, &spans[1]); len(second) >= len(full)-minResRef {
		t.Fatalf("second span takes %d bytes, in full %d: no reference", len(second), len(full))
	}
	var s model.Span
	if err := decodeSpan(second, &s); err == nil {
		t.Fatal("a span with a reference decoded without the bytes it refers to")
	}
	var r rawSpan
	if err := parseRaw(second, 0, len(second), &r, nil); err == nil {
		t.Fatal("a span with a reference parsed without the bytes it refers to")
	}
	// Distances in the span's own bytes: the reference sits after the
	// fixed fields and the six strings.
	d := spanDec(buf, offs[1], lens[1])
	parseRawHead(&d, &r, nil)
	at := int(r.scopeVer.off + r.scopeVer.n)
	if !isResRef(buf, at) {
		t.Fatal("no reference where the resource starts")
	}
	for _, bad := range [][]byte{
		{0x80, 0, 0, 5},                   // distance 0
		{0x80, 0, 0x10, 0x11},             // longer than the distance
		{0x80, 0, 0xff, 0xff, 0x7f, 0x01}, // before the buffer
	} {
		p := append(append(append([]byte(nil), buf[:at]...), bad...), buf[d.off:offs[1]+lens[1]]...)
		if err := decodeSpanAt(p, offs[1], len(p)-offs[1], &s, nil); err == nil {
			t.Fatalf("reference % x decoded", bad)
		}
	}
}

const resRefKillChildEnv = "TRACEDX_ENGINE_RESREF_KILL_DIR"

// Batches with resource references, acknowledged and then killed before
// any cut, come back exactly from the WAL: replayed into the head, then
// cut and converted.
func TestResourceReferencesSurviveKill(t *testing.T) {
	const parts = 4
	if dir := os.Getenv(resRefKillChildEnv); dir != "" {
		e, err := Open(context.Background(), testOpts(dir))
		if err != nil {
			fmt.Println("open failed:", err)
			os.Exit(2)
		}
		for part := 0; part < parts; part++ {
			if err := e.Write(context.Background(), resRefBatch(part)); err != nil {
				fmt.Println("write failed:", err)
				os.Exit(2)
			}
			fmt.Printf("ack %d\n", part)
		}
		select {} // killed by the parent
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	localBlocksOnly(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestResourceReferencesSurviveKill$")
	cmd.Env = append(os.Environ(), resRefKillChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := 0
	for acked < parts && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "ack ") {
			acked++
		} else {
			t.Logf("child: %s", sc.Text())
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if acked < parts {
		t.Fatalf("child acknowledged %d of %d batches", acked, parts)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "blocks")); len(ents) != 0 {
		t.Fatalf("%d blocks: the spans were to be in the WAL only", len(ents))
	}
	var all []model.Span
	for part := 0; part < parts; part++ {
		all = append(all, resRefBatch(part)...)
	}
	e := openT(t, testOpts(dir))
	defer e.Close()
	if st := e.Stats(); st.HeadSpans != int64(len(all)) {
		t.Fatalf("replayed %d spans into the head, want %d", st.HeadSpans, len(all))
	}
	if _, refs, _, _ := resourceRefs(t, e); refs < len(all)/2 {
		t.Fatalf("replayed head holds %d resource references for %d spans", refs, len(all))
	}
	checkResRefQueries(t, e, all, "replayed")
	ctx := context.Background()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkResRefQueries(t, e, all, "replayed, level 0")
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	checkResRefQueries(t, e, all, "replayed, Parquet")
}

// v1Spans is what testdata/v1store holds: part 0 in a level-0 block, part
// 1 in the WAL, written by the build before resource references
// (ad1a684) with testOpts, Write, Flush, Write, Close.
func v1Spans(part int) []model.Span {
	return newGen(uint64(77+part)).batch(60, 1_700_000_000e9+uint64(part)*60e9, 7e6)
}

// A data directory written before resource references (a level-0 block
// with the old magic, a WAL of full spans) opens, replays and converts
// with every span intact, and takes new writes beside it.
func TestReadsStoreWrittenBeforeResourceReferences(t *testing.T) {
	localBlocksOnly(t)
	dir := t.TempDir()
	copyDir(t, filepath.Join("testdata", "v1store"), dir)
	e := openT(t, testOpts(dir))
	defer func() { e.Close() }()
	old := append(v1Spans(0), v1Spans(1)...)
	if st := e.Stats(); st.BlockSpans != int64(len(v1Spans(0))) || st.HeadSpans != int64(len(v1Spans(1))) {
		t.Fatalf("opened: %d spans in blocks and %d in the head, want %d and %d", st.BlockSpans, st.HeadSpans, len(v1Spans(0)), len(v1Spans(1)))
	}
	checkAllTraces(t, e, old)
	ctx := context.Background()
	fresh := resRefBatch(0)
	if err := e.Write(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	all := append(old, fresh...)
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, _ := blockFormats(e); l0 != 2 {
		t.Fatalf("%d level-0 blocks, want the old and a new one", l0)
	}
	e.Close()
	e = openT(t, testOpts(dir))
	checkAllTraces(t, e, all)
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	checkAllTraces(t, e, all)
}

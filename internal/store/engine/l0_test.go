package engine

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

func blockFormats(e *Engine) (l0, parquet int) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, b := range e.blocks {
		if b.l0 != nil {
			l0++
		} else {
			parquet++
		}
	}
	return l0, parquet
}

// copyDir copies the files of a block directory tree (one level of
// subdirectories) for simulating what a crash leaves on disk.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if en.IsDir() {
			copyDir(t, filepath.Join(src, en.Name()), filepath.Join(dst, en.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, en.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A head cut writes level-0 blocks; the process stops (the head is not
// flushed on Close, and the cut already truncated the WAL) before any
// compaction: on reopen every span is served from the level-0 files, by
// id, search and catalog, and converting them to Parquet keeps them all.
func TestLevel0BlocksSurviveReopenAndConvert(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e := openT(t, testOpts(dir))
	g := newGen(11)
	var all []model.Span
	for i := 0; i < 4; i++ {
		spans := g.batch(2000, 1_700_000_000e9+uint64(i)*30e9, 5e6)
		if i > 0 {
			// A trace split over two level-0 blocks.
			late := all[0]
			late.SpanID = model.SpanID{byte(i), 0xab}
			late.StartUnixNano += uint64(i)
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
	if l0, pq := blockFormats(e); l0 != 4 || pq != 0 {
		t.Fatalf("after cuts: %d level-0 and %d Parquet blocks, want 4 and 0", l0, pq)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "wal"))
	var walBytes int64
	for _, en := range ents {
		if fi, err := en.Info(); err == nil {
			walBytes += fi.Size()
		}
	}
	if walBytes != 0 {
		t.Fatalf("WAL still holds %d bytes after every span went to a level-0 block", walBytes)
	}
	e.Close()

	e = openT(t, testOpts(dir))
	defer e.Close()
	st := e.Stats()
	if st.HeadSpans != 0 || st.BlockSpans != int64(len(all)) {
		t.Fatalf("reopened: %+v", st)
	}
	t.Logf("level-0 blocks: %.1f bytes/span", float64(st.BlockBytes)/float64(st.BlockSpans))
	checkAllTraces(t, e, all)
	errStatus := model.StatusError
	for name, q := range map[string]store.Query{
		"service":  {Service: "payment", Limit: 10},
		"status":   {Status: &errStatus, Limit: 10},
		"attr":     {Attrs: []store.AttrFilter{{Key: "http.request.method", Op: store.OpEq, Value: model.Str("POST")}}, Limit: 10},
		"resource": {Attrs: []store.AttrFilter{{Scope: store.ScopeResource, Key: "host.name", Op: store.OpEq, Value: model.Str("search-2.prod.internal")}}, Limit: 10},
	} {
		want := bruteSearch(all, q)
		res, err := e.Search(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(res) != len(want) {
			t.Fatalf("%s: %d results, want %d", name, len(res), len(want))
		}
		for i := range res {
			if res[i].TraceID != want[i] {
				t.Fatalf("%s: result %d is %s, want %s", name, i, res[i].TraceID, want[i])
			}
		}
	}
	if names, _ := e.AttributeNames(ctx, store.ScopeResource, store.TimeRange{}); !contains(names, "host.name") {
		t.Fatalf("resource attribute names from level-0 blocks: %v", names)
	}

	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
		t.Fatalf("after compaction: %d level-0 and %d Parquet blocks, want 0 and 1", l0, pq)
	}
	checkAllTraces(t, e, all)
	if vals, _ := e.AttributeValues(ctx, store.ScopeSpan, "http.request.method", store.TimeRange{}, 10); len(vals) != 4 {
		t.Fatalf("attribute values after conversion: %v", vals)
	}
	blocks := storedBlocks(t, dir)
	if len(blocks) != 1 {
		t.Fatalf("%d blocks after conversion, want 1", len(blocks))
	}
	if _, err := blockStorageOf(t, dir).ReadAll(ctx, blocks[0], fileData); err != nil {
		t.Fatalf("converted block has no Parquet file: %v", err)
	}
}

// A crash after a compaction committed its output but before it deleted
// the inputs leaves both on disk; Open must drop the inputs so no span is
// returned twice. Checked for a level-0 conversion and a Parquet merge.
func TestCrashBetweenCompactionCommitAndInputDelete(t *testing.T) {
	localBlocksOnly(t)
	dir := t.TempDir()
	ctx := context.Background()
	o := testOpts(dir)
	o.BlockMaxSpans = 1 << 20
	e := openT(t, o)
	defer func() { e.Close() }()
	g := newGen(12)
	var all []model.Span
	cut := func() {
		spans := g.batch(1500, 1_700_000_000e9+uint64(len(all))*1e7, 3e6)
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	blocksDir := filepath.Join(dir, "blocks")
	// crashAfter runs compact with a copy of the blocks as they were before
	// it, then "crashes" (Close, and the inputs it deleted reappear), and
	// checks the reopened engine.
	crashAfter := func(name string, compact func()) {
		saved := t.TempDir()
		copyDir(t, blocksDir, saved)
		compact()
		if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
			t.Fatalf("%s: %d level-0 and %d Parquet blocks, want 0 and 1", name, l0, pq)
		}
		e.Close()
		copyDir(t, saved, blocksDir)
		e = openT(t, o)
		if st := e.Stats(); st.Blocks != 1 || st.BlockSpans != int64(len(all)) {
			t.Fatalf("%s: after reopen %d blocks with %d spans, want 1 with %d", name, st.Blocks, st.BlockSpans, len(all))
		}
		checkAllTraces(t, e, all)
		ents, _ := os.ReadDir(blocksDir)
		if len(ents) != 1 {
			t.Fatalf("%s: %d block directories, want 1", name, len(ents))
		}
	}
	// Four level-0 blocks converted to one Parquet block.
	for i := 0; i < 4; i++ {
		cut()
	}
	crashAfter("level-0 conversion", func() {
		if err := e.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	})
	// Three more converted one by one make four small Parquet blocks,
	// merged into one.
	for i := 0; i < 3; i++ {
		cut()
		if err := e.convertAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if l0, pq := blockFormats(e); l0 != 0 || pq != 4 {
		t.Fatalf("before merge: %d level-0 and %d Parquet blocks, want 0 and 4", l0, pq)
	}
	crashAfter("Parquet merge", func() {
		if err := e.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// Corrupt level-0 data is reported, never decoded into garbage.
func TestLevel0ChecksumMismatch(t *testing.T) {
	localBlocksOnly(t)
	dir := t.TempDir()
	ctx := context.Background()
	e := openT(t, testOpts(dir))
	spans := newGen(13).batch(500, 1_700_000_000e9, 1e6)
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.Close()
	ents, _ := os.ReadDir(filepath.Join(dir, "blocks"))
	p := filepath.Join(dir, "blocks", ents[0].Name(), fileL0)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(l0Magic)+10] ^= 0xff // inside the first chunk
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e = openT(t, testOpts(dir))
	defer e.Close()
	// Chunks hold traces in id order: the smallest id is in the first.
	first := spans[0].TraceID
	for _, sp := range spans {
		if idLess(&sp.TraceID, &first) {
			first = sp.TraceID
		}
	}
	if _, err := e.Trace(ctx, first, store.TimeRange{}); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt chunk: err = %v", err)
	}
}

// convertAll converts level-0 blocks only (no Parquet merge).
func (e *Engine) convertAll(ctx context.Context) error {
	for {
		e.bgMu.Lock()
		did, err := e.convertOnce(ctx, true, e.opts.BlockMaxSpans, time.Time{})
		e.bgMu.Unlock()
		if err != nil || !did {
			return err
		}
	}
}

// Level-0 blocks wait for the next compaction round while spans keep
// arriving, and are converted as soon as ingest stops, without waiting
// for that round, in outputs of at most a quarter block each.
func TestQuietStoreConvertsLevel0(t *testing.T) {
	ctx := context.Background()
	o := testOpts(t.TempDir())
	// A write every 20 ms must never look like a pause: at 100 ms between
	// looks, one write held up that long by a loaded disk's fsync or by the
	// scheduler lets the store convert while the test is still writing.
	o.IdleTimeout, o.FlushInterval, o.quietCheck = time.Second, 50*time.Millisecond, 500*time.Millisecond
	o.BlockMaxSpans = 4000 // early conversion from 20 spans on, outputs of ≤ 1000
	e := openT(t, o)
	defer e.Close()
	g := newGen(3)
	var all []model.Span
	base := uint64(time.Now().UnixNano())
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; {
		spans := g.trace(base + uint64(len(all))*1000)
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l0, pq := blockFormats(e); l0 == 0 || pq != 0 {
		t.Fatalf("while writing: %d level-0 and %d Parquet blocks, want level-0 blocks only", l0, pq)
	}
	// The last traces are cut an idle timeout after the last write and
	// converted at the next look: under 2 s, more on a loaded machine.
	waitForWithin(t, 20*time.Second, func() bool {
		l0, pq := blockFormats(e)
		return l0 == 0 && pq > 0 && e.Stats().BlockSpans == int64(len(all))
	})
	e.mu.RLock()
	for _, b := range e.blocks {
		// A block is ≤ 1000 spans unless one level-0 input alone was more.
		if b.meta.Spans > 1000+int64(len(all))/10 {
			t.Errorf("converted block of %d spans, want outputs of about 1000 at most", b.meta.Spans)
		}
	}
	e.mu.RUnlock()
	checkAllTraces(t, e, all)
}

// With tail sampling deciding about traces, a pause does not convert
// level-0 blocks early: a decision may still be on its way, and a dropped
// trace converted before it would stay in Parquet until a merge.
func TestQuietStoreWaitsForSamplingDecisions(t *testing.T) {
	ctx := context.Background()
	o := testOpts(t.TempDir())
	o.quietCheck, o.BlockMaxSpans = 20*time.Millisecond, 4000
	e := openT(t, o)
	defer e.Close()
	spans := newGen(4).batch(500, uint64(time.Now().UnixNano()), 1e6)
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	e.Decide(spans[0].TraceID, "kept: error")
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // 15 looks at a quiet store
	if l0, pq := blockFormats(e); l0 != 1 || pq != 0 {
		t.Fatalf("%d level-0 and %d Parquet blocks, want the level-0 block left to the compaction round", l0, pq)
	}
}

// A converted block is opened from the index and meta its builder has in
// memory; they must be what a restart reads from its files.
func TestConvertedBlockOpensAsReadBack(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	g := newGen(23)
	writeCompacted(t, e, g.batch(600, 1_700_000_000e9, 5e6), 1500)
	ctx := context.Background()
	n := 0
	for _, b := range e.snap().blocks {
		if b.l0 != nil {
			t.Fatal("a level-0 block is left after compaction")
		}
		disk, err := openBlock(ctx, e.storage, b.id)
		if err != nil {
			t.Fatal(err)
		}
		disk.meta.Catalog = nil
		if !reflect.DeepEqual(b.meta, disk.meta) {
			t.Errorf("block %s meta in memory %+v, on disk %+v", b.id, b.meta, disk.meta)
		}
		if !reflect.DeepEqual(b.idx, disk.idx) {
			t.Errorf("block %s: index in memory differs from the one on disk", b.id)
		}
		disk.release()
		b.release()
		n++
	}
	if n == 0 {
		t.Fatal("no block")
	}
}

// A quiet store's conversion waits while memory is tight (the head and
// cold tier of a burst still held) and runs once it is not.
func TestQuietConversionWaitsWhileMemoryIsTight(t *testing.T) {
	o := testOpts(t.TempDir()) // IdleTimeout of an hour: the wait's bound is not reached
	o.quietCheck, o.BlockMaxSpans = 20*time.Millisecond, 4000
	var tight atomic.Bool
	tight.Store(true)
	var asked atomic.Int64
	o.MemoryTight = func() bool { asked.Add(1); return tight.Load() }
	e := openT(t, o)
	defer e.Close()
	spans := writeLevel0(t, e, 5)
	waitFor(t, func() bool { return asked.Load() >= 3 }) // the conversion is waiting
	if l0, pq := blockFormats(e); l0 != 1 || pq != 0 {
		t.Fatalf("while memory is tight: %d level-0 and %d Parquet blocks, want the level-0 block kept", l0, pq)
	}
	tight.Store(false)
	waitFor(t, func() bool { l0, pq := blockFormats(e); return l0 == 0 && pq > 0 })
	checkAllTraces(t, e, spans)
}

// The wait is bounded: memory that stays tight (held by something a
// conversion does not wait for) delays conversions by IdleTimeout, never
// stops them.
func TestConversionWaitsForMemoryAtMostIdleTimeout(t *testing.T) {
	o := testOpts(t.TempDir())
	o.quietCheck, o.BlockMaxSpans, o.IdleTimeout = 20*time.Millisecond, 4000, 200*time.Millisecond
	o.MemoryTight = func() bool { return true }
	e := openT(t, o)
	defer e.Close()
	spans := writeLevel0(t, e, 6)
	waitFor(t, func() bool { l0, pq := blockFormats(e); return l0 == 0 && pq > 0 })
	checkAllTraces(t, e, spans)
}

// writeLevel0 writes 500 spans and cuts them into one level-0 block.
func writeLevel0(t *testing.T, e *Engine, seed uint64) []model.Span {
	t.Helper()
	ctx := context.Background()
	spans := newGen(seed).batch(500, uint64(time.Now().UnixNano()), 1e6)
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return spans
}

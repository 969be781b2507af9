package engine

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Queries read a level-0 chunk from disk once: once a trace of each chunk
// was read, the block's file can be zeroed on disk and every trace still
// reads whole (by id and batched, as a search fetches them) from the
// cached chunks; background reads do not fill the cache, and a block that
// goes away takes its chunks with it.
func TestLevel0ChunkCacheServesQueryReads(t *testing.T) {
	dir := t.TempDir()
	spans := newGen(17).batch(3000, 1_700_000_000e9, 1e6)
	e, b := level0Engine(t, dir, spans)
	chunks := len(b.l0.chunkRaw)
	if chunks < 2 {
		t.Fatalf("the block has %d chunk, want several", chunks)
	}

	// A background read leaves the cache alone.
	if _, err := b.readTraceOnce(0); err != nil {
		t.Fatal(err)
	}
	if n := cachedChunks(b); n != 0 {
		t.Fatalf("a background read cached %d chunks", n)
	}

	checkAllTraces(t, e, spans)
	if n := cachedChunks(b); n != chunks {
		t.Fatalf("%d of the block's %d chunks cached after reading every trace", n, chunks)
	}

	ents, err := os.ReadDir(filepath.Join(dir, "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blocks", ents[0].Name(), fileL0)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, fi.Size()), 0o644); err != nil {
		t.Fatal(err)
	}
	checkAllTraces(t, e, spans)
	if _, err := b.readTraceOnce(0); err == nil {
		t.Fatal("a background read of the zeroed file succeeded: it did not read the disk")
	}

	e.Close()
	if n := cachedChunks(b); n != 0 {
		t.Fatalf("%d chunks of a closed block still cached", n)
	}
	if l0Chunks.size != 0 {
		t.Fatalf("cache holds %d bytes with no block open", l0Chunks.size)
	}
}

// Chunks beyond the bound go, least recently read first; a chunk of more
// than an eighth of the bound is not kept.
func TestLevel0ChunkCacheEvictsLeastRecent(t *testing.T) {
	c := newL0ChunkCache(8 << 10)
	b := &block{}
	for i := range 8 {
		c.put(l0ChunkRef{b, i}, make([]byte, 1<<10))
	}
	if c.get(l0ChunkRef{b, 0}) == nil {
		t.Fatal("chunk 0 not cached")
	}
	c.put(l0ChunkRef{b, 8}, make([]byte, 1<<10))
	if c.get(l0ChunkRef{b, 1}) != nil {
		t.Fatal("chunk 1, the least recently read, was kept over the bound")
	}
	for _, i := range []int{0, 2, 3, 4, 5, 6, 7, 8} {
		if c.get(l0ChunkRef{b, i}) == nil {
			t.Fatalf("chunk %d evicted", i)
		}
	}
	c.put(l0ChunkRef{b, 9}, make([]byte, 2<<10))
	if c.get(l0ChunkRef{b, 9}) != nil || c.size != 8<<10 {
		t.Fatalf("a chunk of a quarter of the bound was cached (size %d)", c.size)
	}
	c.dropBlock(b)
	if c.size != 0 || len(c.chunks) != 0 {
		t.Fatalf("after dropBlock: %d bytes, %d chunks", c.size, len(c.chunks))
	}
}

func cachedChunks(b *block) int {
	l0Chunks.mu.Lock()
	defer l0Chunks.mu.Unlock()
	n := 0
	for r := range l0Chunks.chunks {
		if r.b == b {
			n++
		}
	}
	return n
}

// Queries decode level-0 traces in place: the strings of the spans they
// return point into the cached chunk, by id and batched, and a trace with
// spans both in the head and in a level-0 block still reads whole and in
// order.
func TestLevel0QueryReadsDecodeInPlace(t *testing.T) {
	spans := newGen(23).batch(600, 1_700_000_000e9, 1e6)
	half := len(spans) / 2
	e, b := level0Engine(t, t.TempDir(), spans[:half])
	defer e.Close()

	// A trace of the block alone.
	var id model.TraceID
	for _, s := range spans[:half] {
		if b.idx.find(s.TraceID) >= 0 && !slices.ContainsFunc(spans[half:], func(o model.Span) bool { return o.TraceID == s.TraceID }) {
			id = s.TraceID
			break
		}
	}
	if id.IsZero() {
		t.Fatal("no trace stored only in the block")
	}
	byID, err := e.Trace(context.Background(), id, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	batched, err := e.Traces(context.Background(), []store.TraceRef{{ID: id}})
	if err != nil {
		t.Fatal(err)
	}
	raw := l0Chunks.get(l0ChunkRef{b, b.l0.chunkOf(b.idx.find(id))})
	if raw == nil {
		t.Fatal("the trace's chunk is not cached after a query read it")
	}
	for name, got := range map[string][]model.Span{"by id": byID, "batched": batched[0]} {
		if len(got) == 0 {
			t.Fatalf("%s: no spans", name)
		}
		for _, s := range got {
			if !within(s.Name, raw) {
				t.Fatalf("%s: span name %q is a copy, not a view of the cached chunk", name, s.Name)
			}
		}
	}

	writeRetrying(t, e, spans[half:])
	checkAllTraces(t, e, spans)
}

// level0Engine opens an engine in dir with an empty chunk cache of its
// own and spans flushed into one level-0 block, which it returns.
func level0Engine(t *testing.T, dir string, spans []model.Span) (*Engine, *block) {
	t.Helper()
	localBlocksOnly(t)
	prev := l0Chunks
	l0Chunks = newL0ChunkCache(defaultL0ChunkCacheBytes)
	t.Cleanup(func() { l0Chunks = prev })
	e := openT(t, testOpts(dir))
	writeRetrying(t, e, spans)
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 1 || pq != 0 {
		t.Fatalf("%d level-0 and %d Parquet blocks, want 1 and 0", l0, pq)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e, e.blocks[0]
}

// within reports whether s's bytes lie inside buf.
func within(s string, buf []byte) bool {
	if len(s) == 0 || len(buf) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	lo := uintptr(unsafe.Pointer(&buf[0]))
	return p >= lo && p+uintptr(len(s)) <= lo+uintptr(len(buf))
}

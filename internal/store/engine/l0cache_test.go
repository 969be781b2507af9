package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// Queries read a level-0 chunk from disk once: once a trace of each chunk
// was read, the block's file can be zeroed on disk and every trace still
// reads whole (by id and batched, as a search fetches them) from the
// cached chunks; background reads do not fill the cache, and a block that
// goes away takes its chunks with it.
func TestLevel0ChunkCacheServesQueryReads(t *testing.T) {
	localBlocksOnly(t)
	prev := l0Chunks
	l0Chunks = newL0ChunkCache(defaultL0ChunkCacheBytes)
	defer func() { l0Chunks = prev }()

	dir := t.TempDir()
	e := openT(t, testOpts(dir))
	spans := newGen(17).batch(3000, 1_700_000_000e9, 1e6)
	writeRetrying(t, e, spans)
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 1 || pq != 0 {
		t.Fatalf("%d level-0 and %d Parquet blocks, want 1 and 0", l0, pq)
	}
	e.mu.RLock()
	b := e.blocks[0]
	e.mu.RUnlock()
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

package engine

import "sync"

// A level-0 trace sits inside a 256 KiB S2 chunk that can only be
// decompressed whole, so reading one 20-span trace cost a whole chunk's
// read, CRC, decompression and a fresh 256 KiB buffer to zero and later
// collect. The newest traces of a live server are in level-0 blocks, and
// queries read them in groups: the three whole-trace searches of one
// dashboard or harness round find the same 20 traces, and opening a trace
// found by a search reads it again. Under ingest those decompressions were
// the largest share of query CPU and, by their allocations, of the GC
// cycles and assists that slowed every other request. Decompressed chunks
// read by queries are therefore kept in a small LRU; background reads
// (completion, conversion, scans) do not go through it, so they cannot
// push out what queries just read.

// defaultL0ChunkCacheBytes bounds the decompressed level-0 chunks kept for
// query reads: 32 chunks, more than the 20 traces of a search touch.
const defaultL0ChunkCacheBytes = 8 << 20

// l0Chunks is process-wide, like tracePages.
var l0Chunks = newL0ChunkCache(defaultL0ChunkCacheBytes)

type l0ChunkRef struct {
	b *block
	c int
}

type cachedChunk struct {
	raw  []byte
	used uint64 // the cache's clock at the last read
}

// l0ChunkCache is least-recently-read: it holds a few dozen chunks, so
// finding the one to evict by looking at all of them costs less than
// keeping them in order on every read.
type l0ChunkCache struct {
	mu     sync.Mutex
	max    int64
	size   int64
	clock  uint64
	chunks map[l0ChunkRef]*cachedChunk
}

func newL0ChunkCache(max int64) *l0ChunkCache {
	return &l0ChunkCache{max: max, chunks: map[l0ChunkRef]*cachedChunk{}}
}

// get returns a cached chunk. Chunks are never written after they are
// cached, so readers share them without references: an evicted chunk stays
// valid for as long as a reader holds it.
func (c *l0ChunkCache) get(r l0ChunkRef) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.chunks[r]
	if cc == nil {
		return nil
	}
	c.clock++
	cc.used = c.clock
	return cc.raw
}

// put keeps raw unless it is over an eighth of the bound.
func (c *l0ChunkCache) put(r l0ChunkRef, raw []byte) {
	size := int64(cap(raw))
	if size > c.max/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chunks[r] != nil {
		return
	}
	c.clock++
	c.chunks[r] = &cachedChunk{raw: raw, used: c.clock}
	c.size += size
	for c.size > c.max {
		var oldest l0ChunkRef
		least := c.clock + 1
		for ref, cc := range c.chunks {
			if cc.used < least {
				oldest, least = ref, cc.used
			}
		}
		c.size -= int64(cap(c.chunks[oldest].raw))
		delete(c.chunks, oldest)
	}
}

// dropBlock forgets the chunks of a closed block.
func (c *l0ChunkCache) dropBlock(b *block) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ref, cc := range c.chunks {
		if ref.b == b {
			c.size -= int64(cap(cc.raw))
			delete(c.chunks, ref)
		}
	}
}

// l0zbufs holds the buffers compressed chunks are read into on a cache
// miss; only the decompressed chunk is kept.
var l0zbufs sync.Pool

// l0QueryChunk returns decompressed chunk c for a query, from the cache or
// read and cached. The result must not be modified.
func (b *block) l0QueryChunk(c int) ([]byte, error) {
	ref := l0ChunkRef{b, c}
	if raw := l0Chunks.get(ref); raw != nil {
		return raw, nil
	}
	var zbuf []byte
	if p, ok := l0zbufs.Get().(*[]byte); ok {
		zbuf = *p
	}
	raw, zbuf, err := b.l0Chunk(c, zbuf, nil)
	l0zbufs.Put(&zbuf)
	if err != nil {
		return nil, err
	}
	l0Chunks.put(ref, raw)
	return raw, nil
}

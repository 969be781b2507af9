package engine

import (
	"fmt"

	"github.com/klauspost/compress/s2"

	"github.com/tracedx/tracedx/internal/model"
)

// The cold tier keeps the encoded spans of traces that memory pressure cut
// into blocks before they were idle, so that completing them later (handing
// them to OnTraceComplete) needs no read-back from blocks. It holds the
// level-0 block's own chunks (S2-compressed framed head bytes, see l0.go)
// that contain such traces, so keeping them costs a copy of bytes already
// compressed for the block, not a second compression. When the tier
// outgrows its budget the oldest chunks are dropped and their traces fall
// back to the read-back path, which is slower but gives the same result.
// All fields are guarded by Engine.pendingMu.

type coldChunk struct {
	data []byte // S2-compressed framed spans; nil once released or evicted
	live int    // pending parts still pointing into this chunk
	seq  uint64 // creation order
}

type coldRef struct {
	c      *coldChunk
	off, n uint32 // range of the trace's framed spans in the decompressed chunk
	spans  int
}

// pendingTrace is a trace cut before it was idle.
type pendingTrace struct {
	lastSeen int64
	// firstSeen is the earliest firstSeen of its cut parts: spans written
	// to it later count as open since then (Options.MaxOpen).
	firstSeen int64
	// flags and packed (a packed traceMeta) cover the spans cut so far.
	flags  uint32
	packed []byte
	// inHead: spans arrived after the cut, so the head holds the newest
	// ones and completes the trace (adding the parts below) when idle.
	inHead bool
	// older: the trace already had spans in blocks before it became
	// pending, which the parts do not cover; it completes by read-back.
	older bool
	parts []coldRef
}

// addMeta merges the meta of more spans of the trace.
func (p *pendingTrace) addMeta(id model.TraceID, m *traceMeta) {
	p.flags |= m.flags
	if p.packed == nil {
		p.packed = m.pack(nil)
		return
	}
	cur := unpackMeta(id, p.packed) // copies the strings: packed can be reused
	cur.merge(m)
	p.packed = cur.pack(p.packed[:0])
}

// meta unpacks the meta of the spans cut so far.
func (p *pendingTrace) meta(id model.TraceID) traceMeta { return unpackMeta(id, p.packed) }

type pendingRef struct {
	id       model.TraceID
	lastSeen int64
}

// complete reports whether the parts hold every span of the trace.
func (p *pendingTrace) complete() bool {
	if p.older {
		return false
	}
	for _, r := range p.parts {
		if r.c.data == nil {
			return false
		}
	}
	return true
}

type coldTier struct {
	chunks []*coldChunk // oldest first
	bytes  int64
	budget int64
	seq    uint64
}

// add registers a compressed chunk and evicts the oldest ones beyond the
// budget.
func (t *coldTier) add(c *coldChunk) {
	t.seq++
	c.seq = t.seq
	t.chunks = append(t.chunks, c)
	t.bytes += int64(len(c.data))
	for t.bytes > t.budget && len(t.chunks) > 1 {
		t.drop(t.chunks[0])
		t.trim()
	}
}

func (t *coldTier) drop(c *coldChunk) {
	if c.data != nil {
		t.bytes -= int64(len(c.data))
		c.data = nil
	}
}

// trim forgets released chunks at the front.
func (t *coldTier) trim() {
	i := 0
	for i < len(t.chunks) && t.chunks[i].data == nil {
		t.chunks[i] = nil
		i++
	}
	t.chunks = t.chunks[i:]
}

// release drops the parts' references.
func (t *coldTier) release(parts []coldRef) {
	for _, r := range parts {
		r.c.live--
		if r.c.live <= 0 {
			t.drop(r.c)
		}
	}
	t.trim()
}

// coldReader decompresses each chunk once per pass.
type coldReader struct {
	cache map[*coldChunk][]byte
	free  [][]byte
}

// forget drops decompressed chunks older than seq.
func (r *coldReader) forget(seq uint64) {
	for c, b := range r.cache {
		if c.seq < seq {
			delete(r.cache, c)
			r.free = append(r.free, b)
		}
	}
}

// framed returns the framed spans of the parts, concatenated, in a new
// buffer.
func (r *coldReader) framed(parts []coldRef) ([]byte, int, error) {
	if r.cache == nil {
		r.cache = map[*coldChunk][]byte{}
	}
	size, n := 0, 0
	for _, p := range parts {
		size += int(p.n)
		n += p.spans
	}
	out := make([]byte, 0, size)
	for _, p := range parts {
		raw, ok := r.cache[p.c]
		if !ok {
			if p.c.data == nil {
				return nil, 0, fmt.Errorf("cold chunk evicted")
			}
			var dst []byte
			if k := len(r.free); k > 0 {
				dst, r.free = r.free[k-1], r.free[:k-1]
			}
			var err error
			if n, derr := s2.DecodedLen(p.c.data); derr == nil && n > cap(dst) {
				dst = make([]byte, n)
			}
			if raw, err = s2.Decode(dst[:cap(dst)], p.c.data); err != nil {
				return nil, 0, fmt.Errorf("decompress cold chunk: %w", err)
			}
			r.cache[p.c] = raw
		}
		if int(p.off+p.n) > len(raw) {
			return nil, 0, fmt.Errorf("cold part out of range: %w", errCorrupt)
		}
		out = append(out, raw[p.off:p.off+p.n]...)
	}
	return out, n, nil
}

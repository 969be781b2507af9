package ingest

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
)

// An exporter that times out waiting for an acknowledgement re-sends the
// same batch; without care each retry stores the spans again and every
// count, duration histogram and detector sees them twice. A span is a
// duplicate when its ids and its content are identical to a span seen in
// the same request or among the last DedupWindowSpans accepted ones. Two
// halves of a Zipkin shared span or a span re-sent with more attributes
// differ in content and are both kept.

var dedupSeed = maphash.MakeSeed()

// spanKey hashes a span's ids and content. 64 bits: a false duplicate
// needs a collision among the window's entries (~2^-46 at 2^18 spans).
func spanKey(s *model.Span) uint64 {
	var h maphash.Hash
	h.SetSeed(dedupSeed)
	var num [8]byte
	u64 := func(v uint64) {
		binary.LittleEndian.PutUint64(num[:], v)
		_, _ = h.Write(num[:])
	}
	str := func(v string) {
		u64(uint64(len(v)))
		_, _ = h.WriteString(v)
	}
	attrs := func(a model.Attrs) {
		u64(uint64(len(a)))
		for i := range a {
			str(a[i].Key)
			v := &a[i].Value
			u64(uint64(v.Type))
			u64(uint64(v.Int))
			u64(math.Float64bits(v.Float))
			if v.Bool {
				u64(1)
			}
			str(v.Str)
			u64(uint64(len(v.Bytes)))
			_, _ = h.Write(v.Bytes)
		}
	}
	_, _ = h.Write(s.TraceID[:])
	_, _ = h.Write(s.SpanID[:])
	_, _ = h.Write(s.ParentSpanID[:])
	str(s.Name)
	str(s.Service)
	str(s.StatusMessage)
	str(s.TraceState)
	u64(uint64(s.Kind)<<32 | uint64(s.StatusCode))
	u64(s.StartUnixNano)
	u64(s.EndUnixNano)
	u64(uint64(s.Flags))
	u64(uint64(s.DroppedAttributesCount)<<32 | uint64(s.DroppedEventsCount))
	attrs(s.Attrs)
	u64(uint64(len(s.Events)))
	for i := range s.Events {
		u64(s.Events[i].TimeUnixNano)
		str(s.Events[i].Name)
		attrs(s.Events[i].Attrs)
	}
	u64(uint64(len(s.Links)))
	for i := range s.Links {
		_, _ = h.Write(s.Links[i].TraceID[:])
		_, _ = h.Write(s.Links[i].SpanID[:])
		attrs(s.Links[i].Attrs)
	}
	return h.Sum64()
}

// recentSpans remembers the keys of recently accepted spans in two
// generations: when the current one holds size/2 keys it becomes the
// previous one, so between size/2 and size keys are remembered and memory
// stays bounded (about 36 bytes a key, measured).
type recentSpans struct {
	mu        sync.Mutex
	half      int
	cur, prev map[uint64]struct{}
}

func newRecentSpans(size int) *recentSpans {
	if size <= 0 {
		return nil
	}
	half := max(size/2, 1)
	return &recentSpans{half: half, cur: make(map[uint64]struct{}, half)}
}

// dedupe drops spans whose key is in keys earlier or among the recent
// spans, compacting spans and keys in place; it returns both and the
// number dropped.
func (r *recentSpans) dedupe(spans []model.Span, keys []uint64) ([]model.Span, []uint64, int) {
	seen := make(map[uint64]struct{}, len(keys))
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	n := 0
	for i, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		if r != nil && r.has(k) {
			continue
		}
		spans[n], keys[n] = spans[i], k
		n++
	}
	dropped := len(spans) - n
	clear(spans[n:])
	return spans[:n], keys[:n], dropped
}

func (r *recentSpans) has(k uint64) bool {
	if _, ok := r.cur[k]; ok {
		return true
	}
	_, ok := r.prev[k]
	return ok
}

// remember records keys of spans that are now durable. Keys of a failed
// write are not remembered, so the client's retry is stored.
func (r *recentSpans) remember(keys []uint64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if len(r.cur) >= r.half {
			r.prev, r.cur = r.cur, make(map[uint64]struct{}, r.half)
		}
		r.cur[k] = struct{}{}
	}
}

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

// spanKey hashes a span's scope (tenant), ids and content, serialised into scratch (which
// it returns for reuse: one hash call over a buffer costs a fraction of
// many small writes). 64 bits: a false duplicate needs a collision among
// the window's entries (~2^-46 at 2^18 spans).
func spanKey(scratch []byte, scope string, s *model.Span) ([]byte, uint64) {
	b := scratch[:0]
	str := func(v string) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	str(scope)
	attrs := func(a model.Attrs) {
		b = binary.AppendUvarint(b, uint64(len(a)))
		for i := range a {
			str(a[i].Key)
			v := &a[i].Value
			b = append(b, byte(v.Type))
			switch v.Type {
			case model.TypeInt:
				b = binary.LittleEndian.AppendUint64(b, uint64(v.Int))
			case model.TypeDouble:
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v.Float))
			case model.TypeBool:
				if v.Bool {
					b = append(b, 1)
				} else {
					b = append(b, 0)
				}
			case model.TypeBytes:
				str(string(v.Bytes))
			default:
				str(v.Str)
			}
		}
	}
	b = append(b, s.TraceID[:]...)
	b = append(b, s.SpanID[:]...)
	b = append(b, s.ParentSpanID[:]...)
	str(s.Name)
	str(s.Service)
	str(s.StatusMessage)
	str(s.TraceState)
	b = append(b, byte(s.Kind), byte(s.StatusCode))
	b = binary.LittleEndian.AppendUint64(b, s.StartUnixNano)
	b = binary.LittleEndian.AppendUint64(b, s.EndUnixNano)
	b = binary.AppendUvarint(b, uint64(s.Flags))
	b = binary.AppendUvarint(b, uint64(s.DroppedAttributesCount))
	b = binary.AppendUvarint(b, uint64(s.DroppedEventsCount))
	attrs(s.Attrs)
	b = binary.AppendUvarint(b, uint64(len(s.Events)))
	for i := range s.Events {
		b = binary.LittleEndian.AppendUint64(b, s.Events[i].TimeUnixNano)
		str(s.Events[i].Name)
		attrs(s.Events[i].Attrs)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Links)))
	for i := range s.Links {
		b = append(b, s.Links[i].TraceID[:]...)
		b = append(b, s.Links[i].SpanID[:]...)
		attrs(s.Links[i].Attrs)
	}
	return b, maphash.Bytes(dedupSeed, b)
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

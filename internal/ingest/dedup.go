package ingest

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
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
	b := appendKeyStr(scratch[:0], scope)
	b = append(b, s.TraceID[:]...)
	b = append(b, s.SpanID[:]...)
	b = append(b, s.ParentSpanID[:]...)
	b = appendKeyStr(b, s.Name)
	b = appendKeyStr(b, s.Service)
	b = appendKeyStr(b, s.StatusMessage)
	b = appendKeyStr(b, s.TraceState)
	b = append(b, byte(s.Kind), byte(s.StatusCode))
	b = binary.LittleEndian.AppendUint64(b, s.StartUnixNano)
	b = binary.LittleEndian.AppendUint64(b, s.EndUnixNano)
	b = binary.AppendUvarint(b, uint64(s.Flags))
	b = binary.AppendUvarint(b, uint64(s.DroppedAttributesCount))
	b = binary.AppendUvarint(b, uint64(s.DroppedEventsCount))
	b = appendKeyAttrs(b, s.Attrs)
	b = binary.AppendUvarint(b, uint64(len(s.Events)))
	for i := range s.Events {
		b = binary.LittleEndian.AppendUint64(b, s.Events[i].TimeUnixNano)
		b = appendKeyStr(b, s.Events[i].Name)
		b = appendKeyAttrs(b, s.Events[i].Attrs)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Links)))
	for i := range s.Links {
		b = append(b, s.Links[i].TraceID[:]...)
		b = append(b, s.Links[i].SpanID[:]...)
		b = appendKeyAttrs(b, s.Links[i].Attrs)
	}
	return b, maphash.Bytes(dedupSeed, b)
}

// appendKeyStr and appendKeyAttrs serialise for spanKey. Functions, not
// closures over the buffer, which made every append go through a pointer.
func appendKeyStr(b []byte, v string) []byte {
	if len(v) < 0x80 {
		b = append(b, byte(len(v))) // AppendUvarint's encoding
	} else {
		b = binary.AppendUvarint(b, uint64(len(v)))
	}
	return append(b, v...)
}

func appendKeyAttrs(b []byte, a model.Attrs) []byte {
	b = binary.AppendUvarint(b, uint64(len(a)))
	for i := range a {
		b = appendKeyStr(b, a[i].Key)
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
			b = appendKeyStr(b, string(v.Bytes))
		default:
			b = appendKeyStr(b, v.Str)
		}
	}
	return b
}

// recentSpans remembers the keys of the last accepted spans, oldest
// first in a ring, and finds them through an open-addressing table of
// twice the window's size: a lookup reads one or two adjacent slots, where
// the two Go maps this replaced cost two cache misses per new span (one
// in each half of the window) and a map rebuilt every half window.
type recentSpans struct {
	mu    sync.Mutex
	ring  []uint64 // keys in acceptance order; ring[next] is the oldest once full
	next  int
	full  bool
	table keyTable
}

func newRecentSpans(size int) *recentSpans {
	if size <= 0 {
		return nil
	}
	return &recentSpans{ring: make([]uint64, size), table: newKeyTable(size)}
}

// dedupe drops spans whose key is in keys earlier or among the recent
// spans, compacting spans and keys in place; it returns both and the
// number dropped.
func (r *recentSpans) dedupe(spans []model.Span, keys []uint64) ([]model.Span, []uint64, int) {
	seen := getKeyTable(len(keys))
	defer putKeyTable(seen)
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	n := 0
	for i, k := range keys {
		if !seen.insert(k) {
			continue
		}
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

func (r *recentSpans) has(k uint64) bool { return r.table.has(k) }

// remember records keys of spans that are now durable. Keys of a failed
// write are not remembered, so the client's retry is stored.
func (r *recentSpans) remember(keys []uint64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		// Two requests with the same span can both pass dedupe before
		// either is remembered; the ring holds each key once.
		if !r.table.insert(k) {
			continue
		}
		if r.full {
			r.table.remove(r.ring[r.next])
		}
		r.ring[r.next] = k
		if r.next++; r.next == len(r.ring) {
			r.next, r.full = 0, true
		}
	}
}

// keyTable is a set of span keys: open addressing with linear probing in
// a power-of-two array at most half full. Key 0 marks an empty slot, so
// the key 0 is stored as 1 (one more collision among 2^64).
type keyTable struct {
	slots []uint64
	shift uint // 64 - log2(len(slots))
	n     int
}

func newKeyTable(capacity int) keyTable {
	size := 16
	for size < 2*capacity {
		size *= 2
	}
	return keyTable{slots: make([]uint64, size), shift: uint(64 - bits.TrailingZeros(uint(size)))}
}

func tableKey(k uint64) uint64 {
	if k == 0 {
		return 1
	}
	return k
}

// home is k's first slot: keys are hashes already, so their top bits
// serve.
func (t *keyTable) home(k uint64) int {
	return int(k >> t.shift)
}

func (t *keyTable) has(k uint64) bool {
	k = tableKey(k)
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.slots[i] {
		case k:
			return true
		case 0:
			return false
		}
	}
}

// insert adds k and reports whether it was absent. The caller keeps the
// table at most half full (newKeyTable's capacity).
func (t *keyTable) insert(k uint64) bool {
	k = tableKey(k)
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		switch t.slots[i] {
		case k:
			return false
		case 0:
			t.slots[i] = k
			t.n++
			return true
		}
	}
}

// remove deletes k, moving later keys of its probe run back so that every
// key stays reachable from its home slot without tombstones.
func (t *keyTable) remove(k uint64) {
	k = tableKey(k)
	mask := len(t.slots) - 1
	i := t.home(k)
	for t.slots[i] != k {
		if t.slots[i] == 0 {
			return
		}
		i = (i + 1) & mask
	}
	t.slots[i] = 0
	t.n--
	for j := (i + 1) & mask; t.slots[j] != 0; j = (j + 1) & mask {
		h := t.home(t.slots[j])
		// The key at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			t.slots[i], t.slots[j] = t.slots[j], 0
			i = j
		}
	}
}

func (t *keyTable) reset() {
	clear(t.slots)
	t.n = 0
}

// Requests are deduplicated within themselves with a table each; pooled,
// as a request of a few hundred spans would otherwise build a map.
var keyTables sync.Pool

func getKeyTable(capacity int) *keyTable {
	if t, ok := keyTables.Get().(*keyTable); ok && len(t.slots) >= 2*capacity {
		return t
	}
	t := newKeyTable(capacity)
	return &t
}

func putKeyTable(t *keyTable) {
	if len(t.slots) > 1<<16 {
		return // a huge request's table is not worth keeping
	}
	t.reset()
	keyTables.Put(t)
}

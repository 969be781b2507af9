package server

import (
	"hash/maphash"
	"sync"

	"github.com/tracedx/tracedx/internal/findingstore"
)

// storedOnce drops the findings a trace already stored. Spans that arrive
// after a trace completed (a consumer that took the message late, a
// service whose exporter flushed late, a pooled query that ran under a
// finished request's context) complete the trace again, and its analysis
// finds again what it found the first time: stored twice, each would be
// listed, counted and alerted on twice. A finding is the same when its
// kind and first span are; a new kind or a finding about other spans (the
// late consumer's consumer_lag) is stored.
//
// It remembers the traces that stored findings most recently (recentMax),
// which covers late spans minutes after completion at any rate the
// analysis keeps up with; a re-completion older than that stores again.
type storedOnce struct {
	seed maphash.Seed
	mu   sync.Mutex
	seen map[string][]uint64 // trace id → keys of its stored findings
	ring []string            // trace ids in the order first stored
	next int
}

const recentMax = 1 << 15

func newStoredOnce() *storedOnce {
	return &storedOnce{seed: maphash.MakeSeed(), seen: map[string][]uint64{}}
}

// fresh returns the findings of fs (one trace's) not stored before and
// remembers them as stored.
func (o *storedOnce) fresh(fs []findingstore.Stored) []findingstore.Stored {
	if len(fs) == 0 {
		return fs
	}
	id := fs[0].TraceID
	o.mu.Lock()
	defer o.mu.Unlock()
	prev, known := o.seen[id]
	out := fs[:0]
	keys := prev
	for _, f := range fs {
		k := o.key(&f)
		if containsKey(prev, k) {
			continue
		}
		keys = append(keys, k)
		out = append(out, f)
	}
	if !known {
		if len(o.ring) < recentMax {
			o.ring = append(o.ring, id)
		} else {
			delete(o.seen, o.ring[o.next])
			o.ring[o.next] = id
			o.next = (o.next + 1) % recentMax
		}
	}
	o.seen[id] = keys
	return out
}

func (o *storedOnce) key(f *findingstore.Stored) uint64 {
	var h maphash.Hash
	h.SetSeed(o.seed)
	h.WriteString(f.Kind)
	h.WriteByte('/')
	if len(f.SpanIDs) > 0 {
		h.WriteString(f.SpanIDs[0])
	}
	return h.Sum64()
}

func containsKey(keys []uint64, k uint64) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

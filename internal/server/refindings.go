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
// It remembers the traces that completed with findings most recently
// (recentMax completions), which covers late spans minutes after
// completion at any rate the analysis keeps up with; a re-completion older
// than that stores again. A trace that never goes idle completes every
// storage.trace_max_open: each completion renews it, so it is remembered
// as long as it keeps completing.
type storedOnce struct {
	seed maphash.Seed
	mu   sync.Mutex
	seen map[string]*storedKeys // trace id → keys of its stored findings
	ring []string               // trace ids in the order they completed
	next int
}

type storedKeys struct {
	keys []uint64
	refs int // entries of the trace in ring
}

const recentMax = 1 << 15

func newStoredOnce() *storedOnce {
	return &storedOnce{seed: maphash.MakeSeed(), seen: map[string]*storedKeys{}}
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
	e := o.seen[id]
	if e == nil {
		e = &storedKeys{}
		o.seen[id] = e
	}
	prev := e.keys
	out := fs[:0]
	for _, f := range fs {
		k := o.key(&f)
		if containsKey(prev, k) {
			continue
		}
		e.keys = append(e.keys, k)
		out = append(out, f)
	}
	e.refs++
	if len(o.ring) < recentMax {
		o.ring = append(o.ring, id)
	} else {
		old := o.ring[o.next]
		x := o.seen[old]
		if x.refs--; x.refs == 0 {
			delete(o.seen, old)
		}
		o.ring[o.next] = id
		o.next = (o.next + 1) % recentMax
	}
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

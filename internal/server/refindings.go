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
// kind and first span are, or its kind, service and operation; a new kind
// or a finding about another place (the late consumer's consumer_lag) is
// stored.
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
		k, at := o.key(&f), o.placeKey(&f)
		if containsKey(prev, k) || at != 0 && containsKey(prev, at) {
			continue
		}
		e.keys = append(e.keys, k)
		if at != 0 {
			e.keys = append(e.keys, at)
		}
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

// placeKey identifies a finding by its kind and the service and operation
// it is about: a trace that keeps growing (a message redelivered for
// hours, completed every storage.trace_max_open) shows the same idle_gap
// on each newer redelivery, a new first span every time but the same
// problem in the same place. 0 when the finding names no place.
func (o *storedOnce) placeKey(f *findingstore.Stored) uint64 {
	if f.Service == "" && f.Operation == "" {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(o.seed)
	h.WriteString(f.Kind)
	h.WriteByte('@')
	h.WriteString(f.Service)
	h.WriteByte('/')
	h.WriteString(f.Operation)
	return h.Sum64() | 1 // never 0
}

func containsKey(keys []uint64, k uint64) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

package engine

import (
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// dropSet holds the traces a tail-sampling decision dropped after they
// completed. A completed trace is already in a level-0 block, and blocks
// are immutable; so its spans are left out when that block is converted to
// Parquet (or, if the decision came later, when Parquet blocks are next
// merged). Entries expire after ttl: a decision that misses its
// conversions just keeps the trace, as does a restart, which loses the
// set (it fails towards keeping).
type dropSet struct {
	ttl time.Duration

	mu      sync.Mutex
	ids     map[model.TraceID]int64 // expiry, unix ns
	removed uint64                  // traces left out of a compaction
	sweep   int64                   // next expiry sweep, unix ns
}

func (d *dropSet) add(id model.TraceID, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[model.TraceID]int64{}
	}
	n := now.UnixNano()
	d.ids[id] = n + int64(d.ttl)
	if n >= d.sweep {
		for k, exp := range d.ids {
			if exp < n {
				delete(d.ids, k)
			}
		}
		d.sweep = n + int64(d.ttl)
	}
}

// revive cancels the drop of traces that get new spans: late spans
// complete the trace again, and its next decision sees them with the
// earlier ones only if those are still stored.
func (d *dropSet) revive(spans []model.Span) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ids) == 0 {
		return
	}
	for i := range spans {
		delete(d.ids, spans[i].TraceID)
	}
}

// has reports whether id is dropped, counting it as removed when so.
func (d *dropSet) has(id model.TraceID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.ids[id]; !ok {
		return false
	}
	d.removed++
	return true
}

func (d *dropSet) stats() (pending int, removed uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ids), d.removed
}

// Drop removes a completed trace from storage: its spans are left out
// when the blocks holding them are next compacted, normally within
// CompactInterval. Until then queries still find it. New spans of the
// trace written before that cancel the drop (the trace completes again
// and is decided again); spans arriving after its compaction find their
// earlier spans gone.
func (e *Engine) Drop(id model.TraceID) { e.drops.add(id, time.Now()) }

// HasTrace reports whether any span of the trace is stored, from the
// in-memory indexes alone (no block is read).
func (e *Engine) HasTrace(id model.TraceID) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.head.get(id) != nil {
		return true
	}
	for _, m := range e.flushing {
		if m[id] != nil {
			return true
		}
	}
	for _, b := range e.blocks {
		if b.idx.find(id) >= 0 {
			return true
		}
	}
	return false
}

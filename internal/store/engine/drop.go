package engine

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// DroppedReason is the sampling decision Drop records: the trace was not
// kept.
const DroppedReason = "dropped"

// dropSet holds the tail-sampling decisions about traces that completed
// recently, until the compactions that act on them. A completed trace is
// already in a level-0 block, and blocks are immutable; so a dropped
// trace's spans are left out when that block is converted to Parquet (or,
// if the decision came later, when Parquet blocks are next merged), or,
// with Options.UnkeptRetention, moved to a block of their own that
// expires sooner. Every decision's reason is written to the trace index
// on the way, so it outlives the set. Entries expire after ttl: a decision
// that misses its conversions just keeps the trace, as does a restart,
// which loses the set (it fails towards keeping).
type dropSet struct {
	ttl time.Duration

	mu      sync.Mutex
	ids     map[model.TraceID]decision
	dropped int    // entries whose reason is DroppedReason
	removed uint64 // dropped traces left out of (or moved out of) a compaction's kept block
	sweep   int64  // next expiry sweep, unix ns
}

type decision struct {
	exp    int64 // unix ns
	reason string
}

func (d *dropSet) add(id model.TraceID, reason string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[model.TraceID]decision{}
	}
	n := now.UnixNano()
	d.forget(id)
	d.ids[id] = decision{exp: n + int64(d.ttl), reason: reason}
	if reason == DroppedReason {
		d.dropped++
	}
	if n >= d.sweep {
		for k, v := range d.ids {
			if v.exp < n {
				d.forget(k)
			}
		}
		d.sweep = n + int64(d.ttl)
	}
}

// forget deletes id's entry; callers hold mu.
func (d *dropSet) forget(id model.TraceID) {
	if v, ok := d.ids[id]; ok {
		if v.reason == DroppedReason {
			d.dropped--
		}
		delete(d.ids, id)
	}
}

// revive cancels the decisions about traces that get new spans: late
// spans complete the trace again, and its next decision sees them with the
// earlier ones only if those are still stored.
func (d *dropSet) revive(spans []model.Span) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ids) == 0 {
		return
	}
	for i := range spans {
		d.forget(spans[i].TraceID)
	}
}

// countRemoved counts a dropped trace compaction took out of a kept block.
func (d *dropSet) countRemoved() {
	d.mu.Lock()
	d.removed++
	d.mu.Unlock()
}

// reason returns the decision about id ("": none pending).
func (d *dropSet) reason(id model.TraceID) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[id].reason
}

// stats counts the pending drops (not the kept decisions) and the traces
// removed so far.
// inUse reports whether tail sampling ever decided about a trace here.
func (d *dropSet) inUse() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids != nil
}

func (d *dropSet) stats() (pending int, removed uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped, d.removed
}

// Drop removes a completed trace from storage: its spans are left out
// when the blocks holding them are next compacted, normally within
// CompactInterval, or with Options.UnkeptRetention moved to blocks that
// expire after it. Until then queries still find it. New spans of the
// trace written before that cancel the drop (the trace completes again
// and is decided again); spans arriving after its compaction find their
// earlier spans gone. Drop is Decide(id, DroppedReason).
func (e *Engine) Drop(id model.TraceID) { e.Decide(id, DroppedReason) }

// Decide records the tail-sampling decision about a completed trace:
// DroppedReason drops it (see Drop); any other reason keeps it. The
// reason is stored in the trace index when the trace's blocks are next
// compacted (SampledReason reads it back, also after a restart).
func (e *Engine) Decide(id model.TraceID, reason string) {
	if reason != "" {
		e.drops.add(id, reason, time.Now())
	}
}

// SampledReason returns the recorded sampling decision about a trace:
// pending, or from the index of a block holding it ("": none).
func (e *Engine) SampledReason(id model.TraceID) string {
	if r := e.drops.reason(id); r != "" {
		return r
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, b := range e.blocks {
		if i := b.idx.find(id); i >= 0 {
			if r := b.idx.sampledOf(i); r != "" {
				return r
			}
		}
	}
	return ""
}

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

// tierSplit routes the traces of a compaction: to its output block, or,
// for those sampling dropped, to a block of the unkept tier (made on first
// use) or nowhere (Options.UnkeptRetention 0). Expiring the unkept tier is
// then deleting whole blocks: no block is ever rewritten to remove traces
// after the fact, which would cost another pass over all the data. The
// price is a second, smaller output per compaction while traces are
// dropped, and merges that stay within a tier.
type tierSplit struct {
	e      *Engine
	main   *blockBuilder
	unkept *blockBuilder
	// catalogOf, set for merges, gives a new unkept block its catalog
	// (copied rows do not collect one).
	catalogOf []*block
}

// route returns the builder trace id goes to (nil: left out) and the
// sampling decision to record with it; stored is the decision its inputs
// recorded.
func (t *tierSplit) route(ctx context.Context, id model.TraceID, stored string) (*blockBuilder, string, error) {
	r := t.e.drops.reason(id)
	if r != DroppedReason || t.main.meta.Unkept {
		return t.main, cmp.Or(r, stored), nil
	}
	t.e.drops.countRemoved()
	if t.e.opts.UnkeptRetention <= 0 {
		return nil, r, nil
	}
	if t.unkept == nil {
		bb, err := newBlockBuilder(ctx, t.e.storage, newBlockID(), t.main.meta.Level)
		if err != nil {
			return nil, "", err
		}
		bb.meta.Unkept = true
		if err := t.e.mergeCatalogs(ctx, bb, t.catalogOf); err != nil {
			bb.abort()
			return nil, "", err
		}
		t.unkept = bb
	}
	return t.unkept, r, nil
}

func (t *tierSplit) abort() {
	t.main.abort()
	if t.unkept != nil {
		t.unkept.abort()
	}
}

// finish commits and opens the outputs, the main one first: it names the
// inputs as its sources, so a crash between the two commits loses only
// dropped traces (early), never a kept one, and shows no trace twice.
func (t *tierSplit) finish(ctx context.Context) ([]*block, error) {
	nb, err := t.e.openBuilt(ctx, t.main)
	if err != nil {
		if t.unkept != nil {
			t.unkept.abort()
		}
		return nil, err
	}
	if t.unkept == nil {
		return []*block{nb}, nil
	}
	ub, err := t.e.openBuilt(ctx, t.unkept)
	if err != nil {
		// The inputs stay; so must not the main output, or the next
		// compaction would store its traces twice.
		nb.release()
		if derr := t.e.storage.Delete(ctx, nb.id); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return []*block{nb, ub}, nil
}

func (e *Engine) now() time.Time {
	if e.opts.Now != nil {
		return e.opts.Now()
	}
	return time.Now()
}

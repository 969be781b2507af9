package engine

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

func (e *Engine) flushLoop(ctx context.Context) {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.flushNow:
		}
		if err := e.flushOnce(ctx); err != nil && ctx.Err() == nil {
			e.bgErrors.Add(1)
			e.log.Error("head flush failed", "err", err)
		}
		e.completePending(ctx)
	}
}

func (e *Engine) completionLoop() {
	defer e.cwg.Done()
	for c := range e.completions {
		if e.opts.OnTraceComplete != nil {
			e.callComplete(c)
		}
	}
}

func (e *Engine) callComplete(c completion) {
	defer func() {
		if r := recover(); r != nil {
			e.bgErrors.Add(1)
			e.log.Error("OnTraceComplete panicked", "trace_id", c.id.String(), "panic", r)
		}
	}()
	e.opts.OnTraceComplete(c.id, c.spans)
	e.completed.Add(1)
}

// flushOnce cuts complete traces (and, under memory pressure, older
// incomplete ones) from the head into a new block.
func (e *Engine) flushOnce(ctx context.Context) error {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	now := time.Now().UnixNano()
	idleBefore := now - int64(e.opts.IdleTimeout)
	forceBefore := idleBefore
	if e.head.bytes.Load() > e.opts.HeadMaxBytes/2 {
		// Under pressure take everything not touched very recently; those
		// traces complete later from the blocks.
		forceBefore = now - int64(e.opts.IdleTimeout/10)
	}
	e.mu.Lock()
	cut := e.head.cut(func(t *headTrace) bool { return t.lastSeen <= forceBefore })
	if len(cut) > 0 {
		e.flushing = append(e.flushing, cut)
	}
	e.mu.Unlock()
	if len(cut) == 0 {
		return nil
	}
	err := e.writeCut(ctx, cut, idleBefore)
	e.mu.Lock()
	for i, m := range e.flushing {
		if len(m) > 0 && sameMap(m, cut) {
			e.flushing = append(e.flushing[:i], e.flushing[i+1:]...)
			break
		}
	}
	if err != nil {
		// Put the traces back so nothing becomes unreadable; the WAL still
		// holds them and the next tick retries.
		for _, t := range cut {
			var buf []byte
			spans, derr := t.spans()
			if derr != nil {
				continue
			}
			offs := []int{0}
			for i := range spans {
				buf = appendFramed(buf, &spans[i])
				offs = append(offs, len(buf))
			}
			e.head.insert(spans, buf, offs, t.minSeg, t.lastSeen)
		}
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.truncateWAL(ctx)
}

func sameMap(a, b map[model.TraceID]*headTrace) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		return b[k] == v
	}
	return true
}

func (e *Engine) writeCut(ctx context.Context, cut map[model.TraceID]*headTrace, idleBefore int64) error {
	ids := make([]model.TraceID, 0, len(cut))
	for id := range cut {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })

	e.mu.RLock()
	older := append([]*block(nil), e.blocks...)
	for _, b := range older {
		b.acquire()
	}
	e.mu.RUnlock()
	defer func() {
		for _, b := range older {
			b.release()
		}
	}()

	bb, err := newBlockBuilder(ctx, e.storage, newBlockID(), 0)
	if err != nil {
		return err
	}
	var done []completion
	var forced []model.TraceID
	for _, id := range ids {
		t := cut[id]
		spans, err := t.spans()
		if err != nil {
			bb.abort()
			return fmt.Errorf("decode head trace %s: %w", id, err)
		}
		e.cat.addAttrs(spans)
		if e.opts.OnTraceComplete != nil {
			if t.lastSeen <= idleBefore {
				full := spans
				// A trace that also has spans in blocks (late spans, or an
				// earlier forced cut) completes with all of them.
				for _, b := range older {
					if i := b.idx.find(id); i >= 0 {
						more, err := b.readTrace(i)
						if err != nil {
							bb.abort()
							return err
						}
						if len(full) == len(spans) {
							full = append([]model.Span(nil), spans...)
						}
						full = append(full, more...)
					}
				}
				done = append(done, completion{id, full})
			} else {
				forced = append(forced, id)
			}
		}
		if err := bb.addTrace(spans); err != nil {
			bb.abort()
			return err
		}
		if len(done) >= 256 {
			e.sendCompletions(ctx, done)
			done = done[:0]
		}
	}
	meta, err := bb.finish()
	if err != nil {
		return err
	}
	nb, err := openBlock(ctx, e.storage, meta.ID)
	if err != nil {
		return err
	}
	nb.meta.Catalog = nil
	e.mu.Lock()
	e.blocks = append(e.blocks, nb)
	sortBlocks(e.blocks)
	e.mu.Unlock()
	e.flushed.Add(1)
	e.sendCompletions(ctx, done)
	if len(forced) > 0 {
		e.pendingMu.Lock()
		for _, id := range forced {
			e.pending[id] = cut[id].lastSeen
		}
		e.nPending.Store(int64(len(e.pending)))
		e.pendingMu.Unlock()
	}
	e.log.Debug("cut block", "block", meta.ID, "spans", meta.Spans, "traces", meta.Traces, "bytes", meta.DataBytes)
	return nil
}

func (e *Engine) sendCompletions(ctx context.Context, cs []completion) {
	for _, c := range cs {
		select {
		case e.completions <- c:
		case <-ctx.Done():
			return
		}
	}
}

// completePending completes traces that were cut early once they are idle.
func (e *Engine) completePending(ctx context.Context) {
	if e.nPending.Load() == 0 || e.opts.OnTraceComplete == nil {
		return
	}
	idleBefore := time.Now().UnixNano() - int64(e.opts.IdleTimeout)
	var ready []model.TraceID
	e.pendingMu.Lock()
	for id, last := range e.pending {
		if last <= idleBefore {
			ready = append(ready, id)
			delete(e.pending, id)
		}
	}
	e.nPending.Store(int64(len(e.pending)))
	e.pendingMu.Unlock()
	for _, id := range ready {
		spans, err := e.Trace(ctx, id, storeRangeAll)
		if err != nil {
			continue
		}
		e.sendCompletions(ctx, []completion{{id, spans}})
	}
}

// truncateWAL deletes WAL segments that hold only spans now in blocks.
func (e *Engine) truncateWAL(ctx context.Context) error {
	min, err := e.wal.rotateSeg(ctx)
	if err != nil {
		return err
	}
	e.ingestMu.Lock()
	for i := range e.head.shards {
		sh := &e.head.shards[i]
		sh.mu.Lock()
		for _, t := range sh.traces {
			if t.minSeg < min {
				min = t.minSeg
			}
		}
		sh.mu.Unlock()
	}
	e.mu.RLock()
	for _, m := range e.flushing {
		for _, t := range m {
			if t.minSeg < min {
				min = t.minSeg
			}
		}
	}
	e.mu.RUnlock()
	e.ingestMu.Unlock()
	return e.wal.deleteBefore(min)
}

package engine

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"iter"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

const (
	compactMinBlocks = 4
	compactMaxBlocks = 32
)

func (e *Engine) maintenanceLoop(ctx context.Context) {
	defer e.wg.Done()
	t := time.NewTicker(e.opts.CompactInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			did, err := e.compactOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					e.bgErrors.Add(1)
					e.log.Error("compaction failed", "err", err)
				}
				break
			}
			if !did {
				break
			}
		}
		if err := e.applyRetention(ctx); err != nil && ctx.Err() == nil {
			e.bgErrors.Add(1)
			e.log.Error("retention failed", "err", err)
		}
	}
}

// Compact merges small blocks until none is left to merge. Exposed for
// tests and benchmarks; the background loop does the same periodically.
func (e *Engine) Compact(ctx context.Context) error {
	for {
		did, err := e.compactOnce(ctx)
		if err != nil || !did {
			return err
		}
	}
}

// Flush cuts every trace in the head into a block now, regardless of
// idleness (for tests, benchmarks and operators). Traces cut this way
// still complete once idle.
func (e *Engine) Flush(ctx context.Context) error {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	return e.cutToBlock(ctx, func(*headTrace) bool { return true }, time.Now().UnixNano()-int64(e.opts.IdleTimeout))
}

// compactOnce merges a run of small blocks (oldest first) into one.
func (e *Engine) compactOnce(ctx context.Context) (bool, error) {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	e.mu.RLock()
	var small []*block
	for _, b := range e.blocks {
		if b.meta.Spans < e.opts.BlockMaxSpans/2 {
			small = append(small, b)
		}
	}
	sort.Slice(small, func(i, j int) bool { return small[i].meta.MaxTime < small[j].meta.MaxTime })
	var pick []*block
	var total int64
	for _, b := range small {
		if len(pick) >= compactMaxBlocks || (len(pick) > 0 && total+b.meta.Spans > e.opts.BlockMaxSpans) {
			break
		}
		pick = append(pick, b)
		total += b.meta.Spans
	}
	if len(pick) < compactMinBlocks {
		pick = nil
	}
	for _, b := range pick {
		b.acquire()
	}
	e.mu.RUnlock()
	if pick == nil {
		return false, nil
	}
	defer func() {
		for _, b := range pick {
			b.release()
		}
	}()
	level := 0
	for _, b := range pick {
		level = max(level, b.meta.Level)
	}
	start := time.Now()
	nb, err := e.mergeBlocks(ctx, pick, level+1)
	if err != nil {
		return false, err
	}
	old := map[*block]bool{}
	for _, b := range pick {
		old[b] = true
	}
	e.mu.Lock()
	keep := e.blocks[:0]
	for _, b := range e.blocks {
		if !old[b] {
			keep = append(keep, b)
		}
	}
	e.blocks = append(keep, nb)
	sortBlocks(e.blocks)
	e.mu.Unlock()
	var firstErr error
	for _, b := range pick {
		b.release() // the list's reference
		if err := e.storage.Delete(ctx, b.id); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	e.compactions.Add(1)
	e.log.Info("compacted blocks", "inputs", len(pick), "spans", nb.meta.Spans, "bytes", nb.diskBytes(), "took", time.Since(start))
	return true, firstErr
}

// traceSeq streams a block's traces.
func traceSeq(ctx context.Context, b *block, errp *error) iter.Seq[[]model.Span] {
	return func(yield func([]model.Span) bool) {
		err := b.forEachTrace(ctx, func(spans []model.Span) error {
			if !yield(spans) {
				return errStopIter
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopIter) {
			*errp = err
		}
	}
}

var errStopIter = errors.New("stop")

type mergeSrc struct {
	next func() ([]model.Span, bool)
	stop func()
	cur  []model.Span
}

type mergeHeap []*mergeSrc

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	return bytes.Compare(h[i].cur[0].TraceID[:], h[j].cur[0].TraceID[:]) < 0
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(*mergeSrc)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeBlocks k-way merges blocks (each sorted by trace id), combining
// fragments of the same trace, into a new block. Memory stays at one trace
// per input.
func (e *Engine) mergeBlocks(ctx context.Context, in []*block, level int) (*block, error) {
	errs := make([]error, len(in))
	h := &mergeHeap{}
	for i, b := range in {
		next, stop := iter.Pull(traceSeq(ctx, b, &errs[i]))
		src := &mergeSrc{next: next, stop: stop}
		defer stop()
		if cur, ok := next(); ok {
			src.cur = cur
			heap.Push(h, src)
		}
	}
	bb, err := newBlockBuilder(ctx, e.storage, newBlockID(), level)
	if err != nil {
		return nil, err
	}
	for h.Len() > 0 {
		top := heap.Pop(h).(*mergeSrc)
		spans := top.cur
		id := spans[0].TraceID
		advance := func(s *mergeSrc) {
			if cur, ok := s.next(); ok {
				s.cur = cur
				heap.Push(h, s)
			}
		}
		advance(top)
		for h.Len() > 0 && (*h)[0].cur[0].TraceID == id {
			s := heap.Pop(h).(*mergeSrc)
			spans = append(spans, s.cur...)
			advance(s)
		}
		if err := bb.addTrace(spans); err != nil {
			bb.abort()
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			bb.abort()
			return nil, fmt.Errorf("compaction read: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		bb.abort()
		return nil, err
	}
	meta, err := bb.finish()
	if err != nil {
		return nil, err
	}
	nb, err := openBlock(ctx, e.storage, meta.ID)
	if err != nil {
		return nil, err
	}
	nb.meta.Catalog = nil
	return nb, nil
}

// applyRetention deletes blocks past the retention age, then the oldest
// blocks while the disk budget is exceeded.
func (e *Engine) applyRetention(ctx context.Context) error {
	if e.opts.Retention <= 0 && e.opts.MaxDiskBytes <= 0 {
		return nil
	}
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	e.mu.Lock()
	var drop []*block
	keep := make([]*block, 0, len(e.blocks))
	if e.opts.Retention > 0 {
		cutoff := uint64(time.Now().Add(-e.opts.Retention).UnixNano())
		for _, b := range e.blocks {
			if b.meta.MaxTime < cutoff {
				drop = append(drop, b)
			} else {
				keep = append(keep, b)
			}
		}
	} else {
		keep = append(keep, e.blocks...)
	}
	if e.opts.MaxDiskBytes > 0 {
		total := e.wal.bytes.Load()
		for _, b := range keep {
			total += b.diskBytes()
		}
		sort.Slice(keep, func(i, j int) bool { return keep[i].meta.MaxTime < keep[j].meta.MaxTime })
		for len(keep) > 0 && total > e.opts.MaxDiskBytes {
			total -= keep[0].diskBytes()
			drop = append(drop, keep[0])
			keep = keep[1:]
		}
	}
	sortBlocks(keep)
	e.blocks = keep
	e.mu.Unlock()
	var firstErr error
	for _, b := range drop {
		b.release()
		if err := e.storage.Delete(ctx, b.id); err != nil && firstErr == nil {
			firstErr = err
		}
		e.retained.Add(1)
		e.log.Info("retention deleted block", "block", b.id, "spans", b.meta.Spans, "bytes", b.diskBytes())
	}
	return firstErr
}

// ApplyRetention runs retention now (for tests and operators).
func (e *Engine) ApplyRetention(ctx context.Context) error { return e.applyRetention(ctx) }

package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/ratelog"
)

// flushRetryDelay is the pause after a failed head cut.
const flushRetryDelay = 2 * time.Second

func (e *Engine) flushLoop(ctx context.Context) {
	defer e.wg.Done()
	flushErrLog := ratelog.Limiter{Every: 10 * time.Second}
	t := time.NewTicker(e.opts.FlushInterval)
	defer t.Stop()
	var retryAt, lastCut time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.flushNow:
		}
		if time.Now().Before(retryAt) {
			// A failed cut is put back into the head (decoded and
			// re-encoded): retrying it on every kick from refused writers
			// spent the CPU and memory a recovery needs.
			continue
		}
		if now := time.Now(); !e.cutLater(now.Sub(lastCut)) {
			lastCut = now
			e.flushAndRetry(ctx, &retryAt, &flushErrLog)
		}
		e.refreshStoredBytes()
		select {
		case e.completeNow <- struct{}{}:
		default:
		}
	}
}

// flushAndRetry runs flushOnce; after a failure it sets *retryAt and logs
// (at most every 10 s).
func (e *Engine) flushAndRetry(ctx context.Context, retryAt *time.Time, flushErrLog *ratelog.Limiter) {
	if err := e.flushOnce(ctx); err != nil && ctx.Err() == nil {
		e.bgErrors.Add(1)
		now := time.Now()
		*retryAt = now.Add(flushRetryDelay)
		if isDiskFull(err) {
			e.diskFullAt.Store(now.UnixNano())
		}
		if held, ok := flushErrLog.Allow(now); ok {
			e.log.Error("head flush failed; the spans stay in the WAL and the flush is retried", "err", err,
				"retry_in", flushRetryDelay, "failures_since_last_log", held)
		}
	}
}

// pendingLoop completes traces cut early once they are idle. It runs
// beside the flush loop: completing by read-back (decoding blocks, and
// waiting for OnTraceComplete to take the traces) can take seconds, during
// which the head must keep being cut or writers stall.
func (e *Engine) pendingLoop(ctx context.Context) {
	defer e.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.completeNow:
		}
		e.completePending(ctx)
	}
}

func (e *Engine) completionLoop(ctx context.Context) {
	defer e.cwg.Done()
	n := 0
	for c := range e.completions {
		if e.opts.OnTraceComplete == nil {
			continue
		}
		if n++; n%32 == 0 && !e.underPressure() {
			e.opts.YieldBackground(ctx) // background work: let ingest and queries go first
		}
		readBack := c.readBack || len(c.spans) > 0
		if c.want && !e.canTakeWaiting(c.n+len(c.spans), &c.meta, !readBack || c.hinted) {
			d := completion{id: c.id, declined: true}
			if !readBack {
				d.meta = c.meta
			}
			c = d
		}
		if c.buf != nil {
			// Decoding happens here, off the flush path. The buffer is the
			// completion's alone: the cut trace's, or the cold tier's copy.
			spans, err := decodeFramedOwned(c.buf, make([]model.Span, 0, c.n+len(c.spans)))
			if err != nil {
				e.bgErrors.Add(1)
				e.log.Error("decode completed trace", "trace_id", c.id.String(), "err", err)
				continue
			}
			c.spans = append(spans, c.spans...)
		}
		if c.readBack {
			sortSpans(c.spans)
		}
		if readBack {
			// Spans read back from blocks are not covered by the meta the
			// head kept.
			c.meta = traceMeta{}
			for i := range c.spans {
				c.meta.add(&c.spans[i], e.opts.SpanFlags, true)
			}
		}
		e.callComplete(c)
	}
}

func (e *Engine) callComplete(c completion) {
	defer func() {
		if r := recover(); r != nil {
			e.bgErrors.Add(1)
			e.log.Error("OnTraceComplete panicked", "trace_id", c.id.String(), "panic", r)
		}
	}()
	ct := CompletedTrace{ID: c.id, Summary: c.meta.sum, RootSpanID: c.meta.rootSpan, Versions: c.meta.versions, Flags: c.meta.flags, Declined: c.declined}
	if c.want && !c.declined {
		ct.Spans = c.spans
		if ct.Spans == nil {
			ct.Spans = []model.Span{}
		}
	}
	ct.Summary.TraceID = c.id
	e.opts.OnTraceComplete(ct)
	e.completed.Add(1)
}

// canTake reports whether OnTraceComplete can take a decoded trace of
// about spans spans now; m describes it when known is set.
func (e *Engine) canTake(spans int, m *traceMeta, known bool) bool {
	return e.askTake(spans, m, known, false)
}

// canTakeWaiting is canTake for the completion goroutine, which lets
// TakeSpans wait for room (Completing.CanWait) while its queue is less
// than half full, so cuts sending completions never block behind it, and
// memory is not under pressure.
func (e *Engine) canTakeWaiting(spans int, m *traceMeta, known bool) bool {
	return e.askTake(spans, m, known, len(e.completions) < cap(e.completions)/2 && !e.underPressure())
}

func (e *Engine) askTake(spans int, m *traceMeta, known, canWait bool) bool {
	if e.opts.TakeSpans == nil {
		return true
	}
	c := Completing{Spans: spans, CanWait: canWait}
	if known {
		c.Summary, c.Flags = &m.sum, m.flags
	}
	return e.opts.TakeSpans(c)
}

// declineAll hands over ids as declined completions.
func (e *Engine) declineAll(ctx context.Context, ids []model.TraceID) {
	cs := make([]completion, len(ids))
	for i, id := range ids {
		cs[i] = completion{id: id, declined: true}
	}
	e.sendCompletions(ctx, cs)
}

// wants reports whether OnTraceComplete needs the spans of the trace.
func (e *Engine) wants(id model.TraceID, flags uint32) bool {
	return e.opts.WantSpans == nil || e.opts.WantSpans(id, flags)
}

// flushOnce cuts complete traces (and, under memory pressure, older
// incomplete ones) from the head into a new block.
func (e *Engine) flushOnce(ctx context.Context) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	now := time.Now().UnixNano()
	idleBefore := now - int64(e.opts.IdleTimeout)
	forceBefore := idleBefore
	if e.underPressure() {
		// Under pressure take everything not touched very recently; those
		// traces complete later, from the cold tier.
		forceBefore = now - int64(min(e.opts.IdleTimeout/10, 250*time.Millisecond))
	}
	// A trace open for MaxOpen is taken however recently it was written
	// to: it completes with this cut (cutToBlock's rule is the same or
	// later).
	openBefore := now - int64(e.opts.MaxOpen)
	return e.cutToBlock(ctx, func(t *headTrace) bool { return t.lastSeen <= forceBefore || t.firstSeen <= openBefore }, idleBefore)
}

// doneBy is the rule that completes the traces idle since idleBefore and
// those open for MaxOpen by now.
func (e *Engine) doneBy(idleBefore int64) doneRule {
	return doneRule{idle: idleBefore, open: time.Now().UnixNano() - int64(e.opts.MaxOpen)}
}

// cutToBlock moves the picked head traces into a new block. Traces idle
// since idleBefore, or open for MaxOpen, complete; others are remembered
// and complete later. Callers hold flushMu. Cuts only add blocks, so they
// run alongside compaction and retention.
func (e *Engine) cutToBlock(ctx context.Context, pick func(t *headTrace) bool, idleBefore int64) error {
	rule := e.doneBy(idleBefore)
	// Looking at every head trace under the engine's lock held trace reads
	// for 1.5-4 ms once a second at 30k spans/s on a shared core: only the
	// move itself needs the lock, so readers see each trace in the head or
	// in flushing, never in neither or both.
	plan := e.head.planCut(pick)
	e.mu.Lock()
	var locked time.Time
	if e.cutHeld != nil {
		locked = time.Now()
	}
	cut, cutBytes := e.head.takeCut(plan, pick)
	if e.afterCutIDs != nil {
		e.afterCutIDs()
	}
	if len(cut) > 0 {
		e.flushing = append(e.flushing, cut)
		e.flushingBytes.Add(cutBytes)
	}
	e.mu.Unlock()
	if e.cutHeld != nil {
		e.cutHeld(time.Since(locked))
	}
	// Readers do not look at the pending set, so it is registered after
	// the engine's lock: holding it here too kept every trace read and
	// search waiting while thousands of traces' meta were packed.
	early := e.registerPending(cut, rule)
	if len(cut) == 0 {
		return nil
	}
	defer func() {
		e.flushingBytes.Add(-cutBytes)
		e.signalCut()
	}()
	err := e.writeCut(ctx, cut, early, rule)
	if err != nil && len(early) > 0 {
		e.unkeepCold(early)
	}
	e.mu.Lock()
	e.removeFlushingLocked(cut) // no-op when writeCut published the block
	if err != nil {
		// Put the traces back so nothing becomes unreadable; the WAL still
		// holds them and the next tick retries.
		e.head.restore(cut)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.truncateWAL(ctx)
}

// registerPending remembers the traces of a cut that are not complete yet
// (by rule): they complete later. It returns those whose spans the cut
// keeps in the cold tier. Callers hold flushMu, so no other cut registers
// meanwhile; a completion pass that finds an entry before writeCut has
// handed its spans to the cold tier leaves it for the next pass.
func (e *Engine) registerPending(cut map[model.TraceID]*headTrace, rule doneRule) []model.TraceID {
	if e.opts.OnTraceComplete == nil || len(cut) == 0 {
		return nil
	}
	var early []model.TraceID
	// A Write that adds spans of one after this registration sees the
	// entry and hands completion back to the head.
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	q := len(e.pendingQ)
	for id, t := range cut {
		if !rule.done(t) {
			p := e.pending[id]
			if p == nil {
				p = &pendingTrace{firstSeen: t.firstSeen}
				e.pending[id] = p
			}
			p.firstSeen = min(p.firstSeen, t.firstSeen)
			p.inHead = false
			p.lastSeen = t.lastSeen
			p.addMeta(id, &t.traceMeta)
			e.pendingQ = append(e.pendingQ, pendingRef{id, t.lastSeen})
			if e.wants(id, p.flags) {
				early = append(early, id)
			} else {
				// Nobody needs its spans so far: they are not kept. Should
				// later spans make it wanted, it completes by read-back.
				p.older = true
			}
		}
	}
	added := e.pendingQ[q:]
	sort.Slice(added, func(i, j int) bool { return added[i].lastSeen < added[j].lastSeen })
	e.nPending.Store(int64(len(e.pending)))
	// Write does not take pendingMu before inserting, so one since takeCut
	// may have put spans of a trace back in the head and looked for its
	// entry before it existed. Write inserts, then looks: an insert after
	// the check below is followed by a look after the nPending store
	// above, which finds the entry; an earlier insert is what the check
	// finds. Left unset, inHead let the trace complete from its cut spans
	// alone, and the late spans completed again as the same trace.
	for _, r := range added {
		if p := e.pending[r.id]; !p.inHead && e.head.has(r.id) {
			e.backInHead(r.id, p)
		}
	}
	return early
}

// backInHead marks the pending trace id as written to again: the head
// completes it, open since the first of its cut parts. Callers hold
// pendingMu.
func (e *Engine) backInHead(id model.TraceID, p *pendingTrace) {
	p.inHead = true
	e.head.openSince(id, p.firstSeen)
}

// softHeadBytes is where memory pressure starts: above it, traces are cut
// before they are idle. A quarter of HeadMaxBytes keeps memory low at
// rates the engine sustains (early cuts cost little since completion
// reads from the cold tier, not from blocks); the rest absorbs bursts.
func (e *Engine) softHeadBytes() int64 { return e.opts.HeadMaxBytes / 4 }

// cutLater reports whether the flusher, which last cut since ago, leaves
// the complete traces in the head for now (Options.CutInterval): while
// they take less than HeadMaxBytes/16 (what holding them back costs) and
// memory is not under pressure. The traces still open do not count: at
// 2,000 spans/s they alone passed HeadMaxBytes/16, and a cluster node cut
// every second.
//
// The flusher looks every FlushInterval, so a cut is due from half a flush
// interval before CutInterval: compared with the interval itself, a tick
// read a few microseconds earlier than the last cut's held the cut back a
// whole FlushInterval, and a cluster node cut every 4 s instead of 3 in
// about half its cuts, a third more completed traces at once for the
// analysis queue.
func (e *Engine) cutLater(since time.Duration) bool {
	if since >= e.opts.CutInterval-e.opts.FlushInterval/2 || e.underPressure() {
		return false
	}
	return e.head.doneBytes(e.doneBy(time.Now().UnixNano()-int64(e.opts.IdleTimeout))) < e.opts.HeadMaxBytes/16
}

// underPressure reports whether unflushed spans use more than the soft
// limit.
func (e *Engine) underPressure() bool {
	return e.head.bytes.Load()+e.flushingBytes.Load() > e.softHeadBytes()
}

func (e *Engine) removeFlushingLocked(cut map[model.TraceID]*headTrace) {
	for i, m := range e.flushing {
		if sameMap(m, cut) {
			// slices.Delete clears the vacated slot, so the cut (and all its
			// span buffers) is not kept alive by the backing array.
			e.flushing = slices.Delete(e.flushing, i, i+1)
			return
		}
	}
}

func sameMap(a, b map[model.TraceID]*headTrace) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for k, v := range a {
		return b[k] == v
	}
	return true
}

// writeCut writes the cut as a level-0 block and completes its idle
// traces. The early ones (cut before they were idle) keep the block's
// compressed chunks holding them in the cold tier, so they complete later
// without reading blocks back and without compressing their spans twice.
func (e *Engine) writeCut(ctx context.Context, cut map[model.TraceID]*headTrace, early []model.TraceID, rule doneRule) error {
	ids := make([]model.TraceID, 0, len(cut))
	for id := range cut {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return idLess(&ids[i], &ids[j]) })

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

	// The cut writes a level-0 block: the head's encoded spans as they
	// are, compressed. Parquet is written once, when compaction converts it.
	bb, err := newL0Builder(ctx, e.storage, newBlockID())
	if err != nil {
		return err
	}
	// Whether each trace of the cut has spans in an older block, for all of
	// them at once: a cut holds tens of thousands of traces, and a binary
	// search per trace and older block was a tenth of the cut.
	var inOlder []bool
	if e.opts.OnTraceComplete != nil {
		inOlder = inBlocks(older, ids)
	}
	if len(early) > 0 {
		bb.keep = make(map[model.TraceID]bool, len(early))
		for _, id := range early {
			bb.keep[id] = true
		}
		olderIn := make(map[model.TraceID]bool)
		for k, in := range inOlder {
			if in {
				olderIn[ids[k]] = true
			}
		}
		bb.onKept = func(c *coldChunk, ids []model.TraceID, refs []coldRef) { e.addCold(c, ids, refs, olderIn) }
	}
	var done []completion
	var cr coldReader
	for k, id := range ids {
		if k%128 == 127 && !e.underPressure() {
			// Cuts are long CPU-bound runs; with few cores they would hold
			// a processor for whole time slices while ingest requests wait
			// to be read and acknowledged, and queries for their answer.
			// Under memory pressure the cut is what frees memory, so it
			// goes first.
			e.opts.YieldBackground(ctx)
		}
		t := cut[id]
		if e.opts.OnTraceComplete != nil {
			if rule.done(t) {
				if t.lastSeen > rule.idle {
					e.completedOpen.Add(1)
				}
				c := completion{id: id, meta: t.traceMeta}
				// Asked here too, not only by the completion goroutine: a
				// trace the consumer has no room for would otherwise keep
				// its head buffer alive until that goroutine reaches it,
				// and a cut's worth of them is tens of MB at high rates.
				take := e.canTake(t.n, &t.traceMeta, true)
				// A trace that also has spans in blocks (late spans, or an
				// earlier forced cut) completes with all of them: from the
				// cold tier when it holds them all, else read back.
				fromCold := false
				e.pendingMu.Lock()
				p := e.pending[id]
				if p != nil {
					c.meta = p.meta(id)
					c.meta.merge(&t.traceMeta)
				}
				c.want = e.wants(id, c.meta.flags)
				if c.want && !take && p == nil && !inOlder[k] {
					c.want, c.declined = false, true
				}
				if c.want {
					c.buf, c.n = t.buf, t.n
				}
				if p != nil {
					if c.want && p.complete() {
						if buf, n, err := cr.framed(p.parts); err == nil {
							c.buf = append(buf, t.buf...)
							c.n += n
							fromCold = true
						}
					}
					e.cold.release(p.parts)
					delete(e.pending, id)
					e.nPending.Store(int64(len(e.pending)))
				}
				e.pendingMu.Unlock()
				if c.want && !fromCold && !e.canTake(c.n, &c.meta, true) && inOlder[k] {
					// Its meta does not cover the spans in older blocks.
					c = completion{id: id, declined: true}
				}
				if c.want && !fromCold && inOlder[k] {
					for _, b := range older {
						if i := b.idx.find(id); i >= 0 {
							more, err := b.readTraceOnce(i)
							if err != nil {
								bb.abort()
								return err
							}
							c.spans = append(c.spans, more...)
						}
					}
				}
				done = append(done, c)
			}
		}
		if err := bb.add(t); err != nil {
			bb.abort()
			return err
		}
	}
	meta, err := bb.finish()
	if err != nil {
		return err
	}
	nb, err := bb.open(ctx, e.storage)
	if err != nil {
		return err
	}
	if nb.meta.Catalog != nil {
		e.cat.merge(nb.meta.Catalog)
		nb.meta.Catalog = nil
	}
	// Publishing the block and dropping the cut from the flushing set is
	// one step, so readers never see these spans twice or not at all.
	e.mu.Lock()
	e.blocks = append(e.blocks, nb)
	sortBlocks(e.blocks)
	e.removeFlushingLocked(cut)
	e.mu.Unlock()
	e.flushed.Add(1)
	e.sendCompletions(ctx, done)
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

// inBlocks reports, for ids in increasing order, which have spans in any
// of blocks.
func inBlocks(blocks []*block, ids []model.TraceID) []bool {
	in := make([]bool, len(ids))
	for _, b := range blocks {
		markIn(b.idx.ids, ids, in)
	}
	return in
}

// markIn sets in[k] for each ids[k] that have holds; both are in
// increasing order.
func markIn(have, ids []model.TraceID, in []bool) {
	eachIn(have, ids, func(k, _ int) { in[k] = true })
}

// eachIn calls fn(k, i) for each ids[k] that is have[i]; both are in
// increasing order. Each search gallops forward from where the previous
// one ended, so a cut's ids against a block of similar size cost a few
// comparisons each instead of a whole binary search.
func eachIn(have, ids []model.TraceID, fn func(k, i int)) {
	lo, n := 0, len(have)
	for k := range ids {
		id := &ids[k]
		end, step := lo, 1
		for end < n && idLess(&have[end], id) {
			lo = end + 1
			end = lo + step
			step <<= 1
		}
		end = min(end, n)
		lo += sort.Search(end-lo, func(j int) bool { return !idLess(&have[lo+j], id) })
		if lo == n {
			return
		}
		if have[lo] == *id {
			fn(k, lo)
		}
	}
}

// idLess orders trace ids as bytes.Compare does, in two word compares.
func idLess(a, b *model.TraceID) bool {
	if x, y := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8]); x != y {
		return x < y
	}
	return binary.BigEndian.Uint64(a[8:]) < binary.BigEndian.Uint64(b[8:])
}

// addCold hands a level-0 chunk of the cut being written to the cold tier
// for the early traces it holds. A trace that already had spans in blocks
// before this cut (olderIn) is marked to complete by read-back instead
// (its parts would miss those spans). Callers hold flushMu.
func (e *Engine) addCold(c *coldChunk, ids []model.TraceID, refs []coldRef, olderIn map[model.TraceID]bool) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	for i, id := range ids {
		p := e.pending[id]
		if p == nil {
			c.live--
			continue
		}
		if olderIn[id] && len(p.parts) == 0 {
			p.older = true
		}
		p.parts = append(p.parts, refs[i])
	}
	e.cold.add(c)
	if c.live <= 0 {
		e.cold.drop(c)
		e.cold.trim()
	}
}

// unkeepCold undoes addCold for a cut whose block failed: its traces are
// back in the head, which completes them; the parts may cover only some of
// them, so they complete by read-back (head and blocks), which is exact.
func (e *Engine) unkeepCold(early []model.TraceID) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	for _, id := range early {
		if p := e.pending[id]; p != nil {
			e.cold.release(p.parts)
			p.parts = nil
			p.older = true
			p.inHead = true
		}
	}
}

// completePending completes traces that were cut early (memory pressure)
// once they are idle: from the cold tier, or, for traces it does not fully
// hold, read back from blocks in batches (a block holding many of them is
// scanned once instead of sought per trace).
func (e *Engine) completePending(ctx context.Context) {
	if e.nPending.Load() == 0 || e.opts.OnTraceComplete == nil {
		return
	}
	idleBefore := time.Now().UnixNano() - int64(e.opts.IdleTimeout)
	var ready []model.TraceID
	// hints holds the packed meta of the spans cut so far of the traces in
	// ready: all of a trace's spans unless it had older ones in blocks,
	// enough for the consumer to tell one that matters (see roomFor).
	hints := map[model.TraceID][]byte{}
	type coldDone struct {
		id    model.TraceID
		parts []coldRef
		meta  traceMeta
	}
	var fromCold []coldDone
	var unwanted []completion
	e.pendingMu.Lock()
	k := 0
	for ; k < len(e.pendingQ) && e.pendingQ[k].lastSeen <= idleBefore; k++ {
		id := e.pendingQ[k].id
		p := e.pending[id]
		if p == nil || p.lastSeen != e.pendingQ[k].lastSeen || p.inHead {
			// Completed or cut again since; or back in the head, which
			// completes it.
			continue
		}
		if len(p.parts) == 0 && !p.older && e.wants(id, p.flags) {
			// Its cut registered it but has not handed its spans to the
			// cold tier yet (writeCut does after the registration, and on
			// a starved CPU the trace can go idle meanwhile): the next
			// pass takes it. Taking it now completed it from no parts.
			break
		}
		delete(e.pending, id)
		switch {
		case !e.wants(id, p.flags):
			e.cold.release(p.parts)
			unwanted = append(unwanted, completion{id: id, meta: p.meta(id)})
		case p.complete():
			fromCold = append(fromCold, coldDone{id, p.parts, p.meta(id)})
		default:
			e.cold.release(p.parts)
			ready = append(ready, id)
			hints[id] = p.packed
		}
	}
	e.pendingQ = e.pendingQ[k:]
	if cap(e.pendingQ) > 4*len(e.pendingQ)+1024 {
		e.pendingQ = append([]pendingRef(nil), e.pendingQ...) // let the consumed front go
	}
	e.nPending.Store(int64(len(e.pending)))
	e.pendingMu.Unlock()
	e.sendCompletions(ctx, unwanted)

	// Chunk order: each chunk is decompressed once and dropped when passed.
	sort.Slice(fromCold, func(i, j int) bool { return fromCold[i].parts[0].c.seq < fromCold[j].parts[0].c.seq })
	var cr coldReader
	for len(fromCold) > 0 && ctx.Err() == nil {
		// Batches bound the decompressed bytes in memory.
		n := min(len(fromCold), 512)
		batch := make([]completion, 0, n)
		// The batch is sent after it is read, so the consumer is asked for
		// room for the whole of it so far.
		taken := 0
		for lo := 0; lo < n; lo += coldYieldEvery {
			if lo > 0 && !e.underPressure() {
				// Each trace decompresses the chunks it lies in for the
				// first time; a batch is a long CPU-bound run. The yield
				// (up to a query's turn) is outside flushMu, so a head cut
				// never waits behind a query for it.
				e.opts.YieldBackground(ctx)
			}
			// Chunks are only evicted under flushMu (a cut's addCold), so
			// none vanishes while it is read. One evicted between two
			// runs is seen as such (framed fails, the trace is read back),
			// and what coldReader decompressed before stays its own copy.
			e.flushMu.Lock()
			for _, c := range fromCold[lo:min(lo+coldYieldEvery, n)] {
				spans := 0
				for _, r := range c.parts {
					spans += r.spans
				}
				if !e.canTake(taken+spans, &c.meta, true) {
					batch = append(batch, completion{id: c.id, meta: c.meta, declined: true})
					continue
				}
				taken += spans
				cr.forget(c.parts[0].c.seq)
				buf, k, err := cr.framed(c.parts)
				if err != nil {
					ready = append(ready, c.id) // evicted meanwhile: read back
					hints[c.id] = c.meta.pack(nil)
				} else {
					batch = append(batch, completion{id: c.id, meta: c.meta, want: true, buf: buf, n: k})
				}
			}
			e.flushMu.Unlock()
		}
		e.pendingMu.Lock()
		for _, c := range fromCold[:n] {
			e.cold.release(c.parts)
		}
		e.pendingMu.Unlock()
		fromCold = fromCold[n:]
		e.sendCompletions(ctx, batch)
	}

	for len(ready) > 0 && ctx.Err() == nil {
		n := min(len(ready), 4096)
		if !e.canTake(1, nil, false) {
			// Reading back costs most of what completing costs; a trace the
			// consumer would skip is not worth it.
			n = min(len(ready), 512)
			e.declineAll(ctx, ready[:n])
			ready = ready[n:]
			continue
		}
		if err := e.completeBatch(ctx, ready[:n], hints); err != nil && ctx.Err() == nil {
			e.bgErrors.Add(1)
			e.log.Error("complete early-cut traces", "err", err)
		}
		ready = ready[n:]
	}
}

// coldYieldEvery is how many traces completePending takes from the cold
// tier between two yields to queries.
const coldYieldEvery = 128

// readBackBytes bounds the level-0 bytes a read-back group holds at once.
// A batch of 4,096 traces read whole held all of them until the last was
// handed over, 40-55 MB at the maximum ingest rate, at the moment the
// traces early-cut during the load complete; in groups of this size the
// rest of the batch is still on disk while a group is decoded.
var readBackBytes = 8 << 20

// completeBatch reads the traces ids back from the head and blocks. What
// level-0 blocks hold of them is handed over still encoded, so the
// completion goroutine decodes it only if TakeSpans still says yes. It
// sorts ids and reads them in groups of consecutive ids (readBackBytes):
// a level-0 block keeps its traces in id order, so each group's traces lie
// in their own run of chunks and every chunk is still decompressed about
// once per batch.
//
// hints, when not nil, holds packed metas of the traces' spans (not
// necessarily all of them) that let the consumer take one that matters
// while it has no room for others.
func (e *Engine) completeBatch(ctx context.Context, ids []model.TraceID, hints map[model.TraceID][]byte) error {
	slices.SortFunc(ids, func(a, b model.TraceID) int { return bytes.Compare(a[:], b[:]) })
	got := make(map[model.TraceID][]model.Span, len(ids))
	e.mu.RLock()
	blocks := append([]*block(nil), e.blocks...)
	for _, b := range blocks {
		b.acquire()
	}
	for _, id := range ids {
		if t := e.head.get(id); t != nil {
			if spans, err := t.spans(); err == nil {
				got[id] = spans
			}
		}
		for _, m := range e.flushing {
			if t := m[id]; t != nil {
				if spans, err := t.spans(); err == nil {
					got[id] = append(got[id], spans...)
				}
			}
		}
	}
	e.mu.RUnlock()
	defer func() {
		for _, b := range blocks {
			b.release()
		}
	}()
	// Fragments of a trace from several level-0 blocks are appended into
	// one buffer, sized up front: a batch is thousands of traces, and
	// growing each buffer by appends held up to twice their bytes.
	wants := make([]map[int]bool, len(blocks))
	need := map[model.TraceID]int{}
	// spans counts each trace's spans, wherever they are, for asking the
	// consumer for room before reading a trace back.
	spans := make(map[model.TraceID]int, len(ids))
	for id, s := range got {
		spans[id] = len(s)
	}
	// Sorted, the ids are found in each block by one galloping walk of its
	// index (a batch is thousands of ids, and there are many blocks).
	for k, b := range blocks {
		want := map[int]bool{}
		eachIn(b.idx.ids, ids, func(_, i int) {
			want[i] = true
			spans[b.idx.ids[i]] += int(b.idx.nspans[i])
		})
		wants[k] = want
		if b.l0 != nil {
			for i := range want {
				need[b.idx.ids[i]] += int(b.l0.traceLen[i])
			}
		}
	}
	// A Parquet block is scanned whole, however few of its traces a group
	// wants: it is read once, for the batch, as before the groups.
	for k, b := range blocks {
		if want := wants[k]; b.l0 == nil && len(want) > 64 {
			err := b.scanTraces(ctx, func(i int) bool { return want[i] }, func(i int, spans []model.Span) error {
				got[b.idx.ids[i]] = append(got[b.idx.ids[i]], spans...)
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	lo := 0
	var take, decline []model.TraceID
	for _, hi := range groupEnds(ids, need, readBackBytes) {
		take, decline = e.roomFor(ids[lo:hi], spans, hints, take[:0], decline[:0])
		lo = hi
		// As for a whole batch (completePending): reading back traces the
		// consumer would skip is not worth it, and the consumer falls
		// behind while the groups before are decoded.
		for _, id := range decline {
			delete(got, id)
		}
		e.declineAll(ctx, decline)
		if len(take) == 0 {
			continue
		}
		e.readBacks.Add(uint64(len(take)))
		if err := e.readBackGroup(ctx, take, blocks, wants, need, got, hints); err != nil {
			return err
		}
	}
	return nil
}

// roomFor splits group into the traces the consumer has room for, taken
// in order while the spans of those before fit with theirs, and the rest.
// Asking only for room for one span before a group read whole groups back
// at the maximum ingest rate, where the analysis queue holds less than a
// group: the completion goroutine then declined most of the traces read,
// and reading them back cost a tenth of the server's CPU and a fifth of
// its allocated bytes. The group's completions are sent after it is read,
// so the consumer is asked for room for all of them at once. A trace with
// a hint is described by it when there is no plain room, so one that
// matters is taken as it would be from the cold tier.
func (e *Engine) roomFor(group []model.TraceID, spans map[model.TraceID]int, hints map[model.TraceID][]byte, take, decline []model.TraceID) ([]model.TraceID, []model.TraceID) {
	taken := 0
	for _, id := range group {
		n := spans[id]
		ok := e.canTake(taken+n, nil, false)
		if h := hints[id]; !ok && h != nil {
			m := unpackMeta(id, h)
			ok = e.canTake(taken+n, &m, true)
		}
		if ok {
			take = append(take, id)
			taken += n
		} else {
			decline = append(decline, id)
		}
	}
	return take, decline
}

// groupEnds splits ids into runs whose sizes add up to at most max (a
// larger one alone) and returns where each run ends.
func groupEnds(ids []model.TraceID, size map[model.TraceID]int, max int) []int {
	var ends []int
	n := 0
	for i, id := range ids {
		if i > 0 && n+size[id] > max {
			ends = append(ends, i)
			n = 0
		}
		n += size[id]
	}
	if len(ids) > 0 {
		ends = append(ends, len(ids))
	}
	return ends
}

// readBackGroup reads and hands over the traces group (consecutive ids of
// a completeBatch) from the level-0 blocks and the blocks read trace by
// trace; wants are the batch's trace positions by block. Whether a block is
// scanned or its traces are read one by one is decided on the whole batch,
// as before it was read in groups.
func (e *Engine) readBackGroup(ctx context.Context, group []model.TraceID, blocks []*block, wants []map[int]bool, need map[model.TraceID]int, got map[model.TraceID][]model.Span, hints map[model.TraceID][]byte) error {
	framed := make(map[model.TraceID]*completion)
	for k, b := range blocks {
		want := wants[k]
		if len(want) == 0 {
			continue
		}
		ids := b.idx.ids
		from := sort.Search(len(ids), func(i int) bool { return !idLess(&ids[i], &group[0]) })
		to := sort.Search(len(ids), func(i int) bool { return idLess(&group[len(group)-1], &ids[i]) })
		// group is the ids taken of a run of consecutive ones: a wanted
		// trace inside the run may have been declined.
		in := func(i int) bool {
			if i < from || i >= to || !want[i] {
				return false
			}
			_, ok := slices.BinarySearchFunc(group, ids[i], func(a, b model.TraceID) int { return bytes.Compare(a[:], b[:]) })
			return ok
		}
		if len(want) <= 64 {
			for i := range want {
				if !in(i) {
					continue
				}
				spans, err := b.readTraceOnce(i)
				if err != nil {
					return err
				}
				got[ids[i]] = append(got[ids[i]], spans...)
			}
			continue
		}
		if b.l0 == nil {
			continue // scanned by completeBatch
		}
		err := b.l0Scan(ctx, in, func(i int, buf []byte) error {
			id := ids[i]
			c := framed[id]
			if c == nil {
				c = &completion{buf: make([]byte, 0, need[id])}
				framed[id] = c
			}
			c.buf = append(c.buf, buf...) // buf is only valid during the call
			c.n += int(b.idx.nspans[i])
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, id := range group {
		c := completion{id: id, want: true, readBack: true, spans: got[id]}
		if h := hints[id]; h != nil {
			// Asked about by it, as roomFor asked.
			c.meta, c.hinted = unpackMeta(id, h), true
		}
		delete(got, id)
		if f := framed[id]; f != nil {
			c.buf, c.n = f.buf, f.n
			delete(framed, id) // handed over: the consumer frees it when done
		}
		if len(c.spans) > 0 || c.n > 0 {
			e.sendCompletions(ctx, []completion{c})
		}
	}
	return nil
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

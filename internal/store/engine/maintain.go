package engine

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
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
	// Between rounds, level-0 blocks are converted as soon as ingest
	// stops: otherwise the last minute of data before a pause would stay
	// in level-0 (~2.5 times the bytes of Parquet, and slower to search)
	// until the next round or the one after.
	quiet := time.NewTicker(e.opts.quietCheck)
	defer quiet.Stop()
	lastWritten := e.spansWritten.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-quiet.C:
			written := e.spansWritten.Load()
			// With tail sampling, decisions arrive after the analysis of
			// each completed trace, seconds after its cut, and a dropped
			// trace converted before its decision stays until a merge: the
			// regular rounds leave it that time.
			if written == lastWritten && !e.drops.inUse() && e.level0Spans() >= e.opts.BlockMaxSpans/quietMinFraction {
				e.convertQuiet(ctx)
			}
			lastWritten = written
			continue
		case <-t.C:
		}
		e.compactAll(ctx)
		if err := e.applyRetention(ctx); err != nil && ctx.Err() == nil {
			e.bgErrors.Add(1)
			e.log.Error("retention failed", "err", err)
		}
	}
}

const (
	// quietChecksPerInterval is how often per CompactInterval the
	// maintenance loop looks whether a span was written since its last
	// look; at the default 30 s that is every 3 s.
	quietChecksPerInterval = 10
	// quietMinFraction: a quiet store converts its level-0 blocks early
	// once they hold 1/quietMinFraction of BlockMaxSpans (10k spans by
	// default). A trickle of spans is left to the regular rounds, or
	// every pause would write a tiny Parquet block to merge later.
	quietMinFraction = 200
	// quietOutputFraction: early conversions write blocks of at most
	// 1/quietOutputFraction of BlockMaxSpans, each committed on its own,
	// so a shutdown soon after a pause keeps the blocks already converted.
	quietOutputFraction = 4
)

// compactAll compacts until nothing is left to do (see compactOnce). Its
// conversions wait while memory is tight, all of them together at most
// IdleTimeout (see Options.MemoryTight).
func (e *Engine) compactAll(ctx context.Context) {
	until := time.Now().Add(e.opts.IdleTimeout)
	e.untilDone(ctx, func(ctx context.Context) (bool, error) { return e.compactOnce(ctx, false, until) })
}

// convertQuiet converts every level-0 block, in outputs of a quarter
// block at most, and leaves merging to the regular rounds. Like
// compactAll's, its conversions wait while memory is tight.
func (e *Engine) convertQuiet(ctx context.Context) {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	until := time.Now().Add(e.opts.IdleTimeout)
	e.untilDone(ctx, func(ctx context.Context) (bool, error) {
		return e.convertOnce(ctx, true, e.opts.BlockMaxSpans/quietOutputFraction, until)
	})
}

// memoryPoll is how often work waiting for memory looks again: the live
// heap the budget is read from changes at each collection, which near the
// memory limit come several times a second.
const memoryPoll = 50 * time.Millisecond

// memorySettle is how long memory must stay below the budget before a
// waiting conversion starts. As a burst ends, the requests in flight are
// freed at once and one collection sees the live heap dip under the budget
// for ~0.2 s, while the head and the cold tier it still holds bring it
// back over at the next (seen at the maximum rate over gRPC); a
// conversion started in that dip added to them.
const memorySettle = 500 * time.Millisecond

// waitForMemory returns once memory has not been tight for memorySettle,
// at until (at once when it is zero), or when ctx ends, whichever comes
// first.
func (e *Engine) waitForMemory(ctx context.Context, until time.Time) {
	if until.IsZero() || e.opts.MemoryTight == nil || !e.opts.MemoryTight() {
		return
	}
	start := time.Now()
	t := time.NewTimer(memoryPoll)
	defer t.Stop()
	var calm time.Time // since when memory is not tight; zero while it is
	for now := start; now.Before(until); now = time.Now() {
		if e.opts.MemoryTight() {
			calm = time.Time{}
		} else if calm.IsZero() {
			calm = now
		} else if now.Sub(calm) >= memorySettle {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(memoryPoll)
		}
	}
	e.log.Info("level-0 conversion waited for memory", "waited", time.Since(start))
}

// untilDone runs a background step until it has nothing left to do or
// fails.
func (e *Engine) untilDone(ctx context.Context, step func(context.Context) (bool, error)) {
	for {
		did, err := step(ctx)
		if err != nil {
			if ctx.Err() == nil {
				e.bgErrors.Add(1)
				e.log.Error("compaction failed", "err", err)
			}
			return
		}
		if !did {
			return
		}
	}
}

func (e *Engine) level0Spans() int64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var n int64
	for _, b := range e.blocks {
		if b.l0 != nil && e.owns(b) {
			n += b.meta.Spans
		}
	}
	return n
}

// Compact converts every level-0 block to Parquet and merges small blocks
// until none is left to merge. Exposed for tests and benchmarks; the
// background loop does the same periodically (converting level-0 blocks
// once enough of them accumulated).
func (e *Engine) Compact(ctx context.Context) error {
	for {
		did, err := e.compactOnce(ctx, true, time.Time{})
		if err != nil || !did {
			return err
		}
	}
}

// Flush cuts every trace in the head into a block now, regardless of
// idleness (for tests, benchmarks and operators). Traces cut this way
// still complete once idle.
func (e *Engine) Flush(ctx context.Context) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	return e.cutToBlock(ctx, func(*headTrace) bool { return true }, time.Now().UnixNano()-int64(e.opts.IdleTimeout))
}

// compactOnce converts a run of level-0 blocks to one Parquet block or,
// when there is none to convert, merges a run of small Parquet blocks
// (oldest first) into one. force converts level-0 blocks however few.
func (e *Engine) compactOnce(ctx context.Context, force bool, waitUntil time.Time) (bool, error) {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	if did, err := e.convertOnce(ctx, force, e.opts.BlockMaxSpans, waitUntil); did || err != nil {
		return did, err
	}
	e.mu.RLock()
	// Blocks are merged within their retention tier (kept, unkept), so
	// each tier still expires as whole blocks.
	var small [2][]*block
	for _, b := range e.blocks {
		if b.l0 == nil && b.meta.Spans < e.opts.BlockMaxSpans/2 && e.owns(b) {
			t := 0
			if b.meta.Unkept {
				t = 1
			}
			small[t] = append(small[t], b)
		}
	}
	var pick []*block
	for _, tier := range small {
		sort.Slice(tier, func(i, j int) bool { return tier[i].meta.MaxTime < tier[j].meta.MaxTime })
		if p, _ := e.pickBlocks(tier, compactMaxBlocks, e.opts.BlockMaxSpans); len(p) >= compactMinBlocks {
			pick = p
			break
		}
	}
	acquireAll(pick)
	e.mu.RUnlock()
	if pick == nil {
		return false, nil
	}
	defer releaseAll(pick)
	level := 0
	for _, b := range pick {
		level = max(level, b.meta.Level)
	}
	start := time.Now()
	nbs, err := e.mergeBlocks(ctx, pick, level+1)
	if err != nil {
		return false, err
	}
	err = e.replaceBlocks(ctx, pick, nbs...)
	e.compactions.Add(1)
	e.log.Info("compacted blocks", "inputs", len(pick), "outputs", len(nbs), "spans", nbs[0].meta.Spans, "bytes", nbs[0].diskBytes(), "took", time.Since(start))
	return true, err
}

// replaceBlocks publishes nbs in place of their inputs (one step for
// readers) and deletes the inputs' files.
func (e *Engine) replaceBlocks(ctx context.Context, pick []*block, nbs ...*block) error {
	old := map[*block]bool{}
	for _, b := range pick {
		old[b] = true
	}
	e.mu.Lock()
	// A new slice: filtering in place would leave the removed blocks
	// reachable from the old array's tail.
	keep := make([]*block, 0, len(e.blocks)+len(nbs))
	for _, b := range e.blocks {
		if !old[b] {
			keep = append(keep, b)
		}
	}
	e.blocks = append(keep, nbs...)
	sortBlocks(e.blocks)
	e.mu.Unlock()
	var firstErr error
	for _, b := range pick {
		b.release() // the list's reference
		if err := e.storage.Delete(ctx, b.id); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// rowSeq streams a block's traces as rows with their index positions;
// each yielded slice is valid until the next one is requested.
func rowSeq(ctx context.Context, b *block, errp *error) iter.Seq2[int, []spanRow] {
	return func(yield func(int, []spanRow) bool) {
		err := b.scanRows(ctx, func(i int, rows []spanRow) error {
			if !yield(i, rows) {
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
	b    *block
	next func() (int, []spanRow, bool)
	pos  int // of cur in b's index
	cur  []spanRow
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

// mergeBlocks k-way merges blocks (each sorted by trace id) into a new
// block, joining fragments of the same trace. It works on rows: attribute
// blobs, resources, events and links are copied as they are, only times,
// parent positions and the index are recomputed. Memory stays at one trace
// per input plus read buffers. The inputs are of one retention tier; traces
// sampling dropped since leave a kept tier's output (see tierSplit).
func (e *Engine) mergeBlocks(ctx context.Context, in []*block, level int) ([]*block, error) {
	bb, err := e.newCompactedBuilder(ctx, in, level)
	if err != nil {
		return nil, err
	}
	bb.meta.Unkept = in[0].meta.Unkept
	split := &tierSplit{e: e, main: bb, catalogOf: in}
	errs := make([]error, len(in))
	h := &mergeHeap{}
	for i, b := range in {
		next, stop := iter.Pull2(rowSeq(ctx, b, &errs[i]))
		defer stop()
		src := &mergeSrc{b: b, next: next}
		if pos, cur, ok := next(); ok {
			src.pos, src.cur = pos, cur
			heap.Push(h, src)
		}
	}
	var frags []mergedRow
	for n := 0; h.Len() > 0; n++ {
		if n%128 == 127 {
			e.opts.YieldBackground(ctx) // background work: let ingest and queries go first
		}
		top := heap.Pop(h).(*mergeSrc)
		id := top.cur[0].TraceID
		frags = appendFragment(frags[:0], top.cur)
		stored := top.b.idx.sampledOf(top.pos)
		advance := func(s *mergeSrc) {
			if pos, cur, ok := s.next(); ok {
				s.pos, s.cur = pos, cur
				heap.Push(h, s)
			}
		}
		advance(top)
		for h.Len() > 0 && (*h)[0].cur[0].TraceID == id {
			s := heap.Pop(h).(*mergeSrc)
			frags = appendFragment(frags, s.cur)
			stored = cmp.Or(stored, s.b.idx.sampledOf(s.pos))
			advance(s)
		}
		out, reason, err := split.route(ctx, id, stored)
		if err != nil {
			split.abort()
			return nil, err
		}
		if out == nil {
			continue
		}
		if err := out.addRows(frags); err != nil {
			split.abort()
			return nil, err
		}
		out.idx.setSampled(reason)
	}
	for _, err := range errs {
		if err != nil {
			split.abort()
			return nil, fmt.Errorf("compaction read: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		split.abort()
		return nil, err
	}
	return split.finish(ctx)
}

// newCompactedBuilder starts the output block of a compaction of in: it
// records the inputs as its sources and takes the union of their catalogs
// (from their meta.json) as its own.
func (e *Engine) newCompactedBuilder(ctx context.Context, in []*block, level int) (*blockBuilder, error) {
	bb, err := newBlockBuilder(ctx, e.storage, newBlockID(), level)
	if err != nil {
		return nil, err
	}
	for _, b := range in {
		bb.meta.Sources = append(bb.meta.Sources, b.id)
	}
	if err := e.mergeCatalogs(ctx, bb, in); err != nil {
		bb.abort()
		return nil, err
	}
	return bb, nil
}

// mergeCatalogs adds the catalogs of in (from their meta.json) to bb's.
func (e *Engine) mergeCatalogs(ctx context.Context, bb *blockBuilder, in []*block) error {
	for _, b := range in {
		mj, err := e.storage.ReadAll(ctx, b.id, fileMeta)
		if err != nil {
			return err
		}
		var m blockMeta
		if err := json.Unmarshal(mj, &m); err != nil {
			return fmt.Errorf("block %s meta: %w", b.id, err)
		}
		if m.Catalog != nil {
			bb.cat.merge(m.Catalog)
		}
		if e.takeLateCatalog(b.id) && m.Catalog != nil {
			// An input Refresh opened without its catalog.
			e.sh.catalogsRead.Add(1)
			e.cat.merge(m.Catalog)
		}
	}
	return nil
}

// mergedRow is a row with its absolute start and parent id resolved, so
// rows of different fragments can be combined.
type mergedRow struct {
	r      spanRow
	start  uint64
	parent model.SpanID
}

func appendFragment(out []mergedRow, rows []spanRow) []mergedRow {
	for i := range rows {
		r := &rows[i]
		m := mergedRow{r: *r, start: uint64(r.TraceStart) + uint64(r.StartOff)}
		if r.ParentIdx > 0 && int(r.ParentIdx) <= len(rows) {
			m.parent = rows[r.ParentIdx-1].SpanID
		} else if len(r.ParentID) == 8 {
			copy(m.parent[:], r.ParentID)
		}
		m.r.ParentIdx, m.r.ParentID = 0, nil
		out = append(out, m)
	}
	return out
}

// addRows appends one whole trace given as resolved rows.
func (b *blockBuilder) addRows(rows []mergedRow) error {
	if len(rows) == 0 {
		return nil
	}
	id := rows[0].r.TraceID
	if b.any && bytes.Compare(id[:], b.last[:]) <= 0 {
		return fmt.Errorf("block builder: trace %s out of order", id)
	}
	b.any, b.last = true, id
	slices.SortStableFunc(rows, func(x, y mergedRow) int { return cmp.Compare(x.start, y.start) })
	// Summary, exactly as model.Summarize computes it.
	ts := model.TraceSummary{TraceID: id}
	var rootStart uint64
	clear(b.pos)
	for i := range rows {
		b.pos[rows[i].r.SpanID] = i
		if ts.StartUnixNano == 0 || rows[i].start < ts.StartUnixNano {
			ts.StartUnixNano = rows[i].start
		}
	}
	for i := range rows {
		m := &rows[i]
		end := m.start + uint64(m.r.Duration)
		if end > ts.EndUnixNano {
			ts.EndUnixNano = end
		}
		if m.parent.IsZero() && (ts.RootName == "" || m.start < rootStart) {
			ts.RootService, ts.RootName, rootStart = m.r.Service, m.r.Name, m.start
		}
		ts.SpanCount++
		isErr := model.StatusCode(m.r.Status) == model.StatusError
		if isErr {
			ts.ErrorCount++
		}
		found := false
		for j := range ts.Services {
			if ts.Services[j].Name == m.r.Service {
				ts.Services[j].SpanCount++
				if isErr {
					ts.Services[j].ErrorCount++
				}
				found = true
				break
			}
		}
		if !found {
			st := model.ServiceStats{Name: m.r.Service, SpanCount: 1}
			if isErr {
				st.ErrorCount = 1
			}
			ts.Services = append(ts.Services, st)
		}
		// The row first: a flush in nextRow reuses the arena keep fills.
		row, err := b.nextRow()
		if err != nil {
			return err
		}
		*row = m.r
		row.StartOff = int64(m.start - ts.StartUnixNano)
		if !m.parent.IsZero() {
			if j, ok := b.pos[m.parent]; ok && j != i {
				row.ParentIdx = int32(j + 1)
			} else {
				row.ParentID = b.keep(m.parent[:])
			}
		}
		if b.meta.MinTime == 0 || m.start < b.meta.MinTime {
			b.meta.MinTime = m.start
		}
		if end > b.meta.MaxTime {
			b.meta.MaxTime = end
		}
	}
	b.idx.add(b.nrows, &ts)
	b.nrows += uint32(len(rows))
	b.meta.Spans += int64(len(rows))
	b.meta.Traces++
	if len(b.rows) >= flushRowsAt {
		return b.flushRows()
	}
	return nil
}

// applyRetention deletes blocks past their tier's retention age, then,
// while the disk budget is exceeded, the oldest blocks of dropped traces
// and after them the oldest of the others.
func (e *Engine) applyRetention(ctx context.Context) error {
	if e.opts.Retention <= 0 && e.opts.UnkeptRetention <= 0 && e.opts.MaxDiskBytes <= 0 {
		e.refreshStoredBytes()
		return nil
	}
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	e.mu.Lock()
	var drop []*block
	keep := make([]*block, 0, len(e.blocks))
	if e.opts.Retention > 0 || e.opts.UnkeptRetention > 0 {
		now := e.now()
		cutoffOf := func(age time.Duration) uint64 {
			if age <= 0 {
				return 0
			}
			return uint64(now.Add(-age).UnixNano())
		}
		kept, unkept := cutoffOf(e.opts.Retention), cutoffOf(e.opts.UnkeptRetention)
		for _, b := range e.blocks {
			cutoff := kept
			if b.meta.Unkept {
				cutoff = max(cutoff, unkept)
			}
			if b.meta.MaxTime < cutoff && e.owns(b) {
				drop = append(drop, b)
			} else {
				keep = append(keep, b)
			}
		}
	} else {
		keep = append(keep, e.blocks...)
	}
	if e.opts.MaxDiskBytes > 0 {
		// The WAL is not counted: its spans are on their way into blocks,
		// and deleting stored data to make room for them would trade old
		// acknowledged spans for new ones. Write refuses instead.
		var total int64
		if e.opts.ExtraDiskBytes != nil {
			total = e.opts.ExtraDiskBytes()
		}
		for _, b := range keep {
			total += b.diskBytes()
		}
		sort.Slice(keep, func(i, j int) bool {
			if keep[i].meta.Unkept != keep[j].meta.Unkept {
				return keep[i].meta.Unkept
			}
			return keep[i].meta.MaxTime < keep[j].meta.MaxTime
		})
		for len(keep) > 0 && total > e.opts.MaxDiskBytes-e.walReserve() {
			total -= keep[0].diskBytes()
			drop = append(drop, keep[0])
			keep = keep[1:]
		}
	}
	sortBlocks(keep)
	e.blocks = keep
	e.mu.Unlock()
	defer e.refreshStoredBytes()
	var firstErr error
	for _, b := range drop {
		e.handOver(ctx, b)
		b.release()
		if err := e.storage.Delete(ctx, b.id); err != nil && firstErr == nil {
			firstErr = err
		}
		e.retained.Add(1)
		e.log.Info("retention deleted block", "block", b.id, "spans", b.meta.Spans, "bytes", b.diskBytes())
	}
	return firstErr
}

// ExpiredTrace is the summary of a trace's spans in a block retention
// deletes, with the sampling decision recorded for it ("": none). A trace
// stored in several blocks expires as several fragments.
type ExpiredTrace struct {
	Summary model.TraceSummary
	Sampled string
}

// handOver passes a block's trace summaries, from its in-memory index, to
// Options.OnExpire.
func (e *Engine) handOver(ctx context.Context, b *block) {
	if e.opts.OnExpire == nil || b.idx == nil {
		return
	}
	out := make([]ExpiredTrace, len(b.idx.ids))
	for i := range out {
		out[i] = ExpiredTrace{Summary: b.idx.summary(i), Sampled: b.idx.sampledOf(i)}
	}
	if err := e.opts.OnExpire(ctx, out); err != nil {
		e.bgErrors.Add(1)
		e.log.Error("handing expired trace summaries over; the block is deleted without them", "block", b.id, "traces", len(out), "err", err)
	}
}

// ApplyRetention runs retention now (for tests and operators).
func (e *Engine) ApplyRetention(ctx context.Context) error { return e.applyRetention(ctx) }

// pickBlocks takes blocks from the front of cands while they fit one
// output block: at most maxBlocks, at most BlockMaxSpans spans (but always
// the first).
func (e *Engine) pickBlocks(cands []*block, maxBlocks int, maxSpans int64) (pick []*block, spans int64) {
	for _, b := range cands {
		if len(pick) >= maxBlocks || (len(pick) > 0 && spans+b.meta.Spans > maxSpans) {
			break
		}
		pick = append(pick, b)
		spans += b.meta.Spans
	}
	return pick, spans
}

// acquireAll pins blocks so retention cannot close them while a
// background job reads them; releaseAll undoes it.
func acquireAll(bs []*block) {
	for _, b := range bs {
		b.acquire()
	}
}

func releaseAll(bs []*block) {
	for _, b := range bs {
		b.release()
	}
}

// openBuilt finishes a background job's output block and opens it from
// the meta and index in memory. Reading them back held the builder's index,
// its marshalled and compressed forms and the decoded copy at once, at the
// end of every conversion, and parsed the catalog only to drop it: the
// engine's catalog already has the inputs'.
func (e *Engine) openBuilt(ctx context.Context, bb *blockBuilder) (*block, error) {
	meta, err := bb.finish()
	if err != nil {
		return nil, err
	}
	meta.Catalog = nil
	return openBlockData(ctx, e.storage, &block{id: meta.ID, opened: time.Now(), meta: meta, idx: bb.idx.x.exact()})
}

package engine

import (
	"container/heap"
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

var storeRangeAll = store.TimeRange{}

// DefaultSearchLimit applies when Query.Limit is 0.
const DefaultSearchLimit = 20

// Trace returns every stored span of a trace, ordered by start time.
func (e *Engine) Trace(ctx context.Context, id model.TraceID, hint store.TimeRange) ([]model.Span, error) {
	parts := e.traceParts(id, hint)
	defer releaseHits(parts.hits)
	return parts.read(ctx)
}

// traceParts are where a trace's spans are, gathered under one hold of
// the engine's read lock (a cut waiting for it holds every other read
// back, and a by-id query that takes it twice may wait behind a cut
// twice). The buffers are decoded after the lock: a head trace's buffer
// stays valid (writers append past it or to a new array) and a flushing
// one no longer changes. The caller releases hits.
type traceParts struct {
	bufs  [][]byte
	hits  []blockHit
	spans int // stored spans, from the head's counters and the blocks' indexes
}

func (e *Engine) traceParts(id model.TraceID, hint store.TimeRange) traceParts {
	var p traceParts
	e.mu.RLock()
	if buf, n := e.head.encoded(id); buf != nil {
		p.bufs, p.spans = append(p.bufs, buf), n
	}
	for _, m := range e.flushing {
		if t := m[id]; t != nil {
			p.bufs = append(p.bufs, t.buf)
			p.spans += t.n
		}
	}
	p.hits = e.blockHits(id, hint)
	e.mu.RUnlock()
	for _, h := range p.hits {
		p.spans += int(h.b.idx.nspans[h.i])
	}
	return p
}

// read decodes the parts' spans, ordered by start time.
func (p traceParts) read(ctx context.Context) ([]model.Span, error) {
	var spans []model.Span
	for _, buf := range p.bufs {
		var err error
		if spans, err = decodeHead(buf, spans); err != nil {
			return nil, err
		}
	}
	for _, h := range p.hits {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		more, err := h.b.readTrace(h.i)
		if err != nil {
			return nil, err
		}
		if spans == nil {
			// Nearly every trace is in one place: its block's slice is
			// the answer, not a copy of it.
			spans = more
			continue
		}
		spans = append(spans, more...)
	}
	if len(spans) == 0 {
		return nil, store.ErrNotFound
	}
	sortSpans(spans)
	return spans, nil
}

// Traces reads several traces, those of a search's results: the
// fragments in each block are read together (block.readTraces), which
// costs much less than reading them one by one. out[k] holds the spans of
// refs[k] ordered by start time, nil when none is stored; an id given
// twice is read once.
func (e *Engine) Traces(ctx context.Context, refs []store.TraceRef) ([][]model.Span, error) {
	out := make([][]model.Span, len(refs))
	var frags []fragment
	// Decoded after the lock, as in Trace: a cut waiting for the lock
	// would hold every other read back meanwhile.
	type memFrag struct {
		buf []byte
		k   int
	}
	var mem []memFrag
	// Each trace's spans go into one slice sized up front: grown span by
	// span, the slices of a search's traces allocated about twice their
	// size.
	need := make([]int, len(refs))
	first := make(map[model.TraceID]int, len(refs))
	e.mu.RLock()
	for k, r := range refs {
		if _, dup := first[r.ID]; dup {
			continue
		}
		first[r.ID] = k
		if buf, n := e.head.encoded(r.ID); buf != nil {
			mem = append(mem, memFrag{buf, k})
			need[k] += n
		}
		for _, m := range e.flushing {
			if t := m[r.ID]; t != nil {
				mem = append(mem, memFrag{t.buf, k})
				need[k] += t.n
			}
		}
		for _, h := range e.blockHits(r.ID, r.Hint) {
			frags = append(frags, fragment{h.b, h.i, k})
			need[k] += int(h.b.idx.nspans[h.i])
		}
	}
	e.mu.RUnlock()
	for k, n := range need {
		if n > 0 {
			out[k] = make([]model.Span, 0, n)
		}
	}
	defer func() {
		for _, f := range frags {
			f.b.release()
		}
	}()
	for _, f := range mem {
		var err error
		if out[f.k], err = decodeHead(f.buf, out[f.k]); err != nil {
			return nil, err
		}
	}
	if err := readFragments(ctx, slices.Clone(frags), out); err != nil {
		return nil, err
	}
	for k, r := range refs {
		if f := first[r.ID]; f != k {
			out[k] = out[f]
		} else if len(out[k]) > 0 {
			sortSpans(out[k])
		}
	}
	return out, nil
}

// decodeHead decodes the buffer of a head or flushing trace for a query.
// Its bytes up to its length never change (writers append past them or
// into a new array, and nothing recycles a head trace's buffer), so the
// decoded strings point into it rather than into a copy: a search's 20
// traces copied ~200 KB of head buffers before.
func decodeHead(buf []byte, out []model.Span) ([]model.Span, error) {
	return decodeFramedOwned(buf, out)
}

type blockHit struct {
	b *block
	i int
}

// blockHits finds the blocks holding spans of a trace and acquires them;
// the caller holds e.mu and releases the hits.
func (e *Engine) blockHits(id model.TraceID, hint store.TimeRange) []blockHit {
	var hits []blockHit
	for _, b := range e.blocks {
		if !hint.Overlaps(b.meta.MinTime, b.meta.MaxTime) {
			continue
		}
		if i := b.idx.find(id); i >= 0 {
			b.acquire()
			hits = append(hits, blockHit{b, i})
		}
	}
	return hits
}

func releaseHits(hs []blockHit) {
	for _, h := range hs {
		h.b.release()
	}
}

func sortSpans(spans []model.Span) {
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartUnixNano < spans[j].StartUnixNano })
}

// snapshot is a consistent, lock-free view for one query: the head and
// flushing traces as they were, plus referenced blocks.
//
// Head traces are not copied when the snapshot is taken: every search
// copying the whole head (thousands of traces at 30k spans/s, ~1 MB) was
// most of what a search allocated on a live server, and what it held the
// engine's lock for. The snapshot keeps a reference to each head trace
// instead, and copies only the fragments the query reaches, under their
// shard's lock (fragment). A head trace never returns to the head once cut
// (a failed cut inserts new ones), so the reference is exact: it holds the
// spans the trace had when the snapshot was taken and any added since,
// which no block of the snapshot holds.
type snapshot struct {
	head *head
	// headRefs are the head's traces when the snapshot was taken, shard by
	// shard: shard i's are headRefs[headOff[i]:headOff[i+1]].
	headRefs []headRef
	headOff  [headShards + 1]int
	// flushing are the engine's maps of traces being cut, which do not
	// change once cut.
	flushing []map[model.TraceID]*headTrace
	// cands are the head and flushing fragments that pass the summary
	// checks of the query the snapshot was taken for (snapFor), the only
	// ones its walk surfaces.
	cands  []headCand
	buf    *snapBuf // where headRefs and cands go back to the pool
	blocks []*block
	// counters are the engine's counts of what span-filter scans skipped.
	counters *scanCounters
}

type headRef struct {
	id model.TraceID
	t  *headTrace
}

// headCand is a fragment a walk surfaces, with the start it had when the
// snapshot was taken (the walk's order).
type headCand struct {
	id     model.TraceID
	start  uint64
	t      *headTrace
	inHead bool // read under its shard's lock; else a flushing trace
}

// snapBufs recycles the reference lists of snapshots: a search on a live
// server lists thousands of head traces.
var snapBufs = sync.Pool{New: func() any { return new(snapBuf) }}

type snapBuf struct {
	refs  []headRef
	cands []headCand
}

// scanCounters count what the span-filter scans of searches saved, for
// monitoring (Stats) and for tests that must know a step was exercised.
type scanCounters struct {
	// prunedPages counts the pages whose rows the pages' bounds dropped.
	prunedPages atomic.Int64
	// scansAhead counts the blocks scanned ahead of the walk.
	scansAhead atomic.Int64
}

// snap snapshots everything, for reads by trace id (no walk).
func (e *Engine) snap() *snapshot { return e.snapWhere(nil, nil) }

// snapFor snapshots everything for a walk over q: only a snapshot taken
// for q can walk it.
func (e *Engine) snapFor(q *store.Query) *snapshot { return e.snapWhere(nil, q) }

// snapWhere snapshots the head, the traces being cut and the blocks that
// keep accepts (nil: all), with the fragments q's walk surfaces (q nil:
// none).
func (e *Engine) snapWhere(keep func(*block) bool, q *store.Query) *snapshot {
	s := &snapshot{head: e.head, counters: &e.scanCounters}
	buf := snapBufs.Get().(*snapBuf)
	refs, cands := buf.refs[:0], buf.cands[:0]
	var p *prefilter
	if q != nil {
		p = newPrefilter(q)
	}
	e.mu.RLock()
	for i := range e.head.shards {
		sh := &e.head.shards[i]
		s.headOff[i] = len(refs)
		sh.mu.Lock()
		for id, t := range sh.traces {
			refs = append(refs, headRef{id, t})
			if p != nil && p.passFragment(t) {
				cands = append(cands, headCand{id, t.sum.StartUnixNano, t, true})
			}
		}
		sh.mu.Unlock()
	}
	s.headOff[headShards] = len(refs)
	s.flushing = slices.Clone(e.flushing)
	for _, m := range s.flushing {
		for id, t := range m {
			if p != nil && p.passFragment(t) {
				cands = append(cands, headCand{id, t.sum.StartUnixNano, t, false})
			}
		}
	}
	for _, b := range e.blocks {
		if keep != nil && !keep(b) {
			continue
		}
		b.acquire()
		s.blocks = append(s.blocks, b)
	}
	e.mu.RUnlock()
	s.headRefs, s.cands, s.buf = refs, cands, buf
	return s
}

// fragment is a copy of a head or flushing fragment as it is now: a head
// trace's buffer and summary change while spans arrive.
func (s *snapshot) fragment(t *headTrace, inHead bool, id model.TraceID) *headTrace {
	if !inHead {
		return t
	}
	sh := s.head.shard(id)
	sh.mu.Lock()
	c := *t
	c.sum.Services = slices.Clone(t.sum.Services)
	sh.mu.Unlock()
	c.versions = nil // queries do not read them; writers may append
	return &c
}

// frags are copies of the head and flushing fragments of a trace.
func (s *snapshot) frags(id model.TraceID) []*headTrace {
	var out []*headTrace
	sh := int(id[15] % headShards)
	for _, r := range s.headRefs[s.headOff[sh]:s.headOff[sh+1]] {
		if r.id == id {
			out = append(out, s.fragment(r.t, true, id))
		}
	}
	for _, m := range s.flushing {
		if t := m[id]; t != nil {
			out = append(out, t)
		}
	}
	return out
}

func (s *snapshot) release() {
	for _, b := range s.blocks {
		b.release()
	}
	if s.buf == nil {
		return
	}
	// Cleared so the pool does not keep cut traces' buffers alive.
	clear(s.headRefs)
	clear(s.cands)
	s.buf.refs, s.buf.cands = s.headRefs[:0], s.cands[:0]
	snapBufs.Put(s.buf)
	s.headRefs, s.cands, s.buf = nil, nil, nil
}

// prefilter holds the conditions that can be checked on one fragment's
// summary (a fragment is the part of a trace in one block or in the head).
// They are necessary conditions: a span satisfying the query lies in some
// fragment that passes.
type prefilter struct {
	q      *store.Query
	ids    map[model.TraceID]bool
	svc    string
	rangeQ store.TimeRange
}

func newPrefilter(q *store.Query) *prefilter {
	p := &prefilter{q: q, svc: q.Service, rangeQ: q.Range}
	if len(q.TraceIDs) > 0 {
		p.ids = map[model.TraceID]bool{}
		for _, id := range q.TraceIDs {
			p.ids[id] = true
		}
	}
	return p
}

// passFragment is the check of a head or flushing fragment's summary;
// the caller holds what guards it.
func (p *prefilter) passFragment(t *headTrace) bool {
	return (p.svc == "" || t.hasService(p.svc)) && p.pass(t.sum.TraceID, t.sum.StartUnixNano, t.sum.EndUnixNano)
}

func (p *prefilter) pass(id model.TraceID, start, end uint64) bool {
	if p.rangeQ.End != 0 && start >= p.rangeQ.End {
		return false
	}
	if p.rangeQ.Start != 0 && end < p.rangeQ.Start {
		return false
	}
	if p.ids != nil && !p.ids[id] {
		return false
	}
	if p.q.MaxTraceDuration != 0 && end > start && end-start > p.q.MaxTraceDuration {
		return false
	}
	return true
}

// candIter yields fragments newest first.
type candIter struct {
	// memory source: fragments that pass the prefilter, a heap with the
	// newest first (siftCand)
	mem []headCand
	s   *snapshot
	// block source
	b      *block
	svc    uint32
	pos    int
	opened bool   // block sources scan their columns lazily, when first reached
	match  []bool // per trace position: a span here satisfies the span conditions

	plan *scanPlan  // nil: no span-level conditions beyond service
	scan *blockScan // the scan of the block's columns, once started

	cur   int
	id    model.TraceID
	start uint64
}

func (it *candIter) next(p *prefilter) bool {
	if it.b == nil {
		for len(it.mem) > 0 {
			// mem holds only the fragments that passed walk's summary
			// checks (service, time, ids, duration).
			c := it.mem[0]
			it.mem = popCand(it.mem)
			if it.plan != nil && !memFragmentMatches(it.plan.q, it.s.fragment(c.t, c.inHead, c.id)) {
				continue
			}
			it.id, it.start = c.id, c.start
			return true
		}
		return false
	}
	x := it.b.idx
	for it.pos < len(x.byStart) {
		i := int(x.byStart[it.pos])
		it.pos++
		if p.svc != "" && !x.hasService(i, it.svc) {
			continue
		}
		if it.match != nil && !it.match[i] {
			continue
		}
		if !p.pass(x.ids[i], x.start[i], x.end[i]) {
			continue
		}
		it.cur, it.id, it.start = i, x.ids[i], x.start[i]
		return true
	}
	return false
}

// blockScan is the scan of a block's columns for a walk.
type blockScan struct {
	done  chan struct{} // closed when match and err are set
	match []bool
	err   error
}

// scanAhead reports whether reaching block b may start the scan of the
// next block too. On object storage a scan waits on the network, and
// when b holds fewer matches than the limit the walk reaches the next
// block: scanned one after the other, the two cost the sum of their
// round trips and transfers, scanned together about the larger. When b
// fills the limit the next scan is cancelled as the walk ends, its work
// wasted, so the walk scans ahead only while it has found less than half
// its limit. On local disk a scan is bound by the CPU, which a
// speculative scan would take from the one the walk waits for.
func scanAhead(b *block) bool {
	if !scanTuning.scanAhead {
		return false
	}
	_, remote := b.file.(blockio.Prefetcher)
	return remote
}

type iterHeap []*candIter

// nextBlock returns the block source that the walk would reach next among
// those not scanned yet: the one whose newest time is latest.
func (h iterHeap) nextBlock() *candIter {
	var best *candIter
	for _, it := range h {
		if it.b != nil && it.scan == nil && !it.opened && (best == nil || it.start > best.start) {
			best = it
		}
	}
	return best
}

func (h iterHeap) Len() int           { return len(h) }
func (h iterHeap) Less(i, j int) bool { return h[i].start > h[j].start }
func (h iterHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *iterHeap) Push(x any)        { *h = append(*h, x.(*candIter)) }
func (h *iterHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// siftCand moves h[i] down to its place in the heap h, newest on top.
func siftCand(h []headCand, i int) {
	for {
		top, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].start > h[top].start {
			top = l
		}
		if r < len(h) && h[r].start > h[top].start {
			top = r
		}
		if top == i {
			return
		}
		h[i], h[top] = h[top], h[i]
		i = top
	}
}

// popCand removes the top of the heap h.
func popCand(h []headCand) []headCand {
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	siftCand(h, 0)
	return h
}

func memFragmentMatches(q *store.Query, t *headTrace) bool {
	match := false
	_ = forEachFramedAt(t.buf, func(off, n int) error {
		var sp model.Span
		if decodeSpanAt(t.buf, off, n, &sp, nil) == nil && store.MatchSpan(q, &sp) {
			match = true
			return errStopIter
		}
		return nil
	})
	return match
}

// hasSpanFilters reports whether q needs span data (beyond the service,
// which fragment summaries list).
func hasSpanFilters(q *store.Query) bool {
	return q.Operation != "" || len(q.Kinds) > 0 || q.Status != nil || q.MinDuration != 0 || q.MaxDuration != 0 || len(q.Attrs) > 0
}

// walk visits distinct candidate trace ids newest first (by the start of
// the fragment that surfaced them) until visit returns false. With span
// filters, only traces with a span satisfying all span conditions are
// visited; block columns are scanned only for blocks the walk reaches, so
// a search that fills its limit from recent data never reads old blocks.
func (s *snapshot) walk(ctx context.Context, q *store.Query, visit func(id model.TraceID) (bool, error)) error {
	p := newPrefilter(q)
	var plan *scanPlan
	if hasSpanFilters(q) {
		plan = newScanPlan(q)
		plan.counters = s.counters
	}
	h := &iterHeap{}
	// Only fragments that pass the summary checks are ordered, not the
	// whole head (snapFor picked them), and as a heap: a walk takes the
	// newest few of thousands, which sorting them all cost more than.
	if mem := s.cands; len(mem) > 0 {
		for i := len(mem)/2 - 1; i >= 0; i-- {
			siftCand(mem, i)
		}
		it := &candIter{mem: mem, s: s, plan: plan}
		if it.next(p) {
			heap.Push(h, it)
		}
	}
	for _, b := range s.blocks {
		if !q.Range.Overlaps(b.meta.MinTime, b.meta.MaxTime) {
			continue
		}
		it := &candIter{b: b, svc: noStr, plan: plan, start: b.meta.MaxTime}
		if q.Service != "" {
			if it.svc = b.idx.strIdx(q.Service); it.svc == noStr {
				continue // service absent from this block
			}
		}
		heap.Push(h, it)
	}
	// Scans started ahead run on a context cancelled when the walk ends,
	// which waits for them: the snapshot's blocks stay referenced.
	ctx, cancel := context.WithCancel(ctx)
	var ahead sync.WaitGroup
	defer func() {
		cancel()
		ahead.Wait()
	}()
	start := func(it *candIter) {
		if it.scan != nil {
			return
		}
		x := it.b.idx
		bs := &blockScan{done: make(chan struct{})}
		it.scan = bs
		ahead.Add(1)
		go func() {
			defer ahead.Done()
			defer close(bs.done)
			bs.match, bs.err = it.b.scanMatches(ctx, plan, func(i int) bool {
				return (p.svc == "" || x.hasService(i, it.svc)) && x.mayHaveStatus(i, it.svc, q.Status) && p.pass(x.ids[i], x.start[i], x.end[i])
			})
		}()
	}
	seen := map[model.TraceID]bool{}
	visited := 0
	for n := 0; h.Len() > 0; n++ {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		it := (*h)[0]
		if it.b != nil && !it.opened {
			// Its key was the block's newest time, an upper bound; now find
			// its real candidates.
			it.opened = true
			if plan != nil {
				start(it)
				// Once half the limit is found the next block is likely
				// not needed: scanning it ahead would waste its requests.
				if next := h.nextBlock(); next != nil && scanAhead(it.b) && (q.Limit <= 0 || visited < (q.Limit+1)/2) {
					start(next)
					s.counters.scansAhead.Add(1)
				}
				<-it.scan.done
				if it.scan.err != nil {
					return it.scan.err
				}
				it.match = it.scan.match
			}
			if it.next(p) {
				heap.Fix(h, 0)
			} else {
				heap.Pop(h)
			}
			continue
		}
		id := it.id
		if it.next(p) {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		visited++
		more, err := visit(id)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// summary merges the summaries of all fragments of a trace.
func (s *snapshot) summary(id model.TraceID) model.TraceSummary {
	var parts []model.TraceSummary
	for _, t := range s.frags(id) {
		parts = append(parts, t.sum)
	}
	for _, b := range s.blocks {
		if i := b.idx.find(id); i >= 0 {
			parts = append(parts, b.idx.summary(i))
		}
	}
	return mergeSummaries(parts)
}

func mergeSummaries(parts []model.TraceSummary) model.TraceSummary {
	if len(parts) == 1 {
		return parts[0]
	}
	var out model.TraceSummary
	var rootStart uint64
	for _, p := range parts {
		out.TraceID = p.TraceID
		if out.StartUnixNano == 0 || p.StartUnixNano < out.StartUnixNano {
			out.StartUnixNano = p.StartUnixNano
		}
		if p.EndUnixNano > out.EndUnixNano {
			out.EndUnixNano = p.EndUnixNano
		}
		// Fragment summaries do not carry the root's own start; the
		// fragment start is a close proxy (roots start first).
		if p.RootName != "" && (out.RootName == "" || p.StartUnixNano < rootStart) {
			out.RootService, out.RootName, rootStart = p.RootService, p.RootName, p.StartUnixNano
		}
		out.SpanCount += p.SpanCount
		out.ErrorCount += p.ErrorCount
		for _, sv := range p.Services {
			found := false
			for i := range out.Services {
				if out.Services[i].Name == sv.Name {
					out.Services[i].SpanCount += sv.SpanCount
					out.Services[i].ErrorCount += sv.ErrorCount
					found = true
					break
				}
			}
			if !found {
				out.Services = append(out.Services, sv)
			}
		}
	}
	return out
}

// spans loads every span of a trace from the snapshot.
func (s *snapshot) spans(id model.TraceID) ([]model.Span, error) {
	var out []model.Span
	var err error
	for _, t := range s.frags(id) {
		if out, err = decodeHead(t.buf, out); err != nil {
			return nil, err
		}
	}
	for _, b := range s.blocks {
		if i := b.idx.find(id); i >= 0 {
			more, err := b.readTrace(i)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
	}
	sortSpans(out)
	return out, nil
}

// summaryDecides reports whether the merged summary alone decides q for a
// trace: no span conditions beyond service, and every span of the trace
// starts inside the range.
func summaryDecides(q *store.Query, sum *model.TraceSummary) bool {
	if q.Operation != "" || len(q.Kinds) > 0 || q.Status != nil || q.MinDuration != 0 || q.MaxDuration != 0 || len(q.Attrs) > 0 {
		return false
	}
	if q.Range.Start != 0 && sum.StartUnixNano < q.Range.Start {
		return false
	}
	if q.Range.End != 0 && sum.EndUnixNano >= q.Range.End {
		return false
	}
	return true
}

func traceLevelOK(q *store.Query, sum *model.TraceSummary) bool {
	d := sum.DurationNano()
	if q.MinTraceDuration != 0 && d < q.MinTraceDuration {
		return false
	}
	if q.MaxTraceDuration != 0 && d > q.MaxTraceDuration {
		return false
	}
	if q.Service != "" {
		for _, s := range sum.Services {
			if s.Name == q.Service {
				return true
			}
		}
		return false
	}
	return true
}

// Search returns summaries of matching traces, newest first.
func (e *Engine) Search(ctx context.Context, q store.Query) ([]model.TraceSummary, error) {
	s := e.snapFor(&q)
	defer s.release()
	return s.search(ctx, q)
}

func (s *snapshot) search(ctx context.Context, q store.Query) ([]model.TraceSummary, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultSearchLimit
	}
	var out []model.TraceSummary
	spanFilters := hasSpanFilters(&q)
	err := s.walk(ctx, &q, func(id model.TraceID) (bool, error) {
		sum := s.summary(id)
		if spanFilters {
			// walk only surfaces traces with a matching span.
			if traceLevelOK(&q, &sum) {
				out = append(out, sum)
			}
			return len(out) < limit, nil
		}
		if summaryDecides(&q, &sum) {
			if traceLevelOK(&q, &sum) {
				out = append(out, sum)
			}
			return len(out) < limit, nil
		}
		spans, err := s.spans(id)
		if err != nil {
			return false, err
		}
		if store.MatchTrace(&q, spans) {
			out = append(out, model.Summarize(spans))
		}
		return len(out) < limit, nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartUnixNano > out[j].StartUnixNano })
	return out, nil
}

// scanBatchTraces and scanBatchSpans bound the traces ScanTraces reads
// together: batches share page reads (a whole-trace search of 20 reads
// them in one), and a scan that stops early has read at most one batch
// ahead.
const (
	scanBatchTraces = 20
	scanBatchSpans  = 1 << 16
)

// ScanTraces calls fn with the spans of each matching trace, newest first.
func (e *Engine) ScanTraces(ctx context.Context, q store.Query, fn func(spans []model.Span) error) error {
	s := e.snapFor(&q)
	defer s.release()
	size := scanBatchTraces
	if q.Limit > 0 {
		size = min(size, q.Limit)
	}
	n := 0
	var batch []model.TraceID
	batchSpans := 0
	flush := func() (bool, error) {
		traces, err := s.traces(ctx, batch)
		batch, batchSpans = batch[:0], 0
		if err != nil {
			return false, err
		}
		for _, spans := range traces {
			if !store.MatchTrace(&q, spans) {
				continue
			}
			if err := fn(spans); err != nil {
				return false, err
			}
			n++
			if q.Limit > 0 && n >= q.Limit {
				return false, nil
			}
		}
		return true, nil
	}
	more := true
	err := s.walk(ctx, &q, func(id model.TraceID) (bool, error) {
		batch = append(batch, id)
		batchSpans += s.spanCount(id)
		if len(batch) < size && batchSpans < scanBatchSpans {
			return true, nil
		}
		var ferr error
		more, ferr = flush()
		return more, ferr
	})
	if err == nil && more && len(batch) > 0 {
		_, err = flush()
	}
	if errors.Is(err, store.ErrStop) {
		return nil
	}
	return err
}

// spanCount is how many spans of a trace the snapshot holds, from the
// counters and indexes.
func (s *snapshot) spanCount(id model.TraceID) int {
	n := 0
	for _, t := range s.frags(id) {
		n += t.n
	}
	for _, b := range s.blocks {
		if i := b.idx.find(id); i >= 0 {
			n += int(b.idx.nspans[i])
		}
	}
	return n
}

// traces loads every span of several distinct traces from the snapshot,
// the block fragments of all of them read together.
func (s *snapshot) traces(ctx context.Context, ids []model.TraceID) ([][]model.Span, error) {
	out := make([][]model.Span, len(ids))
	var frags []fragment
	for k, id := range ids {
		mem := s.frags(id)
		n := 0
		for _, t := range mem {
			n += t.n
		}
		for _, b := range s.blocks {
			if i := b.idx.find(id); i >= 0 {
				frags = append(frags, fragment{b, i, k})
				n += int(b.idx.nspans[i])
			}
		}
		if n > 0 {
			out[k] = make([]model.Span, 0, n) // as in Engine.Traces
		}
		for _, t := range mem {
			var err error
			if out[k], err = decodeHead(t.buf, out[k]); err != nil {
				return nil, err
			}
		}
	}
	if err := readFragments(ctx, frags, out); err != nil {
		return nil, err
	}
	for _, spans := range out {
		sortSpans(spans)
	}
	return out, nil
}

// Services lists services seen in the range.
func (e *Engine) Services(ctx context.Context, r store.TimeRange) ([]string, error) {
	e.catalogReady(ctx)
	return e.cat.serviceList(r), nil
}

// Operations lists span names (with kind) of a service ("" for all).
func (e *Engine) Operations(ctx context.Context, service string, r store.TimeRange) ([]store.Operation, error) {
	e.catalogReady(ctx)
	return e.cat.operationList(service, r), nil
}

// AttributeNames lists attribute keys. Attributes of spans still in the
// head appear once their trace is cut into a block (seconds), which keeps
// the write path free of per-attribute work.
func (e *Engine) AttributeNames(ctx context.Context, scope store.Scope, r store.TimeRange) ([]string, error) {
	e.catalogReady(ctx)
	return e.cat.attrNames(scope, r), nil
}

// AttributeValues lists distinct values of a key (at most 1000 per key are
// remembered, values longer than 256 bytes are not).
func (e *Engine) AttributeValues(ctx context.Context, scope store.Scope, key string, r store.TimeRange, limit int) ([]model.Value, error) {
	e.catalogReady(ctx)
	return e.cat.attrValues(scope, key, r, limit), nil
}

// TraceSpanCount returns how many spans of a trace are stored, from the
// head's counters and the blocks' indexes, without decoding any: the API
// refuses an analysis too large before reading the trace.
func (e *Engine) TraceSpanCount(ctx context.Context, id model.TraceID, hint store.TimeRange) (int, error) {
	parts := e.traceParts(id, hint)
	releaseHits(parts.hits)
	return parts.spans, ctx.Err()
}

package engine

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/tracedx/tracedx/internal/model"
)

// The head holds spans that are not in a block yet, grouped per trace. A
// trace stays here until it has been idle for IdleTimeout (then it is
// "complete": handed to OnTraceComplete and cut into a block) or until
// memory pressure forces it out early. Spans are kept in their encoded
// form (the same bytes the WAL holds), which costs about a third of the
// equivalent Go structs; a small running summary per trace answers
// search-by-service without decoding.

const headShards = 64

type headTrace struct {
	buf []byte // framed encoded spans
	n   int
	traceMeta
	lastSeen int64 // engine clock, unix nanos
	// firstSeen is when the trace's first span reached the head (or, for
	// a trace cut early and written to since, its first cut part did):
	// the trace completes MaxOpen after it however busy it still is.
	firstSeen int64
	minSeg    uint64 // oldest WAL segment holding spans of this trace
}

// doneRule tells which traces of a cut complete: those with no span since
// idle, and those open since open (Options.MaxOpen), still written to or
// not. Both are engine clock, unix nanos.
type doneRule struct{ idle, open int64 }

func (r doneRule) done(t *headTrace) bool { return t.lastSeen <= r.idle || t.firstSeen <= r.open }

// traceMeta is what the engine knows of a trace without decoding it: the
// running summary (search by service), and what OnTraceComplete receives
// for traces whose spans nobody wants decoded.
type traceMeta struct {
	sum      model.TraceSummary
	rootSt   uint64
	rootSpan model.SpanID
	versions []string // parallel to sum.Services: service.version of the service's first span
	flags    uint32   // Options.SpanFlags, ORed
}

func (t *headTrace) size() int64 { return int64(cap(t.buf)) + 160 + int64(len(t.sum.Services))*56 }

// add appends a run of spans of the trace, framed in enc.
func (t *headTrace) add(spans []model.Span, enc []byte, seg uint64, now int64, h *head) {
	t.buf = append(t.buf, enc...)
	t.n += len(spans)
	t.lastSeen = now
	if t.minSeg == 0 || seg < t.minSeg {
		t.minSeg = seg
	}
	for i := range spans {
		t.traceMeta.add(&spans[i], h.flags, h.versions)
	}
}

func (m *traceMeta) add(s *model.Span, flags func(*model.Span) uint32, versions bool) {
	if flags != nil {
		m.flags |= flags(s)
	}
	sum := &m.sum
	sum.TraceID = s.TraceID
	if sum.StartUnixNano == 0 || s.StartUnixNano < sum.StartUnixNano {
		sum.StartUnixNano = s.StartUnixNano
	}
	if s.EndUnixNano > sum.EndUnixNano {
		sum.EndUnixNano = s.EndUnixNano
	}
	if s.IsRoot() && (sum.RootName == "" || s.StartUnixNano < m.rootSt) {
		sum.RootService, sum.RootName, m.rootSt, m.rootSpan = s.Service, s.Name, s.StartUnixNano, s.SpanID
	}
	sum.SpanCount++
	isErr := s.StatusCode == model.StatusError
	if isErr {
		sum.ErrorCount++
	}
	for i := range sum.Services {
		if sum.Services[i].Name == s.Service {
			sum.Services[i].SpanCount++
			if isErr {
				sum.Services[i].ErrorCount++
			}
			return
		}
	}
	st := model.ServiceStats{Name: s.Service, SpanCount: 1}
	if isErr {
		st.ErrorCount = 1
	}
	sum.Services = append(sum.Services, st)
	if versions {
		m.versions = append(m.versions, s.Resource.Str("service.version"))
	}
}

// merge adds the meta of other spans of the same trace.
func (m *traceMeta) merge(o *traceMeta) {
	m.flags |= o.flags
	sum := &m.sum
	if sum.TraceID.IsZero() {
		sum.TraceID = o.sum.TraceID
	}
	if o.sum.SpanCount == 0 {
		return
	}
	if sum.SpanCount == 0 || o.sum.StartUnixNano < sum.StartUnixNano {
		sum.StartUnixNano = o.sum.StartUnixNano
	}
	sum.EndUnixNano = max(sum.EndUnixNano, o.sum.EndUnixNano)
	if o.sum.RootName != "" && (sum.RootName == "" || o.rootSt < m.rootSt) {
		sum.RootService, sum.RootName, m.rootSt, m.rootSpan = o.sum.RootService, o.sum.RootName, o.rootSt, o.rootSpan
	}
	sum.SpanCount += o.sum.SpanCount
	sum.ErrorCount += o.sum.ErrorCount
next:
	for i, os := range o.sum.Services {
		for j := range sum.Services {
			if sum.Services[j].Name == os.Name {
				sum.Services[j].SpanCount += os.SpanCount
				sum.Services[j].ErrorCount += os.ErrorCount
				continue next
			}
		}
		sum.Services = append(sum.Services, os)
		if i < len(o.versions) { // else versions are not kept
			for len(m.versions) < len(sum.Services)-1 {
				m.versions = append(m.versions, "")
			}
			m.versions = append(m.versions, o.versions[i])
		}
	}
}

func (t *headTrace) spans() ([]model.Span, error) {
	return decodeFramed(t.buf, make([]model.Span, 0, t.n))
}

func (t *headTrace) hasService(svc string) bool {
	for i := range t.sum.Services {
		if t.sum.Services[i].Name == svc {
			return true
		}
	}
	return false
}

type headShard struct {
	mu     sync.Mutex
	traces map[model.TraceID]*headTrace
}

type head struct {
	shards [headShards]headShard
	// flags classifies each inserted span (Options.SpanFlags); nil: none.
	flags func(*model.Span) uint32
	// versions: keep each service's version in the trace's meta (only
	// completed traces report them).
	versions bool
	bytes    atomic.Int64
	spans    atomic.Int64
	traces   atomic.Int64
}

func newHead(flags func(*model.Span) uint32, versions bool) *head {
	h := &head{flags: flags, versions: versions}
	for i := range h.shards {
		h.shards[i].traces = map[model.TraceID]*headTrace{}
	}
	return h
}

func (h *head) shard(id model.TraceID) *headShard { return &h.shards[id[15]%headShards] }

// batchNeed maps a trace to the framed bytes of its spans in the batch
// being inserted that are not appended yet. SDKs batch by resource, so a
// request holds each trace in several runs (one per service); growing the
// buffer run by run allocated and copied it about three times over and
// left a quarter of slack in the head.
type batchNeed map[model.TraceID]int

var batchNeedPool = sync.Pool{New: func() any { return batchNeed{} }}

// insert adds spans whose framed encodings are enc[offs[i]:offs[i+1]].
func (h *head) insert(spans []model.Span, enc []byte, offs []int, seg uint64, now int64) {
	need := batchNeedPool.Get().(batchNeed)
	defer func() {
		clear(need)
		batchNeedPool.Put(need)
	}()
	for i := 0; i < len(spans); {
		j := i + 1
		for j < len(spans) && spans[j].TraceID == spans[i].TraceID {
			j++
		}
		need[spans[i].TraceID] += offs[j] - offs[i]
		i = j
	}
	var grew int64
	for i := 0; i < len(spans); {
		s := &spans[i]
		// Spans of one trace usually come in runs (converters keep the
		// order of the request): one lock and lookup per run.
		j := i + 1
		for j < len(spans) && spans[j].TraceID == s.TraceID {
			j++
		}
		sh := h.shard(s.TraceID)
		sh.mu.Lock()
		t := sh.traces[s.TraceID]
		var before int64 // a trace new to the head adds its whole size, base included
		if t == nil {
			t = &headTrace{firstSeen: now}
			sh.traces[s.TraceID] = t
			h.traces.Add(1)
		} else {
			before = t.size()
		}
		run := offs[j] - offs[i]
		// A trace new to the head whose spans of this batch are all in
		// this run (the usual case) gets its buffer from add's append,
		// which does not clear the bytes it copies over, as make did.
		whole := cap(t.buf) == 0 && need[s.TraceID] == run
		if cap(t.buf)-len(t.buf) < run && !whole {
			// Room for the rest of the batch at once; a trace already in
			// the head gets slack for spans of later batches.
			t.buf = append(make([]byte, 0, len(t.buf)+need[s.TraceID]+len(t.buf)/4), t.buf...)
		}
		need[s.TraceID] -= run
		t.add(spans[i:j], enc[offs[i]:offs[j]], seg, now, h)
		if whole {
			// Exactly the run, as make gave: the head's byte count is of
			// capacities.
			t.buf = t.buf[:run:run]
		}
		grew += t.size() - before
		sh.mu.Unlock()
		i = j
	}
	h.bytes.Add(grew)
	h.spans.Add(int64(len(spans)))
}

func (h *head) get(id model.TraceID) *headTrace {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.traces[id]
	if t == nil {
		return nil
	}
	// Copy so the caller can decode without holding the lock while writers
	// append (append may reallocate buf; the copied header stays valid).
	c := *t
	c.sum.Services = append([]model.ServiceStats(nil), t.sum.Services...)
	c.versions = nil // queries do not read them; writers may append
	return &c
}

// encoded returns the framed spans the head holds of id and their count
// (nil, 0: none). The buffer stays valid without the lock: writers append
// past it or to a new array.
func (h *head) encoded(id model.TraceID) ([]byte, int) {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t := sh.traces[id]; t != nil {
		return t.buf, t.n
	}
	return nil, 0
}

// openSince lowers the firstSeen of the head's trace id to at, if it
// holds the trace and at is earlier.
func (h *head) openSince(id model.TraceID, at int64) {
	sh := h.shard(id)
	sh.mu.Lock()
	if t := sh.traces[id]; t != nil && at < t.firstSeen {
		t.firstSeen = at
	}
	sh.mu.Unlock()
}

// has reports whether the head holds spans of id.
func (h *head) has(id model.TraceID) bool {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.traces[id] != nil
}

// cut removes and returns the traces selected by pick.
func (h *head) cut(pick func(t *headTrace) bool) map[model.TraceID]*headTrace {
	cut, _ := h.takeCut(h.planCut(pick), pick)
	return cut
}

// cutPlan is what a cut prepares before it takes the engine's lock: the
// traces pick selected, shard by shard, and the map that will hold them.
type cutPlan struct {
	refs []headRef
	out  map[model.TraceID]*headTrace
}

// planCut lists the traces pick selects now. It takes only the shards'
// locks, so a cut can look at every head trace (tens of thousands at 30k
// spans/s) and build its map without holding the engine's lock, which
// trace reads wait for.
func (h *head) planCut(pick func(t *headTrace) bool) cutPlan {
	var refs []headRef
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for id, t := range sh.traces {
			if pick(t) {
				refs = append(refs, headRef{id, t})
			}
		}
		sh.mu.Unlock()
	}
	out := make(map[model.TraceID]*headTrace, len(refs))
	for _, r := range refs {
		out[r.id] = r.t
	}
	return cutPlan{refs, out}
}

// doneBytes is what the traces complete by r take of the head.
func (h *head) doneBytes(r doneRule) int64 {
	var n int64
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, t := range sh.traces {
			if r.done(t) {
				n += t.size()
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// takeCut removes from the head those of p's traces that pick still
// selects (a span that arrived since planCut looked keeps its trace in
// the head) and returns them, in p's map, with their size. It locks each
// shard once.
func (h *head) takeCut(p cutPlan, pick func(t *headTrace) bool) (map[model.TraceID]*headTrace, int64) {
	var freed, spans int64
	var sh *headShard
	for _, r := range p.refs {
		if s := h.shard(r.id); s != sh {
			if sh != nil {
				sh.mu.Unlock()
			}
			sh = s
			sh.mu.Lock()
		}
		t := sh.traces[r.id]
		if t == nil || !pick(t) {
			delete(p.out, r.id)
			continue
		}
		if t != r.t {
			p.out[r.id] = t
		}
		delete(sh.traces, r.id)
		freed += t.size()
		spans += int64(t.n)
	}
	if sh != nil {
		sh.mu.Unlock()
	}
	h.bytes.Add(-freed)
	h.spans.Add(-spans)
	h.traces.Add(-int64(len(p.out)))
	return p.out, freed
}

// restore puts back the traces of a cut that failed, as they were: their
// encoded spans and meta, not decoded and encoded again. A trace written
// to since the cut took it out gets the cut's spans appended. Decoding a
// cut to insert its spans again took 2-3 times the cut's size on every
// retry while a full disk failed the cuts: 100 MB more live heap every
// few seconds, RSS up to 656 MB under a 256 MiB memory limit.
func (h *head) restore(cut map[model.TraceID]*headTrace) {
	var grew, spans, added int64
	for id, t := range cut {
		sh := h.shard(id)
		sh.mu.Lock()
		if cur := sh.traces[id]; cur != nil {
			before := cur.size()
			// Readers hold cur.buf only up to its length: appending
			// past it (or to a new array) leaves what they read intact.
			cur.buf = append(cur.buf, t.buf...)
			cur.n += t.n
			cur.traceMeta.merge(&t.traceMeta)
			cur.lastSeen = max(cur.lastSeen, t.lastSeen)
			cur.firstSeen = min(cur.firstSeen, t.firstSeen)
			if t.minSeg != 0 && (cur.minSeg == 0 || t.minSeg < cur.minSeg) {
				cur.minSeg = t.minSeg
			}
			grew += cur.size() - before
		} else {
			sh.traces[id] = t
			grew += t.size()
			added++
		}
		spans += int64(t.n)
		sh.mu.Unlock()
	}
	h.bytes.Add(grew)
	h.spans.Add(spans)
	h.traces.Add(added)
}

// each calls fn for a snapshot copy of every trace (summary fields and the
// encoded buffer as of now).
func (h *head) each(fn func(t *headTrace)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		list := make([]headTrace, 0, len(sh.traces))
		// Every search copies the whole head: one array for the shard's
		// service lists instead of one per trace halved what the copy
		// cost. When it grows, lists already copied keep the old array.
		svcs := make([]model.ServiceStats, 0, 2*len(sh.traces))
		for _, t := range sh.traces {
			c := *t
			n := len(svcs)
			svcs = append(svcs, t.sum.Services...)
			c.sum.Services = svcs[n:len(svcs):len(svcs)]
			c.versions = nil
			list = append(list, c)
		}
		sh.mu.Unlock()
		for j := range list {
			fn(&list[j])
		}
	}
}

// pack appends the meta to dst in one pointer-free encoding. Traces cut
// early wait in pending for up to IdleTimeout, tens of thousands at high
// rates; as structs with string slices they were most of the objects the
// garbage collector had to mark.
func (m *traceMeta) pack(dst []byte) []byte {
	s := &m.sum
	dst = binary.AppendUvarint(dst, uint64(m.flags))
	dst = binary.AppendUvarint(dst, m.rootSt)
	dst = append(dst, m.rootSpan[:]...)
	dst = binary.AppendUvarint(dst, s.StartUnixNano)
	dst = binary.AppendUvarint(dst, s.EndUnixNano)
	dst = binary.AppendUvarint(dst, uint64(s.SpanCount))
	dst = binary.AppendUvarint(dst, uint64(s.ErrorCount))
	dst = appendPackedStr(dst, s.RootService)
	dst = appendPackedStr(dst, s.RootName)
	dst = binary.AppendUvarint(dst, uint64(len(s.Services)))
	for i, st := range s.Services {
		dst = appendPackedStr(dst, st.Name)
		v := ""
		if i < len(m.versions) {
			v = m.versions[i]
		}
		dst = appendPackedStr(dst, v)
		dst = binary.AppendUvarint(dst, uint64(st.SpanCount))
		dst = binary.AppendUvarint(dst, uint64(st.ErrorCount))
	}
	return dst
}

func appendPackedStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// unpackMeta decodes what pack wrote for trace id. The input is the
// engine's own memory, never read from outside, so it is trusted.
func unpackMeta(id model.TraceID, b []byte) traceMeta {
	r := packedReader{b: b}
	var m traceMeta
	s := &m.sum
	s.TraceID = id
	m.flags = uint32(r.uvarint())
	m.rootSt = r.uvarint()
	copy(m.rootSpan[:], r.take(len(m.rootSpan)))
	s.StartUnixNano = r.uvarint()
	s.EndUnixNano = r.uvarint()
	s.SpanCount = int(r.uvarint())
	s.ErrorCount = int(r.uvarint())
	s.RootService = r.str()
	s.RootName = r.str()
	n := int(r.uvarint())
	s.Services = make([]model.ServiceStats, n)
	m.versions = make([]string, n)
	for i := range n {
		s.Services[i].Name = r.str()
		m.versions[i] = r.str()
		s.Services[i].SpanCount = int(r.uvarint())
		s.Services[i].ErrorCount = int(r.uvarint())
	}
	return m
}

type packedReader struct{ b []byte }

func (r *packedReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	r.b = r.b[max(n, 0):]
	return v
}

func (r *packedReader) take(n int) []byte {
	n = min(n, len(r.b))
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *packedReader) str() string { return string(r.take(int(r.uvarint()))) }

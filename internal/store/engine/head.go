package engine

import (
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
	buf      []byte // framed encoded spans
	n        int
	sum      model.TraceSummary
	rootSt   uint64
	lastSeen int64  // engine clock, unix nanos
	minSeg   uint64 // oldest WAL segment holding spans of this trace
}

func (t *headTrace) size() int64 { return int64(cap(t.buf)) + 160 + int64(len(t.sum.Services))*40 }

func (t *headTrace) add(s *model.Span, enc []byte, seg uint64, now int64) {
	t.buf = append(t.buf, enc...)
	t.n++
	t.lastSeen = now
	if t.minSeg == 0 || seg < t.minSeg {
		t.minSeg = seg
	}
	sum := &t.sum
	sum.TraceID = s.TraceID
	if sum.StartUnixNano == 0 || s.StartUnixNano < sum.StartUnixNano {
		sum.StartUnixNano = s.StartUnixNano
	}
	if s.EndUnixNano > sum.EndUnixNano {
		sum.EndUnixNano = s.EndUnixNano
	}
	if s.IsRoot() && (sum.RootName == "" || s.StartUnixNano < t.rootSt) {
		sum.RootService, sum.RootName, t.rootSt = s.Service, s.Name, s.StartUnixNano
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
	bytes  atomic.Int64
	spans  atomic.Int64
	traces atomic.Int64
}

func newHead() *head {
	h := &head{}
	for i := range h.shards {
		h.shards[i].traces = map[model.TraceID]*headTrace{}
	}
	return h
}

func (h *head) shard(id model.TraceID) *headShard { return &h.shards[id[15]%headShards] }

// insert adds spans whose framed encodings are enc[offs[i]:offs[i+1]].
func (h *head) insert(spans []model.Span, enc []byte, offs []int, seg uint64, now int64) {
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
		if t == nil {
			t = &headTrace{}
			sh.traces[s.TraceID] = t
			h.traces.Add(1)
		}
		before := t.size()
		if need := offs[j] - offs[i]; cap(t.buf)-len(t.buf) < need {
			t.buf = append(make([]byte, 0, len(t.buf)+need+len(t.buf)/4), t.buf...)
		}
		for k := i; k < j; k++ {
			t.add(&spans[k], enc[offs[k]:offs[k+1]], seg, now)
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
	return &c
}

// cut removes and returns the traces selected by pick.
func (h *head) cut(pick func(t *headTrace) bool) map[model.TraceID]*headTrace {
	out := map[model.TraceID]*headTrace{}
	var freed, spans int64
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for id, t := range sh.traces {
			if pick(t) {
				out[id] = t
				delete(sh.traces, id)
				freed += t.size()
				spans += int64(t.n)
			}
		}
		sh.mu.Unlock()
	}
	h.bytes.Add(-freed)
	h.spans.Add(-spans)
	h.traces.Add(-int64(len(out)))
	return out
}

// each calls fn for a snapshot copy of every trace (summary fields and the
// encoded buffer as of now).
func (h *head) each(fn func(t *headTrace)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		list := make([]headTrace, 0, len(sh.traces))
		for _, t := range sh.traces {
			c := *t
			c.sum.Services = append([]model.ServiceStats(nil), t.sum.Services...)
			list = append(list, c)
		}
		sh.mu.Unlock()
		for j := range list {
			fn(&list[j])
		}
	}
}

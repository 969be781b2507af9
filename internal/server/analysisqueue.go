package server

import (
	"sync"
	"sync/atomic"

	"github.com/tracedx/tracedx/internal/store/engine"
)

// Why a completed trace is worth analysing ahead of others. The empty
// reason is a plain trace: ok, of usual duration and shape.
const (
	priorityError  = "error"  // an error span, or a failed root
	prioritySlow   = "slow"   // slower than its endpoint's usual p95, or clearly long
	priorityShape  = "shape"  // more spans than its endpoint usually has, or spans only the whole trace explains
	prioritySample = "sample" // in the analytics' uniform sample, which must stay uniform
)

// Why a completed trace was not analysed (tracedx_analysis_dropped_total).
const (
	skipNoRoom    = "no_room"          // a plain trace (or one not described), the queue full
	skipDisplaced = "displaced"        // a queued plain trace, replaced by one that matters
	skipNoRoomToo = "no_room_priority" // one that matters, the queue full of such traces
)

// queuedTrace is a completed trace waiting for the worker.
type queuedTrace struct {
	c engine.CompletedTrace
	// priority is its reason to be analysed first, once classified
	// (classified says so: plain traces are only told apart under pressure).
	priority   string
	classified bool
	gone       bool // displaced: the worker skips it
}

// analysisQueue holds completed traces for the analysis worker in arrival
// order, bounded by spans (decoded traces are ~1.7 KB per span). When a
// trace does not fit, a trace that matters takes the place of the oldest
// queued plain traces, and a plain one is turned away: under overload the
// detectors spend their time on the traces a user will open.
type analysisQueue struct {
	max int64
	// spans are queued or being processed; read without the lock by the
	// store's TakeSpans and by admission.
	spans atomic.Int64

	mu         sync.Mutex
	items      []queuedTrace
	head       int   // items[head:] are queued
	plainFrom  int   // no live plain trace before it
	plainSpans int64 // spans of the queued traces classified plain or not yet classified
}

func newAnalysisQueue(maxSpans int64) *analysisQueue { return &analysisQueue{max: maxSpans} }

// fits reports whether a trace of n spans fits without displacing any: the
// queue is empty (a trace larger than the whole budget would otherwise never
// be analysed), or it has the room.
func (q *analysisQueue) fits(n int64) bool {
	s := q.spans.Load()
	return s == 0 || s+n <= q.max
}

// fitsDisplacing reports whether a trace of n spans that matters would fit
// once every queued plain trace made way for it.
func (q *analysisQueue) fitsDisplacing(n int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	rest := q.spans.Load() - q.plainSpans
	return rest <= 0 || rest+n <= q.max
}

// push queues t. When it does not fit and classify calls it one that
// matters, the oldest plain traces make room and are returned; ok is false
// when t was turned away. classify is asked only under pressure, about t
// and about the queued traces not yet classified.
func (q *analysisQueue) push(c engine.CompletedTrace, classify func(*engine.CompletedTrace) string) (displaced []engine.CompletedTrace, priority string, ok bool) {
	n := weight(c)
	t := queuedTrace{c: c}
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.spans.Load(); s != 0 && s+n > q.max {
		t.priority, t.classified = classify(&t.c), true
		if t.priority == "" {
			return nil, "", false
		}
		if rest := s - q.plainSpans; rest > 0 && rest+n > q.max {
			return nil, t.priority, false
		}
		// Queued traces not classified yet may turn out to matter too; then
		// t goes in over the bound, by at most its own spans.
		for i := q.plainFrom; i < len(q.items) && q.spans.Load()+n > q.max; i++ {
			it := &q.items[i]
			if !it.gone && !it.classified {
				it.priority, it.classified = classify(&it.c), true
				if it.priority != "" {
					q.plainSpans -= weight(it.c)
				}
			}
			if !it.gone && it.priority == "" {
				w := weight(it.c)
				q.plainSpans -= w
				q.spans.Add(-w)
				displaced = append(displaced, it.c)
				it.gone, it.c = true, engine.CompletedTrace{}
			}
			if i == q.plainFrom {
				q.plainFrom++ // gone, or one that stays
			}
		}
	}
	if t.priority == "" {
		q.plainSpans += n
	}
	q.spans.Add(n)
	q.items = append(q.items, t)
	return displaced, t.priority, true
}

// pop takes the oldest queued trace; its spans stay counted until done.
func (q *analysisQueue) pop() (queuedTrace, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head < len(q.items) {
		t := q.items[q.head]
		q.items[q.head] = queuedTrace{}
		q.head++
		q.plainFrom = max(q.plainFrom, q.head)
		if t.gone {
			continue
		}
		if t.priority == "" {
			q.plainSpans -= weight(t.c)
		}
		q.compact()
		return t, true
	}
	q.items, q.head, q.plainFrom = q.items[:0], 0, 0
	return queuedTrace{}, false
}

// compact moves the queued traces to the front once the taken ones are
// half the slice, so it does not grow without bound.
func (q *analysisQueue) compact() {
	if q.head < 1024 || q.head < len(q.items)/2 {
		return
	}
	n := copy(q.items, q.items[q.head:])
	clear(q.items[n:])
	q.items = q.items[:n]
	q.plainFrom -= q.head
	q.head = 0
}

// done releases the spans of a trace the worker finished.
func (q *analysisQueue) done(c engine.CompletedTrace) { q.spans.Add(-weight(c)) }

// weight is what a completed trace counts against the queue bound: its
// decoded spans, or 1 for a summary.
func weight(c engine.CompletedTrace) int64 { return max(1, int64(len(c.Spans))) }

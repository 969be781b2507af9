package server

import (
	"sync"
	"sync/atomic"
	"time"

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
	skipDisplaced = "displaced"        // a queued trace, replaced by one that matters more
	skipNoRoomToo = "no_room_priority" // one that matters, the queue full of such traces
)

// rank orders priorities: a trace displaces only queued traces of a lower
// rank. Errors come first: under overload the worker cannot take every
// slow trace (a twentieth of traffic by definition), and a failure is what
// a user opens first. The analytics' sample ranks below slowness and
// shape: displacing the oldest of its traces thins it at random, so it
// stays uniform.
func rank(priority string) int {
	switch priority {
	case "":
		return 0
	case prioritySample:
		return 1
	case priorityError:
		return 3
	}
	return 2
}

const ranks = 4

// queuedTrace is a completed trace waiting for the worker.
type queuedTrace struct {
	c engine.CompletedTrace
	// priority is its reason to be analysed first, once classified
	// (classified says so: traces are only told apart under pressure, and
	// count as plain until then).
	priority   string
	classified bool
	gone       bool // displaced: the worker skips it
}

// analysisQueue holds completed traces for the analysis worker in arrival
// order, bounded by spans (decoded traces are ~1.7 KB per span). When a
// trace does not fit, one that matters takes the place of the oldest
// queued traces that matter less, and a plain one is turned away: under
// overload the detectors spend their time on the traces a user will open.
type analysisQueue struct {
	max int64
	// spans are queued or being processed; read without the lock by the
	// store's TakeSpans and by admission.
	spans atomic.Int64

	mu    sync.Mutex
	items []queuedTrace
	head  int // items[head:] are queued
	// classifiedTo: the traces before it are classified.
	classifiedTo int
	// byRank are the spans of the queued traces of each rank (rank 0 for
	// those not classified yet).
	byRank [ranks]int64
	// ready is signalled when a trace is queued: the worker waits for it
	// instead of polling an empty queue.
	ready chan struct{}
	// finished is signalled when the worker is done with a trace, for a
	// completion waiting for room (waitDone); stalled is set by a wait
	// that saw none finish, and cleared by the next one finished.
	finished chan struct{}
	stalled  atomic.Bool
}

func newAnalysisQueue(maxSpans int64) *analysisQueue {
	return &analysisQueue{max: maxSpans, ready: make(chan struct{}, 1), finished: make(chan struct{}, 1)}
}

// fits reports whether a trace of n spans fits without displacing any: the
// queue is empty (a trace larger than the whole budget would otherwise never
// be analysed), or it has the room.
func (q *analysisQueue) fits(n int64) bool {
	s := q.spans.Load()
	return s == 0 || s+n <= q.max
}

// fitsDisplacing reports whether a trace of n spans and priority would
// fit once every queued trace of a lower rank made way for it.
func (q *analysisQueue) fitsDisplacing(n int64, priority string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.fitsAbove(n, rank(priority))
}

// fitsAbove is fitsDisplacing for rank r; q.mu is held.
func (q *analysisQueue) fitsAbove(n int64, r int) bool {
	rest := q.spans.Load()
	for i := range r {
		rest -= q.byRank[i]
	}
	return rest <= 0 || rest+n <= q.max
}

// push queues c. When it does not fit and classify calls it one that
// matters, the oldest queued traces of a lower rank make room and are
// returned; ok is false when c was turned away. classify is asked only
// under pressure, about c and about the queued traces not yet classified.
func (q *analysisQueue) push(c engine.CompletedTrace, classify func(*engine.CompletedTrace) string) (displaced []engine.CompletedTrace, priority string, ok bool) {
	n := weight(c)
	t := queuedTrace{c: c}
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.spans.Load(); s != 0 && s+n > q.max {
		t.priority, t.classified = classify(&t.c), true
		r := rank(t.priority)
		if r == 0 {
			return nil, t.priority, false
		}
		q.classifyQueued(classify)
		if !q.fitsAbove(n, r) {
			return nil, t.priority, false
		}
		for i := q.head; i < len(q.items) && q.spans.Load()+n > q.max; i++ {
			it := &q.items[i]
			if it.gone {
				continue
			}
			w := weight(it.c)
			if rank(it.priority) < r {
				q.byRank[rank(it.priority)] -= w
				q.spans.Add(-w)
				displaced = append(displaced, it.c)
				it.gone, it.c = true, engine.CompletedTrace{}
			}
		}
	}
	q.byRank[rank(t.priority)] += n
	q.spans.Add(n)
	q.items = append(q.items, t)
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return displaced, t.priority, true
}

// classifyQueued classifies the queued traces not classified yet (each
// once), so byRank says what could make way; q.mu is held.
func (q *analysisQueue) classifyQueued(classify func(*engine.CompletedTrace) string) {
	for i := max(q.classifiedTo, q.head); i < len(q.items); i++ {
		it := &q.items[i]
		if it.gone || it.classified {
			continue
		}
		it.priority, it.classified = classify(&it.c), true
		w := weight(it.c)
		q.byRank[0] -= w
		q.byRank[rank(it.priority)] += w
	}
	q.classifiedTo = len(q.items)
}

// pop takes the oldest queued trace; its spans stay counted until done.
func (q *analysisQueue) pop() (queuedTrace, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head < len(q.items) {
		t := q.items[q.head]
		q.items[q.head] = queuedTrace{}
		q.head++
		if t.gone {
			continue
		}
		q.byRank[rank(t.priority)] -= weight(t.c)
		q.compact()
		return t, true
	}
	q.items, q.head, q.classifiedTo = q.items[:0], 0, 0
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
	q.classifiedTo = max(0, q.classifiedTo-q.head)
	q.head = 0
}

// done releases the spans of a trace the worker finished.
func (q *analysisQueue) done(c engine.CompletedTrace) {
	q.spans.Add(-weight(c))
	q.stalled.Store(false)
	select {
	case q.finished <- struct{}{}:
	default:
	}
}

// waitDone waits up to d for the worker to finish a trace and reports
// whether one did (or had since the last wait). After a wait that saw
// none, it returns false at once until the worker finishes one: a worker
// busy with a huge trace, or stopped, costs a burst of completions one
// wait, not one each.
func (q *analysisQueue) waitDone(d time.Duration) bool {
	if q.stalled.Load() {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.finished:
		return true
	case <-t.C:
		q.stalled.Store(true)
		return false
	}
}

// weight is what a completed trace counts against the queue bound: its
// decoded spans, or 1 for a summary.
func weight(c engine.CompletedTrace) int64 { return max(1, int64(len(c.Spans))) }

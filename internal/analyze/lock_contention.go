package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// LockContention finds request time spent queueing for something shared: a
// lock or mutex, a semaphore, a connection pool, a queue, or a worker pool
// too small for the calls a request fans out. The evidence is what spans
// say (wait/acquired events, pool wait-time attributes) or, for worker
// pools, the shape of the calls: N similar calls that never run more than
// K < N at a time, each next one starting as an earlier one ends.
type LockContention struct {
	// MinWaitMS and MinShare (of the request, 0..1) are the floor below
	// which a wait is not reported at all.
	MinWaitMS float64 `yaml:"min_wait_ms"`
	MinShare  float64 `yaml:"min_share"`
	// WarningShare and CriticalShare grade by the wait's share of the
	// request; warning also needs WarningMinMS and critical CriticalMinMS,
	// so that a few milliseconds of a fast request stay info.
	WarningShare  float64 `yaml:"warning_share"`
	WarningMinMS  float64 `yaml:"warning_min_ms"`
	CriticalShare float64 `yaml:"critical_share"`
	CriticalMinMS float64 `yaml:"critical_min_ms"`
	// MinPoolCalls is the fewest similar calls under one parent that can
	// show a worker pool.
	MinPoolCalls int `yaml:"min_pool_calls"`
	// HandoffToleranceMS is how close a queued call's start must be to an
	// earlier call's end to count as "waited for that worker"; the
	// effective tolerance is at least HandoffToleranceShare of the median
	// call, because SDK clocks round and jitter.
	HandoffToleranceMS    float64 `yaml:"handoff_tolerance_ms"`
	HandoffToleranceShare float64 `yaml:"handoff_tolerance_share"`
	// MinSaturation is the share of the time from the first call's start to
	// the last call's start during which K calls ran: a pool that was
	// full while work queued, not a loop with one overlap.
	MinSaturation float64 `yaml:"min_saturation"`
}

// NewLockContention returns the detector with its defaults.
func NewLockContention() *LockContention {
	return &LockContention{MinWaitMS: 10, MinShare: 0.1, WarningShare: 0.2, WarningMinMS: 50, CriticalShare: 0.5, CriticalMinMS: 100,
		MinPoolCalls: 4, HandoffToleranceMS: 3, HandoffToleranceShare: 0.1, MinSaturation: 0.7}
}

func init() { Register(func() Detector { return NewLockContention() }) }

// Kind implements Detector.
func (*LockContention) Kind() string { return "lock_contention" }

// lockOrderAdvice is what ends deadlocks and long row-lock waits between
// transactions, whichever detector met them.
const lockOrderAdvice = "take row locks in one order everywhere (sort the keys, or SELECT ... FOR UPDATE them first), " +
	"keep transactions short (no remote calls inside), and retry a deadlock victim once"

// LockContentionEvidence is the evidence of a lock_contention finding.
type LockContentionEvidence struct {
	// Mechanism is how the wait was seen: "span_events", "attributes",
	// "span_name" (the span is a pool checkout, such as pg-pool.connect),
	// "database_error" (a deadlock or lock timeout, or the statement such
	// a victim blocked), "lock_release" (a statement that finished as
	// another transaction that had written before it started ended),
	// "locking_read" (SELECT ... FOR UPDATE whose
	// transaction holds the lock across a remote call), "row_lock_queue"
	// (a statement that locks rows and took ten times longer than a later
	// statement of its transaction with the same table and WHERE),
	// "checkout_gap"
	// (database/sql's untraced wait before a connection is handed out) or
	// "pool_fan_out".
	Mechanism string `json:"mechanism"`
	// Resource is "lock", "semaphore", "connection_pool", "worker_pool",
	// "pool" or "queue".
	Resource string `json:"resource"`
	// Span is the span that waited, or for pool_fan_out the parent whose
	// calls queued.
	Span SpanRef `json:"span"`
	// WaitMS is the wall-clock time the span (or the fan-out) waited.
	WaitMS       float64 `json:"wait_ms"`
	SpanSharePct float64 `json:"span_share_pct"`
	// RequestSharePct is the wait's critical-path time over the request's.
	RequestSharePct float64 `json:"request_share_pct"`
	// WaitersAhead is "behind N transactions" when the span said so;
	// WaitersBehind is how many queued behind it when it got the lock.
	WaitersAhead  int                 `json:"waiters_ahead,omitempty"`
	WaitersBehind int                 `json:"waiters_behind,omitempty"`
	WaitEvent     string              `json:"wait_event,omitempty"`
	AcquiredEvent string              `json:"acquired_event,omitempty"`
	WaitAttribute string              `json:"wait_attribute,omitempty"`
	PoolName      string              `json:"pool_name,omitempty"`
	Pool          *PoolFanOutEvidence `json:"pool,omitempty"`
	// HeldAcross is the remote call this request makes while holding the
	// connection it checked out (a query before it and one after it, no
	// checkout between): every request doing the same keeps the pool's
	// connections busy for the call's length.
	HeldAcross   *SpanRef `json:"held_across,omitempty"`
	HeldAcrossMS float64  `json:"held_across_ms,omitempty"`
	// HeldMS is how long this request's transaction kept the rows locked
	// after its locking statement, until its COMMIT or ROLLBACK ended
	// (row_lock_queue); HeldIdleMS is the part of it with no statement of
	// the request running.
	HeldMS     float64 `json:"held_ms,omitempty"`
	HeldIdleMS float64 `json:"held_idle_ms,omitempty"`
}

// PoolFanOutEvidence describes calls queued for a worker pool.
type PoolFanOutEvidence struct {
	Target    string `json:"target"`
	Operation string `json:"operation"`
	// Calls is N, Concurrency K: never more than K of the N calls ran at once.
	Calls       int `json:"calls"`
	Concurrency int `json:"concurrency"`
	// QueuedCalls started only when an earlier call ended.
	QueuedCalls int `json:"queued_calls"`
	// TotalQueueMS sums each queued call's wait from the first call's start
	// (the calls are taken as submitted together).
	TotalQueueMS  float64 `json:"total_queue_ms"`
	WindowMS      float64 `json:"window_ms"`
	LongestCallMS float64 `json:"longest_call_ms"`
	// LeadingWaitMS is the parent's idle time right before the first call:
	// the first call waiting for a worker that other requests held (a pool
	// shared across requests). It is part of the finding's WaitMS.
	LeadingWaitMS float64 `json:"leading_wait_ms,omitempty"`
	// ParentSharePct is the wall-clock wait over the parent's duration.
	ParentSharePct float64  `json:"parent_share_pct"`
	SpanIDs        []string `json:"span_ids"`
	// AtCallee is set when the calls ran together but the callee's server
	// spans show the limit: a client connection limit (or the callee's
	// workers) between them, the wait inside each call span.
	AtCallee bool `json:"at_callee,omitempty"`
}

// Detect implements Detector.
func (d *LockContention) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	total := critTotal(t)
	for _, n := range t.Nodes {
		ws := nodeWaits(t, n)
		if len(ws) == 0 {
			continue
		}
		impact := waitsOnPath(t, n, ws)
		sev, ok := d.severity(impact, total)
		if !ok {
			continue
		}
		out = append(out, d.waitFinding(t, n, ws, impact, total, sev))
	}
	for _, n := range t.Nodes {
		w, ok := checkoutGap(n)
		if !ok {
			continue
		}
		impact := critWithin(t, n.Parent, w.start, w.end)
		if sev, ok := d.severity(impact, total); ok {
			out = append(out, d.waitFinding(t, n, []spanWait{w}, impact, total, sev))
		}
	}
	return append(out, d.poolFindings(t, total)...)
}

// checkoutGap reads the wait for a pooled connection that database/sql
// does not trace. otelsql records sql.conn.reset_session when the pool
// hands out a connection used before (sql.connector.connect when it opens
// one); the wait for a free connection is the parent's idle time right
// before. Idle time alone is no proof of a wait (code nobody traced looks
// the same), so it counts only when the request then holds that
// connection across a remote call: the query, the call and the next query
// with no checkout between, which is what empties the pool for everyone.
func checkoutGap(n *Node) (spanWait, bool) {
	if n.Parent == nil || !checkoutMarker(n) {
		return spanWait{}, false
	}
	idle := leadingIdle(n.Parent, n, n.Start())
	if idle == 0 || heldAcross(n) == nil {
		return spanWait{}, false
	}
	return spanWait{start: n.Start() - idle, end: n.Start(), resource: "connection_pool", source: "checkout_gap",
		waitEvent: n.Span.Name}, true
}

// checkoutMarker reports a span that marks a pooled connection being
// handed out without timing the wait for it: database/sql's ResetSession
// or connect as otelsql records them (a database span with no statement).
func checkoutMarker(n *Node) bool {
	return connectionChore(n) && nameHasWord(n.Span.Name, "reset", "connect")
}

// severity grades by the wait's share of the request; ok=false below the
// floor.
func (d *LockContention) severity(impact, total uint64) (Severity, bool) {
	if total == 0 {
		return "", false
	}
	share := float64(impact) / float64(total)
	ms := NS(impact)
	switch {
	case ms < d.MinWaitMS || share < d.MinShare:
		return "", false
	case share >= d.CriticalShare && ms >= d.CriticalMinMS:
		return SeverityCritical, true
	case share >= d.WarningShare && ms >= d.WarningMinMS:
		return SeverityWarning, true
	}
	return SeverityInfo, true
}

func (d *LockContention) waitFinding(t *Trace, n *Node, ws []spanWait, impact, total uint64, sev Severity) Finding {
	wait := waitedNS(ws)
	main := ws[0]
	for _, w := range ws {
		if w.end-w.start > main.end-main.start {
			main = w
		}
	}
	ev := LockContentionEvidence{
		Mechanism: main.source, Resource: main.resource, Span: RefOf(t, n), WaitMS: roundMS(wait),
		SpanSharePct: sharePct(wait, n.Duration()), RequestSharePct: sharePct(impact, total),
		WaitersAhead: main.waitersAhead, WaitersBehind: main.waitersBehind, WaitEvent: main.waitEvent,
		AcquiredEvent: main.acquiredEvent, WaitAttribute: main.attribute, PoolName: main.poolName,
	}
	what := resourceNoun(main.resource, main.poolName)
	behind := ""
	switch {
	case main.waitersAhead == 1:
		behind = " behind 1 other"
	case main.waitersAhead > 1:
		behind = fmt.Sprintf(" behind %d others", main.waitersAhead)
	}
	title := fmt.Sprintf("%s waited %.0f ms for %s%s (%.0f%% of the span, %.0f%% of the request)",
		spanLabel(t, n), NS(wait), what, behind, ev.SpanSharePct, ev.RequestSharePct)
	reason := fmt.Sprintf("%s %s serialises concurrent requests on %s; this span spent %.0f%% of its time waiting for it.",
		n.Span.Service, opName(n, n.Span.Name), what, ev.SpanSharePct)
	fix := contentionFix(main.resource, what)
	if main.source == "checkout_gap" {
		// The marker span has no length: the wait is its parent's.
		p := n.Parent
		ev.Span, ev.SpanSharePct = RefOf(t, p), sharePct(wait, p.Duration())
		title = fmt.Sprintf("%s %s waited %.0f ms for a pooled %s connection before %s (not traced by the pool; %.0f%% of the request)",
			p.Span.Service, opName(p, displayOp(p)), NS(wait), nonEmpty(DBSystem(n.Span), "database"), n.Span.Name, ev.RequestSharePct)
		reason = fmt.Sprintf("%s %s waits for a connection of a pool that requests like it keep busy.", p.Span.Service, opName(p, displayOp(p)))
	}
	if (main.source == "span_name" || main.source == "checkout_gap") && main.resource == "connection_pool" {
		if hold, ok := connectionHold(t, n); ok && heldAcross(n) == nil && hold.explains() {
			// What empties the pool is what each request does with its
			// connection: wait for a row lock, or idle in a transaction.
			ev.HeldMS, ev.HeldIdleMS = roundMS(hold.held), roundMS(hold.idleInTx)
			title += ", then held it " + fmtDur(hold.held)
			if hold.lockWait > 0 {
				title += fmt.Sprintf(": %s waiting for a row lock in %s", fmtDur(hold.lockWait), spanLabel(t, hold.locked))
				if hold.idleInTx >= 1e6 {
					title += fmt.Sprintf(", %s with no statement running in its transaction", fmtDur(hold.idleInTx))
				}
			} else {
				title += fmt.Sprintf(", %s of it with no statement running in its transaction", fmtDur(hold.idleInTx))
			}
			if hold.lockWait > hold.idleInTx {
				reason += fmt.Sprintf(" Each request keeps its connection while it queues for a row lock (%s here), "+
					"so the pool empties behind the lock.", fmtDur(hold.lockWait))
				fix = "The pool empties because connections wait for a row lock: requests running " + displayOp(EntryOf(n)) +
					" hold a connection while they queue for the lock " + spanLabel(t, hold.locked) + " takes. Shorten " +
					"what holds that lock (the transaction's work between its statements, remote calls inside it) or " +
					"make the update one conditional statement; a larger pool only lets more requests queue on the lock."
			} else {
				reason += fmt.Sprintf(" Each request keeps its connection %s, mostly idle inside a transaction.", fmtDur(hold.held))
				fix = fmt.Sprintf("The pool empties because each request keeps its connection %s, %s of it with no "+
					"statement running inside its transaction: do that work before checking the connection out (or "+
					"after releasing it), then size the pool for the concurrency it serves.", fmtDur(hold.held),
					fmtDur(hold.idleInTx))
			}
		}
		if h := heldAcross(n); h != nil {
			ref := RefOf(t, h)
			ev.HeldAcross, ev.HeldAcrossMS = &ref, roundMS(h.Duration())
			title += fmt.Sprintf(", then held it across %s (%.0f ms)", spanLabel(t, h), NS(h.Duration()))
			reason += fmt.Sprintf(" The request keeps the connection while it waits %.0f ms for %s; requests doing "+
				"the same keep every connection of the pool busy for that long.", NS(h.Duration()), spanLabel(t, h))
			fix = "Release the connection before " + spanLabel(t, h) + " and check out another after it (or let " +
				"each query check out its own), so no connection waits on a remote call; then size the pool for " +
				"the concurrency it serves."
		}
	}
	if main.source == "locking_read" {
		h := heldLockAcross(n)
		ref := RefOf(t, h)
		ev.HeldAcross, ev.HeldAcrossMS = &ref, roundMS(h.Duration())
		title = fmt.Sprintf("%s waited %.0f ms for a row lock (%.0f%% of the request), then its transaction held the lock across %s (%.0f ms)",
			spanLabel(t, n), NS(wait), ev.RequestSharePct, spanLabel(t, h), NS(h.Duration()))
		reason = fmt.Sprintf("%s's transaction locks rows and keeps them locked while it waits %.0f ms for %s; requests doing "+
			"the same queue behind each other on the lock, so this locking statement spent its time waiting, not executing.",
			n.Span.Service, NS(h.Duration()), spanLabel(t, h))
		fix = "Do not hold row locks across remote calls: make " + spanLabel(t, h) + " before the transaction (or after " +
			"its commit), or replace the lock with an optimistic check (a version column in the UPDATE's WHERE); keep " +
			"transactions short."
	}
	if main.source == "row_lock_queue" {
		fast, end := rowLockQueue(t, n)
		hold := end.End() - min(n.End(), end.End())
		idle := hold - statementsWithin(t, n, n.End(), end.End())
		ev.HeldMS, ev.HeldIdleMS = roundMS(hold), roundMS(idle)
		title = fmt.Sprintf("%s waited %.0f ms for a row lock (%.0f%% of the request): %s, the same lookup, took %s "+
			"in the same transaction, which then kept the lock %s until %s (%s of it with no statement running)",
			spanLabel(t, n), NS(wait), ev.RequestSharePct, model.Clip(DBShape(fast.Span), 80), fmtDur(fast.Duration()),
			fmtDur(hold), model.Clip(DBShape(end.Span), 20), fmtDur(idle))
		if hold >= 10e6 && hold*10 >= wait {
			reason = fmt.Sprintf("%s's transaction locks these rows and keeps them %s before it ends; requests running it "+
				"queue behind each other on the lock, so the locking statement spent its time waiting, not executing.",
				n.Span.Service, fmtDur(hold))
			work := "the transaction's other work"
			if idle >= 1e6 {
				work = fmt.Sprintf("the work between its statements (%s here)", fmtDur(idle))
			}
			fix = fmt.Sprintf("Hold the row lock briefly: every request queues behind the %s each transaction keeps it. "+
				"Do %s before the locking statement or after the commit, or fold the read-modify-write into one "+
				"conditional UPDATE (its WHERE checks what the read checked; RETURNING gives the new value), which "+
				"holds the lock only while it runs.", fmtDur(hold), work)
		} else {
			// This request lets go of the rows at once: what it waited for
			// is another transaction's long hold, or a lock cycle.
			reason = fmt.Sprintf("%s's statement waited for rows another transaction held; this one keeps them only %s.",
				n.Span.Service, fmtDur(hold))
			fix = "Another transaction held these rows for long: find it (pg_locks, performance_schema.data_locks) and " +
				"keep it short, or, if transactions lock the same rows in different orders (a deadlock's survivor waits " +
				"out the detection timeout, 1 s in PostgreSQL), " + lockOrderAdvice + "."
		}
	}
	if main.source == "database_error" || main.source == "lock_release" {
		title = fmt.Sprintf("%s waited %.0f ms for a row lock another transaction held (%s; %.0f%% of the request)",
			spanLabel(t, n), NS(wait), model.Clip(main.waitEvent, 100), ev.RequestSharePct)
		reason = fmt.Sprintf("%s's transactions take the same rows' locks: this statement spent %.0f%% of its time "+
			"waiting for one, not executing.", n.Span.Service, ev.SpanSharePct)
		fix = "Transactions wait for each other's row locks: " + lockOrderAdvice + "; for a lock timeout, find the " +
			"transaction holding the rows (pg_locks, performance_schema.data_locks)."
		if main.source == "lock_release" {
			// The holder's rows were locked in order; what made this one
			// wait is how long the holder kept them.
			fix = "A written row stays locked until its transaction ends: keep the holding transaction short (" +
				model.Clip(main.acquiredEvent, 120) + "): move slow work, remote calls and sleeps out of it (before it, " +
				"or after its commit), or lock the rows later in the transaction."
		}
	}
	ids := []string{n.Span.SpanID.String()}
	culprit := &Culprit{Service: n.Span.Service, Operation: n.Span.Name, SpanID: n.Span.SpanID.String(), Reason: reason}
	if main.source == "row_lock_queue" {
		// The code to change is the transaction's: the request holding
		// the rows, not the statement queued for them.
		e := EntryOf(n)
		culprit = &Culprit{Service: e.Span.Service, Operation: displayOp(e), SpanID: e.Span.SpanID.String(), Reason: reason}
	}
	if main.source == "checkout_gap" || main.source == "locking_read" {
		// The code to change is the parent's, which holds the connection
		// or the lock across its call; and for a checkout its idle time is
		// this wait: idle_gap's key span.
		p := n.Parent
		if main.source == "checkout_gap" {
			ids = append(ids, p.Span.SpanID.String())
		}
		culprit = &Culprit{Service: p.Span.Service, Operation: p.Span.Name, SpanID: p.Span.SpanID.String(), Reason: reason}
	}
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids,
		ImpactMS: roundMS(impact), Evidence: ev, Fix: fix, Culprit: culprit,
	}
}

// heldAcross finds, among the siblings after checkout n, a remote call
// (not a database span) between two queries with no other checkout in
// between: the connection n checked out stays held across that call.
func heldAcross(n *Node) *Node { return heldAcrossFrom(n, false) }

// heldAcrossFrom is heldAcross counting n itself as the first query when
// queried is set: the query a request ran first after an untraced
// checkout.
func heldAcrossFrom(n *Node, queried bool) *Node {
	if n.Parent == nil {
		return nil
	}
	var call *Node
	for _, c := range n.Parent.Children {
		if c == n || c.Start()+1e6 < n.End() {
			continue
		}
		switch {
		case IsDB(c) && (isCheckout(c) || checkoutMarker(c)):
			return nil
		case IsDB(c) && queried && call != nil:
			return call
		case IsDB(c):
			queried = true
		case queried && IsCall(c) && (call == nil || c.Duration() > call.Duration()):
			call = c
		}
	}
	return nil
}

func resourceNoun(resource, poolName string) string {
	switch resource {
	case "lock":
		return "a lock"
	case "semaphore":
		return "a semaphore permit"
	case "connection_pool":
		if poolName != "" {
			return "a connection from pool " + poolName
		}
		return "a pooled connection"
	case "worker_pool":
		return "a worker"
	case "queue":
		return "its turn in a queue"
	}
	if poolName != "" {
		return "pool " + poolName
	}
	return "a pooled resource"
}

// contentionFix speaks of the resource waited for, never of indexes: the
// statement behind a lock is not slow, the queue in front of it is.
func contentionFix(resource, what string) string {
	switch resource {
	case "lock", "semaphore":
		return "Requests queue for " + what + " held by other requests: shorten the critical section (no I/O, remote " +
			"calls or sleeps while holding it), lock per row or key instead of one global mutex, or drop the lock where " +
			"the database's own transactions already give the isolation needed."
	case "connection_pool", "pool":
		return "Requests queue for " + what + ": size the pool for the concurrency it serves (and what the database " +
			"can take), return connections promptly (none held across remote calls or slow work), and look for leaked " +
			"connections."
	case "worker_pool":
		return "Work queues for a free worker: enlarge the worker pool or give each request its own, and keep slow " +
			"blocking work out of shared pools."
	}
	return "Work waits in a queue: add consumers or workers, shorten the work each item needs, or shed load before " +
		"the queue grows."
}

// poolFixText is the fix of a pool-starved fan-out.
func poolFixText(k, n int, target string) string {
	return fmt.Sprintf("Only %d of the %d calls to %s run at once: enlarge the worker pool to at least %d (or size it "+
		"per request rather than sharing it across requests), or batch the calls into one request. An HTTP or gRPC "+
		"client's per-host connection limit gives the same shape: raise it too.",
		k, n, strings.TrimSpace(target), n)
}

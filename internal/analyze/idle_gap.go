package analyze

import (
	"fmt"
	"slices"

	"github.com/tracedx/tracedx/internal/model"
)

// IdleGap finds time inside a span with no child running: waiting for a
// pooled connection, a lock or a thread, or work nobody instrumented.
type IdleGap struct {
	MinGapMS float64 `yaml:"min_gap_ms"`
	MinShare float64 `yaml:"min_share"` // of the span, 0..1
}

// NewIdleGap returns the detector with docs/patterns.md defaults.
func NewIdleGap() *IdleGap { return &IdleGap{MinGapMS: 100, MinShare: 0.2} }

func init() { Register(func() Detector { return NewIdleGap() }) }

// Kind implements Detector.
func (*IdleGap) Kind() string { return "idle_gap" }

// IdleGapEvidence is the evidence of an idle_gap finding.
type IdleGapEvidence struct {
	Span SpanRef `json:"span"`
	// Position is "before_first_child", "between_children" or "after_last_child".
	Position string   `json:"position"`
	GapMS    float64  `json:"gap_ms"`
	SharePct float64  `json:"share_pct"`
	Before   *SpanRef `json:"before,omitempty"` // child that ended before the gap
	After    *SpanRef `json:"after,omitempty"`  // child that started after it
	// LikelyCause is "pool_wait", "connection_setup", "network_or_queueing",
	// "queueing", "retry_backoff", "poll_interval", "shared_fetch_wait",
	// "untraced_fetch", "uninstrumented_work" or "lock_or_thread_wait";
	// CauseText says why.
	LikelyCause string `json:"likely_cause"`
	CauseText   string `json:"cause_text"`
	// GapStartMS is the gap's offset from the trace start.
	GapStartMS float64 `json:"gap_start_ms"`
}

// Detect implements Detector. Leaf spans have no children to leave gaps
// between (their time is slow_query's or slow_dependency's). Severity by
// the gap's critical-path time (SeverityForImpact).
func (d *IdleGap) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	for _, n := range t.Nodes {
		if len(n.Children) == 0 {
			continue
		}
		dur := n.Duration()
		minGap := uint64(max(d.MinGapMS*1e6, d.MinShare*float64(dur)))
		if dur == 0 || dur < minGap {
			continue
		}
		lo, hi := n.Start(), n.End()
		covered := lo // everything before covered has a child running (or is the span start)
		var before *Node
		byDesign := -1 // unknown until a gap is long enough to report
		report := func(gs, ge uint64, pos string, after *Node) {
			if ge <= gs || ge-gs < minGap {
				return
			}
			// A long poll's server holds the request open with nothing to
			// do until something changes or the poll times out, and a
			// session waits for its peer between exchanges: those waits
			// are the protocol (IsLongPoll, IsSession).
			if byDesign < 0 {
				byDesign = 0
				if IsLongPoll(n) || IsSession(n) {
					byDesign = 1
				}
			}
			if byDesign == 1 {
				return
			}
			if orphanWithin(t, gs, ge) {
				return
			}
			crit := critWithin(t, n, gs, ge)
			out = append(out, d.finding(t, n, gs, ge, crit, pos, before, after))
		}
		first := true
		for _, c := range n.Children {
			// A child that began once the span had ended ran after it (a
			// browser following the page's links with its context), not
			// inside it: a span whose children all did is a leaf.
			if (asyncEdge(n, c) && !awaitedConsumer(n, c)) || c.Start() >= hi {
				continue
			}
			cs := max(c.Start(), lo)
			if cs > covered {
				pos := "between_children"
				if first {
					pos = "before_first_child"
				}
				report(covered, min(cs, hi), pos, c)
			}
			first = false
			if ce := min(c.End(), hi); ce > covered {
				covered = ce
				before = c
			} else if before == nil {
				before = c
			}
		}
		if !first && hi > covered {
			report(covered, hi, "after_last_child", nil)
		}
	}
	return out
}

// orphanWithin reports a span whose parent never arrived that started
// inside [gs, ge): in a trace that lost spans (a page of search hits, a
// dropped batch) the gap may be where its missing parent, a call nobody
// sees, ran.
func orphanWithin(t *Trace, gs, ge uint64) bool {
	for _, r := range t.Roots {
		if !r.Span.ParentSpanID.IsZero() && r.Start() >= gs && r.Start() < ge {
			return true
		}
	}
	return false
}

func (d *IdleGap) finding(t *Trace, n *Node, gs, ge, crit uint64, pos string, before, after *Node) Finding {
	gap := ge - gs
	ev := IdleGapEvidence{Span: RefOf(t, n), Position: pos, GapMS: roundMS(gap), SharePct: sharePct(gap, n.Duration())}
	if r := t.Root(); r != nil && gs > r.Start() {
		ev.GapStartMS = roundMS(gs - r.Start())
	}
	if before != nil && pos != "before_first_child" {
		r := RefOf(t, before)
		ev.Before = &r
	}
	if after != nil {
		r := RefOf(t, after)
		ev.After = &r
	}
	ev.LikelyCause, ev.CauseText = gapCause(t, n, gs, ge, pos, before, after)
	// The neighbours are named: with whole-millisecond timestamps a gap
	// can fill "100 %" of a span whose only child took 0 ms, and "after
	// the last child" then reads as a contradiction.
	where := "before the first child"
	switch {
	case pos == "between_children":
		where = fmt.Sprintf("between %s and %s", opName(before, before.Span.Name), opName(after, after.Span.Name))
	case pos == "after_last_child" && before != nil:
		where = "after " + spanLabel(t, before)
	case pos == "after_last_child":
		where = "after the last child"
	case after != nil:
		where = "before " + spanLabel(t, after)
	}
	title := fmt.Sprintf("%.0f ms with nothing running inside %s %s (%.0f%% of it), %s; likely %s",
		NS(gap), n.Span.Service, opName(n, displayOp(n)), ev.SharePct, where, ev.CauseText)
	fix := map[string]string{
		"pool_wait": "Check the connection pool (size, wait time, leaked connections held across slow work) and instrument pool acquisition.",
		"queueing": "The message waited for a free worker: add consumers (or concurrency) for its queue, keep slow tasks " +
			"off it, or do not block the request on the task's result.",
		"network_or_queueing": "The callee started late: check its request queue, thread pool and the network path; instrument its ingress.",
		"uninstrumented_work": "Instrument the code running here (a span around it) to see what it does; it is on the request's path.",
		"connection_setup":    connectAdvice,
		"lock_or_thread_wait": "Look for locks, synchronous sleeps or a saturated worker pool here, and add spans around them.",
		"retry_backoff": "The wait is the retry's backoff: the failed attempt is the cause. Make the callee's failure rarer, " +
			"and keep the backoff within the caller's deadline.",
		"poll_interval": "The request waits for work it polls for: have the job notify (callback, webhook, push) or poll " +
			"sooner at first and back off, or answer the client 202 and let it poll.",
		"untraced_fetch": "Add a span around the code that computes the cached value. If it queries a database through a pool, " +
			"the query's span may sit in another request's trace (mysql2 runs a query queued for a connection in the context of " +
			"the request that released it); the gap then holds the pool wait and the query: size the pool, and coalesce " +
			"concurrent misses of the key so one request fetches it.",
		"shared_fetch_wait": "If the request waited for another request's fetch of the key (single flight, a lock per key), " +
			"the wait is that fetch's time: make the fetch faster, refresh the key before it expires, or serve the stale " +
			"value meanwhile. If not, add a span around the code that runs here.",
	}[ev.LikelyCause]
	if ev.LikelyCause == "network_or_queueing" && pos == "after_last_child" {
		fix = "The answer came back late: check whether " + n.Span.Service + " was busy before it read the response " +
			"(CPU starvation or throttling, blocking work on its event loop, a full thread pool) and the network path."
	}
	sev := SeverityForImpact(crit, critTotal(t))
	if ev.LikelyCause == "shared_fetch_wait" {
		// A request that coalesced its miss with another's fetch did what
		// a stampede's fix asks: the cost is that fetch's, and the trace
		// that ran it reports it (cache_miss, slow_query). Every waiter of
		// a single flight shows this gap; as warnings they would bury it.
		sev = SeverityInfo
	}
	return Finding{Kind: d.Kind(), Severity: sev, Title: title,
		SpanIDs: idleGapIDs(n, before, after, pos), ImpactMS: roundMS(crit), Evidence: ev, Fix: fix}
}

func idleGapIDs(n, before, after *Node, pos string) []string {
	ids := []string{n.Span.SpanID.String()}
	if before != nil && pos != "before_first_child" {
		ids = append(ids, before.Span.SpanID.String())
	}
	if after != nil {
		ids = append(ids, after.Span.SpanID.String())
	}
	return ids
}

func gapCause(t *Trace, n *Node, gs, ge uint64, pos string, before, after *Node) (string, string) {
	if cause, text := waitBetweenCalls(t, pos, before, after); cause != "" {
		return cause, text
	}
	if key := refilledBetween(before, after); pos == "between_children" && key != "" {
		return "untraced_fetch", fmt.Sprintf("computing the value of %s, read and then written back around the gap, "+
			"with no span for the fetch (untraced, or a pooled query whose span went to another request's trace)", model.Clip(key, 80))
	}
	switch {
	case after != nil && awaitedConsumer(n, after):
		return "queueing", fmt.Sprintf("the message waiting in %s until a %s worker took it",
			nonEmpty(messageInfo(after.Span).Destination, "its queue"), after.Span.Service)
	case pos == "before_first_child" && opensConnection(n):
		return "connection_setup", fmt.Sprintf("opening a new %s connection (network round trips, TLS, authentication) "+
			"before its session set-up", nonEmpty(DBSystem(n.Span), "database"))
	case after != nil && IsDB(after) && before != nil && IsDB(before) && pos == "between_children" && inTransaction(n, before):
		return "uninstrumented_work", "work nobody instrumented inside an open transaction (its locks held meanwhile; " +
			"the transaction keeps its connection, so this is no pool wait)"
	case after != nil && IsDB(after) && checkoutsTraced(t, after):
		// node-postgres traces every checkout (pg-pool.connect): a wait
		// for a connection is inside one, and a gap after one is spent
		// holding the connection it handed out.
		return "uninstrumented_work", "work nobody instrumented before the next query (the pool's checkouts are " +
			"traced, and a wait for a connection would be inside one: this is time with a connection held, or " +
			"code between two uses of the pool)"
	case after != nil && IsDB(after) && before != nil && IsDB(before) && pos == "between_children":
		return "pool_wait", "waiting for a pooled database connection"
	case after != nil && IsDB(after) && poolInUse(t, n, after, gs, ge):
		return "pool_wait", "waiting for a pooled database connection before the next query"
	case after != nil && IsCall(n) && (after.Span.Kind == model.KindServer || after.Span.Kind == model.KindConsumer):
		return "network_or_queueing", "network or queueing before the callee started"
	case pos == "after_last_child" && before != nil && IsCall(n) && before.Span.Kind == model.KindServer:
		// The callee had answered; the call ended only when the caller
		// read the answer.
		return "network_or_queueing", fmt.Sprintf("the answer's way back after %s answered: the network, or %s busy "+
			"before it read the response (a blocked event loop, a full thread pool)", before.Span.Service, n.Span.Service)
	case pos == "before_first_child" && after != nil && IsDB(after) && heldAcrossFrom(after, true) != nil:
		call := heldAcrossFrom(after, true)
		// A checkout nobody traced (mysql2's getConnection) leaves only
		// this gap; a connection the queries share stays held across the
		// call between them, which is what empties a pool for everyone.
		return "pool_wait", fmt.Sprintf("waiting for a pooled database connection (its queries run around %s, %.0f ms: "+
			"a connection held across it starves the pool), or untraced work before the first query",
			spanLabel(t, call), NS(call.Duration()))
	case pos == "before_first_child" && after != nil && IsDB(after):
		return "uninstrumented_work", "work nobody instrumented before the first query (start-up, connecting, an ORM warming up)"
	case pos != "before_first_child" && awaitsSharedFetch(t, before, after):
		_, key, _, _ := cacheOp(before)
		return "shared_fetch_wait", fmt.Sprintf("waiting for %s, which another request was fetching (single flight), "+
			"or work nobody instrumented after reading it", model.Clip(key, 80))
	case pos == "after_last_child" || pos == "before_first_child":
		return "uninstrumented_work", "work nobody instrumented"
	}
	return "lock_or_thread_wait", "a lock, a thread or work nobody instrumented"
}

// refilledBetween returns the key of a cache read (before) written back
// right after the gap (after): the value was fetched in the gap, by code
// that left no span here. A pool that queues queries for a connection can
// take the span elsewhere: mysql2 runs a queued query in the context of
// the request that released the connection, so its span lands in that
// request's trace.
func refilledBetween(before, after *Node) string {
	if before == nil || after == nil {
		return ""
	}
	rc, rk, _, ok := cacheOp(before)
	if !ok || !cacheReads[rc] || rk == "" {
		return ""
	}
	if wc, wk, _, ok := cacheOp(after); !ok || !cacheWrites[wc] || wk != rk {
		return ""
	}
	return rk
}

// awaitsSharedFetch reports a gap that follows a cache read (before) not
// known to have hit, in a trace that neither fetches the value after the
// gap (no database query next) nor writes the key back: the value came
// from somewhere. A request that coalesces its miss with another
// request's fetch (single flight) waits just so, its trace showing only
// the read; the fetch and the write are in the other request's trace.
func awaitsSharedFetch(t *Trace, before, after *Node) bool {
	if before == nil {
		return false
	}
	cmd, key, _, ok := cacheOp(before)
	if !ok || !cacheReads[cmd] || key == "" {
		return false
	}
	if _, has := before.Span.Attrs.First("cache.hit", "db.cache.hit", "cache_hit"); has && missSignal(before.Span) == "" {
		return false // the lookup says it hit
	}
	if after != nil {
		if _, _, _, cache := cacheOp(after); IsDB(after) && !cache {
			return false // the request ran its own query: a fetch of its own
		}
	}
	for _, m := range t.Nodes {
		if m.Start() < before.Start() {
			continue
		}
		if c, k, _, ok := cacheOp(m); ok && cacheWrites[c] && k == key {
			return false
		}
	}
	return true
}

// awaitedConsumer reports a CONSUMER child that its parent, no PRODUCER
// span, waited for: the parent sent the message without a span of its own
// (Celery's apply_async with its publish untraced) and ended when the
// consumer did, as a caller blocked on the task's result does. The time
// before such a consumer starts is the message's wait in the queue, on
// the parent's path; consumer_lag cannot see it without a producer.
func awaitedConsumer(p, c *Node) bool {
	if c.Span.Kind != model.KindConsumer || p.Span.Kind == model.KindProducer || c.Start() < p.Start() {
		return false
	}
	tol := max(timingTolerance(p, c), uint64(crossHostSkewNS))
	return c.End() <= p.End()+tol && c.End()+tol >= p.End()
}

// waitBetweenCalls names a gap that the caller spends on purpose between
// two calls to the same target: the backoff before retrying an attempt
// that failed, or the interval of a poll whose answer was 202 Accepted
// (the work it waits for is still running there). Either way the time
// goes to what the target did, not to a lock or uninstrumented code.
func waitBetweenCalls(t *Trace, pos string, before, after *Node) (string, string) {
	if pos != "between_children" || before == nil || after == nil || !IsCall(before) || !IsCall(after) {
		return "", ""
	}
	svc, op := CallTarget(t, before)
	if s2, op2 := CallTarget(t, after); s2 != svc || op2 != op {
		return "", ""
	}
	target := svc + " " + model.Clip(op, 60)
	if retries(before, after, 0) {
		return "retry_backoff", "the backoff before retrying " + target + " after its attempt failed"
	}
	if code, ok := HTTPStatus(before.Span); ok && code == 202 && sameRequest(before.Span, after.Span) {
		return "poll_interval", "the pause between two polls of " + target + " (it answered 202: not done yet)"
	}
	return "", ""
}

// poolInUse tells whether a gap before a query can be a wait for a pooled
// connection. A query alone is no evidence: the first query of a cold
// process follows class loading, connecting and ORM set-up, which look
// just the same. Evidence is the span or the query saying it waited for a
// connection, or the same service's other queries running through the gap
// and holding connections meanwhile.
func poolInUse(t *Trace, n, after *Node, gs, ge uint64) bool {
	for _, s := range []*model.Span{n.Span, after.Span} {
		for _, w := range spanWaits(s) {
			if w.resource == "connection_pool" || w.resource == "pool" {
				return true
			}
		}
	}
	for _, m := range t.Nodes {
		// The span with the gap, or a database span around it, is the
		// connection the next query runs on, not another one held.
		if m != after && !encloses(m, n) && m.Span.Service == after.Span.Service && IsDB(m) && m.Start() < ge && m.End() > gs {
			return true
		}
	}
	return false
}

// checkoutsTraced reports whether the service of the query after a gap
// traces its pool checkouts in this request (a pg-pool.connect among the
// service entry's database spans): a wait for a connection shows as one.
func checkoutsTraced(t *Trace, after *Node) bool {
	if isCheckout(after) {
		return true
	}
	for _, c := range entryStatements(t, EntryOf(after)) {
		if c.Span.Service == after.Span.Service && isCheckout(c) {
			return true
		}
	}
	return false
}

// inTransaction reports whether, among n's children up to before, the
// last statement that began or ended a transaction began one: the
// statements around a gap after it run on the transaction's connection
// (mysql2's START TRANSACTION ... COMMIT), which nothing returns to the
// pool before the commit, so the gap cannot be a wait for a free one.
func inTransaction(n, before *Node) bool {
	open := false
	for _, c := range n.Children {
		if c.Start() > before.Start() || !IsDB(c) || c.Span.Service != before.Span.Service {
			continue
		}
		switch {
		case endsTransaction(c):
			open = false
		case beginsTransaction(c):
			open = true
		}
	}
	return open
}

// beginsTransaction reports a BEGIN or START TRANSACTION, as a statement
// or as the driver's span (otelsql's sql.conn.begin_tx).
func beginsTransaction(n *Node) bool {
	stmt := DBStatement(n.Span)
	// Most statements name neither word: splitting each into words cost
	// slow_query, which asks of every database span, an allocation each.
	if !containsFold(stmt, "begin") && !containsFold(stmt, "start") &&
		!containsFold(n.Span.Name, "begin") && !containsFold(n.Span.Name, "start") {
		return false
	}
	ws := textWords(stmt + " " + n.Span.Name)
	return slices.Contains(ws, "begin") || slices.Contains(ws, "begin_tx") ||
		slices.Contains(ws, "start") && slices.Contains(ws, "transaction")
}

// connectAdvice is the fix for a request that paid for opening a database
// connection.
const connectAdvice = "Reuse database connections across requests (a connection pool, or persistent connections " +
	"such as Django's CONN_MAX_AGE) instead of connecting per request; if one connect is this slow, look at DNS, " +
	"TLS and the server's authentication."

// encloses reports whether m is n or one of its ancestors.
func encloses(m, n *Node) bool {
	for ; n != nil; n = n.Parent {
		if n == m {
			return true
		}
	}
	return false
}

// opensConnection reports a database span that opens a connection
// ("connect", "pg.connect", "sql.connector.connect"): the time before its
// first child (the session set-up queries a driver or ORM runs on a new
// connection) is the handshake itself. A pool checkout ("pg-pool.connect")
// is not: its time before a child is a wait for a free member; nor is a
// span that carries a statement.
func opensConnection(n *Node) bool {
	if !IsDB(n) || isCheckout(n) || n.Span.Attrs.Str("db.query.text", "db.statement", "sql.query") != "" {
		return false
	}
	return slices.Contains(textWords(n.Span.Name), "connect")
}

package analyze

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// What a span itself says about waiting: span events ("Waiting for lock
// behind 9 transactions" ... "Acquired lock with 9 transactions waiting
// behind") and attributes (db.client.connection.wait_time, pool.wait_ms).
// slow_query reads the same evidence so a query that only queued for a lock
// or a connection is not sent to EXPLAIN.

// spanWait is one stretch of a span spent waiting for a shared resource.
type spanWait struct {
	start, end uint64
	// resource is "lock", "semaphore", "connection_pool", "worker_pool",
	// "pool" or "queue".
	resource string
	// source is "span_events" or "attributes".
	source        string
	waitersAhead  int
	waitersBehind int
	waitEvent     string
	acquiredEvent string
	attribute     string
	poolName      string
}

// resourceWords maps words of event names and attribute keys to the kind of
// resource waited for. Whole words only: "blocked" or "clock" are no lock.
var resourceWords = map[string]string{
	"lock": "lock", "locks": "lock", "mutex": "lock", "latch": "lock", "rwlock": "lock",
	"semaphore": "semaphore", "permit": "semaphore", "permits": "semaphore",
	"connection": "connection_pool", "connections": "connection_pool", "conn": "connection_pool",
	"worker": "worker_pool", "workers": "worker_pool", "thread": "worker_pool", "threads": "worker_pool",
	"pool": "pool", "queue": "queue", "queued": "queue",
}

// resourceRank breaks ties when a text names several: "connection pool"
// is a connection pool, "lock queue" is a lock.
var resourceRank = map[string]int{"lock": 5, "semaphore": 4, "connection_pool": 3, "worker_pool": 2, "pool": 1, "queue": 0}

var (
	waitWords    = map[string]bool{"wait": true, "waiting": true, "waited": true, "waits": true, "queued": true, "blocked": true, "contended": true}
	acquireWords = map[string]bool{"acquired": true, "obtained": true, "granted": true, "got": true, "locked": true, "checked": true}
	behindRe     = regexp.MustCompile(`behind (\d+)`)
	aheadRe      = regexp.MustCompile(`(\d+) (?:transactions|waiters|requests|callers|others|sessions)(?: are)? (?:ahead|queued|waiting)(?: ahead| before)?\b`)
	waitBehindRe = regexp.MustCompile(`(\d+) (?:transactions|waiters|requests|callers|others|sessions) waiting behind`)
)

func textWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9')
	})
}

// waitHints are the word stems without which a text cannot speak of
// waiting for or acquiring something: a cheap test before splitting words,
// since every span event and attribute key passes here.
var waitHints = []string{"wait", "queue", "block", "contend", "acquir", "obtain", "grant", "got", "lock", "check"}

func mayTalkOfWaiting(s string) bool {
	l := strings.ToLower(s) // no allocation when s is lower-case already
	for _, h := range waitHints {
		if strings.Contains(l, h) {
			return true
		}
	}
	return false
}

// classifyText says whether s speaks of waiting for, or having acquired, a
// shared resource, and which.
func classifyText(s string) (resource string, wait, acquired bool) {
	if !mayTalkOfWaiting(s) {
		return "", false, false
	}
	best := -1
	for _, w := range textWords(s) {
		if r, ok := resourceWords[w]; ok && resourceRank[r] > best {
			resource, best = r, resourceRank[r]
		}
		acquired = acquired || acquireWords[w]
		wait = wait || waitWords[w]
	}
	if resource == "" {
		return "", false, false
	}
	if acquired {
		// "Acquired lock with 9 transactions waiting behind" ends a wait.
		wait = false
	}
	return resource, wait, acquired
}

// eventText is an event's name plus the message attributes bridges put the
// text in (OpenTracing logs arrive as event attributes "event"/"message").
func eventText(e *model.Event) string {
	txt := e.Name
	if v := e.Attrs.Str("event", "message", "log.message", "body"); v != "" && v != e.Name {
		txt += " " + v
	}
	return txt
}

func firstInt(re *regexp.Regexp, s string) int {
	m := re.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// eventWaits pairs wait events with the acquired event that ends them; a
// wait nothing ends lasts to the span end (the span gave up or the
// acquisition was not recorded).
func eventWaits(s *model.Span) []spanWait {
	if len(s.Events) == 0 {
		return nil
	}
	evs := make([]*model.Event, 0, len(s.Events))
	for i := range s.Events {
		evs = append(evs, &s.Events[i])
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].TimeUnixNano < evs[j].TimeUnixNano })
	var out []spanWait
	var open *spanWait
	for _, e := range evs {
		txt := eventText(e)
		res, wait, acq := classifyText(txt)
		switch {
		case wait && open == nil:
			open = &spanWait{start: e.TimeUnixNano, resource: res, source: "span_events", waitEvent: model.Clip(txt, 200)}
			open.waitersAhead = max(firstInt(behindRe, txt), firstInt(aheadRe, txt))
		case acq && open != nil:
			open.end = e.TimeUnixNano
			open.acquiredEvent = model.Clip(txt, 200)
			open.waitersBehind = firstInt(waitBehindRe, txt)
			out = append(out, *open)
			open = nil
		}
	}
	if open != nil {
		open.end = s.EndUnixNano
		out = append(out, *open)
	}
	for i := range out {
		w := &out[i]
		w.start = min(max(w.start, s.StartUnixNano), s.EndUnixNano)
		w.end = min(max(w.end, w.start), s.EndUnixNano)
	}
	return out
}

// waitAttrUnits are the well-known wait-time attributes without a unit in
// their name: the semantic-convention pool metrics, sometimes copied onto
// spans (new name in seconds, the older one in milliseconds).
var waitAttrUnits = map[string]float64{
	"db.client.connection.wait_time":  1e9,
	"db.client.connections.wait_time": 1e6,
}

// dbWaitAttrUnits are wait-time attributes that mean a pool wait only on a
// database span: opentelemetry_ecto's queue_time_microseconds is the time
// the query waited for a pooled connection (its idle_time_microseconds is
// how long the connection had sat unused, no wait at all).
var dbWaitAttrUnits = map[string]float64{"queue_time_microseconds": 1e3}

var poolNameKeys = []string{"db.client.connection.pool.name", "db.client.connections.pool.name", "pool.name", "db.pool.name"}

// unitSuffixes name a unit at the end of a key, with its length in ns.
// Each is a separator and a word without one.
var unitSuffixes = map[string]float64{
	"_ms": 1e6, ".ms": 1e6, "_millis": 1e6, "_milliseconds": 1e6, ".milliseconds": 1e6,
	"_us": 1e3, ".us": 1e3, "_micros": 1e3, "_microseconds": 1e3,
	"_ns": 1, ".ns": 1, "_nanos": 1, "_nanoseconds": 1,
	"_s": 1e9, ".s": 1e9, "_sec": 1e9, "_secs": 1e9, "_seconds": 1e9, ".seconds": 1e9,
}

// unitOf reads the unit from a key's suffix ("pool.wait_ms",
// "lock_wait_seconds"); 0 when the key names no unit. A suffix starts at
// the key's last separator, so only that tail is looked up.
func unitOf(key string) float64 {
	i := strings.LastIndexAny(key, "_.")
	if i < 0 {
		return 0
	}
	return unitSuffixes[strings.ToLower(key[i:])]
}

// attrWait reads a pool, lock or queue wait time from span attributes. The
// wait is placed at the span start: acquiring comes before the work.
func attrWait(s *model.Span) (spanWait, bool) {
	var best spanWait
	var bestNS float64
	isDB := -1 // not yet read
	for i := range s.Attrs {
		a := &s.Attrs[i]
		// Only a positive number can be a wait time: the value is checked
		// before the key, which costs far more over every attribute.
		v, ok := a.Value.AsFloat()
		if !ok || v <= 0 {
			continue
		}
		ns, known := waitAttrUnits[a.Key]
		if !known {
			if isDB < 0 {
				isDB = 0
				if _, ok := s.Attrs.First(dbKeys...); ok {
					isDB = 1
				}
			}
			if isDB == 1 {
				ns, known = dbWaitAttrUnits[a.Key]
			}
		}
		res := "connection_pool"
		if !known {
			// A key without a unit is no wait time, whatever its words:
			// the unit is the cheaper test.
			if ns = unitOf(a.Key); ns == 0 {
				continue
			}
			r, wait, acq := classifyText(a.Key)
			if r == "" || (!wait && !acq && !strings.Contains(strings.ToLower(a.Key), "acquire")) {
				continue
			}
			res = r
		}
		if d := v * ns; d > bestNS {
			bestNS = d
			best = spanWait{resource: res, source: "attributes", attribute: a.Key}
		}
	}
	if bestNS == 0 {
		return spanWait{}, false
	}
	best.poolName = s.Attrs.Str(poolNameKeys...)
	best.start = s.StartUnixNano
	best.end = min(s.StartUnixNano+uint64(bestNS), s.EndUnixNano)
	return best, best.end > best.start
}

// spanWaits is what the span says it waited for: its events when they
// speak of waiting, else its wait-time attributes.
func spanWaits(s *model.Span) []spanWait {
	if ws := eventWaits(s); len(ws) > 0 {
		return ws
	}
	if w, ok := attrWait(s); ok {
		return []spanWait{w}
	}
	return nil
}

// waitedNS sums the waits' length.
func waitedNS(ws []spanWait) uint64 {
	var total uint64
	for _, w := range ws {
		total += w.end - w.start
	}
	return total
}

// waitsOnPath is the critical-path time inside the waits.
func waitsOnPath(t *Trace, n *Node, ws []spanWait) uint64 {
	var total uint64
	for _, w := range ws {
		total += critWithin(t, n, w.start, w.end)
	}
	return total
}

// lockErrorCodes are the database answers that say a statement spent its
// time waiting for a row lock: PostgreSQL's SQLSTATE 40P01 (deadlock) and
// 55P03 (lock not available), MySQL's 1213 (deadlock) and 1205 (lock wait
// timeout), SQL Server's 1205 (deadlock victim) and 1222 (lock timeout).
var lockErrorCodes = map[string]bool{"40P01": true, "55P03": true, "1213": true, "1205": true, "1222": true}

// lockErrorPhrases are how drivers word the same answers.
var lockErrorPhrases = []string{"deadlock", "lock wait timeout", "could not obtain lock", "lock request time out",
	"lock_not_available", "lock timeout"}

// statementErrorClasses are the SQLSTATE classes in which the database
// refuses the statement itself: 21 cardinality, 22 data exception, 23
// integrity constraint, 42 syntax error or access rule (an undefined
// table or column, a missing privilege). MySQL's numbers for the same:
// 1054 unknown column, 1062 duplicate entry, 1064 syntax, 1146 no such
// table, 1048 null in a NOT NULL column, 1451/1452 foreign keys.
var (
	statementErrorClasses = []string{"21", "22", "23", "42"}
	statementErrorCodes   = map[string]bool{"1054": true, "1062": true, "1064": true, "1146": true, "1048": true, "1451": true, "1452": true}
	sqlStateRe            = regexp.MustCompile(`(?i)(?:sqlstate|code)[\s:=\[]*([0-9a-z]{5})\b`)
)

// statementErrorPhrases are how drivers word those answers when they
// record no code.
var statementErrorPhrases = []string{"does not exist", "doesn't exist", "syntax error", "unknown column", "no such table",
	"no such column", "duplicate key", "duplicate entry", "violates", "invalid input syntax", "cannot be null"}

// statementRefused returns the error text of a failed database call whose
// statement the database refused (a missing table, a syntax error, a
// constraint), or "": the database answered correctly, so the fix is in
// the caller's query or schema, not in the database.
func statementRefused(n *Node) string {
	if lockError(n) != "" {
		return ""
	}
	return dbError(n, func(code string) bool {
		return statementErrorCodes[code] || len(code) == 5 && slices.Contains(statementErrorClasses, code[:2])
	}, statementErrorPhrases)
}

// dbError returns the error text of a failed database span whose code
// (an attribute, or the SQLSTATE its message quotes) satisfies isCode or
// whose text holds one of phrases, or "".
func dbError(n *Node, isCode func(code string) bool, phrases []string) string {
	if !IsDB(n) || !Failed(n) {
		return ""
	}
	text := strings.Join(strings.Fields(errorText(n.Span)), " ")
	code := strings.ToUpper(n.Span.Attrs.Str("db.response.status_code", "db.sql.state", "error.code"))
	if code == "" {
		if m := sqlStateRe.FindStringSubmatch(text); m != nil {
			code = strings.ToUpper(m[1])
		}
	}
	if code != "" && isCode(code) {
		return nonEmpty(text, "SQLSTATE "+code)
	}
	l := strings.ToLower(text)
	for _, p := range phrases {
		if strings.Contains(l, p) {
			return text
		}
	}
	return ""
}

// lockError returns the error text of a database span that failed because
// it waited for a lock another transaction held (a deadlock victim or a
// lock wait timeout), or "".
func lockError(n *Node) string {
	return dbError(n, func(code string) bool { return lockErrorCodes[code] }, lockErrorPhrases)
}

// lockPeerTolNS bounds how far apart a deadlock victim's error and the end
// of the statement it blocked may be recorded: the rollback frees the
// lock, the blocked statement finishes, and each answer reaches its own
// connection a few milliseconds apart.
const lockPeerTolNS = 10e6

// nodeWaits is what the span says it waited for (spanWaits), and what the
// database said: a statement that failed as a deadlock victim or with a
// lock wait timeout waited for a lock from its start to its error, and a
// statement on the same database that was running when it failed and
// finished with it waited for the lock the victim's rollback released.
// Both are lock waits, not slow statements to EXPLAIN. The peer may have
// started first: PostgreSQL lets both wait out its deadlock timeout and
// aborts the first waiter, while InnoDB detects the cycle at once and
// aborts the statement that closed it, so its victim fails within
// milliseconds while the peer had been waiting all along.
func nodeWaits(t *Trace, n *Node) []spanWait {
	// lock_contention and slow_query both ask, of every database span.
	if n.Index < 0 || n.Index >= len(t.Nodes) || t.Nodes[n.Index] != n {
		return readWaits(t, n)
	}
	m := memoOf(t)
	if m.waitsDone == nil {
		m.waitsDone = make([]bool, len(t.Nodes))
	}
	if !m.waitsDone[n.Index] {
		m.waitsDone[n.Index] = true
		if ws := readWaits(t, n); ws != nil {
			if m.waits == nil {
				m.waits = map[int][]spanWait{}
			}
			m.waits[n.Index] = ws
		}
	}
	return m.waits[n.Index]
}

func readWaits(t *Trace, n *Node) []spanWait {
	if ws := spanWaits(n.Span); len(ws) > 0 {
		return ws
	}
	if ws := checkoutWaits(n); len(ws) > 0 || !IsDB(n) {
		return ws
	}
	if w, ok := lockingReadWait(n); ok {
		return []spanWait{w}
	}
	if text := lockError(n); text != "" {
		return []spanWait{{start: n.Start(), end: n.End(), resource: "lock", source: "database_error",
			waitEvent: model.Clip(text, 160)}}
	}
	for _, m := range lockVictims(t) {
		if !isLockPeer(m, n) {
			continue
		}
		end := min(n.End(), m.End())
		return []spanWait{{start: n.Start(), end: end, resource: "lock", source: "database_error",
			waitEvent: model.Clip("blocked by the lock of "+spanLabel(t, m)+", which failed: "+lockError(m), 160)}}
	}
	if c, w := lockReleasedBy(t, n); c != nil {
		return []spanWait{{start: n.Start(), end: min(n.End(), c.End()), resource: "lock", source: "lock_release",
			waitEvent: model.Clip("held by "+c.Span.Service+"'s transaction from "+spanLabel(t, w)+" until "+
				spanLabel(t, c), 160),
			acquiredEvent: fmt.Sprintf("%s's transaction held it %s between %s and its %s", c.Span.Service,
				fmtDur(c.Start()-min(w.End(), c.Start())), opName(w, w.Span.Name), opName(c, c.Span.Name))}}
	}
	// A holder in view (above) says more than the same lookup's speed.
	if fast, end := rowLockQueue(t, n); fast != nil {
		return []spanWait{{start: n.Start(), end: n.End() - min(fast.Duration(), n.Duration()), resource: "lock",
			source: "row_lock_queue", waitEvent: model.Clip(DBShape(n.Span), 160),
			acquiredEvent: fmt.Sprintf("%s, the same lookup, took %s in the same transaction, which held the lock "+
				"%s more, until %s", model.Clip(DBShape(fast.Span), 80), fmtDur(fast.Duration()),
				fmtDur(end.End()-min(n.End(), end.End())), model.Clip(DBShape(end.Span), 20))}}
	}
	return nil
}

// lockReleasedBy finds the COMMIT or ROLLBACK of another transaction on
// the same database whose end freed the statement n: that transaction
// wrote (w) before n started, had not ended when n did start, and n
// finished as it ended. n queued for the rows w locked; its time is a
// lock wait, not its plan (two requests moving money between the same
// accounts in the same order: the second waits for the first's commit).
// Each transaction is told apart by its parent span: statements of one
// transaction are siblings.
func lockReleasedBy(t *Trace, n *Node) (end, write *Node) {
	if n.Parent == nil {
		return nil, nil
	}
	m := memoOf(t)
	if !m.txEndsDone {
		m.txEndsDone = true
		for _, c := range t.Nodes {
			if c.Parent != nil && IsDB(c) && endsTransaction(c) {
				m.txEnds = append(m.txEnds, c)
			}
		}
	}
	if len(m.txEnds) == 0 || endsTransaction(n) {
		return nil, nil
	}
	for _, c := range m.txEnds {
		if c.Parent == n.Parent || c.Start() > n.End() ||
			absDiff(c.End(), n.End()) > lockPeerTolNS || !sameDatabase(c, n) {
			continue
		}
		// The holder's last statement before n started, with no end of
		// its transaction in between, must have written.
		var last *Node
		for _, sib := range c.Parent.Children {
			if sib == c || !IsDB(sib) || sib.End() > n.Start() || (last != nil && sib.End() < last.End()) {
				continue
			}
			last = sib
		}
		if last != nil && !endsTransaction(last) && takesRowLocks(last) {
			return c, last
		}
	}
	return nil, nil
}

// takesRowLocks reports a statement that locks the rows it touches until
// its transaction ends: a write, or a locking read.
func takesRowLocks(n *Node) bool {
	stmt := strings.TrimSpace(DBStatement(n.Span))
	for _, verb := range []string{"update", "insert", "delete", "replace", "merge"} {
		if hasPrefixFold(stmt, verb) {
			return true
		}
	}
	return mayLock(stmt) && lockingReadRe.MatchString(stmt)
}

// isLockPeer reports whether n is the statement a lock victim blocked: on
// the same database, running when the victim failed and finishing with it.
// The victim's own ROLLBACK or COMMIT, which mysql2 starts before it ends
// the failed statement's span, waited for no row.
func isLockPeer(victim, n *Node) bool {
	return n != victim && n.Start() < victim.End() && absDiff(victim.End(), n.End()) <= lockPeerTolNS &&
		sameDatabase(victim, n) && !endsTransaction(n)
}

// lockPeerOf finds the statement a lock victim blocked (the one that
// waited longest), or nil.
func lockPeerOf(t *Trace, victim *Node) *Node {
	var peer *Node
	for _, n := range t.Nodes {
		if IsDB(n) && !Failed(n) && isLockPeer(victim, n) && (peer == nil || n.Start() < peer.Start()) {
			peer = n
		}
	}
	return peer
}

// sameDatabase reports whether two database spans talk to one database:
// the same system and, when both name it, the same server and namespace.
// Two services sharing a database deadlock each other as readily as two
// requests of one service; spans that name no server count as one
// database only within a service.
func sameDatabase(a, b *Node) bool {
	if nodeDBSystem(a) != nodeDBSystem(b) {
		return false
	}
	ia, ib := dbInstance(a.Span), dbInstance(b.Span)
	if ia == "" || ib == "" {
		return a.Span.Service == b.Span.Service
	}
	return ia == ib
}

// dbInstance names the database a span talks to by its server address
// and namespace, or "" when the span names neither.
func dbInstance(s *model.Span) string {
	addr := s.Attrs.Str("server.address", "net.peer.name")
	ns := s.Attrs.Str("db.namespace", "db.name")
	if addr == "" && ns == "" {
		return ""
	}
	return addr + "/" + ns
}

// lockingReadRe matches statements that take row or table locks and wait
// for them: SELECT ... FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR
// KEY SHARE, MySQL's LOCK IN SHARE MODE, LOCK TABLE, SQL Server's UPDLOCK,
// XLOCK and HOLDLOCK hints. NOWAIT and SKIP LOCKED never wait.
var (
	lockingReadRe = regexp.MustCompile(`(?i)\bfor\s+(no\s+key\s+)?update\b|\bfor\s+(key\s+)?share\b|\block\s+in\s+share\s+mode\b|^\s*lock\s+tables?\b|\b(updlock|xlock|holdlock)\b`)
	noWaitRe      = regexp.MustCompile(`(?i)\bnowait\b|\bskip\s+locked\b`)
)

// lockingReadWait reads a locking statement whose own transaction then
// holds the lock across a remote call (heldLockAcross). Such a statement
// is slow because it queued behind the same lock held by requests doing
// the same, not because of its plan: the wait is its whole duration. A
// locking read with no such holder in view stays slow_query's.
func lockingReadWait(n *Node) (spanWait, bool) {
	stmt := DBStatement(n.Span)
	if !mayLock(stmt) || !lockingReadRe.MatchString(stmt) || noWaitRe.MatchString(stmt) || heldLockAcross(n) == nil {
		return spanWait{}, false
	}
	return spanWait{start: n.Start(), end: n.End(), resource: "lock", source: "locking_read",
		waitEvent: model.Clip(DBShape(n.Span), 160)}, true
}

// rowLockQueue reads a statement that queued for row locks: it takes
// them (a write or a locking read), and another statement of its
// transaction with the same table and WHERE, before or after it, ran at
// least rowLockFactor times faster. The lookup is cheap (a missing index
// or a bad plan would slow both), so the time went to waiting for other
// transactions holding the rows, most often requests running this same
// code. With bind parameters the two may touch different rows (a
// transfer's two accounts, the second one locked by another transfer);
// the lookup is the same, and the wait still a lock's. It returns that
// fast statement and the transaction's COMMIT or ROLLBACK, which must be
// in view. The statements are looked for in the whole service entry, not
// among siblings: node-postgres parents a transaction's later statements
// on the server span or on the handler, depending on which callback ran
// them.
func rowLockQueue(t *Trace, n *Node) (fast, end *Node) {
	if n.Duration() < rowLockMinNS || !IsDB(n) || !takesRowLocks(n) || noWaitRe.MatchString(DBStatement(n.Span)) {
		return nil, nil
	}
	rows := rowsOf(DBShape(n.Span))
	if rows == "" {
		return nil, nil
	}
	stmts := entryStatements(t, EntryOf(n))
	i := slices.Index(stmts, n)
	if i < 0 {
		return nil, nil
	}
	better := func(c *Node) {
		if c.Span.Service == n.Span.Service && c.Duration()*rowLockFactor <= n.Duration() &&
			(fast == nil || c.Duration() < fast.Duration()) && rowsOf(DBShape(c.Span)) == rows {
			fast = c
		}
	}
	for _, c := range slices.Backward(stmts[:i]) {
		if c.Span.Service != n.Span.Service {
			continue
		}
		if beginsTransaction(c) || endsTransaction(c) {
			break
		}
		better(c)
	}
	for _, c := range stmts[i+1:] {
		if c.Span.Service != n.Span.Service || c.Start()+1e6 < n.End() {
			continue
		}
		switch {
		case endsTransaction(c):
			if fast != nil {
				return fast, c
			}
			return nil, nil
		case beginsTransaction(c):
			return nil, nil
		}
		better(c)
	}
	return nil, nil
}

// statementsWithin returns how much of [from, to] the database spans of
// n's service entry cover: the rest of a transaction's hold is time it
// kept its locks while running no statement.
func statementsWithin(t *Trace, n *Node, from, to uint64) uint64 {
	var covered, reach uint64
	reach = from
	for _, c := range entryStatements(t, EntryOf(n)) {
		s, e := max(c.Start(), reach), min(c.End(), to)
		if e > s {
			covered += e - s
			reach = e
		}
	}
	return covered
}

// connHold is what a request did with a pooled connection it checked out.
type connHold struct {
	held     uint64 // from the checkout's end to its last statement's end
	lockWait uint64 // of it, statements waiting for a row lock
	idleInTx uint64 // of it, no statement running while a transaction was open
	locked   *Node  // the statement that waited longest for a row lock
}

// explains reports a hold that empties a pool: one spent waiting for a
// row lock (10 ms or more), or mostly idle (at least 10 ms and half of it)
// inside an open transaction.
func (h connHold) explains() bool {
	return h.lockWait >= 10e6 || h.idleInTx >= 10e6 && 2*h.idleInTx >= h.held
}

// connectionHold reads the statements of the checkout's service entry
// after the checkout, up to the next checkout: they ran on the connection
// it handed out (node-postgres' pool.connect(), then client.query() until
// release). ok is false when no statement followed.
func connectionHold(t *Trace, checkout *Node) (connHold, bool) {
	var h connHold
	var last *Node
	var lockedWait uint64
	open := false
	at := checkout.End()
	for _, c := range entryStatements(t, EntryOf(checkout)) {
		if c.Span.Service != checkout.Span.Service || c.Start()+1e6 < checkout.End() || c == checkout {
			continue
		}
		if isCheckout(c) {
			break
		}
		if open && c.Start() > at {
			h.idleInTx += c.Start() - at
		}
		if ws := nodeWaits(t, c); resourceOf(ws) == "lock" {
			w := waitedNS(ws)
			h.lockWait += w
			if w > lockedWait {
				h.locked, lockedWait = c, w
			}
		}
		switch {
		case beginsTransaction(c):
			open = true
		case endsTransaction(c):
			open = false
		}
		at = max(at, c.End())
		last = c
	}
	if last == nil {
		return connHold{}, false
	}
	h.held = last.End() - min(checkout.End(), last.End())
	return h, true
}

// resourceOf returns the resource of the longest wait.
func resourceOf(ws []spanWait) string {
	var main spanWait
	for _, w := range ws {
		if w.end-w.start >= main.end-main.start {
			main = w
		}
	}
	return main.resource
}

// rowLockMinNS is the shortest statement rowLockQueue considers: below
// lock_contention's floor no finding could follow. rowLockFactor is how
// much faster the same lookup must have run later: a missing
// index slows both alike, while a starved database host can slow the
// second a few times over.
const (
	rowLockMinNS  = 10e6
	rowLockFactor = 5
)

// entryStatements returns the database spans under a service entry (not
// under the entries of services it calls), in start order.
func entryStatements(t *Trace, entry *Node) []*Node {
	m := memoOf(t)
	if m.entryStatements == nil {
		m.entryStatements = map[*Node][]*Node{}
		for _, c := range t.Nodes {
			if IsDB(c) {
				e := EntryOf(c)
				m.entryStatements[e] = append(m.entryStatements[e], c)
			}
		}
		for _, list := range m.entryStatements {
			slices.SortStableFunc(list, func(a, b *Node) int { return cmp.Compare(a.Start(), b.Start()) })
		}
	}
	return m.entryStatements[entry]
}

// rowsOf names the rows a statement touches by its table and WHERE clause,
// read from its normalised shape: "stock where sku = ?" for both SELECT qty
// FROM stock WHERE sku = ? FOR UPDATE and UPDATE stock SET qty = qty - ?
// WHERE sku = ?. It is "" for a statement without both (an INSERT, a
// whole-table read), whose rows cannot be matched.
func rowsOf(shape string) string {
	s := strings.ToLower(shape)
	var table string
	switch {
	case strings.HasPrefix(s, "select "), strings.HasPrefix(s, "delete "):
		_, rest, ok := strings.Cut(s, " from ")
		if !ok {
			return ""
		}
		table = firstWord(rest)
	case strings.HasPrefix(s, "update "):
		table = firstWord(s[len("update "):])
	default:
		return ""
	}
	_, where, ok := strings.Cut(s, " where ")
	if table == "" || !ok {
		return ""
	}
	for _, tail := range []string{" for ", " returning ", " order by ", " limit ", " lock in share mode"} {
		if i := strings.Index(where, tail); i >= 0 {
			where = where[:i]
		}
	}
	return table + " where " + strings.TrimSpace(where)
}

// firstWord returns s's first word without quotes: a table name.
func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " (,;"); i >= 0 {
		s = s[:i]
	}
	return quoteChars.Replace(s)
}

// quoteChars are the identifier quotes of SQL dialects.
var quoteChars = strings.NewReplacer("`", "", `"`, "", "[", "", "]", "")

// mayLock is a cheap test before lockingReadRe, whose case-insensitive
// backtracking over every statement of a 10,000-span trace tripled
// slow_query's cost: a statement that takes a lock says "for" (FOR
// UPDATE, FOR SHARE) or "lock" (LOCK IN SHARE MODE, LOCK TABLES, XLOCK,
// HOLDLOCK, UPDLOCK).
func mayLock(stmt string) bool {
	return containsFold(stmt, "lock") || containsFold(stmt, "for")
}

// containsFold reports whether s contains the lower-case ASCII word sub
// in any case, without the copy strings.ToLower makes of upper-case text.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i]|0x20 == sub[0] && strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// hasPrefixFold reports whether s starts with the lower-case ASCII text
// prefix in any case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// heldLockAcross finds, among the siblings after the locking statement n,
// the longest remote call (not a database span) made before the
// transaction's next statement or its commit: the lock stays held across
// that call. A commit or rollback before any call ends the search.
func heldLockAcross(n *Node) *Node {
	if n.Parent == nil {
		return nil
	}
	var call *Node
	for _, c := range n.Parent.Children {
		if c == n || c.Start()+1e6 < n.End() {
			continue
		}
		switch {
		case IsDB(c) && call != nil:
			return call
		case IsDB(c) && endsTransaction(c):
			return nil
		case IsCall(c) && !IsDB(c) && (call == nil || c.Duration() > call.Duration()):
			call = c
		}
	}
	return nil
}

// endsTransaction reports a COMMIT or ROLLBACK, as a statement or as the
// driver's span (otelsql's sql.tx.commit).
func endsTransaction(n *Node) bool {
	stmt := DBStatement(n.Span)
	// Most statements name neither word: splitting each into words cost
	// an eighth of the analysis of a large trace once every database span
	// asked (lockReleasedBy).
	if !containsFold(stmt, "commit") && !containsFold(stmt, "rollback") &&
		!containsFold(n.Span.Name, "commit") && !containsFold(n.Span.Name, "rollback") {
		return false
	}
	for _, w := range textWords(stmt + " " + n.Span.Name) {
		if w == "commit" || w == "rollback" {
			return true
		}
	}
	return false
}

// checkoutVerbs, beside the word "pool", make a span name the checkout of
// a pooled resource: node-postgres' "pg-pool.connect", "pool.acquire",
// "pool checkout", "pool getConnection".
var checkoutVerbs = map[string]bool{"connect": true, "acquire": true, "checkout": true, "getconnection": true, "borrow": true}

// checkoutName reports whether a span name is that of a pool checkout.
func checkoutName(name string) bool {
	if !containsFold(name, "pool") {
		// Most span names; splitting each into words cost a tenth of
		// the analysis of a large trace.
		return false
	}
	pool, verb := false, false
	for _, w := range textWords(name) {
		pool = pool || w == "pool"
		verb = verb || checkoutVerbs[w]
	}
	return pool && verb
}

// checkoutWaits reads a span that is itself a pool checkout. Its time not
// covered by a child is the wait for a free member; a child (pg.connect
// under pg-pool.connect) opens a new connection, which is work, not a
// wait. A checkout span carries no statement, so without this its wait
// looked like a slow query to EXPLAIN.
func checkoutWaits(n *Node) []spanWait {
	if !checkoutName(n.Span.Name) {
		return nil
	}
	res := "pool"
	if IsDB(n) {
		res = "connection_pool"
	}
	kids := make([]*Node, len(n.Children))
	copy(kids, n.Children)
	sort.Slice(kids, func(i, j int) bool { return kids[i].Start() < kids[j].Start() })
	var out []spanWait
	at := n.Start()
	gap := func(end uint64) {
		if end > at {
			out = append(out, spanWait{start: at, end: end, resource: res, source: "span_name",
				waitEvent: model.Clip(n.Span.Name, 200), poolName: n.Span.Attrs.Str(poolNameKeys...)})
		}
	}
	for _, c := range kids {
		gap(min(c.Start(), n.End()))
		at = max(at, min(c.End(), n.End()))
	}
	gap(n.End())
	return out
}

// lockVictims lists the trace's lock-error statements once.
func lockVictims(t *Trace) []*Node {
	m := memoOf(t)
	if !m.lockVictimsDone {
		m.lockVictimsDone = true
		for _, n := range t.Nodes {
			if lockError(n) != "" {
				m.lockVictims = append(m.lockVictims, n)
			}
		}
	}
	return m.lockVictims
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

package analyze

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// NPlusOneQuery finds many database spans of one statement shape under one
// parent: a loop issuing a query per item of a list fetched just before.
type NPlusOneQuery struct {
	MinRepetitions int     `yaml:"min_repetitions"`
	MinTotalMS     float64 `yaml:"min_total_ms"`
}

// NewNPlusOneQuery returns the detector with docs/patterns.md defaults.
func NewNPlusOneQuery() *NPlusOneQuery { return &NPlusOneQuery{MinRepetitions: 5, MinTotalMS: 50} }

func init() { Register(func() Detector { return NewNPlusOneQuery() }) }

// Kind implements Detector.
func (*NPlusOneQuery) Kind() string { return "n_plus_one_query" }

// NPlusOneEvidence is the evidence of an n_plus_one_query finding.
type NPlusOneEvidence struct {
	Shape    string  `json:"shape"`
	DBSystem string  `json:"db_system"`
	Count    int     `json:"count"`
	TotalMS  float64 `json:"total_ms"`
	// TotalMaxMS, set when the queries' timestamps are whole milliseconds
	// and some read 0 ms, bounds what they may really have taken
	// (coarseTotalBound); TotalMS is then the lower bound.
	TotalMaxMS float64 `json:"total_max_ms,omitempty"`
	// CriticalMS is the repeated spans' time on the critical path (less
	// than TotalMS when they overlap).
	CriticalMS float64 `json:"critical_ms"`
	// DistinctStatements counts different raw texts (1 with bind parameters).
	DistinctStatements int     `json:"distinct_statements"`
	Parent             SpanRef `json:"parent"`
	// ListQuery is the query just before the loop that fetched the list.
	ListQuery *ListQueryRef `json:"list_query,omitempty"`
	Hint      string        `json:"hint"`
}

// ListQueryRef is the query that fetched the list the loop walks.
type ListQueryRef struct {
	SpanRef
	Shape string `json:"shape"`
}

// Detect implements Detector. Severity by the time batching would save
// (SeverityForImpact), raised to at least warning from 20 repetitions: the
// count grows with the data even when today's impact is small.
func (d *NPlusOneQuery) Detect(t *Trace, _ *Env) []Finding {
	var out []Finding
	keep := func(c *Node) bool {
		q := dbUnit(c)
		return q != nil && !isCheckout(q)
	}
	key := func(c *Node) [2]string {
		q := dbUnit(c)
		_, shape := CallTarget(t, q)
		return [2]string{nodeDBSystem(q), shape}
	}
	for _, p := range t.Nodes {
		if len(p.Children) < d.MinRepetitions {
			continue
		}
		// units are children of p: the query, or a wrapper around it.
		for _, units := range groupChildren(p, keep, key) {
			if len(units) < d.MinRepetitions {
				continue
			}
			dbs := make([]*Node, len(units))
			for i, u := range units {
				dbs[i] = dbUnit(u)
			}
			if f, ok := d.finding(t, p, units, dbs); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

// dbUnit returns the database span a child of the loop's parent stands
// for: the child itself, or the only child of a wrapper span (Spring Data
// repositories, ORM methods) around one query.
func dbUnit(c *Node) *Node {
	if IsDB(c) {
		return c
	}
	if len(c.Children) == 1 && (c.Span.Kind == model.KindInternal || c.Span.Kind == model.KindUnspecified) &&
		!IsCall(c) && IsDB(c.Children[0]) {
		return c.Children[0]
	}
	return nil
}

func (d *NPlusOneQuery) finding(t *Trace, p *Node, units, nodes []*Node) (Finding, bool) {
	var total, longest uint64
	distinct := map[string]struct{}{}
	for i, n := range nodes {
		total += units[i].Duration()
		longest = max(longest, units[i].Duration())
		if len(distinct) < 2 {
			distinct[DBStatement(n.Span)] = struct{}{}
		}
	}
	// A pool's checkout before each query (node-postgres' pool.query
	// records pg-pool.connect, then pg.query) is part of every row's round
	// trip, and one batched query saves it too.
	checkouts := loopCheckouts(p, units)
	for _, c := range checkouts {
		total += c.Duration()
	}
	upper := coarseTotalBound(units, total)
	if NS(upper) < d.MinTotalMS {
		return Finding{}, false
	}
	_, shape := CallTarget(t, nodes[0])
	raw := DBStatement(nodes[0].Span)
	// The same literal text again and again is not a loop over a list (it
	// is a missing cache); with bind markers we cannot see the parameters
	// and must trust the shape.
	if len(distinct) == 1 && raw != shape && !hasBindMarker(raw) {
		return Finding{}, false
	}
	system := DBSystem(nodes[0].Span)
	crit := critUnder(t, append(checkouts, units...)...)
	holder := flatHolder(p, units)
	if holder != nil {
		crit = max(crit, min(busyUnion(units), critWithin(t, holder, units[0].Start(), units[len(units)-1].End())))
	}
	// One batched query costs about as much as the slowest single one.
	impact := subSat(crit, longest)

	// The list query: the latest other-shaped query of the same database
	// that ended before the loop began. Another store's query is no list
	// to JOIN with: a loop of Redis GETs that missed, then one SELECT per
	// item, reads the same ids twice.
	var list *Node
	first := units[0]
	for _, c := range p.Children {
		if c.Start() >= first.Start() {
			break
		}
		if q := dbUnit(c); q != nil && !isCheckout(q) && c.End() <= first.Start()+1e6 && sameStore(DBSystem(q.Span), system) {
			if _, s := CallTarget(t, q); s != shape {
				list = q
			}
		}
	}
	verb := ""
	if storeBatchAdvice(system) == "" {
		verb = sqlWriteVerb(shape)
	}
	hint := "batch the loop into one query: WHERE id IN (...) over the collected ids, or a JOIN with the list query"
	if verb != "" {
		hint = "batch the loop into one statement: " + bulkWrite(verb)
	}
	ev := NPlusOneEvidence{
		Shape: shape, DBSystem: system, Count: len(nodes), TotalMS: roundMS(total), CriticalMS: roundMS(crit),
		DistinctStatements: len(distinct), Parent: RefOf(t, p), Hint: hint,
	}
	if len(distinct) > 1 {
		ev.DistinctStatements = countDistinctStatements(nodes)
	}
	totalText := fmt.Sprintf("%.0f ms in total", NS(total))
	if upper > total {
		ev.TotalMaxMS = roundMS(upper)
		totalText = fmt.Sprintf("%.0f-%.0f ms in total (whole-millisecond timestamps)", NS(total), NS(upper))
	}
	if list != nil {
		_, ls := CallTarget(t, list)
		ev.ListQuery = &ListQueryRef{SpanRef: RefOf(t, list), Shape: ls}
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = spanIDOf(t, n)
	}
	if holder != nil {
		// The span that ran the loop is where the request's time shows.
		ids = append(ids, spanIDOf(t, holder))
	}
	sev := SeverityForImpact(impact, critTotal(t))
	if len(nodes) >= 20 && sev.Rank() < SeverityWarning.Rank() {
		sev = SeverityWarning
	}
	entry := EntryOf(p)
	title := fmt.Sprintf("%d %s queries of the same shape under %s (%s), %s",
		len(nodes), system, displayOp(entry), model.Clip(shape, 80), totalText)
	switch {
	case verb != "":
		// A write loop follows no list: the query before it (a seeder's
		// random pick, the previous table's inserts) is not what it walks.
		title = fmt.Sprintf("%d %s %ss, one row at a time, under %s (%s), %s",
			len(nodes), system, verb, displayOp(entry), model.Clip(shape, 80), totalText)
	case list != nil:
		title = fmt.Sprintf("%d %s queries of the same shape after 1 list query under %s (%s), %s",
			len(nodes), system, displayOp(entry), model.Clip(shape, 80), totalText)
	}
	listShape := ""
	if list != nil {
		_, listShape = CallTarget(t, list)
	}
	fix := batchAdvice(system, listShape)
	if verb != "" {
		fix = "Write the rows in one statement: " + bulkWrite(verb) + "."
	}
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(impact), Evidence: ev, Fix: fix,
	}, true
}

// coarseTotalBound is the most the units may have taken together when
// their clock records whole milliseconds: a sub-millisecond query then
// reads 0 ms (or 1), and 200 of them sum to a fraction of their real time.
// Each zero-length unit may have taken up to a millisecond, and a loop
// that ran one query after another took no more than the time from its
// first start to its last end. Otherwise it is total.
func coarseTotalBound(units []*Node, total uint64) uint64 {
	zeros := 0
	for i, u := range units {
		if u.Start()%1e6 != 0 || u.End()%1e6 != 0 {
			return total
		}
		if u.Duration() == 0 {
			zeros++
		}
		if i > 0 && u.Start()+1e6 < units[i-1].End() {
			return total // overlapping: not the sequential loop the wall-clock bound assumes
		}
	}
	if zeros == 0 {
		return total
	}
	return max(total, min(total+uint64(zeros)*1e6, units[len(units)-1].End()-units[0].Start()))
}

// flatHolder finds the span that ran a loop recorded beside it instead of
// under it. An SDK that hangs every span on the transaction (sentry-ruby's
// ActiveRecord spans next to the controller's process_action) or a
// context lost across an async boundary leaves the queries as siblings of
// the code that issued them: a leaf of the parent's own service, not a
// call, whose time window holds the whole loop. The critical path runs
// through that leaf's self time, and that time is the loop's.
func flatHolder(p *Node, units []*Node) *Node {
	first, last := units[0], units[len(units)-1]
	for _, c := range p.Children {
		if len(c.Children) == 0 && c.Span.Service == p.Span.Service && !IsCall(c) && !slices.Contains(units, c) &&
			(c.Span.Kind == model.KindInternal || c.Span.Kind == model.KindUnspecified) &&
			c.Start() <= first.Start() && c.End() >= last.End() {
			return c
		}
	}
	return nil
}

// busyUnion is the time at least one of the nodes (sorted by start) runs.
func busyUnion(nodes []*Node) uint64 {
	var total, end uint64
	for _, n := range nodes {
		s := max(n.Start(), end)
		if n.End() > s {
			total += n.End() - s
			end = n.End()
		}
	}
	return total
}

// hasBindMarker reports whether a statement's text carries placeholders
// for parameters sent apart from it: "?" (JDBC, ODBC), "$1" (PostgreSQL),
// ":name" (Oracle, SQLite), "@p1" (SQL Server), and the Python DB-API's
// "%s" and "%(name)s" (psycopg2, MySQLdb, PyMySQL; Django records its
// queries this way). Identical texts with markers are different rows.
func hasBindMarker(raw string) bool {
	return strings.ContainsAny(raw, "?$:@") || strings.Contains(raw, "%s") || strings.Contains(raw, "%(")
}

// isCheckout reports whether a database span is a pool checkout, which
// runs no statement.
func isCheckout(n *Node) bool { return checkoutName(n.Span.Name) }

// loopCheckouts are the pool checkouts among p's children inside the loop:
// after the last other sibling that ended before the loop (the list
// query), up to the end of the last unit, at most one per unit. Pairing
// each with its query one by one fails on whole-millisecond clocks, where
// a checkout and the query before it start in the same millisecond.
func loopCheckouts(p *Node, units []*Node) []*Node {
	first, last := units[0], units[len(units)-1]
	from := p.Start()
	for _, c := range p.Children {
		if !isCheckout(c) && c.End() <= first.Start() && !slices.Contains(units, c) {
			from = max(from, c.End())
		}
	}
	var out []*Node
	for _, c := range p.Children {
		if len(out) < len(units) && IsDB(c) && isCheckout(c) && c.Start() >= from && c.End() <= last.End() {
			out = append(out, c)
		}
	}
	return out
}

// sameStore tells whether two db.system values name one kind of store;
// an unknown one may be either.
func sameStore(a, b string) bool {
	return a == "" || b == "" || strings.EqualFold(a, b)
}

func countDistinctStatements(nodes []*Node) int {
	seen := make(map[string]struct{}, len(nodes))
	for _, n := range nodes {
		seen[DBStatement(n.Span)] = struct{}{}
	}
	return len(seen)
}

// batchAdvice is the fix for a loop of one query per item in the terms of
// its store: a cache has no JOIN, a document store batches with $in.
func batchAdvice(system, listShape string) string {
	if a := storeBatchAdvice(system); a != "" {
		return a
	}
	fix := "Load the rows in one query (WHERE id IN (...) or a JOIN"
	if listShape != "" {
		fix += " with " + model.Clip(listShape, 80)
	}
	return fix + ") or enable the ORM's eager loading / batch fetching for this association."
}

// storeBatchAdvice is the batching advice of a store that does not speak
// SQL, or "" for a SQL database.
func storeBatchAdvice(system string) string {
	switch s := strings.ToLower(system); {
	case s == "redis" || s == "valkey" || s == "keydb" || s == "dragonfly":
		return "Fetch the items in one round trip: MGET (or HMGET per hash) for the keys, or a pipeline of the " +
			"commands; or keep what the page needs in one key."
	case s == "memcached":
		return "Fetch the items in one round trip with a multi-get (get_multi / getMulti) of all the keys."
	case s == "mongodb":
		return "Fetch the documents in one query with {_id: {$in: [...]}} (or $lookup in an aggregation) instead of one find per item."
	case s == "cassandra" || s == "scylla" || s == "scylladb":
		return "Read the rows with one query per partition (IN on the clustering key) or concurrent asynchronous " +
			"queries, or denormalise so the page reads one partition."
	case s == "elasticsearch" || s == "opensearch":
		return "Fetch the documents in one request with _mget or a terms query on the ids."
	case s == "dynamodb" || s == "aws.dynamodb":
		return "Fetch the items in one BatchGetItem (up to 100 keys) instead of one GetItem per item."
	}
	return ""
}

// sqlWriteVerb returns INSERT, UPDATE or DELETE when a SQL shape writes
// (UPSERT, REPLACE and MERGE count as INSERT), else "". A loop of writes
// (a seeder, an import, a save per item) is batched by a bulk statement,
// not by the IN-list or JOIN that batches a loop of reads.
func sqlWriteVerb(shape string) string {
	f := strings.Fields(shape)
	if len(f) == 0 {
		return ""
	}
	switch v := strings.ToUpper(f[0]); v {
	case "INSERT", "UPSERT", "REPLACE", "MERGE":
		return "INSERT"
	case "UPDATE", "DELETE":
		return v
	}
	return ""
}

// bulkWrite is the one statement that replaces a loop of one write per
// row, and the ORM calls that issue it.
func bulkWrite(verb string) string {
	switch verb {
	case "INSERT":
		return "a multi-row INSERT ... VALUES (...), (...) or COPY (the ORM's bulk insert: insert([...]), " +
			"bulk_create, insert_all, saveAll with JDBC batching)"
	case "UPDATE":
		return "one UPDATE ... WHERE id IN (...) (or UPDATE ... FROM a VALUES list when each row gets its own " +
			"value), or the ORM's bulk update"
	}
	return "one DELETE ... WHERE id IN (...), or the ORM's bulk delete"
}

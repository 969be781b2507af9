package analyze

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// SlowQuery finds one database span that takes most of its service-entry
// span, or that runs far slower than its statement shape usually does.
type SlowQuery struct {
	MinDurationMS float64 `yaml:"min_duration_ms"` // absolute floor of the share rule
	MinShare      float64 `yaml:"min_share"`       // of the service-entry span, 0..1
	HistoryFactor float64 `yaml:"history_factor"`  // x usual p50 of the same shape
	// MinHistoryMS keeps a 0.2 ms lookup that took 0.8 ms from being news.
	MinHistoryMS      float64 `yaml:"min_history_ms"`
	MinHistorySamples int     `yaml:"min_history_samples"`
	// FailedFactor: a failed attempt is an error (error_origin,
	// retry_storm report it). One that timed out is never a slow query:
	// its length is the client's timeout, not the statement's time. Any
	// other failure is a slow query too only when it ran at least this
	// many times the usual time of successful runs of its shape (this
	// trace's, else history's): a statement cancelled after grinding.
	FailedFactor float64 `yaml:"failed_factor"`
}

// NewSlowQuery returns the detector with shared/patterns.md defaults.
func NewSlowQuery() *SlowQuery {
	return &SlowQuery{MinDurationMS: 100, MinShare: 0.5, HistoryFactor: 3, MinHistoryMS: 20, MinHistorySamples: 10, FailedFactor: 10}
}

func init() { Register(func() Detector { return NewSlowQuery() }) }

// Kind implements Detector.
func (*SlowQuery) Kind() string { return "slow_query" }

// SlowQueryEvidence is the evidence of a slow_query finding.
type SlowQueryEvidence struct {
	Shape      string  `json:"shape"`
	Statement  string  `json:"statement"`
	DBSystem   string  `json:"db_system"`
	DurationMS float64 `json:"duration_ms"`
	Entry      SpanRef `json:"entry"`
	// SharePct is the query's share of its service-entry span.
	SharePct float64 `json:"share_pct"`
	// UsualMS is the usual (p50) duration of the shape when history knows it.
	UsualMS    float64 `json:"usual_ms,omitempty"`
	UsualP95MS float64 `json:"usual_p95_ms,omitempty"`
	// TimesUsual is DurationMS / UsualMS.
	TimesUsual float64 `json:"times_usual,omitempty"`
	// Rule is "share" or "history": which threshold fired.
	Rule string `json:"rule"`
	// LockWaitMS is time inside the span spent waiting for a lock or a
	// pooled connection (lock_contention's finding); the rules judge the
	// rest, the statement's own time.
	LockWaitMS float64 `json:"lock_wait_ms,omitempty"`
	// Failed is set when the span failed yet ran far beyond the usual
	// time of successful runs.
	Failed bool `json:"failed,omitempty"`
	// AlsoSlow lists the other statements of the request that slowed down
	// with this one (history rule), by shape with how many times their
	// usual they ran: two or more such runs say the moment was slow, not
	// the statement.
	AlsoSlow []string `json:"also_slow,omitempty"`
}

// Detect implements Detector. Severity: critical when the query's
// critical-path time is ≥ 50 % of the trace and ≥ 500 ms, warning at ≥ 20 %
// or ≥ 200 ms, info otherwise (SeverityForImpact); a query that became ≥ 10x
// slower than usual is at least a warning.
func (d *SlowQuery) Detect(t *Trace, env *Env) []Finding {
	var hist History = NoHistory{}
	if env != nil && env.History != nil {
		hist = env.History
	}
	var out []Finding
	for _, n := range t.Nodes {
		// A pool checkout (pg-pool.connect) runs no statement: its own
		// time is the wait for a free connection (lock_contention's), and
		// a connect under it is judged on its own.
		if !IsDB(n) || n.Parent == nil || isCheckout(n) || noWorkStatement(DBStatement(n.Span)) || beginsTransaction(n) {
			continue
		}
		entry := EntryOf(n.Parent)
		if entry == nil {
			continue
		}
		// Opening a connection runs no statement. With the session set-up
		// queries under it, its own time is the handshake (idle_gap's
		// connection_setup) and the queries are judged on their own.
		connect := opensConnection(n)
		if connect && len(n.Children) > 0 {
			continue
		}
		// Time spent queueing for a lock or a connection is lock_contention's
		// finding: judge only what the statement itself took.
		waits := nodeWaits(t, n)
		waited := waitedNS(waits)
		dur := subSat(n.Duration(), waited)
		durMS := NS(dur)
		share := 0.0
		if ed := entry.Duration(); ed > 0 {
			// Only the part of the query inside the entry's window is the
			// entry's time: a query its handler left running (an async job,
			// tracetest's run after its POST answered) took none of it.
			in := subSat(min(n.End(), entry.End()), max(n.Start(), entry.Start()))
			share = float64(min(dur, in)) / float64(ed)
		}
		_, shape := CallTarget(t, n)
		system := nodeDBSystem(n)
		base, hasBase := hist.StatementDuration(system, shape)
		hasBase = hasBase && base.Count >= d.MinHistorySamples && base.P50MS > 0
		if Failed(n) && !d.failedButSlow(t, n, system, shape, hist, durMS) {
			continue
		}
		rule := ""
		switch {
		case durMS >= d.MinDurationMS && share >= d.MinShare:
			rule = "share"
		case hasBase && durMS >= d.HistoryFactor*base.P50MS && durMS >= d.MinHistoryMS && (base.P95MS <= 0 || durMS > base.P95MS):
			// Within the shape's usual p95 is within its usual spread,
			// however far above the median: a bimodal statement (a
			// cached and an uncached plan), or one whose process is often
			// starved of CPU (the event loop of a busy Node service adds
			// its lag to every call), is slow that often.
			rule = "history"
		default:
			continue
		}
		crit := subSat(critUnder(t, n), waitsOnPath(t, n, waits))
		impact := crit
		ev := SlowQueryEvidence{
			Shape: shape, Statement: model.Clip(DBStatement(n.Span), 2000), DBSystem: system, DurationMS: roundMS(dur),
			Entry: RefOf(t, entry), SharePct: float64(int64(share*1000+0.5)) / 10, Rule: rule,
			LockWaitMS: roundMS(waited), Failed: Failed(n),
		}
		if hasBase {
			ev.UsualMS, ev.UsualP95MS = base.P50MS, base.P95MS
			ev.TimesUsual = float64(int64(durMS/base.P50MS*10+0.5)) / 10
			// A fixed query still takes its usual time.
			impact = subSat(crit, uint64(base.P50MS*1e6))
		}
		sev := SeverityForImpact(impact, critTotal(t))
		var around []string
		slowRuns := 0
		if rule == "history" {
			around, slowRuns = d.slowAround(t, n, hist)
			ev.AlsoSlow = around
		}
		if ev.TimesUsual >= 10 && sev.Rank() < SeverityWarning.Rank() && slowRuns < 2 {
			sev = SeverityWarning
		}
		title := fmt.Sprintf("%s query took %.0f ms, %.0f%% of %s", system, durMS, ev.SharePct, displayOp(entry))
		if n.End() > entry.End()+timingTolerance(n, entry) {
			// The entry ended (its caller gave up, or it answered without
			// waiting) while the query ran on: the share is of the part
			// inside it, which the bare duration beside it would misstate.
			title = fmt.Sprintf("%s query took %.0f ms, outliving %s: its %.0f ms inside were %.0f%% of it",
				system, durMS, displayOp(entry), NS(uint64(share*float64(entry.Duration()))), ev.SharePct)
		}
		fix := queryAdvice(system, shape)
		reason := fmt.Sprintf("%s issues this %s statement, which ran %.0f ms itself, so the statement and what it reads are the place to look.", n.Span.Service, system, durMS)
		switch {
		case endsTransaction(n):
			fix = commitAdvice
			reason = fmt.Sprintf("%s's transaction took %.0f ms to end; a commit runs no query to tune.", n.Span.Service, durMS)
		case rule == "history" && slowRuns >= 2:
			fix = fmt.Sprintf("Several statements of this request ran many times their usual at once (%s): %s or %s "+
				"was slow at that moment (CPU starved, an I/O stall, a blocked event loop), not this statement's plan. "+
				"Check both hosts' CPU and I/O for that time.", strings.Join(around, ", "),
				nonEmpty(system, "the database"), n.Span.Service)
			reason = fmt.Sprintf("%s's statements all slowed down together in this request.", n.Span.Service)
		case rule == "history" && !hasPlanWords(shape):
			// Usually fast, so the plan is fine: this run differed.
			fix = fmt.Sprintf("%s usually takes %.0f ms (p95 %.0f ms), so its plan is not what changed: find what was "+
				"different for this run: a lock it waited for, parameters that match far more rows than usual, or %s "+
				"or %s busy at that moment (other statements slow at the same time point there).",
				model.Clip(shape, 120), base.P50MS, base.P95MS, nonEmpty(system, "the database"), n.Span.Service)
		}
		if connect {
			title = fmt.Sprintf("opening a %s connection took %.0f ms, %.0f%% of %s", system, durMS, ev.SharePct, displayOp(entry))
			fix = connectAdvice
			reason = fmt.Sprintf("%s opened a new %s connection for this request: connecting per request is the cost, not a statement.", n.Span.Service, system)
		}
		if hasBase {
			title += fmt.Sprintf(" (%.1fx its usual %s)", ev.TimesUsual, fmtDur(uint64(base.P50MS*1e6)))
		}
		if waited > 0 {
			title += fmt.Sprintf(", after %.0f ms waiting for a lock or connection", NS(waited))
		}
		if slowRuns >= 2 {
			title += fmt.Sprintf("; %s in the same request slowed down with it", strings.Join(around, ", "))
			// The statement is not what to fix: the moment was slow.
			sev = SeverityInfo
		}
		out = append(out, Finding{
			Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: []string{n.Span.SpanID.String()},
			ImpactMS: roundMS(impact), Evidence: ev, Fix: fix,
			Culprit: &Culprit{Service: n.Span.Service, Operation: shape, SpanID: n.Span.SpanID.String(), Reason: reason},
		})
	}
	return out
}

// failedButSlow reports whether a failed attempt ran at least FailedFactor
// times the usual time of successful runs of its shape: successful
// siblings' median in this trace first (an N+1 loop or a retry shows them),
// else history's p50.
func (d *SlowQuery) failedButSlow(t *Trace, n *Node, system, shape string, hist History, durMS float64) bool {
	var ok []float64
	if n.Parent != nil {
		for _, c := range n.Parent.Children {
			if c != n && !Failed(c) && IsDB(c) && nodeDBSystem(c) == system {
				if _, s := CallTarget(t, c); s == shape {
					ok = append(ok, NS(c.Duration()))
				}
			}
		}
	}
	if IsTimeoutLike(n.Span) {
		return false
	}
	usual := 0.0
	if len(ok) > 0 {
		slices.Sort(ok)
		usual = ok[len(ok)/2]
	} else if base, found := hist.StatementDuration(system, shape); found && base.Count >= d.MinHistorySamples {
		usual = base.P50MS
	}
	return usual > 0 && durMS >= d.FailedFactor*usual
}

// sqlSystems are db.system values whose statements are SQL (current and
// older semantic-convention names).
var sqlSystems = map[string]bool{
	"postgresql": true, "mysql": true, "mariadb": true, "mssql": true, "microsoft.sql_server": true,
	"oracle": true, "oracle.db": true, "sqlite": true, "db2": true, "ibm.db2": true, "cockroachdb": true,
	"h2": true, "hsqldb": true, "derby": true, "other_sql": true, "redshift": true, "snowflake": true,
	"trino": true, "clickhouse": true, "spanner": true, "gcp.spanner": true, "sybase": true, "informix": true,
	"teradata": true, "vertica": true, "firebird": true, "ingres": true, "hive": true, "sap.hana": true,
	"hanadb": true, "instantdb": true, "interbase": true, "pointbase": true, "netezza": true, "firstsql": true,
	"cloudscape": true, "edb": true, "adabas": true, "cache": true, "intersystems.cache": true, "progress": true,
	"maxdb": true, "filemaker": true, "pervasive": true, "mssqlcompact": true,
}

// cacheOnN are Redis-style commands whose cost grows with the size of what
// they touch.
var cacheOnN = map[string]bool{
	"KEYS": true, "SMEMBERS": true, "LRANGE": true, "HGETALL": true, "ZRANGE": true, "ZRANGEBYSCORE": true,
	"ZREVRANGE": true, "SORT": true, "SUNION": true, "SINTER": true, "SDIFF": true, "HKEYS": true, "HVALS": true,
	"FLUSHALL": true, "FLUSHDB": true, "LREM": true,
}

// queryAdvice is the fix for a slow statement in the terms of its store:
// EXPLAIN and indexes mean nothing to a cache.
func queryAdvice(system, shape string) string {
	what := model.Clip(shape, 120)
	verb := ""
	if f := strings.Fields(shape); len(f) > 0 {
		verb = strings.ToUpper(f[0])
	}
	switch s := strings.ToLower(system); {
	case sqlSystems[s] || (s == "" && looksLikeSQL(verb)):
		return "EXPLAIN the statement " + what + ": add or fix the index it needs, fetch fewer rows or columns, " +
			"and check for lock waits if the plan is fine."
	case s == "redis" || s == "valkey" || s == "memcached" || s == "keydb" || s == "dragonfly":
		adv := "The " + system + " call " + what + " is slow: "
		if cacheOnN[verb] {
			adv += verb + " costs time in proportion to the items it touches: bound it (SCAN/SSCAN/HSCAN in pages, " +
				"LRANGE/ZRANGE with small ranges) or keep the collection small. "
		}
		return adv + "Look for big values (MEMORY USAGE, split or compress them), a hot key hammered by every " +
			"request, round trips that pipelining or MGET would merge, and the server's CPU and SLOWLOG; a single-" +
			"threaded server makes every command wait behind a slow one."
	case s == "mongodb":
		return "Run explain() on " + what + ": add an index on the filter (and sort) fields so it is no COLLSCAN, " +
			"return only the fields needed with a projection, and limit the documents fetched."
	case s == "cassandra" || s == "scylla" || s == "scylladb":
		return "Query " + what + " by its full partition key: avoid ALLOW FILTERING and multi-partition IN, keep " +
			"partitions small (large partitions and tombstones slow reads), and check the consistency level."
	case s == "elasticsearch" || s == "opensearch":
		return "Profile the search " + what + " (profile API): use filter context instead of scoring where possible, " +
			"avoid leading wildcards and deep pagination (use search_after), and check shard count and sizes."
	case s == "dynamodb" || s == "aws.dynamodb":
		return "Use Query on a key (or a secondary index) instead of Scan for " + what + ", and project fewer attributes."
	}
	return "Find out where " + what + " spends its time on the " + system + " side: the work the server does for it, " +
		"the size of what it returns, and the network between."
}

// noWorkStatement reports a statement that asks the database for no work
// worth tuning: transaction and session control, a ping. A slow one took
// its time on the round trip (the network, a starved client or server),
// which no EXPLAIN finds; the statements around it show the same.
func noWorkStatement(stmt string) bool {
	// Asked of every database span: no allocation.
	first, rest, _ := strings.Cut(strings.TrimSpace(stmt), " ")
	first, rest = strings.TrimRight(first, ";"), strings.TrimSpace(rest)
	for _, verb := range []string{"BEGIN", "SAVEPOINT", "RELEASE", "SET", "SHOW", "USE", "DISCARD", "RESET"} {
		if strings.EqualFold(first, verb) {
			return true
		}
	}
	switch {
	case strings.EqualFold(first, "START"):
		return hasPrefixFold(rest, "transaction")
	case strings.EqualFold(first, "SELECT"):
		rest = strings.TrimRight(rest, "; ")
		return rest == "1" || rest == "?" || rest == "$1"
	}
	return false
}

// commitAdvice is the fix of a slow COMMIT or ROLLBACK.
const commitAdvice = "A slow commit waits for the transaction's log to reach disk (and for synchronous replicas), or " +
	"for deferred constraints and triggers: check the database's disk flush latency and replication lag. Rows the " +
	"transaction wrote stay locked until it ends, so other requests may wait for this commit too."

// hasPlanWords reports a shape whose cost can change with the data even
// under the same plan: a history-slow run of it may still want EXPLAIN
// (an aggregate over a growing table). Point statements do not.
func hasPlanWords(shape string) bool {
	s := strings.ToLower(shape)
	for _, w := range []string{" join ", " group by ", " order by ", " like ", " count(", " sum(", " distinct "} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// slowAround returns the other statements of n's service in the same
// request that also ran at least HistoryFactor times their usual time
// (BEGIN and COMMIT included), one entry per shape with its worst factor
// and its count of such runs, and how many runs that is in all: when
// several statements slowed down together, the database or the calling
// process was slow at that moment (CPU, I/O, a stalled event loop), not
// n's plan.
func (d *SlowQuery) slowAround(t *Trace, n *Node, hist History) ([]string, int) {
	type slow struct {
		shape  string
		worst  float64
		counts int
	}
	var shapes []slow
	runs := 0
	for _, c := range entryStatements(t, EntryOf(n)) {
		if c == n || c.Span.Service != n.Span.Service || isCheckout(c) {
			continue
		}
		_, shape := CallTarget(t, c)
		base, ok := hist.StatementDuration(nodeDBSystem(c), shape)
		if !ok || base.Count < d.MinHistorySamples || base.P50MS <= 0 {
			continue
		}
		ms := NS(c.Duration())
		if ms < d.HistoryFactor*base.P50MS || ms < base.P50MS+1 {
			continue
		}
		runs++
		i := slices.IndexFunc(shapes, func(s slow) bool { return s.shape == shape })
		if i < 0 {
			shapes = append(shapes, slow{shape: shape})
			i = len(shapes) - 1
		}
		shapes[i].worst = max(shapes[i].worst, ms/base.P50MS)
		shapes[i].counts++
	}
	var out []string
	for _, s := range shapes[:min(len(shapes), 3)] {
		if s.counts > 1 {
			out = append(out, fmt.Sprintf("%s (%d runs, up to %.0fx)", model.Clip(s.shape, 40), s.counts, s.worst))
		} else {
			out = append(out, fmt.Sprintf("%s %.0fx", model.Clip(s.shape, 40), s.worst))
		}
	}
	return out, runs
}

func looksLikeSQL(verb string) bool {
	switch verb {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "UPSERT", "CALL", "REPLACE":
		return true
	}
	return false
}

package analyze

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
)

// A worker pool is invisible in spans, but its shape is not: N calls to the
// same target under one parent, never more than K < N running at once, the
// pool full while calls wait, and every call beyond the first K starting as
// an earlier one ends (it took that call's worker).

// poolFindings reports pool-starved fan-outs in t.
func (d *LockContention) poolFindings(t *Trace, total uint64) []Finding {
	minCalls := max(d.MinPoolCalls, 3)
	var out []Finding
	for _, p := range t.Nodes {
		if len(p.Children) < minCalls {
			continue
		}
		groups := groupChildren(p, func(c *Node) bool { return pooledCall(c) != nil && !asyncEdge(p, c) },
			func(c *Node) [2]string {
				svc, op := CallTarget(t, pooledCall(c))
				return [2]string{svc, op}
			})
		for _, calls := range groups {
			if len(calls) < minCalls {
				continue
			}
			if f, ok := d.poolFinding(t, p, calls, total); ok {
				out = append(out, f)
			} else if f, ok := d.calleePoolFinding(t, p, calls, total); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

// pooledCall is the call a child of the parent makes: the child itself,
// or the one call inside a span wrapping each task (a worker that opens
// "FindRoute" around its HTTP call). The wrapper holds the worker, so its
// times are the ones measured.
func pooledCall(c *Node) *Node {
	if IsCall(c) {
		return c
	}
	if len(c.Children) == 1 && IsCall(c.Children[0]) && c.Span.Service == c.Children[0].Span.Service {
		return c.Children[0]
	}
	return nil
}

// poolShape is what the calls' timing says about a pool.
type poolShape struct {
	k, queued         int
	saturation        float64
	window, longest   uint64
	totalQueue        uint64
	firstStart, lastE uint64
}

// measurePool finds the concurrency limit K of calls (sorted by start) and
// how many calls waited for a worker. tol absorbs rounded and jittered
// clocks: two calls overlapping by less than tol did not run together.
func measurePool(calls []*Node, tol uint64) poolShape {
	type edge struct {
		at    uint64
		delta int
	}
	edges := make([]edge, 0, 2*len(calls))
	sh := poolShape{firstStart: calls[0].Start()}
	lastStart := calls[0].Start()
	for _, c := range calls {
		sh.lastE = max(sh.lastE, c.End())
		lastStart = max(lastStart, c.Start())
		sh.longest = max(sh.longest, c.Duration())
		if c.End() > c.Start()+tol {
			edges = append(edges, edge{c.Start() + tol, 1}, edge{c.End(), -1})
		}
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta < edges[j].delta // ends before starts
	})
	running := 0
	for _, e := range edges {
		running += e.delta
		sh.k = max(sh.k, running)
	}
	sh.window = sh.lastE - sh.firstStart
	// Saturation: time at K between the first and the last call start,
	// while work was still waiting to be picked up.
	if lastStart > sh.firstStart+tol {
		var full uint64
		running, prev := 0, sh.firstStart
		for _, e := range edges {
			at := min(e.at, lastStart)
			if running >= sh.k && at > prev {
				full += at - prev
			}
			prev = max(prev, at)
			running += e.delta
		}
		// The handoff instants (tol wide each) count as full.
		full += uint64(max(len(calls)-sh.k, 0)) * tol
		sh.saturation = min(float64(full)/float64(lastStart-sh.firstStart), 1)
	}
	for i, c := range calls {
		if i < sh.k {
			continue
		}
		handoff := false
		for j, o := range calls {
			if j != i && o.Start() < c.Start() && o.End() <= c.Start()+tol && o.End()+tol >= c.Start() {
				handoff = true
				break
			}
		}
		if handoff {
			sh.queued++
			sh.totalQueue += c.Start() - sh.firstStart
		}
	}
	return sh
}

func (d *LockContention) poolFinding(t *Trace, p *Node, calls []*Node, total uint64) (Finding, bool) {
	tol := d.handoffTolerance(calls)
	sh := measurePool(calls, tol)
	n := len(calls)
	if !d.poolFull(sh, n) {
		return Finding{}, false
	}
	// A pool shared across requests keeps the first call waiting while
	// other requests' calls hold every worker: the parent then sits idle
	// from its previous child's end to the first call's start.
	lead := leadingIdle(p, calls[0], sh.firstStart)
	inWindow := subSat(sh.window, sh.longest)
	wait := lead + inWindow
	impact := min(inWindow, critWithin(t, p, sh.firstStart, sh.lastE)) + critWithin(t, p, sh.firstStart-lead, sh.firstStart)
	sev, ok := d.severity(impact, total)
	if !ok {
		return Finding{}, false
	}
	svc, op, ids, pool := poolEvidence(t, p, calls, sh, wait, sh.totalQueue, sh.window)
	pool.LeadingWaitMS = roundMS(lead)
	ev := LockContentionEvidence{
		Mechanism: "pool_fan_out", Resource: "worker_pool", Span: RefOf(t, p), WaitMS: roundMS(wait),
		SpanSharePct: pool.ParentSharePct, RequestSharePct: sharePct(impact, total), Pool: pool,
	}
	target := svc + " " + opName(pooledCall(calls[0]), op)
	title := fmt.Sprintf("worker pool of %d for %d calls: %s → %s ran at most %d at a time, queueing %.0f ms (%.0f%% of the request)",
		sh.k, n, p.Span.Service, target, sh.k, NS(wait), ev.RequestSharePct)
	reason := fmt.Sprintf("%s %s sends %d calls to %s through a pool that runs only %d at once.", p.Span.Service,
		displayOp(p), n, target, sh.k)
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: append([]string{p.Span.SpanID.String()}, ids...),
		ImpactMS: roundMS(impact), Evidence: ev, Fix: poolFixText(sh.k, n, target),
		Culprit: &Culprit{Service: p.Span.Service, Operation: displayOp(p), SpanID: p.Span.SpanID.String(), Reason: reason},
	}, true
}

// leadingIdle is the time before first (starting at start) during which p
// ran no child: from the end of the latest child that ended before it, or
// from p's start. 0 when another child was still running.
func leadingIdle(p, first *Node, start uint64) uint64 {
	from := p.Start()
	for _, c := range p.Children {
		if c == first || c.Start() >= start {
			break
		}
		if c.End() > start {
			return 0
		}
		from = max(from, c.End())
	}
	return subSat(start, from)
}

// calleePoolFinding reads the pool from the callee's side: the calls left
// together (their spans overlap), but the callee's server spans ran at
// most K at a time, each next one starting as another ended. The limit
// sits between the two: the caller's HTTP client allows K connections to
// the host (Node's http.Agent maxSockets, an undici Agent's connections,
// Go's MaxConnsPerHost) and its call spans include the wait for one, or
// the callee runs K workers.
func (d *LockContention) calleePoolFinding(t *Trace, p *Node, calls []*Node, total uint64) (Finding, bool) {
	servers := make([]*Node, 0, len(calls))
	for _, c := range calls {
		e := calleeEntry(pooledCall(c))
		if e == nil || len(servers) > 0 && e.Span.Service != servers[0].Span.Service {
			return Finding{}, false
		}
		servers = append(servers, e)
	}
	slices.SortStableFunc(servers, func(a, b *Node) int { return cmp.Compare(a.Start(), b.Start()) })
	tol := d.handoffTolerance(servers)
	sh := measurePool(servers, tol)
	n := len(servers)
	if !d.poolFull(sh, n) || measurePool(calls, tol).k <= sh.k {
		return Finding{}, false
	}
	first := calls[0].Start()
	for _, c := range calls {
		first = min(first, c.Start())
	}
	// Each call's time before its server started is its wait for a slot.
	var queued uint64
	for _, c := range calls {
		if e := calleeEntry(pooledCall(c)); e != nil {
			queued += subSat(e.Start(), c.Start())
		}
	}
	wait := subSat(sh.window, sh.longest) + subSat(sh.firstStart, first)
	impact := min(wait, critWithin(t, p, first, sh.lastE))
	sev, ok := d.severity(impact, total)
	if !ok {
		return Finding{}, false
	}
	svc, op, ids, pool := poolEvidence(t, p, calls, sh, wait, queued, sh.lastE-first)
	pool.AtCallee = true
	ev := LockContentionEvidence{
		Mechanism: "pool_fan_out", Resource: "connection_pool", Span: RefOf(t, p), WaitMS: roundMS(wait),
		SpanSharePct: pool.ParentSharePct, RequestSharePct: sharePct(impact, total), Pool: pool,
	}
	target := svc + " " + opName(pooledCall(calls[0]), op)
	title := fmt.Sprintf("%d calls from %s to %s left together but %s served at most %d at a time, queueing %.0f ms "+
		"(%.0f%% of the request): a limit of %d between them", n, p.Span.Service, target, svc, sh.k, NS(wait),
		ev.RequestSharePct, sh.k)
	reason := fmt.Sprintf("%s %s sends %d calls to %s at once; only %d reach it at a time.", p.Span.Service,
		displayOp(p), n, target, sh.k)
	fix := fmt.Sprintf("The calls wait for one of %d slots between %s and %s: most often the HTTP client's "+
		"connections per host (Node's http.Agent maxSockets, an undici Agent's connections, Go's "+
		"Transport.MaxConnsPerHost); raise it to at least %d or batch the calls. If %s runs only %d workers, size "+
		"it for the concurrency it serves.", sh.k, p.Span.Service, svc, n, svc, sh.k)
	return Finding{
		Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: append([]string{p.Span.SpanID.String()}, ids...),
		ImpactMS: roundMS(impact), Evidence: ev, Fix: fix,
		Culprit: &Culprit{Service: p.Span.Service, Operation: displayOp(p), SpanID: p.Span.SpanID.String(), Reason: reason},
	}, true
}

// poolEvidence is what a pool finding reports of its calls: their target,
// their span ids, and the pool's shape.
func poolEvidence(t *Trace, p *Node, calls []*Node, sh poolShape, wait, queued, window uint64) (svc, op string, ids []string, pool *PoolFanOutEvidence) {
	svc, op = CallTarget(t, pooledCall(calls[0]))
	ids = make([]string, 0, len(calls))
	for _, c := range calls {
		ids = append(ids, spanIDOf(t, c))
	}
	pool = &PoolFanOutEvidence{
		Target: svc, Operation: op, Calls: len(calls), Concurrency: sh.k, QueuedCalls: sh.queued,
		TotalQueueMS: roundMS(queued), WindowMS: roundMS(window), LongestCallMS: roundMS(sh.longest),
		ParentSharePct: sharePct(wait, p.Duration()), SpanIDs: ids,
	}
	return svc, op, ids, pool
}

// handoffTolerance is how close a queued call's start must be to an
// earlier call's end to count as taking its worker: HandoffToleranceMS, or
// HandoffToleranceShare of the median call when that is more.
func (d *LockContention) handoffTolerance(calls []*Node) uint64 {
	durs := make([]uint64, len(calls))
	for i, c := range calls {
		durs[i] = c.Duration()
	}
	slices.Sort(durs)
	return max(uint64(d.HandoffToleranceMS*1e6), uint64(d.HandoffToleranceShare*float64(durs[len(durs)/2])))
}

// poolFull reports a shape that shows a pool: K of n calls at a time (2 ≤
// K < n), four in five of the calls that had to queue starting as another
// ended, the pool full most of the time.
func (d *LockContention) poolFull(sh poolShape, n int) bool {
	return sh.k >= 2 && sh.k < n && sh.queued*5 >= (n-sh.k)*4 && sh.saturation >= d.MinSaturation
}

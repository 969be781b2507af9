package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// A finding says where a problem was observed; its culprit says where to
// fix it. The two differ whenever the symptom shows up one hop away from
// its cause: a caller's span stretches because the callee started late, a
// retry loop burns the caller's time because the dependency fails. Each
// kind has one rule here (docs/patterns.md lists them); a detector that
// knows better sets Finding.Culprit itself and the rule is skipped.

// culpritRule derives the culprit of one finding from its evidence and the
// trace; nil when the evidence does not name a usable span.
type culpritRule func(t *Trace, f *Finding) *Culprit

var culpritRules = map[string]culpritRule{
	"broken_propagation":  brokenPropagationCulprit,
	"cache_miss":          cacheMissCulprit,
	"consumer_lag":        consumerLagCulprit,
	"error_origin":        errorOriginCulprit,
	"fan_out":             fanOutCulprit,
	"idle_gap":            idleGapCulprit,
	"instrumentation_gap": instrumentationGapCulprit,
	"n_plus_one_query":    nPlusOneCulprit,
	"partial_failure":     partialFailureCulprit,
	"poison_message":      poisonMessageCulprit,
	"retry_storm":         retryStormCulprit,
	"sequential_calls":    sequentialCallsCulprit,
	"slow_dependency":     slowDependencyCulprit,
	"slow_query":          slowQueryCulprit,
	"swallowed_error":     swallowedErrorCulprit,
	"timeout_cascade":     timeoutCascadeCulprit,
	"timeout_mismatch":    timeoutMismatchCulprit,
	// lock_contention's detector names the lock or pool owner itself; the
	// fallback (the waiting span's service) applies only if it did not.
}

// assignCulprits fills Culprit on every finding whose detector left it nil.
func assignCulprits(t *Trace, findings []Finding) {
	for i := range findings {
		f := &findings[i]
		if f.Culprit != nil {
			continue
		}
		if rule := culpritRules[f.Kind]; rule != nil {
			f.Culprit = rule(t, f)
		}
		if f.Culprit == nil {
			f.Culprit = firstSpanCulprit(t, f)
		}
	}
}

// firstSpanCulprit blames the first span of the finding: the kinds without
// a rule list the span that shows the problem first.
func firstSpanCulprit(t *Trace, f *Finding) *Culprit {
	for _, id := range f.SpanIDs {
		if n := nodeByHex(t, id); n != nil {
			return culpritAt(t, n, fmt.Sprintf("%s shows the %s problem.", nodeLabel(t, n), f.Kind))
		}
	}
	return nil
}

// culpritAt blames the code of the service that owns n. A call is named
// by what it calls ("call to inventory POST /v1/reservations"): its span
// name is often just "POST".
func culpritAt(t *Trace, n *Node, reason string) *Culprit {
	op := displayOp(n)
	if IsCall(n) {
		svc, target := CallTarget(t, n)
		op = "call to " + svc + " " + model.Clip(target, 80)
	}
	return &Culprit{Service: n.Span.Service, Operation: op, SpanID: n.Span.SpanID.String(), Reason: reason}
}

// culpritCallee blames what a call talks to: the callee's entry span when
// it is in the trace, else the target as the caller names it.
func culpritCallee(t *Trace, call *Node, reason string) *Culprit {
	if !IsCall(call) {
		return culpritAt(t, call, reason)
	}
	svc, op := CallTarget(t, call)
	if svc == unknownPeer {
		// Nothing names the callee: the caller's code is all there is to go to.
		return culpritAt(t, call, reason)
	}
	c := &Culprit{Service: svc, Operation: op, SpanID: call.Span.SpanID.String(), Reason: reason}
	if e := calleeEntry(call); e != nil {
		c.SpanID = e.Span.SpanID.String()
	}
	return c
}

// refNode finds the span an evidence reference names.
func refNode(t *Trace, r *SpanRef) *Node {
	if r == nil {
		return nil
	}
	return nodeByHex(t, r.SpanID)
}

func brokenPropagationCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(BrokenPropagationEvidence)
	if !ok {
		return nil
	}
	switch ev.Signal {
	case "leaked_context":
		if n := refNode(t, ev.Call); n != nil {
			return culpritAt(t, n, fmt.Sprintf("%s began this call long after its request had answered: its client (or the "+
				"code around it) ran it in that request's context.", n.Span.Service))
		}
	case "extra_root":
		// The callee received the call but did not continue its context.
		if n := refNode(t, ev.Span); n != nil {
			return culpritAt(t, n, fmt.Sprintf("%s started a new trace instead of continuing its caller's context: its server "+
				"instrumentation does not extract traceparent (or uses another propagator).", n.Span.Service))
		}
	case "missing_parent":
		if n := refNode(t, ev.Call); n != nil {
			return culpritAt(t, n, fmt.Sprintf("%s's spans name a parent that never arrived; %s was calling it then and its span "+
				"carrying that context was not exported (or a proxy rewrote the header).", ev.Callee, n.Span.Service))
		}
		if n := refNode(t, ev.Span); n != nil {
			if k := n.Span.Kind; k != model.KindServer && k != model.KindConsumer {
				return culpritAt(t, n, fmt.Sprintf("%s's spans name a parent of their own process that never arrived: %s did "+
					"not export it (often its entry span).", n.Span.Service, n.Span.Service))
			}
			return culpritAt(t, n, fmt.Sprintf("%s's parent span never arrived: whoever called it did not export the span it "+
				"propagated.", n.Span.Service))
		}
	default:
		if n := refNode(t, ev.Call); n != nil {
			return culpritAt(t, n, fmt.Sprintf("the call from %s reached %s without trace context: the client side of this hop "+
				"must inject traceparent.", ev.Caller, ev.Callee))
		}
	}
	return nil
}

func cacheMissCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(CacheMissEvidence)
	if !ok {
		return nil
	}
	n := refNode(t, &ev.Lookup)
	if n == nil {
		return nil
	}
	owner := n
	if n.Parent != nil {
		owner = n.Parent
	}
	return culpritAt(t, owner, fmt.Sprintf("%s's cache-aside code missed on %s and paid %.0f ms for the fallback; its TTL, "+
		"write-back and warming live there.", owner.Span.Service, nonEmpty(ev.KeyShape, n.Span.Name), ev.CostMS))
}

func consumerLagCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(ConsumerLagEvidence)
	if !ok {
		return nil
	}
	n := refNode(t, &ev.Consumer)
	if n == nil {
		return nil
	}
	c := culpritAt(t, n, fmt.Sprintf("the message waited %.0f ms in %s before %s took it: the consumer%s is not keeping up "+
		"with its queue.", ev.LagMS, nonEmpty(ev.Destination, "the queue"), n.Span.Service, groupText(ev.ConsumerGroup)))
	if ev.Destination != "" {
		c.Operation = "consume " + ev.Destination
	}
	return c
}

func groupText(g string) string {
	if g == "" {
		return ""
	}
	return " group " + g
}

func errorOriginCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(ErrorOriginEvidence)
	if !ok {
		return nil
	}
	o := refNode(t, &ev.Origin)
	if o == nil {
		return nil
	}
	what := nonEmpty(originalErrorType(ev.ExceptionType, ev.ExceptionMessage), "the error")
	if IsCall(o) && poolExhausted(ev.ExceptionType+" "+ev.ExceptionMessage) {
		// The call never reached its target: the caller's own pool ran dry.
		return culpritAt(t, o, fmt.Sprintf("%s's connection pool had no connection to give (%s): the call never reached "+
			"its target; the pool's size and the work holding its connections are the place to fix.", o.Span.Service, what))
	}
	if refused := statementRefused(o); refused != "" {
		// The database worked and answered: the statement or the schema
		// it expects is wrong, and both live with the caller.
		svc, _ := CallTarget(t, o)
		return culpritAt(t, o, fmt.Sprintf("%s refused %s's statement (%s): the query or the schema it expects is the place "+
			"to fix; the database only reported it, and every failed layer above only passed it up.", svc, o.Span.Service, model.Clip(refused, 160)))
	}
	if lock := lockError(o); lock != "" {
		// The database refereed a conflict between transactions; the
		// transaction that lost it, which takes and holds the locks, is
		// where the fix goes, and the one it collided with is named.
		with := "another transaction"
		if holder, call := lockHolder(t, o); holder != nil {
			with = fmt.Sprintf("%s's transaction, which held the lock across %s (%s)", holder.Span.Service, spanLabel(t, call),
				fmtDur(call.Duration()))
		} else if peer := lockPeerOf(t, o); peer != nil {
			with = fmt.Sprintf("%s's transaction (%s, which waited %s for the same rows)", peer.Span.Service, spanLabel(t, peer),
				fmtDur(min(peer.End(), o.End())-peer.Start()))
		}
		return culpritAt(t, o, fmt.Sprintf("%s's transaction lost a lock conflict (%s) with %s: the cause is the "+
			"order and length of the transactions that lock the same rows, not the database.", o.Span.Service,
			model.Clip(lock, 60), with))
	}
	if IsCall(o) && calleeEntry(o) == nil {
		svc, _ := CallTarget(t, o)
		return culpritCallee(t, o, fmt.Sprintf("the failure starts at the call to %s (%s), which left no spans of its own; "+
			"every failed layer above only passed it up.", svc, what))
	}
	if IsCall(o) && IsTimeoutLike(o.Span) {
		// The caller gave up waiting; the callee that did not answer in
		// time is where the time went.
		svc, _ := CallTarget(t, o)
		return slowestCulprit(t, o, fmt.Sprintf("the call to %s timed out (%s) while %s was still working: the slow callee "+
			"is the cause, the layers above only passed the timeout up.", svc, what, svc))
	}
	if waitedOn(o) != nil {
		// A proxy or gateway that answered 504: it gave up on a callee
		// that was still working and failed nothing of its own (Envoy's
		// route timeout over a frontend that never answered).
		return slowestCulprit(t, o, fmt.Sprintf("%s gave up after %s (%s) while the work below it was still running: "+
			"the slow callee is the cause, not the layer that timed out.", o.Span.Service, fmtDur(o.Duration()), what))
	}
	if envoy, cluster, upstream := EnvoyResponse(o.Span); envoy != "" && upstream {
		return culpritAt(t, o, fmt.Sprintf("Envoy answered for %s (%s): what it routes to never answered, the proxy "+
			"only reported it.", nonEmpty(cluster, "its upstream"), envoy))
	}
	return culpritAt(t, o, fmt.Sprintf("the failure starts here (%s) while none of its own calls failed; every failed layer "+
		"above only passed it up.", what))
}

func fanOutCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(FanOutEvidence)
	if !ok {
		return nil
	}
	p := refNode(t, &ev.Caller)
	if p == nil {
		return nil
	}
	if ev.CapacityBound {
		return culpritAt(t, p, fmt.Sprintf("%s's code sends %d calls to %s %s at once and they slow each other down there; "+
			"fewer, larger calls (or fewer at once) is the thing to try.", p.Span.Service, ev.Count, ev.Target, model.Clip(ev.Operation, 60)))
	}
	return culpritAt(t, p, fmt.Sprintf("%s's code calls %s %s once per item (%d calls); the loop is the thing to batch.",
		p.Span.Service, ev.Target, model.Clip(ev.Operation, 60), ev.Count))
}

func idleGapCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(IdleGapEvidence)
	if !ok {
		return nil
	}
	n := refNode(t, &ev.Span)
	if n == nil {
		return nil
	}
	switch ev.LikelyCause {
	case "network_or_queueing":
		if after := refNode(t, ev.After); after != nil {
			return culpritAt(t, after, fmt.Sprintf("%s's span started %.0f ms after %s called it: the time was lost in the "+
				"network or the request queue in front of %s, not in the caller.", after.Span.Service, ev.GapMS,
				n.Span.Service, after.Span.Service))
		}
	case "queueing":
		if after := refNode(t, ev.After); after != nil {
			return culpritAt(t, after, fmt.Sprintf("%s's worker took the message %.0f ms after %s sent it: it waited in the queue in "+
				"front of %s's workers (too few, busy or not running).", after.Span.Service, ev.GapMS, n.Span.Service, after.Span.Service))
		}
	case "pool_wait":
		return culpritAt(t, n, fmt.Sprintf("%s waited %.0f ms for a pooled database connection: its pool is too small or "+
			"held by slow work.", n.Span.Service, ev.GapMS))
	case "connection_setup":
		return culpritAt(t, n, fmt.Sprintf("%s opened a new database connection for this request and spent %.0f ms "+
			"establishing it: connecting per request is the cost, not a query.", n.Span.Service, ev.GapMS))
	case "retry_backoff", "poll_interval":
		if before := refNode(t, ev.Before); before != nil {
			why := "failed, and %s waited %.0f ms before calling it again: the failure is the cause, the backoff its cost."
			if ev.LikelyCause == "poll_interval" {
				why = "was still working (202), and %s waited %.0f ms before polling it again: the wait is for that work."
			}
			svc, _ := CallTarget(t, before)
			return culpritCallee(t, before, fmt.Sprintf("%s "+why, svc, n.Span.Service, ev.GapMS))
		}
	}
	return culpritAt(t, n, fmt.Sprintf("%.0f ms inside %s ran no instrumented child: the wait or the work is in %s's own code.",
		ev.GapMS, displayOp(n), n.Span.Service))
}

func instrumentationGapCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(InstrumentationGapEvidence)
	if !ok || len(ev.Spans) == 0 {
		return nil
	}
	n := refNode(t, &ev.Spans[0])
	if n == nil {
		return nil
	}
	c := culpritAt(t, n, fmt.Sprintf("%s's telemetry has the %s problem (%d spans): its instrumentation or SDK "+
		"configuration is the place to change.", n.Span.Service, strings.ReplaceAll(ev.Problem, "_", " "), ev.SpanCount))
	if len(ev.Services) > 1 {
		c.Reason = fmt.Sprintf("%d services (%s) have the %s problem; %s is the first.", len(ev.Services),
			strings.Join(ev.Services, ", "), strings.ReplaceAll(ev.Problem, "_", " "), n.Span.Service)
	}
	return c
}

func nPlusOneCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(NPlusOneEvidence)
	if !ok {
		return nil
	}
	p := refNode(t, &ev.Parent)
	if p == nil {
		return nil
	}
	return culpritAt(t, p, fmt.Sprintf("%s's code runs one %s query per item (%d times); the loop or the ORM mapping "+
		"there is to fix, not the database.", p.Span.Service, ev.DBSystem, ev.Count))
}

func partialFailureCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(PartialFailureEvidence)
	if !ok {
		return nil
	}
	p := refNode(t, &ev.Parent)
	if p == nil {
		return nil
	}
	var failing []string
	for _, b := range ev.Failing {
		failing = append(failing, b.Target)
	}
	return culpritAt(t, p, fmt.Sprintf("%s failed as a whole because %s failed, throwing away %d healthy branches: its "+
		"all-or-nothing error handling is the place to fix.", p.Span.Service, strings.Join(failing, ", "), len(ev.Healthy)))
}

// firstFailedAttempt returns the span of the first failed of n attempts,
// else of the first attempt.
func firstFailedAttempt(t *Trace, n int, attempt func(i int) (*SpanRef, bool)) *Node {
	for i := 0; i < n; i++ {
		if ref, failed := attempt(i); failed {
			return refNode(t, ref)
		}
	}
	if n == 0 {
		return nil
	}
	ref, _ := attempt(0)
	return refNode(t, ref)
}

func poisonMessageCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(PoisonMessageEvidence)
	if !ok || len(ev.Attempts) == 0 {
		return nil
	}
	n := firstFailedAttempt(t, len(ev.Attempts), func(i int) (*SpanRef, bool) {
		return &ev.Attempts[i].SpanRef, ev.Attempts[i].Failed
	})
	if n == nil {
		return nil
	}
	if call := refNode(t, ev.FailingCall); ev.Recovered && call != nil && ev.DeadLetter == nil {
		svc, op := CallTarget(t, call)
		return culpritCallee(t, call, fmt.Sprintf("%s failed the message %d times through %s %s, then a redelivery "+
			"succeeded: the message is fine, %s's transient failures are the cause.", ev.Consumer, ev.FailedAttempts, svc,
			model.Clip(op, 60), svc))
	}
	c := culpritAt(t, n, fmt.Sprintf("%s fails on this message every time (%d attempts): its handling of the message "+
		"(or the producer that wrote it) is to fix; retrying cannot.", ev.Consumer, ev.FailedAttempts))
	if ev.Destination != "" {
		c.Operation = "consume " + ev.Destination
	}
	return c
}

func retryStormCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(RetryStormEvidence)
	if !ok || len(ev.Attempts) == 0 {
		return nil
	}
	attempt := firstFailedAttempt(t, len(ev.Attempts), func(i int) (*SpanRef, bool) {
		return &ev.Attempts[i].SpanRef, ev.Attempts[i].Failed
	})
	if attempt == nil {
		return nil
	}
	// Nested retries: the innermost layer's target is what fails; the
	// outer layers retry because the inner ones gave up.
	if deepest := innermostFailedAttempt(t, f, ev); deepest != nil && deepest != attempt {
		svc, _ := CallTarget(t, deepest)
		return culpritCallee(t, deepest, fmt.Sprintf("nested retries multiply to %d calls per request and the innermost "+
			"layer's calls to %s fail (%s): %s's failures are the cause, the outer layers only retry them.",
			ev.Amplification, svc, model.Clip(attemptOutcome(deepest, true), 60), svc))
	}
	if lockError(attempt) != "" {
		// The database only refereed the conflict between transactions:
		// the caller's transaction, which holds and takes the locks, is
		// where the fix goes.
		if caller := refNode(t, &ev.Caller); caller != nil {
			return culpritAt(t, caller, fmt.Sprintf("%s's transaction lost a lock conflict (%s) and was retried: "+
				"the cause is the order and length of the transactions that lock the same rows, not %s.",
				caller.Span.Service, model.Clip(lockError(attempt), 60), ev.Target))
		}
	}
	return culpritCallee(t, attempt, fmt.Sprintf("%d of %d attempts to %s failed (%s): the retries react to %s's "+
		"failures, which are the cause.", ev.FailedCount, len(ev.Attempts), ev.Target, model.Clip(ev.Attempts[0].Outcome, 60),
		ev.Target))
}

func sequentialCallsCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(SequentialCallsEvidence)
	if !ok {
		return nil
	}
	p := refNode(t, &ev.Parent)
	if p == nil {
		return nil
	}
	return culpritAt(t, p, fmt.Sprintf("if the %d calls do not need each other's answers, %s's code awaits them one by one "+
		"where it could run them together.", len(ev.Calls), p.Span.Service))
}

func slowDependencyCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(SlowDependencyEvidence)
	if !ok {
		return nil
	}
	n := refNode(t, &ev.Call)
	if n == nil {
		return nil
	}
	return culpritCallee(t, n, fmt.Sprintf("the call to %s took %.0f ms, %.0f%% of its caller, and nothing below it "+
		"shows the time: %s itself is slow.", ev.Peer, ev.DurationMS, ev.SharePct, ev.Peer))
}

func slowQueryCulprit(t *Trace, f *Finding) *Culprit {
	if len(f.SpanIDs) == 0 {
		return nil
	}
	n := nodeByHex(t, f.SpanIDs[0])
	if n == nil {
		return nil
	}
	return culpritCallee(t, n, fmt.Sprintf("the statement itself took %.0f ms in %s: its plan, indexes or locks are "+
		"the place to look.", NS(n.Duration()), nonEmpty(DBSystem(n.Span), "the database")))
}

func swallowedErrorCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(SwallowedErrorEvidence)
	if !ok {
		return nil
	}
	e := refNode(t, &ev.Entry)
	if e == nil {
		return nil
	}
	if clientError(ev.HTTPStatus) {
		return culpritAt(t, e, fmt.Sprintf("%s answered HTTP %d, a client error, though %d call(s) below it failed: its error "+
			"handling blames the caller for its own failure and hides it from error rates.", e.Span.Service, ev.HTTPStatus, len(ev.Failed)))
	}
	return culpritAt(t, e, fmt.Sprintf("%s answered success though %d call(s) below it failed: its error handling hides "+
		"the failure from callers and error rates.", e.Span.Service, len(ev.Failed)))
}

func timeoutCascadeCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(TimeoutCascadeEvidence)
	if !ok {
		return nil
	}
	o := refNode(t, &ev.Origin.SpanRef)
	if o == nil {
		return nil
	}
	if holder, call := lockHolder(t, o); holder != nil && holder.Parent != nil {
		return culpritAt(t, holder.Parent, fmt.Sprintf("%s waited for a row lock until the database gave up (%s) while "+
			"%s's transaction held the lock across %s (%s): that transaction, not the database, is the cause.",
			nodeLabel(t, o), model.Clip(lockError(o), 60), holder.Span.Service, spanLabel(t, call), fmtDur(call.Duration())))
	}
	reason := fmt.Sprintf("it consumed the %.0f ms budget; the %d layers above only waited for it and passed the "+
		"timeout up.", ev.TimeoutMS, len(ev.Layers)-1)
	return slowestCulprit(t, o, reason)
}

// lockHolder finds, for a statement the database stopped on a lock
// conflict, a statement of the same shape that got the lock and whose
// transaction held it across a remote call while the victim waited, and
// that call (heldLockAcross); nil when the trace does not show one.
func lockHolder(t *Trace, victim *Node) (holder, call *Node) {
	if lockError(victim) == "" {
		return nil, nil
	}
	shape := DBShape(victim.Span)
	var best uint64
	for _, m := range t.Nodes {
		if m == victim || Failed(m) || !IsDB(m) || m.End() > victim.End() || DBShape(m.Span) != shape {
			continue
		}
		c := heldLockAcross(m)
		if c == nil {
			continue
		}
		lo, hi := max(c.Start(), victim.Start()), min(c.End(), victim.End())
		if hi > lo && hi-lo > best {
			best, holder, call = hi-lo, m, c
		}
	}
	return holder, call
}

// slowestCulprit blames where a slow span's time went: the callee of a
// call, and below that the span that holds nearly all of it (a timed-out
// call to a service that spent 99 % of the wait in one query blames the
// query's database, not the service).
func slowestCulprit(t *Trace, n *Node, reason string) *Culprit {
	start := n
	if IsCall(n) {
		if start = calleeEntry(n); start == nil {
			return culpritCallee(t, n, reason)
		}
	}
	leaf := dominantDescendant(start)
	if leaf == start {
		if IsCall(n) {
			return culpritCallee(t, n, reason)
		}
		return culpritAt(t, n, reason)
	}
	share := 100 * float64(min(leaf.Duration(), start.Duration())) / float64(max(start.Duration(), 1))
	why := fmt.Sprintf("%s; %s spent %.0f%% of its %s in %s, which is where the time went.", strings.TrimSuffix(reason, "."),
		start.Span.Service, share, fmtDur(start.Duration()), nodeLabel(t, leaf))
	if IsCall(leaf) {
		return culpritCallee(t, leaf, why)
	}
	return culpritAt(t, leaf, why)
}

// dominantDescendant walks down from n while one child covers at least
// 90 % of its parent's time, and returns where it stops.
func dominantDescendant(n *Node) *Node {
	cur := n
	for {
		var best *Node
		for _, c := range cur.Children {
			if !asyncEdge(cur, c) && (best == nil || c.Duration() > best.Duration()) {
				best = c
			}
		}
		if best == nil || 10*min(best.Duration(), cur.Duration()) < 9*cur.Duration() {
			return cur
		}
		cur = best
	}
}

func timeoutMismatchCulprit(t *Trace, f *Finding) *Culprit {
	ev, ok := f.Evidence.(TimeoutMismatchEvidence)
	if !ok {
		return nil
	}
	if in := refNode(t, ev.InnerTimeout); in != nil {
		return culpritAt(t, in, fmt.Sprintf("%s's call waited %.0f ms, longer than the %.0f ms its own caller waited: its "+
			"timeout is set above its caller's.", in.Span.Service, ev.InnerWaitedMS, ev.ParentWaitedMS))
	}
	c := refNode(t, &ev.Child)
	if c == nil {
		return nil
	}
	return culpritAt(t, c, fmt.Sprintf("%s kept working %.0f ms after its caller gave up: it does not receive or honour "+
		"the caller's deadline.", c.Span.Service, ev.InvertedByMS))
}

// innermostFailedAttempt returns a failed attempt of the deepest nested
// retry layer, or nil when the storm has one layer.
func innermostFailedAttempt(t *Trace, f *Finding, ev RetryStormEvidence) *Node {
	if len(ev.Layers) < 2 || len(f.SpanIDs) <= len(ev.Attempts) {
		return nil
	}
	var best *Node
	for _, id := range f.SpanIDs[len(ev.Attempts):] {
		n := nodeByHex(t, id)
		if n != nil && attemptFailed(n) && (best == nil || n.Depth > best.Depth) {
			best = n
		}
	}
	return best
}

// poolExhausted: an error that says a client-side pool ran out
// (HikariPool "Connection is not available", "pool exhausted", ...).
func poolExhausted(text string) bool {
	l := strings.ToLower(text)
	return strings.Contains(l, "pool") && (strings.Contains(l, "exhaust") || strings.Contains(l, "not available") ||
		strings.Contains(l, "timed out") || strings.Contains(l, "timeout") || strings.Contains(l, "in use"))
}

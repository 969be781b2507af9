package analyze

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// RetryStorm finds a parent calling the same target again after a failed or
// timed-out attempt, and multiplies the attempts of nested retry layers
// (3 x 3 = 9 calls per user request).
type RetryStorm struct {
	MinAttempts int `yaml:"min_attempts"`
	// A chain of fewer than AlwaysReportAttempts attempts is reported only
	// when the failed attempts and back-off cost at least MinWastedMS or
	// every attempt failed: one quick retry that succeeded is a retry
	// policy doing its job.
	AlwaysReportAttempts int     `yaml:"always_report_attempts"`
	MinWastedMS          float64 `yaml:"min_wasted_ms"`
	// OverlapToleranceMS: an attempt may start this much before the previous
	// one ended (clock granularity) and still count as a retry.
	OverlapToleranceMS float64 `yaml:"overlap_tolerance_ms"`
}

// NewRetryStorm returns the detector with docs/patterns.md defaults.
func NewRetryStorm() *RetryStorm {
	return &RetryStorm{MinAttempts: 2, AlwaysReportAttempts: 3, MinWastedMS: 100, OverlapToleranceMS: 1}
}

func init() { Register(func() Detector { return NewRetryStorm() }) }

// Kind implements Detector.
func (*RetryStorm) Kind() string { return "retry_storm" }

// RetryAttempt is one attempt of a retry chain.
type RetryAttempt struct {
	SpanRef
	Failed  bool   `json:"failed"`
	Outcome string `json:"outcome"`
}

// RetryLayer is one level of nested retries.
type RetryLayer struct {
	Service   string `json:"service"`
	Operation string `json:"operation"`
	// Attempts is the most attempts seen per caller at this layer.
	Attempts int `json:"attempts"`
	// Calls is how many calls this layer made in the whole trace.
	Calls int `json:"calls"`
}

// RetryStormEvidence is the evidence of a retry_storm finding.
type RetryStormEvidence struct {
	Target        string         `json:"target"`
	Operation     string         `json:"operation"`
	Caller        SpanRef        `json:"caller"`
	Attempts      []RetryAttempt `json:"attempts"`
	FailedCount   int            `json:"failed_count"`
	FinalOutcome  string         `json:"final_outcome"`
	Layers        []RetryLayer   `json:"layers"`
	Amplification int            `json:"amplification"`
	WastedMS      float64        `json:"wasted_ms"`
}

type retryChain struct {
	parent  *Node
	service string
	op      string
	nodes   []*Node
	outer   *retryChain
	depth   int
	nested  []*retryChain
}

// attemptFailed: the call failed, timed out, or its server side failed
// while the client span forgot to say so.
func attemptFailed(n *Node) bool {
	if Failed(n) || (n.Span.StatusCode != model.StatusOK && IsTimeoutLike(n.Span)) {
		return true
	}
	for _, c := range n.Children {
		if c.Span.Kind == model.KindServer && Failed(c) {
			return true
		}
	}
	return false
}

// retries tells whether next is another attempt of prev, a call to the
// same target (the caller groups by CallTarget): it starts once prev has
// ended, prev failed, and it sends the same request.
func retries(prev, next *Node, tolNS uint64) bool {
	return next.Start()+max(tolNS, timingTolerance(prev, next)) >= prev.End() && attemptFailed(prev) &&
		sameRequest(prev.Span, next.Span)
}

// requestKeys name what tells one request to a target from another: the
// URL with its ids and query, the statement with its literals, the RPC
// method. A loop calls one route or statement shape item after item;
// only a retry sends the very same request again.
var requestKeys = [][]string{
	{"url.full", "http.url", "url.path", "http.target", "http.path"},
	{"url.query"},
	{"db.query.text", "db.statement", "sql.query"},
	{"redis.args"},
	{"rpc.method"},
}

// requestArgPrefixes: bound arguments, where the instrumentation records
// them, tell a loop's items apart when the statement text cannot.
var requestArgPrefixes = []string{"db.query.parameter.", "db.operation.parameter."}

// sameRequest: nothing a and b both record says they are different
// requests. What only one of them records is no evidence either way.
func sameRequest(a, b *model.Span) bool {
	for _, keys := range requestKeys {
		x, y := a.Attrs.Str(keys...), b.Attrs.Str(keys...)
		if x != "" && y != "" && withoutAuthority(x) != withoutAuthority(y) {
			return false
		}
	}
	for _, kv := range a.Attrs {
		for _, p := range requestArgPrefixes {
			if strings.HasPrefix(kv.Key, p) {
				if v, ok := b.Attrs.Get(kv.Key); ok && v.AsString() != kv.Value.AsString() {
					return false
				}
			}
		}
	}
	return true
}

// withoutAuthority drops a URL's scheme and host: a client that retries
// on another replica (peers named by IP, a load balancer's failover) sends
// the same request to another address.
func withoutAuthority(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	rest := u[i+3:]
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		return rest[j:]
	}
	return "/"
}

// retryChainsOf splits calls to one target (sorted by start) into chains
// where each attempt retries the previous one.
func retryChainsOf(nodes []*Node, tolNS uint64) [][]*Node {
	var chains [][]*Node
	// A chain is a run of consecutive nodes: it is handed out as a capped
	// slice of nodes, not copied.
	from := 0
	for i := 1; i <= len(nodes); i++ {
		if i < len(nodes) && retries(nodes[i-1], nodes[i], tolNS) {
			continue
		}
		if i-from >= 2 {
			chains = append(chains, nodes[from:i:i])
		}
		from = i
	}
	return chains
}

// groupCallsByTarget groups p's call children by CallTarget, in first-seen
// order; each group keeps start order.
func groupCallsByTarget(t *Trace, p *Node, keep func(*Node) bool) [][]*Node {
	return groupChildren(p, func(c *Node) bool { return IsCall(c) && (keep == nil || keep(c)) },
		func(c *Node) [2]string {
			svc, op := CallTarget(t, c)
			return [2]string{svc, op}
		})
}

// attemptsBelowCall groups the SERVER children of call p by service and
// operation: a client that retries below its instrumentation (urllib3's
// Retry under requests, a retry handler inside an HttpClient) sends every
// attempt with the call's context, so the attempts are the callee's spans
// under the one CLIENT span.
func attemptsBelowCall(p *Node) [][]*Node {
	return groupChildren(p, func(c *Node) bool { return c.Span.Kind == model.KindServer },
		func(c *Node) [2]string { return [2]string{c.Span.Service, displayOp(c)} })
}

// groupChildren groups the children of p that keep accepts by key, in
// first-seen order; each group keeps start order.
func groupChildren(p *Node, keep func(*Node) bool, key func(*Node) [2]string) [][]*Node {
	// Most parents call a few targets: their keys are compared in a list,
	// and a map is built only for parents that call many. The groups are
	// laid out in one slice once their sizes are known.
	var keyBuf [groupListMax + 1][2]string
	var sizeBuf [groupListMax + 1]int
	keys, sizes := keyBuf[:0], sizeBuf[:0] // on the stack while few
	var idx map[[2]string]int
	var small [64]int32
	of := small[:0] // group of each child, -1 when not kept
	if len(p.Children) > len(small) {
		of = make([]int32, 0, len(p.Children))
	}
	kept := 0
	for _, c := range p.Children {
		if !keep(c) {
			of = append(of, -1)
			continue
		}
		k := key(c)
		i, ok := -1, false
		if idx != nil {
			i, ok = idx[k]
		} else if i = slices.Index(keys, k); i >= 0 {
			ok = true
		}
		if !ok {
			i = len(sizes)
			sizes = append(sizes, 0)
			if idx != nil {
				idx[k] = i
			} else if keys = append(keys, k); len(keys) > groupListMax {
				idx = make(map[[2]string]int, len(keys))
				for j, k := range keys {
					idx[k] = j
				}
			}
		}
		sizes[i]++
		kept++
		of = append(of, int32(i))
	}
	if kept == 0 {
		return nil
	}
	all := make([]*Node, kept)
	groups := make([][]*Node, len(sizes))
	at := 0
	for i, n := range sizes {
		// Capped, so that a caller appending to a group cannot write
		// into the next.
		groups[i] = all[at : at : at+n]
		at += n
	}
	for j, c := range p.Children {
		if g := of[j]; g >= 0 {
			groups[g] = append(groups[g], c)
		}
	}
	return groups
}

// groupListMax is the most groups groupChildren finds by comparing keys.
const groupListMax = 8

// attemptTarget names what an attempt called: its call target, or for an
// attempt seen only as the callee's SERVER span, that service and
// operation.
func attemptTarget(t *Trace, n *Node) (service, operation string) {
	if n.Span.Kind == model.KindServer && n.Parent != nil && IsCall(n.Parent) {
		return n.Span.Service, displayOp(n)
	}
	return CallTarget(t, n)
}

// Detect implements Detector. Severity: critical when the amplification
// reaches 9 calls per request or the request failed anyway after retrying
// at the root's level; otherwise by the wasted critical-path time
// (SeverityForImpact), at least warning when every attempt failed.
func (d *RetryStorm) Detect(t *Trace, _ *Env) []Finding {
	tol := uint64(d.OverlapToleranceMS * 1e6)
	var chains []*retryChain
	member := map[*Node]*retryChain{}
	for _, p := range t.Nodes {
		if len(p.Children) < 2 {
			continue
		}
		groups := groupCallsByTarget(t, p, nil)
		if IsCall(p) {
			groups = append(groups, attemptsBelowCall(p)...)
		}
		for _, g := range groups {
			if len(g) < 2 {
				continue
			}
			for _, nodes := range retryChainsOf(g, tol) {
				svc, op := attemptTarget(t, nodes[0])
				rc := &retryChain{parent: p, service: svc, op: op, nodes: nodes}
				chains = append(chains, rc)
				for _, n := range nodes {
					member[n] = rc
				}
			}
		}
	}
	if len(chains) == 0 {
		return nil
	}
	// Nest chains: the nearest enclosing attempt of another chain.
	var tops []*retryChain
	for _, rc := range chains {
		for a := rc.parent; a != nil; a = a.Parent {
			if o := member[a]; o != nil && o != rc {
				rc.outer = o
				break
			}
		}
	}
	for _, rc := range chains {
		top := rc
		for top.outer != nil {
			top = top.outer
			rc.depth++
		}
		if top == rc {
			tops = append(tops, rc)
		} else {
			top.nested = append(top.nested, rc)
		}
	}
	var out []Finding
	for _, rc := range tops {
		if f, ok := d.finding(t, rc); ok {
			out = append(out, f)
		}
	}
	return out
}

func (d *RetryStorm) finding(t *Trace, rc *retryChain) (Finding, bool) {
	first, last := rc.nodes[0], rc.nodes[len(rc.nodes)-1]
	lastFailed := attemptFailed(last)
	var wasted uint64
	var attempts []RetryAttempt
	failed := 0
	for i, n := range rc.nodes {
		f := attemptFailed(n)
		if f {
			failed++
		}
		if i < len(rc.nodes)-1 || lastFailed {
			wasted += n.Duration()
		}
		attempts = append(attempts, RetryAttempt{SpanRef: RefOf(t, n), Failed: f, Outcome: attemptOutcome(n, f)})
	}
	// Back-off between attempts is waiting too.
	for i := 1; i < len(rc.nodes); i++ {
		wasted += subSat(rc.nodes[i].Start(), rc.nodes[i-1].End())
	}
	// A short chain is news when it cost time, or when every attempt failed:
	// the caller gave up with its retries exhausted (without a timeout in
	// sight that is the whole story; timeout_cascade leaves it to us).
	if len(rc.nodes) < d.MinAttempts || (len(rc.nodes) < d.AlwaysReportAttempts && NS(wasted) < d.MinWastedMS && failed < len(rc.nodes)) {
		return Finding{}, false
	}
	// Layers: this chain, then nested chains grouped by depth and target.
	layers := []RetryLayer{{Service: rc.service, Operation: rc.op, Attempts: len(rc.nodes), Calls: len(rc.nodes)}}
	type lk struct {
		depth   int
		svc, op string
	}
	li := map[lk]int{}
	ids := make([]string, 0, len(rc.nodes))
	for _, n := range rc.nodes {
		ids = append(ids, spanIDOf(t, n))
	}
	for _, nc := range rc.nested {
		k := lk{nc.depth, nc.service, nc.op}
		i, ok := li[k]
		if !ok {
			i = len(layers)
			li[k] = i
			layers = append(layers, RetryLayer{Service: nc.service, Operation: nc.op})
		}
		layers[i].Attempts = max(layers[i].Attempts, len(nc.nodes))
		layers[i].Calls += len(nc.nodes)
		for _, n := range nc.nodes {
			ids = append(ids, spanIDOf(t, n))
		}
	}
	// Amplification multiplies the worst layer at each depth.
	perDepth := map[int]int{0: len(rc.nodes)}
	for k, i := range li {
		perDepth[k.depth] = max(perDepth[k.depth], layers[i].Attempts)
	}
	amp := 1
	for _, a := range perDepth {
		amp *= a
	}
	// Critical-path time a fix removes: everything before the successful
	// attempt, or everything after the first failure when all failed.
	lo, hi := first.Start(), last.Start()
	if lastFailed {
		lo, hi = first.End(), last.End()
	}
	impact := critWithin(t, rc.parent, lo, hi)

	final := attempts[len(attempts)-1].Outcome
	ev := RetryStormEvidence{
		Target: rc.service, Operation: rc.op, Caller: RefOf(t, rc.parent), Attempts: attempts, FailedCount: failed,
		FinalOutcome: final, Layers: layers, Amplification: amp, WastedMS: roundMS(wasted),
	}
	sev := SeverityForImpact(impact, critTotal(t))
	if lastFailed && sev.Rank() < SeverityWarning.Rank() {
		sev = SeverityWarning
	}
	if amp >= 9 || (lastFailed && rc.parent.Parent == nil && rc.parent.Failed()) {
		sev = SeverityCritical
	}
	var title string
	if len(layers) > 1 {
		parts := make([]string, 0, len(perDepth))
		for i := 0; i < len(perDepth); i++ {
			parts = append(parts, strconv.Itoa(perDepth[i]))
		}
		title = fmt.Sprintf("%s retried %s %d times and nested retries multiply to %s = %d calls per request",
			rc.parent.Span.Service, rc.service, len(rc.nodes), strings.Join(parts, " x "), amp)
		if lastFailed {
			title += "; retries exhausted"
		}
	} else {
		// The first failure goes with the failures: after "succeeded" it
		// read as the success's own status ("succeeded (HTTP 503)").
		first := attempts[0]
		for _, a := range attempts {
			if a.Failed {
				first = a
				break
			}
		}
		outcome := fmt.Sprintf("%d failed (%s), the last one succeeded", failed, model.Clip(first.Outcome, 80))
		if lastFailed {
			// The caller gave up: say so, since without a timeout in sight
			// this is the whole story (timeout_cascade leaves it to us).
			outcome = "retries exhausted, all failed"
			if failed < len(rc.nodes) {
				outcome = "retries exhausted, the last one failed"
			}
			outcome += " (" + model.Clip(attempts[0].Outcome, 80) + ")"
		}
		title = fmt.Sprintf("%d attempts to %s %s from %s, %s", len(rc.nodes), rc.service, opName(rc.nodes[0], rc.op),
			rc.parent.Span.Service, outcome)
	}
	fix := "Retry only idempotent calls on transient errors, with exponential back-off and jitter and a retry budget; " +
		"retry at one layer only (usually the edge) and do not retry when the callee says it is overloaded."
	if lockVictimAttempt(rc.nodes) != nil {
		fix = lockRetryFix
	}
	return Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(impact), Evidence: ev, Fix: fix}, true
}

// lockRetryFix is the advice for retries of statements the database
// aborted on a lock conflict: MySQL and PostgreSQL ask the client to
// restart the transaction, so the retry is right and the conflict is what
// to make rarer.
const lockRetryFix = "The database aborted the transaction on a lock conflict (a deadlock or a lock wait timeout) and " +
	"asks for it to be retried, so keep the retry (the whole transaction, capped); make the conflict rarer: lock rows " +
	"in one order in every transaction (for example by id), and keep transactions short (no remote calls or sleeps " +
	"while they hold locks)."

// lockVictimAttempt returns the first attempt the database aborted on a
// lock conflict, or nil.
func lockVictimAttempt(attempts []*Node) *Node {
	for _, n := range attempts {
		if lockError(n) != "" {
			return n
		}
	}
	return nil
}

func attemptOutcome(n *Node, failed bool) string {
	if !failed {
		if code, ok := HTTPStatus(n.Span); ok {
			return "HTTP " + strconv.Itoa(code)
		}
		return "ok"
	}
	var parts []string
	if code, ok := HTTPStatus(n.Span); ok {
		parts = append(parts, "HTTP "+strconv.Itoa(code))
	}
	msg := errorText(n.Span)
	if msg == "" {
		for _, c := range n.Children {
			if c.Span.Kind == model.KindServer {
				if msg = errorText(c.Span); msg != "" {
					break
				}
			}
		}
	}
	if msg != "" {
		parts = append(parts, msg)
	}
	if len(parts) == 0 {
		return "error"
	}
	return strings.Join(parts, ": ")
}

func errorText(s *model.Span) string {
	typ, msg := ExceptionOf(s)
	switch {
	case msg != "" && typ != "":
		return typ + ": " + msg
	case msg != "":
		return msg
	}
	return typ
}

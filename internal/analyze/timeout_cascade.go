package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// TimeoutCascade finds a chain of ancestors that all fail after waiting
// for the same thing: durations within a few ms of each other, or sitting
// on round timeout values. Each layer only passed the timeout up.
type TimeoutCascade struct {
	MinChain int `yaml:"min_chain"`
	// LayerGapMS: how close two layers' durations (or ends) must be.
	LayerGapMS float64 `yaml:"layer_gap_ms"`
	// MinUsualPresence: a usual child call (from history) present in at
	// least this share of earlier requests and absent here never started.
	MinUsualPresence float64 `yaml:"min_usual_presence"`
}

// NewTimeoutCascade returns the detector with docs/patterns.md defaults.
func NewTimeoutCascade() *TimeoutCascade {
	return &TimeoutCascade{MinChain: 2, LayerGapMS: 10, MinUsualPresence: 0.9}
}

func init() { Register(func() Detector { return NewTimeoutCascade() }) }

// Kind implements Detector.
func (*TimeoutCascade) Kind() string { return "timeout_cascade" }

// roundTimeoutsMS are the values people configure timeouts to.
var roundTimeoutsMS = []float64{1000, 5000, 10000, 30000, 60000}

// roundTimeout reports the round timeout value a duration sits on (within
// 1 %, and never shorter than it: a timer fires at or after its value).
func roundTimeout(durNS uint64) (float64, bool) {
	d := NS(durNS)
	for _, v := range roundTimeoutsMS {
		if d >= v*0.999 && d <= v*1.01 {
			return v, true
		}
	}
	return 0, false
}

// CascadeLayer is one span of the chain.
type CascadeLayer struct {
	SpanRef
	WaitedMS    float64 `json:"waited_ms"`
	TimeoutLike bool    `json:"timeout_like"`
	Message     string  `json:"message,omitempty"`
}

// TimeoutCascadeEvidence is the evidence of a timeout_cascade finding.
type TimeoutCascadeEvidence struct {
	Origin CascadeLayer `json:"origin"`
	// Layers from the outermost down to the origin.
	Layers []CascadeLayer `json:"layers"`
	// TimeoutMS is the round value the chain sits on, else the origin's wait.
	TimeoutMS    float64 `json:"timeout_ms"`
	RoundTimeout bool    `json:"round_timeout"`
	// NeverStarted lists calls usually made (history) that this request
	// never reached because it was stuck waiting.
	NeverStarted []string `json:"never_started,omitempty"`
	// Occurrences counts identical chains under the same parent (retries).
	Occurrences int `json:"occurrences"`
	// Budget is the outermost call that reported a timeout, when it sits
	// above the origin: the deadline that ran out was that call's,
	// propagated down or cancelling the layers below, while the origin
	// took the time.
	Budget *CascadeLayer `json:"budget,omitempty"`
}

func (d *TimeoutCascade) linked(p, c *Node) bool {
	if !Failed(p) || !Failed(c) {
		return false
	}
	gap := uint64(d.LayerGapMS * 1e6)
	pd, cd := p.Duration(), c.Duration()
	if subSat(pd, cd) <= gap && subSat(cd, pd) <= gap {
		return true
	}
	if c.End() <= p.End() && p.End()-c.End() <= gap && cd*2 >= pd {
		return true
	}
	// Round values link layers with different timeouts, but only when the
	// parent really waited for the child: a child that outlived its parent
	// is a timeout_mismatch, the parent gave up on its own.
	_, pr := roundTimeout(pd)
	_, cr := roundTimeout(cd)
	return pr && (cr || IsTimeoutLike(c.Span)) && cd <= pd+gap
}

// Detect implements Detector. A chain needs evidence of a timeout: a
// deadline/timeout error on some layer (IsTimeoutLike), or a layer whose
// duration sits on a round timeout value. A fast error passed up quickly
// also has layers of equal duration (error_origin's), and a caller that
// gave up after its retries were exhausted, with no timeout anywhere, is
// retry_storm's, even when the attempts happen to add up to a round value.
// Chains separated by a failed layer that did not link (an internal span
// a few ms longer) are one cascade. Severity: critical when the chain
// reaches the trace root or spans 3+ layers, warning otherwise.
func (d *TimeoutCascade) Detect(t *Trace, env *Env) []Finding {
	var hist History = NoHistory{}
	if env != nil && env.History != nil {
		hist = env.History
	}
	var chains [][]*Node
	for _, top := range t.Nodes {
		if !Failed(top) || d.layerAbove(top) != nil {
			continue
		}
		chain := []*Node{top}
		for cur := top; ; {
			next := d.layerBelow(cur)
			if next == nil {
				break
			}
			chain = append(chain, next)
			cur = next
		}
		chains = append(chains, chain)
	}
	chains = joinChains(chains, uint64(d.LayerGapMS*1e6))
	var out []Finding
	// Identical chains under one parent (each attempt of a retry loop)
	// are one finding with a count.
	type sig struct {
		parent *Node
		layers string
	}
	seen := map[sig]int{}
	for _, chain := range chains {
		if len(chain) < d.MinChain {
			continue
		}
		var b strings.Builder
		for _, n := range chain {
			b.WriteString(n.Span.Service + "\x00" + n.Span.Name + "\x01")
		}
		k := sig{chain[0].Parent, b.String()}
		if i, dup := seen[k]; dup {
			ev := out[i].Evidence.(TimeoutCascadeEvidence)
			ev.Occurrences++
			out[i].Evidence = ev
			continue
		}
		if f, ok := d.finding(t, hist, chain); ok {
			seen[k] = len(out)
			out = append(out, f)
		}
	}
	for i := range out {
		if n := out[i].Evidence.(TimeoutCascadeEvidence).Occurrences; n > 1 {
			out[i].Title += fmt.Sprintf(" (the same chain %d times under one caller)", n)
		}
	}
	return out
}

// layerBelow returns the longest child of p that failed with it, looking
// through a passThrough child: Express's "request handler" span sits
// between a server span that answered 503 and the statement whose lock
// wait timed out, and ends with them without failing itself.
func (d *TimeoutCascade) layerBelow(p *Node) *Node {
	var next *Node
	consider := func(c *Node) {
		if d.linked(p, c) && (next == nil || c.Duration() > next.Duration()) {
			next = c
		}
	}
	for _, c := range p.Children {
		consider(c)
		if passThrough(p, c) {
			for _, g := range c.Children {
				consider(g)
			}
		}
	}
	return next
}

// layerAbove is the failed layer a span's timeout was passed up to (the
// inverse of layerBelow), or nil when the span starts a chain.
func (d *TimeoutCascade) layerAbove(n *Node) *Node {
	p := n.Parent
	if p == nil {
		return nil
	}
	if d.linked(p, n) {
		return p
	}
	if g := p.Parent; g != nil && passThrough(g, p) && d.linked(g, n) {
		return g
	}
	return nil
}

// passThrough reports an in-process span of p's own service (a framework's
// handler or middleware span) that did not fail while p did: it records
// no outcome of its own, so it neither breaks nor joins a chain.
func passThrough(p, c *Node) bool {
	return !Failed(c) && c.Span.Kind == model.KindInternal && !IsCall(c) && c.Span.Service == p.Span.Service
}

// joinChains appends a chain to the one whose origin sits above its top
// when every span between them failed too and the lower chain took at
// least 90 % of the upper origin's time, or was its only callee and
// failed when it did (a slow connect to the callee shortens the lower
// chain, not a retry): one timeout, one cascade.
func joinChains(chains [][]*Node, gap uint64) [][]*Node {
	byOrigin := make(map[*Node]int, len(chains))
	for i, c := range chains {
		byOrigin[c[len(c)-1]] = i
	}
	joined := make([]bool, len(chains))
	// Children are found after their ancestors' chains were built (t.Nodes
	// is not in tree order), so join bottom-up until nothing changes.
	for changed := true; changed; {
		changed = false
		for i, c := range chains {
			if joined[i] {
				continue
			}
			var between []*Node
			for a := c[0].Parent; a != nil && Failed(a); a = a.Parent {
				j, ok := byOrigin[a]
				// Only a lower chain that held (nearly) all of the upper
				// origin's time is the same wait: one of several retry
				// attempts is not.
				if ok && 10*c[0].Duration() < 9*a.Duration() && !soleCallee(a, c[0], gap) {
					break
				}
				// Nor is a callee that ran on after the upper origin gave
				// up: the upper one's timeout is where the chain starts.
				if ok && gaveUpFirst(a, c[0]) {
					break
				}
				if !ok || j == i || joined[j] {
					between = append(between, a)
					continue
				}
				upper := chains[j]
				for k := len(between) - 1; k >= 0; k-- {
					upper = append(upper, between[k])
				}
				chains[j] = append(upper, c...)
				delete(byOrigin, a)
				byOrigin[c[len(c)-1]] = j
				joined[i], changed = true, true
				break
			}
		}
	}
	out := chains[:0]
	for i, c := range chains {
		if !joined[i] {
			out = append(out, c)
		}
	}
	return out
}

// soleCallee reports c as the only child of a, ending within gap of it:
// a waited for c alone and failed with it.
func soleCallee(a, c *Node, gap uint64) bool {
	return len(a.Children) == 1 && subSat(a.End(), c.End()) <= gap && subSat(c.End(), a.End()) <= gap
}

// retriesExhausted reports whether n failed after a chain of failed retry
// attempts below it, none of which timed out: the caller gave up because
// its retry budget ran out, not because a deadline passed.
func retriesExhausted(t *Trace, n *Node) bool {
	for _, g := range groupCallsByTarget(t, n, nil) {
		for _, chain := range retryChainsOf(g, uint64(1e6)) {
			if !attemptFailed(chain[len(chain)-1]) {
				continue
			}
			timedOut := false
			for _, a := range chain {
				timedOut = timedOut || IsTimeoutLike(a.Span)
			}
			if !timedOut {
				return true
			}
		}
	}
	return false
}

func (d *TimeoutCascade) finding(t *Trace, hist History, chain []*Node) (Finding, bool) {
	origin := chain[len(chain)-1]
	evidence := false
	var round float64
	layers := make([]CascadeLayer, len(chain))
	ids := make([]string, len(chain))
	for i, n := range chain {
		tl := IsTimeoutLike(n.Span)
		v, on := roundTimeout(n.Duration())
		if on && round == 0 {
			round = v
		}
		evidence = evidence || tl || on
		_, msg := ExceptionOf(n.Span)
		layers[i] = CascadeLayer{SpanRef: RefOf(t, n), WaitedMS: roundMS(n.Duration()), TimeoutLike: tl, Message: model.Clip(msg, 200)}
		ids[i] = n.Span.SpanID.String()
	}
	explicit := false
	for _, l := range layers {
		explicit = explicit || l.TimeoutLike
	}
	if !evidence || (!explicit && retriesExhausted(t, origin)) {
		return Finding{}, false
	}
	if !explicit && lockError(origin) != "" {
		// A deadlock victim that failed after a round second waited out
		// PostgreSQL's deadlock_timeout (1 s), then lost: no client gave
		// up, and lock_contention and error_origin tell what happened.
		return Finding{}, false
	}
	if v, on := roundTimeout(origin.Duration()); on {
		round = v
	}
	ev := TimeoutCascadeEvidence{Origin: layers[len(layers)-1], Layers: layers, TimeoutMS: round, RoundTimeout: round > 0, Occurrences: 1}
	if round == 0 {
		ev.TimeoutMS = roundMS(origin.Duration())
	}
	budgetAt := -1
	for i, n := range chain[:len(chain)-1] {
		if IsCall(n) && OwnTimeout(n.Span) {
			budgetAt = i
			ev.Budget = &layers[i]
			if round == 0 {
				ev.TimeoutMS = layers[i].WaitedMS
			}
			break
		}
	}
	ev.NeverStarted = d.neverStarted(t, hist, chain)
	impact := critUnder(t, origin)
	sev := SeverityWarning
	if chain[0].Parent == nil || len(chain) >= 3 {
		sev = SeverityCritical
	}
	peer, _ := CallTarget(t, origin)
	title := fmt.Sprintf("timeout cascade through %d layers: %s timed out after %.0f ms and every caller above failed with it",
		len(chain), spanLabel(t, origin), NS(origin.Duration()))
	budget := ""
	if budgetAt >= 0 {
		b := chain[budgetAt]
		title = fmt.Sprintf("timeout cascade through %d layers: the %.0f ms deadline of %s ran out while %s ran (%.0f ms), and every layer failed with it",
			len(chain), NS(b.Duration()), spanLabel(t, b), spanLabel(t, origin), NS(origin.Duration()))
		budget = fmt.Sprintf(" The budget that ran out was %s's %.0f ms.", spanLabel(t, b), NS(b.Duration()))
	}
	if len(ev.NeverStarted) > 0 {
		title += fmt.Sprintf("; %d usual calls never started", len(ev.NeverStarted))
	}
	fix := cascadeFix(t, origin, peer) + budget
	if lockError(origin) != "" {
		// The database answered at once that the lock wait ran out: the
		// holder of the lock, not the database or the callers, is the fix.
		fix = "The statement waited for a lock another transaction held until the database's lock wait timeout: " +
			"keep the transactions on this row short (no remote calls or slow work while the lock is held) and " +
			"look for the holder in the lock_contention finding." + budget
	}
	return Finding{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids, ImpactMS: roundMS(impact), Evidence: ev, Fix: fix}, true
}

// deadlineAdvice is what stops a cascade from spreading, whatever its
// origin.
const deadlineAdvice = "give each layer a timeout shorter than its caller's (deadline propagation), so that work " +
	"nobody waits for any more stops"

// cascadeFix points at where the origin's time went when the trace shows
// it (the callee's span that held nearly all of it): that, not the
// timeouts that only reported it, is what to fix first. A callee that left
// no spans gets the generic advice.
func cascadeFix(t *Trace, origin *Node, peer string) string {
	start := origin
	if IsCall(origin) {
		start = calleeEntry(origin)
	}
	if start == nil {
		return "Look at why " + peer + " stopped answering in time, fail fast with a circuit breaker on it, and " +
			deadlineAdvice + "."
	}
	leaf := dominantDescendant(start)
	if leaf == start {
		return fmt.Sprintf("Start at %s, which ran %s with no traced step taking the time: find what it waits on (add "+
			"spans inside it or profile it); then %s.", spanLabel(t, start), fmtDur(start.Duration()), deadlineAdvice)
	}
	share := 100 * float64(min(leaf.Duration(), start.Duration())) / float64(max(start.Duration(), 1))
	return fmt.Sprintf("Start at %s, where %s spent %.0f%% of its %s: that is what outlasted the timeouts, which only "+
		"reported it; then %s.", spanLabel(t, leaf), start.Span.Service, share, fmtDur(start.Duration()), deadlineAdvice)
}

// neverStarted compares the calls made under each service entry of the
// chain with what history says that operation usually calls.
func (d *TimeoutCascade) neverStarted(t *Trace, hist History, chain []*Node) []string {
	var out []string
	for _, n := range chain {
		if !IsServiceEntry(n) {
			continue
		}
		usual, ok := hist.UsualChildren(n.Span.Service, n.Span.Name)
		if !ok || len(usual) == 0 {
			continue
		}
		seen := map[[2]string]bool{}
		// Calls made by this service under this entry (not deeper services).
		stack := append([]*Node(nil), n.Children...)
		for len(stack) > 0 {
			c := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if IsServiceEntry(c) {
				continue
			}
			if IsCall(c) {
				s, o := CallTarget(t, c)
				seen[[2]string{s, o}] = true
				seen[[2]string{s, ""}] = true
			}
			stack = append(stack, c.Children...)
		}
		for _, u := range usual {
			if u.Presence < d.MinUsualPresence || seen[[2]string{u.Service, u.Operation}] {
				continue
			}
			if u.Operation == "" && seen[[2]string{u.Service, ""}] {
				continue
			}
			out = append(out, strings.TrimSpace(u.Service+" "+u.Operation))
		}
	}
	return out
}

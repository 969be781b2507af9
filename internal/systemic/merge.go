package systemic

import (
	"context"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// In a cluster each node observes the traces it owns, so a pattern whose
// threshold counts traces or events (5 traces missing one cache key, 3
// rejected calls, 5 errors and 20 requests in the window, 20 expected
// requests) can be met by the cluster's traffic and by no node's share.
// For those patterns (cache_stampede, auth_expiry_race, error_rate_spike,
// latency_regression, span_count_regression, missing_service,
// throughput_drop) every node serves its Share — the raw events, window
// counts, histograms and baselines the thresholds are judged on — and
// each evaluation judges the union of every answering node's share with
// the code one node uses on its own, as one node holding all traffic
// would; new_error_type is judged on every node's memory of exception
// types. Only the owner of a finding's key (Cluster.Owns: one node of
// those answering) reports it, so it is stored, counted and alerted on
// once, with the evidence of every node. concurrency_contention (it
// would need every call of the window) stays judged on each node's share.

// Cluster connects a detector to the other nodes of its cluster.
type Cluster struct {
	// Owns says whether this node reports the finding with key.
	Owns func(key string) bool
	// Peers returns the shares of the other nodes that answer.
	Peers func(ctx context.Context) []Share
}

// Share is what one node holds of the patterns judged on the whole
// cluster's traffic: mergeable counts and events, never judgements.
type Share struct {
	Stampedes []StampedeShare `json:"stampedes"`
	Auth      []AuthShare     `json:"auth"`
	Errors    []ErrorShare    `json:"errors"`
	Roots     []RootShare     `json:"roots"`
	Latency   []LatencyShare  `json:"latency"`
	// ErrorTypes are the exception types the node has seen (within
	// ErrorTypeMemory) and NewTypes those it saw for the first time in
	// the last minute.
	ErrorTypes []ErrorTypeShare `json:"error_types"`
	NewTypes   []NewTypeShare   `json:"new_types"`
}

// ErrorTypeShare is an exception type a node has seen, and when last.
type ErrorTypeShare struct {
	Service string    `json:"service"`
	Type    string    `json:"type"`
	Last    time.Time `json:"last"`
}

// NewTypeShare is the first span with an exception type new to a node.
type NewTypeShare struct {
	Service   string `json:"service"`
	Operation string `json:"op"`
	Type      string `json:"type"`
	Message   string `json:"message,omitempty"`
	RefShare
}

// StampedeShare holds a node's recent cache misses of one key under one
// endpoint.
type StampedeShare struct {
	Endpoint string      `json:"endpoint"`
	Key      string      `json:"key"`
	Misses   []MissShare `json:"misses"`
}

// MissShare is one cache miss followed by the expensive fallback.
type MissShare struct {
	Time       time.Time `json:"t"`
	Trace      string    `json:"trace"`
	Span       string    `json:"span"`
	Service    string    `json:"service"`
	Operation  string    `json:"op"`
	Fallback   string    `json:"fallback"`
	FallbackMS float64   `json:"fallback_ms"`
	Wrote      bool      `json:"wrote,omitempty"`
}

// AuthShare holds a node's recent answers of one call target.
type AuthShare struct {
	Target   string         `json:"target"`
	Failures []FailureShare `json:"failures"`
	// Successes counts the successful calls per second (Unix) of start.
	Successes map[int64]int `json:"successes"`
}

// FailureShare is one rejected call.
type FailureShare struct {
	Time   time.Time `json:"t"`
	Trace  string    `json:"trace"`
	Span   string    `json:"span"`
	Caller string    `json:"caller"`
	Code   int       `json:"code"`
}

// ErrorShare holds a node's requests and errors of one entry operation,
// over the error window and in its baseline, with example failures.
type ErrorShare struct {
	Service   string     `json:"service"`
	Operation string     `json:"op"`
	Requests  float64    `json:"n"`
	Errors    float64    `json:"errors"`
	BaseN     float64    `json:"base_n"`
	BaseErrs  float64    `json:"base_errors"`
	Examples  []RefShare `json:"examples,omitempty"`
	// Origins counts where the errors of the operation's failing traces
	// started (the culprit of a spike).
	Origins []OriginShare `json:"origins,omitempty"`
}

// OriginShare counts the failing traces whose error started in one
// operation.
type OriginShare struct {
	Service   string  `json:"service"`
	Operation string  `json:"op"`
	Count     float64 `json:"count"`
}

// RefShare is an example span: its trace, its id and when it was seen.
type RefShare struct {
	Trace string    `json:"trace"`
	Span  string    `json:"span"`
	Time  time.Time `json:"t"`
}

// mergedKind says whether a cluster judges kind on every node's share
// (the others are judged on each node's own).
func mergedKind(kind string) bool {
	switch kind {
	case "cache_stampede", "auth_expiry_race", "error_rate_spike", "throughput_drop", "missing_service", "span_count_regression",
		"latency_regression", "new_error_type":
		return true
	}
	return false
}

// merged are the other nodes' shares an evaluation judges with this
// node's, and which findings this node reports.
type merged struct {
	owns  func(string) bool
	peers []Share
}

// SetCluster makes Run judge the merged patterns on the shares of every
// node that answers and report only the findings this node owns.
func (d *Detector) SetCluster(c Cluster) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cluster = &c
}

// clusterShares asks the peers for their shares (nil outside a cluster).
// An evaluation waits no longer than its interval for a slow node, which
// is then left out this time.
func (d *Detector) clusterShares(ctx context.Context) *merged {
	d.mu.Lock()
	c := d.cluster
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.EvalInterval)
	defer cancel()
	return &merged{owns: c.Owns, peers: c.Peers(ctx)}
}

// EvaluateCluster is Evaluate for a node of a cluster: the merged
// patterns are judged on this node's share and the peers' shares
// together, and only the findings owns accepts are returned. The other
// patterns are judged on this node's share, as Evaluate does.
func (d *Detector) EvaluateCluster(now time.Time, owns func(key string) bool, peers []Share) []Finding {
	opened, _ := d.evaluate(now, &merged{owns: owns, peers: peers})
	return opened
}

// Share returns this node's share of the merged patterns at now.
func (d *Detector) Share(now time.Time) Share {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := Share{Stampedes: []StampedeShare{}, Auth: []AuthShare{}, Errors: d.localErrors(now), Roots: []RootShare{}}
	for _, v := range d.localRoots(now) {
		out.Roots = append(out.Roots, v.share())
	}
	out.ErrorTypes = make([]ErrorTypeShare, 0, len(d.errTypes))
	for k, last := range d.errTypes {
		out.ErrorTypes = append(out.ErrorTypes, ErrorTypeShare{Service: k[0], Type: k[1], Last: last})
	}
	sort.Slice(out.ErrorTypes, func(i, j int) bool {
		a, b := out.ErrorTypes[i], out.ErrorTypes[j]
		return a.Service < b.Service || a.Service == b.Service && a.Type < b.Type
	})
	out.NewTypes = make([]NewTypeShare, 0, len(d.newTypes))
	for _, nt := range d.newTypes {
		out.NewTypes = append(out.NewTypes, NewTypeShare{Service: nt.service, Operation: nt.op, Type: nt.typ, Message: nt.msg,
			RefShare: RefShare{Trace: nt.r.trace.String(), Span: nt.r.span.String(), Time: nt.r.t}})
	}
	out.Latency = []LatencyShare{}
	for _, v := range d.localLatency(now, true) {
		out.Latency = append(out.Latency, v.share(now, d.cfg))
	}
	for k, r := range d.stampede {
		if len(r.events) == 0 {
			continue
		}
		s := StampedeShare{Endpoint: k[0], Key: k[1], Misses: make([]MissShare, len(r.events))}
		for i, e := range r.events {
			s.Misses[i] = MissShare{Time: e.t, Trace: e.trace, Span: e.span, Service: e.service, Operation: e.op,
				Fallback: e.fallback, FallbackMS: e.fallbackMS, Wrote: e.wrote}
		}
		out.Stampedes = append(out.Stampedes, s)
	}
	for target, st := range d.auth {
		a := AuthShare{Target: target, Failures: make([]FailureShare, len(st.fails)), Successes: make(map[int64]int, len(st.succ))}
		for i, e := range st.fails {
			a.Failures[i] = FailureShare{Time: e.t, Trace: e.trace, Span: e.span, Caller: e.caller, Code: e.code}
		}
		for sec, n := range st.succ {
			a.Successes[sec] = n
		}
		out.Auth = append(out.Auth, a)
	}
	sort.Slice(out.Stampedes, func(i, j int) bool {
		a, b := out.Stampedes[i], out.Stampedes[j]
		return a.Endpoint < b.Endpoint || a.Endpoint == b.Endpoint && a.Key < b.Key
	})
	sort.Slice(out.Auth, func(i, j int) bool { return out.Auth[i].Target < out.Auth[j].Target })
	return out
}

// localErrors are this node's error counts per entry operation at now,
// sorted by operation.
func (d *Detector) localErrors(now time.Time) []ErrorShare {
	out := make([]ErrorShare, 0, len(d.ops))
	for k, s := range d.ops {
		w := d.window(s, now, d.cfg.ErrorWindow)
		origins := d.origins[k]
		if w.n == 0 && s.base.n == 0 && len(origins) == 0 {
			continue
		}
		e := ErrorShare{Service: k.service, Operation: k.op, Requests: w.n, Errors: w.errs, BaseN: s.base.n, BaseErrs: s.base.errs}
		for _, r := range s.errRefs {
			e.Examples = append(e.Examples, RefShare{Trace: r.trace.String(), Span: r.span.String(), Time: r.t})
		}
		for o, n := range origins {
			e.Origins = append(e.Origins, OriginShare{Service: o.service, Operation: o.op, Count: n})
		}
		out = append(out, e)
	}
	sortErrors(out)
	return out
}

func sortErrors(es []ErrorShare) {
	sort.Slice(es, func(i, j int) bool { return es[i].Service+es[i].Operation < es[j].Service+es[j].Operation })
}

// mergeErrors sums the shares' counts per operation; the examples are the
// latest five.
func mergeErrors(local []ErrorShare, peers []Share) []ErrorShare {
	at := make(map[opKey]int, len(local))
	out := make([]ErrorShare, 0, len(local))
	add := func(e ErrorShare) {
		k := opKey{e.Service, e.Operation}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			e.Examples = append([]RefShare(nil), e.Examples...)
			e.Origins = append([]OriginShare(nil), e.Origins...)
			out = append(out, e)
			return
		}
		m := &out[i]
		m.Requests += e.Requests
		m.Errors += e.Errors
		m.BaseN += e.BaseN
		m.BaseErrs += e.BaseErrs
		m.Examples = append(m.Examples, e.Examples...)
		m.Origins = append(m.Origins, e.Origins...)
	}
	for _, e := range local {
		add(e)
	}
	for _, p := range peers {
		for _, e := range p.Errors {
			add(e)
		}
	}
	for i := range out {
		ex := out[i].Examples
		sort.SliceStable(ex, func(a, b int) bool { return ex[a].Time.Before(ex[b].Time) })
		if len(ex) > 5 {
			out[i].Examples = ex[len(ex)-5:]
		}
	}
	sortErrors(out)
	return out
}

// refsOf converts examples back to refs (ids that do not parse are left
// out: a peer of another version may write them differently).
func refsOf(rs []RefShare) []ref {
	out := make([]ref, 0, len(rs))
	for _, r := range rs {
		tid, err := model.ParseTraceID(r.Trace)
		if err != nil {
			continue
		}
		sid, err := model.ParseSpanID(r.Span)
		if err != nil {
			continue
		}
		out = append(out, ref{trace: tid, span: sid, t: r.Time})
	}
	return out
}

// mergeEvents judges the cache misses and the rejected calls of every
// node together; add receives the findings this node owns. A key is
// judged again only when the union holds an event the last judgement of
// it did not: as one node judges a key at each new event, a burst opens
// a finding once, and a key stays open while new events keep it active.
func (d *Detector) mergeEvents(m *merged, add func(Finding, time.Duration)) {
	stampedes := map[[2]string][]missEvent{}
	for k, r := range d.stampede {
		stampedes[k] = append(stampedes[k], r.events...)
	}
	auth := map[string]*authState{}
	authOf := func(target string) *authState {
		st := auth[target]
		if st == nil {
			st = &authState{succ: map[int64]int{}}
			auth[target] = st
		}
		return st
	}
	for target, st := range d.auth {
		a := authOf(target)
		a.fails = append(a.fails, st.fails...)
		for sec, n := range st.succ {
			a.succ[sec] += n
		}
	}
	for _, p := range m.peers {
		for _, s := range p.Stampedes {
			k := [2]string{s.Endpoint, s.Key}
			for _, e := range s.Misses {
				stampedes[k] = append(stampedes[k], missEvent{t: e.Time, trace: e.Trace, span: e.Span, fallback: e.Fallback,
					fallbackMS: e.FallbackMS, wrote: e.Wrote, service: e.Service, op: e.Operation})
			}
		}
		for _, s := range p.Auth {
			a := authOf(s.Target)
			for _, e := range s.Failures {
				a.fails = append(a.fails, authEvent{t: e.Time, trace: e.Trace, span: e.Span, caller: e.Caller, code: e.Code})
			}
			for sec, n := range s.Successes {
				a.succ[sec] += n
			}
		}
	}
	judged := map[string]map[string]bool{}
	for k, evs := range stampedes {
		key := stampedeKey(k[0], k[1])
		if !m.owns(key) {
			continue
		}
		evs = uniqueEvents(evs, missID)
		fresh, ids := unseen(d.judged[key], evs, missID)
		judged[key] = ids
		if !fresh {
			continue
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].t.Before(evs[j].t) })
		if f, ok := d.stampedeFinding(k[0], k[1], evs); ok {
			add(f, d.cfg.ErrorWindow)
		}
	}
	for target, st := range auth {
		key := authKey(target)
		if len(st.fails) == 0 || !m.owns(key) {
			continue
		}
		st.fails = uniqueEvents(st.fails, failureID)
		fresh, ids := unseen(d.judged[key], st.fails, failureID)
		judged[key] = ids
		if !fresh {
			continue
		}
		sort.SliceStable(st.fails, func(i, j int) bool { return st.fails[i].t.Before(st.fails[j].t) })
		// One node judges each failure as it comes, the window ending
		// there; the latest such window that makes a finding speaks.
		for end := len(st.fails); end > 0; end-- {
			if f, ok := d.authFinding(target, st.fails[:end], st.succ); ok {
				add(f, d.cfg.ErrorWindow)
				break
			}
		}
	}
	d.judged = judged
}

func missID(e missEvent) string    { return e.span }
func failureID(e authEvent) string { return e.span }

// unseen says whether evs holds an event (by id) that last, the events
// of the key's last judgement, does not, and returns evs' ids.
func unseen[E any](last map[string]bool, evs []E, id func(E) string) (bool, map[string]bool) {
	ids := make(map[string]bool, len(evs))
	fresh := false
	for _, e := range evs {
		s := id(e)
		ids[s] = true
		fresh = fresh || !last[s]
	}
	return fresh, ids
}

// uniqueEvents drops repeated events (by id), keeping the first.
func uniqueEvents[E any](evs []E, id func(E) string) []E {
	seen := make(map[string]bool, len(evs))
	out := evs[:0:0]
	for _, e := range evs {
		if s := id(e); !seen[s] {
			seen[s] = true
			out = append(out, e)
		}
	}
	return out
}

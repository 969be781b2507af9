package systemic

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/attribution"
	"github.com/tracedx/tracedx/internal/model"
)

var sprintf = fmt.Sprintf

// Evidence types: the JSON contract of each systemic kind.

// ErrorRateEvidence backs error_rate_spike.
type ErrorRateEvidence struct {
	Service      string  `json:"service"`
	Operation    string  `json:"operation,omitempty"`
	WindowS      float64 `json:"window_s"`
	Requests     int     `json:"requests"`
	Errors       int     `json:"errors"`
	ErrorRate    float64 `json:"error_rate"`
	BaselineRate float64 `json:"baseline_rate"`
	Threshold    float64 `json:"threshold"`
}

// LatencyEvidence backs latency_regression.
type LatencyEvidence struct {
	Service       string              `json:"service"`
	Operation     string              `json:"operation"`
	WindowS       float64             `json:"window_s"`
	Requests      int                 `json:"requests"`
	P95MS         float64             `json:"p95_ms"`
	BaselineP95MS float64             `json:"baseline_p95_ms"`
	Factor        float64             `json:"factor"`
	Attribution   []attribution.Value `json:"attribution"`
}

// SpanCountEvidence backs span_count_regression.
type SpanCountEvidence struct {
	Flow              string  `json:"flow"`
	WindowS           float64 `json:"window_s"`
	Traces            int     `json:"traces"`
	MeanSpans         float64 `json:"mean_spans"`
	BaselineMeanSpans float64 `json:"baseline_mean_spans"`
	// Service and Version name the release that brought the new shape.
	Service          string  `json:"service,omitempty"`
	Version          string  `json:"version,omitempty"`
	VersionTraces    int     `json:"version_traces,omitempty"`
	VersionMeanSpans float64 `json:"version_mean_spans,omitempty"`
}

// NewErrorTypeEvidence backs new_error_type.
type NewErrorTypeEvidence struct {
	Service       string `json:"service"`
	ExceptionType string `json:"exception_type"`
	Message       string `json:"message,omitempty"`
}

// MissingServiceEvidence backs missing_service.
type MissingServiceEvidence struct {
	Flow             string  `json:"flow"`
	Service          string  `json:"service"`
	WindowS          float64 `json:"window_s"`
	Traces           int     `json:"traces"`
	BaselinePresence float64 `json:"baseline_presence"`
}

// ThroughputEvidence backs throughput_drop.
type ThroughputEvidence struct {
	Service        string  `json:"service"`
	Operation      string  `json:"operation"`
	WindowS        float64 `json:"window_s"`
	Requests       int     `json:"requests"`
	Expected       float64 `json:"expected"`
	RatePerMin     float64 `json:"rate_per_min"`
	BaselinePerMin float64 `json:"baseline_per_min"`
}

// StampedeEvidence backs cache_stampede.
type StampedeEvidence struct {
	Endpoint     string  `json:"endpoint"`
	CacheKey     string  `json:"cache_key"`
	Traces       int     `json:"traces"`
	WithinMS     float64 `json:"within_ms"`
	Fallback     string  `json:"fallback,omitempty"`
	FallbackMS   float64 `json:"fallback_mean_ms"`
	Rewrites     int     `json:"rewrites"` // traces that wrote the key back
	CacheService string  `json:"cache_service"`
}

// AuthRaceEvidence backs auth_expiry_race.
type AuthRaceEvidence struct {
	Target    string    `json:"target"`
	Callers   []string  `json:"callers"`
	Failures  int       `json:"failures"`
	Successes int       `json:"successes"`
	Moment    time.Time `json:"moment"`
	SpreadMS  float64   `json:"spread_ms"`
	Codes     []int     `json:"codes"`
}

// ---- cache_stampede ----

type missEvent struct {
	t           time.Time
	trace, span string
	fallback    string
	fallbackMS  float64
	wrote       bool
	service     string
	op          string // the cache read (cacheRead)
}

type ring struct {
	events []missEvent
	seen   time.Time // observation time of the latest event
}

var cacheSystems = map[string]bool{"redis": true, "memcached": true, "valkey": true, "hazelcast": true, "couchbase": true,
	"aerospike": true, "geode": true, "coherence": true, "ehcache": true}

type cacheMiss struct {
	s   *model.Span
	key string
}

func isCacheSpan(s *model.Span) bool {
	var k spanKeys
	k.scan(s.Attrs)
	return k.isCache()
}

func cacheCommand(s *model.Span) (cmd, key string) {
	if k := s.Attrs.Str("cache.key", "db.redis.key"); k != "" {
		key = k
	}
	stmt := s.Attrs.Str("db.query.text", "db.statement")
	fields := strings.Fields(stmt)
	if len(fields) > 0 {
		cmd = strings.ToUpper(fields[0])
		if key == "" && len(fields) > 1 {
			key = fields[1]
		}
	}
	if cmd == "" {
		cmd = strings.ToUpper(s.Attrs.Str("db.operation.name", "db.operation"))
	}
	if cmd == "" {
		cmd = strings.ToUpper(s.Name)
	}
	return cmd, key
}

// cacheRead names the read that missed by its command and key shape
// ("GET product:?"): the code path to coalesce. The span's name says
// only the command ("get") of any key.
func cacheRead(s *model.Span, key string) string {
	cmd, _ := cacheCommand(s)
	return cmd + " " + analyze.CacheKeyShape(key)
}

// missOf reports whether a cache span is a miss, and its key.
func missOf(s *model.Span, spans []model.Span) (string, bool) {
	cmd, key := cacheCommand(s)
	if key == "" {
		return "", false
	}
	var hit *model.Value
	if v, ok := s.Attrs.Get("cache.hit"); ok {
		hit = &v
	}
	if miss, marked := missMark(s, hit); marked {
		return key, miss
	}
	// A GET later followed by a SET of the same key under the same parent
	// is a miss that was filled.
	if cmd != "GET" || len(spans) > 500 {
		return key, false
	}
	for i := range spans {
		o := &spans[i]
		if o.ParentSpanID == s.ParentSpanID && o.StartUnixNano >= s.EndUnixNano && isCacheSpan(o) {
			if c, k := cacheCommand(o); (c == "SET" || c == "SETEX" || c == "PSETEX") && k == key {
				return key, true
			}
		}
	}
	return key, false
}

// missMark reads what a cache span says of itself: cache.hit (hit, nil
// when absent), else cache.result / cache.status, else a miss event.
// marked is false when it says nothing.
func missMark(s *model.Span, hit *model.Value) (miss, marked bool) {
	if hit != nil {
		if hit.Type == model.TypeBool {
			return !hit.Bool, true
		}
		return strings.EqualFold(hit.AsString(), "false"), true
	}
	if r := strings.ToLower(s.Attrs.Str("cache.result", "cache.status")); r != "" {
		return r == "miss", true
	}
	for i := range s.Events {
		switch strings.ToLower(s.Events[i].Name) {
		case "miss", "cache_miss", "cache.miss":
			return true, true
		}
	}
	return false, false
}

func (d *Detector) observeCache(s *model.Span, spans []model.Span) {
	if !isCacheSpan(s) {
		return
	}
	key, miss := missOf(s, spans)
	if !miss {
		return
	}
	d.misses = append(d.misses, cacheMiss{s: s, key: key})
}

// flushMisses records the trace's misses under its endpoint.
func (d *Detector) flushMisses(now time.Time, root *model.Span, spans []model.Span) {
	if len(d.misses) == 0 {
		return
	}
	defer func() { d.misses = d.misses[:0] }()
	endpoint := root.Service + " " + root.Name
	for _, m := range d.misses {
		ev := missEvent{t: time.Unix(0, int64(m.s.StartUnixNano)), trace: m.s.TraceID.String(), span: m.s.SpanID.String(), service: m.s.Service,
			op: cacheRead(m.s, m.key)}
		// The fallback: the longest non-cache database call between the
		// miss and the write-back of its key (or the trace's end). The
		// first one is often the pool's connect, not the fetch.
		wroteAt := uint64(math.MaxUint64)
		for i := range spans {
			o := &spans[i]
			if o.StartUnixNano < m.s.EndUnixNano || o.TraceID != m.s.TraceID || !isCacheSpan(o) {
				continue
			}
			if c, k := cacheCommand(o); strings.HasPrefix(c, "SET") && k == m.key {
				ev.wrote = true
				wroteAt = min(wroteAt, o.StartUnixNano)
			}
		}
		var fetch *model.Span
		for i := range spans {
			o := &spans[i]
			if o.StartUnixNano < m.s.EndUnixNano || o.StartUnixNano > wroteAt || o.TraceID != m.s.TraceID || isCacheSpan(o) {
				continue
			}
			if _, ok := o.Attrs.First("db.system.name", "db.system"); ok && (fetch == nil || o.DurationNano() > fetch.DurationNano()) {
				fetch = o
			}
		}
		if fetch != nil {
			ev.fallback = model.Clip(analyze.DBShape(fetch), 120)
			ev.fallbackMS = float64(fetch.DurationNano()) / 1e6
		}
		if ev.fallback == "" {
			continue // a miss with nothing expensive behind it is not a stampede
		}
		k := [2]string{endpoint, m.key}
		r := d.stampede[k]
		if r == nil {
			r = &ring{}
			d.stampede[k] = r
		}
		r.seen = now
		if len(r.events) >= 256 {
			r.events = r.events[1:]
		}
		r.events = append(r.events, ev)
		d.checkStampede(endpoint, m.key, r)
	}
}

func (d *Detector) checkStampede(endpoint, key string, r *ring) {
	evs := r.events
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].t.Before(evs[j].t) })
	if f, ok := d.stampedeFinding(endpoint, key, evs); ok {
		d.pending[f.Key] = f
	}
}

func stampedeKey(endpoint, key string) string { return "cache_stampede/" + endpoint + "/" + key }

// stampedeFinding judges the misses of key under endpoint, in time order.
func (d *Detector) stampedeFinding(endpoint, key string, evs []missEvent) (Finding, bool) {
	// Largest set of distinct traces within StampedeWindow (two pointers).
	best, bi, bj := 0, 0, 0
	j := 0
	for i := range evs {
		for evs[i].t.Sub(evs[j].t) > d.cfg.StampedeWindow {
			j++
		}
		if n := distinctTraces(evs[j : i+1]); n > best {
			best, bi, bj = n, j, i
		}
	}
	if best < d.cfg.StampedeTraces {
		return Finding{}, false
	}
	win := evs[bi : bj+1]
	f := Finding{Key: stampedeKey(endpoint, key)}
	f.Kind, f.Severity = "cache_stampede", analyze.SeverityWarning
	var sum float64
	wrote := 0
	seen := map[string]bool{}
	for _, e := range win {
		sum += e.fallbackMS
		if e.wrote {
			wrote++
		}
		if !seen[e.trace] && len(f.ExampleTraceIDs) < 10 {
			seen[e.trace] = true
			f.ExampleTraceIDs = append(f.ExampleTraceIDs, e.trace)
			f.SpanIDs = append(f.SpanIDs, e.span)
		}
	}
	mean := sum / float64(len(win))
	spread := win[len(win)-1].t.Sub(win[0].t)
	f.Service, f.Operation = win[0].service, endpoint
	f.Time = win[0].t
	f.Title = sprintf("cache stampede on %s: %d requests to %s missed it within %.0f ms and all ran %s (mean %.1f ms)",
		key, best, endpoint, float64(spread)/1e6, model.Clip(win[0].fallback, 60), mean)
	// Impact: all but one of the fallbacks were redundant.
	f.ImpactMS = math.Round(mean*float64(best-1)*10) / 10
	f.Evidence = StampedeEvidence{Endpoint: endpoint, CacheKey: key, Traces: best, WithinMS: float64(spread) / 1e6,
		Fallback: win[0].fallback, FallbackMS: math.Round(mean*10) / 10, Rewrites: wrote, CacheService: win[0].service}
	f.Culprit = &analyze.Culprit{Service: win[0].service, Operation: win[0].op, SpanID: win[0].span,
		Reason: sprintf("%s reads %s (%s) and on a miss runs %s itself: %d requests did so at once; that read-through is where to let one request refill the key",
			win[0].service, key, win[0].op, model.Clip(win[0].fallback, 80), best)}
	f.Fix = "Let one request recompute the value while the others wait or serve the stale one: request coalescing (singleflight), a lock per key, early probabilistic refresh, or TTL jitter."
	return f, true
}

func distinctTraces(evs []missEvent) int {
	if len(evs) <= 1 {
		return len(evs)
	}
	seen := make(map[string]struct{}, len(evs))
	for _, e := range evs {
		seen[e.trace] = struct{}{}
	}
	return len(seen)
}

// ---- auth_expiry_race ----

type authEvent struct {
	t           time.Time
	trace, span string
	caller      string
	code        int
}

type authState struct {
	fails []authEvent
	succ  map[int64]int // per second of span start
	seen  time.Time
}

// recordAuth records the answer of a call to target (see
// spanKeys.authStatus) and checks for a race.
func (d *Detector) recordAuth(s *model.Span, target string, code int, fail bool) {
	st := d.auth[target]
	if st == nil {
		st = &authState{succ: map[int64]int{}}
		d.auth[target] = st
	}
	t := time.Unix(0, int64(s.StartUnixNano))
	st.seen = d.clockNow
	if !fail {
		st.succ[t.Unix()]++
		return
	}
	if len(st.fails) >= 256 {
		st.fails = st.fails[1:]
	}
	st.fails = append(st.fails, authEvent{t: t, trace: s.TraceID.String(), span: s.SpanID.String(), caller: s.Service, code: code})
	d.checkAuth(target, st)
}

func (d *Detector) checkAuth(target string, st *authState) {
	fs := st.fails
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].t.Before(fs[j].t) })
	if f, ok := d.authFinding(target, fs, st.succ); ok {
		d.pending[f.Key] = f
	}
}

func authKey(target string) string { return "auth_expiry_race/" + target }

// authFinding judges the rejected calls to target (in time order) in the
// window ending at the last one, among the successes per second succ.
func (d *Detector) authFinding(target string, fs []authEvent, succ map[int64]int) (Finding, bool) {
	last := fs[len(fs)-1].t
	var win []authEvent
	for _, e := range fs {
		if last.Sub(e.t) <= d.cfg.AuthWindow {
			win = append(win, e)
		}
	}
	if len(win) < d.cfg.AuthFailures {
		return Finding{}, false
	}
	lo, hi := win[0].t.Add(-d.cfg.AuthWindow).Unix(), last.Add(d.cfg.AuthWindow).Unix()
	succeeded := 0
	for sec, n := range succ {
		if sec >= lo && sec <= hi {
			succeeded += n
		}
	}
	if succeeded == 0 {
		return Finding{}, false // everything fails: revoked credentials, not a race
	}
	f := Finding{Key: authKey(target)}
	f.Kind, f.Severity = "auth_expiry_race", analyze.SeverityWarning
	callers, codes := map[string]bool{}, map[int]bool{}
	for _, e := range win {
		callers[e.caller] = true
		codes[e.code] = true
		if len(f.ExampleTraceIDs) < 10 {
			f.ExampleTraceIDs = append(f.ExampleTraceIDs, e.trace)
			f.SpanIDs = append(f.SpanIDs, e.span)
		}
	}
	ev := AuthRaceEvidence{Target: target, Failures: len(win), Successes: succeeded, Moment: win[len(win)/2].t,
		SpreadMS: float64(last.Sub(win[0].t)) / 1e6}
	for c := range callers {
		ev.Callers = append(ev.Callers, c)
	}
	for c := range codes {
		ev.Codes = append(ev.Codes, c)
	}
	sort.Strings(ev.Callers)
	sort.Ints(ev.Codes)
	f.Service = strings.Join(ev.Callers, ",")
	if len(ev.Callers) == 1 {
		f.Service = ev.Callers[0]
	}
	f.Operation = target
	f.Time = win[0].t
	f.Title = sprintf("%d calls to %s were rejected (%v) within %.1f s around %s while %d others succeeded: a credential expiring mid-flight",
		len(win), target, ev.Codes, ev.SpreadMS/1000, ev.Moment.UTC().Format("15:04:05"), succeeded)
	f.Evidence = ev
	// Several callers racing on one expiring token usually share the
	// refresh code; the first names the place, the reason names them all.
	f.Culprit = &analyze.Culprit{Service: ev.Callers[0], Operation: "token refresh",
		Reason: sprintf("%s %s using a token to %s until it is rejected: the token refresh runs too late", strings.Join(ev.Callers, " and "),
			map[bool]string{true: "keeps", false: "keep"}[len(ev.Callers) == 1], target)}
	f.Fix = "Refresh tokens before they expire (refresh at ~80 % of the lifetime, with a margin for clock skew and request duration) and retry once on 401 with a fresh token; share one refresh among concurrent requests."
	return f, true
}

// expireEvents drops sub-minute state that can no longer form a finding.
// In a cluster the misses stay for six evaluations at least: the owner of
// a key judges them with misses of the same moment that other nodes see
// only when their traces complete, up to the idle timeout later.
func (d *Detector) expireEvents(now time.Time, cluster bool) {
	idle := 10 * time.Minute
	keep := 2 * d.cfg.StampedeWindow
	if cluster {
		keep = max(keep, 6*d.cfg.EvalInterval)
	}
	for k, r := range d.stampede {
		if now.Sub(r.seen) > idle {
			delete(d.stampede, k)
			continue
		}
		if n := len(r.events); n > 0 {
			cut := r.events[n-1].t.Add(-keep)
			i := 0
			for i < n && r.events[i].t.Before(cut) {
				i++
			}
			r.events = r.events[i:]
		}
	}
	for k, st := range d.auth {
		if now.Sub(st.seen) > 24*time.Hour {
			delete(d.auth, k)
			continue
		}
		var newest time.Time
		if len(st.fails) > 0 {
			newest = st.fails[len(st.fails)-1].t
		}
		for sec := range st.succ {
			if t := time.Unix(sec, 0); t.After(newest) {
				newest = t
			}
		}
		cut := newest.Add(-3 * d.cfg.AuthWindow)
		for sec := range st.succ {
			if time.Unix(sec, 0).Before(cut) {
				delete(st.succ, sec)
			}
		}
		kept := st.fails[:0]
		for _, e := range st.fails {
			if !e.t.Before(cut) {
				kept = append(kept, e)
			}
		}
		st.fails = kept
	}
	for k, last := range d.errTypes {
		if now.Sub(last) > d.cfg.ErrorTypeMemory {
			delete(d.errTypes, k)
		}
	}
}

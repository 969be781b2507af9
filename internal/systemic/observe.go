package systemic

import (
	"strings"
	"time"
	"unicode"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/attribution"
	"github.com/tracedx/tracedx/internal/model"
)

// Observation comes in three parts, so that most traces are never decoded
// whole:
//
//   - ObserveSpans at ingest, with every written batch: what a span says
//     on its own (per-operation counts, latency histograms and errors, new
//     exception types, auth answers of calls that name their target);
//   - ObserveSummary once per completed trace, with a TraceSummary the
//     storage engine keeps without decoding the trace: the flows (roots);
//   - ObserveTrace for the traces that need the whole trace (NeedsTrace of
//     the OR of their spans' SpanFlags) and a uniform sample of the rest:
//     cache misses (attributed to the root's endpoint), auth answers of
//     calls whose target only the child SERVER span names, and the latency
//     samples that attribute a regression.
//
// Each part counts what the others do not, and Observe is the three at
// once.

// Flags classify a span for the storage engine, which ORs them over the
// spans of a trace (see SpanFlags and NeedsTrace).
const (
	// FlagRootFailed: a root span (no parent) that failed.
	FlagRootFailed uint32 = 1 << iota
	// FlagCacheMiss: a cache span that may be a miss or its fill:
	// cache.hit=false, cache.result/cache.status "miss", a miss,
	// cache_miss or cache.miss event, or a SET/SETEX/PSETEX command (the
	// fill after a GET miss, which only the whole trace shows).
	FlagCacheMiss
	// FlagAuthUntargeted: a CLIENT span (with a parent) whose answer
	// matters to auth_expiry_race (401/403, 2xx/3xx, gRPC 16/7/0) but that
	// names no target (peer.service, server.address, net.peer.name): only
	// the child SERVER span in the whole trace names it.
	FlagAuthUntargeted
)

// SpanFlags classifies one span. It runs for every ingested span: kinds
// and parent are checked first, attributes read in one pass only for
// CLIENT and INTERNAL spans (and for a root whose status is unset).
//
// It is conservative: every trace in which ObserveTrace would record a
// cache miss or an untargeted auth answer has a span flagged
// FlagCacheMiss or FlagAuthUntargeted. The one exception is a fill (SET)
// span of another kind than CLIENT or INTERNAL, which is not looked at.
func SpanFlags(s *model.Span) uint32 {
	root := s.ParentSpanID.IsZero()
	if s.Kind != model.KindClient && s.Kind != model.KindInternal {
		if root && failed(s) {
			return FlagRootFailed
		}
		return 0
	}
	var f uint32
	var k spanKeys
	k.scan(s.Attrs)
	if root && (s.StatusCode == model.StatusError || s.StatusCode == model.StatusUnset && k.failedHTTP()) {
		f = FlagRootFailed
	}
	// Root CLIENT spans are entry operations to the detector, not calls.
	if s.Kind == model.KindClient && !root {
		if _, _, ok := k.authStatus(); ok && emptyValue(k.target()) {
			f |= FlagAuthUntargeted
		}
	}
	if k.isCache() {
		if miss, _ := missMark(s, k.cacheHit); miss || isFillCommand(s) {
			f |= FlagCacheMiss
		}
	}
	return f
}

// NeedsTrace reports whether a trace with these flags (the OR of its
// spans' SpanFlags) must go to ObserveTrace: it may hold a cache miss or
// an auth answer that only the whole trace can attribute. Other traces
// need it only as part of the uniform sample that feeds latency
// attribution.
func NeedsTrace(flags uint32) bool {
	return flags&(FlagCacheMiss|FlagAuthUntargeted) != 0
}

// TraceSummary is what the root series need of a completed trace.
type TraceSummary struct {
	TraceID     model.TraceID
	RootSpanID  model.SpanID
	RootService string // "" when no root span arrived: the trace is not counted
	RootName    string
	RootFailed  bool
	Spans       int
	Services    []string // distinct services of the trace
	Versions    []string // parallel to Services: service.version of the service's first span, "" when unset
}

// SummaryOf summarises a whole trace: the root is the earliest-starting
// span without a parent; services and versions are in the order of their
// first span.
func SummaryOf(spans []model.Span) TraceSummary {
	return summarize(spans, nil, nil)
}

// summarize is SummaryOf appending the services and versions to the
// given buffers.
func summarize(spans []model.Span, svcs, vers []string) TraceSummary {
	t := TraceSummary{Spans: len(spans)}
	if root := rootOf(spans); root != nil {
		t.TraceID, t.RootSpanID = root.TraceID, root.SpanID
		t.RootService, t.RootName = root.Service, root.Name
		t.RootFailed = failed(root)
	}
	for i := range spans {
		s := &spans[i]
		dup := false
		for _, x := range svcs {
			if x == s.Service {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		svcs = append(svcs, s.Service)
		vers = append(vers, s.Resource.Str("service.version"))
	}
	t.Services, t.Versions = svcs, vers
	return t
}

// rootOf returns the earliest-starting span without a parent, or nil.
func rootOf(spans []model.Span) *model.Span {
	var root *model.Span
	for i := range spans {
		s := &spans[i]
		if s.ParentSpanID.IsZero() && (root == nil || s.StartUnixNano < root.StartUnixNano) {
			root = s
		}
	}
	return root
}

// Observe feeds one completed trace whole: ObserveSpans, ObserveSummary
// and ObserveTrace at once. now is the completion time.
func (d *Detector) Observe(now time.Time, spans []model.Span) {
	if len(spans) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observed(now)
	d.observeSpans(now, spans)
	sum := summarize(spans, d.svcScratch[:0], d.verScratch[:0])
	d.observeSummary(now, &sum)
	// Keep the buffers, not the strings (they may pin a decoded trace).
	clear(sum.Services)
	clear(sum.Versions)
	d.svcScratch, d.verScratch = sum.Services[:0], sum.Versions[:0]
	d.observeTrace(now, spans)
}

// ObserveSpans feeds a batch of ingested spans, of any traces in any
// order, each span once. now is the ingest time.
func (d *Detector) ObserveSpans(now time.Time, spans []model.Span) {
	if len(spans) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observed(now)
	d.observeSpans(now, spans)
}

// ObserveSummary feeds one completed trace's summary (see SummaryOf).
// now is the completion time.
func (d *Detector) ObserveSummary(now time.Time, t TraceSummary) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observed(now)
	d.observeSummary(now, &t)
}

// ObserveTrace feeds one completed trace whole, for what only the whole
// trace shows; the spans must also have gone through ObserveSpans and the
// trace through ObserveSummary. Call it for the traces NeedsTrace selects
// and a uniform sample of the others. now is the completion time.
func (d *Detector) ObserveTrace(now time.Time, spans []model.Span) {
	if len(spans) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observed(now)
	d.observeTrace(now, spans)
}

// observed advances the detector's clocks. Called with d.mu held.
func (d *Detector) observed(now time.Time) {
	d.seen(now)
	if d.started.IsZero() {
		d.started = now
	}
	d.clockNow = now
}

func (d *Detector) observeSpans(now time.Time, spans []model.Span) {
	bi := d.idx(now)
	for i := range spans {
		s := &spans[i]
		entry := s.ParentSpanID.IsZero() || s.Kind == model.KindServer || s.Kind == model.KindConsumer
		call := !entry && s.Kind == model.KindClient
		var k spanKeys
		if call || s.StatusCode == model.StatusUnset {
			k.scan(s.Attrs)
		}
		fail := s.StatusCode == model.StatusError || s.StatusCode == model.StatusUnset && k.failedHTTP()
		if fail {
			d.observeErrorType(now, s)
		}
		switch {
		case entry:
			sr := d.seriesOf(d.ops, opKey{s.Service, s.Name}, now)
			b := sr.bucketAt(bi)
			b.n++
			b.hist[bin(s.DurationNano())]++
			if fail {
				b.errs++
				sr.errRefs = pushRef(sr.errRefs, ref{trace: s.TraceID, span: s.SpanID, t: now}, 5)
			}
		case call:
			d.contention.observe(now, s, first(k.dbQueryText, k.dbStatement))
			if code, bad, ok := k.authStatus(); ok {
				if v := k.target(); !emptyValue(v) {
					d.recordAuth(s, v.AsString(), code, bad)
				}
			}
		}
	}
}

func (d *Detector) observeSummary(now time.Time, t *TraceSummary) {
	if t.RootService == "" {
		return
	}
	sr := d.seriesOf(d.roots, opKey{t.RootService, t.RootName}, now)
	b := sr.bucketAt(d.idx(now))
	spans := float64(t.Spans)
	b.n++
	b.spans += spans
	if b.versions == nil {
		b.versions = map[string]*vstat{}
	}
	if b.services == nil {
		b.services = map[string]float64{}
	}
	var buf [64]byte
	for i, svc := range t.Services {
		b.services[svc]++
		if i >= len(t.Versions) || t.Versions[i] == "" {
			continue
		}
		// "service version", built on the stack: the lookup does not
		// allocate, only a new key does.
		k := append(append(append(buf[:0], svc...), ' '), t.Versions[i]...)
		x := b.versions[string(k)]
		if x == nil {
			x = &vstat{}
			b.versions[string(k)] = x
		}
		x.n++
		x.spans += spans
	}
	r := ref{trace: t.TraceID, span: t.RootSpanID, t: now}
	if t.RootFailed {
		b.errs++
		sr.errRefs = pushRef(sr.errRefs, r, 5)
	}
	sr.recent = pushRef(sr.recent, r, 3)
}

func (d *Detector) observeTrace(now time.Time, spans []model.Span) {
	d.observeCulprits(spans)
	var traceFeatures *attribution.Features
	features := func() attribution.Features {
		if traceFeatures == nil {
			f := attribution.Extract(spans)
			traceFeatures = &f
		}
		return *traceFeatures
	}
	for i := range spans {
		s := &spans[i]
		switch {
		case s.ParentSpanID.IsZero() || s.Kind == model.KindServer || s.Kind == model.KindConsumer:
			// Latency samples for attribution; the counts are ObserveSpans'.
			sr := d.seriesOf(d.ops, opKey{s.Service, s.Name}, now)
			r := ref{trace: s.TraceID, span: s.SpanID, t: now}
			ms := float64(s.DurationNano()) / 1e6
			switch {
			case sr.baseP95MS > 0 && ms >= d.cfg.LatencyFactor*sr.baseP95MS:
				if now.Sub(sr.lastSlow) >= 100*time.Millisecond {
					sr.lastSlow = now
					sr.slow = pushSample(sr.slow, sample{ref: r, f: features(), dur: ms}, 100)
					d.marks = append(d.marks, selfMark{i, true})
				}
			case now.Sub(sr.lastNorm) >= time.Second:
				sr.lastNorm = now
				sr.normal = pushSample(sr.normal, sample{ref: r, f: features(), dur: ms}, 100)
				d.marks = append(d.marks, selfMark{i, false})
			}
		case s.Kind == model.KindClient:
			// Auth answers of calls that name no target: the callee's
			// SERVER span does. The others are ObserveSpans'.
			var k spanKeys
			k.scan(s.Attrs)
			if code, bad, ok := k.authStatus(); ok && emptyValue(k.target()) {
				for j := range spans {
					if spans[j].ParentSpanID == s.SpanID && spans[j].Kind == model.KindServer {
						if target := spans[j].Service; target != "" {
							d.recordAuth(s, target, code, bad)
						}
						break
					}
				}
			}
		}
		if s.Kind == model.KindClient || s.Kind == model.KindInternal {
			d.observeCache(s, spans)
		}
	}
	d.learnSelfTimes(spans, d.marks)
	d.marks = d.marks[:0]
	root := rootOf(spans)
	if root == nil {
		d.misses = d.misses[:0]
		return
	}
	d.flushMisses(now, root, spans)
}

// ---- attributes read on the ingest path ----

// spanKeys points at the attributes the span-level detectors read, each
// at its first occurrence (as Attrs.Get finds it); nil when absent. One
// pass over the attributes fills it.
type spanKeys struct {
	httpStatus, httpStatusOld               *model.Value // http.response.status_code, http.status_code
	grpcStatus                              *model.Value // rpc.grpc.status_code
	rpcStatus                               *model.Value // rpc.response.status_code (the code's name)
	peerService, serverAddress, netPeerName *model.Value
	cacheHit                                *model.Value
	dbSystemName, dbSystem                  *model.Value
	dbQueryText, dbStatement                *model.Value
}

// scan fills k (zero) from attrs.
func (k *spanKeys) scan(attrs model.Attrs) {
	for i := range attrs {
		a := &attrs[i]
		var p **model.Value
		switch a.Key {
		case "http.response.status_code":
			p = &k.httpStatus
		case "http.status_code":
			p = &k.httpStatusOld
		case "rpc.grpc.status_code":
			p = &k.grpcStatus
		case "rpc.response.status_code":
			p = &k.rpcStatus
		case "peer.service":
			p = &k.peerService
		case "server.address":
			p = &k.serverAddress
		case "net.peer.name":
			p = &k.netPeerName
		case "cache.hit":
			p = &k.cacheHit
		case "db.system.name":
			p = &k.dbSystemName
		case "db.system":
			p = &k.dbSystem
		case "db.query.text":
			p = &k.dbQueryText
		case "db.statement":
			p = &k.dbStatement
		default:
			continue
		}
		if *p == nil {
			*p = &a.Value
		}
	}
}

// first returns the first present of vs, as Attrs.First does by key.
func first(vs ...*model.Value) *model.Value {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// failedHTTP is failed() for a span whose status is unset.
func (k *spanKeys) failedHTTP() bool {
	if v := first(k.httpStatus, k.httpStatusOld); v != nil {
		if c, ok := v.AsInt(); ok && (c >= 500 || c == 408 || c == 429) {
			return true
		}
	}
	return false
}

// authStatus classifies a call's answer: auth failure, success, or neither.
func (k *spanKeys) authStatus() (code int, fail, ok bool) {
	if v := first(k.httpStatus, k.httpStatusOld); v != nil {
		c, _ := v.AsInt()
		switch {
		case c == 401 || c == 403:
			return int(c), true, true
		case c >= 200 && c < 400:
			return int(c), false, true
		}
		return int(c), false, false
	}
	if c, has := k.grpcCode(); has {
		switch c {
		case 16, 7: // UNAUTHENTICATED, PERMISSION_DENIED
			return int(c), true, true
		case 0:
			return 0, false, true
		}
	}
	return 0, false, false
}

// grpcCode is the gRPC status code as a number, or by its name under the
// current RPC conventions (otelgrpc's rpc.response.status_code).
func (k *spanKeys) grpcCode() (int64, bool) {
	if v := k.grpcStatus; v != nil {
		return v.AsInt()
	}
	if v := k.rpcStatus; v != nil {
		return analyze.GRPCCodeByName(v.AsString())
	}
	return 0, false
}

// target is the attribute naming a call's target (its string form is
// the target), nil when none is set.
func (k *spanKeys) target() *model.Value {
	return first(k.peerService, k.serverAddress, k.netPeerName)
}

// emptyValue reports whether v is absent or renders as "" (AsString),
// without rendering it.
func emptyValue(v *model.Value) bool {
	if v == nil {
		return true
	}
	switch v.Type {
	case model.TypeString, model.TypeArray, model.TypeMap:
		return v.Str == ""
	case model.TypeBool, model.TypeInt, model.TypeDouble:
		return false
	}
	return v.AsString() == ""
}

// isCache is isCacheSpan on scanned attributes.
func (k *spanKeys) isCache() bool {
	if k.cacheHit != nil {
		return true
	}
	v := first(k.dbSystemName, k.dbSystem)
	if v == nil {
		return false
	}
	if v.Type == model.TypeString {
		return cacheSystems[strings.ToLower(v.Str)] // no copy when already lower case
	}
	return cacheSystems[strings.ToLower(v.AsString())]
}

// isFillCommand reports whether a cache span's command, as cacheCommand
// reads it, is SET, SETEX or PSETEX, without allocating.
func isFillCommand(s *model.Span) bool {
	cmd := firstField(s.Attrs.Str("db.query.text", "db.statement"))
	if cmd == "" {
		cmd = s.Attrs.Str("db.operation.name", "db.operation")
	}
	if cmd == "" {
		cmd = s.Name
	}
	return strings.EqualFold(cmd, "SET") || strings.EqualFold(cmd, "SETEX") || strings.EqualFold(cmd, "PSETEX")
}

// firstField is strings.Fields(s)[0], or "".
func firstField(s string) string {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return s[:i]
	}
	return s
}

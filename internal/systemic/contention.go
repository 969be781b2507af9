package systemic

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// concurrency_contention: a call whose duration grows with how many calls
// of the same operation run at the same moment, across all traces. One
// trace cannot show it (each request sees only its own wait); the store
// can: bucket the recent calls of an operation by how many others were
// running when each started, and compare the median duration of the
// crowded calls with that of the calls that started (almost) alone. A
// lock, a small pool or a single-threaded backend makes the crowded ones
// several times slower.
//
// The samples live in a per-operation ring on the observation clock and
// are not snapshotted: after a restart the window refills within minutes.

// ContentionConfig holds the thresholds of concurrency_contention. Zero
// fields take the defaults.
type ContentionConfig struct {
	// Window: calls observed within it are compared (default 10 min).
	Window time.Duration
	// MaxCallsPerOp bounds the ring of each operation (default 512) and
	// MaxOps the operations tracked (default 500; later ones are not
	// tracked until one goes quiet for a Window): at 48 bytes a call, at
	// most ~12 MB.
	MaxCallsPerOp int
	MaxOps        int
	// MinSamples in the window and MinBucket in each of the low and high
	// concurrency groups (defaults 40 and 10).
	MinSamples, MinBucket int
	// Factor: median duration of crowded calls ≥ Factor x that of lone
	// ones (default 2), and at least MinDelta slower (default 10 ms).
	Factor   float64
	MinDelta time.Duration
	// Every is how often the (sorting) evaluation runs (default 1 min).
	Every time.Duration
}

func (c ContentionConfig) withDefaults() ContentionConfig {
	orDefault(&c.Window, 10*time.Minute)
	orDefault(&c.MaxCallsPerOp, 512)
	orDefault(&c.MaxOps, 500)
	orDefault(&c.MinSamples, 40)
	orDefault(&c.MinBucket, 10)
	orDefault(&c.Factor, 2)
	orDefault(&c.MinDelta, 10*time.Millisecond)
	orDefault(&c.Every, time.Minute)
	return c
}

func orDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// ContentionEvidence is the evidence of a concurrency_contention finding.
type ContentionEvidence struct {
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	WindowS   float64 `json:"window_s"`
	Calls     int     `json:"calls"`
	// LowConcurrency / HighConcurrency bound the two groups compared: calls
	// that started while at most LowConcurrency others were running, and
	// while at least HighConcurrency were.
	LowConcurrency  int     `json:"low_concurrency"`
	HighConcurrency int     `json:"high_concurrency"`
	LowP50MS        float64 `json:"low_p50_ms"`
	HighP50MS       float64 `json:"high_p50_ms"`
	Factor          float64 `json:"factor"`
	// SlopeMS is the least-squares growth of the duration per extra call
	// running at the start.
	SlopeMS float64             `json:"slope_ms_per_concurrent_call"`
	Buckets []ConcurrencyBucket `json:"buckets"`
	// CallerRuntime is the calling service's telemetry.sdk.language when
	// that runtime runs all its requests' code on one thread ("nodejs",
	// "python"): its own busy thread is then a suspect as much as the
	// callee.
	CallerRuntime string `json:"caller_runtime,omitempty"`
}

// ConcurrencyBucket is the median duration of the calls that started with
// Concurrency others running (the last bucket holds that many or more).
type ConcurrencyBucket struct {
	Concurrency int     `json:"concurrency"`
	Calls       int     `json:"calls"`
	P50MS       float64 `json:"p50_ms"`
}

type callSample struct {
	start, end uint64
	seen       int64 // observation clock, unix ns
	trace      model.TraceID
	span       model.SpanID
}

type callRing struct {
	calls []callSample
	next  int
	// stmt is the first statement seen, for the finding's operation.
	stmt string
	// runtime is the caller's telemetry.sdk.language when it runs every
	// request's code on one thread (Node.js' event loop, Python's GIL).
	runtime string
}

// callKey is what calls are tracked under: the span's service and name
// and, for a database call, its statement's shape (stmtShapeHash).
// Instrumentations name database spans by operation and table ("SELECT",
// "SELECT shop.products"): a quick point lookup and a slow report under
// one name would pass for one call that slows down when the report runs
// concurrently.
type callKey struct {
	service, name string
	shape         uint64
}

type contentionTracker struct {
	cfg      ContentionConfig
	ops      map[callKey]*callRing
	lastEval time.Time
}

func newContentionTracker(cfg ContentionConfig) *contentionTracker {
	return &contentionTracker{cfg: cfg.withDefaults(), ops: map[callKey]*callRing{}}
}

// stmtShapeHash hashes a statement's shape in one pass without
// allocating, as ingest pays it for every database call: literals do not
// count (quoted strings, and runs of digits, placeholders, commas and
// spaces, which also folds IN lists of any length), the rest does. Two
// statements of one shape hash alike; NormalizeStatement, which writes
// the shape out, runs only for a finding.
func stmtShapeHash(q string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	inRun := false
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		if quote != 0 {
			if c == quote {
				quote = 0
			}
			continue
		}
		switch {
		case c == '\'' || c == '"':
			quote = c
		case c >= '0' && c <= '9' || c == '?' || c == '$' || c == ',' || c == ' ' || c == '\t' || c == '\n' || c == ':':
		default:
			inRun = false
			h = (h ^ uint64(c)) * prime
			continue
		}
		if !inRun {
			inRun = true
			h = (h ^ '#') * prime
		}
	}
	return h
}

// observe records one outgoing call; stmt is its database statement,
// when it has one. Called with the detector's lock held.
func (c *contentionTracker) observe(now time.Time, s *model.Span, stmt *model.Value) {
	if s.EndUnixNano <= s.StartUnixNano {
		return
	}
	k := callKey{service: s.Service, name: s.Name}
	q := ""
	if stmt != nil {
		if q = stmt.AsString(); q != "" {
			k.shape = stmtShapeHash(q)
		}
	}
	r := c.ops[k]
	if r == nil {
		if len(c.ops) >= c.cfg.MaxOps {
			return
		}
		// The statement may alias a decode buffer that is reused.
		r = &callRing{stmt: strings.Clone(q), runtime: oneThreadRuntime(s)}
		c.ops[k] = r
	}
	x := callSample{start: s.StartUnixNano, end: s.EndUnixNano, seen: now.UnixNano(), trace: s.TraceID, span: s.SpanID}
	if len(r.calls) < c.cfg.MaxCallsPerOp {
		r.calls = append(r.calls, x)
		return
	}
	r.calls[r.next] = x
	r.next = (r.next + 1) % len(r.calls)
}

// inFlightAtStart returns, for each call, how many other calls of the
// operation were running when it started. Counting at the start, not over
// the whole call, matters: a call that is long for any reason overlaps
// more others, and would fake a correlation.
func inFlightAtStart(calls []callSample) []int {
	starts := make([]uint64, len(calls))
	ends := make([]uint64, len(calls))
	for i, x := range calls {
		starts[i], ends[i] = x.start, x.end
	}
	slices.Sort(starts)
	slices.Sort(ends)
	out := make([]int, len(calls))
	for i, x := range calls {
		began := sort.Search(len(starts), func(j int) bool { return starts[j] > x.start })
		ended := sort.Search(len(ends), func(j int) bool { return ends[j] > x.start })
		out[i] = max(began-ended-1, 0)
	}
	return out
}

func medianMS(durs []float64) float64 {
	if len(durs) == 0 {
		return 0
	}
	s := slices.Clone(durs)
	slices.Sort(s)
	return s[len(s)/2]
}

// evaluate checks every tracked operation. Called with the detector's lock
// held, from Evaluate.
func (c *contentionTracker) evaluate(now time.Time, add func(Finding, time.Duration)) {
	if !c.lastEval.IsZero() && now.Sub(c.lastEval) < c.cfg.Every {
		return
	}
	c.lastEval = now
	keys := slices.SortedFunc(maps.Keys(c.ops), func(a, b callKey) int {
		return cmp.Or(cmp.Compare(a.service, b.service), cmp.Compare(a.name, b.name), cmp.Compare(a.shape, b.shape))
	})
	for _, k := range keys {
		r := c.ops[k]
		var calls []callSample
		for _, x := range r.calls {
			if now.UnixNano()-x.seen <= int64(c.cfg.Window) {
				calls = append(calls, x)
			}
		}
		if len(calls) == 0 {
			delete(c.ops, k)
			continue
		}
		if f, ok := c.check(k, r, calls); ok {
			add(f, c.cfg.Window)
		}
	}
}

func (c *contentionTracker) check(k callKey, r *callRing, calls []callSample) (Finding, bool) {
	stmt := r.stmt
	if len(calls) < c.cfg.MinSamples {
		return Finding{}, false
	}
	conc := inFlightAtStart(calls)
	sorted := slices.Clone(conc)
	slices.Sort(sorted)
	// Low: the quarter of calls with the fewest neighbours; high: the
	// quarter with the most. Ties widen a group rather than split it.
	lowMax := sorted[len(sorted)/4]
	highMin := sorted[len(sorted)*3/4]
	if highMin <= lowMax {
		return Finding{}, false
	}
	// At most 16 buckets in the evidence, however crowded.
	width := highMin/16 + 1
	var low, high []float64
	var sx, sy, sxx, sxy float64
	byConc := map[int][]float64{}
	var hot []callSample
	for i, x := range calls {
		d := float64(x.end-x.start) / 1e6
		n := float64(conc[i])
		sx, sy, sxx, sxy = sx+n, sy+d, sxx+n*n, sxy+n*d
		switch {
		case conc[i] <= lowMax:
			low = append(low, d)
		case conc[i] >= highMin:
			high = append(high, d)
			hot = append(hot, x)
		}
		b := min(conc[i], highMin) / width * width
		byConc[b] = append(byConc[b], d)
	}
	if len(low) < c.cfg.MinBucket || len(high) < c.cfg.MinBucket {
		return Finding{}, false
	}
	lp, hp := medianMS(low), medianMS(high)
	if lp <= 0 || hp < c.cfg.Factor*lp || hp-lp < float64(c.cfg.MinDelta)/1e6 {
		return Finding{}, false
	}
	n := float64(len(calls))
	slope := 0.0
	if den := n*sxx - sx*sx; den > 0 {
		slope = (n*sxy - sx*sy) / den
	}
	op := k.name
	if stmt != "" {
		op = model.Clip(analyze.NormalizeStatement(stmt), 160)
	}
	ev := ContentionEvidence{Service: k.service, Operation: op, WindowS: c.cfg.Window.Seconds(), Calls: len(calls),
		LowConcurrency: lowMax, HighConcurrency: highMin, LowP50MS: round1(lp), HighP50MS: round1(hp),
		Factor: math.Round(hp/lp*100) / 100, SlopeMS: round1(slope)}
	for b := 0; b <= highMin; b += width {
		if ds := byConc[b]; len(ds) > 0 {
			ev.Buckets = append(ev.Buckets, ConcurrencyBucket{Concurrency: b, Calls: len(ds), P50MS: round1(medianMS(ds))})
		}
	}
	// Examples: the slowest crowded calls.
	sort.Slice(hot, func(i, j int) bool { return hot[i].end-hot[i].start > hot[j].end-hot[j].start })
	f := Finding{Service: k.service, Operation: op, Key: "concurrency_contention/" + k.service + "/" + op}
	f.Kind, f.Severity = "concurrency_contention", analyze.SeverityWarning
	if hp >= 4*lp {
		f.Severity = analyze.SeverityCritical
	}
	for i := 0; i < len(hot) && i < 5; i++ {
		f.ExampleTraceIDs = append(f.ExampleTraceIDs, hot[i].trace.String())
		f.SpanIDs = append(f.SpanIDs, hot[i].span.String())
	}
	f.ImpactMS = round1(hp - lp)
	f.Title = sprintf("%s %s takes %.1fx longer when %d+ run at once (median %.0f ms) than when at most %d do (%.0f ms): they queue for something shared",
		k.service, op, hp/lp, highMin+1, hp, lowMax+1, lp)
	f.Evidence = ev
	f.Fix = "Calls of this operation wait for each other: find what they share (a lock or mutex around it, a connection or " +
		"worker pool, a single-threaded backend); example traces may carry lock_contention findings naming it. Shorten or " +
		"split the critical section, size the pool for the concurrency seen, or scale the backend."
	if r.runtime != "" {
		// The caller's own thread is shared too: a span ends when the
		// runtime gets to the answer, not when the answer arrives.
		ev.CallerRuntime = r.runtime
		f.Evidence = ev
		f.Fix += sprintf(" %s runs on %s, whose one thread runs every request's code: a call's span ends only when "+
			"that thread gets to its answer, so synchronous work in any request (time with no child span in %s's "+
			"requests, CPU near one core) makes every call in flight look slower: rule that out before the callee.",
			k.service, runtimeName(r.runtime), k.service)
	}
	f.Culprit = &analyze.Culprit{Service: k.service, Operation: op,
		Reason: sprintf("its calls slow down %.1fx as more of them overlap: a resource they share serialises them", hp/lp)}
	return f, true
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// oneThreadRuntime returns the span's telemetry.sdk.language when that
// runtime runs a process's request code on one thread at a time: Node.js
// (one event loop) and Python (the GIL), or "".
func oneThreadRuntime(s *model.Span) string {
	switch lang := s.Resource.Str("telemetry.sdk.language"); lang {
	case "nodejs", "python":
		return lang
	}
	return ""
}

func runtimeName(lang string) string {
	if lang == "nodejs" {
		return "Node.js"
	}
	return "Python (one thread at a time under the GIL)"
}

// Package rootcause ranks the services and operations that most likely
// caused an incident, by comparing the traces of an incident window with
// those of a baseline window: which service's time on the critical path
// grew (its own time, or the time spent in front of it when callers wait
// for it to start), where the new errors start, which calls appeared or
// vanished, and which places the per-trace findings blame. docs/rootcause.md
// describes the scoring.
package rootcause

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Options narrow and tune a ranking.
type Options struct {
	// Service (and Operation) compare the subtree under the first span of
	// that endpoint in each trace instead of the whole trace; traces
	// without it are left out.
	Service, Operation string
	// BaselineFindings and IncidentFindings are the findings of each
	// window; their culprits are one vote among the evidence.
	BaselineFindings, IncidentFindings []analyze.Finding
	// Limit caps the causes returned (default 10).
	Limit int
}

// Report is the ranking; its JSON is the contract of GET /api/v1/rootcause
// and `tracedx rootcause --format json`.
type Report struct {
	Causes []Cause `json:"causes"`
}

// Cause is one suspect with the evidence against it. Score is the share of
// the incident it explains (0..1; the scores of a report sum to at most
// about 1).
type Cause struct {
	Service   string     `json:"service"`
	Operation string     `json:"operation"`
	Score     float64    `json:"score"`
	Evidence  []Evidence `json:"evidence"`
	Examples  Examples   `json:"examples"`
}

// Examples are one trace of each window for the comparison view.
type Examples struct {
	Baseline string `json:"baseline,omitempty"`
	Incident string `json:"incident,omitempty"`
}

// Evidence kinds.
const (
	KindSelfTime     = "self_time"
	KindCalleeDelay  = "callee_delay"
	KindHostDelay    = "host_delay"
	KindErrorOrigin  = "error_origin"
	KindCallsAppear  = "calls_appeared"
	KindCallsVanish  = "calls_vanished"
	KindFindingBlame = "finding_culprit"
)

// Evidence is one fact behind a cause: a sentence and its numbers. Only the
// numbers that fit the kind are set.
type Evidence struct {
	Kind      string   `json:"kind"`
	Operation string   `json:"operation,omitempty"`
	Text      string   `json:"text"`
	Baseline  *float64 `json:"baseline_ms,omitempty"`
	Incident  *float64 `json:"incident_ms,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"`
	// AddedMS is the mean critical-path time per trace this adds.
	AddedMS *float64 `json:"added_ms,omitempty"`
	// SlowTraceShare is the share of slow incident traces (slower than
	// the baseline's p90) with the key on their critical path.
	SlowTraceShare *float64 `json:"slow_trace_share,omitempty"`
	BaselineRate   *float64 `json:"baseline_rate,omitempty"`
	IncidentRate   *float64 `json:"incident_rate,omitempty"`
	Count          *int     `json:"count,omitempty"`
}

// ErrNoTraces reports a window without any usable trace.
var ErrNoTraces = errors.New("no traces")

// Weights of the latency signals: critical-path time decides, time off the
// path breaks ties and catches faults on branches with slack.
const (
	weightCritical = 0.75
	weightOffPath  = 0.25
	// weightFindings is the share of the score given to findings' culprits.
	weightFindings = 0.1
	// minGapMS is the rise of the client-minus-server gap, beyond ms
	// rounding on both hosts, before a callee-start delay is claimed.
	minGapMS = 2.0
	// minRelative and minErrorRise are the least latency rise (relative
	// to the baseline) and error-rate rise that count as a change; five
	// and ten times them are the rises a cause must explain to score 1.
	minRelative  = 0.02
	minErrorRise = 0.005
	// minScore drops causes explaining less than 1 % of the incident.
	minScore = 0.01
)

// Rank compares the incident traces with the baseline traces and returns
// the causes, best first.
func Rank(baseline, incident [][]model.Span, opt Options) (Report, error) {
	if opt.Limit <= 0 {
		opt.Limit = 10
	}
	b, i := newWindow(), newWindow()
	for _, tr := range baseline {
		b.add(tr, opt.Service, opt.Operation)
	}
	for _, tr := range incident {
		i.add(tr, opt.Service, opt.Operation)
	}
	scope := ""
	if opt.Service != "" {
		scope = " through endpoint " + strings.TrimSpace(opt.Service+" "+opt.Operation)
	}
	if len(b.traces) == 0 {
		return Report{}, fmt.Errorf("%w in the baseline window%s", ErrNoTraces, scope)
	}
	if len(i.traces) == 0 {
		return Report{}, fmt.Errorf("%w in the incident window%s", ErrNoTraces, scope)
	}
	r := ranker{b: b, i: i, nb: float64(len(b.traces)), ni: float64(len(i.traces))}
	return Report{Causes: r.rank(opt)}, nil
}

type ranker struct {
	b, i   *window
	nb, ni float64
}

// keyScore is one key's share of each signal.
type keyScore struct {
	key                 Key
	cp, off, err, found float64
	total               float64
}

func (r *ranker) keys() []Key {
	set := map[Key]bool{}
	for k := range r.b.keys {
		set[k] = true
	}
	for k := range r.i.keys {
		set[k] = true
	}
	out := make([]Key, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(a, c int) bool {
		if out[a].Service != out[c].Service {
			return out[a].Service < out[c].Service
		}
		return out[a].Operation < out[c].Operation
	})
	return out
}

// rise is how much a per-trace total f grew from the baseline to the
// incident, endpoint by endpoint, weighted by the incident's mix of
// endpoints: a shift in the mix alone rises nothing. An endpoint new in
// the incident counts from zero.
func (r *ranker) rise(f func(*window) float64) float64 {
	var out float64
	for e, is := range r.i.strata {
		n := float64(len(is.traces))
		v := f(is) / n
		if bs := r.b.strata[e]; bs != nil && len(bs.traces) > 0 {
			v -= f(bs) / float64(len(bs.traces))
		}
		out += n / r.ni * v
	}
	return out
}

// usual is the baseline's per-trace mean of f in the incident's mix of
// endpoints.
func (r *ranker) usual(f func(*window) float64) float64 {
	var out float64
	for e, is := range r.i.strata {
		if bs := r.b.strata[e]; bs != nil && len(bs.traces) > 0 {
			out += float64(len(is.traces)) / r.ni * f(bs) / float64(len(bs.traces))
		}
	}
	return out
}

func (r *ranker) get(w *window, k Key) *keyStat {
	if s := w.keys[k]; s != nil {
		return s
	}
	return &keyStat{}
}

// shares normalises per-key rises by the sum of the positive rises, so each
// signal splits 1 among the keys that got worse. The sum is taken as at
// least floor, so that noise between two healthy windows does not look
// like a full explanation.
func shares(rise map[Key]float64, floor float64) map[Key]float64 {
	var total float64
	for _, v := range rise {
		if v > 0 {
			total += v
		}
	}
	total = max(total, floor)
	out := make(map[Key]float64, len(rise))
	if total <= 0 {
		return out
	}
	for k, v := range rise {
		out[k] = v / total
	}
	return out
}

func (r *ranker) rank(opt Options) []Cause {
	keys := r.keys()
	cpRise, offRise, errRise, findRise := map[Key]float64{}, map[Key]float64{}, map[Key]float64{}, map[Key]float64{}
	for _, k := range keys {
		cpRise[k] = r.rise(func(w *window) float64 { s := r.get(w, k); return s.cpOwn + s.cpFront })
		offRise[k] = r.rise(func(w *window) float64 { s := r.get(w, k); return s.selfOwn + s.selfFront })
		errRise[k] = r.rise(func(w *window) float64 { return float64(r.get(w, k).origins) })
	}
	hosts := r.hostEdges()
	r.moveHostTime(hosts, cpRise, offRise)
	for _, k := range keys {
		cpRise[k] = ownPart(cpRise[k], offRise[k])
	}
	for k, v := range culpritCounts(opt.IncidentFindings) {
		findRise[k] += float64(v) / r.ni
	}
	for k, v := range culpritCounts(opt.BaselineFindings) {
		findRise[k] -= float64(v) / r.nb
	}
	// A culprit may name what has no spans of its own (a database).
	for k := range findRise {
		if _, ok := cpRise[k]; !ok {
			keys = append(keys, k)
		}
	}
	baseCP := r.usual(func(w *window) float64 { return w.cpMS })
	baseSelf := r.usual(func(w *window) float64 {
		var sum float64
		for _, st := range w.keys {
			sum += st.selfOwn + st.selfFront
		}
		return sum
	})
	cpShare := shares(cpRise, minRelative*5*baseCP)
	offShare := shares(offRise, minRelative*5*baseSelf)
	errShare, findShare := shares(errRise, minErrorRise*10), shares(findRise, 0)

	// How much of the incident is latency and how much is errors: the
	// relative rise of the mean critical path against the rise of the
	// failing share.
	latency := 0.0
	if baseCP > 0 {
		latency = r.rise(func(w *window) float64 { return w.cpMS }) / baseCP
	}
	errs := r.rise(func(w *window) float64 { return float64(w.failed) })
	if latency < minRelative {
		latency = 0
	}
	if errs < minErrorRise {
		errs = 0
	}
	wLat, wErr := 1.0, 0.0
	if latency+errs > 0 {
		wLat, wErr = latency/(latency+errs), errs/(latency+errs)
	}
	findW := 0.0
	if len(findShare) > 0 {
		findW = weightFindings
	}

	bySvc := map[string][]keyScore{}
	for _, k := range keys {
		ks := keyScore{key: k, cp: cpShare[k], off: offShare[k], err: errShare[k], found: findShare[k]}
		ks.total = (1-findW)*(wLat*(weightCritical*ks.cp+weightOffPath*ks.off)+wErr*ks.err) + findW*ks.found
		bySvc[k.Service] = append(bySvc[k.Service], ks)
	}
	var causes []Cause
	for svc, list := range bySvc {
		var score, errPart float64
		best := 0
		for j, ks := range list {
			score += ks.total
			errPart += wErr * ks.err
			if ks.total > list[best].total {
				best = j
			}
		}
		if score < minScore {
			continue
		}
		c := Cause{Service: svc, Operation: list[best].key.Operation, Score: math.Round(score*1000) / 1000}
		c.Evidence = r.evidence(svc, list, wLat, wErr, opt)
		if moved := hosts[svc]; len(moved) > 0 && wLat > 0 {
			c.Evidence = append([]Evidence{r.hostEvidence(svc, moved)}, c.Evidence...)
		}
		c.Examples = r.examples(svc, errPart > score/2)
		causes = append(causes, c)
	}
	sort.SliceStable(causes, func(a, c int) bool {
		if causes[a].Score != causes[c].Score {
			return causes[a].Score > causes[c].Score
		}
		return causes[a].Service < causes[c].Service
	})
	if len(causes) > opt.Limit {
		causes = causes[:opt.Limit]
	}
	if causes == nil {
		causes = []Cause{}
	}
	return causes
}

// ownPart is the part of a key's change on the critical path that its own
// time explains. When a parallel branch gets slower the critical path
// moves onto it, and every span of that branch gains critical-path time
// although only one of them changed; its own time (on the path or not)
// says which.
func ownPart(cp, own float64) float64 {
	if cp > 0 {
		return min(cp, max(own, 0))
	}
	return max(cp, min(own, 0))
}

func culpritCounts(fs []analyze.Finding) map[Key]int {
	out := map[Key]int{}
	for _, f := range fs {
		if f.Culprit != nil && f.Culprit.Service != "" {
			out[Key{f.Culprit.Service, f.Culprit.Operation}]++
		}
	}
	return out
}

func fp(v float64) *float64 {
	v = math.Round(v*100) / 100
	return &v
}

func ip(v int) *int { return &v }

// slowShare is the share of slow incident traces (slower than the
// baseline's p90) on whose critical path the service spends time.
func (r *ranker) slowShare(svc string) float64 {
	base := make([]float64, len(r.b.traces))
	for j, t := range r.b.traces {
		base[j] = t.cpMS
	}
	p90 := quantile(base, 0.9)
	slow, with := 0, 0
	for _, t := range r.i.traces {
		if t.cpMS <= p90 {
			continue
		}
		slow++
		if t.svcCP[svc] > 0 {
			with++
		}
	}
	if slow == 0 {
		return 0
	}
	return float64(with) / float64(slow)
}

// evidence lists the facts behind a service's score, strongest first.
func (r *ranker) evidence(svc string, list []keyScore, wLat, wErr float64, opt Options) []Evidence {
	sort.SliceStable(list, func(a, c int) bool { return list[a].total > list[c].total })
	var out []Evidence
	slow := r.slowShare(svc)
	for _, ks := range list {
		if ks.total <= 0 && ks.found <= 0 {
			continue
		}
		k := ks.key
		bs, is := r.get(r.b, k), r.get(r.i, k)
		name := strings.TrimSpace(k.Service + " " + k.Operation)
		if wLat > 0 && (ks.cp > 0 || ks.off > 0) {
			ownB, ownI := median(bs.ownSamples), median(is.ownSamples)
			added := r.rise(func(w *window) float64 { return r.get(w, k).cpOwn })
			if added > 0 && ownI > ownB {
				ev := Evidence{Kind: KindSelfTime, Operation: k.Operation, Baseline: fp(ownB), Incident: fp(ownI), AddedMS: fp(added), SlowTraceShare: fp(slow)}
				ev.Text = fmt.Sprintf("p50 self time of %s rose from %.1f to %.1f ms", name, ownB, ownI)
				if ownB > 0 {
					ev.Ratio = fp(ownI / ownB)
					ev.Text = fmt.Sprintf("p50 self time of %s rose %.1fx (%.1f → %.1f ms)", name, ownI/ownB, ownB, ownI)
				}
				ev.Text += fmt.Sprintf(", adding %.1f ms per request on the critical path; %s is on the critical path of %.0f %% of slow traces", added, k.Service, 100*slow)
				out = append(out, ev)
			}
			gapB, gapI := median(bs.gapSamples), median(is.gapSamples)
			if len(is.gapSamples) > 0 && gapI-gapB > max(minGapMS, 0.2*gapB) {
				ev := Evidence{Kind: KindCalleeDelay, Operation: k.Operation, Baseline: fp(gapB), Incident: fp(gapI), AddedMS: fp(r.rise(func(w *window) float64 { return r.get(w, k).cpFront }))}
				if gapB > 0 {
					ev.Ratio = fp(gapI / gapB)
				}
				ev.Text = fmt.Sprintf("callers of %s wait %.1f ms more outside its server span (p50 client-minus-server time %.1f → %.1f ms): the time is lost in the network or a queue in front of %s, not in the callers",
					name, gapI-gapB, gapB, gapI, k.Service)
				out = append(out, ev)
			}
		}
		if wErr > 0 && ks.err > 0 {
			rb, ri := float64(bs.origins)/r.nb, float64(is.origins)/r.ni
			ev := Evidence{Kind: KindErrorOrigin, Operation: k.Operation, BaselineRate: fp(rb), IncidentRate: fp(ri), Count: ip(is.origins)}
			ev.Text = fmt.Sprintf("errors start in %s in %.0f %% of incident traces (baseline %.0f %%): the deepest failing span whose children did not fail", name, 100*ri, 100*rb)
			if 2*is.timeouts > is.origins {
				ev.Text = fmt.Sprintf("errors start in %s in %.0f %% of incident traces (baseline %.0f %%): its callers time out "+
					"while it is still working", name, 100*ri, 100*rb)
			}
			if is.exception != "" {
				ev.Text += " (" + is.exception + ")"
			}
			out = append(out, ev)
		}
		if ks.found > 0 {
			n := culpritCounts(opt.IncidentFindings)[k]
			out = append(out, Evidence{Kind: KindFindingBlame, Operation: k.Operation, Count: ip(n),
				Text: fmt.Sprintf("%d finding(s) of the incident window name %s as the place to fix", n, name)})
		}
	}
	// Calls that appeared or vanished: a crashed or bypassed service, new
	// retries or fallbacks. Reported, not scored (their time is already in
	// the critical path).
	for _, ks := range list {
		k := ks.key
		rb, ri := float64(r.get(r.b, k).presence)/r.nb, float64(r.get(r.i, k).presence)/r.ni
		name := strings.TrimSpace(k.Service + " " + k.Operation)
		switch {
		case rb < 0.05 && ri >= 0.2:
			out = append(out, Evidence{Kind: KindCallsAppear, Operation: k.Operation, BaselineRate: fp(rb), IncidentRate: fp(ri),
				Text: fmt.Sprintf("%s appears in %.0f %% of incident traces, %.0f %% before", name, 100*ri, 100*rb)})
		case rb >= 0.2 && ri < 0.05:
			out = append(out, Evidence{Kind: KindCallsVanish, Operation: k.Operation, BaselineRate: fp(rb), IncidentRate: fp(ri),
				Text: fmt.Sprintf("%s vanished: in %.0f %% of incident traces, %.0f %% before", name, 100*ri, 100*rb)})
		}
	}
	if out == nil {
		out = []Evidence{}
	}
	return out
}

// examples picks, for the comparison view, the incident trace where the
// service cost the most critical-path time (or, when the cause is mostly
// errors, one where its error started) and a baseline trace of median
// duration that passes through it.
func (r *ranker) examples(svc string, byError bool) Examples {
	var ex Examples
	var best float64
	for _, t := range r.i.traces {
		if byError && t.startsError(svc) {
			ex.Incident = t.id
			break
		}
		if t.svcCP[svc] > best {
			best, ex.Incident = t.svcCP[svc], t.id
		}
	}
	var with []traceRec
	for _, t := range r.b.traces {
		if _, ok := t.svcCP[svc]; ok {
			with = append(with, t)
		}
	}
	if len(with) == 0 {
		with = r.b.traces
	}
	sort.SliceStable(with, func(a, c int) bool { return with[a].cpMS < with[c].cpMS })
	if len(with) > 0 {
		ex.Baseline = with[len(with)/2].id
	}
	return ex
}

func (t *traceRec) startsError(svc string) bool {
	for o := range t.origins {
		if strings.HasPrefix(o, svc+"\x00") {
			return true
		}
	}
	return false
}

package systemic

import (
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/attribution"
)

// LatencyShare holds a node's latencies of one entry operation: the
// histograms of its baseline and window and, while its p95 is up, its
// samples for the attribution and the culprit.
type LatencyShare struct {
	Service     string  `json:"service"`
	Operation   string  `json:"op"`
	BaseSeconds float64 `json:"base_s"`
	BaseN       float64 `json:"base_n"`
	N           float64 `json:"n"`
	// BaseHist and Hist count the requests per histogram bin (only the
	// bins with any).
	BaseHist map[int]float64 `json:"base_hist,omitempty"`
	Hist     map[int]float64 `json:"hist,omitempty"`
	Slow     []SampleShare   `json:"slow,omitempty"`
	Normal   []SampleShare   `json:"normal,omitempty"`
	Self     []SelfShare     `json:"self,omitempty"`
}

// SampleShare is a request kept for the attribution: its duration and
// the attributes of its trace.
type SampleShare struct {
	RefShare
	MS     float64            `json:"ms"`
	Labels []string           `json:"labels,omitempty"`
	Nums   map[string]float64 `json:"nums,omitempty"`
}

// SelfShare is the self time an operation spends under the entry in its
// slow and in its usual samples (the one named "\x00samples" counts them).
type SelfShare struct {
	Service   string  `json:"service"`
	Operation string  `json:"op"`
	Slow      float64 `json:"slow"`
	Normal    float64 `json:"normal"`
}

// latencyView is what evalLatency judges of one entry operation: one
// node's series, or the sum of every node's.
type latencyView struct {
	key          opKey
	baseSec      float64
	base, window *bucket
	slow, normal []sample
	selfs        map[opKey]*selfAgg
}

// localLatency are this node's entry operations at now, sorted: with
// all, every one with requests, else those whose baseline is ready.
func (d *Detector) localLatency(now time.Time, all bool) []latencyView {
	out := make([]latencyView, 0, len(d.ops))
	for k, s := range d.ops {
		if !all && !d.baselineReady(s) {
			continue
		}
		w := d.window(s, now, d.cfg.LatencyWindow)
		if w.n == 0 && s.base.n == 0 {
			continue
		}
		out = append(out, latencyView{key: k, baseSec: s.baseSec, base: &s.base, window: w, slow: s.slow, normal: s.normal, selfs: d.selfs[k]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key.service+out[i].key.op < out[j].key.service+out[j].key.op })
	return out
}

func (v *latencyView) share(now time.Time, cfg Config) LatencyShare {
	l := LatencyShare{Service: v.key.service, Operation: v.key.op, BaseSeconds: v.baseSec, BaseN: v.base.n, N: v.window.n,
		BaseHist: sparseHist(&v.base.hist), Hist: sparseHist(&v.window.hist)}
	// The samples (a hundred usual ones per operation, a kilobyte each)
	// go only with an operation whose p95 rose in this node's share, as
	// the cluster's does: the judgement needs the counts of every node,
	// the attribution and the culprit a fair sample.
	p95, base := quantileMS(&v.window.hist, 0.95), quantileMS(&v.base.hist, 0.95)
	if base <= 0 || p95 < cfg.LatencyFactor*base || p95-base < float64(cfg.LatencyMinDelta)/1e6 {
		return l
	}
	for _, x := range v.slow {
		if now.Sub(x.t) <= cfg.LatencyWindow {
			l.Slow = append(l.Slow, sampleShare(x))
		}
	}
	for _, x := range v.normal {
		l.Normal = append(l.Normal, sampleShare(x))
	}
	for o, a := range v.selfs {
		l.Self = append(l.Self, SelfShare{Service: o.service, Operation: o.op, Slow: a.slow, Normal: a.normal})
	}
	return l
}

func sparseHist(h *[nBins]float64) map[int]float64 {
	out := map[int]float64{}
	for i, c := range h {
		if c != 0 {
			out[i] = c
		}
	}
	return out
}

func sampleShare(x sample) SampleShare {
	return SampleShare{RefShare: RefShare{Trace: x.trace.String(), Span: x.span.String(), Time: x.t}, MS: x.dur, Labels: x.f.Labels, Nums: x.f.Nums}
}

func samplesOf(ss []SampleShare) []sample {
	out := make([]sample, 0, len(ss))
	for _, x := range ss {
		if r := refsOf([]RefShare{x.RefShare}); len(r) == 1 {
			out = append(out, sample{ref: r[0], f: attribution.Features{Labels: x.Labels, Nums: x.Nums}, dur: x.MS})
		}
	}
	return out
}

// latestSamples keeps the latest n samples, in time order, as one node
// keeps them.
func latestSamples(ss []sample, n int) []sample {
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].t.Before(ss[j].t) })
	if len(ss) > n {
		ss = ss[len(ss)-n:]
	}
	return ss
}

// mergeLatency sums the entry operations of every node: histograms and
// self times add up, the baseline covers the time of the node that saw
// the operation first, and the latest hundred samples of each kind
// speak, as on one node.
func mergeLatency(local []latencyView, peers []Share) []latencyView {
	at := map[opKey]int{}
	var out []latencyView
	view := func(k opKey, baseSec float64) *latencyView {
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, latencyView{key: k, base: &bucket{}, window: &bucket{}, selfs: map[opKey]*selfAgg{}})
		}
		v := &out[i]
		v.baseSec = max(v.baseSec, baseSec)
		return v
	}
	addSelf := func(v *latencyView, o opKey, slow, normal float64) {
		a := v.selfs[o]
		if a == nil {
			a = &selfAgg{}
			v.selfs[o] = a
		}
		a.slow += slow
		a.normal += normal
	}
	for _, l := range local {
		v := view(l.key, l.baseSec)
		addBucket(v.base, &bucket{n: l.base.n, hist: l.base.hist}, 1)
		addBucket(v.window, &bucket{n: l.window.n, hist: l.window.hist}, 1)
		v.slow = append(v.slow, l.slow...)
		v.normal = append(v.normal, l.normal...)
		for o, a := range l.selfs {
			addSelf(v, o, a.slow, a.normal)
		}
	}
	for _, p := range peers {
		for _, l := range p.Latency {
			v := view(opKey{l.Service, l.Operation}, l.BaseSeconds)
			v.base.n += l.BaseN
			v.window.n += l.N
			for b, c := range l.BaseHist {
				if b >= 0 && b < nBins {
					v.base.hist[b] += c
				}
			}
			for b, c := range l.Hist {
				if b >= 0 && b < nBins {
					v.window.hist[b] += c
				}
			}
			v.slow = append(v.slow, samplesOf(l.Slow)...)
			v.normal = append(v.normal, samplesOf(l.Normal)...)
			for _, a := range l.Self {
				addSelf(v, opKey{a.Service, a.Operation}, a.Slow, a.Normal)
			}
		}
	}
	for i := range out {
		out[i].slow = latestSamples(out[i].slow, 100)
		out[i].normal = latestSamples(out[i].normal, 100)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key.service+out[i].key.op < out[j].key.service+out[j].key.op })
	return out
}

// Package attribution ranks the attribute values that are over-represented
// in a selection of traces (slow, failed) against a baseline — the
// "BubbleUp" question: what do the slow checkouts have in common?
// ("92 % of slow checkouts have product.variant_count > 50, against 3 % of
// the others".)
//
// A trace has an attribute value when any of its spans carries it, as a
// span or resource attribute. Numeric values are compared as ranges
// (key > t, key ≤ t) with thresholds taken from rounded quantiles of both
// sides; attributes with too many distinct values (ids, urls, statements)
// say nothing about a group and are dropped.
package attribution

import (
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// Features are the attribute values of one trace.
type Features struct {
	// Labels holds "key\x00value" of categorical values, each once.
	Labels []string
	// Nums holds the largest value of each numeric key.
	Nums map[string]float64
}

// ignored keys never characterise a group: ids, free text, ports.
var ignored = map[string]bool{
	"db.statement": true, "db.query.text": true, "url.full": true, "http.url": true, "http.target": true,
	"url.path": true, "url.query": true, "exception.message": true, "exception.stacktrace": true,
	"user_agent.original": true, "http.user_agent": true, "service.instance.id": true, "process.pid": true,
	"thread.id": true, "thread.name": true, "code.lineno": true, "code.line.number": true, "client.port": true,
	"net.sock.peer.port": true, "network.peer.port": true, "net.peer.port": true, "server.port": true,
	"messaging.message.id": true, "process.command_line": true, "process.command_args": true,
	"telemetry.sdk.version": true, "telemetry.sdk.name": true, "telemetry.sdk.language": true,
	"otel.scope.name": true, "otel.scope.version": true,
}

func skipKey(k string) bool {
	if ignored[k] {
		return true
	}
	return strings.HasSuffix(k, ".id") && k != "k8s.node.id" || strings.HasSuffix(k, "_id") ||
		strings.Contains(k, "trace") && strings.Contains(k, "id")
}

// Extract collects the features of a trace.
func Extract(spans []model.Span) Features {
	f := Features{Nums: map[string]float64{}}
	seen := map[string]bool{}
	add := func(attrs model.Attrs) {
		for i := range attrs {
			a := &attrs[i]
			if skipKey(a.Key) {
				continue
			}
			v := a.Value
			switch v.Type {
			case model.TypeInt, model.TypeDouble:
				x, _ := v.AsFloat()
				if old, ok := f.Nums[a.Key]; !ok || x > old {
					f.Nums[a.Key] = x
				}
				if v.Type == model.TypeDouble {
					continue
				}
			case model.TypeString, model.TypeBool:
			default:
				continue
			}
			s := v.AsString()
			if len(s) == 0 || len(s) > 100 || (v.Type == model.TypeString && analyze.LooksLikeID(s)) {
				continue
			}
			l := a.Key + "\x00" + s
			if !seen[l] {
				seen[l] = true
				f.Labels = append(f.Labels, l)
			}
		}
	}
	var lastRes model.Attrs
	for i := range spans {
		add(spans[i].Attrs)
		// Spans of one service share their resource; skip the repeats.
		if r := spans[i].Resource; len(r) > 0 && (len(lastRes) == 0 || &r[0] != &lastRes[0]) {
			add(r)
			lastRes = r
		}
	}
	return f
}

// Value is one over-represented attribute value.
type Value struct {
	Key string `json:"key"`
	// Op is "=", ">" or "<=".
	Op    string `json:"op"`
	Value string `json:"value"`
	// Label reads "product.variant_count > 50".
	Label          string  `json:"label"`
	SelectionShare float64 `json:"selection_share"`
	BaselineShare  float64 `json:"baseline_share"`
	SelectionCount int     `json:"selection_count"`
	BaselineCount  int     `json:"baseline_count"`
	// Lift is selection_share / baseline_share (capped at 1000 when the
	// baseline never has the value).
	Lift float64 `json:"lift"`
}

// Options tune ranking.
type Options struct {
	Limit int // values returned, default 10
	// MinDiff is the least selection_share - baseline_share (default 0.1).
	MinDiff float64
	// MaxDistinct drops keys with more distinct values than this (default 50).
	MaxDistinct int
}

// Traces ranks attribute values of sel against base.
func Traces(sel, base [][]model.Span, opt Options) []Value {
	fs := make([]Features, len(sel))
	for i := range sel {
		fs[i] = Extract(sel[i])
	}
	fb := make([]Features, len(base))
	for i := range base {
		fb[i] = Extract(base[i])
	}
	return Rank(fs, fb, opt)
}

// Rank ranks the features of sel against base, most over-represented
// first, at most one numeric range per key.
func Rank(sel, base []Features, opt Options) []Value {
	if opt.Limit <= 0 {
		opt.Limit = 10
	}
	if opt.MinDiff <= 0 {
		opt.MinDiff = 0.1
	}
	if opt.MaxDistinct <= 0 {
		opt.MaxDistinct = 50
	}
	if len(sel) == 0 || len(base) == 0 {
		return []Value{}
	}
	type cnt struct{ s, b int }
	labels := map[string]*cnt{}
	for i := range sel {
		for _, l := range sel[i].Labels {
			c := labels[l]
			if c == nil {
				c = &cnt{}
				labels[l] = c
			}
			c.s++
		}
	}
	for i := range base {
		for _, l := range base[i].Labels {
			c := labels[l]
			if c == nil {
				c = &cnt{}
				labels[l] = c
			}
			c.b++
		}
	}
	distinct, present := map[string]int{}, map[string]int{}
	for l, c := range labels {
		k := l[:strings.IndexByte(l, 0)]
		distinct[k]++
		present[k] += c.s + c.b
	}
	ns, nb := float64(len(sel)), float64(len(base))
	var out []Value
	for l, c := range labels {
		i := strings.IndexByte(l, 0)
		k, v := l[:i], l[i+1:]
		if d := distinct[k]; d > opt.MaxDistinct || (d >= 10 && float64(d) > 0.5*float64(present[k])) {
			continue
		}
		ps, pb := float64(c.s)/ns, float64(c.b)/nb
		if c.s < 2 || ps-pb < opt.MinDiff {
			continue
		}
		out = append(out, mk(k, "=", v, c.s, c.b, ps, pb))
	}
	// Numeric ranges.
	keys := map[string]bool{}
	for i := range sel {
		for k := range sel[i].Nums {
			keys[k] = true
		}
	}
	for k := range keys {
		var vs, vb []float64
		for i := range sel {
			if x, ok := sel[i].Nums[k]; ok {
				vs = append(vs, x)
			}
		}
		for i := range base {
			if x, ok := base[i].Nums[k]; ok {
				vb = append(vb, x)
			}
		}
		var best *Value
		for _, t := range thresholds(vs, vb) {
			for _, op := range []string{">", "<="} {
				cs, cb := countCmp(vs, op, t), countCmp(vb, op, t)
				ps, pb := float64(cs)/ns, float64(cb)/nb
				if cs < 2 || ps-pb < opt.MinDiff {
					continue
				}
				v := mk(k, op, strconv.FormatFloat(t, 'f', -1, 64), cs, cb, ps, pb)
				// Ties prefer the tighter range: the larger ">" threshold,
				// the smaller "<=" one.
				if best == nil || diff(v) > diff(*best)+1e-9 ||
					math.Abs(diff(v)-diff(*best)) <= 1e-9 && op == best.Op && (op == ">" && t > num(*best) || op == "<=" && t < num(*best)) {
					vv := v
					best = &vv
				}
			}
		}
		if best != nil {
			out = append(out, *best)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if d1, d2 := diff(out[i]), diff(out[j]); d1 != d2 {
			return d1 > d2
		}
		if out[i].Lift != out[j].Lift {
			return out[i].Lift > out[j].Lift
		}
		return out[i].Label < out[j].Label
	})
	if len(out) > opt.Limit {
		out = out[:opt.Limit]
	}
	if out == nil {
		out = []Value{}
	}
	return out
}

func diff(v Value) float64 { return v.SelectionShare - v.BaselineShare }

func num(v Value) float64 { f, _ := strconv.ParseFloat(v.Value, 64); return f }

func mk(k, op, v string, cs, cb int, ps, pb float64) Value {
	lift := 1000.0
	if pb > 0 {
		lift = math.Min(1000, ps/pb)
	}
	return Value{Key: k, Op: op, Value: v, Label: k + " " + op + " " + v, SelectionShare: round3(ps), BaselineShare: round3(pb),
		SelectionCount: cs, BaselineCount: cb, Lift: math.Round(lift*100) / 100}
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func countCmp(v []float64, op string, t float64) int {
	n := 0
	for _, x := range v {
		if op == ">" && x > t || op == "<=" && x <= t {
			n++
		}
	}
	return n
}

// thresholds are rounded quantiles of both sides: rounding down to one or
// two significant digits makes labels a person would write ("> 50").
func thresholds(a, b []float64) []float64 {
	set := map[float64]bool{}
	for _, v := range [][]float64{a, b} {
		if len(v) == 0 {
			continue
		}
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		for _, q := range []float64{0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95} {
			x := s[int(q*float64(len(s)-1))]
			set[nice(x, 1)] = true
			set[nice(x, 2)] = true
		}
	}
	out := make([]float64, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Float64s(out)
	return out
}

func nice(x float64, digits int) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(math.Abs(x)))-float64(digits-1))
	return math.Floor(x/p) * p
}

package traceql

import (
	"fmt"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// Labels and values of compare()'s output, as Tempo names them (Grafana's
// Traces Drilldown reads them).
const (
	compareMetaType      = "__meta_type"
	compareMetaError     = "__meta_error"
	compareBaseline      = "baseline"
	compareSelection     = "selection"
	compareBaselineTotal = "baseline_total"
	compareSelTotal      = "selection_total"
	compareTooManyValues = "__too_many_values__"
)

// maxCompareValues bounds the distinct attribute values compare() counts
// before topN cuts them, so one high-cardinality attribute (a URL with
// ids) cannot exhaust memory.
const maxCompareValues = 200_000

// compareAcc counts, per group (baseline 0, selection 1), every
// attribute value of the spans per bucket.
type compareAcc struct {
	values [2]map[string]map[string]*compareCount // attribute → value key → counts
	totals [2]map[string][]float64                // attribute → spans having it
	n      int
}

type compareCount struct {
	val    Value
	counts []float64
	sum    float64
}

func newCompareAcc() *compareAcc {
	c := &compareAcc{}
	for g := range c.values {
		c.values[g] = map[string]map[string]*compareCount{}
		c.totals[g] = map[string][]float64{}
	}
	return c
}

// observeCompare counts span i of tc into bucket b.
func (m *MetricsEvaluator) observeCompare(tc *traceCtx, i int32, b int) error {
	args := m.q.Metrics.Compare
	s := &tc.spans[i]
	g := 0
	inWindow := args.Start == 0 || (s.StartUnixNano > args.Start && s.StartUnixNano <= args.End)
	if inWindow {
		if e := args.Selection.Expr; e == nil {
			g = 1
		} else if v := tc.eval(e, i); v.Type == TypeBool && v.B {
			g = 1
		}
	}
	c := m.cmp
	add := func(attr string, v Value) error {
		vals := c.values[g][attr]
		if vals == nil {
			vals = map[string]*compareCount{}
			c.values[g][attr] = vals
		}
		key := v.String()
		cc := vals[key]
		if cc == nil {
			if c.n >= maxCompareValues {
				return fmt.Errorf("%w: compare() met more than %d attribute values; narrow the query", ErrTooManySeries, maxCompareValues)
			}
			c.n++
			cc = &compareCount{val: v, counts: make([]float64, m.buckets)}
			vals[key] = cc
		}
		cc.counts[b]++
		cc.sum++
		tot := c.totals[g][attr]
		if tot == nil {
			tot = make([]float64, m.buckets)
			c.totals[g][attr] = tot
		}
		tot[b]++
		return nil
	}
	if err := add("name", Value{Type: TypeString, S: s.Name}); err != nil {
		return err
	}
	if err := add("status", Value{Type: TypeStatus, I: int64(s.StatusCode)}); err != nil {
		return err
	}
	if err := add("kind", Value{Type: TypeKind, I: int64(s.Kind)}); err != nil {
		return err
	}
	for _, set := range []struct {
		prefix string
		attrs  model.Attrs
	}{{"resource.", s.Resource}, {"span.", s.Attrs}} {
		for _, a := range set.attrs {
			if err := add(set.prefix+a.Key, fromModel(a.Value)); err != nil {
				return err
			}
		}
	}
	return nil
}

// compareResult renders the counts: per group and attribute the topN
// values by span count, an error series for attributes with more values,
// and per group and attribute the total.
func (m *MetricsEvaluator) compareResult(ts func(int) int64) []Series {
	c, topN := m.cmp, m.q.Metrics.Compare.TopN
	samples := func(counts []float64) []Sample {
		out := make([]Sample, len(counts))
		for b, v := range counts {
			out[b] = Sample{TimestampMs: ts(b), Value: v}
		}
		return out
	}
	meta := func(v string) Label { return Label{Key: compareMetaType, Value: Value{Type: TypeString, S: v}} }
	var out []Series
	tooMany := map[string]bool{}
	for g, groupName := range []string{compareBaseline, compareSelection} {
		for attr, vals := range c.values[g] {
			list := make([]*compareCount, 0, len(vals))
			for _, cc := range vals {
				list = append(list, cc)
			}
			sort.Slice(list, func(i, j int) bool {
				if list[i].sum != list[j].sum {
					return list[i].sum > list[j].sum
				}
				return list[i].val.String() < list[j].val.String()
			})
			if len(list) > topN {
				tooMany[attr] = true
				list = list[:topN]
			}
			for _, cc := range list {
				out = append(out, Series{Labels: []Label{meta(groupName), {Key: attr, Value: cc.val}}, Samples: samples(cc.counts)})
			}
		}
	}
	for attr := range tooMany {
		out = append(out, Series{Labels: []Label{{Key: compareMetaError, Value: Value{Type: TypeString, S: compareTooManyValues}}, {Key: attr}}})
	}
	for g, groupName := range []string{compareBaselineTotal, compareSelTotal} {
		for attr, counts := range c.totals[g] {
			out = append(out, Series{Labels: []Label{meta(groupName), {Key: attr}}, Samples: samples(counts)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return labelKey(out[i].Labels) < labelKey(out[j].Labels) })
	return out
}

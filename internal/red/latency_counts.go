package red

import (
	"context"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/red/tsdb"
)

const peerCountsTimeout = 10 * time.Second

// EntryCounts is what one entry operation (server and consumer spans)
// handled over a window: requests, failures, how many were slower than a
// threshold, and the latency quantiles.
type EntryCounts struct {
	Service   string
	Operation string
	Count     uint64
	Errors    uint64
	// Slow counts requests whose histogram bucket lies at or above the
	// threshold; a bucket straddling it counts in proportion (±12%, the
	// histogram's resolution).
	Slow                uint64
	P50MS, P95MS, P99MS float64
}

// EntryOperationCounts summarises every entry operation of service (all
// services when "") over [start, end), counting requests slower than
// slowerMS when it is positive. Alert rules need counts, not rates, to
// compute error and latency budgets. In a cluster the counts are the
// whole cluster's (the rule evaluations have no request context: a peer
// gets peerCountsTimeout to answer).
func (m *Metrics) EntryOperationCounts(service string, start, end time.Time, slowerMS float64) ([]EntryCounts, error) {
	w, err := makeWindow(start, end, end.Sub(start))
	if err != nil {
		return nil, err
	}
	filter := tsdb.Part{K: kindFilter{entry: true}.kinds()}
	if service != "" {
		filter.A = []string{service}
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerCountsTimeout)
	defer cancel()
	groups, _, err := m.collect(ctx, w, filter, func(tsdb.Key) bool { return true },
		func(k tsdb.Key) groupKey { return groupKey{k.A, k.B, -1} })
	if err != nil && len(groups) == 0 {
		return nil, err
	}
	out := make([]EntryCounts, 0, len(groups))
	for g, aggs := range groups {
		tot := total(aggs)
		c := EntryCounts{Service: g.service, Operation: g.op, Count: tot.Count, Errors: tot.Errors,
			P50MS: tot.QuantileMS(0, 0.5), P95MS: tot.QuantileMS(0, 0.95), P99MS: tot.QuantileMS(0, 0.99)}
		if slowerMS > 0 {
			c.Slow = slowerThan(&tot.H[0], slowerMS*1000)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Operation < out[j].Operation
	})
	return out, err
}

// total merges the steps of one group.
func total(aggs []*tsdb.Agg) *tsdb.Agg {
	var tot tsdb.Agg
	for _, a := range aggs {
		if a != nil {
			tot.Merge(a)
		}
	}
	return &tot
}

func slowerThan(h *[tsdb.NumBuckets]uint64, us float64) uint64 {
	var slow float64
	for i, n := range h {
		if n == 0 {
			continue
		}
		lo, hi := tsdb.BucketLower(i), tsdb.BucketUpper(i)
		switch {
		case lo >= us:
			slow += float64(n)
		case hi > us:
			slow += float64(n) * (hi - us) / (hi - lo)
		}
	}
	return uint64(slow + 0.5)
}

package v1

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/summaryarchive"
)

// GoneSummaries finds the summaries of traces whose spans retention
// deleted (internal/summaryarchive), none of them still stored.
type GoneSummaries interface {
	SearchGone(ctx context.Context, q store.Query) ([]summaryarchive.Entry, error)
}

// searchAll runs q on the store and, with Deps.Archive, on the summaries
// of traces retention deleted: newest first, at most q.Limit. gone maps
// each result whose trace is no longer stored to its recorded sampling
// decision.
func (a *api) searchAll(ctx context.Context, q store.Query) (sums []model.TraceSummary, gone map[model.TraceID]string, err error) {
	sums, err = a.d.Store.Search(ctx, q)
	if err != nil || a.d.Archive == nil {
		return sums, nil, err
	}
	old, err := a.d.Archive.SearchGone(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("archived summaries: %w", err)
	}
	if len(old) == 0 {
		return sums, nil, nil
	}
	gone = make(map[model.TraceID]string, len(old))
	live := make(map[model.TraceID]bool, len(sums))
	for i := range sums {
		live[sums[i].TraceID] = true
	}
	for _, e := range old {
		// A trace still partly stored is the store's answer.
		if !live[e.Summary.TraceID] {
			gone[e.Summary.TraceID] = e.Sampled
			sums = append(sums, e.Summary)
		}
	}
	// Stable: the store's own order among equal starts stays.
	slices.SortStableFunc(sums, func(x, y model.TraceSummary) int { return cmp.Compare(y.StartUnixNano, x.StartUnixNano) })
	if q.Limit > 0 && len(sums) > q.Limit {
		sums = sums[:q.Limit]
	}
	return sums, gone, nil
}

// markSummary fills what a search result says about its trace's sampling
// decision and whether the trace is still stored.
func (a *api) markSummary(j *SummaryJSON, gone map[model.TraceID]string, id model.TraceID) {
	if reason, ok := gone[id]; ok {
		j.Sampled, j.TraceAvailable = reason, new(false)
		if a.d.TraceRetention != nil {
			if r := a.d.TraceRetention(reason); r > 0 {
				j.RetentionDays = r.Hours() / 24
			}
		}
		return
	}
	if a.d.Sampled != nil {
		j.Sampled = a.d.Sampled(id)
	}
}

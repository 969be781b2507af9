package v1

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// scanCap bounds how many traces a sorted search or the duration plot
// looks at: enough for an hour of a busy demo, small enough that the
// summaries (index only, no span reads) stay a few MB.
const scanCap = 20000

// FindingBadge is a finding of a search result, enough for a badge and a
// link to its span.
type FindingBadge struct {
	Kind     string  `json:"kind"`
	Severity string  `json:"severity"`
	Title    string  `json:"title"`
	ImpactMS float64 `json:"impact_ms"`
	SpanID   string  `json:"span_id,omitempty"`
}

// rankedSummary is a search result with its findings.
type rankedSummary struct {
	SummaryJSON
	ImpactMS float64        `json:"impact_ms"`
	Findings []FindingBadge `json:"findings"`
	src      int            // index in the store's answer
}

// sortedSearchResponse is the body of GET /api/v1/search when sort= or
// findings= is given.
type sortedSearchResponse struct {
	Traces []rankedSummary `json:"traces"`
	Count  int             `json:"count"`
	Limit  int             `json:"limit"`
	Sort   string          `json:"sort"`
	// Scanned is how many matching traces the order was chosen from;
	// Capped says the range held more than scanCap.
	Scanned int  `json:"scanned"`
	Capped  bool `json:"capped,omitempty"`
}

// searchSorted serves /api/v1/search with sort=newest|longest|spans|impact
// and findings=true (badges from the findings of each trace). Without
// either it is the plain newest-first search.
func (a *api) searchSorted(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	order := q.Get("sort")
	withFindings := q.Get("findings") == "true" || q.Get("findings") == "1"
	switch order {
	case "", "newest", "longest", "spans", "impact":
	default:
		a.fail(w, r, badf("sort: want newest, longest, spans or impact, got %q", order))
		return
	}
	if (order == "" || order == "newest") && !withFindings {
		a.search(w, r)
		return
	}
	if order == "" {
		order = "newest"
	}
	sq, err := a.ParseSearch(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit := sq.Limit
	if order != "newest" {
		sq.Limit = scanCap
	}
	sums, gone, err := a.searchAll(r.Context(), sq)
	if err != nil {
		a.fail(w, r, fmt.Errorf("searching: %w", err))
		return
	}
	resp := sortedSearchResponse{Limit: limit, Sort: order, Scanned: len(sums), Capped: order != "newest" && len(sums) >= scanCap}
	out := make([]rankedSummary, len(sums))
	for i := range sums {
		out[i].SummaryJSON = summaryJSON(&sums[i])
		if _, ok := gone[sums[i].TraceID]; ok {
			a.markSummary(&out[i].SummaryJSON, gone, sums[i].TraceID)
		}
		out[i].src = i
	}
	// Impact order needs every candidate's findings; other orders only the
	// page's.
	if order == "impact" {
		if err := a.attachFindings(r.Context(), sums, out); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	sortSummaries(out, order)
	if len(out) > limit {
		out = out[:limit]
	}
	if withFindings && order != "impact" {
		page := make([]model.TraceSummary, len(out))
		for i := range out {
			page[i] = sums[out[i].src]
		}
		if err := a.attachFindings(r.Context(), page, out); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	if !withFindings {
		for i := range out {
			out[i].Findings = nil
		}
	}
	resp.Traces, resp.Count = out, len(out)
	writeJSON(w, http.StatusOK, resp)
}

func sortSummaries(out []rankedSummary, order string) {
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		switch order {
		case "longest":
			if a.DurationMS != b.DurationMS {
				return a.DurationMS > b.DurationMS
			}
		case "spans":
			if a.SpanCount != b.SpanCount {
				return a.SpanCount > b.SpanCount
			}
		case "impact":
			if a.ImpactMS != b.ImpactMS {
				return a.ImpactMS > b.ImpactMS
			}
			if len(a.Findings) != len(b.Findings) {
				return len(a.Findings) > len(b.Findings)
			}
		}
		return a.StartUnixNano > b.StartUnixNano
	})
}

// attachFindings fills Findings and ImpactMS of out[i] from sums[i]'s
// stored findings.
func (a *api) attachFindings(ctx context.Context, sums []model.TraceSummary, out []rankedSummary) error {
	for i := range out {
		out[i].Findings = []FindingBadge{}
	}
	if a.d.Findings == nil {
		return nil
	}
	for i := range sums {
		fs, ok, err := a.d.Findings.TraceFindings(ctx, sums[i].TraceID)
		if err != nil {
			return fmt.Errorf("findings of trace %s: %w", sums[i].TraceID, err)
		}
		if !ok {
			continue
		}
		for _, f := range fs {
			b := FindingBadge{Kind: f.Kind, Severity: string(f.Severity), Title: f.Title, ImpactMS: f.ImpactMS}
			if len(f.SpanIDs) > 0 {
				b.SpanID = f.SpanIDs[0]
			}
			out[i].Findings = append(out[i].Findings, b)
			out[i].ImpactMS += f.ImpactMS
		}
	}
	return nil
}

// DurationPoint is one trace on the duration plot.
type DurationPoint struct {
	TraceID       string  `json:"trace_id"`
	StartUnixNano uint64  `json:"start_unix_nano"`
	DurationMS    float64 `json:"duration_ms"`
	// EndpointMS is the root span's own duration: the measure the group
	// comparison filters on (a trace with an async consumer outlives it).
	EndpointMS    float64 `json:"endpoint_ms"`
	RootService   string  `json:"root_service"`
	RootOperation string  `json:"root_operation"`
	Errors        int     `json:"error_count"`
}

type durationsResponse struct {
	// Total matching traces in the range (up to scanCap); Points is a
	// sample of them that keeps every slow outlier.
	Total  int             `json:"total"`
	Capped bool            `json:"capped,omitempty"`
	Points []DurationPoint `json:"points"`
}

// durations serves GET /api/v1/search/durations: the search parameters,
// over the whole range, as a sample of at most points traces (default
// 400, max 2000): the slowest fifth of the sample are the slowest traces,
// the rest spread evenly over time.
func (a *api) durations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := parseLimit(q.Get("points"), 400, 2000)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sq, err := a.ParseSearch(withoutLimit(q))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sq.Limit = scanCap
	sums, gone, err := a.searchAll(r.Context(), sq)
	if err != nil {
		a.fail(w, r, fmt.Errorf("searching: %w", err))
		return
	}
	pick := samplePoints(sums, n)
	resp := durationsResponse{Total: len(sums), Capped: len(sums) >= scanCap, Points: make([]DurationPoint, len(pick))}
	for k, i := range pick {
		s := &sums[i]
		resp.Points[k] = DurationPoint{TraceID: s.TraceID.String(), StartUnixNano: s.StartUnixNano, DurationMS: ms(s.DurationNano()),
			RootService: s.RootService, RootOperation: s.RootName, Errors: s.ErrorCount}
		resp.Points[k].EndpointMS = resp.Points[k].DurationMS
	}
	// Reading the root spans is the cost of this endpoint: a few workers.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 4)
	for k, i := range pick {
		s := &sums[i]
		if _, ok := gone[s.TraceID]; s.SpanCount <= 1 || s.RootService == "" || ok {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ep, ok, err := a.endpointDuration(r.Context(), s)
			if ok {
				resp.Points[k].EndpointMS = ep
			}
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		a.fail(w, r, firstErr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func withoutLimit(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		if k != "limit" && k != "points" {
			c[k] = v
		}
	}
	return c
}

// samplePoints keeps the slowest n/5 traces and spreads the rest evenly
// over the remaining ones (which are newest first).
func samplePoints(sums []model.TraceSummary, n int) []int {
	if len(sums) <= n {
		idx := make([]int, len(sums))
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	bySlow := make([]int, len(sums))
	for i := range bySlow {
		bySlow[i] = i
	}
	sort.SliceStable(bySlow, func(i, j int) bool { return sums[bySlow[i]].DurationNano() > sums[bySlow[j]].DurationNano() })
	keep := map[int]bool{}
	for _, i := range bySlow[:n/5] {
		keep[i] = true
	}
	rest := n - len(keep)
	step := float64(len(sums)-len(keep)) / float64(rest)
	k, next := 0, 0.0
	for i := range sums {
		if keep[i] {
			continue
		}
		if float64(k) >= next && len(keep) < n {
			keep[i] = true
			next += step
		}
		k++
	}
	out := make([]int, 0, len(keep))
	for i := range sums {
		if keep[i] {
			out = append(out, i)
		}
	}
	return out
}

// endpointDuration is the root span's duration; ok is false without a root.
func (a *api) endpointDuration(ctx context.Context, s *model.TraceSummary) (float64, bool, error) {
	if s.RootService == "" {
		return 0, false, nil
	}
	spans, err := a.d.Store.Trace(ctx, s.TraceID, store.TimeRange{Start: s.StartUnixNano, End: s.EndUnixNano + 1})
	if err != nil {
		return 0, false, fmt.Errorf("trace %s: %w", s.TraceID, err)
	}
	for i := range spans {
		if spans[i].ParentSpanID.IsZero() {
			return ms(spans[i].EndUnixNano - min(spans[i].StartUnixNano, spans[i].EndUnixNano)), true, nil
		}
	}
	return 0, false, nil
}

// resolveIDs serves GET /api/v1/traceids?prefix=: the stored trace ids
// that start or end with a 16-digit id (other tools show 64-bit ids, or
// the first half of a 128-bit one), newest first, over the search range
// (default: everything held).
func (a *api) resolveIDs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := strings.ToLower(q.Get("prefix"))
	if len(p) < 8 || len(p) > 32 || strings.Trim(p, "0123456789abcdef") != "" {
		a.fail(w, r, badf("prefix: want 8 to 32 hex digits, got %q", q.Get("prefix")))
		return
	}
	rng, err := a.parseRange(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sums, err := a.d.Store.Search(r.Context(), store.Query{Range: rng, Limit: scanCap})
	if err != nil {
		a.fail(w, r, fmt.Errorf("searching: %w", err))
		return
	}
	ids := []string{}
	for i := range sums {
		if id := sums[i].TraceID.String(); strings.HasPrefix(id, p) || strings.HasSuffix(id, p) {
			ids = append(ids, id)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"trace_ids": ids, "scanned": len(sums)})
}

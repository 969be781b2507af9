package v1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// A trace of 200k spans answered with 155 MB of JSON in up to 40 s, and
// its analysis with 165 MB at 1.37 GB RSS. Traces are now served in pages
// of at most MaxTraceSpans spans, the analysis of traces beyond
// MaxAnalysisSpans is refused with 422 and a reason, its lists are capped
// at maxAnalysisItems, and every request runs under QueryTimeout.

// maxAnalysisItems caps findings and critical-path steps in one analysis
// response; the totals say how many there were.
const maxAnalysisItems = 1000

// errTooLarge is a request whose cost exceeds a configured limit (422).
type errTooLarge struct{ msg string }

func (e errTooLarge) Error() string { return e.msg }

// queryContext bounds a request by QueryTimeout.
func (a *api) queryContext(r *http.Request) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), a.d.QueryTimeout,
		fmt.Errorf("query took longer than its limit of %s (query.timeout)", a.d.QueryTimeout))
	return r.WithContext(ctx), cancel
}

// timeoutError gives the reason a request ran out of time.
func timeoutError(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", cause, err)
		}
	}
	return err
}

// pageParams reads ?offset= and ?limit= of a span page.
func (a *api) pageParams(q url.Values) (offset, limit int, err error) {
	if v := q.Get("offset"); v != "" {
		offset, err = strconv.Atoi(v)
		if err != nil || offset < 0 {
			return 0, 0, badf("offset: want a non-negative integer, got %q", v)
		}
	}
	limit, err = parseLimit(q.Get("limit"), a.d.MaxTraceSpans, a.d.MaxTraceSpans)
	return offset, limit, err
}

// TracePage is a trace with one page of its spans (ordered by start).
type TracePage struct {
	TraceJSON
	// TotalSpans is the trace's span count (as SpanCount); Offset the
	// index of the first span here; Truncated says more spans follow,
	// Next is the URL of the next page.
	TotalSpans int    `json:"total_spans"`
	Offset     int    `json:"offset"`
	Limit      int    `json:"limit"`
	Truncated  bool   `json:"truncated"`
	Next       string `json:"next,omitempty"`
}

// pageOf cuts a page out of a whole trace, for stores that cannot read a
// page alone. spans are sorted in place.
func pageOf(spans []model.Span, offset, limit int) store.TracePage {
	sort.SliceStable(spans, func(i, j int) bool {
		a, b := &spans[i], &spans[j]
		return a.StartUnixNano < b.StartUnixNano || a.StartUnixNano == b.StartUnixNano && bytes.Compare(a.SpanID[:], b.SpanID[:]) < 0
	})
	p := store.TracePage{Total: len(spans)}
	for i := range spans {
		if p.StartUnixNano == 0 || spans[i].StartUnixNano < p.StartUnixNano {
			p.StartUnixNano = spans[i].StartUnixNano
		}
		p.EndUnixNano = max(p.EndUnixNano, spans[i].EndUnixNano)
	}
	p.Spans = spans[min(offset, len(spans)):min(offset+limit, len(spans))]
	return p
}

// pageJSON converts only the spans of the page: the cost of a response is
// bounded by the page, whatever the trace weighs.
func pageJSON(id model.TraceID, p store.TracePage, offset, limit int, u *url.URL) TracePage {
	out := TracePage{TraceJSON: TraceJSON{TraceID: id.String(), TimesJSON: times(p.StartUnixNano, p.EndUnixNano), SpanCount: p.Total,
		Spans: make([]SpanJSON, len(p.Spans))}, TotalSpans: p.Total, Offset: offset, Limit: limit}
	for i := range p.Spans {
		out.Spans[i] = spanJSON(&p.Spans[i])
	}
	if end := offset + len(p.Spans); end < p.Total && len(p.Spans) > 0 {
		out.Truncated = true
		q := u.Query()
		q.Set("offset", strconv.Itoa(end))
		q.Set("limit", strconv.Itoa(limit))
		out.Next = u.Path + "?" + q.Encode()
	}
	return out
}

// capAnalysis cuts the lists of an analysis to maxAnalysisItems.
func capAnalysis(out *analysisJSON) {
	out.TotalFindings, out.TotalCriticalPath = len(out.Findings), len(out.CriticalPath)
	if len(out.Findings) > maxAnalysisItems {
		// The most costly findings first, so the cap keeps what matters.
		sort.SliceStable(out.Findings, func(i, j int) bool { return out.Findings[i].ImpactMS > out.Findings[j].ImpactMS })
		out.Findings = out.Findings[:maxAnalysisItems]
		out.Truncated = true
	}
	if len(out.CriticalPath) > maxAnalysisItems {
		out.CriticalPath = out.CriticalPath[:maxAnalysisItems]
		out.Truncated = true
	}
}

// runAnalysis runs judge under the request's deadline. The analyzers
// take no context, so on timeout it finishes in the background;
// MaxAnalysisSpans bounds what that costs.
func runAnalysis(ctx context.Context, judge func() analysisJSON) (analysisJSON, error) {
	done := make(chan analysisJSON, 1)
	go func() { done <- judge() }()
	select {
	case out := <-done:
		return out, nil
	case <-ctx.Done():
		return analysisJSON{}, timeoutError(ctx, ctx.Err())
	}
}

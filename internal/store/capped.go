package store

import (
	"context"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// SpanCounter is implemented by stores that count a trace's spans without
// decoding them (the embedded engine).
type SpanCounter interface {
	TraceSpanCount(ctx context.Context, id model.TraceID, hint TimeRange) (int, error)
}

// TraceCapped reads a trace whole when it holds at most max spans, else
// its first max spans by start, and returns the trace's span count. APIs
// whose formats have no pages (Jaeger's and Tempo's trace by id) answer
// with a cut trace instead of hundreds of megabytes of JSON: a 200k-span
// trace was 155 MB and took the server's memory with it. Stores that can
// count and page (TracePager, SpanCounter) never decode the cut-off part;
// others are read whole and cut. max <= 0: no cap.
func TraceCapped(ctx context.Context, st Store, id model.TraceID, hint TimeRange, max int) ([]model.Span, int, error) {
	if max > 0 {
		counter, canCount := st.(SpanCounter)
		pager, canPage := st.(TracePager)
		if canCount && canPage {
			n, err := counter.TraceSpanCount(ctx, id, hint)
			if err != nil {
				return nil, 0, err
			}
			if n > max {
				page, err := pager.TracePage(ctx, id, hint, 0, max)
				if err != nil {
					return nil, 0, err
				}
				return page.Spans, page.Total, nil
			}
		}
	}
	spans, err := st.Trace(ctx, id, hint)
	if err != nil {
		return nil, 0, err
	}
	total := len(spans)
	if max > 0 && total > max {
		sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartUnixNano < spans[j].StartUnixNano })
		spans = spans[:max:max]
	}
	return spans, total, nil
}

package jaeger

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store"
)

// searchFetchParallel bounds the trace reads one search runs at once: with
// several processors a few reads in flight overlap page decompression and
// I/O, while the bound keeps one search from taking every core from
// ingest. On one processor reads run one after another: each concurrent
// read needs its own Parquet reader, which costs CPU (~15 % more per
// search in BenchmarkWithEngine) and buys nothing there.
func searchFetchParallel() int { return min(4, priority.CPUs()) }

// searchWholeTraces answers the searches that return whole traces (v1
// /api/traces, api_v3 /api/v3/traces): the store's summary search finds the
// matching ids from its indexes, then only those traces are read, together
// when the store can (TracesReader), else a few at a time, each with its
// own time range as a hint so the engine skips
// blocks that cannot hold it. Traces removed between the two steps
// (retention) are left out. The order is the search's: newest first.
func searchWholeTraces(ctx context.Context, st store.Store, q store.Query) ([][]model.Span, error) {
	sums, err := st.Search(ctx, q)
	if err != nil {
		return nil, err
	}
	if tr, ok := st.(store.TracesReader); ok {
		// Read together, the traces share page reads and dictionaries.
		refs := make([]store.TraceRef, len(sums))
		for i := range sums {
			refs[i] = store.TraceRef{ID: sums[i].TraceID, Hint: traceHint(&sums[i])}
		}
		out, err := tr.Traces(ctx, refs)
		if err != nil {
			return nil, fmt.Errorf("reading the traces found: %w", err)
		}
		traces := out[:0]
		for _, spans := range out {
			if len(spans) > 0 {
				traces = append(traces, spans)
			}
		}
		return traces, nil
	}
	out := make([][]model.Span, len(sums))
	errs := make([]error, len(sums))
	sem := make(chan struct{}, searchFetchParallel())
	var wg sync.WaitGroup
	for i := range sums {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = st.Trace(ctx, sums[i].TraceID, traceHint(&sums[i]))
		}(i)
	}
	wg.Wait()
	traces := out[:0]
	for i, spans := range out {
		switch err := errs[i]; {
		case errors.Is(err, store.ErrNotFound) || (err == nil && len(spans) == 0):
		case err != nil:
			return nil, fmt.Errorf("reading trace %s: %w", sums[i].TraceID, err)
		default:
			traces = append(traces, spans)
		}
	}
	return traces, nil
}

// traceHint is the time range of a found trace, closed at the end: a
// fragment ending at the trace's last instant still overlaps.
func traceHint(s *model.TraceSummary) store.TimeRange {
	return store.TimeRange{Start: s.StartUnixNano, End: s.EndUnixNano + 1}
}

package jaeger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store"
)

// searchParallel is how many goroutines read (and, for v1, encode) the
// traces of one search at once: one per CPU the process may use, at most
// 4, so that on several CPUs the groups decode and encode side by side (a
// whole-trace search's time is in decoding its traces, about 40 %, and
// encoding them, 30 %; the summary search takes a few per cent). Not by
// GOMAXPROCS, which is raised while queries run even on one CPU
// (priority.Procs): there the groups' threads only shared the one CPU
// with each other and with ingest, and the slowest group held the answer
// back (docs/performance.md). On one CPU the search runs as one group.
func searchParallel(n int) int { return max(1, min(n, 4, searchCPUs())) }

// searchCPUs is priority.CPUs, replaced in tests.
var searchCPUs = priority.CPUs

// searchWholeTraces answers the searches that return whole traces (v1
// /api/traces, api_v3 /api/v3/traces): see searchInGroups. The order is
// the search's: newest first.
func searchWholeTraces(ctx context.Context, st store.Store, q store.Query) ([][]model.Span, error) {
	var groups [][][]model.Span
	err := searchInGroups(ctx, st, q, func(n int) { groups = make([][][]model.Span, n) },
		func(g int, traces [][]model.Span) error {
			groups[g] = traces
			return nil
		})
	if err != nil {
		return nil, err
	}
	return slices.Concat(groups...), nil
}

// searchInGroups runs the store's summary search (answered from the
// block indexes), then reads only the traces found, in up to
// searchParallel contiguous groups of the results at once, and hands each
// group's traces, in the search's order, to each on the goroutine that
// read them (groups says how many there are before any is read).
// Concatenating the groups' results in group order keeps the search's
// order. A group is read together when the store can (TracesReader: its
// traces share page reads and dictionaries), else trace by trace, each
// with its own time range as a hint so the engine skips blocks that
// cannot hold it. Traces removed between the two steps (retention) are
// left out.
func searchInGroups(ctx context.Context, st store.Store, q store.Query, groups func(n int), each func(g int, traces [][]model.Span) error) error {
	sums, err := st.Search(ctx, q)
	if err != nil {
		return err
	}
	n := searchParallel(len(sums))
	groups(n)
	errs := make([]error, n)
	run := func(g int) {
		traces, err := readFound(ctx, st, sums[g*len(sums)/n:(g+1)*len(sums)/n])
		if err == nil {
			err = each(g, traces)
		}
		errs[g] = err
	}
	var wg sync.WaitGroup
	for g := 1; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(g)
		}()
	}
	run(0)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// readFound reads the traces of search results, in their order, leaving
// out those no longer stored.
func readFound(ctx context.Context, st store.Store, sums []model.TraceSummary) ([][]model.Span, error) {
	if tr, ok := st.(store.TracesReader); ok {
		refs := make([]store.TraceRef, len(sums))
		for i := range sums {
			refs[i] = store.TraceRef{ID: sums[i].TraceID, Hint: traceHint(&sums[i])}
		}
		out, err := tr.Traces(ctx, refs)
		if err != nil {
			return nil, fmt.Errorf("reading the traces found: %w", err)
		}
		return slices.DeleteFunc(out, func(spans []model.Span) bool { return len(spans) == 0 }), nil
	}
	traces := make([][]model.Span, 0, len(sums))
	for i := range sums {
		spans, err := st.Trace(ctx, sums[i].TraceID, traceHint(&sums[i]))
		switch {
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

package v1

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/rootcause"
	"github.com/tracedx/tracedx/internal/store"
)

// rootCauseSlices is how many equal slices a window is sampled in, so a
// capped sample spans the whole window instead of its newest minutes.
const rootCauseSlices = 10

// maxWindowFindings caps the findings read per window (newest first);
// their culprits are one vote among the evidence.
const maxWindowFindings = 10_000

// rootCauseQuery is a parsed GET /api/v1/rootcause.
type rootCauseQuery struct {
	incident, baseline store.TimeRange
	service, operation string
	perWindow          int
	causes             int
}

func (a *api) parseRootCause(q url.Values) (rootCauseQuery, error) {
	var rq rootCauseQuery
	var err error
	if q.Get("from") == "" {
		return rq, badf("from: required (RFC 3339, unix milliseconds, or a duration ago such as 30m)")
	}
	if rq.incident.Start, err = a.parseTime("from", q.Get("from")); err != nil {
		return rq, err
	}
	if rq.incident.End, err = a.parseTime("to", q.Get("to")); err != nil {
		return rq, err
	}
	if rq.incident.End == 0 {
		rq.incident.End = uint64(a.d.Now().UnixNano())
	}
	if rq.incident.Start >= rq.incident.End {
		return rq, badf("from must be before to")
	}
	length := rq.incident.End - rq.incident.Start
	rq.baseline = store.TimeRange{Start: rq.incident.Start - min(length, rq.incident.Start), End: rq.incident.Start}
	if v := q.Get("baseline_from"); v != "" {
		if rq.baseline.Start, err = a.parseTime("baseline_from", v); err != nil {
			return rq, err
		}
		if rq.baseline.End, err = a.parseTime("baseline_to", q.Get("baseline_to")); err != nil {
			return rq, err
		}
		if rq.baseline.End == 0 {
			rq.baseline.End = rq.baseline.Start + length
		}
	} else if q.Get("baseline_to") != "" {
		return rq, badf("baseline_to needs baseline_from")
	}
	if rq.baseline.Start >= rq.baseline.End {
		return rq, badf("baseline_from must be before baseline_to")
	}
	rq.service, rq.operation = q.Get("service"), q.Get("operation")
	if rq.operation != "" && rq.service == "" {
		return rq, badf("operation needs service")
	}
	if rq.perWindow, err = parseLimit(q.Get("limit"), 500, a.d.MaxSearchLimit); err != nil {
		return rq, err
	}
	if rq.causes, err = parseLimit(q.Get("causes"), 10, 100); err != nil {
		return rq, badf("causes: want a positive integer, got %q", q.Get("causes"))
	}
	return rq, nil
}

func (a *api) rootCause(w http.ResponseWriter, r *http.Request) {
	rq, err := a.parseRootCause(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rep, err := a.rank(r.Context(), rq)
	if errors.Is(err, rootcause.ErrNoTraces) {
		// An empty window is an answer, not a missing resource: a dashboard
		// polling a quiet service shows the reason instead of an error.
		writeJSON(w, http.StatusOK, rootCauseAnswer{Report: rootcause.Report{Causes: []rootcause.Cause{}}, Reason: err.Error(), Nodes: answered.Of(r.Context())})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rootCauseAnswer{Report: rep, Nodes: answered.Of(r.Context())})
}

// rootCauseAnswer is the body of GET /api/v1/rootcause: the ranking, and
// why it is empty when a window holds no trace.
type rootCauseAnswer struct {
	rootcause.Report
	Reason string `json:"reason,omitempty"`
	// In a cluster, the nodes whose traces and findings are missing or
	// were read from the bucket.
	answered.Nodes
}

// rank samples both windows of rq and ranks the causes.
func (a *api) rank(ctx context.Context, rq rootCauseQuery) (rootcause.Report, error) {
	base, baseFindings, err := a.sampleWindow(ctx, rq, rq.baseline)
	if err != nil {
		return rootcause.Report{}, fmt.Errorf("reading the baseline window: %w", err)
	}
	inc, incFindings, err := a.sampleWindow(ctx, rq, rq.incident)
	if err != nil {
		return rootcause.Report{}, fmt.Errorf("reading the incident window: %w", err)
	}
	return rootcause.Rank(base, inc, rootcause.Options{Service: rq.service, Operation: rq.operation,
		BaselineFindings: baseFindings, IncidentFindings: incFindings, Limit: rq.causes})
}

// RankRootCause ranks the causes of [from, to) through the endpoint
// (service, operation; both may be empty) against the window of the same
// length before it, as GET /api/v1/rootcause does by default: for callers
// inside the server, such as alerting.
func RankRootCause(ctx context.Context, d Deps, service, operation string, from, to time.Time) (rootcause.Report, error) {
	a := &api{d: d}
	length := uint64(to.Sub(from))
	start := uint64(from.UnixNano())
	rq := rootCauseQuery{
		incident:  store.TimeRange{Start: start, End: uint64(to.UnixNano())},
		baseline:  store.TimeRange{Start: start - min(length, start), End: start},
		service:   service,
		operation: operation,
		perWindow: 500,
		causes:    3,
	}
	return a.rank(ctx, rq)
}

// sampleWindow fetches up to rq.perWindow traces of the window (through
// the endpoint, when one is asked for), spread over its slices, with the
// findings stored for them. The traces found by the searches are read
// together (readTraces) once the searches found enough of them, not one
// by one: in a cluster each read asks every peer.
func (a *api) sampleWindow(ctx context.Context, rq rootCauseQuery, win store.TimeRange) ([][]model.Span, []analyze.Finding, error) {
	seen := map[model.TraceID]bool{}
	var traces [][]model.Span
	var findings []analyze.Finding
	step := (win.End - win.Start) / rootCauseSlices
	per := max(rq.perWindow/rootCauseSlices, 1)
	// pending are the traces found and not read yet, in the searches'
	// order; queued says which ids they hold.
	var pending []model.TraceSummary
	queued := map[model.TraceID]bool{}
	// take reads the pending traces and keeps them in order until the
	// window holds rq.perWindow (those left over are not looked at, as if
	// never found).
	take := func() error {
		if len(pending) == 0 {
			return nil
		}
		got, err := a.readTraces(ctx, pending)
		if err != nil {
			return err
		}
		for i, s := range pending {
			if len(traces) >= rq.perWindow {
				break
			}
			seen[s.TraceID] = true
			if got[i] == nil {
				continue
			}
			traces = append(traces, got[i])
			if a.d.Findings == nil || a.d.WindowFindings != nil {
				continue
			}
			fs, ok, err := a.d.Findings.TraceFindings(ctx, s.TraceID)
			if err != nil {
				return fmt.Errorf("findings of trace %s: %w", s.TraceID, err)
			}
			if ok {
				findings = append(findings, fs...)
			}
		}
		pending = pending[:0]
		clear(queued)
		return nil
	}
	for i := uint64(0); i < rootCauseSlices && len(traces) < rq.perWindow; i++ {
		sl := store.TimeRange{Start: win.Start + i*step, End: win.Start + (i+1)*step}
		if i == rootCauseSlices-1 || step == 0 {
			sl.End = win.End
		}
		sums, err := a.d.Store.Search(ctx, store.Query{Range: sl, Service: rq.service, Operation: rq.operation, Limit: per})
		if err != nil {
			return nil, nil, fmt.Errorf("searching: %w", err)
		}
		for _, s := range sums {
			if !seen[s.TraceID] && !queued[s.TraceID] {
				queued[s.TraceID] = true
				pending = append(pending, s)
			}
		}
		// The next slice is searched only while the window may still be
		// short of traces once these are read.
		if len(traces)+len(pending) >= rq.perWindow || step == 0 {
			if err := take(); err != nil {
				return nil, nil, err
			}
		}
		if step == 0 {
			break
		}
	}
	if err := take(); err != nil {
		return nil, nil, err
	}
	if a.d.WindowFindings != nil && len(seen) > 0 {
		ids := make([]model.TraceID, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		fs, err := a.d.WindowFindings.FindingsBetween(ctx, time.Unix(0, int64(win.Start)), time.Unix(0, int64(win.End)), ids, maxWindowFindings)
		if err != nil {
			return nil, nil, fmt.Errorf("findings of the window: %w", err)
		}
		// Only those of sampled traces (a peer of an older build ignores
		// the trace list): the ranking counts culprits per sampled trace,
		// and both windows must be sampled alike.
		for _, f := range fs {
			if id, err := model.ParseTraceID(f.TraceID); err == nil && seen[id] {
				findings = append(findings, f)
			}
		}
	}
	return traces, findings, nil
}

// readTraces reads the traces of search results, in their order; one no
// longer stored is nil. A store that reads many traces at once
// (store.TracesReader: a cluster asks each peer once) reads them so.
func (a *api) readTraces(ctx context.Context, sums []model.TraceSummary) ([][]model.Span, error) {
	out := make([][]model.Span, len(sums))
	if tr, ok := a.d.Store.(store.TracesReader); ok {
		refs := make([]store.TraceRef, len(sums))
		for i, s := range sums {
			refs[i] = store.TraceRef{ID: s.TraceID, Hint: store.TimeRange{Start: s.StartUnixNano, End: s.EndUnixNano + 1}}
		}
		got, err := tr.Traces(ctx, refs)
		if err != nil {
			return nil, fmt.Errorf("reading the sampled traces: %w", err)
		}
		for i, spans := range got {
			if len(spans) > 0 {
				out[i] = spans
			}
		}
		return out, nil
	}
	for i, s := range sums {
		spans, err := a.d.Store.Trace(ctx, s.TraceID, store.TimeRange{Start: s.StartUnixNano, End: s.EndUnixNano + 1})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading trace %s: %w", s.TraceID, err)
		}
		out[i] = spans
	}
	return out, nil
}

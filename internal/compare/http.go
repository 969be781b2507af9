package compare

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore/apiutil"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// RegisterRoutes mounts GET /api/v1/compare.
//
// Two traces: ?a=<trace id>&b=<trace id> (optional start/end hint).
//
// Two groups of one endpoint: ?service=S[&operation=O] with start/end for
// both sides, or a_start/a_end and b_start/b_end for "before/after" a
// deploy, and per side a_status/b_status (error|ok), a_min_duration,
// a_max_duration, b_min_duration, b_max_duration (250ms, 1.5s, or
// milliseconds) on the endpoint's span; limit caps the traces per side
// (default 200, max 2000). Example: failing vs successful checkouts in the
// last hour: ?service=checkout&operation=POST /checkout&start=1h&a_status=ok&b_status=error.
// Each group is compared from the endpoint's span, not the trace root.
func RegisterRoutes(mux *http.ServeMux, st store.Store) {
	mux.HandleFunc("GET /api/v1/compare", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		now := time.Now()
		if q.Get("a") != "" || q.Get("b") != "" {
			res, err := compareTraces(r, st, q, now)
			if err != nil {
				apiutil.Fail(w, r, err)
				return
			}
			apiutil.WriteJSON(w, http.StatusOK, res)
			return
		}
		res, err := compareGroups(r, st, q, now)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		apiutil.WriteJSON(w, http.StatusOK, res)
	})
}

func compareTraces(r *http.Request, st store.Store, q url.Values, now time.Time) (Result, error) {
	if q.Get("a") == "" || q.Get("b") == "" {
		return Result{}, apiutil.Badf("give both a and b trace ids (or service=... for a group comparison)")
	}
	hint, err := apiutil.ParseRange(q, "start", "end", now)
	if err != nil {
		return Result{}, err
	}
	load := func(name string) ([]model.Span, error) {
		id, err := model.ParseTraceID(q.Get(name))
		if err != nil || id.IsZero() {
			return nil, apiutil.Badf("%s: %q is not a trace id", name, q.Get(name))
		}
		spans, err := st.Trace(r.Context(), id, hint)
		if err == nil && len(spans) == 0 {
			err = store.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("trace %s (%s): %w", id, name, err)
		}
		return spans, nil
	}
	a, err := load("a")
	if err != nil {
		return Result{}, err
	}
	b, err := load("b")
	if err != nil {
		return Result{}, err
	}
	return Traces(a, b, Options{}), nil
}

// GroupQuery selects one side of a group comparison.
type GroupQuery struct {
	Service, Operation       string
	Range                    store.TimeRange
	Status                   string // "", "error", "ok"
	MinDuration, MaxDuration uint64 // ns, on the endpoint span
	Limit                    int
}

func compareGroups(r *http.Request, st store.Store, q url.Values, now time.Time) (GroupResult, error) {
	svc := q.Get("service")
	if svc == "" {
		return GroupResult{}, apiutil.Badf("give a and b trace ids, or service (and optionally operation) to compare two groups")
	}
	limit, err := apiutil.ParseLimit("limit", q.Get("limit"), 200, 2000)
	if err != nil {
		return GroupResult{}, err
	}
	common, err := apiutil.ParseRange(q, "start", "end", now)
	if err != nil {
		return GroupResult{}, err
	}
	side := func(p string) (GroupQuery, error) {
		g := GroupQuery{Service: svc, Operation: q.Get("operation"), Range: common, Status: q.Get(p + "_status"), Limit: limit}
		if q.Get(p+"_start") != "" || q.Get(p+"_end") != "" {
			if g.Range, err = apiutil.ParseRange(q, p+"_start", p+"_end", now); err != nil {
				return g, err
			}
		}
		switch g.Status {
		case "", "error", "ok":
		default:
			return g, apiutil.Badf("%s_status: want error or ok, got %q", p, g.Status)
		}
		if g.MinDuration, err = apiutil.ParseDuration(p+"_min_duration", q.Get(p+"_min_duration")); err != nil {
			return g, err
		}
		if g.MaxDuration, err = apiutil.ParseDuration(p+"_max_duration", q.Get(p+"_max_duration")); err != nil {
			return g, err
		}
		if g.MaxDuration != 0 && g.MinDuration > g.MaxDuration {
			return g, apiutil.Badf("%s_min_duration is above %s_max_duration", p, p)
		}
		return g, nil
	}
	ga, err := side("a")
	if err != nil {
		return GroupResult{}, err
	}
	gb, err := side("b")
	if err != nil {
		return GroupResult{}, err
	}
	if ga == gb {
		return GroupResult{}, apiutil.Badf("both groups select the same traces: set a_status/b_status, a_min_duration/b_max_duration or a_start/b_start")
	}
	ta, err := LoadGroup(r, st, ga)
	if err != nil {
		return GroupResult{}, err
	}
	tb, err := LoadGroup(r, st, gb)
	if err != nil {
		return GroupResult{}, err
	}
	return Groups(ta, tb, GroupOptions{Root: EndpointRoot(svc, q.Get("operation"))}), nil
}

// LoadGroup scans the traces of one side. The status filter is applied to
// the endpoint span itself, as analyze.Failed sees it (a 500 without ERROR
// status counts as failed).
func LoadGroup(r *http.Request, st store.Store, g GroupQuery) ([][]model.Span, error) {
	sq := store.Query{Range: g.Range, Service: g.Service, Operation: g.Operation,
		MinDuration: g.MinDuration, MaxDuration: g.MaxDuration, Limit: 0}
	var out [][]model.Span
	err := st.ScanTraces(r.Context(), sq, func(spans []model.Span) error {
		if g.Status != "" {
			t := analyze.NewTrace(spans)
			n := EndpointRoot(g.Service, g.Operation)(t)
			if n == nil || analyze.Failed(n) != (g.Status == "error") {
				return nil
			}
		}
		out = append(out, spans)
		if len(out) >= g.Limit {
			return store.ErrStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrStop) {
		return nil, fmt.Errorf("scanning traces of %s: %w", g.Service, err)
	}
	return out, nil
}

// EndpointRoot picks the earliest span of service (and operation, when not
// empty) in a trace, preferring service-entry spans.
func EndpointRoot(service, operation string) func(t *analyze.Trace) *analyze.Node {
	return func(t *analyze.Trace) *analyze.Node {
		var best *analyze.Node
		bestEntry := false
		t.Walk(func(n *analyze.Node) {
			if n.Span.Service != service || (operation != "" && n.Span.Name != operation) {
				return
			}
			entry := analyze.IsServiceEntry(n)
			if best == nil || (entry && !bestEntry) || (entry == bestEntry && n.Start() < best.Start()) {
				best, bestEntry = n, entry
			}
		})
		return best
	}
}

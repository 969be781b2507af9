package attribution

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/findingstore/apiutil"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Response is the body of GET /api/v1/attribution.
type Response struct {
	Selection   string  `json:"selection"` // "slow" or "error"
	ThresholdMS float64 `json:"threshold_ms,omitempty"`
	Selected    int     `json:"selected_traces"`
	Baseline    int     `json:"baseline_traces"`
	Values      []Value `json:"values"`
}

// RegisterRoutes mounts
//
//	GET /api/v1/attribution?service=&operation=&start=&end=&selection=slow|error&threshold_ms=&limit=
//
// The traces of the endpoint (service, optionally operation) in the window
// are split by the endpoint span: selection=slow takes those at or above
// threshold_ms (default: the window's p90), selection=error the failed
// ones; the rest is the baseline. limit caps the traces scanned (default
// 1000, max 10000).
func RegisterRoutes(mux *http.ServeMux, st store.Store) {
	mux.HandleFunc("GET /api/v1/attribution", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		svc, op := q.Get("service"), q.Get("operation")
		if svc == "" {
			apiutil.Fail(w, r, apiutil.Badf("service is required"))
			return
		}
		sel := q.Get("selection")
		if sel == "" {
			sel = "slow"
		}
		if sel != "slow" && sel != "error" {
			apiutil.Fail(w, r, apiutil.Badf("selection: want slow or error, got %q", sel))
			return
		}
		thr, err := apiutil.ParseDuration("threshold_ms", q.Get("threshold_ms"))
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		rng, err := apiutil.ParseRange(q, "start", "end", time.Now())
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		limit, err := apiutil.ParseLimit("limit", q.Get("limit"), 1000, 10000)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		type item struct {
			f      Features
			dur    uint64
			failed bool
		}
		var items []item
		root := compare.EndpointRoot(svc, op)
		err = st.ScanTraces(r.Context(), store.Query{Range: rng, Service: svc, Operation: op, Limit: limit}, func(spans []model.Span) error {
			t := analyze.NewTrace(spans)
			n := root(t)
			if n == nil {
				return nil
			}
			items = append(items, item{f: Extract(spans), dur: n.Duration(), failed: analyze.Failed(n)})
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrStop) {
			apiutil.Fail(w, r, fmt.Errorf("scanning traces of %s: %w", svc, err))
			return
		}
		resp := Response{Selection: sel}
		if sel == "slow" {
			if thr == 0 && len(items) > 0 {
				d := make([]uint64, len(items))
				for i := range items {
					d[i] = items[i].dur
				}
				sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
				thr = d[int(math.Ceil(0.9*float64(len(d))))-1]
			}
			resp.ThresholdMS = analyze.NS(thr)
		}
		var fs, fb []Features
		for _, it := range items {
			in := it.failed
			if sel == "slow" {
				in = it.dur >= thr
			}
			if in {
				fs = append(fs, it.f)
			} else {
				fb = append(fb, it.f)
			}
		}
		resp.Selected, resp.Baseline = len(fs), len(fb)
		resp.Values = Rank(fs, fb, Options{})
		apiutil.WriteJSON(w, http.StatusOK, resp)
	})
}

package red

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// RegisterRoutes mounts the RED JSON API:
//
//	GET /api/v1/metrics/services?start=&end=&points=
//	GET /api/v1/metrics/operations?service=&kind=&start=&end=&sort=p95|p99|error_rate|rate|errors&limit=
//	GET /api/v1/metrics/series?service=&operation=&kind=&start=&end=&step=&group_by_operation=
//
// Times are RFC3339 or unix s/ms/µs/ns; the default window is the last hour.
func (m *Metrics) RegisterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/metrics/services", m.handleServices)
	mux.HandleFunc("GET /api/v1/metrics/operations", m.handleOperations)
	mux.HandleFunc("GET /api/v1/metrics/series", m.handleSeries)
}

func (m *Metrics) window(r *http.Request) (time.Time, time.Time, error) {
	now := m.now()
	end, err := tsdb.ParseTime(r.URL.Query().Get("end"), now)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: end: %v", ErrBadQuery, err)
	}
	start, err := tsdb.ParseTime(r.URL.Query().Get("start"), end.Add(-time.Hour))
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: start: %v", ErrBadQuery, err)
	}
	return start, end, nil
}

func intParam(r *http.Request, name string, def, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("%w: %s must be an integer in 0..%d", ErrBadQuery, name, max)
	}
	return n, nil
}

func (m *Metrics) handleServices(w http.ResponseWriter, r *http.Request) {
	start, end, err := m.window(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	points, err := intParam(r, "points", 30, 1000)
	if err != nil {
		writeErr(w, err)
		return
	}
	ss, err := m.Services(r.Context(), start, end, points)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, answered.Of(r.Context()).AddTo(map[string]any{"services": ss, "start_ms": start.UnixMilli(), "end_ms": end.UnixMilli()}))
}

func (m *Metrics) handleOperations(w http.ResponseWriter, r *http.Request) {
	start, end, err := m.window(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	limit, err := intParam(r, "limit", 0, 100000)
	if err != nil {
		writeErr(w, err)
		return
	}
	q := r.URL.Query()
	ops, err := m.Operations(r.Context(), q.Get("service"), q.Get("kind"), start, end, q.Get("sort"), limit)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, answered.Of(r.Context()).AddTo(map[string]any{"operations": ops, "start_ms": start.UnixMilli(), "end_ms": end.UnixMilli()}))
}

func (m *Metrics) handleSeries(w http.ResponseWriter, r *http.Request) {
	start, end, err := m.window(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	q := r.URL.Query()
	step, err := tsdb.ParseDuration(q.Get("step"), 0)
	if err != nil {
		writeErr(w, fmt.Errorf("%w: step: %v", ErrBadQuery, err))
		return
	}
	if step == 0 {
		// About 120 points, like a Grafana panel.
		step = end.Sub(start) / 120
	}
	group := false
	if s := q.Get("group_by_operation"); s != "" {
		if group, err = strconv.ParseBool(s); err != nil {
			writeErr(w, fmt.Errorf("%w: group_by_operation must be true or false", ErrBadQuery))
			return
		}
	}
	series, err := m.Query(r.Context(), Query{
		Service: q.Get("service"), Operation: q.Get("operation"), Kind: q.Get("kind"),
		Start: start, End: end, Step: step, GroupByOperation: group || q.Get("operation") != "",
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, answered.Of(r.Context()).AddTo(map[string]any{"series": series, "step_ms": stepMS(step)}))
}

func stepMS(step time.Duration) int64 {
	minutes := (step + time.Minute - 1) / time.Minute
	if minutes < 1 {
		minutes = 1
	}
	return int64(minutes) * 60000
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// The client went away; nothing useful to send.
		return
	}
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrBadQuery) {
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": err.Error()})
}

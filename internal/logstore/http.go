package logstore

import (
	"net/http"
	"time"

	"github.com/tracedx/tracedx/internal/findingstore/apiutil"
	"github.com/tracedx/tracedx/internal/model"
)

// RegisterRoutes mounts
//
//	GET /api/v1/logs?service=&severity=&q=&trace_id=&start=&end=&limit=
//	GET /api/v1/traces/{id}/logs
//
// start/end take RFC 3339, unix milliseconds or a duration ago ("1h");
// severity is a minimum level (warn keeps warn, error and fatal).
func (s *Store) RegisterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/logs", func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r, s.opt.Now())
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		res, err := s.Search(q)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		apiutil.WriteJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /api/v1/traces/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		id, err := model.ParseTraceID(r.PathValue("id"))
		if err != nil {
			apiutil.Fail(w, r, apiutil.Badf("trace id: %v", err))
			return
		}
		recs := s.ForTrace(id)
		if recs == nil {
			recs = []Record{}
		}
		apiutil.WriteJSON(w, http.StatusOK, map[string]any{"logs": recs})
	})
}

func parseQuery(r *http.Request, now time.Time) (Query, error) {
	v := r.URL.Query()
	q := Query{Service: v.Get("service"), Text: v.Get("q")}
	if s := v.Get("severity"); s != "" {
		n, err := ParseSeverity(s)
		if err != nil {
			return q, apiutil.Badf("%v", err)
		}
		q.MinSeverity = n
	}
	if s := v.Get("trace_id"); s != "" {
		id, err := model.ParseTraceID(s)
		if err != nil {
			return q, apiutil.Badf("trace_id: %v", err)
		}
		q.TraceID = id
	}
	rng, err := apiutil.ParseRange(v, "start", "end", now)
	if err != nil {
		return q, err
	}
	q.Start, q.End = rng.Start, rng.End
	if q.Limit, err = apiutil.ParseLimit("limit", v.Get("limit"), 100, 10000); err != nil {
		return q, err
	}
	return q, nil
}

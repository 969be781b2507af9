package findingstore

import (
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/findingstore/apiutil"
	"github.com/tracedx/tracedx/internal/model"
)

// ListResponse is the body of GET /api/v1/findings.
type ListResponse struct {
	Findings []Stored `json:"findings"`
	// Truncated is true when limit cut the list.
	Truncated bool `json:"truncated"`
	// In a cluster, Unanswered lists the nodes that did not answer (down,
	// restarting): the list lacks their findings, except those in
	// FromBucket, whose findings were read from their copy in the bucket
	// (only their last Options.TailInterval, a minute, is missing).
	Unanswered []string `json:"unanswered_nodes,omitempty"`
	FromBucket []string `json:"from_bucket_nodes,omitempty"`
}

// SummaryResponse is the body of GET /api/v1/findings/summary: the
// aggregates of every finding in the range, and counts (by kind, most
// first) for older clients.
type SummaryResponse struct {
	From *time.Time `json:"from,omitempty"`
	To   *time.Time `json:"to,omitempty"`
	Summary
	Counts []KindCount `json:"counts"`
	// In a cluster, the nodes whose findings are missing or were read
	// from the bucket, as in ListResponse.
	answered.Nodes
}

// RegisterRoutes mounts
//
//	GET /api/v1/findings?from=&to=&kind=&service=&trace_id=&systemic=&limit=
//	GET /api/v1/findings/summary?from=&to=&kind=&service=&systemic=&groups=
//
// from/to (aliases start/end) take RFC 3339, unix milliseconds or a
// duration ago ("1h"); kind may list several kinds separated by commas;
// systemic=true keeps only cross-trace findings, false only per-trace ones.
func RegisterRoutes(mux *http.ServeMux, fs *Store) {
	mux.HandleFunc("GET /api/v1/findings", func(w http.ResponseWriter, r *http.Request) {
		resp, err := fs.listAnswer(r)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		apiutil.WriteJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("GET /api/v1/findings/summary", func(w http.ResponseWriter, r *http.Request) {
		from, to, err := parseFromTo(r, fs.opt.Now())
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		v := r.URL.Query()
		sq := SummaryQuery{From: from, To: to, Kind: v.Get("kind"), Service: v.Get("service")}
		if s := v.Get("systemic"); s != "" {
			b, err := strconv.ParseBool(s)
			if err != nil {
				apiutil.Fail(w, r, apiutil.Badf("systemic: want true or false, got %q", s))
				return
			}
			sq.Systemic = &b
		}
		if sq.Groups, err = apiutil.ParseLimit("groups", v.Get("groups"), 200, 5000); err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		sum, err := fs.clusterSummary(r.Context(), sq)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		resp := SummaryResponse{Summary: sum, Nodes: answered.Of(r.Context())}
		if !from.IsZero() {
			resp.From = &from
		}
		if !to.IsZero() {
			resp.To = &to
		}
		resp.Counts = append([]KindCount(nil), sum.Kinds...)
		sort.SliceStable(resp.Counts, func(i, j int) bool {
			if resp.Counts[i].Count != resp.Counts[j].Count {
				return resp.Counts[i].Count > resp.Counts[j].Count
			}
			return resp.Counts[i].Kind < resp.Counts[j].Kind
		})
		apiutil.WriteJSON(w, http.StatusOK, resp)
	})
}

// listAnswer answers GET /api/v1/findings from this store.
func (fs *Store) listAnswer(r *http.Request) (ListResponse, error) {
	q, err := parseQuery(r, fs.opt.Now())
	if err != nil {
		return ListResponse{}, err
	}
	want := q.Limit
	q.Limit++
	list, err := fs.List(r.Context(), q)
	if err != nil {
		return ListResponse{}, err
	}
	resp := ListResponse{Findings: list}
	if len(list) > want {
		resp.Findings, resp.Truncated = list[:want], true
	}
	if resp.Findings == nil {
		resp.Findings = []Stored{}
	}
	fs.markTraces(resp.Findings)
	return resp, nil
}

func parseFromTo(r *http.Request, now time.Time) (from, to time.Time, err error) {
	v := r.URL.Query()
	get := func(a, b string) (string, string) {
		if x := v.Get(a); x != "" {
			return a, x
		}
		return b, v.Get(b)
	}
	n, x := get("from", "start")
	if from, err = apiutil.ParseTime(n, x, now); err != nil {
		return
	}
	n, x = get("to", "end")
	if to, err = apiutil.ParseTime(n, x, now); err != nil {
		return
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		err = apiutil.Badf("from must be before to")
	}
	return
}

func parseQuery(r *http.Request, now time.Time) (Query, error) {
	var q Query
	var err error
	if q.From, q.To, err = parseFromTo(r, now); err != nil {
		return q, err
	}
	v := r.URL.Query()
	q.Kind, q.Service = v.Get("kind"), v.Get("service")
	if id := v.Get("trace_id"); id != "" {
		if q.TraceID, err = model.ParseTraceID(id); err != nil {
			return q, apiutil.BadRequest{Err: err}
		}
	}
	if s := v.Get("systemic"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return q, apiutil.Badf("systemic: want true or false, got %q", s)
		}
		q.Systemic = &b
	}
	if q.Limit, err = apiutil.ParseLimit("limit", v.Get("limit"), 100, 10000); err != nil {
		return q, err
	}
	return q, nil
}

// goneNote explains a finding whose trace is no longer stored.
const goneNote = "the trace is no longer stored (past its retention, or not kept by sampling); this finding and its evidence remain"

// markTraces sets TraceAvailable on per-trace findings.
func (fs *Store) markTraces(list []Stored) {
	if fs.opt.TraceAvailable == nil {
		return
	}
	for i := range list {
		id, err := model.ParseTraceID(list[i].TraceID)
		if list[i].TraceID == "" || err != nil {
			continue
		}
		ok := fs.opt.TraceAvailable(id)
		list[i].TraceAvailable = &ok
		if !ok {
			list[i].TraceNote = goneNote
			list[i].TraceSummary = "/api/v1/search?trace_id=" + id.String()
		}
	}
}

package jaeger

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Every malformed parameter is the client's fault: 400 with a message that
// names the parameter (in the v1 envelope or the api_v3 error), never a
// 500 or a silently wrong range.
func TestMalformedParams(t *testing.T) {
	srv := newServer(t, Options{})
	for path, mention := range map[string]string{
		"/api/traces?start=99999999999999999":                                 "start",
		"/api/traces?end=9223372036854775807":                                 "end",
		"/api/traces?lookback=bogus":                                          "lookback",
		"/api/traces?lookback=0d":                                             "lookback",
		"/api/traces?limit=abc":                                               "limit",
		"/api/traces?limit=1.5":                                               "limit",
		"/api/traces/" + apitest.TraceA + "?start=-1":                         "start",
		"/api/traces/" + apitest.TraceA + "?end=1e3":                          "end",
		"/api/operations?spanKind=weird":                                      "spanKind",
		"/api/dependencies?endTs=9223372036854775807":                         "endTs",
		"/api/dependencies?lookback=99999999999999999":                        "lookback",
		"/api/dependencies?lookback=0":                                        "lookback",
		"/api/metrics/calls?service=frontend&endTs=9223372036854775807":       "endTs",
		"/api/metrics/calls?service=frontend&ratePer=9223372036854775":        "ratePer",
		"/api/metrics/calls?service=frontend&lookback=x":                      "lookback",
		"/api/metrics/calls?service=frontend&step=1":                          "step",
		"/api/metrics/latencies?service=frontend":                             "quantile",
		"/api/metrics/calls?service=frontend&groupByOperation=maybe":          "groupByOperation",
		"/api/traces?tags=" + `%7B%22span.kind%22:%22weird%22%7D`:             "span.kind",
		"/api/traces?traceID=" + strings.Repeat(apitest.TraceA+",", 1501):     "traceID",
		"/api/v3/traces?query.startTimeMin=9999-01-01T00:00:00Z":              "query.startTimeMin",
		"/api/v3/traces?query.start_time_max=1969-12-31T23:59:59Z":            "query.start_time_max",
		"/api/v3/traces?query.durationMin=1s&query.durationMax=1ms":           "query.durationMax",
		"/api/v3/trace-summaries?query.duration_min=2s&query.duration_max=1s": "query.durationMax",
		"/api/v3/traces?query.searchDepth=ten":                                "query.searchDepth",
		"/api/v3/traces?query.num_traces=-1":                                  "query.num_traces",
		"/api/v3/trace-summaries?query.attributes=%5B1%5D":                    "query.attributes",
		"/api/v3/traces/" + apitest.TraceA + "?endTime=3000-01-01T00:00:00Z":  "endTime",
		"/api/v3/traces/" + apitest.TraceA + "?start_time=yesterday":          "start_time",
		"/api/v3/operations?span_kind=sideways":                               "span_kind",
	} {
		st, m := apitest.GetJSON(t, srv, path)
		var msg string
		if strings.HasPrefix(path, "/api/v3/") {
			msg = v3ErrorBody(t, path, st, m, http.StatusBadRequest)
		} else {
			msg = envelopeErr(t, path, st, m, http.StatusBadRequest)
		}
		if !strings.Contains(msg, mention) {
			t.Errorf("%s: message %q does not mention %q", path, msg, mention)
		}
	}
}

// limitStore records the limits the handlers pass to the store.
type limitStore struct {
	store.Store
	mu     sync.Mutex
	limits []int
	ranges []store.TimeRange
}

func (s *limitStore) record(q store.Query) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = append(s.limits, q.Limit)
	s.ranges = append(s.ranges, q.Range)
}

func (s *limitStore) last() (int, store.TimeRange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits[len(s.limits)-1], s.ranges[len(s.ranges)-1]
}

func (s *limitStore) ScanTraces(ctx context.Context, q store.Query, fn func([]model.Span) error) error {
	s.record(q)
	return s.Store.ScanTraces(ctx, q, fn)
}

func (s *limitStore) Search(ctx context.Context, q store.Query) ([]model.TraceSummary, error) {
	s.record(q)
	return s.Store.Search(ctx, q)
}

func TestHugeLimitsAreCapped(t *testing.T) {
	st := &limitStore{Store: apitest.NewStore(t, apitest.FixtureSpans(t))}
	srv := apitest.Serve(t, NewHandler(st, Options{DefaultSearchLimit: 5, MaxSearchLimit: 7, Now: func() time.Time { return apitest.Now }}))
	for path, want := range map[string]int{
		"/api/traces?service=frontend&limit=99999999999999999999":                                       7,
		"/api/traces?service=frontend&limit=1000000000":                                                 7,
		"/api/traces?service=frontend&limit=3":                                                          3,
		"/api/traces?service=frontend&limit=0":                                                          5,
		"/api/traces?service=frontend":                                                                  5,
		"/api/v3/trace-summaries?query.serviceName=frontend&query.searchDepth=8":                        7,
		"/api/v3/trace-summaries?query.serviceName=frontend&query.search_depth=99999999999999999999999": 7,
		"/api/v3/traces?query.service_name=frontend&query.num_traces=2":                                 2,
	} {
		code, m := apitest.GetJSON(t, srv, path)
		if code != http.StatusOK {
			t.Errorf("%s: status %d (%v)", path, code, m)
			continue
		}
		if got, _ := st.last(); got != want {
			t.Errorf("%s: store limit %d, want %d", path, got, want)
		}
	}
	// A lookback longer than int64 nanoseconds hold means "since the epoch".
	code, m := apitest.GetJSON(t, srv, "/api/traces?service=frontend&lookback=100000000000d")
	if _, rng := st.last(); code != http.StatusOK || rng.Start != 0 {
		t.Errorf("huge lookback: status %d, range %+v (%v)", code, rng, m)
	}
	code, m = apitest.GetJSON(t, srv, "/api/traces?service=frontend&lookback=2w")
	if _, rng := st.last(); code != http.StatusOK || rng.Start != uint64(apitest.Now.Add(-14*24*time.Hour).UnixNano()) {
		t.Errorf("lookback=2w: status %d, range %+v (%v)", code, rng, m)
	}
}

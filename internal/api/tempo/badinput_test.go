package tempo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Out-of-range values are the client's fault: 400 with a message naming
// the parameter, never a 500 or a silently wrapped time.
func TestOutOfRangeParams(t *testing.T) {
	h := newTestHandler(t, Options{})
	for _, c := range []struct{ target, contains string }{
		{"/api/search?start=9223372036854775807", "invalid start"},
		{"/api/search/tags?end=-1", "invalid end"},
		{"/api/v2/search/tag/resource.service.name/values?start=1e9", "invalid start"},
		{"/api/traces/" + traceA + "?end=99999999999999999999", "invalid end"},
		{"/api/metrics/query_range?q=" + urlq("{} | rate()") + "&end=9999-01-01T00:00:00Z", "invalid end: 9999-01-01T00:00:00Z is outside the supported range"},
		{"/api/metrics/query_range?q=" + urlq("{} | rate()") + "&start=1960-01-01T00:00:00Z", "invalid start"},
		{"/api/metrics/query_range?q=" + urlq("{} | rate()") + "&step=1e308", "invalid step: \"1e308\" must be between 0 and 1e9 seconds"},
		{"/api/metrics/query_range?q=" + urlq("{} | rate()") + "&step=1ns", "more than the maximum"},
		{"/api/search/tag/service.name/values?limit=-5", "invalid limit"},
		{"/api/v2/search/tags?limit=1.5", "invalid limit"},
		{"/api/search?spss=1e3", "invalid spss"},
	} {
		rec := do(t, h, c.target)
		if rec.Code != 400 || !strings.Contains(body(rec), c.contains) {
			t.Errorf("%s: %d %q, want 400 containing %q", c.target, rec.Code, body(rec), c.contains)
		}
	}
}

// valuesStore records the limit of tag-value lookups.
type valuesStore struct {
	store.Store
	limit atomic.Int64
}

func (s *valuesStore) AttributeValues(ctx context.Context, scope store.Scope, key string, r store.TimeRange, limit int) ([]model.Value, error) {
	s.limit.Store(int64(limit))
	return s.Store.AttributeValues(ctx, scope, key, r, limit)
}

func TestHugeLimitsAreCapped(t *testing.T) {
	st := &valuesStore{Store: apitest.NewStore(t, fixtureSpans(t))}
	h := NewHandler(st, Options{MaxSearchLimit: 1, Now: func() time.Time { return time.Unix(1700000200, 0) }})
	for _, target := range []string{"/api/search?limit=99999999999999999999", "/api/search?limit=1000000000"} {
		if got := traceIDs(t, h, target); len(got) != 1 {
			t.Errorf("%s: %d traces, want the cap of 1", target, len(got))
		}
	}
	for _, target := range []string{"/api/search/tag/span.http.method/values?limit=99999999999999999999", "/api/v2/search/tag/span.http.method/values?limit=5000000"} {
		getJSON(t, h, target)
		if got := st.limit.Load(); got != maxTagLimit {
			t.Errorf("%s: store asked for %d values, want the cap of %d", target, got, maxTagLimit)
		}
	}
	hh := h.(*handler)
	for in, want := range map[string]int{"99999999999999999999": maxSpansPerSpanSet, "5000": maxSpansPerSpanSet, "7": 7, "0": 0} {
		p, err := hh.parseSearch(httptest.NewRequest("GET", "/api/search?spss="+in, nil))
		if err != nil || p.spss != want {
			t.Errorf("spss=%s: %v, %v; want %d", in, p, err, want)
		}
	}
}

func TestExpensiveQueriesAnswer422(t *testing.T) {
	h := newTestHandler(t, Options{})
	rec := do(t, h, "/api/search?q="+urlq(`{ name =~ "`+strings.Repeat("(a|b)*", 5000)+`" }`))
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body(rec), "regular expression of 30000 bytes") {
		t.Errorf("long regex: %d %s", rec.Code, body(rec))
	}
	rec = do(t, h, "/api/metrics/query_range?q="+urlq(`{ name =~ "`+strings.Repeat("[a-z]{100}", 60)+`" } | rate()`))
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body(rec), "instructions") {
		t.Errorf("big regex: %d %s", rec.Code, body(rec))
	}
	// A request that runs out of its time budget says so.
	h = newTestHandler(t, Options{QueryTimeout: time.Nanosecond})
	rec = do(t, h, "/api/search?q="+urlq(`{ name =~ "GET.*" }`))
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body(rec), "time budget of 1ns") {
		t.Errorf("time budget: %d %s", rec.Code, body(rec))
	}
}

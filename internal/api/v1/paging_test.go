package v1

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// A huge trace comes in pages of at most MaxTraceSpans spans, each saying
// how many there are and where the next page is; walking the pages yields
// every span once, in start order. It used to come as one response of
// every span (155 MB of JSON for 200k spans).
func TestHugeTraceIsPaged(t *testing.T) {
	const n = 25_000
	spans := apitest.SynthTrace(3, n)
	srv := apitest.Serve(t, NewHandler(Deps{Store: apitest.NewStore(t, spans)}))
	id := spans[0].TraceID.String()

	seen := map[string]bool{}
	var lastStart float64
	path, pages := "/api/v1/traces/"+id, 0
	for path != "" {
		st, m := apitest.GetJSON(t, srv, path)
		if st != 200 {
			t.Fatalf("%s: %d %v", path, st, m)
		}
		pages++
		apitest.Eq(t, "total_spans", m["total_spans"], float64(n))
		apitest.Eq(t, "span_count", m["span_count"], float64(n))
		page := apitest.Arr(t, "spans", m["spans"])
		if len(page) > 10_000 {
			t.Fatalf("page of %d spans, want at most 10000", len(page))
		}
		for _, s := range page {
			sp := s.(map[string]any)
			sid := sp["span_id"].(string)
			if seen[sid] {
				t.Fatalf("span %s on two pages", sid)
			}
			seen[sid] = true
			if st := sp["start_unix_nano"].(float64); st < lastStart {
				t.Fatal("spans not in start order across pages")
			} else {
				lastStart = st
			}
		}
		next, _ := m["next"].(string)
		if m["truncated"] != (next != "") {
			t.Fatalf("truncated %v with next %q", m["truncated"], next)
		}
		path = next
	}
	if len(seen) != n || pages != 3 {
		t.Fatalf("%d spans in %d pages, want %d in 3", len(seen), pages, n)
	}

	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+id+"?offset=24990&limit=5")
	if st != 200 || len(apitest.Arr(t, "spans", m["spans"])) != 5 || m["truncated"] != true || !strings.Contains(m["next"].(string), "offset=24995") {
		t.Fatalf("offset/limit page: %d %v", st, m["next"])
	}
	st, m = apitest.GetJSON(t, srv, "/api/v1/traces/"+id+"?limit=99999")
	if st != 200 || m["limit"] != 10_000.0 {
		t.Fatalf("limit above the maximum is capped: %d limit %v", st, m["limit"])
	}
	for _, q := range []string{"offset=-1", "offset=x", "limit=0"} {
		st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+id+"?"+q)
		wantError(t, q, st, m, 400, strings.Split(q, "=")[0])
	}
}

// The analysis of a trace beyond MaxAnalysisSpans is refused with 422 and
// a reason, not computed for a minute at 1.37 GB.
func TestHugeTraceAnalysisIsRefused(t *testing.T) {
	spans := apitest.SynthTrace(4, 3000)
	srv := apitest.Serve(t, NewHandler(Deps{Store: apitest.NewStore(t, spans), MaxAnalysisSpans: 2000}))
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+spans[0].TraceID.String()+"/analysis")
	wantError(t, "huge analysis", st, m, 422, "query.max_analysis_spans")
}

// An analysis that outlives query.timeout is answered 503 with the reason.
func TestQueryTimeout(t *testing.T) {
	srv := newServer(t, Deps{QueryTimeout: 20 * time.Millisecond, Analyzer: func(spans []model.Span) analyze.Result {
		time.Sleep(500 * time.Millisecond)
		return CriticalPathOnly(spans)
	}})
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	wantError(t, "slow analysis", st, m, 503, "query.timeout")
}

// Findings and critical path are capped, the totals tell what was cut.
func TestAnalysisListsAreCapped(t *testing.T) {
	srv := newServer(t, Deps{Analyzer: func(spans []model.Span) analyze.Result {
		res := CriticalPathOnly(spans)
		for i := range 1500 {
			res.Findings = append(res.Findings, analyze.Finding{Kind: "n_plus_one_query", Title: fmt.Sprint(i), ImpactMS: float64(i)})
		}
		return res
	}})
	st, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+apitest.TraceA+"/analysis")
	if st != 200 {
		t.Fatal(st, m)
	}
	fs := apitest.Arr(t, "findings", m["findings"])
	if len(fs) != maxAnalysisItems || m["total_findings"] != 1500.0 || m["truncated"] != true {
		t.Fatalf("findings %d, total %v, truncated %v", len(fs), m["total_findings"], m["truncated"])
	}
	if top := fs[0].(map[string]any)["impact_ms"]; top != 1499.0 {
		t.Fatalf("the cap must keep the costliest findings; first has impact %v", top)
	}
}

// countingStore counts spans without reading them, and fails reads.
type countingStore struct {
	*memstore.Store
	n     int
	reads int
}

func (c *countingStore) TraceSpanCount(context.Context, model.TraceID, store.TimeRange) (int, error) {
	return c.n, nil
}

func (c *countingStore) Trace(ctx context.Context, id model.TraceID, hint store.TimeRange) ([]model.Span, error) {
	c.reads++
	return c.Store.Trace(ctx, id, hint)
}

// With a store that counts spans, a trace too large is refused without
// being read.
func TestHugeTraceAnalysisIsRefusedUnread(t *testing.T) {
	spans := apitest.SynthTrace(5, 10)
	st := &countingStore{Store: apitest.NewStore(t, spans), n: 60_000}
	srv := apitest.Serve(t, NewHandler(Deps{Store: st}))
	code, m := apitest.GetJSON(t, srv, "/api/v1/traces/"+spans[0].TraceID.String()+"/analysis")
	wantError(t, "counted analysis", code, m, 422, "60000 spans")
	if st.reads != 0 {
		t.Fatalf("the trace was read %d times before being refused", st.reads)
	}
}

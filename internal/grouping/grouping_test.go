package grouping

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/memstore"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// 60 normal checkouts, 5 with an N+1 of 20 or 30 items (same bucket),
// 3 without recommendations: three shapes.
func traces() [][]model.Span {
	g := workload.New(1)
	var out [][]model.Span
	for i := 0; i < 68; i++ {
		g.ItemQueries, g.NoRecommendations = 1, false
		switch {
		case i%13 == 0 && i < 65:
			g.ItemQueries = 20 + (i % 2 * 10)
		case i >= 65:
			g.NoRecommendations = true
		}
		out = append(out, g.Checkout(t0.Add(time.Duration(i)*time.Second)))
	}
	return out
}

func TestGroupsByShape(t *testing.T) {
	res := Traces(traces(), Options{})
	if res.Traces != 68 || len(res.Groups) != 3 {
		for _, g := range res.Groups {
			t.Logf("group %d:\n%s", g.Count, strings.Join(g.Shape, "\n"))
		}
		t.Fatalf("traces %d groups %d, want 68 and 3", res.Traces, len(res.Groups))
	}
	main, nplus1, norec := res.Groups[0], res.Groups[1], res.Groups[2]
	if main.Count != 60 || nplus1.Count != 5 || norec.Count != 3 {
		t.Errorf("counts %d/%d/%d, want 60/5/3", main.Count, nplus1.Count, norec.Count)
	}
	if !strings.Contains(strings.Join(nplus1.Shape, "\n"), "WHERE id = ?  x11-50") {
		t.Errorf("N+1 group shape lacks the collapsed count:\n%s", strings.Join(nplus1.Shape, "\n"))
	}
	if nplus1.SpanCount <= main.SpanCount || len(nplus1.ExampleTraceIDs) != 5 {
		t.Errorf("n+1 group %+v", nplus1)
	}
	if strings.Contains(strings.Join(norec.Shape, "\n"), "recommendations") {
		t.Errorf("no-recommendations group mentions recommendations")
	}
	// Concurrency order must not matter: same input shuffled, same groups.
	tr := traces()
	for i, j := 0, len(tr)-1; i < j; i, j = i+1, j-1 {
		tr[i], tr[j] = tr[j], tr[i]
	}
	again := Traces(tr, Options{})
	for i := range again.Groups {
		if again.Groups[i].ID != res.Groups[i].ID {
			t.Errorf("group ids depend on input order")
		}
	}
}

func TestHTTP(t *testing.T) {
	st := memstore.New()
	for _, tr := range traces() {
		st.Write(context.Background(), tr)
	}
	mux := http.NewServeMux()
	RegisterRoutes(mux, st)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/groups?service=checkout&operation=POST+/api/checkout", nil))
	var res Result
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &res) != nil || res.Traces != 68 || len(res.Groups) != 3 {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if !strings.HasPrefix(res.Groups[0].Shape[0], "checkout: POST /api/checkout") {
		t.Errorf("groups must start at the endpoint: %q", res.Groups[0].Shape[0])
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/groups?operation=x", nil))
	if rec.Code != 400 {
		t.Errorf("missing service: %d", rec.Code)
	}
}

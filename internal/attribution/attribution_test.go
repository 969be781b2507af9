package attribution

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/memstore"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func checkoutDur(spans []model.Span) uint64 {
	return compare.EndpointRoot("checkout", "POST /api/checkout")(analyze.NewTrace(spans)).Duration()
}

func TestSlowCheckoutsHaveBigCarts(t *testing.T) {
	g := workload.New(1)
	g.SlowBigCarts, g.BigCartShare = true, 0.1
	var sel, base [][]model.Span
	for i := 0; i < 400; i++ {
		tr := g.Checkout(t0.Add(time.Duration(i) * time.Second))
		if checkoutDur(tr) > 80*uint64(time.Millisecond) {
			sel = append(sel, tr)
		} else {
			base = append(base, tr)
		}
	}
	if len(sel) < 20 {
		t.Fatalf("only %d slow traces", len(sel))
	}
	vals := Traces(sel, base, Options{})
	if len(vals) == 0 {
		t.Fatal("no values")
	}
	top := vals[0]
	if top.Label != "product.variant_count > 50" || top.SelectionShare < 0.9 || top.BaselineShare > 0.05 {
		t.Errorf("top = %+v, want product.variant_count > 50 in nearly all slow traces; all: %+v", top, vals)
	}
	for _, v := range vals {
		switch v.Key {
		case "user.id", "host.name", "db.statement":
			t.Errorf("noise or high-cardinality key ranked: %+v", v)
		}
	}
}

func TestHTTPErrorsByVersion(t *testing.T) {
	st := memstore.New()
	g := workload.New(2)
	g.BaseErrorRate = 0
	for i := 0; i < 300; i++ {
		g.CheckoutVersion, g.ErrorRate = "1.4.0", 0
		if i%4 == 0 {
			g.CheckoutVersion, g.ErrorRate = "1.5.0-rc1", 0.6
		}
		st.Write(context.Background(), g.Checkout(t0.Add(time.Duration(i)*time.Second)))
	}
	mux := http.NewServeMux()
	RegisterRoutes(mux, st)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/attribution?service=checkout&operation=POST+/api/checkout&selection=error", nil))
	var resp Response
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &resp) != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if resp.Selected+resp.Baseline != 300 || resp.Selected < 30 {
		t.Fatalf("split %d/%d", resp.Selected, resp.Baseline)
	}
	var ver bool
	for _, v := range resp.Values[:3] {
		if v.Label == "service.version = 1.5.0-rc1" && v.SelectionShare == 1 {
			ver = true
		}
	}
	if !ver {
		t.Errorf("failing version not in the top 3: %+v", resp.Values)
	}
	for _, bad := range []string{"/api/v1/attribution?selection=slow", "/api/v1/attribution?service=checkout&selection=odd",
		"/api/v1/attribution?service=checkout&threshold_ms=-5"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", bad, nil))
		if rec.Code != 400 {
			t.Errorf("%s: %d", bad, rec.Code)
		}
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/attribution?service=checkout&selection=slow", nil))
	json.Unmarshal(rec.Body.Bytes(), &resp)
	if rec.Code != 200 || resp.ThresholdMS <= 0 || resp.Selected < 25 || resp.Selected > 40 {
		t.Errorf("default p90 threshold: %d %+v", rec.Code, resp)
	}
}

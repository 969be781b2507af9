package compare

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

const itemShape = "SELECT id, name, price FROM items WHERE id = ?"

func TestTracesCountChangeSlowdownAndErrors(t *testing.T) {
	ga := workload.New(1)
	ga.ItemQueries = 3
	gb := workload.New(2)
	gb.ItemQueries = 51
	gb.SlowBigCarts, gb.BigCartShare, gb.SlowFactor = true, 1, 20
	gb.ErrorRate, gb.BaseErrorRate = 1, 0
	ga.BaseErrorRate = 0
	a, b := ga.Checkout(t0), gb.Checkout(t0)
	res := Traces(a, b, Options{})

	if len(res.CountChanges) == 0 {
		t.Fatalf("no count change; result %+v", res)
	}
	cc := res.CountChanges[0]
	if cc.Statement != itemShape || cc.CountA != 3 || cc.CountB != 51 || cc.Service != "checkout" {
		t.Errorf("count change = %+v, want checkout %q 3→51", cc, itemShape)
	}
	// Top duration differences: the chain down to the slow stock query, with
	// the query's own time carrying the change and its parents' children.
	var sawDB, sawCheckout bool
	for _, d := range res.Durations[:6] {
		switch {
		case d.Service == "inventory" && strings.HasPrefix(d.Statement, "SELECT qty FROM stock"):
			sawDB = true
			if d.SelfDiffMS < 0.9*d.DiffMS || d.DiffMS < 50 {
				t.Errorf("stock query diff %+v: want a large diff that is its own time", d)
			}
		case d.Service == "checkout" && d.Operation == "POST /api/checkout":
			sawCheckout = true
			if d.ChildrenDiffMS < 0.9*d.DiffMS {
				t.Errorf("checkout diff %+v: want the change attributed to children", d)
			}
		}
	}
	if !sawDB || !sawCheckout {
		t.Errorf("top duration diffs miss the stock query or checkout: %+v", res.Durations[:6])
	}
	for i := 1; i < len(res.Durations); i++ {
		if abs(res.Durations[i].DiffMS) > abs(res.Durations[i-1].DiffMS) {
			t.Fatalf("duration diffs not ranked at %d", i)
		}
	}
	var payFail bool
	for _, e := range res.Errors {
		if e.Service == "payments" && e.ErrorShareB == 1 && e.ErrorShareA == 0 && strings.Contains(e.ErrorB, "PaymentDeclinedException") {
			payFail = true
		}
	}
	if !payFail {
		t.Errorf("payments failing only in B not reported: %+v", res.Errors)
	}
	if res.A.TraceID == res.B.TraceID || res.B.ErrorCount == 0 {
		t.Errorf("trace info wrong: %+v / %+v", res.A, res.B)
	}
	if len(res.Summary) < 3 || !strings.Contains(strings.Join(res.Summary, "\n"), "3 → 51 calls") {
		t.Errorf("summary = %q", res.Summary)
	}
}

func TestTracesOnlyInOneSide(t *testing.T) {
	ga, gb := workload.New(3), workload.New(4)
	gb.NoRecommendations = true
	res := Traces(ga.Checkout(t0), gb.Checkout(t0), Options{})
	if len(res.OnlyInOne) != 1 {
		t.Fatalf("only_in_one = %+v, want the recommendations call", res.OnlyInOne)
	}
	o := res.OnlyInOne[0]
	if o.Side != "a" || o.Service != "checkout" || o.Count != 1 || !strings.HasPrefix(o.Path, "frontend: POST /checkout > ") {
		t.Errorf("only_in_one = %+v", o)
	}
	// Identical shapes: nothing else differs structurally.
	if len(res.CountChanges) != 0 {
		t.Errorf("unexpected count changes %+v", res.CountChanges)
	}
	x := ga.Checkout(t0)
	same := Traces(x, ga.Checkout(t0), Options{})
	if len(same.OnlyInOne)+len(same.CountChanges) != 0 || same.Matched != len(x) {
		t.Errorf("same shape: matched %d, only %v, counts %v", same.Matched, same.OnlyInOne, same.CountChanges)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestGroups(t *testing.T) {
	ga, gb := workload.New(5), workload.New(6)
	ga.ItemQueries, gb.ItemQueries = 2, 20
	gb.SlowBigCarts, gb.BigCartShare = true, 0.5
	var a, b [][]model.Span
	for i := 0; i < 40; i++ {
		a = append(a, ga.Checkout(t0.Add(time.Duration(i)*time.Second)))
		b = append(b, gb.Checkout(t0.Add(time.Duration(i)*time.Second)))
	}
	res := Groups(a, b, GroupOptions{Root: EndpointRoot("checkout", "POST /api/checkout")})
	if res.A.Traces != 40 || res.B.Traces != 40 {
		t.Fatalf("traces %d/%d", res.A.Traces, res.B.Traces)
	}
	if len(res.CountChanges) == 0 || res.CountChanges[0].Statement != itemShape || res.CountChanges[0].CountA != 2 || res.CountChanges[0].CountB != 20 {
		t.Errorf("count changes = %+v", res.CountChanges)
	}
	if !strings.HasPrefix(res.CountChanges[0].Path, "checkout: POST /api/checkout > ") {
		t.Errorf("paths must start at the endpoint: %s", res.CountChanges[0].Path)
	}
	if res.B.MeanDurationMS <= res.A.MeanDurationMS {
		t.Errorf("B should be slower: %+v vs %+v", res.B, res.A)
	}
	if len(res.Durations) == 0 || res.Durations[0].DiffMS <= 0 {
		t.Errorf("durations = %+v", res.Durations)
	}
}

func TestHTTP(t *testing.T) {
	st := memstore.New()
	ctx := context.Background()
	g := workload.New(7)
	g.BaseErrorRate = 0
	var okID, errID model.TraceID
	for i := 0; i < 60; i++ {
		g.ErrorRate = 0
		if i%3 == 0 {
			g.ErrorRate = 1
		}
		sp := g.Checkout(t0.Add(time.Duration(i) * time.Second))
		if i == 0 {
			errID = sp[0].TraceID
		}
		if i == 1 {
			okID = sp[0].TraceID
		}
		if err := st.Write(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	RegisterRoutes(mux, st)
	get := func(u string) (int, []byte) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", u, nil))
		return rec.Code, rec.Body.Bytes()
	}
	code, body := get("/api/v1/compare?a=" + okID.String() + "&b=" + errID.String())
	var r Result
	if code != 200 || json.Unmarshal(body, &r) != nil || r.Mode != "traces" || len(r.Errors) == 0 {
		t.Fatalf("trace compare: %d %s", code, body)
	}
	code, body = get("/api/v1/compare?service=checkout&operation=POST+/api/checkout&a_status=ok&b_status=error")
	var gr GroupResult
	if code != 200 || json.Unmarshal(body, &gr) != nil {
		t.Fatalf("group compare: %d %s", code, body)
	}
	if gr.A.Traces != 40 || gr.B.Traces != 20 || gr.A.ErrorShare != 0 || gr.B.ErrorShare != 1 {
		t.Errorf("groups: A %+v B %+v", gr.A, gr.B)
	}
	var pay bool
	for _, e := range gr.Errors {
		if e.Service == "payments" && e.ErrorShareB == 1 {
			pay = true
		}
	}
	if !pay {
		t.Errorf("payments error share difference missing: %+v", gr.Errors)
	}
	for _, bad := range []string{
		"/api/v1/compare?a=" + okID.String(),
		"/api/v1/compare?a=zz&b=" + okID.String(),
		"/api/v1/compare?service=checkout",
		"/api/v1/compare?service=checkout&a_status=bad",
		"/api/v1/compare",
		"/api/v1/compare?service=checkout&a_status=ok&a_min_duration=2s&a_max_duration=1s",
	} {
		if code, body := get(bad); code != 400 {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := get("/api/v1/compare?a=" + okID.String() + "&b=0123456789abcdef0123456789abcdef"); code != 404 {
		t.Errorf("unknown trace: %d, want 404", code)
	}
}

package baseline

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

var n uint64

func ids() (model.TraceID, func() model.SpanID) {
	n++
	var t model.TraceID
	binary.BigEndian.PutUint64(t[8:], n)
	t[0] = 9
	var k uint64
	return t, func() model.SpanID {
		k++
		var s model.SpanID
		binary.BigEndian.PutUint64(s[:], n<<16|k)
		return s
	}
}

type gen struct {
	r         *rand.Rand
	checkout  []float64 // ms
	spanCount []float64
}

// trace: frontend GET /checkout (SERVER) → CLIENT GET /cart → cart SERVER
// → postgres query; 30% also call recommend (uninstrumented, peer.service);
// 10% of checkouts fail.
func (g *gen) trace(start time.Time, scale float64) []model.Span {
	tr, next := ids()
	d := time.Duration(math.Exp(g.r.NormFloat64()*0.4+math.Log(100)) * scale * float64(time.Millisecond))
	g.checkout = append(g.checkout, float64(d)/1e6)
	at := func(off, dur time.Duration) (uint64, uint64) {
		return uint64(start.Add(off).UnixNano()), uint64(start.Add(off + dur).UnixNano())
	}
	root := model.Span{TraceID: tr, SpanID: next(), Service: "frontend", Name: "GET /checkout", Kind: model.KindServer}
	root.StartUnixNano, root.EndUnixNano = at(0, d)
	if g.r.IntN(10) == 0 {
		root.StatusCode = model.StatusError
	}
	cc := model.Span{TraceID: tr, SpanID: next(), ParentSpanID: root.SpanID, Service: "frontend", Name: "GET", Kind: model.KindClient,
		Attrs: model.Attrs{{Key: "http.request.method", Value: model.Str("GET")}}}
	cc.StartUnixNano, cc.EndUnixNano = at(time.Millisecond, d/2)
	cs := model.Span{TraceID: tr, SpanID: next(), ParentSpanID: cc.SpanID, Service: "cart", Name: "GET /cart", Kind: model.KindServer,
		Attrs: model.Attrs{{Key: "http.route", Value: model.Str("/cart")}}}
	cs.StartUnixNano, cs.EndUnixNano = at(2*time.Millisecond, d/2-2*time.Millisecond)
	q := model.Span{TraceID: tr, SpanID: next(), ParentSpanID: cs.SpanID, Service: "cart", Name: "SELECT items", Kind: model.KindClient,
		Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")},
			{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT * FROM items WHERE cart_id = %d", g.r.IntN(100000)))}}}
	q.StartUnixNano, q.EndUnixNano = at(3*time.Millisecond, time.Duration(4+g.r.IntN(3))*time.Millisecond)
	spans := []model.Span{root, cc, cs, q}
	if g.r.Float64() < 0.3 {
		rc := model.Span{TraceID: tr, SpanID: next(), ParentSpanID: root.SpanID, Service: "frontend", Name: "recommend", Kind: model.KindClient,
			Attrs: model.Attrs{{Key: "peer.service", Value: model.Str("recommend")}, {Key: "rpc.system", Value: model.Str("grpc")}, {Key: "rpc.method", Value: model.Str("Get")}}}
		rc.StartUnixNano, rc.EndUnixNano = at(d/2, d/4)
		spans = append(spans, rc)
	}
	g.spanCount = append(g.spanCount, float64(len(spans)))
	return spans
}

func quant(v []float64, q float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}

func TestBaselinesFromWorkload(t *testing.T) {
	b, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var h analyze.History = b
	g := &gen{r: rand.New(rand.NewPCG(1, 2))}
	start := time.Now().Add(-time.Hour)
	for i := 0; i < 2000; i++ {
		b.ObserveTrace(g.trace(start.Add(time.Duration(i)*time.Second), 1))
	}
	op, ok := h.OperationDuration("frontend", "GET /checkout")
	if !ok || op.Count < 1960 || op.Count > 2000 { // 33 min of a 24 h half-life decays ~1.6%
		t.Fatalf("operation baseline: %+v %v", op, ok)
	}
	if p50 := quant(g.checkout, 0.5); math.Abs(op.P50MS-p50)/p50 > 0.13 {
		t.Errorf("p50 %.1f ms, exact %.1f", op.P50MS, p50)
	}
	if p95 := quant(g.checkout, 0.95); math.Abs(op.P95MS-p95)/p95 > 0.13 {
		t.Errorf("p95 %.1f ms, exact %.1f", op.P95MS, p95)
	}
	shape := analyze.NormalizeStatement("SELECT * FROM items WHERE cart_id = 42")
	st, ok := h.StatementDuration("postgresql", shape)
	if !ok || st.Count < 1960 || st.P50MS < 3.5 || st.P50MS > 7 {
		t.Fatalf("statement baseline for %q: %+v %v", shape, st, ok)
	}
	kids, ok := h.UsualChildren("frontend", "GET /checkout")
	if !ok || len(kids) != 2 {
		t.Fatalf("children: %+v", kids)
	}
	if kids[0].Service != "cart" || kids[0].Operation != "GET /cart" || kids[0].Presence != 1 || kids[0].MeanCount != 1 {
		t.Errorf("usual cart call: %+v", kids[0])
	}
	if kids[1].Service != "recommend" || math.Abs(kids[1].Presence-0.3) > 0.04 {
		t.Errorf("occasional recommend call: %+v", kids[1])
	}
	// recommend is called after the cart has answered, never alongside it.
	cart, rec := [2]string{kids[0].Service, kids[0].Operation}, [2]string{kids[1].Service, kids[1].Operation}
	pair, ok := h.CallPair("frontend", "GET /checkout", rec, cart)
	if !ok || math.Abs(pair.Parents/2000-0.3) > 0.04 || pair.BFirst != pair.Parents || pair.Together != 0 || pair.Independent() {
		t.Errorf("recommend after cart: %+v", pair)
	}
	// The cart entry's own call is the query, not frontend's calls.
	ck, ok := h.UsualChildren("cart", "GET /cart")
	if !ok || len(ck) != 1 || ck[0].Service != "postgresql" || ck[0].Operation != shape {
		t.Errorf("cart children: %+v", ck)
	}
	sc, ok := b.SpanCount("frontend", "GET /checkout")
	mean := 0.0
	for _, v := range g.spanCount {
		mean += v
	}
	mean /= float64(len(g.spanCount))
	if !ok || math.Abs(sc.Mean-mean) > 1e-6 || sc.P50 < 4 || sc.P50 > 5.5 {
		t.Errorf("span count: %+v (exact mean %.3f)", sc, mean)
	}
	if r, _, ok := b.OperationErrorRate("frontend", "GET /checkout"); !ok || math.Abs(r-0.1) > 0.025 {
		t.Errorf("error rate %v", r)
	}
	if _, ok := h.OperationDuration("nobody", "nothing"); ok {
		t.Error("unknown operation must report !ok")
	}
}

func TestDecayFollowsNewNormal(t *testing.T) {
	b, _ := New(Options{HalfLife: time.Hour}, nil)
	g := &gen{r: rand.New(rand.NewPCG(3, 4))}
	t0 := time.Now().Add(-48 * time.Hour)
	for i := 0; i < 500; i++ {
		b.ObserveTrace(g.trace(t0.Add(time.Duration(i)*time.Second), 1)) // ~100 ms
	}
	before, _ := b.OperationDuration("frontend", "GET /checkout")
	t1 := t0.Add(10 * time.Hour) // ten half-lives later
	for i := 0; i < 500; i++ {
		b.ObserveTrace(g.trace(t1.Add(time.Duration(i)*time.Second), 5)) // ~500 ms
	}
	after, _ := b.OperationDuration("frontend", "GET /checkout")
	if before.P50MS > 130 || after.P50MS < 400 || after.P50MS > 600 {
		t.Fatalf("p50 before %.1f, after regime change %.1f", before.P50MS, after.P50MS)
	}
	if after.Count > 520 {
		t.Errorf("old samples should have decayed: count %d", after.Count)
	}
}

func TestSnapshotRestores(t *testing.T) {
	dir := t.TempDir()
	b, _ := New(Options{Dir: dir}, nil)
	g := &gen{r: rand.New(rand.NewPCG(5, 6))}
	for i := 0; i < 300; i++ {
		b.ObserveTrace(g.trace(time.Now().Add(-time.Duration(300-i)*time.Second), 1))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := New(Options{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(*Baselines) any{
		func(x *Baselines) any { v, _ := x.OperationDuration("frontend", "GET /checkout"); return v },
		func(x *Baselines) any { v, _ := x.UsualChildren("frontend", "GET /checkout"); return fmt.Sprint(v) },
		func(x *Baselines) any { v, _ := x.SpanCount("frontend", "GET /checkout"); return v },
		func(x *Baselines) any {
			v, _ := x.CallPair("frontend", "GET /checkout", [2]string{"cart", "GET /cart"}, [2]string{"recommend", "Get"})
			return v
		},
		func(x *Baselines) any {
			v, _ := x.StatementDuration("postgresql", analyze.NormalizeStatement("SELECT * FROM items WHERE cart_id = 1"))
			return v
		},
	} {
		if a, c := f(b), f(b2); a != c {
			t.Errorf("after restart %v, before %v", c, a)
		}
	}
	if v, _ := b2.OperationDuration("frontend", "GET /checkout"); v.Count != 300 {
		t.Errorf("restored count %d", v.Count)
	}
}

func BenchmarkObserveTrace(b *testing.B) {
	bl, _ := New(Options{}, nil)
	g := &gen{r: rand.New(rand.NewPCG(7, 8))}
	traces := make([][]model.Span, 256)
	spans := 0
	for i := range traces {
		traces[i] = g.trace(time.Now(), 1)
		spans += len(traces[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.ObserveTrace(traces[i%len(traces)])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(spans)/float64(len(traces))), "ns/span")
}

// A dashboard that sometimes awaits its two widgets one by one and
// sometimes asks for both at once: the pair ran together, so neither call
// needs the other's answer, whatever order one trace shows.
func TestCallPairLearnsCallsThatRanTogether(t *testing.T) {
	b, _ := New(Options{}, nil)
	start := time.Now().Add(-time.Hour)
	for i := range 20 {
		tr, next := ids()
		at := uint64(start.Add(time.Duration(i) * time.Second).UnixNano())
		ms := uint64(time.Millisecond)
		root := model.Span{TraceID: tr, SpanID: next(), Service: "bff", Name: "GET /dashboard", Kind: model.KindServer,
			StartUnixNano: at, EndUnixNano: at + 300*ms}
		call := func(peer string, from, to uint64) model.Span {
			return model.Span{TraceID: tr, SpanID: next(), ParentSpanID: root.SpanID, Service: "bff", Name: "GET", Kind: model.KindClient,
				StartUnixNano: at + from*ms, EndUnixNano: at + to*ms,
				Attrs: model.Attrs{{Key: "peer.service", Value: model.Str(peer)}, {Key: "rpc.system", Value: model.Str("grpc")}}}
		}
		second := uint64(110)
		if i%4 == 0 {
			second = 5
		}
		b.ObserveTrace([]model.Span{root, call("orders", 5, 105), call("profile", second, second+100)})
	}
	pair, ok := b.CallPair("bff", "GET /dashboard", [2]string{"profile", "GET"}, [2]string{"orders", "GET"})
	if !ok || pair.Parents != 20 || pair.Together != 5 || pair.BFirst != 15 || pair.AFirst != 0 || !pair.Independent() {
		t.Fatalf("dashboard widgets: %+v %v", pair, ok)
	}
}

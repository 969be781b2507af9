package servicegraph

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red"
)

var ids atomic.Uint64

func tid() model.TraceID {
	var t model.TraceID
	t[0] = 7
	binary.BigEndian.PutUint64(t[8:], ids.Add(1))
	return t
}

func sid() model.SpanID {
	var s model.SpanID
	binary.BigEndian.PutUint64(s[:], ids.Add(1))
	return s
}

func span(tr model.TraceID, parent model.SpanID, svc, name string, kind model.SpanKind, start time.Time, d time.Duration, failed bool, attrs ...model.Attr) model.Span {
	sp := model.Span{TraceID: tr, SpanID: sid(), ParentSpanID: parent, Service: svc, Name: name, Kind: kind,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(d).UnixNano()), Attrs: attrs}
	if failed {
		sp.StatusCode = model.StatusError
	}
	return sp
}

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) set(t time.Time)     { c.t.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }
func newGraph(t *testing.T, dir string, c *clock, opt Options) *Graph {
	t.Helper()
	opt.Dir = dir
	g, err := New(opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.now = c.now
	return g
}

// workload: per minute for `minutes` minutes: 60 frontend→api calls (10%
// fail on the server side), each api server span making a postgres call
// (uninstrumented) and a call to inventory whose SERVER spans are exported
// in a later batch than the client spans; 20 orders→billing messages linked
// PRODUCER→CONSUMER in separate traces.
type workload struct {
	early, late []model.Span
}

func genWorkload(base time.Time, minutes int, seed uint64) workload {
	r := rand.New(rand.NewPCG(seed, 1))
	var w workload
	for m := minutes; m >= 1; m-- {
		t0 := base.Add(-time.Duration(m) * time.Minute)
		for i := 0; i < 60; i++ {
			st := t0.Add(time.Duration(i) * time.Second)
			tr := tid()
			c := span(tr, model.SpanID{}, "frontend", "GET /api", model.KindClient, st, 30*time.Millisecond, false)
			s := span(tr, c.SpanID, "api", "GET /api", model.KindServer, st.Add(time.Millisecond), time.Duration(10+r.IntN(20))*time.Millisecond, i%10 == 0)
			db := span(tr, s.SpanID, "api", "SELECT", model.KindClient, st.Add(2*time.Millisecond), 3*time.Millisecond, false,
				model.Attr{Key: "db.system", Value: model.Str("postgresql")})
			ic := span(tr, s.SpanID, "api", "GET /stock", model.KindClient, st.Add(5*time.Millisecond), 4*time.Millisecond, false,
				model.Attr{Key: "peer.service", Value: model.Str("inventory")})
			is := span(tr, ic.SpanID, "inventory", "GET /stock", model.KindServer, st.Add(6*time.Millisecond), 2*time.Millisecond, false)
			// The server batch of api arrives before frontend's client batch.
			w.early = append(w.early, s, db, ic)
			w.late = append(w.late, c, is)
			if i%3 == 0 {
				p := span(tid(), model.SpanID{}, "orders", "publish", model.KindProducer, st, time.Millisecond, false)
				cs := span(tid(), model.SpanID{}, "billing", "consume", model.KindConsumer, st.Add(50*time.Millisecond), 5*time.Millisecond, false)
				cs.Links = []model.Link{{TraceID: p.TraceID, SpanID: p.SpanID}}
				w.early = append(w.early, cs)
				w.late = append(w.late, p)
			}
		}
	}
	return w
}

func observeBatches(g *Graph, spans []model.Span, n int) {
	for i := 0; i < len(spans); i += n {
		g.Observe(spans[i:min(i+n, len(spans))])
	}
}

func edgeMap(es []Edge) map[string]Edge {
	out := map[string]Edge{}
	for _, e := range es {
		out[e.Source+"->"+e.Target] = e
	}
	return out
}

func TestEdgesFromPairsPeersAndLinks(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	c := &clock{}
	c.set(base)
	g := newGraph(t, "", c, Options{PairTimeout: 5 * time.Second})
	w := genWorkload(base, 3, 1)
	observeBatches(g, w.early, 50)
	observeBatches(g, w.late, 70)
	c.add(6 * time.Second)
	g.Expire()
	edges, err := g.Edges(context.Background(), base.Add(-3*time.Minute), base)
	if err != nil {
		t.Fatal(err)
	}
	em := edgeMap(edges)
	if len(em) != 4 {
		t.Fatalf("edges: %+v", edges)
	}
	fa := em["frontend->api"]
	if fa.CallCount != 180 || fa.ErrorCount != 18 || fa.ConnectionType != "" {
		t.Errorf("frontend->api: %+v", fa)
	}
	if fa.ServerP50MS < 12 || fa.ServerP50MS > 28 || fa.ClientP50MS < 26 || fa.ClientP50MS > 34 {
		t.Errorf("frontend->api latencies: server p50 %v client p50 %v", fa.ServerP50MS, fa.ClientP50MS)
	}
	if e := em["api->inventory"]; e.CallCount != 180 || e.ServerP95MS == 0 {
		t.Errorf("api->inventory (paired across batches): %+v", e)
	}
	if e := em["api->postgresql"]; e.CallCount != 180 || e.ConnectionType != "database" || e.ServerP95MS != 0 || e.P95MS == 0 {
		t.Errorf("api->postgresql (uninstrumented): %+v", e)
	}
	if e := em["orders->billing"]; e.CallCount != 60 || e.ConnectionType != "messaging_system" {
		t.Errorf("orders->billing via link: %+v", e)
	}
	paired, virtual, _, waiting := g.PairStats()
	if paired != 180*2+60 || virtual != 180 || waiting != 0 {
		t.Errorf("pair stats: paired %d virtual %d waiting %d", paired, virtual, waiting)
	}
	// A window holding one of the three minutes sees a third of the calls.
	one, _ := g.Edges(context.Background(), base.Add(-2*time.Minute), base.Add(-time.Minute))
	if e := edgeMap(one)["frontend->api"]; e.CallCount != 60 || e.Rate != 1 {
		t.Errorf("one-minute window: %+v", e)
	}
	deps, err := g.Dependencies(context.Background(), base, time.Hour)
	if err != nil || len(deps) != 4 {
		t.Fatalf("dependencies: %v %+v", err, deps)
	}
	raw, _ := json.Marshal(deps[0])
	if !strings.Contains(string(raw), `"callCount":180`) || !strings.Contains(string(raw), `"parent"`) {
		t.Errorf("dependency json %s", raw)
	}
}

func TestPendingIsBounded(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{MaxPending: 100})
	var spans []model.Span
	for i := 0; i < 1000; i++ {
		spans = append(spans, span(tid(), model.SpanID{}, "a", "call", model.KindClient, c.now(), time.Millisecond, false,
			model.Attr{Key: "peer.service", Value: model.Str("b")}))
	}
	g.Observe(spans)
	_, virtual, _, waiting := g.PairStats()
	if waiting > 100 || virtual != 900 {
		t.Fatalf("waiting %d (cap 100), evicted to virtual %d", waiting, virtual)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	es, _ := g.Edges(context.Background(), c.now().Add(-time.Minute), c.now().Add(time.Minute))
	if len(es) != 1 || es[0].CallCount != 1000 {
		t.Fatalf("after close: %+v", es)
	}
}

func TestRestartRestoresEdges(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Truncate(time.Minute)
	c := &clock{}
	c.set(base)
	g := newGraph(t, dir, c, Options{})
	w := genWorkload(base, 2, 2)
	g.Observe(w.early)
	g.Observe(w.late)
	if err := g.Close(); err != nil { // resolves pending halves too
		t.Fatal(err)
	}
	g2 := newGraph(t, dir, c, Options{})
	defer g2.Close()
	es, err := g2.Edges(context.Background(), base.Add(-2*time.Minute), base)
	if err != nil {
		t.Fatal(err)
	}
	em := edgeMap(es)
	if em["frontend->api"].CallCount != 120 || em["api->postgresql"].CallCount != 120 {
		t.Fatalf("restored edges: %+v", es)
	}
}

type fakeRED map[string]red.ServiceStat

func (f fakeRED) ServiceStats(context.Context, time.Time, time.Time) (map[string]red.ServiceStat, error) {
	return f, nil
}

func TestServiceMapHTTP(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	c := &clock{}
	c.set(base)
	g := newGraph(t, "", c, Options{NodeStats: fakeRED{"frontend": {Rate: 9, ErrorRate: 0.5, P95MS: 99}}})
	w := genWorkload(base, 1, 3)
	g.Observe(w.early)
	g.Observe(w.late)
	c.add(time.Minute)
	g.Expire()
	mux := http.NewServeMux()
	g.RegisterRoutes(mux)
	rr := httptest.NewRecorder()
	mux.ServeHTTP(rr, httptest.NewRequest("GET", "/api/v1/servicemap?start="+strconv.FormatInt(base.Add(-time.Minute).UnixMilli(), 10)+"&end="+strconv.FormatInt(base.UnixMilli(), 10), nil))
	if rr.Code != 200 {
		t.Fatalf("%d %s", rr.Code, rr.Body)
	}
	var m struct {
		Nodes []map[string]any `json:"nodes"`
		Edges []map[string]any `json:"edges"`
	}
	if err := json.Unmarshal(rr.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]map[string]any{}
	for _, n := range m.Nodes {
		nodes[n["id"].(string)] = n
	}
	if len(nodes) != 6 || nodes["frontend"]["rate"].(float64) != 9 || nodes["postgresql"]["virtual"] != true {
		t.Fatalf("nodes: %+v", m.Nodes)
	}
	// api has no RED figure here: its node rate comes from incoming calls.
	if r := nodes["api"]["rate"].(float64); r != 1 || nodes["api"]["error_rate"].(float64) != 0.1 {
		t.Fatalf("api node: %+v", nodes["api"])
	}
	for _, k := range []string{"source", "target", "call_count", "error_count", "error_rate", "p50_ms", "p95_ms"} {
		if _, ok := m.Edges[0][k]; !ok {
			t.Errorf("edge lacks %q: %v", k, m.Edges[0])
		}
	}
	rr = httptest.NewRecorder()
	mux.ServeHTTP(rr, httptest.NewRequest("GET", "/api/v1/servicemap?start=later", nil))
	if rr.Code != 400 {
		t.Fatalf("bad start: %d", rr.Code)
	}
}

func TestPrometheusServiceGraphSeries(t *testing.T) {
	base := time.Now().Truncate(time.Minute)
	c := &clock{}
	c.set(base)
	g := newGraph(t, "", c, Options{})
	w := genWorkload(base, 1, 4)
	g.Observe(w.early)
	g.Observe(w.late)
	g.Expire()
	c.add(time.Minute)
	g.Expire()
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, _ = bufioCopy(buf, resp)
	text := buf.String()
	want := []string{
		`traces_service_graph_request_total{client="frontend",connection_type="",server="api"} 60.0 # {trace_id="07`,
		`traces_service_graph_request_failed_total{client="frontend",connection_type="",server="api"} 6.0`,
		`traces_service_graph_request_server_seconds_count{client="frontend",connection_type="",server="api"} 60`,
		`traces_service_graph_request_client_seconds_count{client="frontend",connection_type="",server="api"} 60`,
		`traces_service_graph_request_client_seconds_count{client="api",connection_type="database",server="postgresql"} 60`,
	}
	for _, wl := range want {
		if !strings.Contains(text, wl) {
			t.Errorf("exposition lacks %q", wl)
		}
	}
	var prev float64 = -1
	sawEx := false
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, `traces_service_graph_request_server_seconds_bucket{client="frontend",connection_type="",server="api"`) {
			continue
		}
		main, ex, has := strings.Cut(l, " # ")
		f := strings.Fields(main)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		if v < prev {
			t.Fatalf("non-monotonic bucket: %s", l)
		}
		prev = v
		if has && strings.Contains(ex, `trace_id="07`) {
			sawEx = true
		}
	}
	if prev != 60 || !sawEx {
		t.Fatalf("last bucket %v, exemplar seen %v\n%s", prev, sawEx, text)
	}
}

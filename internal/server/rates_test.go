package server

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

func getJSON(t *testing.T, s *Server, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr("http") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// checkoutCalls is `n` traces spread evenly over the `over` before now:
// frontend GET / → frontend CLIENT → api SERVER → api CLIENT to the shop
// database.
func checkoutCalls(n int, over time.Duration, now time.Time) []model.Span {
	var spans []model.Span
	for i := 0; i < n; i++ {
		var tr model.TraceID
		binary.BigEndian.PutUint64(tr[8:], uint64(i+1))
		tr[0] = 0x42
		sid := func(k byte) model.SpanID { return model.SpanID{k, byte(i >> 16), byte(i >> 8), byte(i)} }
		at := uint64(now.Add(-over + time.Duration(i)*over/time.Duration(n)).UnixNano())
		spans = append(spans,
			model.Span{TraceID: tr, SpanID: sid(1), Service: "frontend", Name: "GET /", Kind: model.KindServer, StartUnixNano: at, EndUnixNano: at + 9e6},
			model.Span{TraceID: tr, SpanID: sid(2), ParentSpanID: sid(1), Service: "frontend", Name: "GET /api", Kind: model.KindClient, StartUnixNano: at + 1e6, EndUnixNano: at + 8e6},
			model.Span{TraceID: tr, SpanID: sid(3), ParentSpanID: sid(2), Service: "api", Name: "GET /api", Kind: model.KindServer, StartUnixNano: at + 2e6, EndUnixNano: at + 7e6},
			model.Span{TraceID: tr, SpanID: sid(4), ParentSpanID: sid(3), Service: "api", Name: "SELECT items", Kind: model.KindClient, StartUnixNano: at + 3e6, EndUnixNano: at + 6e6,
				Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")}, {Key: "db.namespace", Value: model.Str("shop")}}},
		)
	}
	return spans
}

// The same calls must show the same rate in the RED tables, the service
// map and the Jaeger Monitor API, over a range (1 h) that reaches back
// further than the data (20 min).
func TestRatesAgreeAcrossAPIs(t *testing.T) {
	s := startServer(t, func(*config.Config) {})
	now := time.Now()
	const n = 600
	postOTLP(t, s.Addr("otlp-http"), checkoutCalls(n, 20*time.Minute, now))

	start, end := now.Add(-time.Hour), time.Now()
	rng := "start=" + strconv.FormatInt(start.UnixMilli(), 10) + "&end=" + strconv.FormatInt(end.UnixMilli(), 10)

	var services struct {
		Services []struct {
			Service string  `json:"service"`
			Rate    float64 `json:"rate"`
			Count   uint64  `json:"count"`
		} `json:"services"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		getJSON(t, s, "/api/v1/metrics/services?"+rng, &services)
		total := uint64(0)
		for _, r := range services.Services {
			total += r.Count
		}
		if total >= 2*n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	table := map[string]float64{}
	for _, r := range services.Services {
		table[r.Service] = r.Rate
	}

	var ops struct {
		Operations []struct {
			Operation string  `json:"operation"`
			Rate      float64 `json:"rate"`
		} `json:"operations"`
	}
	opRate := func(service, kind string) float64 {
		getJSON(t, s, "/api/v1/metrics/operations?service="+service+"&kind="+kind+"&"+rng, &ops)
		if len(ops.Operations) != 1 {
			t.Fatalf("operations of %s %s: %+v", service, kind, ops.Operations)
		}
		return ops.Operations[0].Rate
	}

	var sm struct {
		Nodes []struct {
			ID   string  `json:"id"`
			Rate float64 `json:"rate"`
			Type string  `json:"type"`
		} `json:"nodes"`
		Edges []struct {
			Source, Target string
			Rate           float64 `json:"rate"`
			ConnectionType string  `json:"connection_type"`
		} `json:"edges"`
	}
	getJSON(t, s, "/api/v1/servicemap?"+rng, &sm)
	node, edge := map[string]float64{}, map[string]float64{}
	for _, nd := range sm.Nodes {
		node[nd.ID] = nd.Rate
	}
	for _, e := range sm.Edges {
		edge[e.Source+"→"+e.Target] = e.Rate
	}

	var fam struct {
		Metrics []struct {
			MetricPoints []struct {
				GaugeValue struct {
					DoubleValue float64 `json:"doubleValue"`
				} `json:"gaugeValue"`
			} `json:"metricPoints"`
		} `json:"metrics"`
	}
	jaegerRate := func(service, kind string) float64 {
		q := url.Values{"service": {service}, "spanKind": {kind}, "endTs": {strconv.FormatInt(end.UnixMilli(), 10)},
			"lookback": {"3600000"}, "step": {"3600000"}, "ratePer": {"3600000"}}
		getJSON(t, s, "/api/metrics/calls?"+q.Encode(), &fam)
		if len(fam.Metrics) != 1 || len(fam.Metrics[0].MetricPoints) == 0 {
			t.Fatalf("jaeger calls of %s %s: %+v", service, kind, fam)
		}
		pts := fam.Metrics[0].MetricPoints
		return pts[len(pts)-1].GaugeValue.DoubleValue
	}

	// 600 calls over the ~20-21 minutes since the first minute with data.
	covered := end.Sub(time.Unix(now.Add(-20*time.Minute).Unix()/60*60, 0)).Seconds()
	want := n / covered
	for _, c := range []struct {
		what string
		got  float64
	}{
		{"services table: api", table["api"]},
		{"services table: frontend", table["frontend"]},
		{"operations: api server", opRate("api", "server")},
		{"operations: frontend client", opRate("frontend", "client")},
		{"operations: api client (database)", opRate("api", "client")},
		{"map node: api", node["api"]},
		{"map node: frontend", node["frontend"]},
		{"map node: shop (database)", node["shop"]},
		{"map edge: frontend→api", edge["frontend→api"]},
		{"map edge: api→shop", edge["api→shop"]},
		{"jaeger calls: api server", jaegerRate("api", "server")},
		{"jaeger calls: api client", jaegerRate("api", "client")},
	} {
		if math.Abs(c.got-want)/want > 0.005 {
			t.Errorf("%s: %.4f/s, want %.4f/s (%d calls over %.0f s)", c.what, c.got, want, n, covered)
		}
	}
	for _, nd := range sm.Nodes {
		if nd.ID == "shop" && nd.Type != "database" {
			t.Errorf("shop node type %q", nd.Type)
		}
	}
	if t.Failed() {
		t.Logf("map: %+v", sm)
	}
}

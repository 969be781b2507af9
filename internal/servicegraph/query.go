package servicegraph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Edge is one dependency over a window. P50MS/P95MS are server-side
// latency when the server is instrumented, else client-side.
type Edge struct {
	Source         string  `json:"source"`
	Target         string  `json:"target"`
	ConnectionType string  `json:"connection_type,omitempty"`
	CallCount      uint64  `json:"call_count"`
	ErrorCount     uint64  `json:"error_count"`
	ErrorRate      float64 `json:"error_rate"`
	Rate           float64 `json:"rate"`
	P50MS          float64 `json:"p50_ms"`
	P95MS          float64 `json:"p95_ms"`
	ClientP50MS    float64 `json:"client_p50_ms"`
	ClientP95MS    float64 `json:"client_p95_ms"`
	ServerP50MS    float64 `json:"server_p50_ms,omitempty"`
	ServerP95MS    float64 `json:"server_p95_ms,omitempty"`
}

// ErrBadQuery wraps invalid input (an HTTP 400).
var ErrBadQuery = errors.New("bad service map query")

type pairKey struct{ a, b string }

type edgeAgg struct {
	agg    tsdb.Agg
	byConn [len(connNames)]uint64
}

// aggregate sums the edges of [start, end): this node's and, in a
// cluster, the other nodes' (each records the calls of the traces it
// owns). The rate's seconds are the cluster's covered time.
func (g *Graph) aggregate(ctx context.Context, start, end time.Time) (map[pairKey]*edgeAgg, float64, error) {
	if start.IsZero() || end.IsZero() || !end.After(start) {
		return nil, 0, fmt.Errorf("%w: end must be after start", ErrBadQuery)
	}
	s, e := tsdb.UnixMinute(start), tsdb.UnixMinute(end.Add(time.Minute-time.Nanosecond))
	out := map[pairKey]*edgeAgg{}
	whole := tsdb.Part{StartMin: s, EndMin: e, StepMin: max(e-s, 1)}
	cov, err := g.st.Read(ctx, g.remote, whole, func(tsdb.Key) bool { return true }, func(k tsdb.Key, r *tsdb.Rec) {
		pk := pairKey{k.A, k.B}
		ea := out[pk]
		if ea == nil {
			ea = new(edgeAgg)
			out[pk] = ea
		}
		ea.agg.AddRec(r)
		if int(k.K) < len(ea.byConn) {
			ea.byConn[k.K] += r.Count
		}
	})
	if err != nil && len(out) == 0 {
		return nil, 0, err
	}
	return out, g.covered(cov, s, e), err
}

// DataSincer says since when a component holds data; *red.Metrics
// implements it. The map then averages rates from the same minute as RED
// metrics, so node, edge and table rates of the same calls agree.
type DataSincer interface {
	DataSince() (time.Time, bool)
}

// covered is the seconds of the minutes [s, e) that rates are averaged
// over: from the later of s and the first minute with data, to the earlier
// of e and now (the rule of red's rates; see docs/api.md). cov holds the
// edges' first minute (the cluster's); RED's is taken into account too.
func (g *Graph) covered(cov tsdb.Coverage, s, e int64) float64 {
	return g.withDataSince(cov).Seconds(s, e, g.now())
}

// withDataSince lowers cov to RED's first minute with data on this node.
func (g *Graph) withDataSince(cov tsdb.Coverage) tsdb.Coverage {
	if ds, isDS := g.opt.NodeStats.(DataSincer); isDS {
		if t, has := ds.DataSince(); has && (!cov.Has || tsdb.UnixMinute(t) < cov.First) {
			cov = tsdb.Coverage{First: tsdb.UnixMinute(t), Has: true}
		}
	}
	return cov
}

// SetRemote makes queries merge the edges of the other nodes of a
// cluster. Call it before serving queries.
func (g *Graph) SetRemote(r tsdb.Remote) { g.remote = r }

// Part is this node's share of a cluster-wide query: its edge records
// and the earliest minute it holds edges or RED data for.
func (g *Graph) Part(p tsdb.Part) (tsdb.Partial, error) {
	part, err := g.st.Partial(p)
	cov := g.withDataSince(tsdb.Coverage{First: part.First, Has: part.HasFirst})
	part.First, part.HasFirst = cov.First, cov.Has
	return part, err
}

func rate(n uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return tsdb.Round6(float64(n) / secs)
}

func edgeOf(pk pairKey, ea *edgeAgg, secs float64) Edge {
	a := &ea.agg
	best := 0
	for c, n := range ea.byConn {
		if n > ea.byConn[best] {
			best = c
		}
	}
	e := Edge{Source: pk.a, Target: pk.b, ConnectionType: ConnName(uint8(best)),
		CallCount: a.Count, ErrorCount: a.Errors, ErrorRate: a.ErrorRate(),
		Rate:        rate(a.Count, secs),
		ClientP50MS: a.QuantileMS(0, 0.5), ClientP95MS: a.QuantileMS(0, 0.95),
		ServerP50MS: a.QuantileMS(1, 0.5), ServerP95MS: a.QuantileMS(1, 0.95)}
	if a.HistCount(1) > 0 {
		e.P50MS, e.P95MS = e.ServerP50MS, e.ServerP95MS
	} else {
		e.P50MS, e.P95MS = e.ClientP50MS, e.ClientP95MS
	}
	return e
}

// Edges returns the dependencies seen in [start, end), busiest first.
func (g *Graph) Edges(ctx context.Context, start, end time.Time) ([]Edge, error) {
	aggs, secs, err := g.aggregate(ctx, start, end)
	if aggs == nil {
		return nil, err
	}
	out := make([]Edge, 0, len(aggs))
	for pk, ea := range aggs {
		out = append(out, edgeOf(pk, ea, secs))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CallCount != out[j].CallCount {
			return out[i].CallCount > out[j].CallCount
		}
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Target < out[j].Target
	})
	return out, err
}

// Node is one service (or uninstrumented peer) of the map.
type Node struct {
	ID        string  `json:"id"`
	Service   string  `json:"service"`
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	P95MS     float64 `json:"p95_ms"`
	// Virtual marks a peer known only from its callers' attributes.
	Virtual bool `json:"virtual,omitempty"`
	// Type is "database" or "messaging_system" for a node that calls reach
	// as one (a database is named by db.namespace, else db.system), else
	// "service".
	Type string `json:"type"`
}

// Map is the service map of a window.
type Map struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// ServiceMap returns nodes and edges of [start, end). Node figures come
// from NodeStats (RED entry spans) when set, else from incoming edges.
func (g *Graph) ServiceMap(ctx context.Context, start, end time.Time) (*Map, error) {
	aggs, secs, err := g.aggregate(ctx, start, end)
	if aggs == nil {
		return nil, err
	}
	var stats map[string]red.ServiceStat
	if g.opt.NodeStats != nil {
		var serr error
		if stats, serr = g.opt.NodeStats.ServiceStats(ctx, start, end); serr != nil {
			g.log.Warn("service map: node stats unavailable", "err", serr)
		}
	}
	m := &Map{Edges: make([]Edge, 0, len(aggs))}
	incoming := map[string]*tsdb.Agg{}
	instrumented := map[string]bool{}
	virtual := map[string]bool{}
	nodeType := map[string]string{}
	for pk, ea := range aggs {
		e := edgeOf(pk, ea, secs)
		m.Edges = append(m.Edges, e)
		if e.ConnectionType == "database" || e.ConnectionType == "messaging_system" {
			nodeType[pk.b] = e.ConnectionType
		}
		instrumented[pk.a] = true
		if ea.agg.HistCount(1) > 0 {
			instrumented[pk.b] = true
		} else {
			virtual[pk.b] = true
		}
		in := incoming[pk.b]
		if in == nil {
			in = new(tsdb.Agg)
			incoming[pk.b] = in
		}
		in.Merge(&ea.agg)
	}
	names := map[string]bool{}
	for pk := range aggs {
		names[pk.a], names[pk.b] = true, true
	}
	for s := range stats {
		names[s] = true
	}
	for name := range names {
		n := Node{ID: name, Service: name, Virtual: virtual[name] && !instrumented[name], Type: "service"}
		if t := nodeType[name]; t != "" && !instrumented[name] {
			n.Type = t
		}
		if st, ok := stats[name]; ok {
			n.Rate, n.ErrorRate, n.P95MS = st.Rate, st.ErrorRate, st.P95MS
		} else if in := incoming[name]; in != nil {
			h := 1
			if in.HistCount(1) == 0 {
				h = 0
			}
			n.Rate, n.ErrorRate, n.P95MS = rate(in.Count, secs), in.ErrorRate(), in.QuantileMS(h, 0.95)
		}
		m.Nodes = append(m.Nodes, n)
	}
	sort.Slice(m.Nodes, func(i, j int) bool { return m.Nodes[i].ID < m.Nodes[j].ID })
	sort.Slice(m.Edges, func(i, j int) bool {
		if m.Edges[i].Source != m.Edges[j].Source {
			return m.Edges[i].Source < m.Edges[j].Source
		}
		return m.Edges[i].Target < m.Edges[j].Target
	})
	return m, err
}

// Dependency is one link of Jaeger's /api/dependencies.
type Dependency struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

// Dependencies answers Jaeger's /api/dependencies?endTs=&lookback=.
func (g *Graph) Dependencies(ctx context.Context, endTs time.Time, lookback time.Duration) ([]Dependency, error) {
	if lookback <= 0 {
		lookback = 24 * time.Hour
	}
	edges, err := g.Edges(ctx, endTs.Add(-lookback), endTs)
	if edges == nil && err != nil {
		return nil, err
	}
	out := make([]Dependency, len(edges))
	for i, e := range edges {
		out[i] = Dependency{Parent: e.Source, Child: e.Target, CallCount: e.CallCount}
	}
	return out, err
}

// RegisterRoutes mounts GET /api/v1/servicemap?start=&end= (RFC3339 or
// unix s/ms/µs/ns; default: the last hour).
func (g *Graph) RegisterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/servicemap", g.handleMap)
}

func (g *Graph) handleMap(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	end, err := tsdb.ParseTime(q.Get("end"), g.now())
	if err != nil {
		writeErr(w, fmt.Errorf("%w: end: %v", ErrBadQuery, err))
		return
	}
	start, err := tsdb.ParseTime(q.Get("start"), end.Add(-time.Hour))
	if err != nil {
		writeErr(w, fmt.Errorf("%w: start: %v", ErrBadQuery, err))
		return
	}
	m, err := g.ServiceMap(r.Context(), start, end)
	if err != nil && m == nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	// In a cluster, the nodes whose share is missing or from the bucket.
	_ = json.NewEncoder(w).Encode(struct {
		*Map
		answered.Nodes
	}{m, answered.Of(r.Context())})
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrBadQuery) {
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": err.Error()})
}

// Prometheus series, named and labelled as Tempo's service-graph processor
// so Grafana's service map works on them.
var (
	sgLabels   = []string{"client", "server", "connection_type"}
	totalDesc  = prometheus.NewDesc("traces_service_graph_request_total", "Requests between two nodes.", sgLabels, nil)
	failedDesc = prometheus.NewDesc("traces_service_graph_request_failed_total", "Failed requests between two nodes.", sgLabels, nil)
	serverDesc = prometheus.NewDesc("traces_service_graph_request_server_seconds", "Request duration seen by the server.", sgLabels, nil)
	clientDesc = prometheus.NewDesc("traces_service_graph_request_client_seconds", "Request duration seen by the client.", sgLabels, nil)

	pendingDesc = prometheus.NewDesc("tracedx_servicegraph_pending_halves", "Call halves waiting in the pairing cache for their other side.", nil, nil)
	evictedDesc = prometheus.NewDesc("tracedx_servicegraph_evicted_total",
		"Call halves resolved before their pairing timeout because the pairing cache was full (raise MaxPending if this grows).", nil, nil)
	immediateDesc = prometheus.NewDesc("tracedx_servicegraph_uninstrumented_calls_total",
		"Calls to peers that have not answered with SERVER spans for a while, recorded without waiting in the pairing cache.", nil, nil)
	droppedDesc = prometheus.NewDesc("tracedx_servicegraph_unpaired_total", "Call halves that expired without a partner and without a named peer.", nil, nil)
)

// Describe implements prometheus.Collector.
func (g *Graph) Describe(ch chan<- *prometheus.Desc) {
	ch <- totalDesc
	ch <- failedDesc
	ch <- serverDesc
	ch <- clientDesc
	ch <- pendingDesc
	ch <- evictedDesc
	ch <- droppedDesc
	ch <- immediateDesc
}

// Collect implements prometheus.Collector (cumulative since start; serve
// with OpenMetrics enabled for exemplars).
func (g *Graph) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	waiting, evicted, dropped, immediate := len(g.pending), g.evicted, g.dropped, g.immediate
	g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(immediateDesc, prometheus.CounterValue, float64(immediate))
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(waiting))
	ch <- prometheus.MustNewConstMetric(evictedDesc, prometheus.CounterValue, float64(evicted))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(dropped))
	g.st.EachExt(func(k tsdb.Key, e *edgeProm) {
		labels := []string{k.A, k.B, ConnName(k.K)}
		total := prometheus.MustNewConstMetric(totalDesc, prometheus.CounterValue, float64(e.total), labels...)
		if ex, ok := latest(&e.exServer, &e.exClient); ok {
			total = withExemplars(total, []prometheus.Exemplar{promExemplar(ex)})
		}
		ch <- total
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(e.failed), labels...)
		if e.serverN > 0 {
			ch <- histogram(serverDesc, e.serverN, e.serverSum, &e.server, &e.exServer, labels)
		}
		if e.clientN > 0 {
			ch <- histogram(clientDesc, e.clientN, e.clientSum, &e.client, &e.exClient, labels)
		}
	})
}

func histogram(d *prometheus.Desc, n, sumUS uint64, b *[tsdb.NumProm]uint64, ex *[tsdb.NumProm]exemplar, labels []string) prometheus.Metric {
	buckets := make(map[float64]uint64, tsdb.NumProm-1)
	var cum uint64
	var exs []prometheus.Exemplar
	for i := 0; i < tsdb.NumProm; i++ {
		cum += b[i]
		if i < tsdb.NumProm-1 {
			buckets[tsdb.PromBoundSeconds(i)] = cum
		}
		if !ex[i].trace.IsZero() {
			exs = append(exs, promExemplar(ex[i]))
		}
	}
	return withExemplars(prometheus.MustNewConstHistogram(d, n, float64(sumUS)/1e6, buckets, labels...), exs)
}

func latest(sets ...*[tsdb.NumProm]exemplar) (exemplar, bool) {
	var best exemplar
	for _, s := range sets {
		for _, e := range s {
			if !e.trace.IsZero() && e.ns >= best.ns {
				best = e
			}
		}
		if !best.trace.IsZero() {
			return best, true
		}
	}
	return best, false
}

func promExemplar(e exemplar) prometheus.Exemplar {
	return prometheus.Exemplar{Value: float64(e.us) / 1e6,
		Labels: prometheus.Labels{"trace_id": e.trace.String()}, Timestamp: time.Unix(0, int64(e.ns))}
}

func withExemplars(m prometheus.Metric, exs []prometheus.Exemplar) prometheus.Metric {
	if len(exs) == 0 {
		return m
	}
	mm, err := prometheus.NewMetricWithExemplars(m, exs...)
	if err != nil {
		return m
	}
	return mm
}

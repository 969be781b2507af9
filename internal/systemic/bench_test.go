package systemic

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// BenchmarkObserve measures the cost of the cross-trace detectors per
// ingested span: shop traffic (2 checkouts per product page), evaluation
// every 10 s of simulated time included.
func BenchmarkObserve(b *testing.B) {
	shop := workload.New(1)
	var traces [][]model.Span
	spans := 0
	for i := 0; i < 3000; i++ {
		var tr []model.Span
		if i%3 == 2 {
			tr = shop.Product(t0)
		} else {
			tr = shop.Checkout(t0)
		}
		traces = append(traces, tr)
		spans += len(tr)
	}
	d := New(Config{}, nil, nil, nil)
	now := t0
	nextEval := t0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, tr := range traces {
			now = now.Add(100 * time.Millisecond)
			if now.After(nextEval) {
				d.Evaluate(now)
				nextEval = now.Add(10 * time.Second)
			}
			d.Observe(now, tr)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

// ingestTraces builds traces shaped like bench/loadgen's: 5–30 spans (17
// on average), a root HTTP SERVER span, every third child an HTTP CLIENT
// call (status 200, target named) answered by a SERVER span of another
// service, the others postgres CLIENT queries; about 10 attributes a span
// and 6 resource attributes.
func ingestTraces(rng *rand.Rand, n int, base time.Time) [][]model.Span {
	type svc struct{ name, version, host string }
	services := []svc{{"frontend", "2.3.1", "web-7f9c"}, {"checkout", "1.14.0", "checkout-5d2a"}, {"orders", "4.0.2", "orders-9b1e"},
		{"inventory", "0.9.7", "inventory-1c4f"}, {"payments", "3.2.0", "payments-8e3d"}}
	resources := make([]model.Attrs, len(services))
	for i, s := range services {
		resources[i] = model.Attrs{{Key: "service.name", Value: model.Str(s.name)}, {Key: "service.version", Value: model.Str(s.version)},
			{Key: "host.name", Value: model.Str(s.host)}, {Key: "deployment.environment.name", Value: model.Str("production")},
			{Key: "telemetry.sdk.language", Value: model.Str("go")}, {Key: "telemetry.sdk.name", Value: model.Str("opentelemetry")}}
	}
	routes := []string{"/api/orders/{id}", "/api/cart", "/api/checkout", "/api/products/{sku}", "/api/users/{id}/orders"}
	tables := []string{"orders", "order_items", "stock", "payments", "products"}
	str, num := model.Str, model.Int
	var out [][]model.Span
	for t := 0; t < n; t++ {
		var tid model.TraceID
		rng.Read(tid[:])
		start := base.Add(time.Duration(t) * time.Millisecond)
		var tr []model.Span
		add := func(parent model.SpanID, si int, name string, kind model.SpanKind, dur time.Duration, attrs model.Attrs) model.SpanID {
			var id model.SpanID
			rng.Read(id[:])
			tr = append(tr, model.Span{TraceID: tid, SpanID: id, ParentSpanID: parent, Name: name, Kind: kind, Service: services[si].name,
				StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(dur).UnixNano()), Resource: resources[si], Attrs: attrs})
			return id
		}
		server := func(method, route string, status int64) model.Attrs {
			return model.Attrs{{Key: "http.request.method", Value: str(method)}, {Key: "http.route", Value: str(route)},
				{Key: "url.path", Value: str(fmt.Sprintf("/api/orders/%d", 10000+rng.Intn(90000)))}, {Key: "url.scheme", Value: str("https")},
				{Key: "http.response.status_code", Value: num(status)}, {Key: "server.address", Value: str("shop.example.com")},
				{Key: "server.port", Value: num(443)}, {Key: "client.address", Value: str("10.1.2.3")},
				{Key: "user_agent.original", Value: str("Mozilla/5.0 (X11; Linux x86_64)")}, {Key: "network.protocol.version", Value: str("1.1")}}
		}
		status := int64(200)
		if rng.Intn(50) == 0 {
			status = 500
		}
		type parent struct {
			id  model.SpanID
			svc int
		}
		parents := []parent{{add(model.SpanID{}, 0, "GET "+routes[rng.Intn(len(routes))], model.KindServer,
			time.Duration(20+rng.Intn(400))*time.Millisecond, server("GET", "/api/orders/{id}", status)), 0}}
		size := 5 + rng.Intn(26)
		for i := 1; i < size; i++ {
			p := parents[rng.Intn(len(parents))]
			dur := time.Duration(1+rng.Intn(50)) * time.Millisecond
			if i%3 == 1 && i+1 < size {
				target := 1 + rng.Intn(len(services)-1)
				call := add(p.id, p.svc, "POST", model.KindClient, dur, model.Attrs{{Key: "http.request.method", Value: str("POST")},
					{Key: "url.full", Value: str(fmt.Sprintf("http://%s:8080/internal/v1/reserve/%d", services[target].name, rng.Intn(1000)))},
					{Key: "server.address", Value: str(services[target].name)}, {Key: "server.port", Value: num(8080)},
					{Key: "http.response.status_code", Value: num(200)}, {Key: "network.peer.address", Value: str("10.1.7.9")},
					{Key: "http.request.body.size", Value: num(int64(100 + rng.Intn(4000)))},
					{Key: "http.response.body.size", Value: num(int64(100 + rng.Intn(20000)))},
					{Key: "network.protocol.version", Value: str("1.1")}, {Key: "peer.service", Value: str(services[target].name)}})
				srv := add(call, target, "POST /internal/v1/reserve/{id}", model.KindServer, dur*8/10, server("POST", "/internal/v1/reserve/{id}", 200))
				parents = append(parents, parent{srv, target})
				i++
				continue
			}
			table := tables[rng.Intn(len(tables))]
			add(p.id, p.svc, "SELECT shop."+table, model.KindClient, dur, model.Attrs{{Key: "db.system", Value: str("postgresql")},
				{Key: "db.namespace", Value: str("shop")}, {Key: "db.operation.name", Value: str("SELECT")},
				{Key: "db.collection.name", Value: str(table)}, {Key: "db.query.text", Value: str("SELECT * FROM " + table + " WHERE id = ?")},
				{Key: "server.address", Value: str("pg-primary.db.svc")}, {Key: "server.port", Value: num(5432)},
				{Key: "network.peer.address", Value: str("10.2.0.15")}, {Key: "db.response.returned_rows", Value: num(int64(rng.Intn(50)))},
				{Key: "db.user", Value: str("shop_app")}})
		}
		out = append(out, tr)
	}
	return out
}

// ingestBatch is one written batch: the spans of 64 traces interleaved.
func ingestBatch() (traces [][]model.Span, batch []model.Span) {
	traces = ingestTraces(rand.New(rand.NewSource(1)), 64, t0)
	return traces, interleave(traces)
}

// BenchmarkObserveSpans measures the ingest path per span: batches of
// 1100 spans of 64 traces, one batch every 10 ms of simulated time (110k
// spans/s), evaluation every 10 s outside the timer.
func BenchmarkObserveSpans(b *testing.B) {
	_, batch := ingestBatch()
	d := New(Config{}, nil, nil, nil)
	evaluating(b, d, 10*time.Millisecond, func(_ int, now time.Time) { d.ObserveSpans(now, batch) })
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/span")
	b.ReportMetric(float64(len(batch)), "spans/op")
}

// BenchmarkObserveSummary measures one completed trace's summary: 6400
// traces a second of simulated time.
func BenchmarkObserveSummary(b *testing.B) {
	traces, _ := ingestBatch()
	sums := make([]TraceSummary, len(traces))
	for i, tr := range traces {
		sums[i] = SummaryOf(tr)
	}
	d := New(Config{}, nil, nil, nil)
	evaluating(b, d, 150*time.Microsecond, func(i int, now time.Time) { d.ObserveSummary(now, sums[i%len(sums)]) })
}

// BenchmarkSpanFlags measures the classifier over an ingested batch.
func BenchmarkSpanFlags(b *testing.B) {
	_, batch := ingestBatch()
	var flags uint32
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch {
			flags |= SpanFlags(&batch[j])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/span")
	if NeedsTrace(flags) {
		b.Fatalf("healthy batch flagged %03b", flags)
	}
}

// BenchmarkSummaryOf measures summarising a decoded trace (what Observe
// adds to the three paths).
func BenchmarkSummaryOf(b *testing.B) {
	traces, batch := ingestBatch()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, tr := range traces {
			_ = SummaryOf(tr)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(traces)), "ns/trace")
	b.ReportMetric(float64(len(batch))/float64(len(traces)), "spans/trace")
}

// evaluating runs observe b.N times, step apart in simulated time, with
// the detector's evaluation every 10 s outside the timer.
func evaluating(b *testing.B, d *Detector, step time.Duration, observe func(i int, now time.Time)) {
	now, nextEval := t0, t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now = now.Add(step)
		if !now.Before(nextEval) {
			b.StopTimer()
			d.Evaluate(now)
			nextEval = now.Add(10 * time.Second)
			b.StartTimer()
		}
		observe(i, now)
	}
}

// BenchmarkClusterShare measures what a node of a cluster pays per
// evaluation for the merged patterns with 500 entry operations and 100
// flows in healthy traffic: serving its share to a peer (built and
// encoded as JSON: bytes/share) and judging its own share with two
// peers' (decoded from JSON) in EvaluateCluster, against Evaluate.
func BenchmarkClusterShare(b *testing.B) {
	shop := workload.New(2)
	d := New(Config{}, nil, nil, nil)
	now := t0
	for i := 0; i < 20000; i++ {
		tr := shop.Checkout(now)
		for j := range tr {
			if tr[j].ParentSpanID.IsZero() {
				tr[j].Name = fmt.Sprintf("POST /checkout/%d", i%100)
			} else if tr[j].Kind == model.KindServer {
				tr[j].Name = fmt.Sprintf("%s/%d", tr[j].Name, i%100)
			}
		}
		now = now.Add(100 * time.Millisecond)
		d.Observe(now, tr)
		if i%100 == 0 {
			d.Evaluate(now)
		}
	}
	body, err := json.Marshal(d.Share(now))
	if err != nil {
		b.Fatal(err)
	}
	var peer Share
	if err := json.Unmarshal(body, &peer); err != nil {
		b.Fatal(err)
	}
	owns := func(key string) bool { return len(key)%3 == 0 }
	b.Run("serve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(d.Share(now)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(body)), "bytes/share")
		b.ReportMetric(float64(len(peer.Errors)), "operations")
	})
	// The same node judging its own share only (as outside a cluster),
	// for comparison.
	b.Run("evaluate-alone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(10 * time.Second)
			d.Evaluate(now)
		}
	})
	b.Run("evaluate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(10 * time.Second)
			d.EvaluateCluster(now, owns, []Share{peer, peer})
		}
	})
}

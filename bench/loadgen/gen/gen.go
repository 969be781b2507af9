// Package gen builds realistic OTLP trace requests for load generation and
// benchmarks: 5–30 spans per trace, about 10 attributes per span, HTTP and
// database semantic conventions, several services per trace.
//
// Requests are encoded once; Template.Fill then writes fresh random 128-bit
// trace ids at the recorded byte offsets, so replaying costs a memcpy and a
// few random numbers instead of a protobuf encode.
package gen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

var services = []struct{ name, version, host string }{
	{"frontend", "2.3.1", "web-7f9c"},
	{"checkout", "1.14.0", "checkout-5d2a"},
	{"orders", "4.0.2", "orders-9b1e"},
	{"inventory", "0.9.7", "inventory-1c4f"},
	{"payments", "3.2.0", "payments-8e3d"},
}

var routes = []string{"/api/orders/{id}", "/api/cart", "/api/checkout", "/api/products/{sku}", "/api/users/{id}/orders"}

var queries = []struct{ op, table, text string }{
	{"SELECT", "orders", "SELECT id, status, total FROM orders WHERE customer_id = ? ORDER BY created_at DESC LIMIT 20"},
	{"SELECT", "order_items", "SELECT sku, qty, price FROM order_items WHERE order_id = ?"},
	{"UPDATE", "stock", "UPDATE stock SET reserved = reserved + ? WHERE sku = ?"},
	{"INSERT", "payments", "INSERT INTO payments (order_id, amount, currency) VALUES (?, ?, ?)"},
	{"SELECT", "products", "SELECT sku, name, price FROM products WHERE sku IN (?, ?, ?)"},
}

// Traces builds nTraces traces with ids drawn from rng. Timestamps start at
// base.
func Traces(rng *rand.Rand, nTraces int, base time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	// One ResourceSpans per service per request, as SDK batches look.
	bySvc := map[int]ptrace.SpanSlice{}
	spansOf := func(svc int) ptrace.SpanSlice {
		if ss, ok := bySvc[svc]; ok {
			return ss
		}
		rs := td.ResourceSpans().AppendEmpty()
		s := services[svc]
		a := rs.Resource().Attributes()
		a.PutStr("service.name", s.name)
		a.PutStr("service.version", s.version)
		a.PutStr("host.name", s.host)
		a.PutStr("deployment.environment.name", "production")
		a.PutStr("telemetry.sdk.language", "go")
		a.PutStr("telemetry.sdk.name", "opentelemetry")
		sc := rs.ScopeSpans().AppendEmpty()
		sc.Scope().SetName("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp")
		sc.Scope().SetVersion("0.60.0")
		bySvc[svc] = sc.Spans()
		return sc.Spans()
	}
	for t := 0; t < nTraces; t++ {
		var tid pcommon.TraceID
		fillRandom(rng, tid[:])
		n := 5 + rng.IntN(26)
		start := base.Add(time.Duration(t) * time.Millisecond)
		rootDur := time.Duration(20+rng.IntN(400)) * time.Millisecond
		root := spansOf(0).AppendEmpty()
		rootID := newSpanID(rng)
		route := routes[rng.IntN(len(routes))]
		status := int64(200)
		if rng.IntN(50) == 0 {
			status = 500
		}
		httpServer(root, tid, rootID, pcommon.SpanID{}, "GET", route, status, start, start.Add(rootDur), rng)
		// Children nest inside their parents and every HTTP call is answered
		// by a SERVER span of the called service, as instrumented services
		// produce: the per-trace detectors then find what real traffic
		// shows (an occasional N+1 or gap), not a finding per span.
		type server struct {
			id         pcommon.SpanID
			svc        int
			start, end time.Time
		}
		servers := []server{{rootID, 0, start, start.Add(rootDur)}}
		for i := 1; i < n; i++ {
			p := servers[rng.IntN(len(servers))]
			pdur := p.end.Sub(p.start)
			off := time.Duration(rng.Int64N(int64(pdur)*3/5 + 1))
			dur := time.Duration(rng.Int64N(int64(pdur-off)/2+1)) + 200*time.Microsecond
			cs, ce := p.start.Add(off), p.start.Add(off+dur)
			if ce.After(p.end) {
				ce = p.end
			}
			id := newSpanID(rng)
			if i%3 == 1 && i+1 < n {
				target := 1 + rng.IntN(len(services)-1)
				httpClient(spansOf(p.svc).AppendEmpty(), tid, id, p.id, services[target].name, cs, ce, rng)
				// The callee's SERVER span sits inside the client span, less
				// the network time.
				net := ce.Sub(cs) / 10
				srvID := newSpanID(rng)
				srvRoute := "/internal/v1/reserve/{id}"
				httpServer(spansOf(target).AppendEmpty(), tid, srvID, id, "POST", srvRoute, 200, cs.Add(net), ce.Add(-net), rng)
				servers = append(servers, server{srvID, target, cs.Add(net), ce.Add(-net)})
				i++
				continue
			}
			dbClient(spansOf(p.svc).AppendEmpty(), tid, id, p.id, cs, ce, rng)
		}
	}
	return td
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func newSpanID(rng *rand.Rand) pcommon.SpanID {
	var id pcommon.SpanID
	for id.IsEmpty() {
		fillRandom(rng, id[:])
	}
	return id
}

func common(sp ptrace.Span, tid pcommon.TraceID, id, parent pcommon.SpanID, name string, kind ptrace.SpanKind, start, end time.Time) {
	sp.SetTraceID(tid)
	sp.SetSpanID(id)
	sp.SetParentSpanID(parent)
	sp.SetName(name)
	sp.SetKind(kind)
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(end))
}

func httpServer(sp ptrace.Span, tid pcommon.TraceID, id, parent pcommon.SpanID, method, route string, status int64, start, end time.Time, rng *rand.Rand) {
	common(sp, tid, id, parent, method+" "+route, ptrace.SpanKindServer, start, end)
	a := sp.Attributes()
	a.PutStr("http.request.method", method)
	a.PutStr("http.route", route)
	a.PutStr("url.path", fmt.Sprintf("/api/orders/%d", 10000+rng.IntN(90000)))
	a.PutStr("url.scheme", "https")
	a.PutInt("http.response.status_code", status)
	a.PutStr("server.address", "shop.example.com")
	a.PutInt("server.port", 443)
	a.PutStr("client.address", fmt.Sprintf("10.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256)))
	a.PutStr("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")
	a.PutStr("network.protocol.version", "1.1")
	if status >= 500 {
		sp.Status().SetCode(ptrace.StatusCodeError)
	}
}

func httpClient(sp ptrace.Span, tid pcommon.TraceID, id, parent pcommon.SpanID, target string, start, end time.Time, rng *rand.Rand) {
	common(sp, tid, id, parent, "POST", ptrace.SpanKindClient, start, end)
	a := sp.Attributes()
	a.PutStr("http.request.method", "POST")
	a.PutStr("url.full", fmt.Sprintf("http://%s:8080/internal/v1/reserve/%d", target, rng.IntN(1000)))
	a.PutStr("server.address", target)
	a.PutInt("server.port", 8080)
	a.PutInt("http.response.status_code", 200)
	a.PutStr("network.peer.address", fmt.Sprintf("10.1.%d.%d", rng.IntN(256), rng.IntN(256)))
	a.PutInt("http.request.body.size", int64(100+rng.IntN(4000)))
	a.PutInt("http.response.body.size", int64(100+rng.IntN(20000)))
	a.PutStr("network.protocol.version", "1.1")
	a.PutStr("peer.service", target)
}

func dbClient(sp ptrace.Span, tid pcommon.TraceID, id, parent pcommon.SpanID, start, end time.Time, rng *rand.Rand) {
	q := queries[rng.IntN(len(queries))]
	common(sp, tid, id, parent, q.op+" shop."+q.table, ptrace.SpanKindClient, start, end)
	a := sp.Attributes()
	a.PutStr("db.system", "postgresql")
	a.PutStr("db.namespace", "shop")
	a.PutStr("db.operation.name", q.op)
	a.PutStr("db.collection.name", q.table)
	a.PutStr("db.query.text", q.text)
	a.PutStr("server.address", "pg-primary.db.svc")
	a.PutInt("server.port", 5432)
	a.PutStr("network.peer.address", "10.2.0.15")
	a.PutInt("db.response.returned_rows", int64(rng.IntN(50)))
	a.PutStr("db.user", "shop_app")
}

// Template is an encoded ExportTraceServiceRequest with the byte offsets of
// each trace's id occurrences.
type Template struct {
	Body  []byte
	Spans int
	// Offsets[i] lists where trace i's id is written in Body.
	Offsets [][]int
}

// NewTemplate encodes td and records trace-id offsets.
func NewTemplate(td ptrace.Traces) (*Template, error) {
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return nil, err
	}
	ids := map[pcommon.TraceID]bool{}
	var order []pcommon.TraceID
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			sp := sss.At(j).Spans()
			for k := 0; k < sp.Len(); k++ {
				if id := sp.At(k).TraceID(); !ids[id] {
					ids[id] = true
					order = append(order, id)
				}
			}
		}
	}
	t := &Template{Body: body, Spans: td.SpanCount()}
	for _, id := range order {
		var offs []int
		for from := 0; ; {
			k := bytes.Index(body[from:], id[:])
			if k < 0 {
				break
			}
			offs = append(offs, from+k)
			from += k + len(id)
		}
		if len(offs) == 0 {
			return nil, fmt.Errorf("trace id %x not found in encoded request", id)
		}
		t.Offsets = append(t.Offsets, offs)
	}
	return t, nil
}

// Fill copies the template into dst (reused when large enough) with fresh
// random trace ids and returns it.
func (t *Template) Fill(dst []byte, rng *rand.Rand) []byte {
	dst = append(dst[:0], t.Body...)
	var id [16]byte
	for _, offs := range t.Offsets {
		fillRandom(rng, id[:])
		for _, o := range offs {
			copy(dst[o:o+16], id[:])
		}
	}
	return dst
}

// Templates builds n templates of tracesPerRequest traces each.
func Templates(seed uint64, n, tracesPerRequest int) ([]*Template, error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := time.Now()
	out := make([]*Template, n)
	for i := range out {
		t, err := NewTemplate(Traces(rng, tracesPerRequest, base))
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

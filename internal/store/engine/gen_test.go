package engine

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/tracedx/tracedx/internal/model"
)

// spanGen produces realistic traces: 5–30 spans, an HTTP server root, HTTP
// client/server hops between services, database and cache calls, about 10
// attributes per span with old and current semantic-convention names, and
// random 128-bit trace ids.
type spanGen struct {
	r *rand.Rand
}

func newGen(seed uint64) *spanGen { return &spanGen{r: rand.New(rand.NewPCG(seed, seed*7+1))} }

var (
	genServices = []string{"frontend", "checkout", "cart", "inventory", "payment", "users", "search", "shipping"}
	genRoutes   = []string{"/api/orders/{id}", "/api/cart", "/api/products/{id}", "/api/users/{id}", "/api/search", "/api/checkout", "/api/shipping/quote", "/health"}
	genMethods  = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	genStmts    = []string{
		"SELECT * FROM orders WHERE id = $1",
		"SELECT id, name, price FROM products WHERE id = ANY($1)",
		"UPDATE stock SET qty = qty - $1 WHERE product_id = $2",
		"INSERT INTO order_items (order_id, product_id, qty) VALUES ($1, $2, $3)",
		"SELECT * FROM users WHERE email = $1",
		"SELECT count(*) FROM carts WHERE user_id = $1",
		"DELETE FROM sessions WHERE expires_at < now()",
		"SELECT * FROM shipping_rates WHERE zone = $1 AND weight <= $2",
	}
	genRedis = []string{"GET", "SET", "MGET", "EXPIRE"}
)

func (g *spanGen) id16() (t model.TraceID) {
	binary.LittleEndian.PutUint64(t[:8], g.r.Uint64())
	binary.LittleEndian.PutUint64(t[8:], g.r.Uint64())
	return
}

func (g *spanGen) id8() (s model.SpanID) {
	binary.LittleEndian.PutUint64(s[:], g.r.Uint64()|1)
	return
}

func resourceFor(svc string, host int) model.Attrs {
	return model.Attrs{
		{Key: "service.name", Value: model.Str(svc)},
		{Key: "service.version", Value: model.Str("1.4.2")},
		{Key: "service.namespace", Value: model.Str("shop")},
		{Key: "host.name", Value: model.Str(fmt.Sprintf("%s-%d.prod.internal", svc, host))},
		{Key: "deployment.environment", Value: model.Str("production")},
		{Key: "telemetry.sdk.language", Value: model.Str("go")},
		{Key: "telemetry.sdk.name", Value: model.Str("opentelemetry")},
		{Key: "telemetry.sdk.version", Value: model.Str("1.47.0")},
	}
}

// trace returns one trace starting at start (unix ns).
func (g *spanGen) trace(start uint64) []model.Span {
	tid := g.id16()
	n := 5 + g.r.IntN(26)
	spans := make([]model.Span, 0, n)
	host := g.r.IntN(4)
	mk := func(parent *model.Span, svc, name string, kind model.SpanKind, st, dur uint64) *model.Span {
		s := model.Span{
			TraceID: tid, SpanID: g.id8(), Name: name, Kind: kind,
			StartUnixNano: st, EndUnixNano: st + dur, Service: svc, Flags: 1,
			Resource: resourceFor(svc, host), ScopeName: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", ScopeVersion: "0.62.0",
		}
		if parent != nil {
			s.ParentSpanID = parent.SpanID
		}
		spans = append(spans, s)
		return &spans[len(spans)-1]
	}
	route := genRoutes[g.r.IntN(len(genRoutes))]
	method := genMethods[g.r.IntN(len(genMethods))]
	total := uint64(5e6 + g.r.IntN(200e6))
	root := mk(nil, "frontend", method+" "+route, model.KindServer, start, total)
	status := int64(200)
	if g.r.IntN(50) == 0 {
		status = 500
		root.StatusCode = model.StatusError
		root.StatusMessage = "internal error"
	}
	root.Attrs = model.Attrs{
		{Key: "http.request.method", Value: model.Str(method)},
		{Key: "http.route", Value: model.Str(route)},
		{Key: "http.response.status_code", Value: model.Int(status)},
		{Key: "url.path", Value: model.Str(route)},
		{Key: "url.scheme", Value: model.Str("https")},
		{Key: "server.address", Value: model.Str("shop.example.com")},
		{Key: "server.port", Value: model.Int(443)},
		{Key: "network.protocol.version", Value: model.Str("1.1")},
		{Key: "user_agent.original", Value: model.Str("Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0")},
		{Key: "client.address", Value: model.Str(fmt.Sprintf("10.0.%d.%d", g.r.IntN(4), g.r.IntN(256)))},
	}
	rootIdx := 0
	for len(spans) < n {
		parent := &spans[rootIdx]
		if len(spans) > 1 && g.r.IntN(3) == 0 {
			parent = &spans[g.r.IntN(len(spans))]
		}
		pst, pdur := parent.StartUnixNano, parent.EndUnixNano-parent.StartUnixNano
		st := pst + uint64(g.r.IntN(int(pdur/2)+1))
		dur := uint64(g.r.IntN(int(pdur/2) + 1000))
		switch k := g.r.IntN(10); {
		case k < 5:
			stmt := genStmts[g.r.IntN(len(genStmts))]
			op := stmt[:6]
			c := mk(parent, parent.Service, op+" shop", model.KindClient, st, dur)
			c.ScopeName = "github.com/XSAM/otelsql"
			c.Attrs = model.Attrs{
				{Key: "db.system", Value: model.Str("postgresql")},
				{Key: "db.statement", Value: model.Str(stmt)},
				{Key: "db.name", Value: model.Str("shop")},
				{Key: "db.operation", Value: model.Str(op)},
				{Key: "db.user", Value: model.Str("app")},
				{Key: "server.address", Value: model.Str("pg-primary.prod.internal")},
				{Key: "server.port", Value: model.Int(5432)},
				{Key: "network.peer.address", Value: model.Str("10.1.0.15")},
				{Key: "db.sql.table", Value: model.Str("orders")},
				{Key: "thread.id", Value: model.Int(int64(g.r.IntN(64)))},
			}
		case k < 7:
			cmd := genRedis[g.r.IntN(len(genRedis))]
			c := mk(parent, parent.Service, cmd, model.KindClient, st, dur/4)
			c.ScopeName = "github.com/redis/go-redis/extra/redisotel"
			c.Attrs = model.Attrs{
				{Key: "db.system", Value: model.Str("redis")},
				{Key: "db.statement", Value: model.Str(cmd + " cart:?")},
				{Key: "db.operation", Value: model.Str(cmd)},
				{Key: "server.address", Value: model.Str("redis.prod.internal")},
				{Key: "server.port", Value: model.Int(6379)},
				{Key: "db.redis.database_index", Value: model.Int(0)},
				{Key: "network.transport", Value: model.Str("tcp")},
				{Key: "cache.hit", Value: model.Bool(g.r.IntN(4) != 0)},
				{Key: "pool.name", Value: model.Str("main")},
				{Key: "thread.id", Value: model.Int(int64(g.r.IntN(64)))},
			}
		default:
			svc := genServices[1+g.r.IntN(len(genServices)-1)]
			r := genRoutes[g.r.IntN(len(genRoutes))]
			c := mk(parent, parent.Service, "GET "+r, model.KindClient, st, dur)
			attrs := model.Attrs{
				{Key: "http.request.method", Value: model.Str("GET")},
				{Key: "http.response.status_code", Value: model.Int(200)},
				{Key: "url.full", Value: model.Str("http://" + svc + ":8080" + r)},
				{Key: "server.address", Value: model.Str(svc)},
				{Key: "server.port", Value: model.Int(8080)},
				{Key: "peer.service", Value: model.Str(svc)},
				{Key: "network.protocol.version", Value: model.Str("1.1")},
				{Key: "http.request.resend_count", Value: model.Int(0)},
				{Key: "user_agent.original", Value: model.Str("Go-http-client/1.1")},
				{Key: "thread.id", Value: model.Int(int64(g.r.IntN(64)))},
			}
			c.Attrs = attrs
			if len(spans) < n {
				s := mk(c, svc, "GET "+r, model.KindServer, st+uint64(g.r.IntN(200000)), dur*9/10)
				s.Attrs = model.Attrs{
					{Key: "http.request.method", Value: model.Str("GET")},
					{Key: "http.route", Value: model.Str(r)},
					{Key: "http.response.status_code", Value: model.Int(200)},
					{Key: "url.path", Value: model.Str(r)},
					{Key: "url.scheme", Value: model.Str("http")},
					{Key: "server.address", Value: model.Str(svc)},
					{Key: "server.port", Value: model.Int(8080)},
					{Key: "network.protocol.version", Value: model.Str("1.1")},
					{Key: "client.address", Value: model.Str("10.0.2.7")},
					{Key: "thread.id", Value: model.Int(int64(g.r.IntN(64)))},
				}
				if g.r.IntN(40) == 0 {
					s.StatusCode = model.StatusError
					s.Events = []model.Event{{TimeUnixNano: s.EndUnixNano - 1000, Name: "exception", Attrs: model.Attrs{
						{Key: "exception.type", Value: model.Str("*errors.errorString")},
						{Key: "exception.message", Value: model.Str("connection reset by peer")},
					}}}
				}
			}
		}
	}
	return spans
}

// batch returns at least n spans made of whole traces starting at base,
// spaced apart by step ns.
func (g *spanGen) batch(n int, base, step uint64) []model.Span {
	var out []model.Span
	for i := 0; len(out) < n; i++ {
		out = append(out, g.trace(base+uint64(i)*step)...)
	}
	return out
}

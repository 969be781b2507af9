// Package workload generates realistic traces of a small shop for the
// tests and benchmarks of the cross-trace analytics: healthy traffic with
// noise, and knobs that inject each systemic problem (an N+1 shipped in a
// new version, a slow attribute value, an error spike, a new exception
// type, a service that disappears, a cache stampede, an expiring token).
package workload

import (
	"fmt"
	"math/rand"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Shop generates traces. Zero knobs give healthy traffic.
type Shop struct {
	rng *rand.Rand
	seq uint64

	// CheckoutVersion is checkout's service.version (default "1.4.0").
	CheckoutVersion string
	// ItemQueries is the number of per-item SELECTs checkout makes
	// (default 1: one query fetching all items).
	ItemQueries int
	// SlowBigCarts makes stock lookups slow (x SlowFactor) when the cart
	// has more than 50 variants; BigCartShare is the share of such carts.
	SlowBigCarts bool
	BigCartShare float64
	SlowFactor   float64
	// ErrorRate is the share of checkouts failing in payments.
	ErrorRate float64
	// ErrorType is the exception type of those failures (default
	// "PaymentDeclinedException").
	ErrorType string
	// BaseErrorRate is the healthy background failure share (default 0.01).
	BaseErrorRate float64
	// NoRecommendations drops the recommendations call.
	NoRecommendations bool
	// AuthFailRate is the share of checkouts whose auth call gets a 401.
	AuthFailRate float64
	// UntargetedAuth leaves the target attribute (peer.service) off the
	// auth call: only auth's SERVER span names the callee.
	UntargetedAuth bool
	// CacheMissAll makes every product lookup miss the cache key of
	// StampedeKey (default "product:42") and fall back to a slow query.
	CacheMissAll bool
	StampedeKey  string
	// PoolConnect: the database client reports taking a pooled
	// connection as a span of its own before each query, as
	// node-postgres's instrumentation does (pg-pool.connect).
	PoolConnect bool
}

// New returns a generator with a fixed seed.
func New(seed int64) *Shop {
	return &Shop{rng: rand.New(rand.NewSource(seed)), BaseErrorRate: 0.01}
}

type builder struct {
	s     *Shop
	tid   model.TraceID
	spans []model.Span
}

func (s *Shop) newTrace() *builder {
	s.seq++
	var id model.TraceID
	s.rng.Read(id[:8])
	id[8], id[9], id[10], id[11] = byte(s.seq>>24), byte(s.seq>>16), byte(s.seq>>8), byte(s.seq)
	id[15] = 1
	return &builder{s: s, tid: id}
}

var hosts = []string{"node-a", "node-b", "node-c"}

func (b *builder) span(parent int, svc, version, name string, kind model.SpanKind, start time.Time, dur time.Duration, attrs ...model.Attr) int {
	var sid model.SpanID
	b.s.rng.Read(sid[:])
	sp := model.Span{TraceID: b.tid, SpanID: sid, Name: name, Kind: kind, Service: svc,
		StartUnixNano: uint64(start.UnixNano()), EndUnixNano: uint64(start.Add(dur).UnixNano()),
		Resource: model.Attrs{{Key: "service.name", Value: model.Str(svc)}, {Key: "service.version", Value: model.Str(version)},
			{Key: "host.name", Value: model.Str(hosts[b.s.rng.Intn(len(hosts))])}},
		Attrs: attrs}
	if parent >= 0 {
		sp.ParentSpanID = b.spans[parent].SpanID
	}
	b.spans = append(b.spans, sp)
	return len(b.spans) - 1
}

func (b *builder) fail(i int, typ, msg string) {
	s := &b.spans[i]
	s.StatusCode = model.StatusError
	s.StatusMessage = msg
	s.Events = append(s.Events, model.Event{TimeUnixNano: s.EndUnixNano, Name: "exception",
		Attrs: model.Attrs{{Key: "exception.type", Value: model.Str(typ)}, {Key: "exception.message", Value: model.Str(msg)}}})
}

func (s *Shop) ms(lo, hi float64) time.Duration {
	return time.Duration((lo + s.rng.Float64()*(hi-lo)) * float64(time.Millisecond))
}

// Checkout is one POST /checkout through frontend, checkout, auth,
// inventory, payments and recommendations.
func (s *Shop) Checkout(start time.Time) []model.Span {
	b := s.newTrace()
	ver := s.CheckoutVersion
	if ver == "" {
		ver = "1.4.0"
	}
	variants := int64(1 + s.rng.Intn(30))
	big := s.BigCartShare > 0 && s.rng.Float64() < s.BigCartShare
	if big {
		variants = int64(51 + s.rng.Intn(100))
	}
	root := b.span(-1, "frontend", "2.0.1", "POST /checkout", model.KindServer, start, 0,
		model.Attr{Key: "http.request.method", Value: model.Str("POST")}, model.Attr{Key: "http.route", Value: model.Str("/checkout")},
		model.Attr{Key: "http.response.status_code", Value: model.Int(200)})
	t := start.Add(s.ms(0.5, 1))
	call := b.span(root, "frontend", "2.0.1", "POST", model.KindClient, t, 0,
		model.Attr{Key: "http.request.method", Value: model.Str("POST")}, model.Attr{Key: "server.address", Value: model.Str("checkout")})
	t = t.Add(s.ms(0.2, 0.5))
	co := b.span(call, "checkout", ver, "POST /api/checkout", model.KindServer, t, 0,
		model.Attr{Key: "http.request.method", Value: model.Str("POST")}, model.Attr{Key: "http.route", Value: model.Str("/api/checkout")},
		model.Attr{Key: "product.variant_count", Value: model.Int(variants)},
		model.Attr{Key: "user.id", Value: model.Str(fmt.Sprintf("u-%d", s.rng.Intn(1_000_000)))})
	c := t.Add(s.ms(0.3, 1))
	// auth
	d := s.ms(2, 5)
	authAttrs := []model.Attr{{Key: "http.request.method", Value: model.Str("GET")}, {Key: "peer.service", Value: model.Str("auth")},
		{Key: "url.full", Value: model.Str("http://auth/verify")}}
	if s.UntargetedAuth {
		authAttrs = append(authAttrs[:1], authAttrs[2])
	}
	ac := b.span(co, "checkout", ver, "GET", model.KindClient, c, d, authAttrs...)
	as := b.span(ac, "auth", "3.1.0", "GET /verify", model.KindServer, c.Add(200*time.Microsecond), d-400*time.Microsecond,
		model.Attr{Key: "http.route", Value: model.Str("/verify")})
	authFailed := s.AuthFailRate > 0 && s.rng.Float64() < s.AuthFailRate
	code := int64(200)
	if authFailed {
		code = 401
	}
	b.spans[ac].Attrs = append(b.spans[ac].Attrs, model.Attr{Key: "http.response.status_code", Value: model.Int(code)})
	b.spans[as].Attrs = append(b.spans[as].Attrs, model.Attr{Key: "http.response.status_code", Value: model.Int(code)})
	c = c.Add(d + s.ms(0.1, 0.3))
	// items: one query, or one per item (N+1)
	nq := s.ItemQueries
	if nq <= 0 {
		nq = 1
	}
	for i := 0; i < nq; i++ {
		d := s.ms(1, 3)
		stmt := "SELECT id, name, price FROM items WHERE cart_id = 7781"
		if nq > 1 {
			stmt = fmt.Sprintf("SELECT id, name, price FROM items WHERE id = %d", 100+i)
		}
		b.span(co, "checkout", ver, "SELECT shop.items", model.KindClient, c, d,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")}, model.Attr{Key: "db.statement", Value: model.Str(stmt)})
		c = c.Add(d + s.ms(0.05, 0.2))
	}
	// inventory
	sd := s.ms(5, 15)
	if s.SlowBigCarts && variants > 50 {
		f := s.SlowFactor
		if f <= 0 {
			f = 8
		}
		sd = time.Duration(float64(sd) * f)
	}
	ic := b.span(co, "checkout", ver, "GET", model.KindClient, c, sd+time.Millisecond,
		model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "peer.service", Value: model.Str("inventory")})
	is := b.span(ic, "inventory", "5.2.0", "GET /stock", model.KindServer, c.Add(300*time.Microsecond), sd+400*time.Microsecond,
		model.Attr{Key: "http.route", Value: model.Str("/stock")})
	b.span(is, "inventory", "5.2.0", "SELECT shop.stock", model.KindClient, c.Add(500*time.Microsecond), sd,
		model.Attr{Key: "db.system", Value: model.Str("postgresql")},
		model.Attr{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT qty FROM stock WHERE sku IN (%d, %d)", s.rng.Intn(999), s.rng.Intn(999)))})
	c = c.Add(sd + time.Millisecond + s.ms(0.1, 0.3))
	// payments
	pd := s.ms(20, 40)
	pc := b.span(co, "checkout", ver, "POST", model.KindClient, c, pd,
		model.Attr{Key: "http.request.method", Value: model.Str("POST")}, model.Attr{Key: "peer.service", Value: model.Str("payments")})
	ps := b.span(pc, "payments", "0.9.3", "POST /charge", model.KindServer, c.Add(300*time.Microsecond), pd-600*time.Microsecond,
		model.Attr{Key: "http.route", Value: model.Str("/charge")})
	failed := false
	if s.ErrorRate > 0 && s.rng.Float64() < s.ErrorRate {
		typ := s.ErrorType
		if typ == "" {
			typ = "PaymentDeclinedException"
		}
		b.fail(ps, typ, "charge failed")
		b.fail(pc, typ, "charge failed")
		failed = true
	} else if s.BaseErrorRate > 0 && s.rng.Float64() < s.BaseErrorRate {
		b.fail(ps, "java.net.SocketTimeoutException", "read timed out")
		b.fail(pc, "java.net.SocketTimeoutException", "read timed out")
		failed = true
	}
	c = c.Add(pd + s.ms(0.1, 0.3))
	if !s.NoRecommendations {
		rd := s.ms(3, 8)
		rc := b.span(co, "checkout", ver, "GET", model.KindClient, c, rd,
			model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "peer.service", Value: model.Str("recommendations")})
		b.span(rc, "recommendations", "1.0.0", "GET /recommend", model.KindServer, c.Add(200*time.Microsecond), rd-400*time.Microsecond)
		c = c.Add(rd)
	}
	end := c.Add(s.ms(0.3, 1))
	if failed || authFailed {
		b.fail(co, "CheckoutFailedException", "checkout failed")
		b.spans[co].Attrs = append(b.spans[co].Attrs, model.Attr{Key: "http.response.status_code", Value: model.Int(500)})
	}
	b.spans[co].EndUnixNano = uint64(end.UnixNano())
	b.spans[call].EndUnixNano = uint64(end.Add(300 * time.Microsecond).UnixNano())
	b.spans[root].EndUnixNano = uint64(end.Add(s.ms(0.5, 1)).UnixNano())
	if failed || authFailed {
		b.spans[call].StatusCode = model.StatusError
		b.spans[root].StatusCode = model.StatusError
		b.spans[root].Attrs[2].Value = model.Int(500)
	}
	return b.spans
}

// Product is one GET /product/{id}: a cache lookup, and on a miss the
// database query and the cache write.
func (s *Shop) Product(start time.Time) []model.Span {
	b := s.newTrace()
	root := b.span(-1, "frontend", "2.0.1", "GET /product/{id}", model.KindServer, start, 0,
		model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "http.route", Value: model.Str("/product/{id}")})
	t := start.Add(s.ms(0.3, 0.8))
	cs := b.span(root, "catalog", "1.2.0", "GetProduct", model.KindServer, t, 0)
	key := fmt.Sprintf("product:%d", s.rng.Intn(5000))
	miss := s.rng.Float64() < 0.05
	if s.CacheMissAll {
		key = s.StampedeKey
		if key == "" {
			key = "product:42"
		}
		miss = true
	}
	c := t.Add(s.ms(0.1, 0.3))
	d := s.ms(0.3, 1)
	g := b.span(cs, "catalog", "1.2.0", "GET", model.KindClient, c, d,
		model.Attr{Key: "db.system", Value: model.Str("redis")}, model.Attr{Key: "db.statement", Value: model.Str("GET " + key)},
		model.Attr{Key: "cache.hit", Value: model.Bool(!miss)})
	_ = g
	c = c.Add(d)
	if miss {
		qd := s.ms(8, 15)
		if s.CacheMissAll {
			qd = s.ms(60, 120) // the database suffers under the stampede
		}
		if s.PoolConnect {
			b.span(cs, "catalog", "1.2.0", "pg-pool.connect", model.KindClient, c, 200*time.Microsecond,
				model.Attr{Key: "db.system", Value: model.Str("postgresql")})
		}
		b.span(cs, "catalog", "1.2.0", "SELECT shop.products", model.KindClient, c, qd,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")},
			model.Attr{Key: "db.statement", Value: model.Str("SELECT * FROM products WHERE id = 42")})
		c = c.Add(qd)
		sd := s.ms(0.3, 1)
		b.span(cs, "catalog", "1.2.0", "SET", model.KindClient, c, sd,
			model.Attr{Key: "db.system", Value: model.Str("redis")}, model.Attr{Key: "db.statement", Value: model.Str("SET " + key + " ?")})
		c = c.Add(sd)
	}
	end := c.Add(s.ms(0.2, 0.5))
	b.spans[cs].EndUnixNano = uint64(end.UnixNano())
	b.spans[root].EndUnixNano = uint64(end.Add(s.ms(0.2, 0.5)).UnixNano())
	return b.spans
}

// End returns the latest end of a trace's spans.
func End(spans []model.Span) time.Time {
	var e uint64
	for i := range spans {
		e = max(e, spans[i].EndUnixNano)
	}
	return time.Unix(0, int64(e))
}

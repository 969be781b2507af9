package main

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// call adds an HTTP client span with its server span in the callee.
func (g *gen) call(parent int, from, to, method, path, route string, status int, startMS, durMS float64) (client, server int) {
	client = g.client(parent, from, to, method, "http://"+to+":8080"+path, status, startMS, durMS)
	p := path
	if k := indexByte(p, '?'); k >= 0 {
		p = p[:k]
	}
	server = g.server(client, to, method, route, p, status, startMS+0.6, durMS-1.2)
	return client, server
}

// quoteBurst is quote-api GET /api/quote sending n calls to
// pricing-service at once, 50 µs apart: dur gives call i's duration,
// work adds what its server span does.
func quoteBurst(seed uint64, n int, dur func(g *gen, i int, st float64) float64, work func(g *gen, server int, sku string, st, dur float64)) *gen {
	g := newGen(seed, false)
	root := g.server(-1, "quote-api", "GET", "/api/quote", "/api/quote", 200, 0, 0)
	end := 0.0
	for i := 0; i < n; i++ {
		st := 0.4 + float64(i)*0.05
		sku := fmt.Sprintf("SKU-%d", 10400+i*7)
		d := dur(g, i, st)
		_, s := g.call(root, "quote-api", "pricing-service", "GET", "/v2/prices/"+sku, "/v2/prices/{sku}", 200, st, d)
		work(g, s, sku, st, d)
		end = max(end, st+d)
	}
	g.spans[root].EndUnixNano = g.base + uint64((end+1.5)*1e6)
	return g
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func init() {
	// fan_out ----------------------------------------------------------------
	add("fan_out", "positive-price-per-sku-sequential", func() *gen {
		g := newGen(501, true)
		root := g.server(-1, "checkout-api", "POST", "/api/checkout", "/api/checkout", 200, 0, 560)
		g.authNoise(root, "checkout-api", 0.5)
		rc := g.rpcClient(root, "checkout-api", "cart-service", "cart.v1.CartService", "GetCart", 0, 3.2, 14)
		g.rpcServer(rc, "cart-service", "cart.v1.CartService", "GetCart", 0, 3.8, 12.6)
		at := 18.0
		for i, sku := range []int{10482, 22019, 30551, 41877, 52210, 63001, 70417, 88120} {
			d := g.jitter(36, 0.2)
			_, s := g.call(root, "checkout-api", "pricing-service", "GET", fmt.Sprintf("/v2/prices/SKU-%d?currency=EUR", sku), "/v2/prices/{sku}", 200, at, d)
			g.db(s, "pricing-service", "redis", "0", "redis-pricing", fmt.Sprintf("GET price:SKU-%d:EUR", sku), at+1.5, 0.8+float64(i%3)*0.2)
			at += d + 0.4
		}
		g.internal(root, "checkout-api", "compute totals", at+1, 250)
		return g
	})
	add("fan_out", "positive-catalog-grpc-pool-of-4", func() *gen {
		g := newGen(502, false)
		root := g.server(-1, "recommendation-service", "GET", "/api/recommendations/{userId}", "/api/recommendations/48213", 200, 0, 242)
		g.internal(root, "recommendation-service", "model.candidates", 1.0, 18)
		for wave := 0; wave < 5; wave++ {
			for j := 0; j < 4; j++ {
				st := 20 + float64(wave)*44 + float64(j)*0.3
				d := g.jitter(40, 0.1)
				c := g.rpcClient(root, "recommendation-service", "catalog-service", "catalog.v1.CatalogService", "GetProduct", 0, st, d)
				g.rpcServer(c, "catalog-service", "catalog.v1.CatalogService", "GetProduct", 0, st+0.5, d-1)
			}
		}
		return g
	})
	// A 40-call errgroup burst to one service whose database pool has 4
	// connections: every call runs the same query, and each waits for the
	// ones ahead of it, so the calls take 8 to 65 ms although one alone
	// takes 8. The longest call is no estimate of a batch.
	add("fan_out", "positive-burst-queues-at-pricing", func() *gen {
		var q, qd float64
		return quoteBurst(505, 40, func(g *gen, i int, st float64) float64 {
			// FIFO on 4 connections, 6 ms a query (+ jitter).
			q, qd = st+1.2+float64(i/4)*6.1, g.jitter(6, 0.1)
			return q + qd + 0.8 - st
		}, func(g *gen, server int, sku string, st, dur float64) {
			g.db(server, "pricing-service", "postgresql", "pricing", "pg-pricing", "SELECT amount, currency FROM prices WHERE sku = '"+sku+"'", q, qd)
		})
	})
	// Twelve concurrent lookups of which the first four hit the cache and
	// the other eight run the query: the fast calls did less work, not
	// less waiting, although the later calls take longer.
	add("fan_out", "healthy-concurrent-lookups-some-cached", func() *gen {
		return quoteBurst(506, 12, func(g *gen, i int, st float64) float64 {
			if i < 4 {
				return 3.2
			}
			return g.jitter(45, 0.1) + 1.2
		}, func(g *gen, server int, sku string, st, dur float64) {
			g.db(server, "pricing-service", "redis", "0", "redis-pricing", "GET price:"+sku, st+0.7, 0.5)
			if dur > 3.2 {
				g.db(server, "pricing-service", "postgresql", "pricing", "pg-pricing", "SELECT amount, currency FROM prices WHERE sku = '"+sku+"'", st+1.3, dur-3.2)
				g.db(server, "pricing-service", "redis", "0", "redis-pricing", "SET price:"+sku+" ? EX 300", st+dur-1.4, 0.4)
			}
		})
	})
	add("fan_out", "healthy-dashboard-distinct-targets", func() *gen {
		g := newGen(503, false)
		root := g.server(-1, "web-bff", "GET", "/api/home", "/api/home", 200, 0, 212)
		for i, t := range []string{"user-service", "orders-service", "recommendation-service", "notification-service", "loyalty-service", "banner-service"} {
			g.call(root, "web-bff", t, "GET", "/v1/summary?user=48213", "/v1/summary", 200, 2+float64(i)*0.4, 150+float64(i)*9)
		}
		return g
	})
	add("fan_out", "healthy-four-lookups", func() *gen {
		g := newGen(504, true)
		root := g.server(-1, "checkout-api", "POST", "/api/checkout", "/api/checkout", 200, 0, 190)
		at := 2.0
		for _, sku := range []int{10482, 22019, 30551, 41877} {
			g.call(root, "checkout-api", "pricing-service", "GET", fmt.Sprintf("/v2/prices/SKU-%d", sku), "/v2/prices/{sku}", 200, at, 38)
			at += 38.5
		}
		return g
	})

	// sequential_calls -------------------------------------------------------
	dashboard := func(seed uint64, parallel bool) *gen {
		g := newGen(seed, false)
		root := g.server(-1, "web-bff", "GET", "/api/dashboard", "/api/dashboard", 200, 0, 1852)
		g.authNoise(root, "web-bff", 0.5)
		calls := []struct {
			to, path, route string
			d               float64
		}{
			{"user-service", "/users/48213/profile", "/users/<int:user_id>/profile", 312},
			{"orders-service", "/api/orders?customer=48213&limit=10", "/api/orders", 590},
			{"recommendation-service", "/api/recommendations/48213", "/api/recommendations/{userId}", 478},
			{"notification-service", "/v1/notifications/unread?user=48213", "/v1/notifications/unread", 420},
		}
		at := 3.0
		for i, c := range calls {
			st := at
			if parallel {
				st = 3.0 + float64(i)*0.3
			}
			_, s := g.call(root, "web-bff", c.to, "GET", c.path, c.route, 200, st, c.d)
			g.db(s, c.to, "postgresql", c.to[:len(c.to)-8], "pg-"+c.to, fmt.Sprintf("SELECT * FROM %s WHERE user_id = 48213 LIMIT 20", []string{"profiles", "orders", "recs", "notifications"}[i]), st+2, c.d*0.35)
			g.internal(s, c.to, "build response", st+2.2+c.d*0.35, c.d*0.65-4)
			at = st + c.d + []float64{1.2, 1.3, 1.4, 0}[i]
		}
		if parallel {
			at = 600
		}
		g.internal(root, "web-bff", "render dashboard", at+1, 1850-at-1.5)
		return g
	}
	add("sequential_calls", "positive-dashboard-four-calls", func() *gen { return dashboard(601, false) })
	add("sequential_calls", "positive-quote-grpc-chain", func() *gen {
		g := newGen(602, true)
		root := g.server(-1, "checkout-service", "POST", "/api/checkout/quote", "/api/checkout/quote", 200, 0, 420)
		at := 4.0
		for _, c := range []struct {
			host, svc, m string
			d            float64
		}{{"cart-service", "cart.v1.CartService", "GetCart", 120}, {"shipping-service", "shipping.v1.ShippingService", "GetQuote", 150}, {"currency-service", "currency.v1.CurrencyService", "Convert", 90}} {
			rc := g.rpcClient(root, "checkout-service", c.host, c.svc, c.m, 0, at, c.d)
			g.rpcServer(rc, c.host, c.svc, c.m, 0, at+0.5, c.d-1)
			at += c.d + 0.9
		}
		g.internal(root, "checkout-service", "build quote", at+0.5, 50)
		return g
	})
	add("sequential_calls", "healthy-parallel-dashboard", func() *gen { return dashboard(603, true) })
	add("sequential_calls", "healthy-calls-with-work-between", func() *gen {
		g := newGen(604, false)
		root := g.server(-1, "payment-service", "POST", "/api/payments", "/api/payments", 200, 0, 575)
		at := 2.0
		for i, c := range []struct {
			to, path, route string
			d               float64
		}{{"fraud-service", "/v1/score", "/v1/score", 140}, {"ledger-service", "/v1/holds", "/v1/holds", 120}, {"acquirer-gateway", "/v1/charges", "/v1/charges", 190}} {
			g.call(root, "payment-service", c.to, "POST", c.path, c.route, 200, at, c.d)
			at += c.d
			w := g.internal(root, "payment-service", []string{"evaluate fraud score", "build charge request", "persist result"}[i], at+0.3, 38)
			_ = w
			at += 40
		}
		return g
	})

	// timeout_cascade ---------------------------------------------------------
	add("timeout_cascade", "positive-checkout-bank-5s", func() *gen {
		g := newGen(701, false)
		root := g.server(-1, "web-frontend", "POST", "/checkout", "/checkout", 504, 0, 5012)
		c1 := g.client(root, "web-frontend", "checkout-service", "POST", "http://checkout-service:8080/api/checkout", 504, 3, 5007)
		g.fail(c1, "", "upstream request timeout")
		s1 := g.server(c1, "checkout-service", "POST", "/api/checkout", "/api/checkout", 504, 4, 5004)
		g.fail(s1, "io.grpc.StatusRuntimeException", "DEADLINE_EXCEEDED: deadline exceeded after 4.999s")
		g.db(s1, "checkout-service", "postgresql", "checkout", "pg-checkout", "SELECT id, total_cents FROM carts WHERE id = 77120", 5, 1.8)
		rc := g.rpcClient(s1, "checkout-service", "payment-service", "payment.v1.PaymentService", "Authorize", 4, 7, 4999)
		g.fail(rc, "io.grpc.StatusRuntimeException", "DEADLINE_EXCEEDED: deadline exceeded after 4.999s")
		rs := g.rpcServer(rc, "payment-service", "payment.v1.PaymentService", "Authorize", 4, 8, 4997.5)
		g.fail(rs, "", "context deadline exceeded")
		bank := g.client(rs, "payment-service", "bank-gateway", "POST", "https://api.bank-gw.example/v2/authorizations", 0, 9, 4996.5)
		g.fail(bank, "java.net.SocketTimeoutException", "Read timed out")
		return g
	})
	add("timeout_cascade", "positive-worker-shipping-10s", func() *gen {
		g := newGen(702, true)
		root := g.span(-1, "fulfillment-worker", "orders.paid process", model.KindConsumer, 0, 10052,
			a("messaging.system", "kafka"), a("messaging.destination", "orders.paid"), a("messaging.operation", "process"),
			a("messaging.kafka.partition", 5), a("messaging.kafka.message.offset", 1883412))
		g.fail(root, "", "create shipping label: context deadline exceeded")
		g.db(root, "fulfillment-worker", "postgresql", "fulfillment", "pg-fulfillment", "SELECT id, address_id FROM shipments WHERE order_id = 550912", 2, 3.4)
		c := g.client(root, "fulfillment-worker", "shipping-service", "POST", "http://shipping-service:8080/v1/labels", 0, 8, 10000.2)
		g.fail(c, "*url.Error", `Post "http://shipping-service:8080/v1/labels": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`)
		s := g.server(c, "shipping-service", "POST", "/v1/labels", "/v1/labels", 200, 9.2, 12390)
		g.client(s, "shipping-service", "carrier-api", "POST", "https://api.carrier.example/labels", 201, 12, 12380)
		g.internal(root, "fulfillment-worker", "schedule retry", 10010, 40)
		return g
	})
	add("timeout_cascade", "healthy-fast-error-chain-oom", func() *gen {
		g := newGen(703, false)
		root := g.server(-1, "api-gateway", "GET", "/api/recommendations", "/api/recommendations", 500, 0, 48)
		c := g.client(root, "api-gateway", "recs-service", "GET", "http://recs-service:8080/v1/recs?user=48213", 500, 1, 46.2)
		s := g.server(c, "recs-service", "GET", "/v1/recs", "/v1/recs", 500, 1.8, 44.6)
		g.fail(s, "RuntimeError", "model inference failed")
		rc := g.rpcClient(s, "recs-service", "ml-model", "inference.v1.Model", "Predict", 13, 3, 41.2)
		g.fail(rc, "", "INTERNAL: CUDA out of memory")
		rs := g.rpcServer(rc, "ml-model", "inference.v1.Model", "Predict", 13, 3.6, 40)
		g.fail(rs, "torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB")
		return g
	})
	add("timeout_cascade", "healthy-handled-timeout", func() *gen {
		g := newGen(704, false)
		root := g.server(-1, "product-page", "GET", "/products/{slug}", "/products/trail-runner-3", 200, 0, 1120)
		_, s := g.call(root, "product-page", "catalog-service", "GET", "/v1/products/trail-runner-3", "/v1/products/{slug}", 200, 2, 58)
		g.db(s, "catalog-service", "postgresql", "catalog", "pg-catalog", "SELECT * FROM products WHERE slug = 'trail-runner-3'", 4, 30)
		rv := g.client(root, "product-page", "reviews-service", "GET", "http://reviews-service:8080/v1/reviews?product=trail-runner-3", 0, 61, 1000.4)
		g.fail(rv, "TimeoutError", "timeout of 1000ms exceeded")
		g.internal(root, "product-page", "render page", 1062, 55)
		return g
	})

	// timeout_mismatch --------------------------------------------------------
	add("timeout_mismatch", "positive-search-kept-running", func() *gen {
		g := newGen(801, false)
		root := g.server(-1, "web-frontend", "GET", "/search", "/search", 200, 0, 2012)
		c := g.client(root, "web-frontend", "search-service", "GET", "http://search-service:8080/v1/search?q=trail+shoes", 0, 4, 2002)
		g.fail(c, "", "context deadline exceeded")
		s := g.server(c, "search-service", "GET", "/v1/search", "/v1/search", 200, 5, 3405)
		g.db(s, "search-service", "elasticsearch", "products", "es-products", `{"query":{"multi_match":{"query":"trail shoes","fields":["name^3","description"]}},"size":48}`, 8, 3372)
		return g
	})
	add("timeout_mismatch", "positive-inner-timeout-longer", func() *gen {
		g := newGen(802, true)
		root := g.server(-1, "api-gateway", "POST", "/api/orders", "/api/orders", 504, 0, 1010)
		c := g.client(root, "api-gateway", "orders-service", "POST", "http://orders-service:8080/api/orders", 0, 2, 1002)
		g.fail(c, "java.net.SocketTimeoutException", "Read timed out")
		s := g.server(c, "orders-service", "POST", "/api/orders", "/api/orders", 500, 3, 5027)
		g.fail(s, "java.net.SocketTimeoutException", "Read timed out")
		g.db(s, "orders-service", "mysql", "orders", "mysql-orders", "INSERT INTO orders (customer_id, total_cents) VALUES (48213, 12998)", 5, 4)
		inv := g.client(s, "orders-service", "inventory-service", "POST", "http://inventory-service:8080/api/stock/reserve", 0, 10, 5001)
		g.fail(inv, "java.net.SocketTimeoutException", "Read timed out")
		g.server(inv, "inventory-service", "POST", "/api/stock/reserve", "/api/stock/reserve", 200, 11, 5010)
		return g
	})
	add("timeout_mismatch", "healthy-async-consumer", func() *gen {
		g := newGen(803, false)
		root := g.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 201, 0, 85)
		g.db(root, "checkout-service", "postgresql", "orders", "pg-orders-primary", "INSERT INTO orders (customer_id, total_cents) VALUES (48213, 12998)", 2, 50)
		p := g.span(root, "checkout-service", "orders.created publish", model.KindProducer, 60, 4,
			a("messaging.system", "kafka"), a("messaging.destination.name", "orders.created"), a("messaging.operation.type", "send"))
		cons := g.span(p, "notification-service", "orders.created process", model.KindConsumer, 70, 380,
			a("messaging.system", "kafka"), a("messaging.destination.name", "orders.created"), a("messaging.operation.type", "process"))
		g.client(cons, "notification-service", "mail-provider", "POST", "https://api.mail-provider.example/v3/mail/send", 202, 75, 365)
		return g
	})
	add("timeout_mismatch", "healthy-clock-skew", func() *gen {
		g := newGen(804, true)
		root := g.server(-1, "web-frontend", "GET", "/account", "/account", 200, 0, 110)
		c := g.client(root, "web-frontend", "user-service", "GET", "http://user-service:8080/users/48213", 200, 5, 100)
		g.server(c, "user-service", "GET", "/users/<int:user_id>", "/users/48213", 200, 5.6, 100.2)
		return g
	})

	// retry_storm -------------------------------------------------------------
	add("retry_storm", "positive-inventory-pool-exhaustion", func() *gen {
		g := newGen(901, false)
		root := g.server(-1, "checkout-service", "POST", "/api/checkout", "/api/checkout", 503, 0, 3452)
		g.fail(root, "", "inventory unavailable")
		g.authNoise(root, "checkout-service", 0.4)
		g.db(root, "checkout-service", "postgresql", "checkout", "pg-checkout", "SELECT id, total_cents FROM carts WHERE id = 77120", 3, 2.5)
		at := 10.0
		const msg = "HikariPool-1 - Connection is not available, request timed out after 1000ms."
		for i, backoff := range []float64{100, 200, 0} {
			rc := g.rpcClient(root, "checkout-service", "inventory-service", "inventory.v1.InventoryService", "ReserveStock", 14, at, 1007)
			g.fail(rc, "io.grpc.StatusRuntimeException", "UNAVAILABLE: "+msg)
			g.set(rc, a("retry.attempt", i))
			rs := g.rpcServer(rc, "inventory-service", "inventory.v1.InventoryService", "ReserveStock", 14, at+1, 1004)
			g.fail(rs, "java.sql.SQLTransientConnectionException", msg)
			at += 1007 + backoff
		}
		g.internal(root, "checkout-service", "render error", at+3, 100)
		return g
	})
	add("retry_storm", "positive-nested-3x3", func() *gen {
		g := newGen(902, true)
		root := g.server(-1, "api-gateway", "POST", "/api/orders", "/api/orders", 502, 0, 935)
		at := 2.0
		for i := 0; i < 3; i++ {
			c := g.client(root, "api-gateway", "orders-service", "POST", "http://orders-service:8080/api/orders", 502, at, 240)
			s := g.server(c, "orders-service", "POST", "/api/orders", "/api/orders", 502, at+0.6, 238.8)
			g.fail(s, "PaymentUnavailable", "payments-service returned 503")
			in := at + 2
			for j := 0; j < 3; j++ {
				pc := g.client(s, "orders-service", "payments-service", "POST", "http://payments-service:8080/v1/charges", 503, in, 40)
				ps := g.server(pc, "payments-service", "POST", "/v1/charges", "/v1/charges", 503, in+0.5, 39)
				g.fail(ps, "PoolExhausted", "payments-db connection pool exhausted")
				in += 40 + 50
			}
			at += 240 + 100
		}
		return g
	})
	add("retry_storm", "healthy-single-quick-retry", func() *gen {
		g := newGen(903, false)
		root := g.server(-1, "storefront", "GET", "/api/products/{id}", "/api/products/8812", 200, 0, 96)
		c, s := g.call(root, "storefront", "catalog-service", "GET", "/v1/products/8812", "/v1/products/{id}", 503, 5, 8)
		g.fail(s, "", "service warming up")
		_ = c
		g.call(root, "storefront", "catalog-service", "GET", "/v1/products/8812", "/v1/products/{id}", 200, 23, 40)
		g.internal(root, "storefront", "render", 64, 30)
		return g
	})
	add("retry_storm", "healthy-pagination", func() *gen {
		g := newGen(904, true)
		root := g.span(-1, "sync-worker", "sync partner catalog", model.KindInternal, 0, 930)
		at := 1.0
		for p := 1; p <= 3; p++ {
			g.client(root, "sync-worker", "partner-api", "GET", fmt.Sprintf("https://api.partner.example/v1/products?page=%d&per_page=500", p), 200, at, 300)
			at += 301
		}
		return g
	})
}

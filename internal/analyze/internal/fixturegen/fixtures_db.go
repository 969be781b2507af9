package main

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

func init() {
	for svc, l := range map[string]string{
		"order-service": "java", "cart-service": "java", "payment-service": "java", "inventory-service": "java",
		"checkout-service": "java", "web-bff": "nodejs", "cart-api": "nodejs", "address-service": "python",
		"ml-model": "python", "user-service": "python",
	} {
		services[svc] = l
	}

	// slow_query -----------------------------------------------------------
	add("slow_query", "positive-sales-report-postgres", func() *gen {
		g := newGen(101, false)
		root := g.server(-1, "reporting-api", "GET", "/api/reports/sales", "/api/reports/sales", 200, 0, 1452)
		g.set(root, a("url.query", "from=2026-10-01&to=2026-10-31&tenant=42"))
		g.authNoise(root, "reporting-api", 0.6)
		g.db(root, "reporting-api", "postgresql", "analytics", "pg-analytics-replica-1",
			"SELECT value FROM report_settings WHERE tenant_id = 42 AND key = 'timezone'", 3.5, 2.1)
		g.db(root, "reporting-api", "postgresql", "analytics", "pg-analytics-replica-1",
			"SELECT date_trunc('day', o.created_at) AS day, sum(oi.quantity * oi.unit_price) AS revenue, count(DISTINCT o.id) AS orders "+
				"FROM orders o JOIN order_items oi ON oi.order_id = o.id WHERE o.tenant_id = 42 AND o.created_at >= '2026-10-01' "+
				"AND o.created_at < '2026-11-01' GROUP BY 1 ORDER BY 1", 6.2, 1208.4)
		g.internal(root, "reporting-api", "render csv", 1215, 31)
		c := g.client(root, "reporting-api", "audit-log", "POST", "http://audit-log:8080/v1/events", 202, 1247, 4.1)
		g.server(c, "audit-log", "POST", "/v1/events", "/v1/events", 202, 1247.6, 3.2)
		return g
	})
	add("slow_query", "positive-reserve-stock-mysql", func() *gen {
		g := newGen(102, true)
		root := g.server(-1, "cart-service", "POST", "/api/cart/items", "/api/cart/items", 200, 0, 640)
		ctl := g.internal(root, "cart-service", "CartController.addItem", 1.1, 637.5)
		g.db(ctl, "cart-service", "mysql", "shop", "mysql-primary.shop.svc",
			"SELECT id, user_id, updated_at FROM carts WHERE user_id = 88123 LIMIT 1", 2.0, 3.8)
		g.db(ctl, "cart-service", "mysql", "shop", "mysql-primary.shop.svc",
			"UPDATE inventory_reservations SET qty = qty + 1, updated_at = NOW() WHERE sku = 'SKU-81422' AND warehouse_id = 3", 6.4, 421.3)
		g.db(ctl, "cart-service", "mysql", "shop", "mysql-primary.shop.svc",
			"INSERT INTO cart_items (cart_id, sku, qty, price_cents) VALUES (99120, 'SKU-81422', 1, 2499)", 428.5, 3.1)
		g.internal(ctl, "cart-service", "CartPricing.recalculate", 432.0, 199.5)
		g.db(ctl, "cart-service", "redis", "0", "redis-cache", "DEL cart:88123:summary", 632.0, 0.9)
		return g
	})
	add("slow_query", "healthy-small-share-search", func() *gen {
		g := newGen(103, false)
		root := g.server(-1, "catalog-service", "GET", "/api/search", "/api/search", 200, 0, 930)
		g.authNoise(root, "catalog-service", 0.4)
		g.db(root, "catalog-service", "postgresql", "catalog", "pg-catalog", "SELECT id, name, price_cents FROM products WHERE category_id = 17 AND active = true ORDER BY popularity DESC LIMIT 200", 3.2, 122.4)
		c := g.client(root, "catalog-service", "ranking-service", "POST", "http://ranking-service:8080/v1/rank", 200, 126.5, 640)
		s := g.server(c, "ranking-service", "POST", "/v1/rank", "/v1/rank", 200, 127.2, 638.4)
		g.internal(s, "ranking-service", "model.score", 128, 630)
		g.internal(root, "catalog-service", "render results", 767, 160)
		return g
	})
	add("slow_query", "healthy-quick-dominant-query", func() *gen {
		g := newGen(104, true)
		root := g.server(-1, "user-service", "GET", "/users/<int:user_id>", "/users/48213", 200, 0, 62)
		g.db(root, "user-service", "postgresql", "users", "pg-users", "SELECT id, email, display_name, created_at FROM users WHERE id = 48213", 6.5, 46.2)
		g.internal(root, "user-service", "serialize", 53, 7)
		return g
	})

	// n_plus_one_query -------------------------------------------------------
	ordersPage := func(seed uint64, batched bool) *gen {
		g := newGen(seed, false)
		root := g.server(-1, "order-service", "GET", "/api/orders", "/api/orders", 200, 0, 318)
		g.set(root, a("url.query", "status=open&limit=50"))
		g.authNoise(root, "order-service", 0.5)
		ctl := g.internal(root, "order-service", "OrderController.listOrders", 3.0, 313)
		g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary",
			"SELECT o.id, o.customer_id, o.total_cents, o.status FROM orders o WHERE o.status = 'open' ORDER BY o.created_at DESC LIMIT 50", 4.0, 27.1)
		at := 31.4
		if batched {
			ids := make([]string, 50)
			for i := range ids {
				ids[i] = fmt.Sprint(101 + i*3)
			}
			g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary",
				"SELECT c.id, c.name, c.email, c.tier FROM customers c WHERE c.id IN ("+strings.Join(ids, ", ")+")", at, 9.3)
			at += 10
		} else {
			for i := 0; i < 50; i++ {
				d := g.jitter(4.8, 0.3)
				g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary",
					fmt.Sprintf("SELECT c.id, c.name, c.email, c.tier FROM customers c WHERE c.id = %d", 101+i*3), at, d)
				at += d + 0.35
			}
		}
		g.internal(ctl, "order-service", "serialize response", at+0.5, 8.2)
		g.spans[ctl].EndUnixNano = g.base + uint64((at+9)*1e6)
		g.spans[root].EndUnixNano = g.base + uint64((at+10.5)*1e6)
		return g
	}
	add("n_plus_one_query", "positive-orders-then-50-customers", func() *gen { return ordersPage(201, false) })
	add("n_plus_one_query", "positive-redis-product-per-item", func() *gen {
		g := newGen(202, true)
		root := g.server(-1, "cart-api", "GET", "/cart", "/cart", 200, 0, 118)
		g.db(root, "cart-api", "redis", "0", "redis-cart", "SMEMBERS cart:u-88123:items", 1.2, 1.9)
		at := 3.4
		for i := 0; i < 16; i++ {
			d := g.jitter(4.5, 0.25)
			g.db(root, "cart-api", "redis", "0", "redis-cart", fmt.Sprintf("HGETALL product:%d", 10231+i*17), at, d)
			at += d + 0.2
		}
		g.db(root, "cart-api", "postgresql", "promo", "pg-promo", "SELECT code, percent_off FROM promotions WHERE active AND starts_at <= now() AND ends_at > now()", at+0.3, 6.1)
		g.internal(root, "cart-api", "render cart", at+7, 112-at)
		return g
	})
	add("n_plus_one_query", "positive-spring-data-repository-wrappers", func() *gen {
		g := newGen(205, true)
		root := g.server(-1, "invoice-service", "GET", "/api/invoices", "/api/invoices", 200, 0, 0)
		list := g.internal(root, "invoice-service", "InvoiceRepository.findByAccountId", 2, 14, a("code.function", "findByAccountId"), a("code.namespace", "shop.billing.InvoiceRepository"))
		g.db(list, "invoice-service", "postgresql", "billing", "pg-billing", "select i1_0.id,i1_0.account_id,i1_0.total from invoices i1_0 where i1_0.account_id=?", 2.5, 12.8)
		at := 16.5
		for i := 0; i < 24; i++ {
			d := g.jitter(3.9, 0.3)
			w := g.internal(root, "invoice-service", "LineItemRepository.findByInvoiceId", at, d+0.6, a("code.function", "findByInvoiceId"), a("code.namespace", "shop.billing.LineItemRepository"))
			g.db(w, "invoice-service", "postgresql", "billing", "pg-billing", "select l1_0.id,l1_0.invoice_id,l1_0.sku,l1_0.amount from line_items l1_0 where l1_0.invoice_id=?", at+0.3, d)
			at += d + 0.9
		}
		g.internal(root, "invoice-service", "InvoiceMapper.toDto", at, 5)
		g.spans[root].EndUnixNano = g.base + uint64((at+6)*1e6)
		return g
	})
	add("n_plus_one_query", "healthy-batched-in-query", func() *gen { return ordersPage(203, true) })
	add("n_plus_one_query", "healthy-fast-repeats", func() *gen {
		g := newGen(204, false)
		root := g.server(-1, "pricing-service", "POST", "/v2/quotes", "/v2/quotes", 200, 0, 24)
		at := 1.0
		for i := 0; i < 9; i++ {
			g.db(root, "pricing-service", "postgresql", "pricing", "pg-pricing", fmt.Sprintf("SELECT price_cents FROM prices WHERE sku = 'SKU-%d' AND currency = 'EUR'", 7700+i), at, 1.2)
			at += 1.4
		}
		g.internal(root, "pricing-service", "apply discounts", at, 9)
		return g
	})

	// slow_dependency --------------------------------------------------------
	add("slow_dependency", "positive-geocoding-api", func() *gen {
		g := newGen(301, true)
		root := g.server(-1, "address-service", "POST", "/addresses/validate", "/addresses/validate", 200, 0, 1310)
		g.internal(root, "address-service", "parse address", 0.8, 3.9)
		g.client(root, "address-service", "", "GET", "https://maps.example-geo.com/maps/api/geocode/json?address=Hauptstrasse+12+Berlin&key=REDACTED", 200, 5.1, 1168)
		g.db(root, "address-service", "postgresql", "addresses", "pg-addresses", "INSERT INTO validated_addresses (user_id, line1, city, lat, lng) VALUES (48213, 'Hauptstrasse 12', 'Berlin', 52.52, 13.40)", 1175, 6.3)
		return g
	})
	add("slow_dependency", "positive-acquirer-timeout", func() *gen {
		g := newGen(302, false)
		root := g.server(-1, "payment-service", "POST", "/api/payments", "/api/payments", 504, 0, 5046)
		g.db(root, "payment-service", "postgresql", "payments", "pg-payments", "SELECT id, status FROM payment_intents WHERE id = 'pi_3QxT9fLk2a'", 2.0, 2.8)
		c := g.client(root, "payment-service", "acquirer-gateway", "POST", "https://api.acquirer.example/v1/charges", 0, 6.0, 5001)
		g.fail(c, "java.net.http.HttpTimeoutException", "request timed out")
		g.fail(root, "", "upstream timeout")
		g.internal(root, "payment-service", "record failure", 5008, 36)
		return g
	})
	add("slow_dependency", "healthy-fast-leaf", func() *gen {
		g := newGen(303, false)
		root := g.server(-1, "address-service", "POST", "/addresses/validate", "/addresses/validate", 200, 0, 61)
		g.client(root, "address-service", "geo-api", "GET", "https://maps.example-geo.com/maps/api/geocode/json?address=Rue+de+Rivoli+5", 200, 2.0, 45.3)
		g.internal(root, "address-service", "normalize", 48, 11)
		return g
	})
	add("slow_dependency", "healthy-minor-share", func() *gen {
		g := newGen(304, false)
		root := g.server(-1, "invoice-service", "POST", "/api/invoices/{id}/send", "/api/invoices/88231/send", 200, 0, 2400)
		g.internal(root, "invoice-service", "render pdf", 1.0, 1650)
		g.client(root, "invoice-service", "mail-provider", "POST", "https://api.mail-provider.example/v3/mail/send", 202, 1652, 600)
		g.db(root, "invoice-service", "postgresql", "billing", "pg-billing", "UPDATE invoices SET sent_at = now() WHERE id = 88231", 2253, 4)
		return g
	})

	// idle_gap ---------------------------------------------------------------
	add("idle_gap", "positive-pool-wait-between-queries", func() *gen {
		g := newGen(401, false)
		root := g.server(-1, "order-service", "POST", "/api/orders", "/api/orders", 201, 0, 1861)
		ctl := g.internal(root, "order-service", "OrderController.createOrder", 1.0, 1857)
		g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary", "SELECT id, items, total_cents FROM carts WHERE id = 77120 FOR UPDATE", 3.0, 18.0)
		g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary", "INSERT INTO orders (customer_id, cart_id, total_cents, status) VALUES (48213, 77120, 12998, 'new')", 1821, 12)
		g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary", "INSERT INTO order_items (order_id, sku, qty) VALUES (550912, 'SKU-81422', 2)", 1834, 12)
		g.span(ctl, "order-service", "orders.created publish", model.KindProducer, 1847, 5,
			a("messaging.system", "kafka"), a("messaging.destination.name", "orders.created"), a("messaging.operation.type", "publish"))
		return g
	})
	add("idle_gap", "positive-wait-before-first-call", func() *gen {
		g := newGen(402, true)
		root := g.span(-1, "report-worker", "reports.generate process", model.KindConsumer, 0, 905,
			a("messaging.system", "kafka"), a("messaging.destination", "reports.generate"), a("messaging.operation", "process"),
			a("messaging.kafka.partition", 3))
		c := g.client(root, "report-worker", "template-service", "GET", "http://template-service:8080/v1/templates/monthly-statement", 200, 522, 78)
		g.server(c, "template-service", "GET", "/v1/templates/{name}", "/v1/templates/monthly-statement", 200, 522.8, 76.5)
		g.db(root, "report-worker", "postgresql", "billing", "pg-billing", "SELECT * FROM statements WHERE account_id = 3312 AND period = '2026-10'", 601, 38)
		g.client(root, "report-worker", "s3", "PUT", "https://reports-bucket.s3.eu-west-1.amazonaws.com/statements/3312/2026-10.pdf", 200, 640, 262)
		return g
	})
	// Twenty requests miss catalog:all at once; the service lets one of
	// them run the query and the others await its promise (single flight).
	// A waiter's trace shows only its read of the key, then nothing until
	// the other request's fetch is done.
	add("idle_gap", "positive-single-flight-waiter", func() *gen {
		g, _ := catalogRead(405, 336)
		return g
	})
	// The same read, after which the request fetches the value itself and
	// writes it back: its gap is no wait for another request.
	add("idle_gap", "healthy-cache-read-then-own-fetch", func() *gen {
		g, h := catalogRead(406, 345)
		g.db(h, "shop", "postgresql", "shop", "pg-shop", "SELECT count(*) AS n, sum(total) AS s FROM orders", 1.2, 330)
		g.db(h, "shop", "redis", "0", "redis-cache", "SET catalog:all ? EX 30", 331.5, 12)
		return g
	})
	// A config client's background thread long-polls its config server: the
	// server parks the request right after the handler returns and answers
	// when a key changes or the poll's 30 s run out. The wait is the protocol.
	add("idle_gap", "healthy-config-long-poll", func() *gen {
		g := newGen(404, true)
		poll := g.client(-1, "pricing-service", "", "POST", "http://config-server:8848/nacos/v1/cs/configs/listener", 200, 0, 30004)
		g.set(poll, a("thread.name", "config.client.worker.longPolling-config-server_8848"))
		srv := g.server(poll, "config-server", "POST", "/nacos/v1/cs/configs/listener", "/nacos/v1/cs/configs/listener", 200, 1.1, 30001.5)
		g.internal(srv, "config-server", "ConfigController.listener", 1.3, 0.4)
		return g
	})
	add("idle_gap", "healthy-back-to-back", func() *gen {
		g := newGen(403, false)
		root := g.server(-1, "order-service", "POST", "/api/orders", "/api/orders", 201, 0, 260)
		ctl := g.internal(root, "order-service", "OrderController.createOrder", 0.5, 259)
		at := 1.0
		for _, q := range []struct {
			s string
			d float64
		}{
			{"SELECT id, items, total_cents FROM carts WHERE id = 77121 FOR UPDATE", 41},
			{"INSERT INTO orders (customer_id, cart_id, total_cents, status) VALUES (48214, 77121, 4599, 'new')", 88},
			{"INSERT INTO order_items (order_id, sku, qty) VALUES (550913, 'SKU-1002', 1)", 71},
			{"UPDATE carts SET status = 'ordered' WHERE id = 77121", 55},
		} {
			g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary", q.s, at, q.d)
			at += q.d + 0.4
		}
		return g
	})
	add("idle_gap", "healthy-small-gaps", func() *gen {
		g := newGen(404, true)
		root := g.server(-1, "catalog-service", "GET", "/api/categories/{id}/products", "/api/categories/17/products", 200, 0, 2000)
		at := 0.5
		for i, d := range []float64{420, 510, 380, 430} {
			c := g.client(root, "catalog-service", "inventory-service", "GET", fmt.Sprintf("http://inventory-service:8080/api/stock?category=17&page=%d", i+1), 200, at, d)
			g.server(c, "inventory-service", "GET", "/api/stock", "/api/stock", 200, at+0.6, d-1.2)
			at += d + []float64{150, 80, 25, 0}[i]
		}
		return g
	})
}

// catalogRead is shop GET /catalog (durMS long) whose handler reads
// catalog:all from Redis first; it returns the handler's index.
func catalogRead(seed uint64, durMS float64) (*gen, int) {
	g := newGen(seed, false)
	root := g.server(-1, "shop", "GET", "/catalog", "/catalog", 200, 0, durMS)
	h := g.internal(root, "shop", "request handler", 0.2, durMS-0.4, a("http.route", "/catalog"))
	g.db(h, "shop", "redis", "0", "redis-cache", "GET catalog:all", 0.4, 0.3)
	return g, h
}

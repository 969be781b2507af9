package main

import "github.com/tracedx/tracedx/internal/model"

func init() {
	// error_origin ----------------------------------------------------------
	add("error_origin", "positive-ml-model-oom", func() *tb {
		// A product page 500 four services deep: the model server ran out
		// of GPU memory and every layer above only passed the error up.
		b := newTB(901, false)
		root := b.server(-1, "api-gateway", "GET", "/api/products/{id}", "/api/products/48213", 500, 0, 1420)
		b.auth(root, "api-gateway", 0.4)
		c1, ps := b.call(root, "api-gateway", "product-service", "GET", "/v1/products/48213", "/v1/products/{id}", 500, 3, 1410)
		_ = c1
		b.fail(ps, "com.shop.product.RecommendationException", "recommendations unavailable: upstream returned 500")
		b.db(ps, "product-service", "postgresql", "catalog", "SELECT p.id, p.name, p.price_cents FROM products p WHERE p.id = 48213", 5, 6.2)
		b.call(ps, "product-service", "catalog-service", "GET", "/v1/stock/48213", "/v1/stock/{id}", 200, 12, 18)
		_, rs := b.call(ps, "product-service", "recommendation-service", "POST", "/v1/recommendations", "/v1/recommendations", 500, 32, 1375)
		b.fail(rs, "httpx.HTTPStatusError", "Server error '500 Internal Server Error' for url 'http://ml-inference:8080/v2/models/reco/infer'")
		b.internal(rs, "recommendation-service", "feature_store.fetch", 34, 21)
		_, ms := b.call(rs, "recommendation-service", "ml-inference", "POST", "/v2/models/reco/infer", "/v2/models/{model}/infer", 500, 58, 1340)
		b.fail(ms, "", "inference failed")
		b.internal(ms, "ml-inference", "preprocess", 60, 14)
		fw := b.internal(ms, "ml-inference", "model.forward", 75, 1318, kv("ml.model.name", "reco-two-tower"), kv("ml.batch_size", 512))
		b.fail(fw, "torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total capacity; 13.91 GiB already allocated)")
		return b
	})
	add("error_origin", "positive-order-deadlock-old-semconv", func() *tb {
		b := newTB(902, true)
		root := b.server(-1, "orders-service", "POST", "/api/orders", "/api/orders", 500, 0, 860)
		b.fail(root, "org.springframework.dao.CannotAcquireLockException", "could not execute statement; SQL [n/a]")
		b.auth(root, "orders-service", 0.5)
		b.db(root, "orders-service", "postgresql", "orders", "SELECT id, status FROM carts WHERE user_id = 48213", 3, 4.1)
		_, ps := b.call(root, "orders-service", "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 200, 9, 210)
		b.db(ps, "payment-service", "postgresql", "payments", "INSERT INTO authorizations (order_id, amount) VALUES (991, 4599)", 20, 9)
		tx := b.internal(root, "orders-service", "OrderRepository.save", 222, 630)
		b.fail(tx, "org.springframework.dao.CannotAcquireLockException", "could not execute statement")
		up := b.db(tx, "orders-service", "postgresql", "orders", "UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'SKU-10482'", 224, 626)
		b.fail(up, "org.postgresql.util.PSQLException", "ERROR: deadlock detected\n  Detail: Process 8812 waits for ShareLock on transaction 99127")
		return b
	})
	add("error_origin", "healthy-not-found-404", func() *tb {
		b := newTB(903, false)
		root := b.server(-1, "api-gateway", "GET", "/api/products/{id}", "/api/products/99999", 404, 0, 38)
		b.auth(root, "api-gateway", 0.3)
		_, ps := b.call(root, "api-gateway", "product-service", "GET", "/v1/products/99999", "/v1/products/{id}", 404, 3, 33)
		b.db(ps, "product-service", "postgresql", "catalog", "SELECT p.id, p.name FROM products p WHERE p.id = 99999", 5, 4.4)
		return b
	})
	add("error_origin", "healthy-handled-exception", func() *tb {
		// An exception was recorded and handled (status OK): a stale
		// cache entry failed to deserialize and was reloaded.
		b := newTB(904, false)
		root := b.server(-1, "product-service", "GET", "/v1/products/{id}", "/v1/products/48213", 200, 0, 64)
		g := b.db(root, "product-service", "redis", "0", "GET product:48213", 1, 1.2)
		b.spans[g].Events = append(b.spans[g].Events, model.Event{TimeUnixNano: b.spans[g].EndUnixNano, Name: "exception",
			Attrs: model.Attrs{kv("exception.type", "com.fasterxml.jackson.databind.exc.InvalidFormatException"),
				kv("exception.message", "Cannot deserialize value of type `Currency`")}})
		b.spans[g].StatusCode = model.StatusOK
		b.db(root, "product-service", "postgresql", "catalog", "SELECT p.id, p.name FROM products p WHERE p.id = 48213", 3, 41)
		b.db(root, "product-service", "redis", "0", "SET product:48213 <json> EX 300", 45, 0.9)
		return b
	})

	// swallowed_error -------------------------------------------------------
	add("swallowed_error", "positive-product-page-timeouts", func() *tb {
		// 200 OK, but reviews and recommendations timed out: the user saw
		// a product page without either.
		b := newTB(911, false)
		root := b.server(-1, "web-bff", "GET", "/products/{slug}", "/products/trail-runner-gtx", 200, 0, 2060)
		b.auth(root, "web-bff", 0.3)
		b.call(root, "web-bff", "product-service", "GET", "/v1/products/by-slug/trail-runner-gtx", "/v1/products/by-slug/{slug}", 200, 3, 44)
		rv := b.client(root, "web-bff", "reviews-service", "GET", "/v1/reviews?product=48213&limit=10", 0, 48, 2000)
		b.fail(rv, "TimeoutError", "timeout of 2000ms exceeded")
		b.set(rv, kv("peer.service", "reviews-service"))
		rvs := b.server(rv, "reviews-service", "GET", "/v1/reviews", "/v1/reviews", 200, 49, 2890)
		b.db(rvs, "reviews-service", "postgresql", "reviews", "SELECT r.* FROM reviews r WHERE r.product_id = 48213 ORDER BY r.created_at DESC LIMIT 10", 52, 2870)
		rc := b.client(root, "web-bff", "recommendation-service", "GET", "/v1/recommendations?product=48213", 0, 48.4, 1500)
		b.fail(rc, "TimeoutError", "timeout of 1500ms exceeded")
		b.call(root, "web-bff", "pricing-service", "GET", "/v1/prices/48213?currency=EUR", "/v1/prices/{id}", 200, 48.8, 31)
		b.internal(root, "web-bff", "render product page", 2049, 10)
		return b
	})
	add("swallowed_error", "positive-search-personalization-unavailable", func() *tb {
		b := newTB(912, true)
		root := b.server(-1, "search-api", "GET", "/api/search", "/api/search", 200, 0, 160)
		b.auth(root, "search-api", 0.2)
		b.span(root, "search-api", "elasticsearch search", model.KindClient, 3, 96,
			kv("db.system", "elasticsearch"), kv("db.statement", `{"query":{"match":{"title":"rain jacket"}}}`), kv("net.peer.name", "es-products"))
		c, _ := b.rpc(root, "search-api", "personalization-service", "personalization.v1.Ranker", "Rank", 14, 101, 52)
		b.fail(c, "", "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.42.3.17:50051: connect: connection refused\"")
		b.internal(root, "search-api", "rank.fallback_by_popularity", 154, 4)
		return b
	})
	add("swallowed_error", "healthy-retry-succeeded", func() *tb {
		b := newTB(913, false)
		root := b.server(-1, "web-bff", "GET", "/products/{slug}", "/products/trail-runner-gtx", 200, 0, 120)
		b.call(root, "web-bff", "product-service", "GET", "/v1/products/by-slug/trail-runner-gtx", "/v1/products/by-slug/{slug}", 503, 2, 6)
		b.call(root, "web-bff", "product-service", "GET", "/v1/products/by-slug/trail-runner-gtx", "/v1/products/by-slug/{slug}", 200, 58, 48)
		b.internal(root, "web-bff", "render product page", 108, 9)
		return b
	})
	add("swallowed_error", "healthy-all-calls-ok", func() *tb {
		b := newTB(914, false)
		root := b.server(-1, "web-bff", "GET", "/products/{slug}", "/products/trail-runner-gtx", 200, 0, 190)
		b.auth(root, "web-bff", 0.3)
		b.call(root, "web-bff", "product-service", "GET", "/v1/products/by-slug/trail-runner-gtx", "/v1/products/by-slug/{slug}", 200, 3, 44)
		b.call(root, "web-bff", "reviews-service", "GET", "/v1/reviews?product=48213", "/v1/reviews", 200, 48, 120)
		b.call(root, "web-bff", "recommendation-service", "GET", "/v1/recommendations?product=48213", "/v1/recommendations", 200, 48.3, 131)
		return b
	})
	add("swallowed_error", "healthy-error-reported", func() *tb {
		// The failure reached the user as a 502: reported, not swallowed.
		b := newTB(915, false)
		root := b.server(-1, "web-bff", "GET", "/checkout", "/checkout", 502, 0, 95)
		b.call(root, "web-bff", "cart-service", "GET", "/v1/carts/current", "/v1/carts/current", 500, 2, 90)
		return b
	})

	// partial_failure -------------------------------------------------------
	add("partial_failure", "positive-dashboard-loyalty-down", func() *tb {
		b := newTB(921, false)
		root := b.server(-1, "web-bff", "GET", "/api/dashboard", "/api/dashboard", 502, 0, 340)
		b.auth(root, "web-bff", 0.2)
		b.call(root, "web-bff", "orders-service", "GET", "/v1/orders?user=48213&limit=5", "/v1/orders", 200, 3, 180)
		b.call(root, "web-bff", "profile-service", "GET", "/v1/profiles/48213", "/v1/profiles/{id}", 200, 3.2, 64)
		lc, ls := b.call(root, "web-bff", "loyalty-service", "GET", "/v1/points/48213", "/v1/points/{id}", 500, 3.4, 330)
		b.fail(ls, "java.lang.IllegalStateException", "points ledger is being rebuilt")
		_ = lc
		b.call(root, "web-bff", "notification-service", "GET", "/v1/inbox/48213?unread=true", "/v1/inbox/{id}", 200, 3.6, 92)
		return b
	})
	add("partial_failure", "positive-report-shard-deadline", func() *tb {
		b := newTB(922, true)
		root := b.server(-1, "report-service", "POST", "/api/reports/sales", "/api/reports/sales", 500, 0, 2030)
		agg := b.internal(root, "report-service", "aggregate shards", 4, 2020)
		b.fail(agg, "", "shard 2: context deadline exceeded")
		b.rpc(agg, "report-service", "shard-0", "analytics.v1.Shard", "Aggregate", 0, 5, 840)
		b.rpc(agg, "report-service", "shard-1", "analytics.v1.Shard", "Aggregate", 0, 5.2, 910)
		b.rpc(agg, "report-service", "shard-2", "analytics.v1.Shard", "Aggregate", 4, 5.4, 2000)
		return b
	})
	add("partial_failure", "healthy-all-branches-ok", func() *tb {
		b := newTB(923, false)
		root := b.server(-1, "web-bff", "GET", "/api/dashboard", "/api/dashboard", 200, 0, 190)
		for i, s := range []string{"orders-service", "profile-service", "loyalty-service", "notification-service"} {
			b.call(root, "web-bff", s, "GET", "/v1/summary/48213", "/v1/summary/{id}", 200, 3+float64(i)*0.2, 100+float64(i)*20)
		}
		return b
	})
	add("partial_failure", "healthy-degraded-gracefully", func() *tb {
		// Loyalty failed, the dashboard answered without it: graceful.
		b := newTB(924, false)
		root := b.server(-1, "web-bff", "GET", "/api/dashboard", "/api/dashboard", 200, 0, 200)
		b.call(root, "web-bff", "orders-service", "GET", "/v1/orders?user=48213", "/v1/orders", 200, 3, 180)
		b.call(root, "web-bff", "loyalty-service", "GET", "/v1/points/48213", "/v1/points/{id}", 500, 3.4, 40)
		return b
	})
	add("partial_failure", "healthy-sequential-failure", func() *tb {
		// The failing step ran after the others: nothing concurrent was thrown away.
		b := newTB(925, false)
		root := b.server(-1, "orders-service", "POST", "/api/orders", "/api/orders", 500, 0, 300)
		b.call(root, "orders-service", "cart-service", "GET", "/v1/carts/current", "/v1/carts/current", 200, 2, 40)
		b.call(root, "orders-service", "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 500, 45, 250)
		return b
	})
}

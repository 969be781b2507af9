package main

import "github.com/tracedx/tracedx/internal/model"

func init() {
	// broken_propagation -----------------------------------------------------
	add("broken_propagation", "positive-legacy-client-no-header", func() *tb {
		// checkout calls inventory twice; the reservation goes through a
		// legacy HTTP client that sends no traceparent, so that call has no
		// SERVER child although inventory-service is traced in this trace.
		b := newTB(961, false)
		root := b.server(-1, "checkout-service", "POST", "/api/checkout", "/api/checkout", 200, 0, 420)
		b.auth(root, "checkout-service", 0.3)
		_, st := b.call(root, "checkout-service", "inventory-service", "GET", "/v1/stock?sku=SKU-10482", "/v1/stock", 200, 3, 36)
		b.db(st, "inventory-service", "postgresql", "inventory", "SELECT qty FROM stock WHERE sku = 'SKU-10482'", 6, 8)
		b.client(root, "checkout-service", "inventory-service", "POST", "/v1/reservations", 201, 41, 280)
		b.call(root, "checkout-service", "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 200, 323, 92)
		return b
	})
	add("broken_propagation", "positive-orphaned-subtree", func() *tb {
		// The mesh sidecar's span was dropped by its own sampler; the
		// payment service's spans point at a parent that never arrived.
		b := newTB(962, false)
		root := b.server(-1, "orders-service", "POST", "/api/orders", "/api/orders", 200, 0, 510)
		b.auth(root, "orders-service", 0.3)
		pc := b.client(root, "orders-service", "payment-service", "POST", "/v1/payments/authorize", 200, 5, 480)
		b.spans[pc].Attrs = append(b.spans[pc].Attrs, kv("peer.service", "payment-service"))
		sidecar := b.newID() // the envoy span that was never exported
		ps := b.server(-1, "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 200, 7, 470)
		b.spans[ps].ParentSpanID = sidecar
		b.db(ps, "payment-service", "postgresql", "payments", "INSERT INTO authorizations (order_id, amount) VALUES (991, 4599)", 9, 12)
		b.client(ps, "payment-service", "acquirer.example-bank.com", "POST", "/v2/authorizations", 200, 24, 440)
		return b
	})
	add("broken_propagation", "positive-worker-second-root", func() *tb {
		// A thread pool lost the context: the export job's spans carry the
		// trace id (B3 single header) but no parent.
		b := newTB(963, true)
		root := b.server(-1, "report-service", "POST", "/api/exports", "/api/exports", 202, 0, 40)
		b.db(root, "report-service", "postgresql", "analytics", "INSERT INTO export_jobs (id, kind) VALUES (771, 'csv')", 2, 5)
		job := b.internal(-1, "report-service", "ExportJob.run", 35, 2200)
		b.db(job, "report-service", "postgresql", "analytics", "SELECT * FROM sales WHERE day >= '2026-10-01'", 40, 2100)
		return b
	})
	add("broken_propagation", "healthy-external-api", func() *tb {
		b := newTB(964, false)
		root := b.server(-1, "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 200, 0, 300)
		b.db(root, "payment-service", "postgresql", "payments", "SELECT id FROM merchants WHERE id = 12", 2, 3)
		b.client(root, "payment-service", "api.stripe.com", "POST", "/v1/payment_intents", 200, 6, 280)
		return b
	})
	add("broken_propagation", "healthy-connection-refused", func() *tb {
		// The call never reached inventory (connection refused, no status):
		// no SERVER span is expected.
		b := newTB(965, false)
		root := b.server(-1, "checkout-service", "POST", "/api/checkout", "/api/checkout", 200, 0, 120)
		b.call(root, "checkout-service", "inventory-service", "GET", "/v1/stock?sku=SKU-10482", "/v1/stock", 200, 3, 30)
		c := b.client(root, "checkout-service", "inventory-service", "POST", "/v1/reservations", 0, 35, 3)
		b.fail(c, "java.net.ConnectException", "Connection refused")
		b.call(root, "checkout-service", "inventory-service", "POST", "/v1/reservations", "/v1/reservations", 201, 40, 70)
		return b
	})
	add("broken_propagation", "healthy-linked-consumer", func() *tb {
		// A batch consumer starts its own root by design and links the
		// producer span.
		b := newTB(966, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 202, 0, 30)
		p := b.produce(root, "checkout-service", "kafka", "orders.created", 10, 4)
		c := b.consume(-1, "billing-worker", "kafka", "orders.created", 60, 90)
		b.spans[c].Links = append(b.spans[c].Links, model.Link{TraceID: b.tid, SpanID: b.spans[p].SpanID})
		return b
	})

	// instrumentation_gap ----------------------------------------------------
	add("instrumentation_gap", "positive-5xx-not-error-unknown-service", func() *tb {
		b := newTB(971, true)
		root := b.server(-1, "api-gateway", "GET", "/api/orders/{id}", "/api/orders/o-77121", 503, 0, 64)
		b.spans[root].StatusCode = model.StatusUnset
		c := b.client(root, "api-gateway", "orders-service", "GET", "/v1/orders/o-77121", 503, 2, 60)
		b.spans[c].StatusCode = model.StatusUnset
		s := b.span(c, "", "GET /v1/orders/{id}", model.KindServer, 3, 58, kv("http.method", "GET"), kv("http.route", "/v1/orders/{id}"),
			kv("http.status_code", 503))
		b.spans[s].ScopeName = "io.opentelemetry.tomcat-10.0"
		b.span(s, "", "SELECT orders", model.KindClient, 5, 52, kv("db.system", "postgresql"), kv("db.statement", "SELECT * FROM orders WHERE id = ?"))
		return b
	})
	add("instrumentation_gap", "positive-pii-and-token", func() *tb {
		b := newTB(972, false)
		root := b.server(-1, "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 200, 0, 180)
		b.set(root, kv("enduser.id", "jane.doe@example.com"), kv("http.request.header.authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjE2In0.eyJzdWIiOiI0ODIxMyJ9.c2lnbmF0dXJl"))
		v := b.internal(root, "payment-service", "validate card", 2, 4, kv("payment.card.number", "4111 1111 1111 1111"), kv("payment.card.brand", "visa"))
		_ = v
		b.client(root, "payment-service", "acquirer.example-bank.com", "POST", "/v2/authorizations", 200, 8, 160)
		for i, id := range []string{"o-77121", "o-77122", "o-77123"} {
			b.internal(root, "payment-service", "load order "+id+"/items/"+[]string{"88121", "88122", "88123"}[i], 170+float64(i)*2, 1.5)
		}
		return b
	})
	add("instrumentation_gap", "healthy-clean-telemetry", func() *tb {
		b := newTB(973, false)
		root := b.server(-1, "payment-service", "POST", "/v1/payments/authorize", "/v1/payments/authorize", 503, 0, 180)
		b.set(root, kv("enduser.id", "48213"), kv("user.email_hash", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
			kv("payment.card.last4", "**** **** **** 1111"), kv("payment.created_at_ms", "1763733600123"),
			kv("http.request.header.authorization", "[REDACTED]"), kv("order.id", "5fea7756-0ea4-451a-a703-a558b933e274"))
		b.client(root, "payment-service", "acquirer.example-bank.com", "POST", "/v2/authorizations", 503, 8, 160)
		b.internal(root, "payment-service", "grpc.health.v1.Health/Check", 170, 1)
		return b
	})
	add("instrumentation_gap", "healthy-404-and-versions", func() *tb {
		b := newTB(974, true)
		root := b.server(-1, "api-gateway", "GET", "/api/v2/orders/{id}", "/api/v2/orders/o-99999", 404, 0, 12)
		_, s := b.call(root, "api-gateway", "orders-service", "GET", "/v2/orders/o-99999", "/v2/orders/{id}", 404, 1, 10)
		b.internal(s, "orders-service", "HTTP/1.1 keep-alive", 2, 0.3)
		b.produce(s, "orders-service", "kafka", "orders.v2.lookups", 3, 1)
		return b
	})
}

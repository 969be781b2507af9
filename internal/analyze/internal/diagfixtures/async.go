package main

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

func init() {
	// cache_miss -------------------------------------------------------------
	add("cache_miss", "positive-product-cache-aside", func() *tb {
		// GET misses (no attribute says so), the product is loaded from
		// PostgreSQL and written back: the classic cache-aside miss.
		b := newTB(931, false)
		root := b.server(-1, "product-service", "GET", "/v1/products/{id}", "/v1/products/48213", 200, 0, 236)
		b.auth(root, "product-service", 0.2)
		b.db(root, "product-service", "redis", "0", "GET product:48213", 3, 1.1)
		b.db(root, "product-service", "postgresql", "catalog",
			"SELECT p.id, p.name, p.description, p.price_cents, v.sku, v.stock FROM products p JOIN variants v ON v.product_id = p.id WHERE p.id = 48213", 4.4, 172)
		b.db(root, "product-service", "postgresql", "catalog", "SELECT url FROM product_images WHERE product_id = 48213 ORDER BY position", 177, 38)
		b.db(root, "product-service", "redis", "0", "SET product:48213 ? EX 600", 215.5, 0.9)
		b.internal(root, "product-service", "serialize response", 217, 17)
		return b
	})
	add("cache_miss", "positive-read-through-cache-hit-false", func() *tb {
		// A read-through cache whose loader calls the rules service inside
		// the lookup span, marked cache.hit=false.
		b := newTB(932, true)
		root := b.server(-1, "checkout-service", "POST", "/api/cart/price", "/api/cart/price", 200, 0, 310)
		lk := b.internal(root, "checkout-service", "cache.get pricing-rules", 2, 262,
			kv("cache.name", "pricing-rules"), kv("cache.key", "rules:EUR:DE:2026-11-21"), kv("cache.hit", false))
		b.call(lk, "checkout-service", "rules-service", "GET", "/v1/rules?currency=EUR&country=DE", "/v1/rules", 200, 3, 258)
		b.internal(root, "checkout-service", "apply pricing rules", 265, 40)
		return b
	})
	add("cache_miss", "healthy-cache-hit", func() *tb {
		b := newTB(933, false)
		root := b.server(-1, "product-service", "GET", "/v1/products/{id}", "/v1/products/48213", 200, 0, 24)
		b.auth(root, "product-service", 0.2)
		b.db(root, "product-service", "redis", "0", "GET product:48213", 3, 1.1)
		b.db(root, "product-service", "postgresql", "catalog", "SELECT stock FROM variants WHERE product_id = 48213", 4.5, 6)
		b.internal(root, "product-service", "serialize response", 11, 9)
		return b
	})
	add("cache_miss", "healthy-fast-fallback", func() *tb {
		b := newTB(934, false)
		root := b.server(-1, "checkout-service", "POST", "/api/cart/price", "/api/cart/price", 200, 0, 40)
		lk := b.internal(root, "checkout-service", "cache.get pricing-rules", 2, 14,
			kv("cache.name", "pricing-rules"), kv("cache.key", "rules:EUR:DE:2026-11-21"), kv("cache.hit", false))
		b.call(lk, "checkout-service", "rules-service", "GET", "/v1/rules?currency=EUR&country=DE", "/v1/rules", 200, 3, 12)
		b.internal(root, "checkout-service", "apply pricing rules", 17, 20)
		return b
	})
	add("cache_miss", "healthy-get-then-other-key-set", func() *tb {
		// A session hit, a query, and a write of another key: no miss.
		b := newTB(935, false)
		root := b.server(-1, "cart-service", "POST", "/v1/carts/{id}/items", "/v1/carts/c-88121/items", 201, 0, 140)
		b.db(root, "cart-service", "redis", "0", "GET session:0c9a7e5b1f2d4a60", 1, 0.9)
		b.db(root, "cart-service", "postgresql", "carts", "INSERT INTO cart_items (cart_id, sku, qty) VALUES ('c-88121', 'SKU-10482', 1)", 2.5, 120)
		b.db(root, "cart-service", "redis", "0", "SET cart:c-88121 ? EX 86400", 123, 0.8)
		return b
	})

	// consumer_lag -----------------------------------------------------------
	add("consumer_lag", "positive-kafka-45s", func() *tb {
		b := newTB(941, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 202, 0, 88)
		b.auth(root, "checkout-service", 0.3)
		b.db(root, "checkout-service", "postgresql", "orders", "INSERT INTO orders (id, user_id, total_cents) VALUES ('o-77121', 48213, 12999)", 3, 11)
		p := b.produce(root, "checkout-service", "kafka", "orders.created", 15, 6.5,
			kv("messaging.destination.partition.id", "3"), kv("messaging.kafka.message.key", "o-77121"))
		c := b.consume(p, "fulfillment-service", "kafka", "orders.created", 21.5+45000, 212,
			kv("messaging.destination.partition.id", "3"), kv("messaging.kafka.offset", 1882211),
			kv("messaging.consumer.group.name", "fulfillment"), kv("messaging.kafka.message.key", "o-77121"))
		b.db(c, "fulfillment-service", "postgresql", "wms", "INSERT INTO pick_lists (order_id, warehouse) VALUES ('o-77121', 'FRA-1')", 45030, 14)
		b.call(c, "fulfillment-service", "inventory-service", "POST", "/v1/reservations", "/v1/reservations", 200, 45046, 160)
		return b
	})
	add("consumer_lag", "positive-rabbitmq-email-old-semconv", func() *tb {
		b := newTB(942, true)
		root := b.server(-1, "orders-service", "POST", "/api/orders/{id}/ship", "/api/orders/o-77121/ship", 200, 0, 54)
		b.db(root, "orders-service", "postgresql", "orders", "UPDATE orders SET status = 'shipped' WHERE id = 'o-77121'", 2, 8)
		p := b.produce(root, "orders-service", "rabbitmq", "notifications", 12, 3.1, kv("messaging.rabbitmq.routing_key", "email.shipped"))
		c := b.consume(p, "notification-service", "rabbitmq", "notifications", 15.1+3240, 420, kv("messaging.rabbitmq.routing_key", "email.shipped"))
		b.client(c, "notification-service", "api.mailprovider.example", "POST", "/v3/mail/send", 202, 3260, 400)
		return b
	})
	add("consumer_lag", "healthy-fast-consumer", func() *tb {
		b := newTB(943, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 202, 0, 40)
		p := b.produce(root, "checkout-service", "kafka", "orders.created", 15, 6.5, kv("messaging.destination.partition.id", "1"))
		c := b.consume(p, "fulfillment-service", "kafka", "orders.created", 21.5+36, 190,
			kv("messaging.destination.partition.id", "1"), kv("messaging.kafka.offset", 1882190), kv("messaging.consumer.group.name", "fulfillment"))
		b.db(c, "fulfillment-service", "postgresql", "wms", "INSERT INTO pick_lists (order_id, warehouse) VALUES ('o-77100', 'FRA-1')", 60, 14)
		return b
	})
	add("consumer_lag", "healthy-slow-processing", func() *tb {
		// The consumer took 4 s to process, but picked the message up at once.
		b := newTB(944, false)
		root := b.server(-1, "report-service", "POST", "/api/exports", "/api/exports", 202, 0, 30)
		p := b.produce(root, "report-service", "kafka", "exports.requested", 10, 4, kv("messaging.destination.partition.id", "0"))
		c := b.consume(p, "report-service", "kafka", "exports.requested", 14+22, 4100, kv("messaging.consumer.group.name", "exporter"))
		b.db(c, "report-service", "postgresql", "analytics", "SELECT * FROM sales WHERE day >= '2026-10-01'", 40, 4050)
		return b
	})

	// poison_message ---------------------------------------------------------
	add("poison_message", "positive-kafka-retries-to-dlt", func() *tb {
		// One malformed order event: four deliveries fail to parse, then
		// Spring Kafka's DeadLetterPublishingRecoverer sends it to orders.created.DLT.
		b := newTB(951, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 202, 0, 61)
		p := b.produce(root, "checkout-service", "kafka", "orders.created", 20, 5,
			kv("messaging.destination.partition.id", "5"), kv("messaging.kafka.message.key", "o-77140"))
		at := 31.0
		var last int
		var lastAt float64
		for i := 0; i < 4; i++ {
			c := b.consume(p, "billing-worker", "kafka", "orders.created", at, 18,
				kv("messaging.destination.partition.id", "5"), kv("messaging.kafka.offset", 2231907),
				kv("messaging.consumer.group.name", "billing"), kv("messaging.kafka.message.key", "o-77140"))
			b.fail(c, "com.fasterxml.jackson.core.JsonParseException",
				"Unexpected character ('}' (code 125)): was expecting double-quote to start field name at [Source: (byte[])\"{\"orderId\":\"o-77140\",}\"; line: 1, column: 22]")
			last, lastAt = c, at
			at += 18 + 1000*float64(int(1)<<i)
		}
		b.produce(last, "billing-worker", "kafka", "orders.created.DLT", lastAt+14, 3.2,
			kv("messaging.kafka.message.key", "o-77140"))
		return b
	})
	add("poison_message", "positive-sqs-redelivered-message-id", func() *tb {
		b := newTB(952, true)
		root := b.server(-1, "orders-service", "POST", "/api/invoices", "/api/invoices", 202, 0, 35)
		p := b.produce(root, "orders-service", "aws_sqs", "invoice-requests", 8, 22)
		for i := 0; i < 3; i++ {
			c := b.consume(p, "billing-worker", "aws_sqs", "invoice-requests", 40+float64(i)*30000, 240,
				kv("messaging.message_id", "5fea7756-0ea4-451a-a703-a558b933e274"))
			b.call(c, "billing-worker", "tax-service", "POST", "/v1/tax/quote", "/v1/tax/quote", 422, 45+float64(i)*30000, 30)
			b.fail(c, "InvoiceValidationError", "tax quote rejected: unknown country code 'UK'")
		}
		return b
	})
	add("poison_message", "healthy-retry-then-success", func() *tb {
		b := newTB(953, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders", "/api/orders", 202, 0, 50)
		p := b.produce(root, "checkout-service", "kafka", "orders.created", 20, 5, kv("messaging.kafka.message.key", "o-77150"))
		c := b.consume(p, "billing-worker", "kafka", "orders.created", 31, 1010, kv("messaging.kafka.offset", 2231950))
		b.fail(c, "org.apache.kafka.common.errors.TimeoutException", "Timeout expired while fetching topic metadata")
		b.consume(p, "billing-worker", "kafka", "orders.created", 2100, 44, kv("messaging.kafka.offset", 2231950))
		return b
	})
	add("poison_message", "healthy-distinct-messages", func() *tb {
		// A batch of three messages, one of which failed once: not the
		// same message failing again and again.
		b := newTB(954, false)
		root := b.server(-1, "checkout-service", "POST", "/api/orders/bulk", "/api/orders/bulk", 202, 0, 70)
		for i := 0; i < 3; i++ {
			p := b.produce(root, "checkout-service", "kafka", "orders.created", 10+float64(i)*12, 5, kv("messaging.kafka.message.key", fmt.Sprintf("o-7716%d", i)))
			c := b.consume(p, "billing-worker", "kafka", "orders.created", 60+float64(i)*30, 25, kv("messaging.kafka.offset", 2231960+i))
			if i == 1 {
				b.fail(c, "java.lang.IllegalArgumentException", "negative amount")
			}
		}
		return b
	})
	_ = model.KindConsumer
}

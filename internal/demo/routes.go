package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The incident being played travels with the request (a header between
// services, a context value inside one) so healthy traffic running at the
// same time is unaffected.
const incidentHeader = "X-Demo-Incident"

type incidentKey struct{}

func withIncident(ctx context.Context, name string) context.Context {
	if name == "" {
		return ctx
	}
	return context.WithValue(ctx, incidentKey{}, name)
}

func incidentOf(ctx context.Context) string {
	v, _ := ctx.Value(incidentKey{}).(string)
	return v
}

func (s *Shop) svc(name string) *service { return s.services[name] }

// routes registers every service's handlers.
func (s *Shop) routes() {
	gw := s.svc("gateway")
	ms := func(d int) time.Duration { return jitter(time.Duration(d) * time.Millisecond) }

	gw.handle("GET", "/api/products/{id}", func(ctx context.Context, r *http.Request) int {
		st, err := gw.call(ctx, s.svc("product"), "GET", "/products/{id}", "/products/"+r.PathValue("id"), 3*time.Second)
		return statusOf(st, err)
	})
	gw.handle("GET", "/api/orders", func(ctx context.Context, r *http.Request) int {
		orders := s.svc("orders")
		s.mu.Lock()
		if s.deployed {
			orders = s.ordersNext
		}
		s.mu.Unlock()
		st, err := gw.call(ctx, orders, "GET", "/orders", "/orders", 5*time.Second)
		return statusOf(st, err)
	})
	gw.handle("GET", "/api/dashboard", func(ctx context.Context, r *http.Request) int {
		calls := []func(){
			func() { _, _ = gw.call(ctx, s.svc("auth"), "GET", "/session", "/session", time.Second) },
			func() { _, _ = gw.call(ctx, s.svc("cart"), "GET", "/cart", "/cart", time.Second) },
			func() { _, _ = gw.call(ctx, s.svc("orders"), "GET", "/orders/recent", "/orders/recent", time.Second) },
			func() {
				_, _ = gw.call(ctx, s.svc("recommendation"), "GET", "/recommendations/{id}", "/recommendations/u-981", time.Second)
			},
		}
		if incidentOf(ctx) == "sequential_calls" {
			// The bug: the dashboard awaits each widget before asking for the next.
			for _, c := range calls {
				c()
			}
		} else {
			parallel(calls...)
		}
		return http.StatusOK
	})
	gw.handle("POST", "/api/checkout", func(ctx context.Context, r *http.Request) int {
		if st, err := gw.call(ctx, s.svc("auth"), "POST", "/verify", "/verify", time.Second); err != nil || st != http.StatusOK {
			return http.StatusUnauthorized
		}
		// The cart and the prices do not depend on each other: the
		// healthy checkout asks for both at once (the sequential_calls
		// incident is the dashboard, which does not).
		parallel(
			func() { _, _ = gw.call(ctx, s.svc("cart"), "GET", "/cart", "/cart", time.Second) },
			func() { _, _ = gw.call(ctx, s.svc("pricing"), "GET", "/prices/{sku}", "/prices/SKU-1001", time.Second) },
		)
		// Inventory reservations are retried on 503: the retry policy is
		// part of what the retry_storm incident shows.
		var st int
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			st, err = gw.call(ctx, s.svc("inventory"), "POST", "/reserve", "/reserve", 3*time.Second)
			if err == nil && st < 500 {
				break
			}
			sleep(ctx, 20*time.Millisecond)
		}
		if err != nil || st >= 500 {
			return http.StatusServiceUnavailable
		}
		// Totals, taxes and the payment request are computed from the
		// reservation: local work between the two calls.
		sleep(ctx, ms(8))
		st, err = gw.call(ctx, s.svc("payment"), "POST", "/charge", "/charge", 1500*time.Millisecond)
		if err != nil || st >= 500 {
			return http.StatusGatewayTimeout
		}
		s.produce(ctx, gw, "order.placed", fmt.Sprintf("ord-%d", rand.IntN(1_000_000)))
		return http.StatusCreated
	})

	auth := s.svc("auth")
	auth.handle("GET", "/session", func(ctx context.Context, r *http.Request) int {
		sleep(ctx, ms(8))
		return http.StatusOK
	})
	auth.handle("POST", "/verify", func(ctx context.Context, r *http.Request) int {
		auth.cacheGet(ctx, "session:{token}", true)
		if incidentOf(ctx) == "auth_expiry_race" && s.staleAuth.Add(1)%2 == 0 {
			// A token refreshed by one instance and not yet seen by the
			// other: requests alternate between the two, so every second
			// one is refused (deterministic, so the incident always shows
			// both successes and failures).
			return http.StatusUnauthorized
		}
		sleep(ctx, ms(5))
		return http.StatusOK
	})

	cart := s.svc("cart")
	cart.handle("GET", "/cart", func(ctx context.Context, r *http.Request) int {
		cart.cacheGet(ctx, "cart:u-981", true)
		if incidentOf(ctx) == "sequential_calls" {
			sleep(ctx, ms(450))
		}
		return http.StatusOK
	})

	s.ordersRoutes(s.svc("orders"), false)
	s.ordersRoutes(s.ordersNext, true)

	inv := s.svc("inventory")
	inv.handle("POST", "/reserve", func(ctx context.Context, r *http.Request) int {
		switch incidentOf(ctx) {
		case "retry_storm":
			err := inv.query(ctx, "UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'SKU-1001'", "inventory",
				ms(120), errors.New("connection pool exhausted: 20/20 connections in use, waited 100ms"))
			if err != nil {
				return http.StatusServiceUnavailable
			}
		case "idle_gap":
			_ = inv.query(ctx, "SELECT stock FROM inventory WHERE sku = 'SKU-1001'", "inventory", ms(6), nil)
			sleep(ctx, 1800*time.Millisecond) // waiting for a pooled connection, not instrumented
			_ = inv.query(ctx, "UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'SKU-1001'", "inventory", ms(8), nil)
		default:
			_ = inv.query(ctx, "SELECT stock FROM inventory WHERE sku = 'SKU-1001'", "inventory", ms(4), nil)
			_ = inv.query(ctx, "UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'SKU-1001'", "inventory", ms(6), nil)
		}
		return http.StatusOK
	})

	pricing := s.svc("pricing")
	pricing.handle("GET", "/prices/{sku}", func(ctx context.Context, r *http.Request) int {
		pricing.cacheGet(ctx, "price:{sku}", rand.IntN(10) > 0)
		sleep(ctx, ms(12))
		return http.StatusOK
	})

	pay := s.svc("payment")
	pay.handle("POST", "/charge", func(ctx context.Context, r *http.Request) int {
		st, err := pay.call(ctx, s.svc("fraud"), "POST", "/score", "/score", time.Second)
		if err != nil {
			return http.StatusGatewayTimeout
		}
		if st >= 500 {
			return http.StatusBadGateway
		}
		sleep(ctx, ms(40)) // the card network, not instrumented in this demo
		return http.StatusOK
	})
	fraud := s.svc("fraud")
	fraud.handle("POST", "/score", func(ctx context.Context, r *http.Request) int {
		if incidentOf(ctx) == "timeout_cascade" {
			_ = fraud.query(ctx, "SELECT score FROM risk_profiles WHERE card_hash = 'a1b2c3'", "risk_profiles", 3*time.Second, nil)
			return http.StatusOK
		}
		_ = fraud.query(ctx, "SELECT score FROM risk_profiles WHERE card_hash = 'a1b2c3'", "risk_profiles", ms(9), nil)
		return http.StatusOK
	})

	s.productRoutes()
}

func (s *Shop) ordersRoutes(orders *service, nPlusOne bool) {
	ms := func(d int) time.Duration { return jitter(time.Duration(d) * time.Millisecond) }
	orders.handle("GET", "/orders", func(ctx context.Context, r *http.Request) int {
		_ = orders.query(ctx, "SELECT id, customer_id, total FROM orders WHERE status = 'open' ORDER BY created_at DESC LIMIT 50", "orders", ms(12), nil)
		if nPlusOne || incidentOf(ctx) == "n_plus_one_query" {
			for i := 0; i < 50; i++ {
				_ = orders.query(ctx, fmt.Sprintf("SELECT id, name, email FROM customers WHERE id = %d", 101+i*7), "customers", ms(3), nil)
			}
		} else {
			_ = orders.query(ctx, "SELECT id, name, email FROM customers WHERE id IN (101, 108, 115, 122, 129)", "customers", ms(5), nil)
		}
		return http.StatusOK
	})
	orders.handle("GET", "/orders/recent", func(ctx context.Context, r *http.Request) int {
		d := ms(15)
		if incidentOf(ctx) == "sequential_calls" {
			d = ms(380)
		}
		_ = orders.query(ctx, "SELECT id, total FROM orders WHERE customer_id = 981 ORDER BY created_at DESC LIMIT 5", "orders", d, nil)
		return http.StatusOK
	})
}

func (s *Shop) productRoutes() {
	ms := func(d int) time.Duration { return jitter(time.Duration(d) * time.Millisecond) }
	product := s.svc("product")
	product.handle("GET", "/products/{id}", func(ctx context.Context, r *http.Request) int {
		id := r.PathValue("id")
		inc := incidentOf(ctx)
		hit := inc != "cache_miss" && inc != "cache_stampede"
		product.cacheGet(ctx, "product:"+id, hit)
		if !hit {
			d := ms(450)
			if inc == "cache_stampede" {
				d = ms(250)
			}
			_ = product.query(ctx, "SELECT p.*, v.* FROM products p JOIN variants v ON v.product_id = p.id WHERE p.id = "+id, "products", d, nil)
			product.cacheSet(ctx, "product:"+id)
		}
		pricing := s.svc("pricing")
		if inc == "fan_out" {
			// One call per variant where one batch call would do.
			for i := 0; i < 12; i++ {
				_, _ = product.call(ctx, pricing, "GET", "/prices/{sku}", fmt.Sprintf("/prices/SKU-%d", 2000+i), time.Second)
			}
		} else {
			_, _ = product.call(ctx, pricing, "GET", "/prices/{sku}", "/prices/SKU-"+id, time.Second)
		}
		var recStatus int
		var recErr error
		parallel(
			func() {
				_, _ = product.call(ctx, s.svc("review"), "GET", "/reviews/{id}", "/reviews/"+id, 250*time.Millisecond)
			},
			func() {
				recStatus, recErr = product.call(ctx, s.svc("recommendation"), "GET", "/recommendations/{id}", "/recommendations/"+id, 250*time.Millisecond)
			},
		)
		if inc == "error_origin" && (recErr != nil || recStatus >= 500) {
			// This page does not degrade gracefully: the error goes up.
			return http.StatusInternalServerError
		}
		// Otherwise reviews and recommendations are optional: a failure
		// there degrades the page but still answers 200.
		return http.StatusOK
	})

	review := s.svc("review")
	review.handle("GET", "/reviews/{id}", func(ctx context.Context, r *http.Request) int {
		d := ms(20)
		if incidentOf(ctx) == "swallowed_error" {
			d = 400 * time.Millisecond
		}
		_ = review.query(ctx, "SELECT rating, body FROM reviews WHERE product_id = "+r.PathValue("id")+" LIMIT 20", "reviews", d, nil)
		return http.StatusOK
	})

	rec := s.svc("recommendation")
	rec.handle("GET", "/recommendations/{id}", func(ctx context.Context, r *http.Request) int {
		switch incidentOf(ctx) {
		case "swallowed_error":
			sleep(ctx, 400*time.Millisecond)
			return http.StatusOK
		case "error_origin":
			err := rec.internal(ctx, "FeatureStore.Load", func(ctx context.Context) error {
				sleep(ctx, ms(6))
				return rec.internal(ctx, "ModelServer.Predict", func(ctx context.Context) error {
					span := trace.SpanFromContext(ctx)
					span.SetAttributes(attribute.String("ml.model", "recs-v7"), attribute.Int("ml.batch_size", 512))
					sleep(ctx, ms(30))
					oom := errors.New("CUDA out of memory: tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)")
					span.RecordError(oom, trace.WithAttributes(attribute.String("exception.type", "torch.cuda.OutOfMemoryError")))
					return oom
				})
			})
			if err != nil {
				return http.StatusInternalServerError
			}
		default:
			_ = rec.internal(ctx, "ModelServer.Predict", func(ctx context.Context) error { sleep(ctx, ms(18)); return nil })
		}
		return http.StatusOK
	})
}

// message is one queued message with its propagated context.
type message struct {
	id       string
	topic    string
	headers  http.Header
	sentAt   time.Time
	incident string
}

// produce publishes a message with a PRODUCER span.
func (s *Shop) produce(ctx context.Context, from *service, topic, id string) {
	ctx, span := from.tracer.Start(ctx, topic+" publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "publish"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", id),
			attribute.Int("messaging.kafka.destination.partition", rand.IntN(6)),
			attribute.String("server.address", "kafka.shop.internal"),
		))
	h := http.Header{}
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
	sleep(ctx, 2*time.Millisecond)
	span.End()
	select {
	case s.queue <- message{id: id, topic: topic, headers: h, sentAt: time.Now(), incident: incidentOf(ctx)}:
	default: // queue full: the demo drops rather than blocks
	}
}

// consume is the notification service's consumer loop.
func (s *Shop) consume(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.queue:
			if m.topic != "order.placed" {
				continue
			}
			lag := jitter(15 * time.Millisecond)
			if m.incident == "consumer_lag" {
				lag = s.opts.ConsumerLag
			}
			go func(m message) {
				sleep(ctx, time.Until(m.sentAt.Add(lag)))
				if ctx.Err() != nil {
					return
				}
				s.handleMessage(ctx, m)
			}(m)
		}
	}
}

func (s *Shop) handleMessage(ctx context.Context, m message) {
	n := s.svc("notification")
	pctx := propagator.Extract(ctx, propagation.HeaderCarrier(m.headers))
	poison := m.incident == "poison_message"
	attempts := 1
	if poison {
		attempts = 3
	}
	for a := 1; a <= attempts; a++ {
		cctx, span := n.tracer.Start(pctx, m.topic+" process", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", "kafka"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", m.topic),
				attribute.String("messaging.consumer.group.name", "notification"),
				attribute.String("messaging.message.id", m.id),
				attribute.Int("messaging.kafka.message.offset", 18000+rand.IntN(1000)),
				attribute.Int("messaging.delivery_attempt", a),
			))
		if poison {
			err := errors.New("json: cannot unmarshal string into Go struct field Order.total of type float64")
			span.RecordError(err, trace.WithAttributes(attribute.String("exception.type", "json.UnmarshalTypeError")))
			span.SetStatus(codes.Error, err.Error())
			sleep(cctx, 5*time.Millisecond)
			if a == attempts {
				s.produce(cctx, n, m.topic+".dlq", m.id)
			}
			span.End()
			sleep(ctx, 30*time.Millisecond)
			continue
		}
		_ = n.query(cctx, "SELECT email FROM customers WHERE id = 981", "customers", jitter(4*time.Millisecond), nil)
		_ = n.internal(cctx, "SMTP send", func(ctx context.Context) error { sleep(ctx, jitter(25*time.Millisecond)); return nil })
		span.End()
	}
}

func statusOf(st int, err error) int {
	if err != nil {
		if strings.Contains(err.Error(), "timeout") {
			return http.StatusGatewayTimeout
		}
		return http.StatusBadGateway
	}
	return st
}

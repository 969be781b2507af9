package main

import (
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// event adds a span event atMS from the trace start.
func (g *gen) event(i int, atMS float64, name string, attrs ...model.Attr) {
	g.spans[i].Events = append(g.spans[i].Events, model.Event{TimeUnixNano: g.base + uint64(atMS*1e6), Name: name, Attrs: attrs})
}

// poolCalls runs n calls of durs[i] ms through k workers starting at
// startMS, each worker taking the next call when its last one ends (plus
// handoff ms); it returns when the last call ends.
func (g *gen) poolCalls(parent, k int, startMS, handoff float64, durs []float64, one func(i int, at, dur float64)) float64 {
	free := make([]float64, k)
	for w := range free {
		free[w] = startMS + float64(w)*0.2
	}
	end := startMS
	for i, d := range durs {
		w := 0
		for j := range free {
			if free[j] < free[w] {
				w = j
			}
		}
		at := free[w]
		one(i, at, d)
		free[w] = at + d + handoff
		end = max(end, at+d)
	}
	return end
}

func init() {
	// lock_contention --------------------------------------------------------
	// A reservation endpoint whose DAO wraps every query in one JVM-wide
	// lock: under load each request queues behind the others.
	add("lock_contention", "positive-inventory-global-mutex", func() *gen {
		g := newGen(1101, false)
		root := g.server(-1, "checkout-service", "POST", "/api/checkout", "/api/checkout", 200, 0, 742)
		g.authNoise(root, "checkout-service", 0.4)
		_, inv := g.call(root, "checkout-service", "inventory-service", "POST", "/v1/reservations", "/v1/reservations", 201, 3.5, 690)
		q := g.db(inv, "inventory-service", "mysql", "inventory", "mysql-inventory",
			"UPDATE stock SET reserved = reserved + 2 WHERE sku = 'SKU-30551' AND warehouse_id = 4", 5.1, 684.2)
		g.event(q, 5.3, "Waiting for lock behind 7 transactions", a("blockers", "[req-8812 req-8813 req-8815 req-8816 req-8819 req-8820 req-8822]"))
		g.event(q, 662.8, "Acquired lock with 3 transactions waiting behind")
		g.internal(root, "checkout-service", "build confirmation", 695, 44)
		return g
	})
	add("lock_contention", "positive-hikari-pool-exhausted", func() *gen {
		g := newGen(1102, true)
		root := g.server(-1, "order-service", "GET", "/api/orders/{id}", "/api/orders/88213", 200, 0, 468)
		ctl := g.internal(root, "order-service", "OrderController.getOrder", 0.8, 466)
		q := g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary",
			"SELECT o.id, o.status, o.total_cents FROM orders o WHERE o.id = 88213", 1.5, 431.6)
		g.set(q, a("db.client.connections.pool.name", "HikariPool-1"), a("db.client.connections.wait_time", 424.9))
		g.db(ctl, "order-service", "postgresql", "orders", "pg-orders-primary",
			"SELECT li.sku, li.qty FROM order_lines li WHERE li.order_id = 88213", 434, 4.2)
		g.internal(ctl, "order-service", "serialize", 439, 25)
		return g
	})
	// A dispatch endpoint asks for a route per candidate driver through a
	// worker pool shared by all requests, sized 3.
	add("lock_contention", "positive-route-worker-pool-of-3", func() *gen {
		g, root, at := dispatchStart(1103, "392", "577,322", true)
		_, _ = g.call(root, "dispatch-api", "drivers-service", "GET", "/drivers/near?loc=577,322", "/drivers/near", 200, at, 48)
		end := g.routeCalls(root, 3, at+49, "577,322")
		g.internal(root, "dispatch-api", "pick best eta", end+0.3, 1.1)
		return g
	})
	add("lock_contention", "healthy-parallel-route-calls", func() *gen {
		g, root, at := dispatchStart(1104, "123", "115,277", true)
		g.routeCalls(root, 10, at, "115,277")
		return g
	})
	// The shape of Jaeger's HotROD demo under load: the customer lookup
	// queues behind a global lock around its (simulated) MySQL, the driver
	// service reads each driver from Redis (every fifth read times out and
	// is retried), and route is asked once per driver through the
	// frontend's worker pool of 3, shared by all requests.
	add("lock_contention", "positive-hotrod-shaped-dispatch", func() *gen {
		g := newGen(1107, true)
		root := g.server(-1, "frontend", "GET", "/dispatch", "/dispatch?customer=392&nonse=0.17", 200, 0, 0)
		_, cs := g.call(root, "frontend", "customer", "GET", "/customer?customer=392", "/customer", 200, 0.6, 402)
		q := g.span(cs, "customer", "SQL SELECT", model.KindClient, 1.4, 399.5, a("peer.service", "mysql"),
			a("sql.query", "SELECT * FROM customer WHERE customer_id=392"), a("request", "5318-7"))
		g.event(q, 1.5, "Waiting for lock behind 4 transactions", a("blockers", "[5318-3 5318-4 5318-5 5318-6]"))
		g.event(q, 312.2, "Acquired lock with 2 transactions waiting behind")
		dc := g.rpcClient(root, "frontend", "driver", "driver.DriverService", "FindNearest", 0, 403.5, 231)
		ds := g.rpcServer(dc, "driver", "driver.DriverService", "FindNearest", 0, 404.1, 229.6)
		g.db(ds, "driver", "redis", "0", "redis", "SMEMBERS drivers:577,322", 404.4, 21.3)
		at := 426.0
		for i := 0; i < 10; i++ {
			for attempt := 0; ; attempt++ {
				d := g.jitter(11, 0.2)
				fail := attempt == 0 && (i == 3 || i == 8)
				if fail {
					d = 31.4
				}
				r := g.db(ds, "driver", "redis", "0", "redis", fmt.Sprintf("GET driver:T7%05dC", 10231+i*311), at, d)
				at += d + 0.1
				if !fail {
					break
				}
				g.fail(r, "", "redis timeout")
			}
		}
		end := g.poolCalls(root, 3, 636, 0.1, []float64{48, 61, 55, 52, 66, 49, 58, 53, 60, 57}, func(i int, at, dur float64) {
			g.call(root, "frontend", "route", "GET", fmt.Sprintf("/route?dropoff=577,322&pickup=%d,%d", 100+i*37, 900-i*41), "/route", 200, at, dur)
		})
		g.spans[root].EndUnixNano = g.base + uint64((end+1.5)*1e6)
		return g
	})
	// A loop over pages: sequential calls, one at a time by design.
	add("lock_contention", "healthy-sequential-page-loop", func() *gen {
		g := newGen(1105, false)
		root := g.server(-1, "export-service", "POST", "/v1/exports", "/v1/exports", 202, 0, 0)
		at := 1.0
		for i := 0; i < 8; i++ {
			d := g.jitter(40, 0.2)
			g.call(root, "export-service", "ledger-service", "GET", fmt.Sprintf("/v1/entries?page=%d", i+1), "/v1/entries", 200, at, d)
			at += d + 0.2
		}
		g.spans[root].EndUnixNano = g.base + uint64((at+3)*1e6)
		return g
	})
	// The lock was free: acquired at once, nobody waiting; a 3 ms queue
	// before a connection is noise.
	add("lock_contention", "healthy-lock-free-and-short-pool-wait", func() *gen {
		g := newGen(1106, false)
		root := g.server(-1, "inventory-service", "POST", "/v1/reservations", "/v1/reservations", 201, 0, 96)
		q := g.db(root, "inventory-service", "mysql", "inventory", "mysql-inventory",
			"UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-10482' AND warehouse_id = 2", 1.2, 41)
		g.event(q, 1.3, "Acquired lock with 0 transactions waiting behind")
		r := g.db(root, "inventory-service", "postgresql", "audit", "pg-audit", "INSERT INTO audit_log (actor, action) VALUES ('svc', 'reserve')", 44, 9)
		g.set(r, a("db.client.connection.pool.name", "audit"), a("db.client.connection.wait_time", 0.003))
		g.internal(root, "inventory-service", "publish event", 55, 38)
		return g
	})
}

// dispatchStart opens a dispatch request that first looks the customer up;
// it returns when that call ended.
func dispatchStart(seed uint64, customer, loc string, old bool) (*gen, int, float64) {
	g := newGen(seed, old)
	root := g.server(-1, "dispatch-api", "GET", "/dispatch", "/dispatch?customer="+customer, 200, 0, 0)
	_, _ = g.call(root, "dispatch-api", "customer-service", "GET", "/customer?customer="+customer, "/customer", 200, 0.8, 61)
	return g, root, 62.5
}

// routeCalls asks route-service for 10 routes through a pool of workers
// and ends the request 2 ms after the last answer.
func (g *gen) routeCalls(root, workers int, startMS float64, pickup string) float64 {
	durs := make([]float64, 10)
	for i := range durs {
		durs[i] = g.jitter(52, 0.25)
	}
	end := g.poolCalls(root, workers, startMS, 0.15, durs, func(i int, at, dur float64) {
		g.call(root, "dispatch-api", "route-service", "GET", fmt.Sprintf("/route?pickup=%s&dropoff=%d,%d", pickup, 100+i*37, 900-i*41), "/route", 200, at, dur)
	})
	g.spans[root].EndUnixNano = g.base + uint64((end+2)*1e6)
	return end
}

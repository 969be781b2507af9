package main

import "github.com/tracedx/tracedx/internal/model"

// Traces in the shape a Node.js app records with @opentelemetry/sdk-node
// and the http, express, mysql2 and undici instrumentations: Express's
// "request handler" INTERNAL span sits under every server span and never
// fails, mysql2 names a span by the statement's first word, undici's fetch
// client span carries the AbortSignal's "aborted due to timeout", and
// span starts fall on whole milliseconds.

// mysql2Query adds a span as @opentelemetry/instrumentation-mysql2 records it.
func (g *gen) mysql2Query(parent int, svc, stmt string, startMS, durMS float64) int {
	name := stmt
	for i := range stmt {
		if stmt[i] == ' ' {
			name = stmt[:i]
			break
		}
	}
	return g.span(parent, svc, name, model.KindClient, startMS, durMS, a("db.system.name", "mysql"), a("db.namespace", "app"),
		a("db.query.text", stmt), a("server.address", "127.0.0.1"), a("server.port", 3306))
}

// expressEntry adds a server span and Express's handler span under it;
// it returns the handler.
func (g *gen) expressEntry(parent int, svc, route string, status int, startMS, durMS float64) (server, handler int) {
	server = g.server(parent, svc, "GET", route, route, status, startMS, durMS)
	g.internal(server, svc, "middleware - <anonymous>", startMS, 0.05, a("express.type", "middleware"))
	handler = g.internal(server, svc, "request handler", startMS, durMS-0.3, a("express.type", "request_handler"), a("http.route", route))
	return server, handler
}

func init() {
	services["gateway"], services["orders"], services["inventory"] = "nodejs", "nodejs", "nodejs"

	// Four requests reserve the same stock row; each holds SELECT ... FOR
	// UPDATE across a 600 ms call, so the later ones hit MySQL's
	// innodb_lock_wait_timeout (1 s, error 1205) and orders answers 503.
	add("timeout_cascade", "positive-express-mysql-lock-wait-timeout", func() *gen {
		g := newGen(1901, false)
		root, gh := g.expressEntry(-1, "gateway", "/lock", 500, 0, 1299)
		g.fail(root, "", "")
		reserve := func(startMS, lockWaitMS float64, fail bool) {
			status := 200
			if fail {
				status = 503
			}
			total := lockWaitMS + 2
			if !fail {
				total += 620
			}
			c := g.client(gh, "gateway", "", "GET", "http://127.0.0.1:47202/reserve?fixed=0", status, startMS, total+1)
			_, h := g.expressEntry(c, "orders", "/reserve", status, startMS+1, total)
			g.mysql2Query(h, "orders", "START TRANSACTION", startMS+2, 0.2)
			sel := g.mysql2Query(h, "orders", "SELECT sku, qty FROM stock WHERE sku = ? FOR UPDATE", startMS+2, lockWaitMS)
			if fail {
				g.fail(sel, "Error", "Lock wait timeout exceeded; try restarting transaction")
				g.mysql2Query(h, "orders", "ROLLBACK", startMS+3+lockWaitMS, 0.3)
				return
			}
			p := g.client(h, "orders", "", "GET", "http://127.0.0.1:47204/slow?ms=600", 200, startMS+3+lockWaitMS, 612)
			g.expressEntry(p, "pricing", "/slow", 200, startMS+4+lockWaitMS, 610)
			g.mysql2Query(h, "orders", "UPDATE stock SET qty = qty - 1 WHERE sku = ?", startMS+616+lockWaitMS, 0.8)
			g.mysql2Query(h, "orders", "COMMIT", startMS+617+lockWaitMS, 0.4)
		}
		reserve(3, 0.8, false)
		reserve(22, 1003.7, true)
		reserve(41, 631.4, false)
		reserve(64, 1000.4, true)
		return g
	})

	// inventory's fetch gives orders 200 ms (AbortSignal.timeout) for a
	// query that sleeps 1 s; inventory answers 504 and so does the gateway,
	// whose own call waited 40 ms longer (the first request on a new
	// connection): one deadline, one cascade.
	add("timeout_cascade", "positive-express-fetch-abort-signal", func() *gen {
		g := newGen(1902, false)
		_, gh := g.expressEntry(-1, "gateway", "/timeout", 504, 0, 250)
		c := g.client(gh, "gateway", "", "GET", "http://127.0.0.1:47203/timeout?fixed=0", 504, 1, 243.4)
		g.set(c, a("error.type", "504"))
		_, ih := g.expressEntry(c, "inventory", "/timeout", 504, 40, 205.9)
		f := g.client(ih, "inventory", "", "GET", "http://127.0.0.1:47202/slowwork?ms=1000", 0, 42, 200.03)
		g.fail(f, "23", "The operation was aborted due to timeout")
		// undici names the DOMException by its legacy code; its stack says what it is.
		g.spans[f].Events[0].Attrs[2] = a("exception.stacktrace", "TimeoutError: The operation was aborted due to timeout\n"+
			"    at new DOMException (node:internal/per_context/domexception:53:5)\n"+
			"    at Timeout._onTimeout (node:internal/abort_controller:129:9)")
		_, oh := g.expressEntry(f, "orders", "/slowwork", 200, 48, 204)
		g.mysql2Query(oh, "orders", "SELECT SLEEP(?) AS s", 48, 1002.7)
		return g
	})

	// A transfer sleeps 100 ms between its two UPDATEs inside START
	// TRANSACTION ... COMMIT: both run on the transaction's connection, so
	// the gap is the app's own work with the row locks held, not a wait
	// for a pooled connection.
	add("idle_gap", "positive-work-inside-transaction", func() *gen {
		g := newGen(1903, false)
		_, h := g.expressEntry(-1, "orders", "/xfer", 200, 0, 107.4)
		g.mysql2Query(h, "orders", "START TRANSACTION", 1, 1.2)
		g.mysql2Query(h, "orders", "UPDATE accounts SET balance = balance - 1 WHERE id = ?", 3, 0.5)
		g.mysql2Query(h, "orders", "UPDATE accounts SET balance = balance + 1 WHERE id = ?", 104, 1.1)
		g.mysql2Query(h, "orders", "COMMIT", 106, 0.3)
		return g
	})

	// Ten concurrent requests share a mysql2 pool of 2 whose getConnection
	// nobody traces; each holds its connection across a 300 ms call, so
	// this one waited 310 ms (one call's length) before its first query.
	add("idle_gap", "positive-mysql2-untraced-checkout", func() *gen {
		g := newGen(1904, false)
		_, gh := g.expressEntry(-1, "gateway", "/pool", 200, 0, 652.3)
		c := g.client(gh, "gateway", "", "GET", "http://127.0.0.1:47202/pool?fixed=0", 200, 11, 640.9)
		_, h := g.expressEntry(c, "orders", "/pool", 200, 23, 625.6)
		g.mysql2Query(h, "orders", "SELECT id, total FROM orders WHERE id = ?", 333, 2.1)
		p := g.client(h, "orders", "", "GET", "http://127.0.0.1:47204/slow?ms=300", 200, 335, 306.7)
		g.expressEntry(p, "pricing", "/slow", 200, 340, 302.2)
		g.mysql2Query(h, "orders", "UPDATE orders SET total = total WHERE id = ?", 647, 1.4)
		return g
	})

	// Two transfers lock accounts 1 and 2 in opposite orders; InnoDB picks
	// inventory's as the deadlock victim (1213) and inventory restarts the
	// transaction, as MySQL asks.
	add("retry_storm", "positive-mysql-deadlock-retry", func() *gen {
		g := newGen(1905, false)
		_, gh := g.expressEntry(-1, "gateway", "/deadlock", 200, 0, 324.9)
		xfer := func(svc string, at float64, attempts int) {
			c := g.client(gh, "gateway", "", "GET", "http://127.0.0.1:47202/xfer?dir=ab", 200, at, 208.6+float64(attempts-1)*106)
			_, h := g.expressEntry(c, svc, "/xfer", 200, at+1, 207.4+float64(attempts-1)*106)
			st := at + 2
			for i := 1; i <= attempts; i++ {
				g.mysql2Query(h, svc, "START TRANSACTION", st, 1.1)
				g.mysql2Query(h, svc, "UPDATE accounts SET balance = balance - 1 WHERE id = ?", st+1, 0.5)
				upd := g.mysql2Query(h, svc, "UPDATE accounts SET balance = balance + 1 WHERE id = ?", st+102, 2.1)
				if i < attempts {
					g.fail(upd, "Error", "Deadlock found when trying to get lock; try restarting transaction")
					g.mysql2Query(h, svc, "ROLLBACK", st+105, 2.5)
					st += 108
					continue
				}
				g.mysql2Query(h, svc, "COMMIT", st+105, 0.3)
			}
		}
		xfer("orders", 2, 1)
		xfer("inventory", 15, 2)
		return g
	})

	// An N+1 whose every timestamp is a whole millisecond (an SDK or a
	// converter that keeps milliseconds): 150 sub-millisecond lookups read
	// 0 ms (120 of them) or 1 ms, 30 ms together, though the loop ran 104 ms.
	add("n_plus_one_query", "positive-whole-ms-mysql2-loop", func() *gen {
		g := newGen(1906, false)
		_, h := g.expressEntry(-1, "orders", "/n1", 200, 0, 112)
		g.mysql2Query(h, "orders", "SELECT id, total, customer_id FROM orders ORDER BY id LIMIT 150", 1, 2)
		at := 3.0
		for i := 0; i < 150; i++ {
			d := 0.0
			if i%5 == 0 {
				d = 1
			}
			g.mysql2Query(h, "orders", "SELECT id, name FROM customers WHERE id = ?", at, d)
			at += d
			if i%2 == 1 {
				at++
			}
		}
		return g
	})
}

package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// Shapes recorded from Go services instrumented with otelgrpc v0.72 and
// otelhttp: the current RPC conventions (rpc.system.name, the status code's
// name in rpc.response.status_code) and a server clock off by 80-120 ms.

func grpcSpan(id, parent byte, svc, method string, kind model.SpanKind, startMS, endMS float64, code string) model.Span {
	s := p1Span(id, parent, svc, method, kind, startMS, endMS,
		model.Attr{Key: "rpc.system.name", Value: model.Str("grpc")}, model.Attr{Key: "rpc.method", Value: model.Str(method)},
		model.Attr{Key: "rpc.response.status_code", Value: model.Str(code)})
	// otelgrpc marks every failed client span ERROR, but a server span only
	// for the codes that are the server's fault (not CANCELLED).
	if code != "OK" && (kind == model.KindClient || code != "CANCELLED") {
		s.StatusCode = model.StatusError
		s.StatusMessage = map[string]string{"DEADLINE_EXCEEDED": "context deadline exceeded", "CANCELLED": "context canceled"}[code]
	}
	return s
}

func httpServer(id, parent byte, svc, name string, startMS, endMS float64, status int64) model.Span {
	return p1Span(id, parent, svc, name, model.KindServer, startMS, endMS,
		model.Attr{Key: "http.request.method", Value: model.Str("GET")}, model.Attr{Key: "http.response.status_code", Value: model.Int(status)})
}

// sqlSpan is a span of otelsql over PostgreSQL; stmt "" for the pool's and
// the driver's own spans (reset_session, connect, commit).
func sqlSpan(id, parent byte, svc, name string, startMS, endMS float64, stmt string) model.Span {
	attrs := []model.Attr{{Key: "db.system", Value: model.Str("postgresql")}}
	if stmt != "" {
		attrs = append(attrs, model.Attr{Key: "db.query.text", Value: model.Str(stmt)})
	}
	return p1Span(id, parent, svc, name, model.KindClient, startMS, endMS, attrs...)
}

// A 400 ms deadline set at the gateway expires while pricing's query
// sleeps; gRPC propagates it, and which layer sees DEADLINE_EXCEEDED and
// which CANCELLED is a race. inventory's server span ended CANCELLED with
// its status unset: it did not answer successfully, it was abandoned.
func TestGRPCDeadlineThroughCancelledServer(t *testing.T) {
	spans := []model.Span{
		httpServer(1, 0, "gateway", "GET /cascade", 0, 402.6, 504),
		grpcSpan(2, 1, "gateway", "livego.Svc/Quote", model.KindClient, 0.5, 401.3, "DEADLINE_EXCEEDED"),
		grpcSpan(3, 2, "orders", "livego.Svc/Quote", model.KindServer, 1.4, 401.0, "DEADLINE_EXCEEDED"),
		grpcSpan(4, 3, "orders", "livego.Svc/Reserve", model.KindClient, 1.5, 401.0, "DEADLINE_EXCEEDED"),
		grpcSpan(5, 4, "inventory", "livego.Svc/Reserve", model.KindServer, 2.3, 401.8, "CANCELLED"),
		grpcSpan(6, 5, "inventory", "livego.Svc/Price", model.KindClient, 3.5, 401.8, "CANCELLED"),
		grpcSpan(7, 6, "pricing", "livego.Svc/Price", model.KindServer, 4.9, 402.5, "DEADLINE_EXCEEDED"),
		p1Span(8, 7, "pricing", "sql.conn.exec", model.KindClient, 9.3, 402.5,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")}, model.Attr{Key: "db.statement", Value: model.Str("SELECT pg_sleep($1)")}),
	}
	spans[7].StatusCode, spans[7].StatusMessage = model.StatusError, "context canceled"
	if c, ok := grpcStatus(&spans[1]); !ok || c != 4 || !IsTimeoutLike(&model.Span{Attrs: spans[1].Attrs}) {
		t.Fatalf("rpc.response.status_code DEADLINE_EXCEEDED read as %d, %v", c, ok)
	}
	tr := NewTrace(spans)
	fs := p1RunAll(tr, nil)
	if got := p1OfKind(fs, "swallowed_error"); len(got) != 0 {
		t.Errorf("an abandoned server span read as a success: %q", got[0].Title)
	}
	tc := p1OfKind(fs, "timeout_cascade")
	if len(tc) != 1 {
		t.Fatalf("want one cascade, got %d: %v", len(tc), p1Kinds(fs))
	}
	ev := tc[0].Evidence.(TimeoutCascadeEvidence)
	if ev.Origin.SpanID != spans[7].SpanID.String() || len(ev.Layers) != 8 {
		t.Errorf("cascade origin %s (%s) through %d layers, want the query through 8", ev.Origin.Operation, ev.Origin.SpanID, len(ev.Layers))
	}
	// The query took the time; the deadline that ran out was the
	// gateway's, propagated down with the calls.
	if ev.Budget == nil || ev.Budget.SpanID != spans[1].SpanID.String() || ev.TimeoutMS != 400.8 {
		t.Errorf("budget %+v, timeout %v ms: want the gateway's call and its 400.8 ms", ev.Budget, ev.TimeoutMS)
	}
}

// An HTTP call answered 200 whose server span sits 120 ms later than the
// call: the server's clock is ahead. The answer came before the call ended,
// so the server ran inside it; its subtree moves back, and no gap opens in
// the call. Without an answer (the caller timed out) a server that started
// with the call and ended later is a callee that ran on, and stays where
// it was recorded.
func TestSkewServerAfterAnsweredCall(t *testing.T) {
	build := func(status int64, start float64) []model.Span {
		return []model.Span{
			p1Span(1, 0, "inventory", "GET /lock", model.KindServer, 0, 215),
			p1Call(2, 1, 0.1, 201.6, "http://127.0.0.1:47204/slow", status),
			httpServer(3, 2, "pricing", "GET /slow", start, 321.3, 200),
			p1Span(4, 3, "pricing", "compute", model.KindInternal, start+0.5, 320),
		}
	}
	tr := NewTrace(build(200, 120.5))
	if tr.SkewShifted != 2 {
		t.Fatalf("%d spans moved, want the server and its child", tr.SkewShifted)
	}
	if s := p1Node(tr, 3); s.Start() < p1Node(tr, 2).Start() || s.End() > p1Node(tr, 2).End() {
		t.Errorf("server still outside its call after the correction")
	}
	if fs := p1RunAll(tr, nil); len(p1OfKind(fs, "idle_gap")) != 0 || len(p1OfKind(fs, "timeout_mismatch")) != 0 {
		t.Errorf("clock skew reported: %v", p1Kinds(fs))
	}
	tr = NewTrace(build(504, 0.5))
	if tr.SkewShifted != 0 {
		t.Errorf("a server under a call that timed out moved")
	}
}

// The gateway gives pricing 200 ms; pricing ignores the deadline and works
// 550 ms, and grpc-go then stamps its server span DEADLINE_EXCEEDED. The
// request failed when the gateway's deadline expired: that call is where
// the timeout starts, not the server that ended 350 ms later.
func TestTimeoutOriginIsTheCallerThatGaveUp(t *testing.T) {
	spans := []model.Span{
		httpServer(1, 0, "gateway", "GET /mismatch", 0, 201.2, 504),
		grpcSpan(2, 1, "gateway", "livego.Svc/Work", model.KindClient, 0.3, 201.0, "DEADLINE_EXCEEDED"),
		grpcSpan(3, 2, "pricing", "livego.Svc/Work", model.KindServer, 1.2, 552.9, "DEADLINE_EXCEEDED"),
		p1Span(4, 3, "pricing", "compute price table", model.KindInternal, 1.2, 501.8),
	}
	spans[0].StatusCode = model.StatusError
	fs := p1RunAll(NewTrace(spans), nil)
	eo := p1OfKind(fs, "error_origin")
	if len(eo) != 1 || eo[0].Evidence.(ErrorOriginEvidence).Origin.SpanID != spans[1].SpanID.String() {
		t.Fatalf("error_origin should start at the call that timed out: %+v", eo)
	}
	for _, f := range p1OfKind(fs, "timeout_cascade") {
		if o := f.Evidence.(TimeoutCascadeEvidence).Origin; o.SpanID != spans[1].SpanID.String() {
			t.Errorf("cascade starts at %s %s, not at the call that timed out", o.Service, o.Operation)
		}
	}
}

// After a cancelled query left a pooled connection broken, database/sql's
// ResetSession answers driver.ErrBadConn: the pool drops the connection,
// opens another and runs the statement there. The request was served;
// nothing was swallowed.
func TestBadConnectionRetriedByThePool(t *testing.T) {
	spans := []model.Span{
		grpcSpan(1, 0, "pricing", "livego.Svc/Price", model.KindServer, 0, 69.2, "OK"),
		sqlSpan(2, 1, "pricing", "sql.conn.reset_session", 0.03, 0.04, ""),
		sqlSpan(3, 1, "pricing", "sql.connector.connect", 0.1, 17.9, ""),
		sqlSpan(4, 1, "pricing", "sql.conn.exec", 18, 69, "SELECT pg_sleep($1)"),
	}
	spans[1].StatusCode = model.StatusError
	spans[1].Events = []model.Event{{Name: "exception", Attrs: model.Attrs{{Key: "exception.message", Value: model.Str("driver: bad connection")}}}}
	fs := p1RunAll(NewTrace(spans), nil)
	if got := p1OfKind(fs, "swallowed_error"); len(got) != 0 {
		t.Errorf("a connection the pool replaced read as a swallowed error: %q", got[0].Title)
	}
	// A failed statement followed by another statement is no retry of it,
	// nor is a query recorded without its text (otelsql can omit it).
	spans[1].Name = "sql.conn.query"
	if got := p1OfKind(p1RunAll(NewTrace(spans), nil), "swallowed_error"); len(got) != 1 {
		t.Errorf("a failed query without text under a successful answer: %d swallowed_error findings, want 1", len(got))
	}
	spans[1].Attrs = append(spans[1].Attrs, model.Attr{Key: "db.query.text", Value: model.Str("UPDATE prices SET price = 1")})
	if got := p1OfKind(p1RunAll(NewTrace(spans), nil), "swallowed_error"); len(got) != 1 {
		t.Errorf("a failed statement under a successful answer: %d swallowed_error findings, want 1", len(got))
	}
}

// heldAcrossCall checks the one lock_contention finding of a request that
// holds a connection or a row lock across its call to pricing (span 4),
// blamed on the handler (span 1), and returns all findings.
func heldAcrossCall(t *testing.T, spans []model.Span, mechanism, resource string, waitMS float64) []Finding {
	t.Helper()
	fs := mergeDuplicates(p1RunAll(NewTrace(spans), nil))
	lc := p1OfKind(fs, "lock_contention")
	if len(lc) != 1 {
		t.Fatalf("want one lock_contention, got %v", p1Kinds(fs))
	}
	ev := lc[0].Evidence.(LockContentionEvidence)
	if ev.Mechanism != mechanism || ev.Resource != resource || !p1Near(ev.WaitMS, waitMS, 0.5) || ev.HeldAcross == nil ||
		ev.HeldAcross.SpanID != spans[3].SpanID.String() || lc[0].Culprit.SpanID != spans[0].SpanID.String() {
		t.Errorf("evidence %+v, culprit %+v", ev, lc[0].Culprit)
	}
	return fs
}

// database/sql with SetMaxOpenConns(2): each request takes a connection
// (db.Conn), queries, calls pricing for 300 ms, and queries again on the
// same connection. The pool's wait is not traced: the handler sits idle
// until otelsql's sql.conn.reset_session marks the connection handed out.
// With each query taking its own connection (a reset before each) there
// is no holder, and the same idle time stays idle_gap's to guess at.
func TestDatabaseSQLPoolWaitBeforeReset(t *testing.T) {
	spans := []model.Span{
		httpServer(1, 0, "orders", "GET /pool", 0, 1518, 200),
		sqlSpan(2, 1, "orders", "sql.conn.reset_session", 1215.1, 1215.1, ""),
		sqlSpan(3, 1, "orders", "sql.conn.query", 1215.1, 1216.9, "SELECT sum(total) FROM orders"),
		p1Call(4, 1, 1216.9, 1517.6, "http://pricing/slow", 200),
		sqlSpan(5, 1, "orders", "sql.conn.exec", 1517.6, 1518, "UPDATE orders SET total = total WHERE id = 1"),
	}
	fs := heldAcrossCall(t, spans, "checkout_gap", "connection_pool", 1215.1)
	if len(p1OfKind(fs, "idle_gap")) != 0 {
		t.Errorf("the pool's wait reported twice, also as idle_gap")
	}
	// Each query with its own connection: a reset before the UPDATE too.
	spans = append(spans, sqlSpan(6, 1, "orders", "sql.conn.reset_session", 1517.6, 1517.6, ""))
	if got := p1OfKind(p1RunAll(NewTrace(spans), nil), "lock_contention"); len(got) != 0 {
		t.Errorf("no connection held, yet: %q", got[0].Title)
	}
}

// Five requests lock the same row (SELECT ... FOR UPDATE) and call pricing
// for 200 ms before the UPDATE and COMMIT: the last one's locking read
// waits 800 ms for the four before it. Calling pricing before the
// transaction leaves the lock held for a millisecond.
func TestLockingReadHeldAcrossCall(t *testing.T) {
	spans := []model.Span{
		httpServer(1, 0, "inventory", "GET /lock", 0, 1019.4, 200),
		sqlSpan(2, 1, "inventory", "sql.conn.begin_tx", 9.3, 9.5, ""),
		sqlSpan(3, 1, "inventory", "sql.conn.query", 9.5, 815.4, "SELECT price FROM prices WHERE sku = $1 FOR UPDATE"),
		p1Call(4, 1, 815.5, 1016.6, "http://pricing/slow", 200),
		sqlSpan(5, 1, "inventory", "sql.conn.exec", 1016.6, 1017.3, "UPDATE prices SET price = $1 WHERE sku = $2"),
		sqlSpan(6, 1, "inventory", "sql.tx.commit", 1017.3, 1017.6, ""),
	}
	fs := heldAcrossCall(t, spans, "locking_read", "lock", 805.9)
	if len(p1OfKind(fs, "slow_query")) != 0 {
		t.Errorf("the lock's wait also reported as slow_query")
	}
	// The call after the commit holds no lock. The UPDATE of the same sku
	// took 0.7 ms, so the locking read still waited for a row lock: only
	// the holder is no longer a call.
	spans[3].StartUnixNano, spans[3].EndUnixNano = spans[5].EndUnixNano+1e6, spans[5].EndUnixNano+200e6
	spans[0].EndUnixNano = spans[3].EndUnixNano + 1e6
	got := p1OfKind(p1RunAll(NewTrace(spans), nil), "lock_contention")
	if len(got) != 1 || got[0].Evidence.(LockContentionEvidence).Mechanism != "row_lock_queue" {
		t.Fatalf("want one row_lock_queue finding, got %d: %v", len(got), got)
	}
	// Without a later statement on the same lookup nothing says the read
	// waited: a slow locking read is then only a slow query.
	spans[4] = sqlSpan(5, 1, "inventory", "sql.conn.exec", 1016.6, 1017.3, "INSERT INTO price_log (sku, price) VALUES ($1, $2)")
	fs = p1RunAll(NewTrace(spans), nil)
	if got := p1OfKind(fs, "lock_contention"); len(got) != 0 {
		t.Errorf("no evidence of a wait, yet: %q", got[0].Title)
	}
	if len(p1OfKind(fs, "slow_query")) != 1 {
		t.Errorf("the slow locking read is not a slow_query: %v", p1Kinds(fs))
	}
}

// inventory's clock runs 120 ms behind: its server span is moved into the
// gateway's call. pricing's clock is right, so its server already sits in
// inventory's corrected call to it and must not inherit inventory's move:
// that put pricing 120 ms late, an idle gap in the call and a callee
// "running on" after a deadline it honoured.
func TestSkewOfCallerNotInheritedByCallee(t *testing.T) {
	spans := []model.Span{
		httpServer(1, 0, "gateway", "GET /cascade", 117.8, 521.1, 504),
		grpcSpan(2, 1, "gateway", "livego.Svc/Reserve", model.KindClient, 118, 520.9, "DEADLINE_EXCEEDED"),
		grpcSpan(3, 2, "inventory", "livego.Svc/Reserve", model.KindServer, 0, 402.3, "DEADLINE_EXCEEDED"),
		grpcSpan(4, 3, "inventory", "livego.Svc/Price", model.KindClient, 1.1, 402.3, "CANCELLED"),
		grpcSpan(5, 4, "pricing", "livego.Svc/Price", model.KindServer, 122.1, 521.7, "DEADLINE_EXCEEDED"),
		sqlSpan(6, 5, "pricing", "sql.conn.exec", 126.9, 521.7, "SELECT pg_sleep($1)"),
	}
	spans[5].StatusCode, spans[5].StatusMessage = model.StatusError, "context canceled"
	tr := NewTrace(spans)
	if tr.SkewShifted != 2 {
		t.Errorf("%d spans moved, want inventory's two", tr.SkewShifted)
	}
	fs := p1RunAll(tr, nil)
	if n := len(p1OfKind(fs, "timeout_mismatch")) + len(p1OfKind(fs, "idle_gap")); n != 0 {
		t.Errorf("the caller's clock blamed on its callee: %v", p1Kinds(fs))
	}
}

// pricing's clock runs 80 ms ahead. A deadline propagated with the call
// ends the call and the server at once, so a server exactly as long as its
// failed call but ending 80 ms after it is that call on another clock. A
// server that ignored the deadline starts with the call and ends later:
// that one ran on, and stays where it was stamped.
func TestSkewServerAsLongAsItsFailedCall(t *testing.T) {
	build := func(start, end float64) []model.Span {
		return []model.Span{
			grpcSpan(1, 0, "inventory", "livego.Svc/Reserve", model.KindServer, 0, 402, "DEADLINE_EXCEEDED"),
			grpcSpan(2, 1, "inventory", "livego.Svc/Price", model.KindClient, 3.5, 401.8, "CANCELLED"),
			grpcSpan(3, 2, "pricing", "livego.Svc/Price", model.KindServer, start, end, "DEADLINE_EXCEEDED"),
			sqlSpan(4, 3, "pricing", "sql.conn.exec", start+4, end, "SELECT pg_sleep($1)"),
		}
	}
	tr := NewTrace(build(84.9, 482.5))
	if got := p1OfKind(p1RunAll(tr, nil), "timeout_mismatch"); tr.SkewShifted != 2 || len(got) != 0 {
		t.Errorf("%d spans moved, %d timeout_mismatch: the clock offset read as an overrun", tr.SkewShifted, len(got))
	}
	// Zipkin's unfinished spans have no length: nothing to compare.
	unfinished := build(84.9, 84.9)
	unfinished[1].EndUnixNano = unfinished[1].StartUnixNano
	if tr := NewTrace(unfinished); tr.SkewShifted != 0 {
		t.Errorf("a server moved to match a call recorded without a length")
	}
	tr = NewTrace(build(4.9, 552))
	if got := p1OfKind(p1RunAll(tr, nil), "timeout_mismatch"); tr.SkewShifted != 0 || len(got) != 1 {
		t.Errorf("%d spans moved, %d timeout_mismatch: a server that ran on is no clock offset", tr.SkewShifted, len(got))
	}
}

package analyze

import (
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestIdleGapPositions(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "svc", "POST /x", model.KindServer, 0, 1000),
		p1Span(2, 1, "svc", "step", model.KindInternal, 300, 400),
		p1Span(3, 1, "svc", "step", model.KindInternal, 350, 420), // overlaps: no gap between 2 and 3
		p1Span(4, 1, "svc", "step", model.KindInternal, 430, 700),
	}
	got := NewIdleGap().Detect(NewTrace(spans), nil)
	pos := map[string]float64{}
	for _, f := range got {
		ev := f.Evidence.(IdleGapEvidence)
		pos[ev.Position] = ev.GapMS
	}
	if len(got) != 2 || pos["before_first_child"] != 300 || pos["after_last_child"] != 300 {
		t.Fatalf("gaps %v", pos)
	}
	// A child that outlives the parent covers up to the parent's end only.
	spans[3].EndUnixNano += 2000e6
	got = NewIdleGap().Detect(NewTrace(spans), nil)
	if len(got) != 1 || got[0].Evidence.(IdleGapEvidence).Position != "before_first_child" {
		t.Fatalf("outliving child: %+v", got)
	}
}

// SmartThings' recorded install flow: the page span ends, then the
// browser's next request arrives with the page's context. Before that
// request the page span has no child at all: no gap in it to report.
func TestIdleGapIgnoresChildrenAfterTheEnd(t *testing.T) {
	// Two pages, each followed by the browser's next request; the second
	// also makes a call inside it.
	var spans []model.Span
	for i, page := range []struct{ start, end, next float64 }{{0, 108, 258}, {1000, 1400, 9000}} {
		id := byte(1 + 3*i)
		spans = append(spans, p1Span(id, 0, "strongman", "post pages/install/page", model.KindServer, page.start, page.end),
			p1Span(id+1, id, "stLogin", "get /login", model.KindServer, page.next, page.next+128))
	}
	spans = append(spans, p1Span(3, 4, "strongman", "GET", model.KindClient, 1010, 1250))
	if got := NewIdleGap().Detect(NewTrace(spans), nil); len(got) != 1 || got[0].Evidence.(IdleGapEvidence).Position != "after_last_child" ||
		!p1Near(got[0].Evidence.(IdleGapEvidence).GapMS, 150, 0.01) {
		t.Fatalf("want only the 150 ms after the call inside the second page: %+v", got)
	}
}

// A Java service's first request after start: 400 ms of class loading,
// connecting and ORM set-up before the first query. Nothing shows a pool,
// so the gap is not blamed on one; a pool wait needs the query or the span
// to say so, or the service's other queries holding connections meanwhile.
func TestIdleGapPoolWaitNeedsEvidenceOfAPool(t *testing.T) {
	db := model.Attr{Key: "db.system", Value: model.Str("postgresql")}
	cold := []model.Span{
		p1Span(1, 0, "orders", "GET /orders", model.KindServer, 0, 600),
		p1Span(2, 1, "orders", "SELECT orders", model.KindClient, 400, 450, db),
		p1Span(3, 1, "orders", "SELECT items", model.KindClient, 450, 590, db),
	}
	cause := func(spans []model.Span) string {
		t.Helper()
		got := NewIdleGap().Detect(NewTrace(spans), nil)
		if len(got) != 1 || got[0].Evidence.(IdleGapEvidence).Position != "before_first_child" {
			t.Fatalf("want the one gap before the first query: %+v", got)
		}
		return got[0].Evidence.(IdleGapEvidence).LikelyCause
	}
	if c := cause(cold); c != "uninstrumented_work" {
		t.Errorf("cold start: cause %q, want uninstrumented_work", c)
	}
	// The query says it waited for a connection.
	waited := append([]model.Span(nil), cold...)
	waited[1].Attrs = append(waited[1].Attrs, model.Attr{Key: "db.client.connection.wait_time", Value: model.Int(380)})
	if c := cause(waited); c != "pool_wait" {
		t.Errorf("query that waited for a connection: cause %q, want pool_wait", c)
	}
	// A concurrent branch of the same service holds connections through the gap.
	busy := append(append([]model.Span(nil), cold...),
		p1Span(4, 0, "orders", "POST /export", model.KindServer, 0, 600),
		p1Span(5, 4, "orders", "SELECT export", model.KindClient, 10, 395, db))
	got := NewIdleGap().Detect(NewTrace(busy), nil)
	pool := 0
	for _, f := range got {
		if ev := f.Evidence.(IdleGapEvidence); ev.Span.SpanID == cold[0].SpanID.String() && ev.LikelyCause == "pool_wait" {
			pool++
		}
	}
	if pool != 1 {
		t.Errorf("connections held elsewhere through the gap: want a pool_wait on GET /orders: %+v", got)
	}
}

// A Nacos config client's background thread, recorded with the Java agent:
// its POST /nacos/v1/cs/configs/listener stays open 29.5 s while the config
// server's handler returned after 50 µs and parked the request until a key
// changes or the poll's timeout passes. That is the long poll working, not
// 29.5 s anybody could save. The same shape on an ordinary endpoint is
// still a gap.
func TestIdleGapLongPollIsNoGap(t *testing.T) {
	build := func(url, thread string) []model.Span {
		return []model.Span{
			p1Span(1, 0, "user-service", "HTTP POST", model.KindClient, 91, 29616,
				str("http.method", "POST"), str("http.url", url), str("thread.name", thread)),
			p1Span(2, 1, "config-server", url[strings.Index(url, "/nacos"):], model.KindServer, 0, 29524,
				str("http.method", "POST"), str("http.target", url[strings.Index(url, "/nacos"):])),
			p1Span(3, 2, "config-server", "ConfigController.listener", model.KindInternal, 0.4, 0.45),
		}
	}
	poll := "http://config-server:8848/nacos/v1/cs/configs/listener"
	if got := NewIdleGap().Detect(NewTrace(build(poll, "config.client.Worker.longPolling.fixed-config-server_8848")), nil); len(got) != 0 {
		t.Errorf("long poll: %d findings, first %q", len(got), got[0].Title)
	}
	// Only the thread says it: the server's target is marked on the client side.
	if got := NewIdleGap().Detect(NewTrace(build("http://config-server:8848/nacos/v1/cs/configs", "config.client.Worker.longPolling")), nil); len(got) != 0 {
		t.Errorf("long poll named by its thread: %d findings", len(got))
	}
	if got := NewIdleGap().Detect(NewTrace(build("http://config-server:8848/nacos/v1/cs/configs", "http-nio-8080-exec-3")), nil); len(got) != 1 {
		t.Errorf("ordinary request parked 29.5 s: %d findings, want the gap", len(got))
	}
}

// A Go SFTP server's trace, as kobs' Jaeger plugin keeps it: the root
// ssh.connection lasts 51 s and the one password attempt inside it comes
// after 49 s and is rejected. The connection's length is the peer's, not
// latency anybody could save, and the rejection was told to the peer, not
// swallowed. A root job with the same shape still has its gap.
func TestSessionSpanIsNoRequest(t *testing.T) {
	build := func(root string) []model.Span {
		auth := p1Span(2, 1, "csvupload", "ssh.auth.password", model.KindInternal, 49080, 51080)
		auth.StatusCode, auth.StatusMessage = model.StatusError, "password rejected for root"
		return []model.Span{p1Span(1, 0, "csvupload", root, model.KindInternal, 0, 51331,
			str("net.transport", "ip_tcp"), str("remoteAddress", "127.0.0.6:59219")), auth}
	}
	for _, name := range []string{"ssh.connection", "WebSocket session /chat"} {
		tr := NewTrace(build(name))
		if got := NewIdleGap().Detect(tr, nil); len(got) != 0 {
			t.Errorf("%s: idle_gap %q", name, got[0].Title)
		}
		if got := NewSwallowedError().Detect(tr, &Env{}); len(got) != 0 {
			t.Errorf("%s: swallowed_error %q", name, got[0].Title)
		}
	}
	// A root job, and a sign-in request whose route is called "session",
	// are requests: their gaps and swallowed failures are reported.
	login := build("POST /session")
	login[0].Kind = model.KindServer
	login[0].Attrs = append(login[0].Attrs, str("http.request.method", "POST"), str("http.route", "/session"))
	for what, spans := range map[string][]model.Span{"root job": build("ExportJob.run"), "sign-in": login} {
		tr := NewTrace(spans)
		if got := NewIdleGap().Detect(tr, nil); len(got) != 1 {
			t.Errorf("%s: %d idle gaps, want 1", what, len(got))
		}
		if got := NewSwallowedError().Detect(tr, &Env{}); len(got) != 1 {
			t.Errorf("%s: %d swallowed errors, want 1", what, len(got))
		}
	}
}

// A gRPC stream (a price subscription) stays open while its server sends
// an update now and then, each after a query: the silences between them
// are the stream waiting for news, recorded as one message event per
// update. A unary call of the same shape (one message each way) still has
// its gaps reported, and a streaming client call is no slow dependency.
func TestStreamingRPCIsNoGapNorSlowDependency(t *testing.T) {
	grpc := str("rpc.system", "grpc")
	build := func(messages int) []model.Span {
		spans := []model.Span{
			p1Span(1, 0, "web", "PriceFeed.run", model.KindInternal, 0, 20100),
			p1Span(2, 1, "web", "prices.v1.Prices/Subscribe", model.KindClient, 10, 20050, grpc, str("rpc.service", "prices.v1.Prices"),
				str("rpc.method", "Subscribe"), str("server.address", "prices")),
			p1Span(3, 2, "prices", "prices.v1.Prices/Subscribe", model.KindServer, 20, 20040, grpc, str("rpc.service", "prices.v1.Prices"),
				str("rpc.method", "Subscribe")),
		}
		for i := 0; i < 4; i++ {
			at := float64(100 + i*5000)
			spans = append(spans, p1Span(byte(4+i), 3, "prices", "SELECT prices", model.KindClient, at, at+30,
				str("db.system", "postgresql"), str("db.statement", "SELECT sku, price FROM prices WHERE updated_at > $1")))
		}
		for i := 0; i < messages; i++ {
			ev := model.Event{Name: "message", TimeUnixNano: spans[2].StartUnixNano + uint64(i)*4_000_000_000,
				Attrs: model.Attrs{{Key: "message.type", Value: model.Str("SENT")}, {Key: "message.id", Value: model.Int(int64(i + 1))}}}
			spans[2].Events = append(spans[2].Events, ev)
			ev.Attrs = model.Attrs{{Key: "message.type", Value: model.Str("RECEIVED")}, {Key: "message.id", Value: model.Int(int64(i + 1))}}
			spans[1].Events = append(spans[1].Events, ev)
		}
		return spans
	}
	stream := NewTrace(build(5))
	if got := NewIdleGap().Detect(stream, nil); len(got) != 0 {
		t.Errorf("stream: idle_gap %q", got[0].Title)
	}
	if got := NewSlowDependency().Detect(NewTrace(build(5)[:2]), nil); len(got) != 0 {
		t.Errorf("stream: slow_dependency %q", got[0].Title)
	}
	unary := NewTrace(build(1))
	if got := NewIdleGap().Detect(unary, nil); len(got) == 0 {
		t.Error("unary call parked 20 s: no idle gap")
	}
	if got := NewSlowDependency().Detect(NewTrace(build(1)[:2]), nil); len(got) == 0 {
		t.Error("unary leaf call of 20 s: no slow dependency")
	}
}

// Two Flask services on two nodes (Collector file export): checkout's
// 385 ms call to email-service was answered by a 300 ms handler whose host
// clock ran 5.5 s behind. Read as recorded, the call had no child in its
// window (an idle gap of all of it) and the trace seemed to last 6 s. The
// handler belongs inside the call; checkout's own 1.9 s before the call
// is still reported.
func TestIdleGapAcrossSkewedClocks(t *testing.T) {
	for _, skew := range []float64{-5500, 0} {
		spans := []model.Span{
			p1Span(1, 0, "checkout", "/checkout/", model.KindServer, 6000, 8345, str("http.route", "/checkout/")),
			p1Span(2, 1, "checkout", "HTTP POST", model.KindClient, 7934, 8319,
				str("http.url", "http://email-service/email/"), str("http.method", "POST")),
			p1Span(3, 2, "email", "/email/", model.KindServer, 7975+skew, 8275+skew, str("http.route", "/email/")),
		}
		tr := NewTrace(spans)
		if tr.Duration() != 2345e6 {
			t.Errorf("skew %v: trace lasts %d ns, want the root's 2345 ms", skew, tr.Duration())
		}
		if want := map[bool]int{true: 1, false: 0}[skew != 0]; tr.SkewShifted != want {
			t.Errorf("skew %v: %d spans moved, want %d", skew, tr.SkewShifted, want)
		}
		if spans[2].StartUnixNano != uint64(p1Span(3, 2, "email", "", model.KindServer, 7975+skew, 0).StartUnixNano) {
			t.Errorf("skew %v: the caller's span was modified", skew)
		}
		fs := NewIdleGap().Detect(tr, &Env{})
		if len(fs) != 1 || fs[0].Evidence.(IdleGapEvidence).Span.SpanID != spans[0].SpanID.String() {
			t.Errorf("skew %v: want one gap, in checkout's handler: %d findings", skew, len(fs))
		}
	}
}

// A handler starts a job on another service (202 Accepted), asks for its
// status (202 again: not done), sleeps a second and asks again (200). The
// second between the polls is the poll's interval, waiting for the job;
// the same shape after a failed attempt is a retry's backoff. Neither is a
// lock or a thread, and the place to look is the service called.
func TestIdleGapBetweenPollsAndBeforeRetry(t *testing.T) {
	call := func(id byte, method, path string, startMS, endMS float64, code int64) []model.Span {
		c := p1Span(id, 1, "orders-fn", method, model.KindClient, startMS, endMS, str("http.request.method", method),
			str("url.full", "http://127.0.0.1:17071"+path), str("server.address", "127.0.0.1"),
			model.Attr{Key: "http.response.status_code", Value: model.Int(code)})
		if code >= 500 {
			c.StatusCode = model.StatusError
		}
		return []model.Span{c, p1Span(id+1, id, "orders-fn", "TCPConnector.connect", model.KindClient, startMS+0.3, startMS+0.8)}
	}
	build := func(firstPoll int64) []model.Span {
		spans := []model.Span{p1Span(1, 0, "orders-fn", "GET /api/export", model.KindServer, 0, 1050,
			str("http.request.method", "GET"), str("http.route", "/api/export"))}
		spans = append(spans, call(10, "POST", "/jobs/export", 0.2, 36, 202)...)
		spans = append(spans, call(20, "GET", "/jobs/instances/e9526e0b78dd42a3b4226c2b62dbfb4b", 36.5, 44.6, firstPoll)...)
		return append(spans, call(30, "GET", "/jobs/instances/e9526e0b78dd42a3b4226c2b62dbfb4b", 1046, 1049, 200)...)
	}
	for _, c := range []struct {
		firstPoll int64
		cause     string
	}{{202, "poll_interval"}, {503, "retry_backoff"}} {
		// The idle gap detector alone: a retry's backoff is reported as
		// part of its retry storm (see TestIdleGapLoopItemIsNoRetry).
		gaps := Analyze(build(c.firstPoll), Options{Detectors: []Detector{NewIdleGap()}}).Findings
		if len(gaps) != 1 {
			t.Fatalf("first poll %d: %d idle gaps", c.firstPoll, len(gaps))
		}
		ev := gaps[0].Evidence.(IdleGapEvidence)
		if ev.LikelyCause != c.cause || strings.Contains(gaps[0].Title, "lock") {
			t.Errorf("first poll %d: cause %s, title %q", c.firstPoll, ev.LikelyCause, gaps[0].Title)
		}
		if cu := gaps[0].Culprit; cu == nil || !strings.Contains(cu.Operation, "/jobs/instances/{id}") {
			t.Errorf("first poll %d: culprit %+v, want the polled status call", c.firstPoll, cu)
		}
	}
}

// A sync job walks its items: the update of item 41 fails, the job logs
// it, spends 300 ms on work nobody traced and goes on with item 42. The
// second call is the loop's next item, not a retry of the first, so the
// gap between them is no backoff; only the same request sent again is.
func TestIdleGapLoopItemIsNoRetry(t *testing.T) {
	put := func(id byte, item string, startMS, endMS float64, code int64) model.Span {
		c := p1Span(id, 1, "sync-job", "PUT", model.KindClient, startMS, endMS, str("http.request.method", "PUT"),
			str("url.full", "http://inventory:8080/items/"+item), str("server.address", "inventory"),
			model.Attr{Key: "http.response.status_code", Value: model.Int(code)})
		if code >= 500 {
			c.StatusCode = model.StatusError
		}
		return c
	}
	query := func(id byte, item string, startMS, endMS float64, failed bool) model.Span {
		q := p1Span(id, 1, "sync-job", "UPDATE stock", model.KindClient, startMS, endMS, str("db.system", "postgresql"),
			str("db.statement", "UPDATE stock SET n = n - 1 WHERE item = $1"), str("db.query.parameter.0", item))
		if failed {
			q.StatusCode = model.StatusError
		}
		return q
	}
	root := p1Span(1, 0, "sync-job", "sync", model.KindServer, 0, 400)
	for _, c := range []struct {
		name       string
		first, nxt model.Span
		retry      bool
	}{
		{"next item", put(2, "41", 10, 40, 503), put(3, "42", 340, 380, 200), false},
		{"same item again", put(2, "41", 10, 40, 503), put(3, "41", 340, 380, 200), true},
		{"next row", query(2, "41", 10, 40, true), query(3, "42", 340, 380, false), false},
		{"same row again", query(2, "41", 10, 40, true), query(3, "41", 340, 380, false), true},
	} {
		var causes []string
		for _, f := range NewIdleGap().Detect(NewTrace([]model.Span{root, c.first, c.nxt}), nil) {
			causes = append(causes, f.Evidence.(IdleGapEvidence).LikelyCause)
		}
		if len(causes) != 1 || (causes[0] == "retry_backoff") != c.retry {
			t.Errorf("%s: idle gap causes %v, retry %v", c.name, causes, c.retry)
		}
		// Reported, a retry's backoff is part of the retry storm (which
		// counts its wasted time); the gap before a loop's next item stays.
		kinds := map[string]bool{}
		for _, f := range Analyze([]model.Span{root, c.first, c.nxt}, Options{}).Findings {
			kinds[f.Kind] = true
		}
		if kinds["retry_storm"] != c.retry || kinds["idle_gap"] == c.retry {
			t.Errorf("%s: findings %v, retry %v", c.name, kinds, c.retry)
		}
	}
}

// A report endpoint queues a render task without tracing the publish and
// blocks on its result; the worker's CONSUMER span is its child. The task
// sat 1.2 s in the "renders" queue before a worker took it: the request
// waited for that, and the gap names the queue and the worker. A task
// the request does not wait for (its consumer runs on long after the
// response) leaves the request nothing to report.
func TestIdleGapWaitForQueuedTask(t *testing.T) {
	build := func(taskEndMS float64) []model.Span {
		return []model.Span{
			p1Span(1, 0, "reports-api", "GET /reports/{id}", model.KindServer, 0, 1250),
			p1Span(2, 1, "render-worker", "render_pdf", model.KindConsumer, 1200, taskEndMS,
				str("messaging.system", "celery"), str("messaging.destination.name", "renders")),
		}
	}
	var gaps []Finding
	for _, f := range Analyze(build(1249.5), Options{}).Findings {
		if f.Kind == "idle_gap" {
			gaps = append(gaps, f)
		}
	}
	if len(gaps) != 1 {
		t.Fatalf("%d idle gaps, want the wait for the queued task", len(gaps))
	}
	ev := gaps[0].Evidence.(IdleGapEvidence)
	if ev.LikelyCause != "queueing" || !strings.Contains(ev.CauseText, "renders") || ev.After == nil || ev.After.Service != "render-worker" {
		t.Errorf("cause %s %q, after %+v", ev.LikelyCause, ev.CauseText, ev.After)
	}
	if cu := gaps[0].Culprit; cu == nil || cu.Service != "render-worker" {
		t.Errorf("culprit %+v, want the worker", cu)
	}
	for _, f := range Analyze(build(2600), Options{}).Findings {
		if f.Kind == "idle_gap" {
			t.Errorf("a task nobody waited for: %q", f.Title)
		}
	}
}

// A page of Data Prepper's span index holds part of a trace: the order
// service's handler shows its first and last calls, 104 ms apart, and the
// database spans the two calls between them reached are there without
// their parents. The gap is where the lost calls ran, not idle time; with
// no orphan inside it, it still is a gap.
func TestIdleGapWhereLostSpansRan(t *testing.T) {
	post := func(id, parent byte, start, end float64, url string) model.Span {
		return p1Span(id, parent, "order", "HTTP POST", model.KindClient, start, end,
			str("http.method", "POST"), str("http.url", url), model.Attr{Key: "http.status_code", Value: model.Int(200)})
	}
	spans := []model.Span{
		p1Span(1, 0, "frontend-client", "client_create_order", model.KindInternal, 0, 161),
		p1Span(2, 1, "order", "update_order", model.KindServer, 2.5, 153.4),
		post(3, 2, 3.6, 39.8, "http://localhost:8083/add_item_to_cart"),
		post(4, 2, 143.8, 148.1, "http://localhost:8087/logs"),
		p1Span(5, 90, "database", "addItemToCart", model.KindServer, 45, 73.9),
		p1Span(6, 91, "database", "addItemToCart", model.KindServer, 84.2, 113.1),
	}
	if got := NewIdleGap().Detect(NewTrace(spans), nil); len(got) != 0 {
		t.Errorf("a gap where lost calls ran: %s", got[0].Title)
	}
	if got := NewIdleGap().Detect(NewTrace(spans[:4]), nil); len(got) != 1 {
		t.Errorf("the same gap with nothing lost: %d findings", len(got))
	}
}

// djangoConnect is a Django view that opens a new MySQL connection for the
// request: GET /books/ > index > connect (span 3), whose session set-up
// queries (4, 5) start 1.6 s in, then the view's query (6).
func djangoConnect() []model.Span {
	db := model.Attr{Key: "db.system", Value: model.Str("mysql")}
	return []model.Span{
		p1Span(1, 0, "books", "GET /books/", model.KindServer, 0, 2300),
		p1Span(2, 1, "books", "index", model.KindInternal, 1, 2299),
		p1Span(3, 2, "books", "connect", model.KindClient, 2, 1960, db),
		p1Span(4, 3, "books", "SELECT VERSION()", model.KindClient, 1620, 1790, db),
		p1Span(5, 3, "books", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", model.KindClient, 1791, 1955, db),
		p1Span(6, 2, "books", "SELECT books", model.KindClient, 1961, 2290, db),
	}
}

// A Django view that opens a new MySQL connection for the request: the
// driver's "connect" span spends 1.6 s on the handshake before the two
// session set-up queries it runs on the new connection. That time is the
// connecting, not a wait for a pooled connection: the connect span holds
// no other connection, and there is no pool to wait for.
func TestIdleGapInsideAConnectIsConnectionSetup(t *testing.T) {
	spans := djangoConnect()
	tr := NewTrace(spans)
	var gap *Finding
	for _, f := range NewIdleGap().Detect(tr, nil) {
		if f.Evidence.(IdleGapEvidence).Span.SpanID == spans[2].SpanID.String() {
			gap = &f
		}
	}
	if gap == nil {
		t.Fatal("no idle_gap inside connect")
	}
	if ev := gap.Evidence.(IdleGapEvidence); ev.LikelyCause != "connection_setup" {
		t.Fatalf("cause %q (%s), want connection_setup", ev.LikelyCause, ev.CauseText)
	}
	if c := idleGapCulprit(tr, gap); c == nil || !strings.HasSuffix(c.Operation, "connect") || !strings.Contains(c.Reason, "new database connection") {
		t.Errorf("culprit %+v", c)
	}
	// A pool checkout is not a connect: its time before the new
	// connection's span is a wait for a free member.
	spans[2].Name = "pg-pool.connect"
	for _, f := range NewIdleGap().Detect(NewTrace(spans), nil) {
		if f.Evidence.(IdleGapEvidence).LikelyCause == "connection_setup" {
			t.Errorf("pool checkout read as connection set-up: %s", f.Title)
		}
	}
}

// A gap after a cache read is a wait for another request's fetch only
// when nothing in the trace fetches or writes the key afterwards.
func TestIdleGapSharedFetchNeedsNoFetchOfItsOwn(t *testing.T) {
	redis := func(id byte, start, end float64, stmt string, attrs ...model.Attr) model.Span {
		return p1Span(id, 1, "shop", strings.ToLower(strings.Fields(stmt)[0]), model.KindClient, start, end,
			append(attrs, model.Attr{Key: "db.system.name", Value: model.Str("redis")}, model.Attr{Key: "db.query.text", Value: model.Str(stmt)})...)
	}
	cause := func(spans ...model.Span) string {
		t.Helper()
		got := NewIdleGap().Detect(NewTrace(append([]model.Span{p1Span(1, 0, "shop", "GET /catalog", model.KindServer, 0, 400)}, spans...)), nil)
		if len(got) != 1 {
			t.Fatalf("%d idle gaps, want 1", len(got))
		}
		return got[0].Evidence.(IdleGapEvidence).LikelyCause
	}
	if c := cause(redis(2, 0, 1, "get catalog:all")); c != "shared_fetch_wait" {
		t.Errorf("read then nothing: %s", c)
	}
	// Coalescing is the fix of a stampede: the wait is informational, the
	// fetch's own trace carries the warning. Other gaps keep theirs.
	root := p1Span(1, 0, "shop", "GET /catalog", model.KindServer, 0, 400)
	if got := NewIdleGap().Detect(NewTrace([]model.Span{root, redis(2, 0, 1, "get catalog:all")}), nil); len(got) != 1 || got[0].Severity != SeverityInfo {
		t.Errorf("a single-flight waiter: %+v", got)
	}
	if got := NewIdleGap().Detect(NewTrace([]model.Span{root, redis(2, 0, 1, "set catalog:all x")}), nil); len(got) != 1 || got[0].Severity == SeverityInfo {
		t.Errorf("uninstrumented work after a write: %+v", got)
	}
	// Its own write-back of the key after the gap: the value was computed here.
	if c := cause(redis(2, 0, 1, "get catalog:all"), redis(3, 390, 395, "set catalog:all [3 other arguments]")); c == "shared_fetch_wait" {
		t.Error("a request that wrote the key back was said to wait for another's fetch")
	}
	// A lookup that says it hit.
	if c := cause(redis(2, 0, 1, "get catalog:all", model.Attr{Key: "cache.hit", Value: model.Bool(true)})); c == "shared_fetch_wait" {
		t.Error("a cache hit was said to wait for another's fetch")
	}
}

// Under a busy Node process, orders' call to payments ended 151 ms after
// payments answered: the answer waited for orders to read it. That is no
// work nobody instrumented.
func TestIdleGapAfterTheCalleeAnswered(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "orders", "GET /order", model.KindServer, 0, 200),
		p1Span(2, 1, "orders", "GET", model.KindClient, 5, 180, model.Attr{Key: "http.response.status_code", Value: model.Int(200)}),
		p1Span(3, 2, "payments", "GET /pay", model.KindServer, 7, 29),
	}
	got := NewIdleGap().Detect(NewTrace(spans), nil)
	if len(got) != 1 {
		t.Fatalf("%d gaps, want 1", len(got))
	}
	ev := got[0].Evidence.(IdleGapEvidence)
	if ev.Position != "after_last_child" || ev.LikelyCause != "network_or_queueing" || !strings.Contains(ev.CauseText, "after payments answered") ||
		!strings.Contains(got[0].Fix, "orders was busy") {
		t.Errorf("evidence %+v fix %q", ev, got[0].Fix)
	}
}

// node-postgres traces every checkout (pg-pool.connect). A gap after a
// checkout, or between two queries of a request whose checkouts are
// traced, is time with a connection in hand: no wait for one. Without
// checkout spans, a gap between two queries may still be that wait.
func TestIdleGapAfterTracedCheckoutIsNoPoolWait(t *testing.T) {
	db := model.Attr{Key: "db.system", Value: model.Str("postgresql")}
	spans := []model.Span{
		p1Span(1, 0, "inventory", "GET /reserve", model.KindServer, 0, 300),
		p1Span(2, 1, "inventory", "pg-pool.connect", model.KindClient, 1, 2, db),
		p1Span(3, 1, "inventory", "pg.query:SELECT", model.KindClient, 2, 4, db, str("db.statement", "SELECT 2")),
		p1Span(4, 1, "inventory", "pg.query:UPDATE", model.KindClient, 250, 252, db, str("db.statement", "UPDATE t SET a = 1")),
	}
	cause := func(spans []model.Span) string {
		t.Helper()
		got := NewIdleGap().Detect(NewTrace(spans), nil)
		if len(got) != 1 {
			t.Fatalf("want one gap: %+v", got)
		}
		return got[0].Evidence.(IdleGapEvidence).LikelyCause
	}
	if c := cause(spans); c != "uninstrumented_work" {
		t.Errorf("between two queries after a traced checkout: %q", c)
	}
	if c := cause([]model.Span{spans[0], spans[1], spans[3]}); c != "uninstrumented_work" {
		t.Errorf("right after a traced checkout: %q", c)
	}
	if c := cause([]model.Span{spans[0], spans[2], spans[3]}); c != "pool_wait" {
		t.Errorf("no checkout spans, two queries around the gap: %q, want pool_wait", c)
	}
}

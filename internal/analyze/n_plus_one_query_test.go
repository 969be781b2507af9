package analyze

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestNPlusOneBindParamsAndIdenticalLiterals(t *testing.T) {
	build := func(stmt func(i int) string, concurrent bool) *Trace {
		spans := []model.Span{p1Span(1, 0, "stock", "GET /x", model.KindServer, 0, 200)}
		for i := 0; i < 8; i++ {
			st := 10 + float64(i)*12
			if concurrent {
				st = 10
			}
			spans = append(spans, p1DB(byte(10+i), 1, st, st+10, stmt(i)))
		}
		return NewTrace(spans)
	}
	d := NewNPlusOneQuery()
	// Literals differ: a loop.
	if got := d.Detect(build(func(i int) string { return fmt.Sprintf("SELECT * FROM t WHERE id = %d", i) }, false), nil); len(got) != 1 {
		t.Fatalf("differing literals: %d findings", len(got))
	}
	// Bind markers hide the parameters: trust the shape.
	if got := d.Detect(build(func(int) string { return "SELECT * FROM t WHERE id = $1" }, false), nil); len(got) != 1 {
		t.Fatalf("bind params: %d findings", len(got))
	}
	// The very same literal text 8 times is not a loop over a list.
	if got := d.Detect(build(func(int) string { return "SELECT * FROM config WHERE k = 'tz'" }, false), nil); len(got) != 0 {
		t.Fatalf("identical literal statements reported")
	}
	// Concurrent repetitions: the loop costs one query on the critical
	// path, so batching saves about nothing.
	got := d.Detect(build(func(i int) string { return fmt.Sprintf("SELECT * FROM t WHERE id = %d", i) }, true), nil)
	if len(got) != 1 || got[0].ImpactMS != 0 || got[0].Evidence.(NPlusOneEvidence).CriticalMS != 10 {
		t.Fatalf("concurrent: %+v", got)
	}
}

// The batching advice speaks the store's language: a cache has no JOIN.
func TestNPlusOneAdviceFollowsDBSystem(t *testing.T) {
	for system, want := range map[string]string{
		"redis": "MGET", "memcached": "multi-get", "mongodb": "$in", "dynamodb": "BatchGetItem", "postgresql": "WHERE id IN",
	} {
		spans := []model.Span{p1Span(1, 0, "cart", "GET /cart", model.KindServer, 0, 200)}
		for i := 0; i < 8; i++ {
			st := 10 + float64(i)*12
			s := p1DB(byte(10+i), 1, st, st+10, fmt.Sprintf("GET product:%d", 1000+i))
			for j := range s.Attrs {
				if s.Attrs[j].Key == "db.system" || s.Attrs[j].Key == "db.system.name" {
					s.Attrs[j].Value = model.Str(system)
				}
			}
			spans = append(spans, s)
		}
		got := NewNPlusOneQuery().Detect(NewTrace(spans), nil)
		if len(got) != 1 {
			t.Fatalf("%s: %d findings", system, len(got))
		}
		if !strings.Contains(got[0].Fix, want) {
			t.Errorf("%s: fix %q lacks %q", system, got[0].Fix, want)
		}
		if system != "postgresql" && strings.Contains(got[0].Fix, "JOIN") {
			t.Errorf("%s: SQL advice %q", system, got[0].Fix)
		}
	}
}

// opentelemetry_ecto 1.0, as the OTel demo's featureflagservice runs it,
// marks its queries with OpenTracing's db.type "sql" and no db.system: a
// loop of them is an N+1 like any other.
func TestNPlusOneQueryEctoDBType(t *testing.T) {
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	spans := []model.Span{p1Span(1, 0, "featureflagservice", "/featureflags/:id", model.KindServer, 0, 120)}
	for i := 0; i < 8; i++ {
		st := 5 + float64(i)*13
		spans = append(spans, p1Span(byte(2+i), 1, "featureflagservice", "featureflagservice.repo.query:featureflags", model.KindClient, st, st+12,
			str("db.type", "sql"), str("db.instance", "ffs"), str("db.url", "ecto://ffs_postgres"), str("source", "featureflags"),
			str("db.statement", fmt.Sprintf(`SELECT f0."id", f0."enabled" FROM "featureflags" AS f0 WHERE (f0."id" = %d)`, 100+i))))
	}
	tr := NewTrace(spans)
	if got := NewNPlusOneQuery().Detect(tr, nil); len(got) != 1 {
		t.Fatalf("want one N+1 over the 8 Ecto queries, got %d", len(got))
	}
	if s := DBSystem(tr.Nodes[1].Span); s != "sql" {
		t.Errorf("db system %q, want the db.type", s)
	}
}

// A Java agent that predates both OTel and OpenTracing's database tags
// (a recorded "traceshop" orderservice): each JDBC statement is a CLIENT
// span named jdbc.preparedstatement.execute with the SQL in sql.query and
// the JDBC URL in sql.url, and nothing else says it is a database call.
// Seventeen updates of one shape under one handler are a loop of queries,
// not a fan-out to an unknown peer.
func TestNPlusOneQueryLegacySQLTags(t *testing.T) {
	spans := []model.Span{p1Span(1, 0, "orderservice", "vertx.http.entry", model.KindServer, 0, 200)}
	for i := range 17 {
		at := 10 + float64(i)*10
		spans = append(spans, p1Span(byte(2+i), 1, "orderservice", "jdbc.preparedstatement.execute", model.KindClient, at, at+8,
			str("sql.url", "jdbc:mysql://mysql:3306/shop"),
			str("sql.query", "update shop.order set created=?, shipping_cost=? where id=?")))
	}
	tr := NewTrace(spans)
	if n := tr.Nodes[1]; !IsDB(n) || DBSystem(n.Span) != "mysql" || DBShape(n.Span) != "update shop.order set created=?, shipping_cost=? where id=?" {
		t.Fatalf("not read as a database call: db %v system %q shape %q", IsDB(n), DBSystem(n.Span), DBShape(n.Span))
	}
	if fs := NewNPlusOneQuery().Detect(tr, &Env{}); len(fs) != 1 {
		t.Errorf("%d n_plus_one_query findings, want 1", len(fs))
	}
	if fs := NewFanOut().Detect(tr, &Env{}); len(fs) != 0 {
		t.Errorf("reported as a fan-out: %s", fs[0].Title)
	}
	r := p1Span(30, 1, "dataservice", "reactive.redis.exit", model.KindClient, 0, 3,
		str("redis.command", "KEYS"), str("redis.args", "key<product_*>"))
	if DBSystem(&r) != "redis" || DBStatement(&r) != "KEYS key<product_*>" {
		t.Errorf("redis.command read as %q %q", DBSystem(&r), DBStatement(&r))
	}
}

// A seeding command reads a few random parents, then saves one row per
// item: a loop of INSERTs with bind markers, the same for UPDATE and
// DELETE. Batching a write loop is a bulk statement, not the IN-list or
// JOIN that batches reads (the read before it is no list to join).
func TestNPlusOneWriteLoopAdvisesBulkWrite(t *testing.T) {
	for stmt, want := range map[string]string{
		`insert into "offers" ("agent_id", "price", "property_id") values (?, ?, ?)`: "multi-row INSERT",
		`UPDATE stock SET qty = $1 WHERE sku = $2`:                                   "one UPDATE",
		`delete from "migrations" where "migration" = ?`:                             "one DELETE",
	} {
		spans := loopAfterQuery(p1Span(1, 0, "shop-cli", "Command db:seed", model.KindInternal, 0, 400),
			`select * from "properties" order by RANDOM() limit ?`, stmt, 12)
		got := NewNPlusOneQuery().Detect(NewTrace(spans), nil)
		if len(got) != 1 {
			t.Fatalf("%s: %d findings", stmt, len(got))
		}
		ev := got[0].Evidence.(NPlusOneEvidence)
		if !strings.Contains(got[0].Fix, want) || strings.Contains(got[0].Fix, "IN (...) or a JOIN") ||
			!strings.Contains(ev.Hint, want) {
			t.Errorf("%s: fix %q hint %q, want %q", stmt, got[0].Fix, ev.Hint, want)
		}
	}
	// A document store's update loop keeps the store's own advice.
	spans := []model.Span{p1Span(1, 0, "shop-cli", "Command db:seed", model.KindInternal, 0, 400)}
	for i := 0; i < 12; i++ {
		st := 20 + float64(i)*12
		spans = append(spans, p1Span(byte(10+i), 1, "shop-cli", "update", model.KindClient, st, st+10,
			str("db.system", "mongodb"), str("db.operation", "update"), str("db.mongodb.collection", "offers")))
	}
	if got := NewNPlusOneQuery().Detect(NewTrace(spans), nil); len(got) != 1 || !strings.Contains(got[0].Fix, "$in") {
		t.Errorf("mongodb update loop: %+v", got)
	}
}

// An import job looks up its batch, then writes each item with its own
// statement. The title says what the loop does, writing row by row; the
// lookup before it is no list the writes walk. A loop of reads after the
// same lookup keeps its "after 1 list query".
func TestNPlusOneWriteLoopTitle(t *testing.T) {
	title := func(stmt string) string {
		spans := loopAfterQuery(p1Span(1, 0, "importer", "import batch", model.KindInternal, 0, 500),
			`SELECT id FROM batches WHERE state = $1`, stmt, 15)
		got := NewNPlusOneQuery().Detect(NewTrace(spans), nil)
		if len(got) != 1 {
			t.Fatalf("%s: %d findings", stmt, len(got))
		}
		return got[0].Title
	}
	for stmt, want := range map[string]string{
		`UPDATE items SET state = $1 WHERE id = $2`:     "UPDATEs, one row at a time",
		`INSERT INTO lines (item, qty) VALUES ($1, $2)`: "INSERTs, one row at a time",
		`DELETE FROM staged WHERE id = $1`:              "DELETEs, one row at a time",
		`SELECT * FROM items WHERE id = $1`:             "queries of the same shape after 1 list query",
	} {
		if got := title(stmt); !strings.Contains(got, want) || (!strings.HasPrefix(stmt, "SELECT") && strings.Contains(got, "list query")) {
			t.Errorf("%s: title %q, want %q", stmt, got, want)
		}
	}
}

// loopAfterQuery: under parent, one query (5-15 ms), then n statements
// stmt of 10 ms each, one after the other.
func loopAfterQuery(parent model.Span, first, stmt string, n int) []model.Span {
	spans := []model.Span{parent, p1DB(2, 1, 5, 15, first)}
	for i := 0; i < n; i++ {
		st := 20 + float64(i)*12
		spans = append(spans, p1DB(byte(10+i), 1, st, st+10, stmt))
	}
	return spans
}

// npoNodePgLoop is an Express handler walking a list with node-postgres'
// pool.query: each row is a pg-pool.connect checkout, then its pg.query,
// on whole-millisecond starts (a checkout often starts in the same
// millisecond as the query before it). checkoutMS is each checkout's
// length, queryMS each query's.
func npoNodePgLoop(rows int, checkoutMS, queryMS float64) []model.Span {
	pg := func(stmt string) []model.Attr {
		a := []model.Attr{{Key: "db.system.name", Value: model.Str("postgresql")}, {Key: "server.address", Value: model.Str("127.0.0.1")}}
		if stmt != "" {
			a = append(a, model.Attr{Key: "db.query.text", Value: model.Str(stmt)})
		}
		return a
	}
	id := byte(3)
	next := func() byte { id++; return id }
	spans := []model.Span{
		p1Span(2, 1, "gateway", "request handler", model.KindInternal, 1, 0),
		p1Span(next(), 2, "gateway", "pg-pool.connect", model.KindClient, 2, 2.3, pg("")...),
		p1Span(next(), 2, "gateway", "pg.query:SELECT postgres", model.KindClient, 3, 7.2, pg("SELECT id, total, customer_id FROM orders ORDER BY id LIMIT $1")...),
	}
	at := 8.0
	for i := 0; i < rows; i++ {
		spans = append(spans, p1Span(next(), 2, "gateway", "pg-pool.connect", model.KindClient, at, at+checkoutMS, pg("")...))
		start := float64(int(at + checkoutMS)) // JavaScript floors to the millisecond
		spans = append(spans, p1Span(next(), 2, "gateway", "pg.query:SELECT postgres", model.KindClient, start, start+queryMS,
			pg("SELECT id, name FROM customers WHERE id = $1")...))
		at = float64(int(start+queryMS)) + 1
	}
	spans[0].EndUnixNano = spans[len(spans)-1].EndUnixNano + 1e6
	return append(spans, p1Span(1, 0, "gateway", "GET /n1", model.KindServer, 0, NS(spans[0].EndUnixNano-1_700_000_000_000_000_000)+0.2))
}

func TestNPlusOneNodePgPoolCheckouts(t *testing.T) {
	// 60 rows at 0.7 ms a query are 42 ms of statements, but each row also
	// checks a connection out (0.2 ms): 54 ms of round trips in all.
	fs := ofKind(Analyze(npoNodePgLoop(60, 0.2, 0.7), Options{}).Findings, "n_plus_one_query")
	if len(fs) != 1 {
		t.Fatalf("n_plus_one_query findings: %d, want 1", len(fs))
	}
	ev := fs[0].Evidence.(NPlusOneEvidence)
	if ev.Count != 60 || !p1Near(ev.TotalMS, 54, 0.5) || ev.ListQuery == nil ||
		ev.ListQuery.Shape != "SELECT id, total, customer_id FROM orders ORDER BY id LIMIT ?" {
		t.Errorf("evidence %+v list %+v", ev, ev.ListQuery)
	}
	// Checkouts queueing for a starved pool are a wait, not 9 queries of
	// the shape "pg-pool.connect".
	for _, f := range ofKind(Analyze(npoNodePgLoop(8, 9, 0.7), Options{}).Findings, "n_plus_one_query") {
		if ev := f.Evidence.(NPlusOneEvidence); !strings.Contains(ev.Shape, "customers") {
			t.Errorf("checkouts read as an N+1: %s", f.Title)
		}
	}
}

// A Django view listing books, then fetching each book's author: the ORM
// records its queries with the Python DB-API's placeholders ("%s" for
// MySQLdb and psycopg2, "%(name)s" for the pyformat style), so every row's
// query has the same text. Those are bind markers, not one literal query
// asked again.
func TestNPlusOneReadsPythonDBAPIPlaceholders(t *testing.T) {
	for _, stmt := range []string{
		"SELECT `books_author`.`id`, `books_author`.`name` FROM `books_author` WHERE `books_author`.`id` = %s LIMIT 21",
		"SELECT author.id, author.name FROM author WHERE author.id = %(id_1)s",
	} {
		spans := loopAfterQuery(p1Span(1, 0, "books", "GET /books/", model.KindServer, 0, 200),
			"SELECT `books_book`.`id`, `books_book`.`title`, `books_book`.`author_id` FROM `books_book` LIMIT 10", stmt, 10)
		got := NewNPlusOneQuery().Detect(NewTrace(spans), nil)
		if len(got) != 1 {
			t.Fatalf("%s: %d findings, want the loop", stmt, len(got))
		}
		if ev := got[0].Evidence.(NPlusOneEvidence); ev.Count != 10 || ev.ListQuery == nil {
			t.Errorf("%s: %+v", stmt, ev)
		}
	}
}

// sentry-ruby hangs ActiveRecord's spans on the transaction, beside the
// controller's process_action span that issued them: a leaf whose time
// holds the list query and the loop. The critical path runs through that
// leaf, so the loop's time is on it; the loop is the cause of the
// action's time, not the action's own code.
func TestNPlusOneRecordedBesideTheActionThatRanIt(t *testing.T) {
	db := model.Attr{Key: "db.system", Value: model.Str("mysql")}
	spans := []model.Span{
		p1Span(1, 0, "books", "BooksController#index", model.KindServer, 0, 3000),
		p1Span(2, 1, "books", "process_action.action_controller", model.KindInternal, 400, 2990),
		p1Span(3, 1, "books", "SELECT books", model.KindClient, 450, 600, db,
			model.Attr{Key: "db.statement", Value: model.Str("SELECT `books`.* FROM `books` LIMIT 10")}),
	}
	for i := 0; i < 10; i++ {
		st := 700 + float64(i)*200
		spans = append(spans, p1Span(byte(10+i), 1, "books", "SELECT authors", model.KindClient, st, st+190, db,
			model.Attr{Key: "db.statement", Value: model.Str(fmt.Sprintf("SELECT `authors`.* FROM `authors` WHERE `authors`.`id` = %d LIMIT 1", 300+i*7))}))
	}
	res := Analyze(spans, Options{})
	fs := ofKind(res.Findings, "n_plus_one_query")
	if len(fs) != 1 {
		t.Fatalf("want one n_plus_one_query: %v", kindsOf(res.Findings))
	}
	// Batched, the ten 190 ms queries cost one: 1710 ms saved.
	if !p1Near(fs[0].ImpactMS, 1710, 1) {
		t.Errorf("impact %.1f ms, want 1710", fs[0].ImpactMS)
	}
	if why := strings.Join(res.Why, "\n"); !strings.Contains(why, "Cause: 10 mysql queries") {
		t.Errorf("why chain does not name the loop:\n%s", why)
	}
}

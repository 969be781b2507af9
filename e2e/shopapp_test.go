//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracedx/tracedx/internal/analyze"
)

// The SQL the orders service runs. The list query fetches the open orders;
// then — the bug — one lookup per order on customers.email, a column with
// no index, so every lookup scans the table.
const (
	listOrdersSQL   = "SELECT id, customer_email, total FROM orders WHERE status = $1 ORDER BY id LIMIT 15"
	customerByEmail = "SELECT id, name FROM customers WHERE email = $1"
	ordersCacheKey  = "orders:open:page:1"
)

// pgTracer is the instrumentation of the orders service's PostgreSQL
// driver: pgx calls it around every statement, and it records a CLIENT
// span with the exact SQL pgx sent.
type pgTracer struct {
	tracer trace.Tracer
	port   int
}

func (p *pgTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	op, _, _ := strings.Cut(strings.TrimSpace(data.SQL), " ")
	ctx, _ = p.tracer.Start(ctx, op+" postgres", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system", "postgresql"),
			attribute.String("db.system.name", "postgresql"),
			attribute.String("db.namespace", "postgres"),
			attribute.String("db.operation.name", strings.ToUpper(op)),
			attribute.String("db.query.text", data.SQL),
			attribute.String("server.address", "127.0.0.1"),
			attribute.Int("server.port", p.port),
		))
	return ctx
}

func (p *pgTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span := trace.SpanFromContext(ctx)
	if data.Err != nil {
		span.RecordError(data.Err)
		span.SetStatus(codes.Error, data.Err.Error())
	} else {
		span.SetAttributes(attribute.Int64("db.response.returned_rows", data.CommandTag.RowsAffected()))
	}
	span.End()
}

// redisHook is the instrumentation of the Redis client: a CLIENT span per
// command; a GET that finds nothing is marked cache.hit=false.
type redisHook struct{ tracer trace.Tracer }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := strings.ToUpper(cmd.Name())
		text := name
		if args := cmd.Args(); len(args) > 1 {
			// The key only: values may be large or private.
			text += " " + fmt.Sprint(args[1])
		}
		ctx, span := h.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(
				attribute.String("db.system", "redis"),
				attribute.String("db.system.name", "redis"),
				attribute.String("db.operation.name", name),
				attribute.String("db.query.text", text),
				attribute.String("server.address", "127.0.0.1"),
			))
		defer span.End()
		err := next(ctx, cmd)
		switch {
		case name == "GET" && errors.Is(err, redis.Nil):
			span.SetAttributes(attribute.Bool("cache.hit", false))
		case name == "GET" && err == nil:
			span.SetAttributes(attribute.Bool("cache.hit", true))
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return err
	}
}

// shopApp is two real HTTP services: a gateway and the orders service,
// which reads through a Redis cache and falls back to PostgreSQL.
type shopApp struct {
	gateway, orders *httptest.Server
	gatewayTP       *sdktrace.TracerProvider
	ordersTP        *sdktrace.TracerProvider
	listed          int // rows the list query returned on the last miss
	mu              sync.Mutex
}

var prop = propagation.TraceContext{}

// serverSpan wraps a handler in a SERVER span continuing the caller's trace.
func serverSpan(tracer trace.Tracer, route string, h func(ctx context.Context, w http.ResponseWriter) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route)))
		defer span.End()
		status := h(ctx, w)
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	})
}

func newShopApp(t *testing.T, pgDSN, redisAddr string) *shopApp {
	t.Helper()
	app := &shopApp{}
	app.gatewayTP, _ = newGoProvider(t, shared, "grpc", "e2e-shop-gateway")
	app.ordersTP, _ = newGoProvider(t, shared, "http", "e2e-shop-orders")
	ordersTracer := app.ordersTP.Tracer("e2e/orders")

	port := 0
	if cfg, err := pgx.ParseConfig(pgDSN); err == nil {
		port = int(cfg.Port)
	}
	db := connectPostgres(t, pgDSN, &pgTracer{tracer: ordersTracer, port: port})
	var dbMu sync.Mutex // one pgx.Conn serves one statement at a time
	cache := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = cache.Close() })
	// Connect before instrumenting, as a service does at start-up, so the
	// handshake (HELLO, CLIENT) is not part of the first request's trace.
	if err := cache.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	cache.AddHook(redisHook{tracer: ordersTracer})

	type order struct {
		ID       int64  `json:"id"`
		Customer string `json:"customer"`
		Total    int64  `json:"total"`
	}
	app.orders = httptest.NewServer(serverSpan(ordersTracer, "/orders", func(ctx context.Context, w http.ResponseWriter) int {
		if cached, err := cache.Get(ctx, ordersCacheKey).Result(); err == nil {
			_, _ = io.WriteString(w, cached)
			return http.StatusOK
		} else if !errors.Is(err, redis.Nil) {
			return http.StatusInternalServerError
		}
		dbMu.Lock()
		defer dbMu.Unlock()
		rows, err := db.Query(ctx, listOrdersSQL, "open")
		if err != nil {
			return http.StatusInternalServerError
		}
		var list []order
		var emails []string
		for rows.Next() {
			var o order
			var email string
			if err := rows.Scan(&o.ID, &email, &o.Total); err != nil {
				rows.Close()
				return http.StatusInternalServerError
			}
			list = append(list, o)
			emails = append(emails, email)
		}
		rows.Close()
		if rows.Err() != nil {
			return http.StatusInternalServerError
		}
		// The N+1: one query per order instead of one WHERE email = ANY($1).
		for i, email := range emails {
			var id int64
			var name string
			if err := db.QueryRow(ctx, customerByEmail, email).Scan(&id, &name); err != nil {
				return http.StatusInternalServerError
			}
			list[i].Customer = name
		}
		body, _ := json.Marshal(list)
		if err := cache.Set(ctx, ordersCacheKey, body, time.Minute).Err(); err != nil {
			return http.StatusInternalServerError
		}
		app.mu.Lock()
		app.listed = len(list)
		app.mu.Unlock()
		_, _ = w.Write(body)
		return http.StatusOK
	}))
	t.Cleanup(app.orders.Close)

	gwTracer := app.gatewayTP.Tracer("e2e/gateway")
	app.gateway = httptest.NewServer(serverSpan(gwTracer, "/api/orders", func(ctx context.Context, w http.ResponseWriter) int {
		ctx, span := gwTracer.Start(ctx, "GET /orders", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("http.request.method", "GET"),
				attribute.String("server.address", "orders"), attribute.String("peer.service", "e2e-shop-orders")))
		defer span.End()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, app.orders.URL+"/orders", nil)
		prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return http.StatusBadGateway
		}
		defer resp.Body.Close()
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		w.Header().Set("X-Trace-Id", trace.SpanContextFromContext(ctx).TraceID().String())
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return resp.StatusCode
	}))
	t.Cleanup(app.gateway.Close)
	return app
}

// seedShop creates the tables: orders with an index, customers without
// one on email (the lookup the N+1 repeats scans the table each time).
func seedShop(t *testing.T, dsn string) {
	t.Helper()
	conn := connectPostgres(t, dsn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, stmt := range []string{
		`CREATE TABLE customers (id bigint, name text, email text)`,
		`INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.test' FROM generate_series(1, 200000) g`,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, customer_email text, total bigint, status text)`,
		`INSERT INTO orders (customer_email, total, status)
		   SELECT 'c' || (g * 9973 % 200000 + 1) || '@example.test', g * 100, CASE WHEN g % 3 = 0 THEN 'shipped' ELSE 'open' END
		   FROM generate_series(1, 200) g`,
		`ANALYZE`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("seeding: %s: %v", stmt, err)
		}
	}
}

func (app *shopApp) get(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(app.gateway.URL + "/api/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/orders: %s: %s", resp.Status, body)
	}
	return resp.Header.Get("X-Trace-Id")
}

// TestPostgresRedisNPlusOne runs a real N+1 against PostgreSQL behind a
// Redis cache miss and expects tracedx to diagnose both; the next request,
// served from the cache, must be diagnosed with neither.
func TestPostgresRedisNPlusOne(t *testing.T) {
	t.Parallel()
	dsn := startPostgres(t)
	redisAddr := startRedis(t)
	seedShop(t, dsn)
	app := newShopApp(t, dsn, redisAddr)

	missID := app.get(t)
	hitID := app.get(t)
	shutdownProvider(t, app.gatewayTP)
	shutdownProvider(t, app.ordersTP)

	app.mu.Lock()
	n := app.listed
	app.mu.Unlock()
	if n < 5 {
		t.Fatalf("the list query returned %d orders; the N+1 needs at least 5", n)
	}
	// gateway server+client, orders server, redis GET + SET, list query, n lookups.
	miss := shared.waitTrace(t, missID, 6+n)
	if len(miss.Spans) != 6+n {
		for _, s := range miss.Spans {
			t.Logf("%s %s %s %v", s.Service, s.Kind, s.Name, s.Attributes)
		}
		t.Fatalf("cache-miss trace has %d spans, want %d", len(miss.Spans), 6+n)
	}
	a := shared.analysis(t, missID)

	f, ok := a.find("n_plus_one_query")
	if !ok {
		t.Fatalf("no n_plus_one_query finding for the cache-miss trace; findings: %v", a.kinds())
	}
	var ev struct {
		Shape     string `json:"shape"`
		DBSystem  string `json:"db_system"`
		Count     int    `json:"count"`
		ListQuery *struct {
			Shape string `json:"shape"`
		} `json:"list_query"`
	}
	if err := json.Unmarshal(f.Evidence, &ev); err != nil {
		t.Fatalf("n_plus_one_query evidence %s: %v", f.Evidence, err)
	}
	if want := analyze.NormalizeStatement(customerByEmail); ev.Shape != want {
		t.Errorf("n_plus_one_query shape = %q, want the normalised lookup %q", ev.Shape, want)
	}
	if ev.Count != n || len(f.SpanIDs) != n || ev.DBSystem != "postgresql" {
		t.Errorf("n_plus_one_query: count %d, %d span ids, db %q; want %d lookups on postgresql", ev.Count, len(f.SpanIDs), ev.DBSystem, n)
	}
	if ev.ListQuery == nil || ev.ListQuery.Shape != analyze.NormalizeStatement(listOrdersSQL) {
		t.Errorf("n_plus_one_query list query = %+v, want %q", ev.ListQuery, analyze.NormalizeStatement(listOrdersSQL))
	}
	t.Logf("n_plus_one_query: %s", f.Title)
	if !strings.Contains(f.Title, fmt.Sprint(n)) {
		t.Errorf("title %q does not say how many queries", f.Title)
	}

	// The second request was served from Redis: no fallback, no loop.
	hit := shared.waitTrace(t, hitID, 4)
	if len(hit.Spans) != 4 {
		t.Errorf("cache-hit trace has %d spans, want 4", len(hit.Spans))
	}
	ha := shared.analysis(t, hitID)
	for _, k := range []string{"n_plus_one_query", "cache_miss"} {
		if _, ok := ha.find(k); ok {
			t.Errorf("cache-hit trace diagnosed with %s", k)
		}
	}

	t.Run("cache_miss", func(t *testing.T) {
		requireDetector(t, "cache_miss")
		cm, ok := a.find("cache_miss")
		if !ok {
			t.Fatalf("no cache_miss finding for the cache-miss trace; findings: %v", a.kinds())
		}
		if cm.ImpactMS <= 0 || len(cm.SpanIDs) == 0 {
			t.Errorf("cache_miss finding without impact or spans: %+v", cm)
		}
		if !strings.Contains(string(cm.Evidence)+cm.Title, "orders:open") {
			t.Errorf("cache_miss does not name the key: title %q evidence %s", cm.Title, cm.Evidence)
		}
	})
}

// requireDetector skips a check whose detector is not in this tree's
// analyze registry yet (the binary under test is built from the same
// tree); once the detector is registered, the check runs and must pass.
func requireDetector(t testing.TB, kind string) {
	t.Helper()
	for _, k := range analyze.Kinds() {
		if k == kind {
			return
		}
	}
	t.Skipf("detector %q is not registered in internal/analyze yet; its end-to-end check cannot run", kind)
}

package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/tenant"
)

const (
	tokenA   = "tenant-a-token-0123456789"
	tokenB   = "tenant-b-token-0123456789"
	tokenAny = "any-tenant-token-0123456789" // bound to no tenant: the header decides
)

func multiTenantServer(t *testing.T, mutate func(*config.Config)) *Server {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(tokenA+" a\n"+tokenB+" b\n"+tokenAny+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *config.Config) {
		c.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0", Tempo: "127.0.0.1:0"}
		c.Storage.TraceIdleTimeout = 100 * time.Millisecond
		c.Multitenancy.Enabled = true
		c.Auth.TokenFile = tokens
		if mutate != nil {
			mutate(c)
		}
	})
}

// call sends a request with a token and an X-Scope-OrgID ("" for none).
func call(t *testing.T, method, u, token, org string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if org != "" {
		req.Header.Set("X-Scope-OrgID", org)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func otlpJSON(t *testing.T, spans []model.Span) []byte {
	t.Helper()
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(otlpconv.ToTraces(spans))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Tenant B never sees tenant A's traces, findings, services or metrics,
// through any API, and requests without a tenant, or naming another
// tenant than their token's, are refused.
func TestTenantsAreKeptApart(t *testing.T) {
	s := multiTenantServer(t, nil)
	ingest := "http://" + s.Addr("otlp-http") + "/v1/traces"
	// Tenant a: a slow query (a finding) in service "orders"; tenant b:
	// frontend → api calls.
	spansA := slowOrder(0, time.Now().Add(-time.Minute))
	idA := spansA[0].TraceID.String()
	spansB := checkoutCalls(3, time.Minute, time.Now())
	idB := spansB[0].TraceID.String()
	if code, body := call(t, "POST", ingest, tokenA, "", otlpJSON(t, spansA)); code != 200 {
		t.Fatalf("ingest a: %d %s", code, body)
	}
	if code, body := call(t, "POST", ingest, tokenAny, "b", otlpJSON(t, spansB)); code != 200 {
		t.Fatalf("ingest b: %d %s", code, body)
	}
	// Refusals at ingest.
	for _, c := range []struct {
		token, org string
		want       int
	}{{"", "a", 401}, {tokenAny, "", 401}, {tokenA, "b", 403}, {tokenAny, "../x", 400}} {
		if code, _ := call(t, "POST", ingest, c.token, c.org, otlpJSON(t, spansA)); code != c.want {
			t.Errorf("ingest with token %q, org %q: %d, want %d", c.token, c.org, code, c.want)
		}
	}

	base, tempo := "http://"+s.Addr("http"), "http://"+s.Addr("tempo")
	// Wait for a's finding: the trace is then complete and analysed.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, body := call(t, "GET", base+"/api/v1/findings", tokenA, "", nil); strings.Contains(body, idA) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tenant a's finding never appeared")
		}
	}
	from := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	to := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	rng := "start=" + from + "&end=" + to
	startS, endS := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10), strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10)
	// Each GET: what tenant a must see in it (b must not).
	paths := map[string]string{
		base + "/api/v1/traces/" + idA:                idA,
		base + "/api/v1/traces/" + idA + "/analysis":  "slow_query",
		base + "/api/v1/search?service=orders&" + rng: idA,
		base + "/api/v1/services":                     `"orders"`,
		base + "/api/v1/services/orders/operations":   "GET /orders",
		base + "/api/v1/findings":                     idA,
		base + "/api/v1/findings/summary":             "slow_query",
		base + "/api/v1/metrics/services?" + rng:      `"orders"`,
		base + "/api/v1/servicemap?" + rng:            `"orders"`,
		base + "/metrics":                             `service="orders"`,
		base + "/api/services":                        `"orders"`,
		base + "/api/traces/" + idA:                   idA,
		base + "/api/traces?service=orders&limit=10":  idA,
		base + "/api/v3/services":                     `"orders"`,
		base + "/api/v3/traces/" + idA:                "GET /orders",
		tempo + "/api/traces/" + idA:                  "GET /orders",
		tempo + "/api/search?tags=" + url.QueryEscape("service.name=orders") + "&start=" + startS + "&end=" + endS: idA,
		tempo + "/api/search/tag/service.name/values":                                                              `"orders"`,
		base + "/tempo/api/search/tag/service.name/values":                                                         `"orders"`,
	}
	for u, mark := range paths {
		codeA, bodyA := call(t, "GET", u, tokenA, "", nil)
		if codeA != 200 || !strings.Contains(bodyA, mark) {
			t.Errorf("tenant a, GET %s: %d, want %s in %.300s", u, codeA, mark, bodyA)
		}
		// A 404 naming the id asked for reveals nothing.
		codeB, bodyB := call(t, "GET", u, tokenB, "", nil)
		if codeB != 404 && (strings.Contains(bodyB, idA) || strings.Contains(bodyB, mark)) {
			t.Errorf("tenant b sees tenant a's data at GET %s: %d %.300s", u, codeB, bodyB)
		}
		// The header route to b, with a token bound to no tenant, sees b's.
		if code, body := call(t, "GET", u, tokenAny, "b", nil); code != 404 && (strings.Contains(body, idA) || strings.Contains(body, mark)) {
			t.Errorf("X-Scope-OrgID b sees tenant a's data at GET %s: %d", u, code)
		}
		for _, c := range []struct {
			token, org string
			want       int
		}{{"", "", 401}, {"wrong-token-0123456789", "a", 401}, {tokenAny, "", 401}, {tokenB, "a", 403}} {
			if strings.HasSuffix(u, "/metrics") && c.token == tokenAny && c.org == "" {
				continue // the operator's /metrics, below
			}
			if code, _ := call(t, "GET", u, c.token, c.org, nil); code != c.want {
				t.Errorf("GET %s with token %q, org %q: %d, want %d", u, c.token, c.org, code, c.want)
			}
		}
	}
	// /metrics without any tenant is the process's: no tenant's series.
	if code, body := call(t, "GET", base+"/metrics", tokenAny, "", nil); code != 200 || !strings.Contains(body, "go_goroutines") || strings.Contains(body, `service="orders"`) {
		t.Errorf("operator /metrics: %d, %.300s", code, body)
	}
	// Tenant b's own data is there for b.
	if code, body := call(t, "GET", base+"/api/v1/traces/"+idB, tokenB, "", nil); code != 200 || !strings.Contains(body, "frontend") {
		t.Errorf("tenant b's own trace: %d %.200s", code, body)
	}
	// Each tenant lives in its own directory.
	for _, id := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, "tenants", id, "traces")); err != nil {
			t.Errorf("tenant %s's storage: %v", id, err)
		}
	}
}

// Per-tenant limits: the ingest rate (429 / RESOURCE_EXHAUSTED with
// Retry-After, as Tempo answers, not the 503 of an overloaded server) and
// the spans of a trace.
func TestTenantLimits(t *testing.T) {
	s := multiTenantServer(t, func(c *config.Config) {
		c.Listen.OTLPGRPC = "127.0.0.1:0"
		c.Multitenancy.Limits = config.TenantLimits{IngestSpansPerSecond: 1000}
		c.Multitenancy.Tenants = map[string]config.TenantLimits{"b": {IngestSpansPerSecond: 10, MaxSpansPerTrace: 2}}
	})
	ingest := "http://" + s.Addr("otlp-http") + "/v1/traces"
	spans := checkoutCalls(5, time.Minute, time.Now()) // 20 spans, 4 per trace
	if code, body := call(t, "POST", ingest, tokenA, "", otlpJSON(t, spans)); code != 200 {
		t.Fatalf("a within its limit: %d %s", code, body)
	}
	req, _ := http.NewRequest("POST", ingest, bytes.NewReader(otlpJSON(t, spans)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tokenB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "10 spans/s") {
		t.Errorf("b above its 10 spans/s: %s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	conn, err := grpc.NewClient(s.Addr("otlp-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokenB)
	_, err = ptraceotlp.NewGRPCClient(conn).Export(gctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || len(st.Details()) == 0 {
		t.Errorf("b above its rate over gRPC: %v (details %v), want RESOURCE_EXHAUSTED with RetryInfo", err, st.Details())
	}
	small := spans[:8] // two traces of 4 spans: 2 kept of each
	time.Sleep(time.Second)
	if code, body := call(t, "POST", ingest, tokenB, "", otlpJSON(t, small)); code != 200 {
		t.Fatalf("b within its rate: %d %s", code, body)
	}
	var tr model.TraceID
	binary.BigEndian.PutUint64(tr[8:], 1)
	tr[0] = 0x42
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := call(t, "GET", "http://"+s.Addr("http")+"/api/v1/traces/"+tr.String(), tokenB, "", nil)
		if code == 200 {
			if n := strings.Count(body, `"span_id"`); n != 2 {
				t.Errorf("b's trace has %d spans, want its limit of 2", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's trace: %d %s", code, body)
		}
	}
}

// OTLP/gRPC names the tenant in x-scope-orgid metadata.
func TestTenantOfGRPCIngest(t *testing.T) {
	s := multiTenantServer(t, func(c *config.Config) { c.Listen.OTLPGRPC = "127.0.0.1:0" })
	conn, err := grpc.NewClient(s.Addr("otlp-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	spans := checkoutCalls(1, time.Minute, time.Now())
	export := func(md ...string) error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
		req := ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans))
		_, err := ptraceotlp.NewGRPCClient(conn).Export(ctx, req)
		return err
	}
	if err := export("authorization", "Bearer "+tokenAny); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no tenant: %v", err)
	}
	if err := export("authorization", "Bearer "+tokenA, "x-scope-orgid", "b"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("token of a, tenant b: %v", err)
	}
	if err := export("authorization", "Bearer "+tokenAny, "x-scope-orgid", "b"); err != nil {
		t.Fatalf("tenant b: %v", err)
	}
	u := "http://" + s.Addr("http") + "/api/v1/traces/" + spans[0].TraceID.String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := call(t, "GET", u, tokenB, "", nil); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tenant b's trace never readable")
		}
	}
	if code, _ := call(t, "GET", u, tokenA, "", nil); code != 404 {
		t.Errorf("tenant a reads b's trace: %d", code)
	}
}

// A tenant's instance: its own directory, its retention limit, no
// listeners of its own and no second layer of tokens.
func TestTenantConfig(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = "/data"
	cfg.Auth.TokenFile = "/etc/tokens"
	cfg.Retention.Traces = 48 * time.Hour
	cfg.Multitenancy = config.Multitenancy{Enabled: true, Limits: config.TenantLimits{Retention: 24 * time.Hour},
		Tenants: map[string]config.TenantLimits{"b": {Retention: 72 * time.Hour}}}
	a, b := tenantConfig(cfg, "a"), tenantConfig(cfg, "b")
	if a.DataDir != filepath.Join("/data", "tenants", "a") || a.Storage.Retention != 24*time.Hour || b.Storage.Retention != 72*time.Hour {
		t.Errorf("a: %s %v, b: %v", a.DataDir, a.Storage.Retention, b.Storage.Retention)
	}
	// Both trace tiers: the tenant's retention caps the unkept one.
	if a.Retention.KeptTraces != 24*time.Hour || a.Retention.Traces != 24*time.Hour || b.Retention.Traces != 48*time.Hour {
		t.Errorf("tiers: a kept %v unkept %v, b unkept %v", a.Retention.KeptTraces, a.Retention.Traces, b.Retention.Traces)
	}
	if a.Multitenancy.Enabled || a.Auth.TokenFile != "" || a.Listen.OTLPGRPC != "" || a.Listen.HTTP != inProcess {
		t.Errorf("tenant instance config: %+v", a)
	}
}

// max_trace_bytes bounds a trace by its spans' OTLP size: the spans that
// would take it beyond are dropped (and counted), the others kept.
func TestTenantTraceBytesLimit(t *testing.T) {
	spans := checkoutCalls(1, time.Minute, time.Now()) // one trace of 4 spans
	var total int64
	for i := range spans {
		total += int64(otlpconv.SpanSize(&spans[i]))
	}
	s := multiTenantServer(t, func(c *config.Config) {
		c.Multitenancy.Tenants = map[string]config.TenantLimits{"c": {MaxTraceBytes: total - 1}}
	})
	if code, body := call(t, "POST", "http://"+s.Addr("otlp-http")+"/v1/traces", tokenAny, "c", otlpJSON(t, spans)); code != 200 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	u := "http://" + s.Addr("http") + "/api/v1/traces/" + spans[0].TraceID.String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := call(t, "GET", u, tokenAny, "c", nil)
		if code == 200 {
			// The first three fit (the fourth is at least a byte), the
			// fourth would make the whole trace: one byte too many.
			if n := strings.Count(body, `"span_id"`); n != 3 {
				t.Errorf("stored %d spans, want 3 of 4 under %d bytes", n, total-1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace: %d %s", code, body)
		}
	}
	_, metrics := call(t, "GET", "http://"+s.Addr("http")+"/metrics", tokenAny, "", nil)
	if !strings.Contains(metrics, `tracedx_tenant_discarded_spans_total{reason="trace_too_large",tenant="c"} 1`) {
		t.Errorf("discarded spans not counted:\n%s", grepLines(metrics, "discarded"))
	}
}

// The byte bound keeps each trace's spans while they fit, whatever other
// traces hold, and spans of later requests join the same count.
func TestSpanRateTrimsByBytes(t *testing.T) {
	spans := checkoutCalls(2, time.Minute, time.Now()) // two traces of 4 spans
	size := func(sp []model.Span) (n int64) {
		for i := range sp {
			n += int64(otlpconv.SpanSize(&sp[i]))
		}
		return n
	}
	first := spans[:4]
	r := newSpanRate(config.TenantLimits{MaxTraceBytes: size(first[:2])}, nil)
	now := time.Now()
	kept := r.trimTraces(append(append([]model.Span{}, first[:3]...), spans[4]), now, nil)
	if len(kept) != 3 || kept[0].SpanID != first[0].SpanID || kept[1].SpanID != first[1].SpanID || kept[2].TraceID != spans[4].TraceID {
		t.Fatalf("kept %d spans: %+v", len(kept), kept)
	}
	if again := r.trimTraces(first[3:4], now, nil); len(again) != 0 {
		t.Errorf("a later span of the full trace was kept")
	}
}

// On the s3 backend a node opens the tenants that have data in the bucket
// at start, even on a new disk and before any request names them, so
// their compaction and retention run on it.
func TestBucketTenantsOpenAtStart(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(tokenA+" a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Storage.TraceIdleTimeout = 100 * time.Millisecond
	cfg.Multitenancy.Enabled = true
	cfg.Auth.TokenFile = tokens
	onMinIO(t, &cfg, "tracedx-server-tenants-test")
	cfg.DataDir = t.TempDir()
	s, stop := runServer(t, cfg)
	spans := slowOrder(0, time.Now().Add(-time.Minute))
	if code, body := call(t, "POST", "http://"+s.Addr("otlp-http")+"/v1/traces", tokenA, "", otlpJSON(t, spans)); code != 200 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	// Closing copies the tenant's state to the bucket and cuts its head
	// to blocks there.
	stop()

	cfg.DataDir = t.TempDir()
	_, stop = runServer(t, cfg)
	defer stop()
	if !isDir(filepath.Join(cfg.DataDir, "tenants", "a")) {
		t.Fatal("tenant a was not opened from the bucket on a new disk")
	}
	// Listing the bucket writes nothing: it needs no spool directory.
	if isDir(filepath.Join(cfg.DataDir, "s3spool-tenants")) {
		t.Error("listing the bucket's tenants made a spool directory")
	}
}

// A running node opens, within a while, a tenant that another node
// brought to the bucket.
func TestBucketTenantsOpenWhileRunning(t *testing.T) {
	saved := bucketTenantsEvery
	bucketTenantsEvery = 100 * time.Millisecond
	t.Cleanup(func() { bucketTenantsEvery = saved })
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(tokenA+" a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Multitenancy.Enabled = true
	cfg.Auth.TokenFile = tokens
	onMinIO(t, &cfg, "tracedx-server-tenants-test")
	idle := cfg
	idle.DataDir = t.TempDir()
	_, stopIdle := runServer(t, idle)
	defer stopIdle()

	cfg.DataDir = t.TempDir()
	s, stop := runServer(t, cfg)
	if code, body := call(t, "POST", "http://"+s.Addr("otlp-http")+"/v1/traces", tokenA, "", otlpJSON(t, slowOrder(0, time.Now()))); code != 200 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	stop()
	for deadline := time.Now().Add(10 * time.Second); !isDir(filepath.Join(idle.DataDir, "tenants", "a")); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the running node never opened tenant a from the bucket")
		}
	}
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Tenants open at start a few at a time, not one after another, and
// never more than tenantsOpenedAtOnce together; names that are no tenant
// id and repeated ones are skipped, and a failing tenant neither keeps
// the others closed nor hides another failure.
func TestOpenTenantsAFewAtATime(t *testing.T) {
	var (
		mu             sync.Mutex
		inFlight, most int
		opened         = map[string]int{}
		release        = make(chan struct{})
		errBroken      = errors.New("broken")
		ids            []string
	)
	for i := range 10 {
		ids = append(ids, "t"+strconv.Itoa(i))
	}
	ids = append(ids, "t3", "not/a/tenant")
	open := func(id string) (*tenantServer, error) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		opened[id]++
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		if id == "t2" || id == "t7" {
			return nil, fmt.Errorf("tenant %s: %w", id, errBroken)
		}
		return &tenantServer{}, nil
	}
	done := make(chan error)
	go func() { done <- openTenants(open, ids) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := inFlight
		mu.Unlock()
		if n == tenantsOpenedAtOnce {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tenants opening together, want %d", n, tenantsOpenedAtOnce)
		}
	}
	close(release)
	err := <-done
	if most != tenantsOpenedAtOnce {
		t.Errorf("at most %d tenants opened together, want %d", most, tenantsOpenedAtOnce)
	}
	if len(opened) != 10 || opened["t3"] != 1 || opened["not/a/tenant"] != 0 {
		t.Errorf("opened %v, want t0 to t9 once each", opened)
	}
	if !errors.Is(err, errBroken) || err.Error() != "tenant t2: broken\ntenant t7: broken" {
		t.Errorf("error %q, want both broken tenants' failures", err)
	}
}

// A tenant whose data directory cannot be opened stops the start, and
// the error names it.
func TestBrokenTenantStopsTheStart(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Multitenancy.Enabled = true
	cfg.Auth.TokenFile = filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(tokenA+" a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "tenants", "good"), 0o755); err != nil {
		t.Fatal(err)
	}
	breakTenant(t, cfg.DataDir, "bad")
	s, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.Close()
		t.Fatal("the server started with a tenant it cannot open")
	}
	if !strings.Contains(err.Error(), "tenant bad") {
		t.Errorf("error %q does not name tenant bad", err)
	}
}

// breakTenant makes tenant id's data directory one its instance cannot
// open: a file stands where its RED metrics' directory goes.
func breakTenant(t *testing.T, dataDir, id string) {
	t.Helper()
	dir := filepath.Join(dataDir, "tenants", id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "metrics"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The sink's error names the tenant once: the router's error already
// does, and the sink used to add its own "opening tenant a: " to it.
func TestTenantSinkErrorNamesTheTenantOnce(t *testing.T) {
	r := tenant.NewRouter(func(string) (*tenantServer, error) { return nil, errors.New("disk full") })
	t.Cleanup(func() { _ = r.Close() })
	sink := &tenantSink{router: r}
	ctx := tenant.WithID(context.Background(), "a")
	for name, err := range map[string]error{
		"Write":     sink.Write(ctx, nil),
		"Admit":     sink.Admit(ctx, 1),
		"WriteLogs": sink.WriteLogs(ctx, nil),
	} {
		if err == nil || err.Error() != "opening tenant a: disk full" {
			t.Errorf("%s: %v, want \"opening tenant a: disk full\"", name, err)
		}
	}
}

package jaeger

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sort"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

// Fixture timeline (testdata/traces.otlp.json), all on 2026-01-15 UTC:
//
//	10:00:00 trace 0af76519… frontend GET /orders (ERROR, 120 ms) → SELECT orders,
//	         GET /stock (client, ERROR) → inventory GET /stock (server, ERROR, link to B)
//	10:01:00 trace 4bf92f35… (64-bit id) worker "process order" (consumer, OK) + orphan "ack"
//	10:02:00 trace 5b8efff7… frontend GET /health (2 ms)
const (
	traceA = "0af7651916cd43dd8448eb211c80319c"
	traceB = "4bf92f3577b34da6"
	traceC = "5b8efff798038103d269b633813fc60c"
)

var (
	t0      = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	testNow = time.Date(2026, 1, 15, 10, 5, 0, 0, time.UTC)
)

func loadFixture(t testing.TB) []model.Span {
	t.Helper()
	raw, err := os.ReadFile("testdata/traces.otlp.json")
	if err != nil {
		t.Fatal(err)
	}
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(raw)
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return otlpconv.FromTraces(td)
}

func newServer(t testing.TB, opts Options) *httptest.Server {
	t.Helper()
	st := memstore.New()
	if err := st.Write(context.Background(), loadFixture(t)); err != nil {
		t.Fatal(err)
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	srv := httptest.NewServer(NewHandler(st, opts))
	t.Cleanup(srv.Close)
	return srv
}

// get fetches path and decodes the JSON body into a generic value.
func get(t testing.TB, srv *httptest.Server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", path, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: status %d, body is not a JSON object: %v\n%s", path, resp.StatusCode, err, body)
	}
	return resp.StatusCode, m
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// wantKeys asserts the exact field set of an object, so a renamed or
// missing field fails the contract test.
func wantKeys(t testing.TB, what string, v any, keys ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want an object, got %T (%v)", what, v, v)
	}
	sort.Strings(keys)
	if got := keysOf(m); !reflect.DeepEqual(got, keys) {
		t.Errorf("%s: fields %v, want %v", what, got, keys)
	}
	return m
}

func eq(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func arr(t testing.TB, what string, v any) []any {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("%s: want an array, got %T (%v)", what, v, v)
	}
	return a
}

// envelopeOK checks the v1 envelope and returns data.
func envelopeOK(t testing.TB, what string, status int, m map[string]any) any {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("%s: status %d, body %v", what, status, m)
	}
	wantKeys(t, what+" envelope", m, "data", "total", "limit", "offset", "errors")
	eq(t, what+" limit", m["limit"], 0.0)
	eq(t, what+" offset", m["offset"], 0.0)
	return m["data"]
}

// envelopeErr checks a v1 error envelope.
func envelopeErr(t testing.TB, what string, status int, m map[string]any, wantStatus int) string {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s: status %d, want %d (body %v)", what, status, wantStatus, m)
	}
	wantKeys(t, what+" envelope", m, "data", "total", "limit", "offset", "errors")
	eq(t, what+" data", m["data"], nil)
	errs := arr(t, what+" errors", m["errors"])
	if len(errs) != 1 {
		t.Fatalf("%s: errors %v", what, errs)
	}
	e := wantKeys(t, what+" error", errs[0], "code", "msg")
	eq(t, what+" error code", e["code"], float64(wantStatus))
	msg, _ := e["msg"].(string)
	if msg == "" {
		t.Errorf("%s: empty error message", what)
	}
	return msg
}

// tagMap indexes Jaeger typed tags by key.
func tagMap(t testing.TB, v any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, x := range arr(t, "tags", v) {
		kv := wantKeys(t, "tag", x, "key", "type", "value")
		out[kv["key"].(string)] = kv
	}
	return out
}

func tagIs(t testing.TB, tags map[string]map[string]any, key, typ string, val any) {
	t.Helper()
	kv, ok := tags[key]
	if !ok {
		t.Errorf("tag %q missing", key)
		return
	}
	eq(t, "tag "+key+" type", kv["type"], typ)
	eq(t, "tag "+key+" value", kv["value"], val)
}

func usOf(tm time.Time) float64 { return float64(tm.UnixMicro()) }

// Package apitest holds what the contract tests of the query APIs
// (internal/api/jaeger, internal/api/v1, internal/api/tempo) share: the
// fixture traces, a store loaded with them, JSON request helpers that check
// the wire shape field by field, and the synthetic traces and fixed store
// of the API-layer benchmarks. Only tests import it.
package apitest

import (
	"context"
	_ "embed"
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

// The shared fixture (testdata/traces.otlp.json), all on 2026-01-15 UTC:
//
//	10:00:00 trace A 0af76519… frontend GET /orders (ERROR, 120 ms, 500) → SELECT orders,
//	         GET /stock (client, ERROR) → inventory GET /stock (503, ERROR, link to B)
//	10:01:00 trace B 4bf92f35… (a 64-bit id) worker "process order" (consumer, OK) + orphan "ack"
//	10:02:00 trace C 5b8efff7… frontend GET /health (2 ms, 200)
const (
	TraceA = "0af7651916cd43dd8448eb211c80319c"
	// TraceB64 is trace B's 64-bit id as Jaeger writes it; 128-bit APIs
	// left-pad it with zeros (TraceB128).
	TraceB64  = "4bf92f3577b34da6"
	TraceB128 = "0000000000000000" + TraceB64
	TraceC    = "5b8efff798038103d269b633813fc60c"
)

var (
	// T0 is the start of trace A.
	T0 = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	// Now is the clock the handlers under test get: five minutes after T0.
	Now = time.Date(2026, 1, 15, 10, 5, 0, 0, time.UTC)
)

//go:embed testdata/traces.otlp.json
var fixtureJSON []byte

// FixtureSpans decodes the shared fixture.
func FixtureSpans(t testing.TB) []model.Span {
	t.Helper()
	spans, err := decodeOTLPJSON(fixtureJSON)
	if err != nil {
		t.Fatalf("shared fixture: %v", err)
	}
	return spans
}

// LoadOTLPJSON reads a package's own OTLP JSON fixture.
func LoadOTLPJSON(t testing.TB, path string) []model.Span {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	spans, err := decodeOTLPJSON(raw)
	if err != nil {
		t.Fatalf("fixture %s: %v", path, err)
	}
	return spans
}

func decodeOTLPJSON(raw []byte) ([]model.Span, error) {
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(raw)
	if err != nil {
		return nil, err
	}
	return otlpconv.FromTraces(td), nil
}

// NewStore returns an in-memory store holding spans.
func NewStore(t testing.TB, spans []model.Span) *memstore.Store {
	t.Helper()
	st := memstore.New()
	if err := st.Write(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	return st
}

// Serve starts h on a loopback port for the test's lifetime.
func Serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// GetJSON fetches path, requires Content-Type application/json and a JSON
// object body, and returns the status with the decoded object.
func GetJSON(t testing.TB, srv *httptest.Server, path string) (int, map[string]any) {
	t.Helper()
	status, body := GetBody(t, srv, path)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: status %d, body is not a JSON object: %v\n%s", path, status, err, body)
	}
	return status, m
}

// GetBody fetches path, requires Content-Type application/json, and
// returns the status with the body as sent.
func GetBody(t testing.TB, srv *httptest.Server, path string) (int, []byte) {
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
	return resp.StatusCode, body
}

// Keys returns the sorted keys of a decoded object.
func Keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// WantKeys asserts the exact field set of an object, so a renamed or
// missing field fails the contract test, and returns the object.
func WantKeys(t testing.TB, what string, v any, keys ...string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want an object, got %T (%v)", what, v, v)
	}
	want := append([]string(nil), keys...)
	sort.Strings(want)
	if got := Keys(m); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: fields %v, want %v", what, got, want)
	}
	return m
}

// Eq asserts deep equality of a decoded value.
func Eq(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

// Arr asserts that v is an array and returns it.
func Arr(t testing.TB, what string, v any) []any {
	t.Helper()
	a, ok := v.([]any)
	if !ok {
		t.Fatalf("%s: want an array, got %T (%v)", what, v, v)
	}
	return a
}

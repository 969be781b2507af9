package tempo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/traceql"
)

const (
	traceA = "0af7651916cd43dd8448eb211c80319c" // frontend -> cart, 4 spans, 1 s, one error
	traceB = "1bf7651916cd43dd8448eb211c80319d" // payment, 1 span, 50 ms, 100 s later
)

func fixtureSpans(t testing.TB) []model.Span {
	t.Helper()
	return apitest.LoadOTLPJSON(t, "testdata/traces.json")
}

func newTestHandler(t testing.TB, opts Options) http.Handler {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Unix(1700000200, 0) }
	}
	return NewHandler(apitest.NewStore(t, fixtureSpans(t)), opts)
}

func do(t testing.TB, h http.Handler, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// getJSON requests target, expects 200 and decodes into a generic value so
// tests check the exact wire shape (field names and JSON types).
func getJSON(t testing.TB, h http.Handler, target string) map[string]any {
	t.Helper()
	rec := do(t, h, target)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: content type %q", target, ct)
	}
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("GET %s: %v\n%s", target, err, rec.Body.String())
	}
	return v
}

func body(rec *httptest.ResponseRecorder) string {
	b, _ := io.ReadAll(rec.Result().Body)
	return string(b)
}

// path walks a decoded JSON value: keys for objects, ints for arrays.
func path(t testing.TB, v any, steps ...any) any {
	t.Helper()
	cur := v
	for i, s := range steps {
		switch k := s.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("step %d (%q): not an object: %T", i, k, cur)
			}
			nv, ok := m[k]
			if !ok {
				t.Fatalf("step %d: key %q missing in %v", i, k, keys(m))
			}
			cur = nv
		case int:
			a, ok := cur.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("step %d: index %d of %T (len %d)", i, k, cur, len(a))
			}
			cur = a[k]
		}
	}
	return cur
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func findingsFor(spanHex string, kind string) traceql.FindingsLookup {
	return traceql.FindingsFunc(func(_ context.Context, _ model.TraceID) (map[model.SpanID][]string, error) {
		id, _ := model.ParseSpanID(spanHex)
		return map[model.SpanID][]string{id: {kind}}, nil
	})
}

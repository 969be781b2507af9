package jaeger

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/api/apitest"
)

func newServer(t testing.TB, opts Options) *httptest.Server {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return apitest.Now }
	}
	return apitest.Serve(t, NewHandler(apitest.NewStore(t, apitest.FixtureSpans(t)), opts))
}

// envelopeOK checks the v1 envelope and returns data.
func envelopeOK(t testing.TB, what string, status int, m map[string]any) any {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("%s: status %d, body %v", what, status, m)
	}
	apitest.WantKeys(t, what+" envelope", m, "data", "total", "limit", "offset", "errors")
	apitest.Eq(t, what+" limit", m["limit"], 0.0)
	apitest.Eq(t, what+" offset", m["offset"], 0.0)
	return m["data"]
}

// envelopeErr checks a v1 error envelope.
func envelopeErr(t testing.TB, what string, status int, m map[string]any, wantStatus int) string {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s: status %d, want %d (body %v)", what, status, wantStatus, m)
	}
	apitest.WantKeys(t, what+" envelope", m, "data", "total", "limit", "offset", "errors")
	apitest.Eq(t, what+" data", m["data"], nil)
	errs := apitest.Arr(t, what+" errors", m["errors"])
	if len(errs) != 1 {
		t.Fatalf("%s: errors %v", what, errs)
	}
	e := apitest.WantKeys(t, what+" error", errs[0], "code", "msg")
	apitest.Eq(t, what+" error code", e["code"], float64(wantStatus))
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
	for _, x := range apitest.Arr(t, "tags", v) {
		kv := apitest.WantKeys(t, "tag", x, "key", "type", "value")
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
	apitest.Eq(t, "tag "+key+" type", kv["type"], typ)
	apitest.Eq(t, "tag "+key+" value", kv["value"], val)
}

func usOf(tm time.Time) float64 { return float64(tm.UnixMicro()) }

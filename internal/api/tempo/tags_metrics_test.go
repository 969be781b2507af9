package tempo

import (
	"reflect"
	"strings"
	"testing"
)

func TestTagsV2(t *testing.T) {
	h := newTestHandler(t, Options{})
	res := getJSON(t, h, "/api/v2/search/tags")
	scopes := map[string][]string{}
	for _, s := range path(t, res, "scopes").([]any) {
		sm := s.(map[string]any)
		var tags []string
		for _, tg := range sm["tags"].([]any) {
			tags = append(tags, tg.(string))
		}
		scopes[sm["name"].(string)] = tags
	}
	if !reflect.DeepEqual(scopes["resource"], []string{"deployment.environment", "service.name"}) {
		t.Errorf("resource tags %v", scopes["resource"])
	}
	if !reflect.DeepEqual(scopes["span"], []string{"amount", "captured", "db.system", "http.method", "http.status_code", "tags"}) {
		t.Errorf("span tags %v", scopes["span"])
	}
	intr := strings.Join(scopes["intrinsic"], ",")
	for _, want := range []string{"duration", "name", "status", "kind", "rootServiceName", "traceDuration", "finding.kind"} {
		if !strings.Contains(","+intr+",", ","+want+",") {
			t.Errorf("intrinsic %q missing from %v", want, intr)
		}
	}
	only := getJSON(t, h, "/api/v2/search/tags?scope=span&limit=2")
	if got := path(t, only, "scopes").([]any); len(got) != 1 || path(t, got[0], "name") != "span" || len(path(t, got[0], "tags").([]any)) != 2 {
		t.Errorf("scope=span&limit=2: %v", got)
	}
	if rec := do(t, h, "/api/v2/search/tags?scope=bogus"); rec.Code != 400 || !strings.Contains(body(rec), "invalid scope: bogus") {
		t.Errorf("bad scope: %d %s", rec.Code, body(rec))
	}
	v1 := getJSON(t, h, "/api/search/tags")
	if got := path(t, v1, "tagNames").([]any); len(got) != 8 || got[0] != "amount" {
		t.Errorf("v1 tagNames %v", got)
	}
}

func TestTagValues(t *testing.T) {
	h := newTestHandler(t, Options{})
	v1 := getJSON(t, h, "/api/search/tag/service.name/values")
	if !reflect.DeepEqual(v1["tagValues"], []any{"cart", "frontend", "payment"}) {
		t.Errorf("v1 values %v", v1["tagValues"])
	}
	tv := func(target string) []any {
		t.Helper()
		return path(t, getJSON(t, h, target), "tagValues").([]any)
	}
	sv := func(vs ...string) []any {
		var out []any
		for _, v := range vs {
			out = append(out, map[string]any{"type": "string", "value": v})
		}
		return out
	}
	cases := []struct {
		target string
		want   []any
	}{
		{"/api/v2/search/tag/resource.service.name/values", sv("cart", "frontend", "payment")},
		{"/api/v2/search/tag/.db.system/values", sv("postgres")},
		{"/api/v2/search/tag/span.http.status_code/values", []any{
			map[string]any{"type": "int", "value": "200"}, map[string]any{"type": "int", "value": "500"}}},
		{"/api/v2/search/tag/status/values", []any{
			map[string]any{"type": "keyword", "value": "error"}, map[string]any{"type": "keyword", "value": "ok"}, map[string]any{"type": "keyword", "value": "unset"}}},
		{"/api/v2/search/tag/name/values", sv("GET /checkout", "POST /cart", "SELECT", "call cart", "charge")},
		// q filters values to spans it matches
		{"/api/v2/search/tag/name/values?q=" + urlq(`{ resource.service.name = "cart" }`), sv("POST /cart", "SELECT")},
		{"/api/v2/search/tag/span.http.status_code/values?q=" + urlq(`{ status = error }`), []any{map[string]any{"type": "int", "value": "500"}}},
		{"/api/v2/search/tag/kind/values?q=" + urlq(`{ resource.service.name = "cart" }`), []any{
			map[string]any{"type": "keyword", "value": "client"}, map[string]any{"type": "keyword", "value": "server"}}},
		// an invalid (half-typed) q returns the unfiltered list
		{"/api/v2/search/tag/resource.service.name/values?q=" + urlq(`{ resource.service.name = `), sv("cart", "frontend", "payment")},
		{"/api/v2/search/tag/resource.service.name/values?q=" + urlq(`{}`), sv("cart", "frontend", "payment")},
	}
	for _, c := range cases {
		if got := tv(c.target); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s\n got  %v\n want %v", c.target, got, c.want)
		}
	}
	fk := tv("/api/v2/search/tag/finding.kind/values")
	if len(fk) == 0 {
		t.Error("finding.kind values empty (from analyze.Kinds)")
	}
	if rec := do(t, h, "/api/v2/search/tag/not%20valid%20%7B/values"); rec.Code != 400 {
		t.Errorf("invalid tag name: %d", rec.Code)
	}
}

func TestQueryRange(t *testing.T) {
	h := newTestHandler(t, Options{})
	res := getJSON(t, h, "/api/metrics/query_range?q="+urlq(`{ } | count_over_time() by(resource.service.name)`)+"&start=1700000000&end=1700000200&step=100s")
	series := path(t, res, "series").([]any)
	if len(series) != 3 {
		t.Fatalf("want 3 series, got %d", len(series))
	}
	// Sorted by labels: cart, frontend, payment.
	s0 := series[0].(map[string]any)
	if got := path(t, s0, "labels"); !reflect.DeepEqual(got, []any{map[string]any{"key": "resource.service.name", "value": map[string]any{"stringValue": "cart"}}}) {
		t.Errorf("labels %v", got)
	}
	if got := s0["samples"]; !reflect.DeepEqual(got, []any{
		map[string]any{"timestampMs": "1700000000000", "value": float64(2)},
		map[string]any{"timestampMs": "1700000100000", "value": float64(0)},
	}) {
		t.Errorf("samples %v", got)
	}
	if got, ok := s0["exemplars"].([]any); !ok || len(got) != 0 {
		t.Errorf("exemplars %v", s0["exemplars"])
	}
	if s0["promLabels"] != `{resource.service.name="cart"}` {
		t.Errorf("promLabels %v", s0["promLabels"])
	}
	pay := series[2].(map[string]any)
	if got := path(t, pay, "samples", 1, "value"); got != float64(1) {
		t.Errorf("payment second bucket %v", got)
	}

	res = getJSON(t, h, "/api/metrics/query_range?q="+urlq(`{ kind = server } | rate()`)+"&start=1700000000&end=1700000010&step=5s")
	s := path(t, res, "series", 0).(map[string]any)
	if got := path(t, s, "labels", 0); !reflect.DeepEqual(got, map[string]any{"key": "__name__", "value": map[string]any{"stringValue": "rate"}}) {
		t.Errorf("rate label %v", got)
	}
	if got := path(t, s, "samples", 0, "value"); got != 0.4 { // 2 server spans / 5 s
		t.Errorf("rate %v", got)
	}

	res = getJSON(t, h, "/api/metrics/query_range?q="+urlq(`{ kind = server } | quantile_over_time(duration, .5, .99) by(resource.service.name)`)+"&start=1700000000&end=1700000200&step=200")
	series = path(t, res, "series").([]any)
	if len(series) != 6 {
		t.Fatalf("quantiles: want 2 per service x 3, got %d", len(series))
	}
	lbl := path(t, series[0], "labels").([]any)
	if len(lbl) != 2 || path(t, lbl[1], "key") != "p" || path(t, lbl[1], "value", "doubleValue") != 0.5 {
		t.Errorf("quantile labels %v", lbl)
	}
	if got := path(t, series[0], "samples", 0, "value"); got != 0.27 { // POST /cart: 270 ms in seconds
		t.Errorf("cart p50 %v", got)
	}

	inst := getJSON(t, h, "/api/metrics/query?q="+urlq(`{ } | count_over_time()`)+"&start=1700000000&end=1700000200")
	if got := path(t, inst, "series", 0, "value"); got != float64(5) {
		t.Errorf("instant count %v", got)
	}
}

func TestQueryRangeErrors(t *testing.T) {
	h := newTestHandler(t, Options{})
	for _, c := range []struct{ target, contains string }{
		{"/api/metrics/query_range", "missing q"},
		{"/api/metrics/query_range?q=" + urlq(`{ }`), "not a metrics query"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate(`), "parse error"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate()`) + "&step=-1", "invalid step"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate()`) + "&step=soon", "invalid step"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate()`) + "&start=yesterday", "invalid start"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate()`) + "&start=20&end=10", "start must be before end"},
		{"/api/metrics/query_range?q=" + urlq(`{ } | rate()`) + "&start=0&end=100000&step=1ms", "maximum"},
	} {
		rec := do(t, h, c.target)
		if rec.Code != 400 || !strings.Contains(body(rec), c.contains) {
			t.Errorf("%s: %d %q, want 400 containing %q", c.target, rec.Code, body(rec), c.contains)
		}
	}
	// Defaults: end=now, start=now-1h, step chosen automatically.
	res := getJSON(t, h, "/api/metrics/query_range?q="+urlq(`{ } | count_over_time()`))
	if _, ok := res["series"]; !ok {
		t.Error("defaults: no series key")
	}
}

func TestDefaultStep(t *testing.T) {
	const s = uint64(1e9)
	for _, c := range []struct{ rng, want uint64 }{
		{3600 * s, 15 * s},       // 1 h / 240 = 15 s -> multiple of 5 s
		{24 * 3600 * s, 300 * s}, // 6 min -> multiple of 5 min
		{30 * s, s / 8},          // 125 ms -> 100 ms (50 ms grid)
	} {
		got := defaultStep(1000*s, 1000*s+c.rng)
		if c.rng == 30*s {
			c.want = 100 * s / 1000
		}
		if got != c.want {
			t.Errorf("range %v: step %v, want %v", c.rng, got, c.want)
		}
	}
}

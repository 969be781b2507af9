package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/alerting/alertingtest"
	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/red"
)

// fakeFindings answers List from a slice, honouring the query's filters.
type fakeFindings struct {
	mu   sync.Mutex
	list []findingstore.Stored // newest first, as the store lists them
}

func (f *fakeFindings) List(_ context.Context, q findingstore.Query) ([]findingstore.Stored, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []findingstore.Stored
	for _, s := range f.list {
		if len(out) == q.Limit && q.Limit > 0 {
			break
		}
		if !q.From.IsZero() && s.Time.Before(q.From) || !q.To.IsZero() && !s.Time.Before(q.To) || q.Service != "" && s.Service != q.Service ||
			q.Kind != "" && !strings.Contains(","+q.Kind+",", ","+s.Kind+",") || q.Systemic != nil && *q.Systemic != s.Systemic {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

func nPlusOne(n int, at time.Time) []findingstore.Stored {
	out := make([]findingstore.Stored, n)
	for i := range out {
		out[i] = findingstore.Stored{
			Finding: analyze.Finding{Kind: "n_plus_one_query", Severity: analyze.SeverityWarning, Title: "12 SELECTs in a loop",
				TraceID: "0af7651916cd43dd8448eb211c80319c", ImpactMS: float64(10 + i),
				Culprit: &analyze.Culprit{Service: "orders", Operation: "GET /orders", SpanID: "b7ad6b7169203331", Reason: "the loop issues one query per item"}},
			Time: at, Service: "checkout", Operation: "SELECT items", ID: uint64(i + 1),
		}
	}
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var quiet = slog.New(slog.DiscardHandler)

func newHook(t *testing.T, secret string) *alertingtest.Receiver { return alertingtest.New(t, secret) }

// waitAnswered waits until m has its receivers' answers to the
// notifications it sent. A receiver has the request before that, and what
// the manager does next (resend, hand over, restart) depends on the
// answer and on the clock's time when it came.
func waitAnswered(t *testing.T, m *Manager) {
	t.Helper()
	waitFor(t, "the receivers' answers", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, keys := range m.inflight {
			if len(keys) > 0 {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func parseRules(t *testing.T, doc string) []Rule {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	rules, err := ParseRules(n.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

const checkoutRule = `
- alert: CheckoutNPlusOne
  for: 30s
  labels: {severity: page}
  annotations:
    description: "{{ .Value }} N+1 on {{ .Labels.service }}; fix {{ .Culprit.Service }} {{ .Culprit.Operation }}"
  findings: {kind: n_plus_one_query, service: checkout, more_than: 20, window: 10m}
`

type harness struct {
	m    *Manager
	clk  *clock
	fs   *fakeFindings
	ctx  context.Context
	stop context.CancelFunc
	wg   *sync.WaitGroup
	reg  *prometheus.Registry
}

// newHarness starts a manager over a store that holds stored (what a
// restarted server finds) at 10:00.
func newHarness(t *testing.T, dir string, rules []Rule, stored []findingstore.Stored, hooks ...*alertingtest.Receiver) *harness {
	t.Helper()
	h := &harness{clk: &clock{t: t0}, fs: &fakeFindings{list: stored}, reg: prometheus.NewRegistry()}
	var recv []Receiver
	for _, hk := range hooks {
		w, err := NewWebhook(hk.URL(), hk.Secret(), hk.Client())
		if err != nil {
			t.Fatal(err)
		}
		recv = append(recv, w)
	}
	m, err := New(Options{Rules: rules, Dir: dir, Receivers: recv, Findings: h.fs, Registerer: h.reg,
		Now: h.clk.now, ExternalURL: "http://tracedx.example:16686/", Backoff: 5 * time.Millisecond, Attempts: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	h.ctx, h.stop = context.WithCancel(context.Background())
	h.wg = m.startReceivers(h.ctx)
	t.Cleanup(h.close)
	return h
}

var t0 = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// feed stores n N+1 findings in checkout now.
func (h *harness) feed(n int) { h.m.ObserveFindings(nPlusOne(n, h.clk.now())) }

func (h *harness) close() {
	h.stop()
	h.wg.Wait()
}

func TestFindingsRuleLifecycleAndWebhook(t *testing.T) {
	hk := newHook(t, "s3cret")
	const rule = "CheckoutNPlusOne"
	h := newHarness(t, t.TempDir(), parseRules(t, checkoutRule), nil, hk)
	ctx := context.Background()

	h.feed(20)
	h.m.Evaluate(ctx)
	if v := h.m.Alerts(); len(v.Pending)+len(v.Firing) != 0 {
		t.Fatalf("20 findings is not more than 20: %+v", v)
	}
	h.feed(1)
	h.m.Evaluate(ctx)
	v := h.m.Alerts()
	if len(v.Pending) != 1 || len(v.Firing) != 0 {
		t.Fatalf("want one pending alert, got %+v", v)
	}
	h.clk.add(15 * time.Second)
	h.m.Evaluate(ctx)
	if len(h.m.Alerts().Firing) != 0 {
		t.Fatal("fired before its for: 30s")
	}
	h.clk.add(15 * time.Second)
	h.m.Evaluate(ctx)
	v = h.m.Alerts()
	if len(v.Firing) != 1 {
		t.Fatalf("want firing after 30s, got %+v", v)
	}
	a := v.Firing[0]
	if a.Labels["alertname"] != "CheckoutNPlusOne" || a.Labels["service"] != "checkout" || a.Labels["kind"] != "n_plus_one_query" || a.Labels["severity"] != "page" {
		t.Errorf("labels: %v", a.Labels)
	}
	if a.Annotations["culprit"] != "orders GET /orders" || a.Annotations["culprit_span_id"] != "b7ad6b7169203331" {
		t.Errorf("the culprit of the top finding must be named: %v", a.Annotations)
	}
	if want := "21 N+1 on checkout; fix orders GET /orders"; a.Annotations["description"] != want {
		t.Errorf("template: %q, want %q", a.Annotations["description"], want)
	}
	if !strings.HasPrefix(a.Annotations["trace_url"], "http://tracedx.example:16686/trace/0af76519") ||
		!strings.Contains(a.Annotations["finding_url"], "/findings?kind=n_plus_one_query&service=checkout") ||
		!strings.Contains(a.Annotations["compare_url"], "/compare?operation=GET+%2Forders&selection=slow&service=orders") {
		t.Errorf("links: %v", a.Annotations)
	}
	waitFor(t, "the firing webhook", func() bool { return len(hk.Statuses("")) == 1 })
	waitAnswered(t, h.m)
	got := hk.Alerts(rule)[0]
	if ann, _ := got["annotations"].(map[string]any); got["status"] != "firing" || ann["culprit"] != "orders GET /orders" {
		t.Errorf("webhook got %+v", got)
	}
	if out := gauge(t, h.reg, "tracedx_alerts", "alertstate", "firing"); out != 1 {
		t.Errorf("tracedx_alerts: %v", out)
	}

	// Still firing: a webhook hears of it once, however often it is evaluated.
	for i := 0; i < 5; i++ {
		h.clk.add(time.Minute)
		h.feed(1)
		h.m.Evaluate(ctx)
	}
	if v := h.m.Alerts().Firing[0].Value; v != 26 {
		t.Errorf("value %v, want the 26 findings of the window", v)
	}
	time.Sleep(50 * time.Millisecond)
	if got := hk.Statuses(""); len(got) != 1 {
		t.Fatalf("webhook calls while firing: %v, want just the first", got)
	}

	// Ten minutes without a new finding: the window is empty.
	h.clk.add(10 * time.Minute)
	h.m.Evaluate(ctx)
	v = h.m.Alerts()
	if len(v.Firing) != 0 || len(v.History) != 1 || v.History[0].State != StateResolved {
		t.Fatalf("want resolved in history: %+v", v)
	}
	waitFor(t, "the resolve", func() bool { return len(hk.Statuses("")) == 2 })
	if got := hk.Statuses(""); got[1] != "resolved" {
		t.Errorf("webhook statuses %v", got)
	}
	if n := hk.BadSignatures(); n != 0 {
		t.Errorf("%d webhook calls with a bad signature", n)
	}
}

func TestRestartNeitherRepeatsNorLoses(t *testing.T) {
	dir := t.TempDir()
	hk := newHook(t, "")
	rules := parseRules(t, strings.Replace(checkoutRule, "for: 30s", "for: 0s", 1))
	h := newHarness(t, dir, rules, nil, hk)
	h.feed(30)
	h.m.Evaluate(context.Background())
	waitFor(t, "firing", func() bool { return len(hk.Statuses("")) == 1 })
	// A stop before the manager has the webhook's answer leaves the
	// notification to be offered again (at least once, by design).
	waitAnswered(t, h.m)
	firedAt := h.m.Alerts().Firing[0].FiredAt
	h.close()

	// Restart while firing: the alert is still firing from the same time,
	// its findings are counted again from the store, and the webhook hears
	// nothing new.
	stored := nPlusOne(30, t0)
	h2 := newHarness(t, dir, rules, stored, hk)
	h2.clk.t = h.clk.now().Add(time.Minute)
	v := h2.m.Alerts()
	if len(v.Firing) != 1 || !v.Firing[0].FiredAt.Equal(firedAt) {
		t.Fatalf("firing alert lost over a restart: %+v", v)
	}
	h2.m.Evaluate(context.Background())
	if v := h2.m.Alerts(); len(v.Firing) != 1 || v.Firing[0].Value != 30 {
		t.Fatalf("after the restart the stored findings must count: %+v", v)
	}
	time.Sleep(50 * time.Millisecond)
	if got := hk.Statuses(""); len(got) != 1 {
		t.Fatalf("restart repeated the notification: %v", got)
	}

	// Resolve while the webhook is down, then restart before it is back:
	// the resolve survives and is delivered.
	hk.SetDown(true)
	h2.clk.add(10 * time.Minute)
	h2.m.Evaluate(context.Background())
	time.Sleep(50 * time.Millisecond)
	h2.close()
	hk.SetDown(false)
	h3 := newHarness(t, dir, rules, stored, hk)
	h3.clk.t = h2.clk.now().Add(time.Minute)
	h3.m.Evaluate(context.Background())
	waitFor(t, "the resolve after restart", func() bool { return len(hk.Statuses("")) == 2 })
	if got := hk.Statuses(""); got[1] != "resolved" {
		t.Fatalf("statuses %v", got)
	}
	h3.m.Evaluate(context.Background())
	time.Sleep(50 * time.Millisecond)
	if got := hk.Statuses(""); len(got) != 2 {
		t.Fatalf("resolve delivered twice: %v", got)
	}
}

func TestDownReceiverDelaysNothingElse(t *testing.T) {
	up, down := newHook(t, ""), newHook(t, "")
	down.SetDown(true)
	// A third receiver that hangs: its queue fills, evaluation goes on.
	hang := alertingtest.NewHanging(t)
	rules := parseRules(t, strings.Replace(checkoutRule, "for: 30s", "for: 0s", 1))
	h := newHarness(t, t.TempDir(), rules, nil, up, down, hang)
	h.feed(30)
	start := time.Now()
	for i := 0; i < 200; i++ {
		h.m.Evaluate(context.Background())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("200 evaluations took %s with a hanging receiver", d)
	}
	waitFor(t, "the healthy receiver", func() bool { return len(up.Statuses("")) == 1 })
	down.SetDown(false)
	waitFor(t, "the receiver that came back", func() bool {
		h.m.Evaluate(context.Background())
		return len(down.Statuses("")) == 1
	})
	if got := up.Statuses(""); len(got) != 1 {
		t.Errorf("healthy receiver got %v", got)
	}
}

func TestAlertmanagerResends(t *testing.T) {
	var mu sync.Mutex
	var posts [][]map[string]any
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/alerts" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		// Alertmanager's own decoding and validation, as its API does.
		var typed models.PostableAlerts
		if err := json.Unmarshal(raw, &typed); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := typed.Validate(strfmt.Default); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var body []map[string]any
		_ = json.Unmarshal(raw, &body)
		mu.Lock()
		posts = append(posts, body)
		mu.Unlock()
	}))
	defer am.Close()
	clk := &clock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
	recv, err := NewAlertmanager(am.URL, time.Minute, am.Client())
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Rules: parseRules(t, strings.Replace(checkoutRule, "for: 30s", "for: 0s", 1)),
		Receivers: []Receiver{recv}, Now: clk.now, ExternalURL: "http://x", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.startReceivers(ctx)
	n := func() int { mu.Lock(); defer mu.Unlock(); return len(posts) }
	m.ObserveFindings(nPlusOne(30, clk.now()))
	m.Evaluate(ctx)
	waitFor(t, "first post", func() bool { return n() == 1 })
	waitAnswered(t, m)
	clk.add(30 * time.Second)
	m.Evaluate(ctx)
	time.Sleep(30 * time.Millisecond)
	if n() != 1 {
		t.Fatalf("resent before the resend interval")
	}
	clk.add(31 * time.Second)
	m.Evaluate(ctx)
	waitFor(t, "resend", func() bool { return n() == 2 })
	waitAnswered(t, m)
	mu.Lock()
	first := posts[0][0]
	mu.Unlock()
	if first["startsAt"] != "2026-12-06T10:00:00.000Z" || first["endsAt"] != "2026-12-06T10:04:00.000Z" ||
		first["generatorURL"] != "http://x/alerts?rule=CheckoutNPlusOne" {
		t.Errorf("posted %v", first)
	}
	clk.add(10 * time.Minute)
	m.Evaluate(ctx)
	waitFor(t, "resolve", func() bool { return n() == 3 })
	mu.Lock()
	last := posts[2][0]
	mu.Unlock()
	if last["endsAt"] != "2026-12-06T10:11:01.000Z" {
		t.Errorf("resolve must end at the resolve time: %v", last)
	}
}

func TestBadRulesAreNamed(t *testing.T) {
	cases := map[string]string{
		"- alert: A\n  findings: {window: 0s}\n":                                   `alert rule "A": findings.window`,
		"- alert: B\n  red: {window: 5m, error_ratio_above: 2}\n":                  `alert rule "B": red.error_ratio_above`,
		"- alert: C\n  red: {window: 5m}\n":                                        `alert rule "C": red: needs exactly one`,
		"- alert: D\n  slo: {objective: 99.9}\n":                                   `alert rule "D": slo.objective`,
		"- alert: E\n  findings: {window: 1m, min_severity: loud}\n":               `alert rule "E": findings.min_severity`,
		"- alert: F\n  annotations: {x: '{{ .Labels'}\n  findings: {window: 1m}\n": `alert rule "F": annotations.x`,
		"- alert: G\n":               `alert rule "G": needs exactly one of`,
		"- findings: {window: 1m}\n": `alert rule "#1": alert:`,
		"- alert: H\n  slo: {objective: 0.99, windows: [{long: 5m, short: 1h, factor: 2}]}\n": `alert rule "H": slo.windows[0]`,
	}
	for doc, want := range cases {
		err := Validate(parseRules(t, doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want it to contain %q", doc, err, want)
		}
	}
	var n yaml.Node
	_ = yaml.Unmarshal([]byte("- alert: X\n  findings: {windw: 1m}\n"), &n)
	if _, err := ParseRules(n.Content[0]); err == nil || !strings.Contains(err.Error(), "windw") {
		t.Errorf("unknown field: %v", err)
	}
	if err := Validate(DefaultRules()); err != nil {
		t.Errorf("default rules: %v", err)
	}
}

// fakeRED holds per-window counts keyed by window length.
type fakeRED map[time.Duration][]red.EntryCounts

func (f fakeRED) EntryOperationCounts(_ string, start, end time.Time, _ float64) ([]red.EntryCounts, error) {
	return f[end.Sub(start)], nil
}

func TestSLOBurnNeedsBothWindows(t *testing.T) {
	op := func(count, errs uint64) []red.EntryCounts {
		return []red.EntryCounts{{Service: "checkout", Operation: "POST /checkout", Count: count, Errors: errs}}
	}
	rule := parseRules(t, "- alert: Burn\n  slo: {objective: 0.999, min_requests: 100}\n")
	if err := Validate(rule); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	eval := func(src fakeRED) []sample {
		e := &evaluator{red: src, now: now, cache: map[redKey][]red.EntryCounts{}}
		s, err := e.eval(&rule[0])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// 1.5% errors = 15x the 0.1% budget in the last hour and 5 minutes.
	if s := eval(fakeRED{time.Hour: op(10000, 150), 5 * time.Minute: op(800, 12)}); len(s) != 1 || s[0].value < 14.4 {
		t.Fatalf("fast burn missed: %+v", s)
	}
	// The hour burned, the last 5 minutes are clean: already over.
	if s := eval(fakeRED{time.Hour: op(10000, 150), 5 * time.Minute: op(800, 0)}); len(s) != 0 {
		t.Fatalf("fired on the long window alone: %+v", s)
	}
	// 1.3% (13x) is under the fast factor, over the slow one (6x) when 6h and 30m agree.
	if s := eval(fakeRED{time.Hour: op(10000, 130), 5 * time.Minute: op(800, 11),
		6 * time.Hour: op(60000, 700), 30 * time.Minute: op(5000, 60)}); len(s) != 1 || !strings.Contains(s[0].impact, "6h/30m") {
		t.Fatalf("slow burn missed: %+v", s)
	}
	// A latency objective counts the slow requests, not the failed ones.
	lat := parseRules(t, "- alert: Lat\n  slo: {objective: 0.99, latency_ms: 300, windows: [{long: 1h, short: 5m, factor: 14.4}]}\n")
	if err := Validate(lat); err != nil {
		t.Fatal(err)
	}
	slow := func(count, slow uint64) []red.EntryCounts {
		return []red.EntryCounts{{Service: "checkout", Operation: "POST /checkout", Count: count, Errors: count / 2, Slow: slow}}
	}
	e := &evaluator{red: fakeRED{time.Hour: slow(1000, 100), 5 * time.Minute: slow(100, 20)}, now: now, cache: map[redKey][]red.EntryCounts{}}
	if s, err := e.eval(&lat[0]); err != nil || len(s) != 0 {
		t.Fatalf("10%% slow is 10x a 1%% budget, under the factor: must not fire: %+v %v", s, err)
	}
	e = &evaluator{red: fakeRED{time.Hour: slow(1000, 150), 5 * time.Minute: slow(100, 20)}, now: now, cache: map[redKey][]red.EntryCounts{}}
	if s, _ := e.eval(&lat[0]); len(s) != 1 || s[0].value != 15 || s[0].compareSelection != "slow" {
		t.Fatalf("15%% slow over the hour, 20%% over 5 min: fires at 15x: %+v", s)
	}
	// Too little traffic is not judged.
	if s := eval(fakeRED{time.Hour: op(50, 50), 5 * time.Minute: op(5, 5)}); len(s) != 0 {
		t.Fatalf("judged an endpoint without enough traffic: %+v", s)
	}
}

func TestREDConditions(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 30, 0, time.UTC)
	rules := parseRules(t, `
- alert: Errors
  red: {service: cart, window: 5m, error_ratio_above: 0.05, min_requests: 10}
- alert: Slow
  red: {window: 5m, latency_above_ms: 500, percentile: 95}
- alert: Drop
  red: {window: 10m, rate_drop_below: 0.5, baseline: 1h}
`)
	if err := Validate(rules); err != nil {
		t.Fatal(err)
	}
	src := fakeRED{
		5 * time.Minute: {{Service: "cart", Operation: "GET /cart", Count: 100, Errors: 6, P95MS: 700},
			{Service: "pay", Operation: "POST /pay", Count: 100, Errors: 50, P95MS: 100}},
		10 * time.Minute: {{Service: "cart", Operation: "GET /cart", Count: 300}},
		time.Hour:        {{Service: "cart", Operation: "GET /cart", Count: 6000}, {Service: "gone", Operation: "GET /", Count: 600}},
	}
	e := &evaluator{red: src, now: now, cache: map[redKey][]red.EntryCounts{}}
	got := map[string][]string{}
	for i := range rules {
		s, err := e.eval(&rules[i])
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range s {
			got[rules[i].Name] = append(got[rules[i].Name], x.labels["service"])
		}
	}
	// pay is excluded by the service filter; cart's 6% breaks 5%.
	if len(got["Errors"]) != 1 || got["Errors"][0] != "cart" {
		t.Errorf("Errors: %v", got["Errors"])
	}
	if len(got["Slow"]) != 1 || got["Slow"][0] != "cart" {
		t.Errorf("Slow: %v", got["Slow"])
	}
	// cart: 0.5/s against 1.67/s; gone: no request at all against 0.17/s.
	if strings.Join(got["Drop"], ",") != "cart,gone" && strings.Join(got["Drop"], ",") != "gone,cart" {
		t.Errorf("Drop: %v", got["Drop"])
	}
}

func TestCrossTraceFindingsAreAlertsOfTheirOwn(t *testing.T) {
	rules := DefaultRules()
	if err := Validate(rules); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "", rules, nil)
	now := h.clk.now()
	h.m.ObserveFindings([]findingstore.Stored{
		{Finding: analyze.Finding{Kind: "latency_regression", Severity: analyze.SeverityWarning, Title: "GET /cart is 3x slower", ImpactMS: 240},
			Time: now, Service: "cart", Operation: "GET /cart", Systemic: true, ExampleTraceIDs: []string{"4bf92f3577b34da6a3ce929d0e0e4736"}},
		{Finding: analyze.Finding{Kind: "missing_service", Severity: analyze.SeverityCritical, Title: "inventory stopped answering"},
			Time: now, Service: "inventory", Systemic: true},
		{Finding: analyze.Finding{Kind: "new_error_type", Severity: analyze.SeverityInfo, Title: "below the default's severity"},
			Time: now, Service: "cart", Systemic: true},
		// Two findings of one kind and service, told apart by their keys.
		{Finding: analyze.Finding{Kind: "new_error_type", Severity: analyze.SeverityWarning, Title: "TimeoutError"},
			Time: now, Service: "pay", Systemic: true, Key: "new_error_type/pay/TimeoutError"},
		{Finding: analyze.Finding{Kind: "new_error_type", Severity: analyze.SeverityWarning, Title: "CardDeclined"},
			Time: now, Service: "pay", Systemic: true, Key: "new_error_type/pay/CardDeclined"},
	})
	h.m.Evaluate(context.Background())
	v := h.m.Alerts()
	kinds := map[string]Alert{}
	for _, a := range v.Firing {
		kinds[a.Labels["kind"]] = a
	}
	if len(v.Firing) != 4 || kinds["latency_regression"].Rule != "TracedxCrossTraceFinding" || kinds["missing_service"].Rule != "TracedxCrossTraceFinding" {
		t.Fatalf("want one alert per cross-trace finding of warning and above: %+v", v.Firing)
	}
	if kinds["missing_service"].Labels["severity"] != "critical" || kinds["latency_regression"].Labels["severity"] != "warning" {
		t.Errorf("cross-trace alerts carry their finding's severity: %v %v", kinds["missing_service"].Labels, kinds["latency_regression"].Labels)
	}
	lr := kinds["latency_regression"]
	if lr.Annotations["culprit"] != "cart GET /cart" || !strings.HasSuffix(lr.Annotations["trace_url"], "/trace/4bf92f3577b34da6a3ce929d0e0e4736") ||
		!strings.Contains(lr.Annotations["compare_url"], "/compare?operation=GET+%2Fcart&selection=slow&service=cart") {
		t.Errorf("annotations: %v", lr.Annotations)
	}
	rg := h.m.Rules()
	if len(rg.Groups) != 1 || len(rg.Groups[0].Rules) != 3 || rg.Groups[0].Rules[1].State != "firing" || rg.Groups[0].Rules[1].Health != "ok" {
		t.Errorf("rules view: %+v", rg)
	}
}

func TestFindingsCounter(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewFindingsCounter(reg)
	var stored, observed int
	c.OnStored(func(l []findingstore.Stored) { observed += len(l) })
	sink := c.Wrap(putFunc(func(l []findingstore.Stored) { stored += len(l) }))
	if err := sink.Put(context.Background(), nPlusOne(3, time.Now())); err != nil {
		t.Fatal(err)
	}
	if stored != 3 || observed != 3 {
		t.Errorf("stored %d, observed %d; want 3 and 3", stored, observed)
	}
	if got := gauge(t, reg, "tracedx_findings_total", "severity", "warning"); got != 3 {
		t.Errorf("tracedx_findings_total = %v, want 3", got)
	}
}

type putFunc func([]findingstore.Stored)

func (f putFunc) Put(_ context.Context, l []findingstore.Stored) error { f(l); return nil }

// gauge sums the samples of a metric whose label has value.
func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// countingRED counts the scans per window length.
type countingRED struct {
	fakeRED
	mu    sync.Mutex
	scans map[time.Duration]int
}

func (c *countingRED) EntryOperationCounts(s string, start, end time.Time, slow float64) ([]red.EntryCounts, error) {
	c.mu.Lock()
	c.scans[end.Sub(start)]++
	c.mu.Unlock()
	return c.fakeRED.EntryOperationCounts(s, start, end, slow)
}

// Long windows are rescanned every sixtieth of their length, short ones at
// every evaluation.
func TestLongWindowsAreReusedBriefly(t *testing.T) {
	src := &countingRED{fakeRED: fakeRED{}, scans: map[time.Duration]int{}}
	clk := &clock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
	m, err := New(Options{Rules: parseRules(t, "- alert: Burn\n  slo: {objective: 0.999}\n"), RED: src, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 24; i++ { // 6 minutes at 15 s
		m.Evaluate(context.Background())
		clk.add(15 * time.Second)
	}
	want := map[time.Duration]int{5 * time.Minute: 24, 30 * time.Minute: 12, time.Hour: 6, 6 * time.Hour: 1}
	for w, n := range want {
		if src.scans[w] != n {
			t.Errorf("window %s scanned %d times in 6 min, want %d (all: %v)", w, src.scans[w], n, src.scans)
		}
	}
}

// The window counts every finding, however many, by severity, and reads
// the store once at start, a page at a time.
func TestFindingsWindowCountsExactly(t *testing.T) {
	var stored []findingstore.Stored
	for i := 0; i < 25_000; i++ { // newest first, 1 ms apart
		f := nPlusOne(1, t0.Add(-time.Duration(i)*time.Millisecond))[0]
		f.ID = uint64(25_000 - i)
		if i%1000 == 0 {
			f.Severity = analyze.SeverityCritical
		}
		stored = append(stored, f)
	}
	rules := parseRules(t, `
- alert: All
  findings: {kind: n_plus_one_query, more_than: 24999, window: 1m}
- alert: Critical
  findings: {min_severity: critical, window: 1m}
`)
	h := newHarness(t, "", rules, stored)
	h.m.Evaluate(context.Background())
	got := map[string]float64{}
	for _, a := range h.m.Alerts().Firing {
		got[a.Rule] = a.Value
	}
	if got["All"] != 25_000 || got["Critical"] != 25 {
		t.Fatalf("counts %v, want All 25000 (seeded over 3 pages) and Critical 25", got)
	}
	h.feed(5)
	h.m.Evaluate(context.Background())
	if v := h.m.Alerts().Firing; len(v) != 2 {
		t.Fatalf("firing %+v", v)
	}
	for _, a := range h.m.Alerts().Firing {
		if a.Rule == "All" && a.Value != 25_005 {
			t.Errorf("new findings must add to the seeded ones: %v", a.Value)
		}
	}
}

// Receiver names go to logs, metrics and the state file: no password, no
// token from a webhook's path.
func TestReceiverNamesHideSecrets(t *testing.T) {
	am, err := NewAlertmanager("http://admin:hunter2@am.example:9093/", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := NewWebhook("https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{am.Name(), wh.Name()} {
		if strings.Contains(n, "hunter2") || strings.Contains(n, "XXXXSECRET") || strings.Contains(n, "token=") {
			t.Errorf("receiver name leaks a secret: %q", n)
		}
	}
	if !strings.Contains(am.Name(), "am.example:9093") || !strings.Contains(wh.Name(), "hooks.example.com") {
		t.Errorf("names should still say where: %q %q", am.Name(), wh.Name())
	}
	if _, err := NewWebhook("hooks.example.com/x", "", nil); err == nil {
		t.Error("a webhook URL without a scheme must be refused")
	}
}

// failingRED fails while broken is set.
type failingRED struct {
	fakeRED
	broken bool
}

func (f *failingRED) EntryOperationCounts(s string, start, end time.Time, slow float64) ([]red.EntryCounts, error) {
	if f.broken {
		return nil, errors.New("reading day file red-20261206.jsonl.gz: unexpected EOF")
	}
	return f.fakeRED.EntryOperationCounts(s, start, end, slow)
}

// A rule whose evaluation fails keeps its alerts as they were and says why
// in the rules API; a template that fails says so in its annotation.
func TestFailedEvaluationChangesNothing(t *testing.T) {
	src := &failingRED{fakeRED: fakeRED{5 * time.Minute: {{Service: "cart", Operation: "GET /cart", Count: 100, Errors: 50}}}}
	clk := &clock{t: t0}
	rules := parseRules(t, "- alert: CartErrors\n  annotations: {bad: '{{ index .Labels 3 }}'}\n  red: {window: 5m, error_ratio_above: 0.1}\n")
	m, err := New(Options{Rules: rules, RED: src, Now: clk.now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	m.Evaluate(context.Background())
	v := m.Alerts()
	if len(v.Firing) != 1 || !strings.HasPrefix(v.Firing[0].Annotations["bad"], "template error:") {
		t.Fatalf("want firing with a template error in its annotation: %+v", v)
	}
	src.broken = true
	clk.add(time.Minute)
	m.Evaluate(context.Background())
	if len(m.Alerts().Firing) != 1 {
		t.Fatal("a failed evaluation resolved the alert")
	}
	r := m.Rules().Groups[0].Rules[0]
	if r.Health != "err" || !strings.Contains(r.LastError, "unexpected EOF") || r.State != "firing" {
		t.Errorf("rule state: %+v", r)
	}
}

// A RED alert names the root-cause ranking's top cause of its endpoint,
// which may be another service (the error starts in payments, the alert is
// on checkout), and the ranking is asked once a minute, not every
// evaluation.
func TestREDAlertNamesTheRankedCulprit(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 30, 0, time.UTC)
	rules := parseRules(t, "- alert: Errors\n  red: {service: checkout, window: 5m, error_ratio_above: 0.05, min_requests: 10}\n")
	if err := Validate(rules); err != nil {
		t.Fatal(err)
	}
	src := fakeRED{5 * time.Minute: {{Service: "checkout", Operation: "POST /checkout", Count: 100, Errors: 30}}}
	asked := 0
	m := &Manager{opt: Options{RootCause: func(_ context.Context, service, operation string, from, to time.Time) (analyze.Culprit, bool) {
		asked++
		if service != "checkout" || operation != "POST /checkout" || to.Sub(from) != blameWindow {
			t.Errorf("ranking asked for %s %s over %s", service, operation, to.Sub(from))
		}
		return analyze.Culprit{Service: "payments", Operation: "POST /charge", Reason: "error origins rose."}, true
	}}}
	for i, at := range []time.Time{now, now.Add(15 * time.Second), now.Add(rankTTL + time.Second)} {
		e := &evaluator{red: src, window: newFindingsWindow(time.Hour), now: at, cache: map[redKey][]red.EntryCounts{}, rank: m.rankedCulprit(context.Background(), at)}
		s, err := e.eval(&rules[0])
		if err != nil || len(s) != 1 {
			t.Fatalf("evaluation %d: %+v %v", i, s, err)
		}
		if c := s[0].culprit; c.Service != "payments" || c.Operation != "POST /charge" {
			t.Errorf("evaluation %d: culprit %+v, want the ranking's top cause", i, c)
		}
	}
	if asked != 2 {
		t.Errorf("ranking asked %d times over three evaluations within %s and one after, want 2", asked, rankTTL)
	}
	// Without the ranking the operation itself is named.
	e := &evaluator{red: src, window: newFindingsWindow(time.Hour), now: now, cache: map[redKey][]red.EntryCounts{}}
	if s, _ := e.eval(&rules[0]); len(s) != 1 || s[0].culprit.Service != "checkout" {
		t.Errorf("without ranking: %+v", s)
	}
}

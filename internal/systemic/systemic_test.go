package systemic

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

type found struct {
	at time.Time
	f  Finding
}

// sim drives a detector with shop traffic: checkouts at checkoutRate/s and
// product pages at 2/s, evaluating every 10 s of simulated time. inject
// changes the shop at injectAt (nil: healthy all along); burst, when set,
// is called once at injectAt to add extra traces.
type sim struct {
	d            *Detector
	shop         *workload.Shop
	checkoutRate float64
	findings     []found
	nextEval     time.Time
	// split, when set, feeds the traces as the server does: ObserveSpans
	// per ingested batch, ObserveSummary and ObserveTrace per completed
	// trace (split_test.go).
	split *splitFeed
}

func newSim(seed int64) *sim {
	return &sim{d: New(Config{}, nil, nil, nil), shop: workload.New(seed), checkoutRate: 4, nextEval: t0}
}

func (s *sim) observe(spans []model.Span) {
	if s.split != nil {
		s.split.add(s, spans)
		return
	}
	now := workload.End(spans).Add(2 * time.Second) // completion lags the last span
	s.evaluateUntil(now)
	s.d.Observe(now, spans)
}

// evaluateUntil evaluates every 10 s up to now.
func (s *sim) evaluateUntil(now time.Time) {
	for !s.nextEval.After(now) {
		s.evaluate()
	}
}

func (s *sim) evaluate() {
	for _, f := range s.d.Evaluate(s.nextEval) {
		s.findings = append(s.findings, found{s.nextEval, f})
	}
	s.nextEval = s.nextEval.Add(10 * time.Second)
}

// run simulates [from, to).
func (s *sim) run(from, to time.Time) {
	step := time.Duration(float64(time.Second) / s.checkoutRate)
	nextProduct := from
	for t := from; t.Before(to); t = t.Add(step) {
		for nextProduct.Before(t) {
			s.observe(s.shop.Product(nextProduct))
			nextProduct = nextProduct.Add(500 * time.Millisecond)
		}
		s.observe(s.shop.Checkout(t))
	}
}

func (s *sim) before(t time.Time) []found {
	var out []found
	for _, f := range s.findings {
		if f.at.Before(t) {
			out = append(out, f)
		}
	}
	return out
}

func (s *sim) first(kind, key string) *found {
	for i := range s.findings {
		f := &s.findings[i]
		if f.f.Kind == kind && f.f.Key == key {
			return f
		}
	}
	return nil
}

func describe(fs []found) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("\n  " + f.at.Sub(t0).String() + " " + f.f.Kind + " " + f.f.Key + ": " + f.f.Title)
	}
	return b.String()
}

func TestHealthyTrafficHasNoFindings(t *testing.T) {
	t.Parallel()
	s := newSim(1)
	s.run(t0, t0.Add(75*time.Minute))
	if len(s.findings) != 0 {
		t.Fatalf("healthy traffic produced findings:%s", describe(s.findings))
	}
}

// patternCase injects one systemic problem into shop traffic at inject.
type patternCase struct {
	name     string
	change   func(s *sim)
	burst    func(s *sim)
	kind     string
	key      string
	deadline time.Duration
	check    func(t *testing.T, f Finding)
	// culprit is the service the finding must blame.
	culprit string
}

// patternCases are the injected problems, one per pattern, each with the
// finding it must open within deadline.
func patternCases(inject time.Time) []patternCase {
	return []patternCase{
		{name: "n+1 shipped in checkout 1.5.0", kind: "span_count_regression", key: "span_count_regression/frontend/POST /checkout", culprit: "checkout",
			change:   func(s *sim) { s.shop.CheckoutVersion, s.shop.ItemQueries = "1.5.0", 25 },
			deadline: 3 * time.Minute,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(SpanCountEvidence)
				if ev.Service != "checkout" || ev.Version != "1.5.0" || ev.VersionMeanSpans < 2*ev.BaselineMeanSpans || ev.VersionTraces < 10 {
					t.Errorf("evidence %+v: want checkout 1.5.0 and ≥ 2x spans", ev)
				}
				if !strings.Contains(f.Title, "checkout 1.5.0") {
					t.Errorf("title %q lacks the version", f.Title)
				}
			}},
		{name: "big carts got slow", kind: "latency_regression", key: "latency_regression/checkout/POST /api/checkout", culprit: "inventory",
			change:   func(s *sim) { s.shop.SlowBigCarts, s.shop.BigCartShare, s.shop.SlowFactor = true, 0.2, 12 },
			deadline: 3 * time.Minute,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(LatencyEvidence)
				if ev.Factor < 2 || len(ev.Attribution) == 0 || ev.Attribution[0].Label != "product.variant_count > 50" {
					t.Errorf("evidence %+v: want ≥ 2x and product.variant_count > 50 first", ev)
				}
				// The stock lookups got slow: the culprit is inside the endpoint.
				if f.Culprit == nil || f.Culprit.Operation != "SELECT shop.stock" {
					t.Errorf("culprit %+v, want inventory SELECT shop.stock", f.Culprit)
				}
				if f.ImpactMS <= 0 || len(f.ExampleTraceIDs) == 0 {
					t.Errorf("impact %v examples %v", f.ImpactMS, f.ExampleTraceIDs)
				}
			}},
		{name: "payments failing", kind: "error_rate_spike", key: "error_rate_spike/payments/POST /charge", culprit: "payments",
			change:   func(s *sim) { s.shop.ErrorRate = 0.3 },
			deadline: 2 * time.Minute,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(ErrorRateEvidence)
				if ev.ErrorRate <= 0.1 || ev.Errors < 5 || len(f.ExampleTraceIDs) == 0 || len(f.SpanIDs) == 0 {
					t.Errorf("evidence %+v / %+v", ev, f)
				}
			}},
		{name: "new exception type", kind: "new_error_type", key: "new_error_type/payments/FraudCheckUnavailableException", culprit: "payments",
			change:   func(s *sim) { s.shop.ErrorRate, s.shop.ErrorType = 0.02, "FraudCheckUnavailableException" },
			deadline: time.Minute,
			check: func(t *testing.T, f Finding) {
				if len(f.ExampleTraceIDs) != 1 || !strings.Contains(f.Title, "FraudCheckUnavailableException") {
					t.Errorf("finding %+v", f)
				}
			}},
		{name: "recommendations gone", kind: "missing_service", key: "missing_service/frontend/POST /checkout/recommendations", culprit: "checkout",
			change:   func(s *sim) { s.shop.NoRecommendations = true },
			deadline: 6 * time.Minute},
		{name: "checkout traffic drop", kind: "throughput_drop", key: "throughput_drop/frontend/POST /checkout", culprit: "frontend",
			change:   func(s *sim) { s.checkoutRate = 0.5 },
			deadline: 6 * time.Minute,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(ThroughputEvidence)
				if float64(ev.Requests) >= 0.5*ev.Expected {
					t.Errorf("evidence %+v", ev)
				}
			}},
		{name: "cache stampede", kind: "cache_stampede", key: "cache_stampede/frontend GET /product/{id}/product:42", culprit: "catalog",
			burst: func(s *sim) {
				s.shop.CacheMissAll = true
				for i := 0; i < 12; i++ {
					s.observe(s.shop.Product(inject.Add(time.Duration(i) * 100 * time.Millisecond)))
				}
				s.shop.CacheMissAll = false
			},
			deadline: 30 * time.Second,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(StampedeEvidence)
				if ev.Traces < 5 || ev.CacheKey != "product:42" || ev.Rewrites < 5 || ev.FallbackMS < 50 {
					t.Errorf("evidence %+v", ev)
				}
				// What to fix is the read of that key, not any "GET".
				if f.Culprit == nil || f.Culprit.Operation != "GET product:?" || !strings.Contains(f.Culprit.Reason, "SELECT * FROM products") {
					t.Errorf("culprit %+v", f.Culprit)
				}
			}},
		{name: "token expiry race", kind: "auth_expiry_race", key: "auth_expiry_race/auth", culprit: "checkout",
			burst:    authBurst(inject),
			deadline: 30 * time.Second,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(AuthRaceEvidence)
				if ev.Failures < 3 || ev.Successes == 0 || ev.SpreadMS > 5000 || len(ev.Callers) != 1 || ev.Callers[0] != "checkout" {
					t.Errorf("evidence %+v", ev)
				}
			}},
		{name: "token expiry race, target named by the callee only", kind: "auth_expiry_race", key: "auth_expiry_race/auth", culprit: "checkout",
			change:   func(s *sim) { s.shop.UntargetedAuth = true },
			burst:    authBurst(inject),
			deadline: 30 * time.Second,
			check: func(t *testing.T, f Finding) {
				ev := f.Evidence.(AuthRaceEvidence)
				if ev.Target != "auth" || ev.Failures < 3 || ev.Successes == 0 || ev.SpreadMS > 5000 || len(ev.Callers) != 1 || ev.Callers[0] != "checkout" {
					t.Errorf("evidence %+v", ev)
				}
			}},
	}
}

// run simulates 40 minutes of healthy traffic, injects the problem at
// inject and simulates 15 more minutes; the finding must open once,
// within the deadline, and nothing before the injection.
func (c *patternCase) run(t *testing.T, s *sim, inject time.Time) {
	t.Helper()
	s.run(t0, inject)
	if c.change != nil {
		c.change(s)
	}
	if c.burst != nil {
		c.burst(s)
	}
	s.run(inject, inject.Add(15*time.Minute))
	if pre := s.before(inject); len(pre) != 0 {
		t.Fatalf("findings before the injection:%s", describe(pre))
	}
	got := s.first(c.kind, c.key)
	if got == nil {
		t.Fatalf("%s %s not detected; findings:%s", c.kind, c.key, describe(s.findings))
	}
	if lag := got.at.Sub(inject); lag > c.deadline {
		t.Errorf("detected %s after injection, want ≤ %s", lag, c.deadline)
	}
	if n := s.count(c.key); n != 1 {
		t.Errorf("%d findings with key %s, want one (deduplicated):%s", n, c.key, describe(s.findings))
	}
	f := got.f
	if f.Kind != c.kind || !f.Systemic || f.Severity == "" || f.Title == "" || f.Fix == "" {
		t.Errorf("incomplete finding %+v", f)
	}
	if c.check != nil {
		c.check(t, f)
	}
	if f.Culprit == nil || f.Culprit.Service != c.culprit || f.Culprit.Reason == "" {
		t.Errorf("culprit %+v, want service %s with a reason", f.Culprit, c.culprit)
	}
}

func TestInjectedPatterns(t *testing.T) {
	inject := t0.Add(40 * time.Minute)
	for i, c := range patternCases(inject) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, newSim(int64(100+i)), inject)
		})
	}
}

// A finding closes after a quiet window and opens again on recurrence.
func TestReopenAfterQuietWindow(t *testing.T) {
	t.Parallel()
	s := newSim(7)
	s.run(t0, t0.Add(30*time.Minute))
	s.shop.ErrorRate = 0.4
	s.run(t0.Add(30*time.Minute), t0.Add(40*time.Minute))
	s.shop.ErrorRate = 0
	s.run(t0.Add(40*time.Minute), t0.Add(70*time.Minute))
	s.shop.ErrorRate = 0.4
	s.run(t0.Add(70*time.Minute), t0.Add(80*time.Minute))
	n := 0
	for _, f := range s.findings {
		if f.f.Key == "error_rate_spike/payments/POST /charge" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("error spike opened %d times, want 2:%s", n, describe(s.findings))
	}
}

// Run stores findings in the sink on its ticker.
func TestRunStoresFindings(t *testing.T) {
	fs, err := findingstore.Open(findingstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	d := New(Config{EvalInterval: 20 * time.Millisecond, ErrorTypeWarmup: time.Nanosecond}, fs, nil, nil)
	shop := workload.New(3)
	now := time.Now()
	d.Observe(now, shop.Checkout(now))
	time.Sleep(time.Millisecond)
	shop.ErrorRate, shop.ErrorType = 1, "BrandNewException"
	d.Observe(time.Now(), shop.Checkout(time.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	var list []findingstore.Stored
	for time.Now().Before(deadline) {
		list, _ = fs.List(ctx, findingstore.Query{Kind: "new_error_type"})
		if len(list) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	var hit bool
	for _, f := range list {
		if f.Key == "new_error_type/payments/BrandNewException" && f.Systemic {
			hit = true
			b, _ := json.Marshal(f.Evidence)
			if !strings.Contains(string(b), `"exception_type":"BrandNewException"`) {
				t.Errorf("stored evidence %s", b)
			}
		}
	}
	if !hit {
		t.Fatalf("new error type not stored: %+v", list)
	}
}

// authBurst makes half of 20 checkouts over 4 s from inject fail their
// auth call.
func authBurst(inject time.Time) func(*sim) {
	return func(s *sim) {
		s.shop.AuthFailRate = 0.5
		for i := 0; i < 20; i++ {
			s.observe(s.shop.Checkout(inject.Add(time.Duration(i) * 200 * time.Millisecond)))
		}
		s.shop.AuthFailRate = 0
	}
}

// Every error spike a failing payments service causes upstream blames
// payments, where the errors start, not the endpoint that shows them.
func TestErrorSpikeCulpritIsTheOrigin(t *testing.T) {
	t.Parallel()
	s := newSim(9)
	inject := t0.Add(40 * time.Minute)
	s.run(t0, inject)
	s.shop.ErrorRate = 0.3
	s.run(inject, inject.Add(5*time.Minute))
	n := 0
	for _, f := range s.findings {
		if f.f.Kind != "error_rate_spike" {
			continue
		}
		n++
		if f.f.Culprit == nil || f.f.Culprit.Service != "payments" {
			t.Errorf("%s blames %+v, want payments", f.f.Key, f.f.Culprit)
		}
	}
	if n < 2 {
		t.Errorf("%d error spikes, want the payments one and at least one upstream:%s", n, describe(s.findings))
	}
}

package sampling

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

type fixedBaseline map[string]analyze.Baseline

func (f fixedBaseline) OperationDuration(service, op string) (analyze.Baseline, bool) {
	b, ok := f[service+" "+op]
	return b, ok
}

func randomID(rng *rand.Rand) (id model.TraceID) {
	binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
	return id
}

var policy = Policy{KeepErrors: true, KeepFindings: analyze.SeverityWarning, KeepSlowerThan: "p95", Rate: 0.01, MinPerMinute: 2}

func TestReasons(t *testing.T) {
	base := fixedBaseline{"api GET /cart": {P50MS: 20, P95MS: 80, Count: 500}, "api GET /new": {P50MS: 1, P95MS: 2, Count: 3}}
	s := New(policy, base, 100, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1_800_000_000, 0)
	// Use up the per-minute floor of the endpoints first.
	for range 2 {
		s.Decide(Trace{ID: randomID(rng), Service: "api", Operation: "GET /cart", Duration: 10 * time.Millisecond, Analysed: true}, now)
		s.Decide(Trace{ID: randomID(rng), Service: "api", Operation: "GET /new", Duration: 10 * time.Millisecond, Analysed: true}, now)
	}
	healthy := Trace{Service: "api", Operation: "GET /cart", Duration: 30 * time.Millisecond, Analysed: true}
	// An id above the 1 % rate: high bytes all 0xff.
	healthy.ID = model.TraceID{8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}
	cases := []struct {
		name string
		mod  func(*Trace)
		want Reason
	}{
		{"healthy", func(*Trace) {}, Dropped},
		{"error", func(t *Trace) { t.Errors = 1 }, Error},
		{"warning finding", func(t *Trace) { t.Findings = []analyze.Finding{{Severity: analyze.SeverityWarning}} }, Finding},
		{"info finding", func(t *Trace) { t.Findings = []analyze.Finding{{Severity: analyze.SeverityInfo}} }, Dropped},
		{"slower than p95", func(t *Trace) { t.Duration = 81 * time.Millisecond }, Slow},
		{"new endpoint, too few samples for a baseline", func(t *Trace) { t.Operation = "GET /new"; t.Duration = time.Second }, Dropped},
		{"unanalysed", func(t *Trace) { t.Analysed = false }, Unanalysed},
		{"in the rate", func(t *Trace) { t.ID = model.TraceID{8: 1} }, Rate},
		{"next minute: the endpoint's floor", func(t *Trace) {}, EndpointMinimum},
	}
	for i, c := range cases {
		tr := healthy
		tr.ID[0] = byte(i + 1)
		c.mod(&tr)
		at := now
		if strings.HasPrefix(c.name, "next minute") {
			at = now.Add(time.Minute)
		}
		if got := s.Decide(tr, at); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		if got := s.Reason(tr.ID); got != c.want {
			t.Errorf("%s: remembered %q", c.name, got)
		}
	}
}

// Of a steady healthy load, about Rate is kept plus the per-minute floor,
// a rare endpoint keeps its floor, and the counter says why per reason.
func TestHealthyLoadKeepsAboutTheRate(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(policy, nil, 10, reg)
	rng := rand.New(rand.NewPCG(5, 6))
	start := time.Unix(1_800_000_000, 0)
	kept, rareKept := 0, 0
	const n = 100_000
	for i := range n {
		at := start.Add(time.Duration(i) * 600 * time.Microsecond) // 60 s in total
		if s.Decide(Trace{ID: randomID(rng), Service: "api", Operation: "GET /cart", Analysed: true}, at) != Dropped {
			kept++
		}
		if i%10_000 == 0 && s.Decide(Trace{ID: randomID(rng), Service: "cron", Operation: "nightly", Analysed: true}, at) != Dropped {
			rareKept++
		}
	}
	if kept < 800 || kept > 1200 {
		t.Errorf("kept %d of %d healthy traces, want about 1 %%", kept, n)
	}
	if rareKept < 2 {
		t.Errorf("the rare endpoint kept %d traces, want its floor of 2 per minute", rareKept)
	}
	if got := counterValue(t, s, "dropped"); int(got) != n+10-kept-rareKept {
		t.Errorf("dropped counter %v", got)
	}
	if got := counterValue(t, s, "endpoint_minimum"); got < 4 {
		t.Errorf("endpoint_minimum counter %v", got)
	}
	// Only the last 10 decisions are remembered.
	if len(s.recent) != 10 {
		t.Errorf("remembered %d decisions, want 10", len(s.recent))
	}
}

func counterValue(t *testing.T, s *Sampler, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.decisions.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A standing problem keeps examples, not every trace: with a cap, each
// finding kind keeps that many traces per endpoint per minute.
func TestFindingTracesCappedPerKindAndEndpoint(t *testing.T) {
	p := policy
	p.MaxFindingTracesPerMinute, p.Rate, p.MinPerMinute = 3, 0, 0
	s := New(p, nil, 100, nil)
	rng := rand.New(rand.NewPCG(7, 8))
	now := time.Unix(1_800_000_000, 0)
	nPlusOne := []analyze.Finding{{Kind: "n_plus_one_query", Severity: analyze.SeverityWarning}}
	decide := func(op string, fs []analyze.Finding, at time.Time) Reason {
		return s.Decide(Trace{ID: randomID(rng), Service: "orders", Operation: op, Analysed: true, Findings: fs}, at)
	}
	kept := 0
	for range 10 {
		if decide("GET /orders", nPlusOne, now) == Finding {
			kept++
		}
	}
	if kept != 3 {
		t.Errorf("kept %d traces of a standing N+1, want the cap of 3", kept)
	}
	if r := decide("GET /orders", []analyze.Finding{{Kind: "slow_query", Severity: analyze.SeverityCritical}}, now); r != Finding {
		t.Errorf("another kind on the same endpoint: %s", r)
	}
	if r := decide("GET /customers", nPlusOne, now); r != Finding {
		t.Errorf("the same kind on another endpoint: %s", r)
	}
	if r := decide("GET /orders", nPlusOne, now.Add(time.Minute)); r != Finding {
		t.Errorf("next minute: %s", r)
	}
}

// An endpoint's own rate replaces the general one.
func TestEndpointRates(t *testing.T) {
	p := policy
	p.MinPerMinute, p.EndpointRates = 0, map[string]float64{"api POST /checkout": 0.5, "api GET /health": 0}
	s := New(p, nil, 10, nil)
	rng := rand.New(rand.NewPCG(9, 10))
	now := time.Unix(1_800_000_000, 0)
	count := func(op string) int {
		kept := 0
		for range 10_000 {
			if s.Decide(Trace{ID: randomID(rng), Service: "api", Operation: op, Analysed: true}, now) == Rate {
				kept++
			}
		}
		return kept
	}
	if n := count("POST /checkout"); n < 4700 || n > 5300 {
		t.Errorf("checkout kept %d of 10000, want about half", n)
	}
	if n := count("GET /health"); n != 0 {
		t.Errorf("health kept %d, want none", n)
	}
	if n := count("GET /cart"); n < 60 || n > 140 {
		t.Errorf("cart kept %d of 10000, want about 1 %%", n)
	}
}

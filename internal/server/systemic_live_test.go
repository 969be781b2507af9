package server

import (
	"context"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// A recorded incident fed live through the server's path — spans observed
// at ingest a second after they end, the trace completed ten seconds
// later through the pipeline (summary always, whole trace only when
// flagged or sampled), evaluations every 10 s on the server's clock, here
// a fake one — opens the same cross-trace findings as `tracedx analyze`
// replaying the same traces in trace time.
func TestSystemicLiveMatchesReplay(t *testing.T) {
	var now time.Time
	saved := timeNow
	timeNow = func() time.Time { return now }
	t.Cleanup(func() { timeNow = saved })

	p := testPipeline(t, func(c *config.Config) { c.Analysis.Enabled = false })
	if !p.analytics {
		t.Fatal("analytics are off by default: the test needs them")
	}
	sys := systemic.New(systemic.Config{}, nil, func() time.Time { return timeNow() }, nil)
	p.findings = &storedFindings{sys: sys}
	// Under load the server decodes a tenth of the traces whole.
	p.sampleBits.Store(math.Float64bits(0.1))

	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	inject := t0.Add(40 * time.Minute)
	shop := workload.New(31)
	var recorded [][]model.Span
	for at, next := t0, t0; at.Before(inject.Add(15 * time.Minute)); at = at.Add(250 * time.Millisecond) {
		if !at.Before(inject) {
			shop.ErrorRate, shop.ErrorType = 0.3, "LedgerTimeoutException"
			shop.CheckoutVersion, shop.ItemQueries = "1.5.0", 25
		}
		for ; next.Before(at); next = next.Add(500 * time.Millisecond) {
			recorded = append(recorded, shop.Product(next))
		}
		recorded = append(recorded, shop.Checkout(at))
	}

	type completion struct {
		at    time.Time
		spans []model.Span
	}
	var pending []completion
	var live []systemic.Finding
	nextEval := t0
	advance := func(to time.Time) {
		for {
			evalDue := !nextEval.After(to)
			compDue := len(pending) > 0 && !pending[0].at.After(to)
			switch {
			case evalDue && (!compDue || !pending[0].at.Before(nextEval)):
				now = nextEval
				live = append(live, sys.Evaluate(now)...)
				nextEval = nextEval.Add(10 * time.Second)
			case compDue:
				now = pending[0].at
				c := completedOf(pending[0].spans)
				c.Versions = versionsOf(pending[0].spans, c.Summary.Services)
				if !p.wantSpans(c.ID, c.Flags) {
					c.Spans = nil
				}
				p.process(context.Background(), c)
				pending = pending[1:]
			default:
				return
			}
		}
	}
	for _, tr := range recorded {
		ingest := workload.End(tr).Add(time.Second)
		advance(ingest)
		now = ingest
		sys.ObserveSpans(timeNow(), tr)
		pending = append(pending, completion{ingest.Add(10 * time.Second), tr})
	}
	advance(pending[len(pending)-1].at)

	replayed := systemic.ReplayTraces(systemic.Config{}, recorded, nil)
	want, got := findingIDs(live), findingIDs(replayed)
	kinds := map[string]bool{}
	for _, id := range want {
		kinds[id[0]] = true
	}
	for _, k := range []string{"error_rate_spike", "new_error_type", "span_count_regression"} {
		if !kinds[k] {
			t.Errorf("live ingest found no %s: %v", k, want)
		}
	}
	t.Logf("live and replay: %v", want)
	if len(got) != len(want) {
		t.Fatalf("replay found %v\nlive found %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("finding %d: replay %v, live %v", i, got[i], want[i])
		}
	}
}

// versionsOf is what the store records per service of a trace: the
// service.version of its first span.
func versionsOf(spans []model.Span, services []model.ServiceStats) []string {
	out := make([]string, len(services))
	for i, s := range services {
		for j := range spans {
			if spans[j].Service == s.Name {
				out[i] = spans[j].Resource.Str("service.version")
				break
			}
		}
	}
	return out
}

func findingIDs(fs []systemic.Finding) [][3]string {
	set := map[[3]string]bool{}
	for _, f := range fs {
		set[[3]string{f.Kind, f.Service, f.Operation}] = true
	}
	out := make([][3]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a[0]+a[1]+a[2] < b[0]+b[1]+b[2]
	})
	return out
}

package systemic

import (
	"sort"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// traffic records what sim.run would feed: checkouts at 4/s, product
// pages at 2/s.
func traffic(shop *workload.Shop, from, to time.Time) [][]model.Span {
	var out [][]model.Span
	next := from
	for t := from; t.Before(to); t = t.Add(250 * time.Millisecond) {
		for next.Before(t) {
			out = append(out, shop.Product(next))
			next = next.Add(500 * time.Millisecond)
		}
		out = append(out, shop.Checkout(t))
	}
	return out
}

type findingID struct{ kind, service, operation string }

func idsOf(fs []Finding) []findingID {
	set := map[findingID]bool{}
	for _, f := range fs {
		set[findingID{f.Kind, f.Service, f.Operation}] = true
	}
	out := make([]findingID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.kind+a.service+a.operation < b.kind+b.service+b.operation
	})
	return out
}

// A recorded incident replayed in trace time gives the systemic findings
// that live ingest gave: live, spans arrive in batches a second after they
// end, traces complete ten seconds later, only the needed and a sample of
// traces are decoded whole, and evaluations run on a (fake) clock every
// 10 s; the replay sees each trace whole, once, at the watermark.
func TestReplayMatchesLiveIngest(t *testing.T) {
	t.Parallel()
	shop := workload.New(21)
	inject := t0.Add(40 * time.Minute)
	recorded := traffic(shop, t0, inject)
	shop.ErrorRate, shop.ErrorType = 0.3, "LedgerTimeoutException"
	shop.CheckoutVersion, shop.ItemQueries = "1.5.0", 25
	shop.NoRecommendations = true
	recorded = append(recorded, traffic(shop, inject, inject.Add(15*time.Minute))...)

	live := newSplitSim(0)
	for _, tr := range recorded {
		live.observe(tr)
	}
	f := live.split
	if len(f.batch) > 0 {
		f.flush(live)
	}
	f.advance(live, f.pending[len(f.pending)-1].at)
	var liveFound []Finding
	for _, x := range live.findings {
		liveFound = append(liveFound, x.f)
	}

	// Shuffled files: the replay orders traces by start itself.
	shuffled := append([][]model.Span(nil), recorded...)
	for i := range shuffled {
		j := (i * 7919) % len(shuffled)
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	}
	replayed := ReplayTraces(Config{}, shuffled, nil)

	want, got := idsOf(liveFound), idsOf(replayed)
	kinds := map[string]bool{}
	for _, id := range want {
		kinds[id.kind] = true
	}
	for _, k := range []string{"error_rate_spike", "new_error_type", "span_count_regression", "missing_service"} {
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
	for _, x := range replayed {
		if x.Culprit == nil {
			t.Errorf("replayed %s has no culprit", x.Key)
		}
		if x.Time.Before(inject) {
			t.Errorf("replayed %s at %s, before the injection", x.Key, x.Time)
		}
	}
}

func TestReplayHealthyIsQuiet(t *testing.T) {
	t.Parallel()
	got := ReplayTraces(Config{}, traffic(workload.New(5), t0, t0.Add(30*time.Minute)), nil)
	if len(got) != 0 {
		t.Errorf("healthy replay found %v", idsOf(got))
	}
}

// Two incidents three weeks apart in one file: the replay evaluates the
// quiet weeks once instead of every 10 s, and finds what evaluating every
// interval finds, the second incident included (what opened in the first
// closed during the quiet).
func TestReplaySkipsQuietWeeksWithoutChangingFindings(t *testing.T) {
	t.Parallel()
	var recorded [][]model.Span
	for i, start := range []time.Time{t0, t0.Add(21 * 24 * time.Hour)} {
		shop := workload.New(int64(30 + i))
		inject := start.Add(25 * time.Minute)
		recorded = append(recorded, traffic(shop, start, inject)...)
		shop.ErrorRate, shop.ErrorType = 0.3, "LedgerTimeoutException"
		recorded = append(recorded, traffic(shop, inject, inject.Add(10*time.Minute))...)
	}
	run := func(quiet time.Duration) ([]Finding, int) {
		r := NewReplay(Config{}, nil)
		if quiet > 0 {
			r.quiet = quiet
		}
		for _, tr := range recorded {
			r.Feed(tr)
		}
		return r.Finish(), r.evaluations
	}
	every, everyN := run(365 * 24 * time.Hour)
	skipped, skippedN := run(0)
	if skippedN*50 > everyN {
		t.Errorf("%d evaluations with the quiet skipped, %d at every interval", skippedN, everyN)
	}
	if len(skipped) != len(every) {
		t.Fatalf("%d findings with the quiet skipped, %d at every interval:\n%v\n%v", len(skipped), len(every), idsOf(skipped), idsOf(every))
	}
	for i := range every {
		a, b := every[i], skipped[i]
		if a.Kind != b.Kind || a.Key != b.Key || !a.Time.Equal(b.Time) {
			t.Errorf("finding %d: %s %s at %v at every interval, %s %s at %v with the quiet skipped", i, a.Kind, a.Key, a.Time, b.Kind, b.Key, b.Time)
		}
	}
	spikes := 0
	for _, f := range skipped {
		if f.Kind == "error_rate_spike" && f.Time.After(t0.Add(24*time.Hour)) {
			spikes++
		}
	}
	if spikes == 0 {
		t.Errorf("the second incident opened no error_rate_spike: %v", idsOf(skipped))
	}
}

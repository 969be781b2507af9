package traceql

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

func series(t *testing.T, q string, r MetricsRange, traces ...[]model.Span) []Series {
	t.Helper()
	m, err := mustParse(t, q).NewMetricsEvaluator(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range traces {
		if err := m.Observe(context.Background(), tr, nil); err != nil {
			t.Fatal(err)
		}
	}
	return m.Result()
}

func labelsOf(s Series) string { return labelKey(s.Labels) }

func TestMetricsRateAndCount(t *testing.T) {
	// Two traces 1 s apart; a 2 s range in 1 s steps.
	a := checkout()
	b := build(0xbb, 1000, []fx{{"GET /checkout", "frontend", "", 0, 50, model.KindServer, model.StatusError, nil}})
	r := MetricsRange{Start: t0, End: t0 + uint64(2*time.Second), Step: uint64(time.Second)}

	got := series(t, `{ kind = server } | count_over_time()`, r, a, b)
	if len(got) != 1 || labelsOf(got[0]) != `__name__="count_over_time",` {
		t.Fatalf("series %+v", got)
	}
	// t0 is aligned to the second: bucket 0 has the 3 servers of a, bucket 1 the root of b.
	want := []Sample{{int64(t0 / 1e6), 3}, {int64(t0/1e6) + 1000, 1}}
	if len(got[0].Samples) != 2 || got[0].Samples[0] != want[0] || got[0].Samples[1] != want[1] {
		t.Fatalf("samples %+v want %+v", got[0].Samples, want)
	}

	r.Step = uint64(500 * time.Millisecond)
	got = series(t, `{ } | rate() by(resource.service.name)`, r, a, b)
	if len(got) != 3 {
		t.Fatalf("want 3 services, got %d", len(got))
	}
	if labelsOf(got[0]) != `resource.service.name="cart",` || labelsOf(got[1]) != `resource.service.name="frontend",` {
		t.Fatalf("order/labels: %s %s", labelsOf(got[0]), labelsOf(got[1]))
	}
	// frontend: bucket 0 has root, call cart, call payment (3 spans / 0.5 s = 6/s); bucket 2 has b's root.
	fr := got[1].Samples
	if len(fr) != 4 || fr[0].Value != 6 || fr[1].Value != 0 || fr[2].Value != 2 || fr[3].Value != 0 {
		t.Fatalf("frontend rate %+v", fr)
	}

	got = series(t, `{ status = error } | count_over_time() by(resource.service.name, name)`, r, a, b)
	if len(got) != 2 || len(got[0].Labels) != 2 {
		t.Fatalf("two-label series %+v", got)
	}
}

func TestMetricsQuantileAndValues(t *testing.T) {
	tr := checkout()
	r := MetricsRange{Start: t0, End: t0 + uint64(time.Second), Step: uint64(time.Second)}
	got := series(t, `{ span.db.system != nil } | quantile_over_time(duration, 0, .5, 1)`, r, tr)
	if len(got) != 3 {
		t.Fatalf("want one series per quantile, got %d", len(got))
	}
	for _, s := range got {
		if len(s.Samples) != 1 || math.Abs(s.Samples[0].Value-0.010) > 1e-12 {
			t.Fatalf("%s: %+v (all DB calls take 10 ms = 0.01 s)", labelsOf(s), s.Samples)
		}
	}
	got = series(t, `{ kind = server } | quantile_over_time(duration, .5)`, r, tr)
	// servers: 1 s, 0.27 s, 0.48 s -> median 0.48
	if v := got[0].Samples[0].Value; math.Abs(v-0.48) > 1e-9 {
		t.Fatalf("median %v", v)
	}
	for q, want := range map[string]float64{
		`{ kind = server } | max_over_time(duration)`:                             1,
		`{ kind = server } | min_over_time(duration)`:                             0.27,
		`{ kind = server } | sum_over_time(duration)`:                             1.75,
		`{ span.http.status_code != nil } | avg_over_time(span.http.status_code)`: 350,
	} {
		got := series(t, q, r, tr)
		if len(got) != 1 || len(got[0].Samples) != 1 || math.Abs(got[0].Samples[0].Value-want) > 1e-9 {
			t.Errorf("%s: %+v want %v", q, got, want)
		}
	}
	h := series(t, `{ } | histogram_over_time(duration)`, r, tr)
	total := 0.0
	for _, s := range h {
		total += s.Samples[0].Value
	}
	if total != 8 || len(h) < 3 {
		t.Errorf("histogram: %d buckets, %v spans", len(h), total)
	}
}

func TestMetricsTopK(t *testing.T) {
	tr := checkout()
	r := MetricsRange{Start: t0, End: t0 + uint64(time.Second), Step: uint64(time.Second)}
	got := series(t, `{ } | count_over_time() by(resource.service.name) | topk(1)`, r, tr)
	if len(got) != 1 || got[0].Labels[0].Value.S != "cart" {
		t.Fatalf("topk %+v", got)
	}
	got = series(t, `{ } | count_over_time() by(resource.service.name) | bottomk(1)`, r, tr)
	if len(got) != 1 || got[0].Labels[0].Value.S != "payment" {
		t.Fatalf("bottomk %+v", got)
	}
}

func TestMetricsRangeErrors(t *testing.T) {
	q := mustParse(t, `{ } | rate()`)
	if _, err := q.NewMetricsEvaluator(MetricsRange{Start: 10, End: 5, Step: 1}); err == nil {
		t.Error("end before start accepted")
	}
	if _, err := q.NewMetricsEvaluator(MetricsRange{Start: 0, End: uint64(time.Hour), Step: uint64(time.Millisecond)}); err == nil {
		t.Error("too many points accepted")
	}
	if _, err := mustParse(t, `{ }`).NewMetricsEvaluator(MetricsRange{Start: 0, End: 10, Step: 1}); err == nil {
		t.Error("non-metrics query accepted")
	}
}

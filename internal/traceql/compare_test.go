package traceql

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCompareSplitsSelectionAndBaseline(t *testing.T) {
	r := MetricsRange{Start: t0, End: t0 + uint64(2*time.Second), Step: uint64(2 * time.Second)}
	got := series(t, `{ resource.service.name = "cart" } | compare({ status = error })`, r, checkout())
	values := map[string]float64{}
	for _, s := range got {
		var sum float64
		for _, p := range s.Samples {
			sum += p.Value
		}
		values[labelsOf(s)] = sum
	}
	want := map[string]float64{
		// cart has 4 spans: POST /cart failed (the selection), 3 queries did not.
		`__meta_type="selection",name="POST /cart",`:              1,
		`__meta_type="selection",status=error,`:                   1,
		`__meta_type="selection",span.http.status_code=500,`:      1,
		`__meta_type="baseline",span.db.system="postgres",`:       2,
		`__meta_type="baseline",span.db.system="mysql",`:          1,
		`__meta_type="baseline",status=unset,`:                    2,
		`__meta_type="baseline",resource.service.name="cart",`:    3,
		`__meta_type="selection",resource.service.name="cart",`:   1,
		`__meta_type="baseline_total",span.db.system=nil,`:        3,
		`__meta_type="selection_total",resource.env=nil,`:         1,
		`__meta_type="baseline_total",resource.service.name=nil,`: 3,
	}
	for k, v := range want {
		if values[k] != v {
			t.Errorf("%s = %v, want %v", k, values[k], v)
		}
	}
	for k := range values {
		if strings.Contains(k, "frontend") || strings.Contains(k, "payment") {
			t.Errorf("span outside the query counted: %s", k)
		}
	}

	// topN 1: one value per attribute and group, and an error marker for
	// the attributes that had more.
	got = series(t, `{ resource.service.name = "cart" } | compare({ status = error }, 1)`, r, checkout())
	var names, errs []string
	for _, s := range got {
		l := labelsOf(s)
		if strings.HasPrefix(l, `__meta_type="baseline",name=`) {
			names = append(names, l)
		}
		if strings.HasPrefix(l, `__meta_error="__too_many_values__"`) {
			errs = append(errs, l)
		}
	}
	if len(names) != 1 || len(errs) == 0 || !strings.Contains(strings.Join(errs, " "), "name=nil") {
		t.Errorf("topN 1: names %v errors %v", names, errs)
	}

	// A time window: selection only within (start, end].
	win := `{ resource.service.name = "cart" } | compare({ }, 10, ` + strconv.FormatUint(t0+45e6, 10) + `, ` + strconv.FormatUint(t0+2e9, 10) + `)`
	got = series(t, win, r, checkout())
	for _, s := range got {
		if labelsOf(s) == `__meta_type="selection_total",name=nil,` && s.Samples[0].Value != 2 {
			t.Errorf("window selection %v, want SELECT b and SELECT c", s.Samples)
		}
	}
}

func TestCompareParseErrors(t *testing.T) {
	for q, want := range map[string]string{
		`{} | compare()`:                             "compare needs a spanset filter",
		`{} | compare({ status = error }, 0)`:        "topN must be between 1 and 1000",
		`{} | compare({ status = error }, 5, 10)`:    "optionally both start and end",
		`{} | compare({ status = error }, 5, 10, 5)`: "end must be after its start",
		`{} | compare({ status = error }) by(name)`:  "takes no by()",
		`{} | compare({ status = error }) | topk(3)`: "cannot be followed",
	} {
		if _, err := Parse(q); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", q, err, want)
		}
	}
}

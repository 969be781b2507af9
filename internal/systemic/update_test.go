package systemic

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/systemic/workload"
)

// A stampede that opens at 5 concurrent misses and grows to 20 is
// reported as 20 by the stored finding (one finding, its id kept), also
// once the detector restarted; a smaller burst afterwards does not lower
// it, and a larger one after the restart raises it again.
func TestOpenStampedeShowsItsPeak(t *testing.T) {
	ctx := context.Background()
	store, err := findingstore.Open(findingstore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dir := t.TempDir()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d := New(Config{Dir: dir}, store, nil, nil)
	shop := workload.New(7)
	shop.CacheMissAll = true
	burst := func(d *Detector, at time.Time, n int) {
		for i := 0; i < n; i++ {
			spans := shop.Product(at.Add(time.Duration(i) * 40 * time.Millisecond))
			d.Observe(workload.End(spans).Add(time.Second), spans)
		}
	}
	eval := func(d *Detector, at time.Time) {
		opened, updated := d.evaluate(at, nil)
		d.store(ctx, opened, updated)
	}
	stampedes := func() []findingstore.Stored {
		l, err := store.List(ctx, findingstore.Query{Kind: "cache_stampede"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	traces := func(f findingstore.Stored) int {
		raw, _ := f.Evidence.(json.RawMessage)
		var ev StampedeEvidence
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("evidence %s: %v", raw, err)
		}
		return ev.Traces
	}

	burst(d, start, 5)
	eval(d, start.Add(10*time.Second))
	l := stampedes()
	if len(l) != 1 || traces(l[0]) != 5 {
		t.Fatalf("opened %d stampedes %+v, want one of 5 traces", len(l), l)
	}
	id := l[0].ID
	burst(d, start.Add(20*time.Second), 20)
	for at := start.Add(30 * time.Second); at.Before(start.Add(2 * time.Minute)); at = at.Add(10 * time.Second) {
		eval(d, at)
	}
	l = stampedes()
	if len(l) != 1 || l[0].ID != id || traces(l[0]) != 20 || l[0].Revision != 1 {
		t.Fatalf("after the stampede grew: %d findings, first %+v; want the same finding showing 20 traces", len(l), l[0])
	}
	burst(d, start.Add(130*time.Second), 8)
	eval(d, start.Add(140*time.Second))
	eval(d, start.Add(210*time.Second))
	if l = stampedes(); traces(l[0]) != 20 {
		t.Fatalf("a smaller burst replaced the peak: %s", l[0].Title)
	}
	if err := d.Snapshot(); err != nil {
		t.Fatal(err)
	}
	d2 := New(Config{Dir: dir}, store, nil, nil)
	burst(d2, start.Add(220*time.Second), 30)
	eval(d2, start.Add(230*time.Second))
	eval(d2, start.Add(300*time.Second))
	l = stampedes()
	if len(l) != 1 || l[0].ID != id || traces(l[0]) != 30 || l[0].Revision < 2 || !l[0].Updated.After(start.Add(220*time.Second)) {
		t.Fatalf("after a restart and a larger burst: %d findings, first %+v; want the same finding showing 30", len(l), l[0])
	}
	if n := store.Counts(start.Add(-time.Hour), start.Add(time.Hour))["cache_stampede"]; n != 1 {
		t.Errorf("counted %d stampedes, want 1", n)
	}
}

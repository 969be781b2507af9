package red

import (
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// EntryOperationCounts counts entry requests, failures and those slower
// than the threshold, and leaves client spans out.
func TestEntryOperationCounts(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 30, 0, 0, time.UTC)
	m := newTestMetrics(t, "", now)
	var spans []model.Span
	start := now.Add(-3 * time.Minute)
	for i := 0; i < 100; i++ {
		d := 20 * time.Millisecond
		if i%10 == 0 {
			d = 800 * time.Millisecond // 10 slow
		}
		spans = append(spans, mkSpan("checkout", "POST /checkout", model.KindServer, start.Add(time.Duration(i)*time.Second), d, i%25 == 0))
		spans = append(spans, mkSpan("checkout", "SELECT", model.KindClient, start.Add(time.Duration(i)*time.Second), time.Second, false))
	}
	m.Observe(spans)
	got, err := m.EntryOperationCounts("", now.Add(-5*time.Minute), now, 300)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("want only the server operation, got %+v", got)
	}
	c := got[0]
	if c.Service != "checkout" || c.Operation != "POST /checkout" || c.Count != 100 || c.Errors != 4 || c.Slow != 10 {
		t.Errorf("counts: %+v", c)
	}
	if c.P50MS < 17 || c.P50MS > 23 {
		t.Errorf("p50 %v ms, want about 20", c.P50MS)
	}
	// The threshold inside a bucket counts that bucket in proportion.
	got, _ = m.EntryOperationCounts("checkout", now.Add(-5*time.Minute), now, 20)
	if s := got[0].Slow; s < 10 || s > 100 {
		t.Errorf("slower than 20 ms: %d", s)
	}
	if got, _ := m.EntryOperationCounts("other", now.Add(-5*time.Minute), now, 0); len(got) != 0 {
		t.Errorf("service filter: %+v", got)
	}
}

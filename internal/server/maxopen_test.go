package server

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// A message requeued forever, redelivered every 150 ms into the same
// trace, never lets the trace go idle. Completed by storage.trace_max_open
// while the redeliveries go on, it gets its poison_message finding then,
// and the completions that follow (trace_max_open again, then idle) store
// it, and every other finding, once.
func TestPoisonMessageOfATraceThatNeverGoesIdle(t *testing.T) {
	const maxOpen = time.Second
	s := startServer(t, func(c *config.Config) {
		c.Storage.TraceIdleTimeout = 300 * time.Millisecond
		c.Storage.TraceMaxOpen = maxOpen
	})
	// The poison_message fixture of the detector tests: an invoice request
	// whose message fails in billing-worker on every delivery.
	b, err := os.ReadFile("../../testdata/traces/poison_message/positive-sqs-redelivered-message-id.json")
	if err != nil {
		t.Fatal(err)
	}
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
	if err != nil {
		t.Fatal(err)
	}
	fixture := otlpconv.FromTraces(td)
	byID := map[model.SpanID]*model.Span{}
	for i := range fixture {
		byID[fixture[i].SpanID] = &fixture[i]
	}
	// Its first delivery (the consume span, the tax call under it) is what
	// each redelivery repeats.
	var head, redelivery []model.Span
	var first model.SpanID
	for _, sp := range fixture {
		if sp.Kind == model.KindConsumer && (first.IsZero() || sp.StartUnixNano < byID[first].StartUnixNano) {
			first = sp.SpanID
		}
	}
	// delivery reports the consume span sp is or lies under.
	delivery := func(sp model.Span) model.SpanID {
		for p := byID[sp.SpanID]; p != nil; p = byID[p.ParentSpanID] {
			if p.Kind == model.KindConsumer {
				return p.SpanID
			}
		}
		return model.SpanID{}
	}
	for _, sp := range fixture {
		switch delivery(sp) {
		case first:
			redelivery = append(redelivery, sp)
		case model.SpanID{}:
			head = append(head, sp) // the request and its publish
		}
	}
	t0 := fixture[0].StartUnixNano
	for _, sp := range fixture {
		t0 = min(t0, sp.StartUnixNano)
	}
	start := time.Now()
	shift := func(sp model.Span, at time.Time) model.Span {
		d := uint64(at.UnixNano()) - t0
		sp.StartUnixNano += d
		sp.EndUnixNano += d
		return sp
	}
	for i := range head {
		head[i] = shift(head[i], start)
	}
	id := head[0].TraceID
	posted := len(head)
	postOTLP(t, s.Addr("otlp-http"), head)
	redeliver := func(n int) {
		var spans []model.Span
		at := start.Add(time.Duration(n) * 150 * time.Millisecond)
		for _, sp := range redelivery {
			c := shift(sp, at)
			c.SpanID[0], c.SpanID[1] = byte(n>>8), byte(n)
			if sp.SpanID != first { // its parent is renumbered too
				c.ParentSpanID[0], c.ParentSpanID[1] = byte(n>>8), byte(n)
			}
			spans = append(spans, c)
		}
		postOTLP(t, s.Addr("otlp-http"), spans)
		posted += len(spans)
	}
	type listed struct {
		Findings []struct {
			Kind    string   `json:"kind"`
			SpanIDs []string `json:"span_ids"`
		} `json:"findings"`
	}
	findings := func() listed {
		var l listed
		getJSON(t, s, "/api/v1/findings?trace_id="+id.String()+"&limit=1000", &l)
		return l
	}
	poison := func(l listed) int {
		n := 0
		for _, f := range l.Findings {
			if f.Kind == "poison_message" {
				n++
			}
		}
		return n
	}
	n := 0
	for ; poison(findings()) == 0; n++ {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no poison_message after %v of redeliveries every 150 ms (trace_max_open %v)", time.Since(start), maxOpen)
		}
		redeliver(n)
		time.Sleep(150 * time.Millisecond)
	}
	found := time.Since(start)
	// Three more trace_max_open of redeliveries, then idle: the trace
	// completes again and again, with more failed deliveries each time.
	for until := time.Now().Add(3 * maxOpen); time.Now().Before(until); n++ {
		redeliver(n)
		time.Sleep(150 * time.Millisecond)
	}
	all, err := s.Store().Trace(context.Background(), id, store.TimeRange{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[model.SpanID]bool{}
	for _, sp := range all {
		if seen[sp.SpanID] {
			t.Fatalf("trace by id returns span %s twice", sp.SpanID)
		}
		seen[sp.SpanID] = true
	}
	if len(all) != posted {
		t.Fatalf("trace by id returns %d spans, %d posted", len(all), posted)
	}
	time.Sleep(1500 * time.Millisecond) // the last completion, idle
	l := findings()
	if got := poison(l); got != 1 {
		t.Errorf("%d poison_message findings stored for one message, want 1", got)
	}
	keys := map[string]bool{}
	for _, f := range l.Findings {
		k := fmt.Sprint(f.Kind, f.SpanIDs[:min(1, len(f.SpanIDs))])
		if keys[k] {
			t.Errorf("finding %s stored twice", k)
		}
		keys[k] = true
	}
	m := metricsOf(t, s)
	for _, name := range []string{"tracedx_store_traces_completed_open_total", "tracedx_store_write_stalls_total",
		"tracedx_store_write_stall_seconds_total", "tracedx_admission_forced_gcs_total", "tracedx_admission_forced_gc_seconds_total"} {
		if !strings.Contains(m, "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if strings.Contains(m, "\ntracedx_store_traces_completed_open_total 0\n") {
		t.Errorf("no completion while open counted")
	}
	t.Logf("poison_message stored %v after the first delivery; %d redeliveries; findings %v", found, n, keys)
}

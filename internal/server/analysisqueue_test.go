package server

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/sampling"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// traceN is a trace of n spans of service svc lasting dur, with its own id;
// failed marks its last span as an error.
func traceN(id byte, n int, svc string, dur time.Duration, failed bool) engine.CompletedTrace {
	spans := traceOf(n, svc)
	for i := range spans {
		spans[i].TraceID = model.TraceID{2, id}
		spans[i].EndUnixNano = spans[i].StartUnixNano + uint64(dur)
	}
	if failed {
		spans[n-1].StatusCode = model.StatusError
	}
	return completedOf(spans)
}

// shedPipeline is a pipeline whose queue holds 250 spans and whose
// analytics sample no trace whole, so only errors, slowness and shape set
// traces apart.
func shedPipeline(t *testing.T) (*pipeline, *countingSink) {
	p := testPipeline(t, func(c *config.Config) { c.Analysis.QueueSpans = 250 })
	p.sampleBits.Store(0)
	sink := &countingSink{}
	p.findings = sink
	return p, sink
}

func droppedBy(p *pipeline, reason string) float64 {
	return testutil.ToFloat64(p.droppedBy[reason])
}

// At a full queue a trace with an error takes the place of the oldest
// queued plain trace; a plain one is turned away. Both skipped traces are
// counted by reason and still reach the systemic detectors by summary.
func TestErrorTraceDisplacesPlainOneAtFullQueue(t *testing.T) {
	p, sink := shedPipeline(t)
	p.traceComplete(traceN(1, 100, "a", time.Millisecond, false))
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, false))
	p.traceComplete(traceN(3, 100, "a", time.Millisecond, true))
	if got := droppedBy(p, skipDisplaced); got != 1 {
		t.Fatalf("displaced %v traces, want 1", got)
	}
	if q := p.queue.spans.Load(); q != 200 {
		t.Fatalf("queued %d spans, want 200", q)
	}
	p.traceComplete(traceN(4, 100, "a", time.Millisecond, false))
	if got := droppedBy(p, skipNoRoom); got != 1 {
		t.Fatalf("plain trace at a full queue: no_room %v, want 1", got)
	}
	if sink.observed != 2 {
		t.Fatalf("systemic detectors saw %d skipped traces, want both", sink.observed)
	}
	ids := drain(p)
	if want := []model.TraceID{{2, 2}, {2, 3}}; !slices.Equal(ids, want) {
		t.Fatalf("analysed %v, want the second plain trace then the failed one (arrival order)", ids)
	}
	if sink.put != 2 || sink.observed != 4 {
		t.Fatalf("after draining: put %d observed %d", sink.put, sink.observed)
	}
	if d := p.dropped.Load(); d != 2 {
		t.Fatalf("dropped_total %d, want 2", d)
	}
	if n := testutil.ToFloat64(p.tookVital[priorityError]); n != 1 {
		t.Fatalf("priority_traces_total{reason=error} %v, want 1", n)
	}
}

// A trace that matters is turned away too when the queue holds only such
// traces: nothing plain is left to make room.
func TestPriorityTraceWithoutPlainOnesToDisplace(t *testing.T) {
	p, _ := shedPipeline(t)
	p.traceComplete(traceN(1, 100, "a", time.Millisecond, true))
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, false))
	p.traceComplete(traceN(3, 100, "a", time.Millisecond, true)) // displaces 2
	if c := completing(traceN(5, 100, "a", time.Millisecond, true)); p.takeSpans(c) {
		t.Fatal("takeSpans took a failed trace with no plain trace left to displace")
	}
	p.traceComplete(traceN(4, 100, "a", time.Millisecond, true))
	if got := droppedBy(p, skipNoRoomToo); got != 1 {
		t.Fatalf("no_room_priority %v, want 1", got)
	}
	// The same trace declined by the store before decoding counts alike.
	declined := traceN(6, 100, "a", time.Millisecond, true)
	declined.Declined, declined.Spans = true, nil
	p.traceComplete(declined)
	if got := droppedBy(p, skipNoRoomToo); got != 2 {
		t.Fatalf("declined trace with an error: no_room_priority %v, want 2", got)
	}
	if ids := drain(p); !slices.Equal(ids, []model.TraceID{{2, 1}, {2, 3}}) {
		t.Fatalf("analysed %v", ids)
	}
}

// takeSpans lets a trace that matters be decoded while plain ones can make
// way for it, and declines a plain one: the store decodes only what the
// queue will keep.
func TestTakeSpansPrefersTracesThatMatter(t *testing.T) {
	p, _ := shedPipeline(t)
	p.traceComplete(traceN(1, 100, "a", time.Millisecond, false))
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, false))
	failed, plain := traceN(3, 100, "a", time.Millisecond, true), traceN(4, 100, "a", time.Millisecond, false)
	if !p.takeSpans(completing(failed)) {
		t.Fatal("a failed trace was declined although plain ones could make way")
	}
	if p.takeSpans(completing(plain)) {
		t.Fatal("a plain trace was taken at a full queue")
	}
	if p.takeSpans(engine.Completing{Spans: 100}) {
		t.Fatal("a trace the store could not describe was taken at a full queue")
	}
	// A trace the store declined is still summarised and sampled.
	p.sampler = sampling.New(sampling.Policy{KeepErrors: true}, nil, 100, prometheus.NewRegistry())
	plain.Declined, plain.Spans = true, nil
	p.traceComplete(plain)
	if r := p.sampledReason(plain.ID); r != string(sampling.Unanalysed) {
		t.Fatalf("sampling of a skipped trace: %q, want %q", r, sampling.Unanalysed)
	}
}

func TestPriorityOfACompletingTrace(t *testing.T) {
	p, _ := shedPipeline(t)
	// The endpoint's usual: 10 spans over ~10 ms.
	for i := range 60 {
		c := traceN(byte(i), 10, "shop", 10*time.Millisecond, false)
		p.history.ObserveTrace(c.Spans)
	}
	for _, tc := range []struct {
		name string
		c    engine.CompletedTrace
		want string
	}{
		{"usual", traceN(100, 10, "shop", 10*time.Millisecond, false), ""},
		{"error span", traceN(101, 10, "shop", 10*time.Millisecond, true), priorityError},
		{"slower than p95", traceN(102, 10, "shop", 80*time.Millisecond, false), prioritySlow},
		{"clearly long, no baseline", traceN(103, 10, "new", 3*time.Second, false), prioritySlow},
		{"no baseline yet", traceN(104, 10, "new", 80*time.Millisecond, false), ""},
		{"many more spans than usual", traceN(105, 40, "shop", 10*time.Millisecond, false), priorityShape},
	} {
		if got := p.priority(&tc.c.Summary, tc.c.Flags); got != tc.want {
			t.Errorf("%s: priority %q, want %q", tc.name, got, tc.want)
		}
	}
	// The analytics' uniform sample is never displaced, or it would not be
	// uniform.
	p.sampleBits.Store(0x3ff0000000000000) // 1.0: every trace
	c := traceN(106, 10, "shop", 10*time.Millisecond, false)
	if got := p.priority(&c.Summary, c.Flags); got != prioritySample {
		t.Errorf("trace in the analytics' sample: %q", got)
	}
}

// The worker's CPU budget goes first to the traces that matter.
func TestSplitKeep(t *testing.T) {
	for _, tc := range []struct{ keep, share, vital, plain float64 }{
		{1, 0.1, 1, 1},
		{0.5, 0.1, 1, 4.0 / 9},
		{0.1, 0.1, 1, minKeep},
		{0.05, 0.1, 0.5, minKeep},
		{0.3, 1, 0.3, 0.3},
		{0, 0, 1, 0},
	} {
		v, pl := splitKeep(tc.keep, tc.share)
		if !near(v, tc.vital) || !near(pl, tc.plain) {
			t.Errorf("splitKeep(%v, %v) = %v, %v; want %v, %v", tc.keep, tc.share, v, pl, tc.vital, tc.plain)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// While the queue chooses traces by priority, the traces it keeps are
// biased towards slow ones, so they do not feed the baselines.
func TestPreferenceDoesNotFeedTheBaselines(t *testing.T) {
	p, _ := shedPipeline(t)
	p.lastDrop.Store(timeNow().UnixNano())
	for i := range 30 {
		p.process(context.Background(), traceN(byte(i), 3, "biased", time.Millisecond, false))
	}
	if _, ok := p.history.OperationDuration("biased", "GET /x"); ok {
		t.Fatal("baselines fed while the queue preferred traces")
	}
	p.lastDrop.Store(0)
	for i := range 30 {
		p.process(context.Background(), traceN(byte(i), 3, "plain", time.Millisecond, false))
	}
	if _, ok := p.history.OperationDuration("plain", "GET /x"); !ok {
		t.Fatal("baselines not fed once the queue stopped skipping")
	}
}

// Traces in the analytics' uniform sample make way for errors, and take
// the place of plain traces themselves.
func TestSampleRanksBetweenPlainAndErrors(t *testing.T) {
	p, _ := shedPipeline(t)
	p.sampleBits.Store(math.Float64bits(0.5))
	outside := func(c engine.CompletedTrace) engine.CompletedTrace { // of the sample: the id's low half is high
		c.ID[15] = 0xff
		c.Summary.TraceID = c.ID
		return c
	}
	p.traceComplete(outside(traceN(1, 100, "a", time.Millisecond, false)))
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, false))          // sample
	p.traceComplete(traceN(3, 100, "a", time.Millisecond, false))          // sample, displaces 1
	p.traceComplete(outside(traceN(4, 100, "a", time.Millisecond, true)))  // error, displaces 2
	p.traceComplete(outside(traceN(5, 100, "a", time.Millisecond, false))) // plain: no room
	if d, n := droppedBy(p, skipDisplaced), droppedBy(p, skipNoRoom); d != 2 || n != 1 {
		t.Fatalf("displaced %v, no_room %v; want 2, 1", d, n)
	}
	if ids := drain(p); len(ids) != 2 || ids[0] != (model.TraceID{2, 3}) || ids[1][1] != 4 {
		t.Fatalf("analysed %v, want the third (sample) then the fourth (error)", ids)
	}
}

// Errors displace slow traces; slow traces do not displace errors.
func TestErrorsRankAboveSlowTraces(t *testing.T) {
	p, _ := shedPipeline(t)
	p.traceComplete(traceN(1, 100, "a", 3*time.Second, false)) // slow
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, true))
	p.traceComplete(traceN(3, 100, "a", time.Millisecond, true)) // displaces 1
	p.traceComplete(traceN(4, 100, "a", 3*time.Second, false))   // no room
	if d, n := droppedBy(p, skipDisplaced), droppedBy(p, skipNoRoomToo); d != 1 || n != 1 {
		t.Fatalf("displaced %v, no_room_priority %v; want 1, 1", d, n)
	}
	if ids := drain(p); !slices.Equal(ids, []model.TraceID{{2, 2}, {2, 3}}) {
		t.Fatalf("analysed %v, want the two failed traces", ids)
	}
}

// Traces queued while there was room are classified once it is short, so
// a failed trace queued then is neither displaced nor miscounted as room.
func TestTracesQueuedWithRoomAreClassifiedUnderPressure(t *testing.T) {
	p, _ := shedPipeline(t)
	p.traceComplete(traceN(1, 100, "a", time.Millisecond, false)) // plain
	p.traceComplete(traceN(2, 100, "a", time.Millisecond, true))  // error, queued with room
	p.traceComplete(traceN(3, 100, "a", 3*time.Second, false))    // slow, displaces 1
	p.traceComplete(traceN(4, 100, "a", 3*time.Second, false))    // slow: nothing below it
	if d, n := droppedBy(p, skipDisplaced), droppedBy(p, skipNoRoomToo); d != 1 || n != 1 {
		t.Fatalf("displaced %v, no_room_priority %v; want 1, 1", d, n)
	}
	if q := p.queue.spans.Load(); q != 200 {
		t.Fatalf("queued %d spans, want 200 (within the bound)", q)
	}
}

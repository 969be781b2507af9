package server

import (
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

// A head cut completes its traces at once (a cluster node's every 3 s):
// a burst of four times the analysis queue, with a worker that keeps up,
// is analysed whole. The completion goroutine used to decode the burst
// into the queue faster than the worker took it, and the queue skipped
// the rest of the burst (30 of these 40 traces).
func TestCutBurstLargerThanTheQueueIsAnalysedWhole(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.Analysis.QueueSpans = 100
		c.Storage.TraceIdleTimeout = 200 * time.Millisecond
	})
	const traces, perTrace = 40, 10
	var spans []model.Span
	for i := range traces {
		tr := traceOf(perTrace, "burst")
		tr0 := tr[0].TraceID
		tr0[1], tr0[2] = byte(i), 0xb
		for k := range tr {
			tr[k].TraceID = tr0
		}
		spans = append(spans, tr...)
	}
	postOTLP(t, s.Addr("otlp-http"), spans)
	deadline := time.Now().Add(20 * time.Second)
	for {
		analysed := metricValue(t, s, "tracedx_analysis_traces_total")
		dropped := 0.0
		for _, v := range metricValues(t, s, "tracedx_analysis_dropped_total") {
			dropped += v
		}
		if dropped > 0 {
			t.Fatalf("%v of %d traces completing in one cut skipped by a queue of %d spans (%v analysed): %v", dropped, traces, 100, analysed, metricValues(t, s, "tracedx_analysis_dropped_total"))
		}
		if analysed == traces {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v of %d traces analysed", analysed, traces)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if w := metricValue(t, s, "tracedx_analysis_room_wait_seconds_total"); w <= 0 {
		t.Errorf("no completion waited for room (%v s)", w)
	}
}

// A completion waits for room only while the worker finishes traces: with
// the worker stuck (a huge trace, or stopped), the first trace of a burst
// waits analysisRoomWait and the rest are skipped at once, until the
// worker finishes one again.
func TestRoomWaitStopsWhileTheWorkerIsStuck(t *testing.T) {
	p := testPipeline(t, func(c *config.Config) { c.Analysis.QueueSpans = 100 })
	p.sampleBits.Store(0) // no trace is in the analytics' sample
	p.traceComplete(completedOf(traceOf(50, "a")))
	p.traceComplete(completedOf(traceOf(50, "a")))
	take := func() (bool, time.Duration) {
		c := completing(completedOf(traceOf(60, "b")))
		c.CanWait = true
		start := time.Now()
		ok := p.takeSpans(c)
		return ok, time.Since(start)
	}
	if ok, took := take(); ok || took < analysisRoomWait {
		t.Fatalf("full queue, no worker: took=%v after %v, want false after %v", ok, took, analysisRoomWait)
	}
	if ok, took := take(); ok || took > analysisRoomWait/5 {
		t.Fatalf("second trace with the worker stuck: took=%v after %v, want false at once", ok, took)
	}
	finish := func() {
		if tr, ok := p.queue.pop(); ok {
			p.queue.done(tr.c)
		}
	}
	// The worker finishes a trace (not room enough), then another 50 ms
	// later: the completion waits for it again.
	finish()
	go func() {
		time.Sleep(50 * time.Millisecond)
		finish()
	}()
	if ok, took := take(); !ok || took < 40*time.Millisecond {
		t.Fatalf("worker finishing a trace after 50 ms: took=%v after %v", ok, took)
	}
}

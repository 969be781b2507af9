package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Benchmarks of the head's side of ingest with completion on, as the
// server runs it (every trace wanted by the detectors). Reproduce with
//
//	go test -run '^$' -bench 'HeadInsert|CutComplete' -benchmem -count 3 ./internal/store/engine/
//
// Requests carry traces split into one run per service (SDKs batch by
// resource), which is what byService reproduces.

// byService reorders a batch the way an OTLP request holds it: spans
// grouped by service, so each trace comes in several runs.
func byService(spans []model.Span) []model.Span {
	out := slices.Clone(spans)
	slices.SortStableFunc(out, func(a, b model.Span) int {
		switch {
		case a.Service < b.Service:
			return -1
		case a.Service > b.Service:
			return 1
		}
		return 0
	})
	return out
}

type encodedBatch struct {
	spans []model.Span
	buf   []byte
	offs  []int
}

func encodeBatches(n, size int) []encodedBatch {
	g := newGen(7)
	now := uint64(time.Now().UnixNano())
	return encodeBatchesOf(n, func() []model.Span { return g.batch(size, now, 1e6) })
}

// encodeBatchesOf is encodeBatches with spans from next.
func encodeBatchesOf(n int, next func() []model.Span) []encodedBatch {
	out := make([]encodedBatch, n)
	for i := range out {
		b := &out[i]
		b.spans = byService(next())
		// Encoded as Write encodes them.
		var fb frameBuf
		fb.encode(b.spans)
		b.buf, b.offs = fb.b, fb.offs
	}
	return out
}

// BenchmarkHeadInsert measures adding a request's encoded spans to the
// head (one op is one request of ~500 spans).
func BenchmarkHeadInsert(b *testing.B) {
	batches := encodeBatches(64, 500)
	h := newHead(nil, true)
	spans := 0
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		if i%64 == 0 {
			b.StopTimer()
			h = newHead(nil, true)
			b.StartTimer()
		}
		bt := &batches[i%64]
		h.insert(bt.spans, bt.buf, bt.offs, 1, int64(i))
		spans += len(bt.spans)
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(spans), "cpu-ns/span")
	b.ReportMetric(float64(h.bytes.Load())/float64(h.spans.Load()), "head-bytes/span")
}

// BenchmarkCut measures cutting a full head into a level-0 block
// (grouping, block catalog, S2, files), without completion. One op is 64
// requests of ~500 spans.
func BenchmarkCut(b *testing.B) { benchCut(b, encodeBatches(64, 500)) }

// BenchmarkCutLoadgen is BenchmarkCut with the harness's spans
// (loadgenBatch): more attributes per span, high-cardinality values, and
// server, client and database spans interleaved, as the server cuts them
// under the harness.
func BenchmarkCutLoadgen(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	base := time.Now()
	benchCut(b, encodeBatchesOf(64, func() []model.Span { return loadgenBatch(rng, 500, base) }))
}

func benchCut(b *testing.B, batches []encodedBatch) {
	e, err := Open(context.Background(), Options{Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var spans, headBytes int64
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		now := time.Now().UnixNano()
		spans += insertBatches(e, batches, i, now)
		headBytes += e.head.bytes.Load()
		b.StartTimer()
		cpu0 := processCPU()
		if err := e.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - cpu0
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(spans), "cpu-ns/span")
	b.ReportMetric(float64(headBytes)/float64(spans), "head-bytes/span")
}

// BenchmarkCutComplete measures what memory pressure costs per span: the
// head is cut before its traces are idle (all of them complete later), and
// once idle they are completed and decoded for OnTraceComplete. One op is
// 64 requests of ~500 spans: insert, cut to a level-0 block, complete.
func BenchmarkCutComplete(b *testing.B) {
	batches := encodeBatches(64, 500)
	var got atomic.Int64
	e, err := Open(context.Background(), Options{
		Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour,
		OnTraceComplete: func(ct CompletedTrace) { got.Add(int64(len(ct.Spans))) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	var spans, coldBytes int64
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		now := time.Now().UnixNano()
		spans += insertBatches(e, batches, i, now)
		e.flushMu.Lock()
		err := e.cutToBlock(ctx, func(*headTrace) bool { return true }, now-1)
		e.flushMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		e.pendingMu.Lock()
		coldBytes += e.cold.bytes
		e.pendingMu.Unlock()
		e.opts.IdleTimeout = -time.Hour // everything pending is idle now
		e.completePending(ctx)
		e.opts.IdleTimeout = time.Hour
		for got.Load() < spans {
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.StopTimer()
	if got.Load() != spans {
		b.Fatalf("completed %d spans, wrote %d", got.Load(), spans)
	}
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(spans), "cpu-ns/span")
	b.ReportMetric(float64(e.readBacks.Load())/float64(b.N), "readbacks/op")
	b.ReportMetric(float64(coldBytes)/float64(spans), "cold-bytes/span")
}

// insertBatches adds batches to e's head as written at now, with trace
// ids fresh for op i (or the traces would merge with the last op's), and
// returns how many spans it added.
func insertBatches(e *Engine, batches []encodedBatch, i int, now int64) int64 {
	var spans int64
	for k := range batches {
		bt := &batches[k]
		for j := range bt.spans {
			bt.spans[j].TraceID[0], bt.spans[j].TraceID[1] = byte(i), byte(i>>8)
		}
		e.head.insert(bt.spans, reencode(bt), bt.offs, 1, now)
		spans += int64(len(bt.spans))
	}
	return spans
}

// reencode writes the batch's current trace ids into its framed bytes (the
// trace id opens every encoded span, after the 4-byte frame length).
func reencode(bt *encodedBatch) []byte {
	for j := range bt.spans {
		copy(bt.buf[bt.offs[j]+4:], bt.spans[j].TraceID[:])
	}
	return bt.buf
}

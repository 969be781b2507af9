package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Traces cut under memory pressure complete from the cold tier once idle,
// with exactly the spans written. With a cold budget too small to keep
// them, they complete by reading blocks back instead, with the same result.
func TestEarlyCutTracesCompleteFromColdTier(t *testing.T) {
	for _, tc := range []struct {
		name      string
		budget    int64 // cold tier budget
		wantEvict bool
	}{
		// The test's traces compress to more than the default budget
		// (HeadMaxBytes/4 = 128 KiB here) while they wait, so "cold" gives
		// the tier room to hold them all.
		{name: "cold", budget: 64 << 20},
		{name: "evicted", budget: 1, wantEvict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			got := map[model.TraceID][]model.Span{}
			calls := map[model.TraceID]int{}
			o := testOpts(t.TempDir())
			o.IdleTimeout = 1500 * time.Millisecond
			o.FlushInterval = 20 * time.Millisecond
			o.HeadMaxBytes = 512 << 10
			o.OnTraceComplete = func(c CompletedTrace) {
				id, spans := c.ID, c.Spans
				mu.Lock()
				got[id] = spans
				calls[id]++
				mu.Unlock()
			}
			e := openT(t, o)
			defer e.Close()
			if tc.budget > 0 {
				e.pendingMu.Lock()
				e.cold.budget = tc.budget
				e.pendingMu.Unlock()
			}
			g := newGen(31)
			want := map[model.TraceID][]model.Span{}
			for i := 0; i < 300; i++ {
				tr := g.trace(1_700_000_000e9 + uint64(i)*1e6)
				want[tr[0].TraceID] = tr
				writeRetrying(t, e, tr)
				if i%50 == 49 {
					// Let the flusher cut what is older than 250 ms.
					time.Sleep(300 * time.Millisecond)
				}
			}
			e.pendingMu.Lock()
			cold := e.cold.seq
			e.pendingMu.Unlock()
			if cold == 0 {
				t.Fatalf("no trace went to the cold tier; stats %+v", e.Stats())
			}
			waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
			time.Sleep(o.IdleTimeout / 2) // no second completion may follow
			mu.Lock()
			defer mu.Unlock()
			for id, w := range want {
				if calls[id] != 1 {
					t.Fatalf("trace %s completed %d times", id, calls[id])
				}
				sameSpans(t, normSpans(w), normSpans(got[id]))
			}
			if rb := e.readBacks.Load(); tc.wantEvict != (rb > 0) {
				t.Fatalf("%d traces completed by reading blocks back (evictions expected: %v)", rb, tc.wantEvict)
			}
			e.pendingMu.Lock()
			defer e.pendingMu.Unlock()
			if len(e.pending) != 0 {
				t.Fatalf("%d traces still pending", len(e.pending))
			}
			if !tc.wantEvict && e.cold.bytes != 0 {
				t.Fatalf("cold tier still holds %d bytes after every trace completed", e.cold.bytes)
			}
		})
	}
}

// normSpans is normSpan over a copy of spans.
func normSpans(spans []model.Span) []model.Span {
	out := make([]model.Span, len(spans))
	for i, s := range spans {
		out[i] = normSpan(s)
	}
	return out
}

// normSpan makes nil and empty lists compare equal.
func normSpan(s model.Span) model.Span {
	if len(s.Attrs) == 0 {
		s.Attrs = nil
	}
	if len(s.Resource) == 0 {
		s.Resource = nil
	}
	if len(s.Events) == 0 {
		s.Events = nil
	}
	if len(s.Links) == 0 {
		s.Links = nil
	}
	return s
}

// A trace registered by a cut but not yet handed to the cold tier (the cut
// registers first, writeCut adds its spans after) may go idle in between
// on a starved CPU. The completion pass used to complete it from no parts
// and crash the server (index out of range); now it waits for the parts.
func TestPendingTraceWithoutPartsYetWaits(t *testing.T) {
	o := testOpts(t.TempDir())
	o.OnTraceComplete = func(CompletedTrace) {}
	e := openT(t, o)
	defer e.Close()
	id := model.TraceID{3, 1, 4}
	old := time.Now().Add(-2 * time.Hour).UnixNano()
	e.pendingMu.Lock()
	e.pending[id] = &pendingTrace{lastSeen: old}
	e.pendingQ = append(e.pendingQ, pendingRef{id, old})
	e.nPending.Store(1)
	e.pendingMu.Unlock()

	e.completePending(context.Background())

	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	if e.pending[id] == nil || len(e.pendingQ) != 1 {
		t.Fatalf("a trace without its parts yet was taken: pending %v, queue %d", e.pending[id], len(e.pendingQ))
	}
}

// Traces cut before they are idle keep the level-0 block's own compressed
// chunks in the cold tier (no second compression), and complete from them
// with exactly the spans written and no read-back.
func TestEarlyCutKeepsLevel0Chunks(t *testing.T) {
	e, want, got := openCutTest(t, func(BlockStorage) BlockStorage { return nil })
	cutAllEarly(t, e)

	e.mu.RLock()
	if len(e.blocks) != 1 {
		e.mu.RUnlock()
		t.Fatalf("%d blocks after one cut", len(e.blocks))
	}
	b := e.blocks[0]
	e.mu.RUnlock()
	var onDisk [][]byte
	for c := 0; c+1 < len(b.l0.chunkOff); c++ {
		z := make([]byte, b.l0.chunkOff[c+1]-b.l0.chunkOff[c])
		if _, err := b.file.ReadAt(z, b.l0.chunkOff[c]); err != nil {
			t.Fatal(err)
		}
		onDisk = append(onDisk, z)
	}
	e.pendingMu.Lock()
	var kept [][]byte
	for _, c := range e.cold.chunks {
		kept = append(kept, c.data)
	}
	e.pendingMu.Unlock()
	if len(onDisk) < 2 || len(kept) != len(onDisk) {
		t.Fatalf("block has %d chunks, cold tier %d (want the same, at least 2)", len(onDisk), len(kept))
	}
	for i := range kept {
		if !bytes.Equal(kept[i], onDisk[i]) {
			t.Fatalf("cold chunk %d is not the block's chunk %d", i, i)
		}
	}

	completeAllPending(t, e, want, got)
	if rb := e.readBacks.Load(); rb != 0 {
		t.Fatalf("%d traces read back from blocks", rb)
	}
}

// A cut whose block fails after some of its chunks went to the cold tier
// puts its traces back in the head; once cut again they complete exactly
// once, with exactly their spans.
func TestFailedCutCompletesEarlyTracesExactly(t *testing.T) {
	fail := &failingStorage{failAfter: 100 << 10}
	e, want, got := openCutTest(t, func(local BlockStorage) BlockStorage {
		fail.BlockStorage = local
		return fail
	})
	ctx := context.Background()
	now := time.Now().UnixNano()
	e.flushMu.Lock()
	err := e.cutToBlock(ctx, func(*headTrace) bool { return true }, now-int64(time.Hour))
	e.flushMu.Unlock()
	if err == nil {
		t.Fatal("the cut did not fail")
	}
	e.pendingMu.Lock()
	if e.cold.seq == 0 || e.cold.bytes != 0 {
		e.pendingMu.Unlock()
		t.Fatalf("cold tier: %d chunks added, %d bytes kept after the failed cut (want some added, none kept)", e.cold.seq, e.cold.bytes)
	}
	for id := range want {
		if p := e.pending[id]; p == nil || !p.inHead || len(p.parts) != 0 {
			e.pendingMu.Unlock()
			t.Fatalf("trace %s after the failed cut: %+v (want back in the head, no parts)", id, p)
		}
	}
	e.pendingMu.Unlock()
	if n := e.head.traces.Load(); n != int64(len(want)) {
		t.Fatalf("head holds %d traces after the failed cut, want %d", n, len(want))
	}

	fail.mu.Lock()
	fail.failAfter = 0
	fail.mu.Unlock()
	cutAllEarly(t, e)
	completeAllPending(t, e, want, got)
}

// A failed cut puts its traces back in the head as they were, without
// decoding and encoding them again (which took 2-3 times the cut's size
// on every retry while a full disk failed the cuts): each trace keeps its
// buffer, the head's accounting is what it was, and a trace written to
// during the cut holds both its cut and its new spans. The next cut then
// completes every trace exactly once, with exactly its spans.
func TestFailedCutRestoresTracesWithoutCopying(t *testing.T) {
	fail := &failingStorage{failAfter: 100 << 10}
	e, want, got := openCutTest(t, func(local BlockStorage) BlockStorage {
		fail.BlockStorage = local
		return fail
	})
	bufs := map[model.TraceID]*byte{}
	for id := range want {
		buf, _ := e.head.encoded(id)
		bufs[id] = unsafe.SliceData(buf)
	}
	bytesBefore, spansBefore, tracesBefore := e.head.bytes.Load(), e.head.spans.Load(), e.head.traces.Load()
	id, werr := writeDuringCut(e, want)
	e.flushMu.Lock()
	err := e.cutToBlock(context.Background(), func(*headTrace) bool { return true }, time.Now().Add(-time.Hour).UnixNano())
	e.flushMu.Unlock()
	if err == nil || *werr != nil {
		t.Fatalf("cut: %v (want the injected failure), late write: %v", err, *werr)
	}
	for tid, p := range bufs {
		buf, n := e.head.encoded(tid)
		if tid == id {
			if n != len(want[tid]) {
				t.Fatalf("trace written to during the cut holds %d spans, want %d", n, len(want[tid]))
			}
			continue
		}
		if unsafe.SliceData(buf) != p || n != len(want[tid]) {
			t.Fatalf("trace %s after the failed cut: %d spans in a new buffer (%v), want its %d spans in its own buffer", tid, n, unsafe.SliceData(buf) != p, len(want[tid]))
		}
	}
	if tr, sp := e.head.traces.Load(), e.head.spans.Load(); tr != tracesBefore || sp != spansBefore+1 {
		t.Fatalf("head holds %d traces and %d spans, want %d and %d", tr, sp, tracesBefore, spansBefore+1)
	}
	if b := e.head.bytes.Load(); b < bytesBefore {
		t.Fatalf("head accounts %d bytes, fewer than the %d before the cut", b, bytesBefore)
	}
	sum, err := e.Trace(context.Background(), id, store.TimeRange{})
	if err != nil || len(sum) != len(want[id]) {
		t.Fatalf("trace written to during the cut reads %d spans (%v), want %d", len(sum), err, len(want[id]))
	}

	fail.mu.Lock()
	fail.failAfter = 0
	fail.mu.Unlock()
	cutAllEarly(t, e)
	completeAllPending(t, e, want, got)
}

// Spans written while a cut has taken their trace out of the head but not
// yet registered it as pending used to find no pending entry, so the entry
// said the head held nothing newer: the trace completed from its cut spans
// alone, and the late spans completed again as the same trace later.
func TestWriteDuringEarlyCutCompletesOnce(t *testing.T) {
	e, want, got := openCutTest(t, func(BlockStorage) BlockStorage { return nil })
	_, werr := writeDuringCut(e, want)
	cutAllEarly(t, e)
	if *werr != nil {
		t.Fatal(*werr)
	}
	if n := e.head.traces.Load(); n != 1 {
		t.Fatalf("head holds %d traces after the cut, want the late span's one", n)
	}

	// Every early-cut trace is idle before the late span's head copy is,
	// so the completion pass comes first, then the head's idle cut.
	e.opts.IdleTimeout = -time.Hour
	e.completePending(context.Background())
	e.flushMu.Lock()
	err := e.cutToBlock(context.Background(), func(*headTrace) bool { return true }, time.Now().Add(time.Hour).UnixNano())
	e.flushMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	checkCompletedOnce(t, e, want, got)
}

// writeDuringCut makes the next cut write a late span of one of want's
// traces (added to want) once it has taken the traces out of the head,
// and only that cut. It returns the trace's id and the write's error.
func writeDuringCut(e *Engine, want map[model.TraceID][]model.Span) (model.TraceID, *error) {
	var id model.TraceID
	for id = range want {
		break
	}
	late := want[id][0]
	late.SpanID = model.SpanID{0xfe, 0xed}
	late.ParentSpanID = want[id][0].SpanID
	want[id] = append(want[id], late)
	werr := new(error)
	e.afterCutIDs = func() {
		e.afterCutIDs = nil
		*werr = e.Write(context.Background(), []model.Span{late})
	}
	return id, werr
}

// openCutTest opens an engine whose block storage is wrap(local storage)
// (nil: the default) and writes traces to its head.
func openCutTest(t *testing.T, wrap func(local BlockStorage) BlockStorage) (*Engine, map[model.TraceID][]model.Span, *completions) {
	t.Helper()
	got := &completions{spans: map[model.TraceID][]model.Span{}, calls: map[model.TraceID]int{}}
	dir := t.TempDir()
	o := testOpts(dir)
	local, err := NewLocalStorage(filepath.Join(dir, "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	if st := wrap(local); st != nil {
		o.Storage = st
	}
	o.IdleTimeout, o.FlushInterval, o.CompactInterval = time.Hour, time.Hour, time.Hour
	o.HeadMaxBytes = 1 << 30
	o.OnTraceComplete = got.add
	e := openT(t, o)
	t.Cleanup(func() { e.Close() })
	g := newGen(77)
	want := map[model.TraceID][]model.Span{}
	for i := 0; i < 150; i++ {
		tr := g.trace(1_700_000_000e9 + uint64(i)*1e6)
		want[tr[0].TraceID] = tr
		writeRetrying(t, e, tr)
	}
	return e, want, got
}

// cutAllEarly cuts the whole head as traces not idle yet.
func cutAllEarly(t *testing.T, e *Engine) {
	t.Helper()
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	now := time.Now().UnixNano()
	if err := e.cutToBlock(context.Background(), func(*headTrace) bool { return true }, now-int64(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// completeAllPending makes every pending trace idle, completes them and
// checks each completed once with exactly the spans written.
func completeAllPending(t *testing.T, e *Engine, want map[model.TraceID][]model.Span, got *completions) {
	t.Helper()
	e.opts.IdleTimeout = -time.Hour
	e.completePending(context.Background())
	checkCompletedOnce(t, e, want, got)
}

// checkCompletedOnce waits for every trace of want to complete and checks
// each completed once with exactly the spans written, and nothing is left
// pending.
func checkCompletedOnce(t *testing.T, e *Engine, want map[model.TraceID][]model.Span, got *completions) {
	t.Helper()
	waitFor(t, func() bool { got.mu.Lock(); defer got.mu.Unlock(); return len(got.spans) == len(want) })
	got.mu.Lock()
	defer got.mu.Unlock()
	for id, w := range want {
		if got.calls[id] != 1 {
			t.Fatalf("trace %s completed %d times", id, got.calls[id])
		}
		g, w := normSpans(got.spans[id]), normSpans(w)
		bySpanID := func(a, b model.Span) int { return bytes.Compare(a.SpanID[:], b.SpanID[:]) }
		slices.SortFunc(g, bySpanID)
		slices.SortFunc(w, bySpanID)
		sameSpans(t, w, g)
	}
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	if len(e.pending) != 0 || e.cold.bytes != 0 {
		t.Fatalf("%d traces still pending, cold tier %d bytes", len(e.pending), e.cold.bytes)
	}
}

type completions struct {
	mu    sync.Mutex
	spans map[model.TraceID][]model.Span
	calls map[model.TraceID]int
}

func (c *completions) add(ct CompletedTrace) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans[ct.ID] = ct.Spans
	c.calls[ct.ID]++
}

// failingStorage is local block storage whose level-0 data writes fail
// past failAfter bytes of a block (0: never).
type failingStorage struct {
	BlockStorage
	mu        sync.Mutex
	failAfter int
}

func (f *failingStorage) Create(ctx context.Context, id string) (BlockWriter, error) {
	w, err := f.BlockStorage.Create(ctx, id)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return failingWriter{BlockWriter: w, left: f.failAfter}, nil
}

type failingWriter struct {
	BlockWriter
	left int
}

func (w failingWriter) File(name string) (io.WriteCloser, error) {
	f, err := w.BlockWriter.File(name)
	if err != nil || w.left == 0 || name != fileL0 {
		return f, err
	}
	return &failingFile{WriteCloser: f, left: w.left}, nil
}

type failingFile struct {
	io.WriteCloser
	left int
}

func (f *failingFile) Write(p []byte) (int, error) {
	if len(p) > f.left {
		return 0, errors.New("injected write failure")
	}
	f.left -= len(p)
	return f.WriteCloser.Write(p)
}

// Completing traces from the cold tier yields to queries between runs of
// traces (up to a query's turn each time); a head cut must not wait behind
// those yields, so they come with flushMu free.
func TestColdCompletionYieldsWithoutFlushMu(t *testing.T) {
	e, want, got := openCutTest(t, func(BlockStorage) BlockStorage { return nil })
	if len(want) <= coldYieldEvery {
		t.Fatalf("%d traces: too few for the completion to yield", len(want))
	}
	cutAllEarly(t, e)
	var yields, held int
	// Set before completePending hands anything to the completion loop,
	// which reads it after receiving.
	e.opts.YieldBackground = func(context.Context) {
		pcs := make([]uintptr, 1)
		runtime.Callers(2, pcs)
		f, _ := runtime.CallersFrames(pcs).Next()
		if !strings.HasSuffix(f.Function, ".completePending") {
			return
		}
		yields++
		if !e.flushMu.TryLock() {
			held++
			return
		}
		e.flushMu.Unlock()
	}
	completeAllPending(t, e, want, got)
	if yields == 0 || held > 0 {
		t.Fatalf("the cold completion yielded %d times, %d of them holding flushMu (want some, none holding it)", yields, held)
	}
}

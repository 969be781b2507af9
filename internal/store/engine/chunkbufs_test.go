package engine

import (
	"context"
	"sync"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// Chunk buffers go back to a freelist after each background read and cut
// and are reused by the next: a trace read, scanned or written while
// other readers and cuts run at once must come out whole, and traces
// decoded earlier must not change when their chunk's buffers are reused.
func TestChunkBuffersAreNotSharedBetweenReads(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	g := newGen(23)
	var all []model.Span
	for i := range 3 {
		// ~2,000 spans: several chunks per block.
		spans := g.batch(2000, 1_700_000_000e9+uint64(i)*30e9, 5e6)
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	byID := groupByTrace(all)
	e.mu.RLock()
	var blocks []*block
	for _, b := range e.blocks {
		if b.l0 != nil {
			blocks = append(blocks, b)
		}
	}
	e.mu.RUnlock()
	if len(blocks) != 3 || len(blocks[0].l0.chunkOff) < 4 {
		t.Fatalf("%d level-0 blocks (want 3), the first with %d chunks (want several)", len(blocks), len(blocks[0].l0.chunkOff)-1)
	}

	// Decoded before the concurrent reads below reuse its buffers.
	first := blocks[0]
	early, err := first.l0ReadTrace(0, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	type read struct {
		id    model.TraceID
		spans []model.Span
	}
	var wg sync.WaitGroup
	results := make([][]read, 2*len(blocks))
	errs := make([]error, len(results)+1)
	for k := range results {
		b := blocks[k%len(blocks)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []read
			if k < len(blocks) {
				// Scans: the buffer handed to fn is copied by decodeFramed.
				errs[k] = b.l0Scan(ctx, nil, func(i int, buf []byte) error {
					spans, err := decodeFramed(buf, nil)
					out = append(out, read{b.idx.ids[i], spans})
					return err
				})
			} else {
				for i := len(b.idx.ids) - 1; i >= 0 && errs[k] == nil; i -= 7 {
					var spans []model.Span
					spans, errs[k] = b.l0ReadTrace(i, false, nil)
					out = append(out, read{b.idx.ids[i], spans})
				}
			}
			results[k] = out
		}()
	}
	// A cut at the same time takes chunk buffers too.
	more := g.batch(2000, 1_700_000_200e9, 5e6)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if errs[len(results)] = e.Write(ctx, more); errs[len(results)] == nil {
			errs[len(results)] = e.Flush(ctx)
		}
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, out := range results {
		for _, r := range out {
			sameSpans(t, byID[r.id], r.spans)
			n++
		}
	}
	if n < len(byID) {
		t.Fatalf("checked %d traces, want at least the %d written", n, len(byID))
	}
	sameSpans(t, byID[first.idx.ids[0]], early)
	checkAllTraces(t, e, append(all, more...))
}

package engine

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// snapSpan is a span of trace tid (its first byte) and service svc.
func snapSpan(tid byte, n uint64, svc string, start uint64) model.Span {
	s := fullSpan()
	s.TraceID = model.TraceID{tid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7}
	s.SpanID = model.SpanID{tid, byte(n), 1}
	s.ParentSpanID = model.SpanID{tid, 0, 1}
	s.Service = svc
	s.Resource = model.Attrs{{Key: "service.name", Value: model.Str(svc)}}
	s.StartUnixNano, s.EndUnixNano = start, start+1e6
	return s
}

// A snapshot refers to head traces instead of copying them: a trace cut
// into a block after the snapshot was taken (a block the snapshot does
// not hold) is still read whole from it, once.
func TestSnapshotKeepsHeadTracesCutAfterIt(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	const t0 = 1_700_000_000e9
	// Trace 1: "api" spans in a block, "db" spans in the head, which a
	// search for "api" reaches only through the block. Trace 2: "api"
	// spans in the head only. Both share head shard 7.
	if err := e.Write(ctx, []model.Span{snapSpan(1, 1, "api", t0), snapSpan(1, 2, "api", t0+1)}); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	head := []model.Span{snapSpan(1, 3, "db", t0+2), snapSpan(1, 4, "db", t0+3), snapSpan(1, 5, "db", t0+4),
		snapSpan(2, 1, "api", t0+5), snapSpan(2, 2, "db", t0+6)}
	if err := e.Write(ctx, head); err != nil {
		t.Fatal(err)
	}
	q := store.Query{Service: "api"}
	s := e.snapFor(&q)
	defer s.release()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.HeadSpans != 0 || st.Blocks != 2 {
		t.Fatalf("after the second cut: %+v", st)
	}

	got, err := s.search(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("found %d traces, want 2", len(got))
	}
	want := map[byte]struct{ spans, api, db int }{1: {5, 2, 3}, 2: {2, 1, 1}}
	for _, sum := range got {
		w := want[sum.TraceID[0]]
		counts := map[string]int{}
		for _, sv := range sum.Services {
			counts[sv.Name] += sv.SpanCount
		}
		if sum.SpanCount != w.spans || counts["api"] != w.api || counts["db"] != w.db {
			t.Errorf("trace %d: %d spans, %v; want %d, api %d, db %d", sum.TraceID[0], sum.SpanCount, counts, w.spans, w.api, w.db)
		}
	}
	for id, n := range map[byte]int{1: 5, 2: 2} {
		tid := model.TraceID{id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7}
		spans, err := s.spans(tid)
		if err != nil {
			t.Fatal(err)
		}
		if len(spans) != n || s.spanCount(tid) != n {
			t.Errorf("trace %d: %d spans read, %d counted; want %d", id, len(spans), s.spanCount(tid), n)
		}
	}
}

// Head fragments that fail the query's summary checks are not walked.
func TestSnapshotWalksOnlyPassingHeadFragments(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	const t0 = 1_700_000_000e9
	if err := e.Write(ctx, []model.Span{snapSpan(1, 1, "api", t0), snapSpan(2, 1, "db", t0+1), snapSpan(3, 1, "api", t0+2)}); err != nil {
		t.Fatal(err)
	}
	q := store.Query{Service: "api"}
	s := e.snapFor(&q)
	defer s.release()
	if len(s.cands) != 2 || len(s.headRefs) != 3 {
		t.Fatalf("%d candidates of %d head traces, want 2 of 3", len(s.cands), len(s.headRefs))
	}
	got, err := s.search(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].TraceID[0] != 3 || got[1].TraceID[0] != 1 {
		t.Fatalf("found %+v, want traces 3 then 1", got)
	}
}

// Searches and reads while spans arrive and the head is cut: a trace's
// span count never falls (nothing is lost when its head fragment is cut
// after a snapshot) and never exceeds what was written (nothing counted
// twice). Run with -race, it also checks fragments are read under their
// shard's lock.
func TestSnapshotWhileWritingAndCutting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	const t0, traces, rounds = 1_700_000_000e9, 8, 60
	// sent counts before a write, written after: a search between the
	// two may or may not see the write's spans.
	var sent, written [traces]atomic.Int64
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for r := range rounds {
			var batch []model.Span
			for k := range traces {
				svc := "api"
				if r%2 == 1 {
					svc = "db"
				}
				batch = append(batch, snapSpan(byte(k+1), uint64(r), svc, t0+uint64(r)))
			}
			for k := range traces {
				sent[k].Add(1)
			}
			if err := e.Write(ctx, batch); err != nil {
				done <- err
				return
			}
			for k := range traces {
				written[k].Add(1)
			}
			if r%3 == 2 {
				if err := e.Flush(ctx); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	var last [traces]int
	for running := true; running; {
		select {
		case err, ok := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = ok
		default:
		}
		var before [traces]int64
		for k := range traces {
			before[k] = written[k].Load()
		}
		sums, err := e.Search(ctx, store.Query{Service: "api", Limit: traces})
		if err != nil {
			t.Fatal(err)
		}
		for _, sum := range sums {
			k := int(sum.TraceID[0]) - 1
			if n := sum.SpanCount; n < last[k] || int64(n) < before[k] || int64(n) > sent[k].Load() {
				t.Fatalf("trace %d: %d spans after %d; %d written, %d sent", k+1, n, last[k], before[k], sent[k].Load())
			}
			last[k] = sum.SpanCount
		}
	}
	for k := range traces {
		if last[k] == 0 {
			t.Errorf("trace %d never found", k+1)
		}
	}
}

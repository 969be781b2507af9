package engine

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Retention hands every expiring trace's summary and sampling decision to
// OnExpire before the block goes, whichever tier the block is in, and
// only for blocks that expire.
func TestRetentionHandsExpiredSummariesOver(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var clock atomic.Int64
	clock.Store(t0.Add(time.Minute).UnixNano())
	opts := testOpts(t.TempDir())
	opts.Retention, opts.UnkeptRetention = 48*time.Hour, 24*time.Hour
	opts.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	var mu sync.Mutex
	got := map[model.TraceID]ExpiredTrace{}
	opts.OnExpire = func(_ context.Context, ts []ExpiredTrace) error {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range ts {
			if _, dup := got[x.Summary.TraceID]; dup {
				t.Errorf("trace %s handed over twice", x.Summary.TraceID)
			}
			got[x.Summary.TraceID] = x
		}
		return nil
	}
	e := openT(t, opts)
	defer e.Close()
	ctx := context.Background()
	spans := newGen(7).batch(300, uint64(t0.UnixNano()), 5e6)
	byID := groupByTrace(spans)
	if err := e.Write(ctx, spans); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reason := map[model.TraceID]string{}
	n := 0
	for id := range byID {
		reason[id] = "error"
		if n%2 == 0 {
			reason[id] = DroppedReason
		}
		e.Decide(id, reason[id])
		n++
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("%d summaries handed over before any block expired", len(got))
	}
	check := func(want string) {
		t.Helper()
		for id, sp := range byID {
			x, ok := got[id]
			if (reason[id] == DroppedReason || want == "all") != ok {
				t.Errorf("trace %s (%s): handed over %v at stage %s", id, reason[id], ok, want)
				continue
			}
			if !ok {
				continue
			}
			if e.HasTrace(id) {
				t.Errorf("trace %s handed over but still stored", id)
			}
			s := model.Summarize(sp)
			// The index keeps services in its own order.
			byName := func(a, b model.ServiceStats) int { return strings.Compare(a.Name, b.Name) }
			slices.SortFunc(s.Services, byName)
			slices.SortFunc(x.Summary.Services, byName)
			if !reflect.DeepEqual(x.Summary, s) || x.Sampled != reason[id] {
				t.Errorf("trace %s: handed over %+v %q, want %+v %q", id, x.Summary, x.Sampled, s, reason[id])
			}
		}
	}
	clock.Store(t0.Add(25 * time.Hour).UnixNano())
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	check("unkept")
	clock.Store(t0.Add(49 * time.Hour).UnixNano())
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	check("all")
}

// Blocks the disk budget deletes are handed over too.
func TestDiskBudgetHandsExpiredSummariesOver(t *testing.T) {
	opts := testOpts(t.TempDir())
	var handed atomic.Int64
	opts.OnExpire = func(_ context.Context, ts []ExpiredTrace) error {
		handed.Add(int64(len(ts)))
		return nil
	}
	e := openT(t, opts)
	defer e.Close()
	ctx := context.Background()
	spans := newGen(9).batch(200, uint64(time.Now().UnixNano()), 5e6)
	convertSpans(t, e, spans)
	e.opts.MaxDiskBytes = 1 // below any block: every block goes
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if n, want := handed.Load(), int64(len(groupByTrace(spans))); n != want || e.Stats().BlockSpans != 0 {
		t.Errorf("handed over %d of %d traces; %d spans left", n, want, e.Stats().BlockSpans)
	}
}

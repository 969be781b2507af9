package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// readLog records, per written trace, how many spans were written (done)
// and how many were being or had been written (started), so a read can be
// checked against the writes done before it and those started by its end.
type readLog struct {
	mu      sync.Mutex
	ids     []model.TraceID
	svc     []string
	done    map[model.TraceID]int
	started map[model.TraceID]int
}

func (l *readLog) count(id model.TraceID) (done, started int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done[id], l.started[id]
}

func (l *readLog) pick(r *rand.Rand) (model.TraceID, string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ids) == 0 {
		return model.TraceID{}, "", false
	}
	k := r.IntN(len(l.ids))
	return l.ids[k], l.svc[k], true
}

// Trace reads and searches run while cuts (idle and early, which register
// pending traces) take traces out of the head: every written trace is
// found at every instant, with no span missing and none counted twice.
func TestReadsDuringCutsFindEveryTrace(t *testing.T) {
	o := testOpts(t.TempDir())
	o.HeadMaxBytes = 1 << 30
	var completed atomic.Int64
	o.OnTraceComplete = func(ct CompletedTrace) { completed.Add(int64(len(ct.Spans))) }
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()

	log := &readLog{done: map[model.TraceID]int{}, started: map[model.TraceID]int{}}
	const traces = 1500
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		done.Store(true)
	}

	wg.Add(1)
	go func() { // writer: whole traces, and now and then a late span of an older one
		defer wg.Done()
		defer done.Store(true)
		g := newGen(5)
		r := rand.New(rand.NewPCG(1, 2))
		base := uint64(time.Now().Add(-time.Minute).UnixNano())
		for i := 0; i < traces && !done.Load(); i++ {
			tr := g.trace(base + uint64(i)*1e6)
			if err := e.Write(ctx, tr); err != nil {
				fail(err)
				return
			}
			log.mu.Lock()
			log.ids = append(log.ids, tr[0].TraceID)
			log.svc = append(log.svc, tr[0].Service)
			log.done[tr[0].TraceID] = len(tr)
			log.started[tr[0].TraceID] = len(tr)
			log.mu.Unlock()
			if i%7 == 6 {
				id, _, _ := log.pick(r)
				late := tr[len(tr)-1]
				late.TraceID = id
				late.SpanID = g.id8()
				log.mu.Lock()
				log.started[id]++
				log.mu.Unlock()
				if err := e.Write(ctx, []model.Span{late}); err != nil {
					fail(err)
					return
				}
				log.mu.Lock()
				log.done[id]++
				log.mu.Unlock()
			}
		}
	}()

	wg.Add(1)
	cuts := 0
	go func() { // cutter: early cuts (pending registration) and idle cuts
		defer wg.Done()
		for !done.Load() {
			idleBefore := time.Now().Add(-time.Hour).UnixNano() // not idle: pending
			if cuts%2 == 1 {
				idleBefore = time.Now().Add(time.Hour).UnixNano() // idle: complete now
			}
			e.flushMu.Lock()
			err := e.cutToBlock(ctx, func(*headTrace) bool { return true }, idleBefore)
			e.flushMu.Unlock()
			if err != nil {
				fail(err)
				return
			}
			cuts++
			time.Sleep(time.Millisecond)
		}
	}()

	var reads atomic.Int64
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(seed uint64) { // readers: by id, span count, search
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 3))
			for !done.Load() {
				id, svc, ok := log.pick(r)
				if !ok {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				before, _ := log.count(id)
				spans, err := e.Trace(ctx, id, store.TimeRange{})
				_, after := log.count(id)
				if err != nil || len(spans) < before || len(spans) > after {
					fail(fmt.Errorf("trace %s: %d spans (err %v), %d written before the read, %d started by its end", id, len(spans), err, before, after))
					return
				}
				before, _ = log.count(id)
				n, err := e.TraceSpanCount(ctx, id, store.TimeRange{})
				_, after = log.count(id)
				if err != nil || n < before || n > after {
					fail(fmt.Errorf("span count of %s: %d (err %v), %d written before, %d started by its end", id, n, err, before, after))
					return
				}
				sums, err := e.Search(ctx, store.Query{Service: svc, TraceIDs: []model.TraceID{id}, Limit: 20})
				if err != nil || len(sums) != 1 || sums[0].TraceID != id {
					fail(fmt.Errorf("search for %s (service %s): %d results (err %v)", id, svc, len(sums), err))
					return
				}
				reads.Add(1)
			}
		}(uint64(w) + 10)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if cuts < 10 || reads.Load() < 100 {
		t.Fatalf("only %d cuts and %d reads ran alongside each other", cuts, reads.Load())
	}
	t.Logf("%d cuts, %d reads", cuts, reads.Load())
}

// BenchmarkCutLockHold measures how long a head cut holds the engine's
// lock, which every trace read and search waits for meanwhile: the head
// holds 64 requests of ~500 spans (~1,900 traces, about what a cut takes
// each second at 30k spans/s). "early" cuts traces that are not idle yet,
// which registers them as pending (memory pressure); "idle" completes them.
// hold-us is the wall time from taking the lock to releasing it.
//
//	taskset -c 1 go test -run '^$' -bench CutLockHold -benchmem ./internal/store/engine/
func BenchmarkCutLockHold(b *testing.B) {
	for _, early := range []bool{false, true} {
		name := "idle"
		if early {
			name = "early"
		}
		b.Run(name, func(b *testing.B) { benchCutLockHold(b, early) })
	}
}

func benchCutLockHold(b *testing.B, early bool) {
	batches := encodeBatches(64, 500)
	e, err := Open(context.Background(), Options{
		Dir: b.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour,
		HeadMaxBytes: 1 << 30, OnTraceComplete: func(CompletedTrace) {},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	var held time.Duration
	e.cutHeld = func(d time.Duration) { held += d }
	for i := 0; i < b.N; i++ {
		now := time.Now().UnixNano()
		insertBatches(e, batches, i, now)
		idleBefore := now + 1
		if early {
			idleBefore = now - 1
		}
		e.flushMu.Lock()
		err := e.cutToBlock(ctx, func(*headTrace) bool { return true }, idleBefore)
		e.flushMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		if early {
			e.opts.IdleTimeout = -time.Hour
			e.completePending(ctx)
			e.opts.IdleTimeout = time.Hour
		}
	}
	b.ReportMetric(float64(held.Nanoseconds())/1e3/float64(b.N), "hold-us")
}

package findingstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
	"github.com/tracedx/tracedx/internal/store/blockio/blockiotest"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// killedNode writes n findings into a node whose Run copies the open
// segment's tail every few milliseconds, waits until a replica of its
// bucket sees them all, writes late more (after the last tail copy), and
// abandons the node without Close, as kill -9 would (its files stay as
// they are on disk).
func killedNode(t *testing.T, dir string, bucket blockio.Storage, c *clock, n, late int) *Replica {
	t.Helper()
	ctx := context.Background()
	node, err := Open(Options{Dir: dir, Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour,
		TailInterval: 5 * time.Millisecond, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { node.Run(runCtx); close(ran) }()
	for i := 0; i < n; i++ {
		if err := node.Put(ctx, []Stored{finding("n_plus_one_query", "cart", tid(i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
	}
	r, err := OpenReplica(Options{Dir: t.TempDir(), Now: c.Now, Retention: 24 * time.Hour}, bucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := r.List(ctx, Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a replica sees %d of the open segment's %d findings", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-ran
	for i := 0; i < late; i++ {
		if err := node.Put(ctx, []Stored{finding("retry_storm", "cart", tid(n+i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
	}
	return r
}

func listIDs(t *testing.T, list func(context.Context, Query) ([]Stored, error)) []uint64 {
	t.Helper()
	got, err := list(context.Background(), Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(got))
	for i := range got {
		ids[i] = got[i].ID
	}
	return ids
}

// wantIDs says whether ids are want-1..0 (newest first, each once).
func wantIDs(ids []uint64, want int) bool {
	if len(ids) != want {
		return false
	}
	for i, id := range ids {
		if id != uint64(want-1-i) {
			return false
		}
	}
	return true
}

// A node killed with kill -9 leaves the findings of its open segment,
// up to its last tail copy, in the bucket: other nodes answer them while
// it is down, and when it comes back with its disk the sealed segment
// replaces the tail parts without a finding counted twice.
func TestKilledNodesOpenSegmentIsInTheBucket(t *testing.T) {
	for name, newBucket := range blockiotest.Storages("tracedx-findings-test") {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := newBucket(t)
			c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			dir := t.TempDir()
			r := killedNode(t, dir, bucket, c, 12, 3)
			if ids := listIDs(t, r.List); !wantIDs(ids, 12) {
				t.Fatalf("replica of the killed node lists ids %v, want 11..0", ids)
			}

			// Back with its disk: the log it was writing holds all 15.
			node, err := Open(Options{Dir: dir, Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer node.Close()
			for !node.Ready() {
				time.Sleep(time.Millisecond)
			}
			node.packWG.Wait()
			if err := node.UploadSealed(ctx); err != nil {
				t.Fatal(err)
			}
			ids, err := bucket.List(ctx)
			if err != nil || len(ids) != 1 || strings.Contains(ids[0], tailSep) {
				t.Fatalf("bucket after the node's return: %v (%v), want only the sealed segment", ids, err)
			}
			if ids := listIDs(t, r.List); !wantIDs(ids, 15) {
				t.Fatalf("replica after the node's return lists ids %v, want 14..0", ids)
			}
		})
	}
}

// A killed node whose disk is lost gets back the findings of its open
// segment up to the last tail copy, and numbers new ones after them.
func TestKilledNodesTailSurvivesTheDisk(t *testing.T) {
	for name, newBucket := range blockiotest.Storages("tracedx-findings-test") {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := newBucket(t)
			c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			killedNode(t, t.TempDir(), bucket, c, 7, 2)

			node, err := Open(Options{Dir: t.TempDir(), Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer node.Close()
			if ids := listIDs(t, node.List); !wantIDs(ids, 7) {
				t.Fatalf("new disk lists ids %v, want 6..0", ids)
			}
			if err := node.Put(ctx, []Stored{finding("retry_storm", "cart", tid(99), c.Now())}); err != nil {
				t.Fatal(err)
			}
			if ids := listIDs(t, node.List); len(ids) != 8 || ids[0] < 7 {
				t.Fatalf("ids after restore: %v; a new finding's must pass the restored ones'", ids)
			}
			// Retention deletes the restored parts from the bucket too.
			c.Add(48 * time.Hour)
			node.Prune()
			if err := node.UploadSealed(ctx); err != nil {
				t.Fatal(err)
			}
			if ids, err := bucket.List(ctx); err != nil || len(ids) != 0 {
				t.Fatalf("expired tail parts left in the bucket: %v %v", ids, err)
			}
		})
	}
}

// As segments fill and are sealed, their tail parts leave the bucket
// once the sealed copy is there, and a replica counts every finding once
// at every step.
func TestTailPartsGiveWayToSealedSegments(t *testing.T) {
	ctx := context.Background()
	bucket := blockiotest.Storages("")["local"](t)
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	node, err := Open(Options{Dir: t.TempDir(), Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour, SegmentMaxFindings: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	r, err := OpenReplica(Options{Dir: t.TempDir(), Now: c.Now, Retention: 24 * time.Hour}, bucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 23; i++ {
		if err := node.Put(ctx, []Stored{finding("n_plus_one_query", "cart", tid(i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
		if err := node.UploadTail(ctx); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			node.packWG.Wait()
			if err := node.UploadSealed(ctx); err != nil {
				t.Fatal(err)
			}
			ids, err := bucket.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			whole := map[string]bool{}
			for _, id := range ids {
				whole[id] = true
			}
			for _, id := range ids {
				if seg, ok := tailOf(id); ok && whole[seg] {
					t.Fatalf("after %d findings the bucket holds tail part %s beside its sealed segment", i+1, id)
				}
			}
		}
		// A segment sealed since the last UploadSealed answers from its
		// tail parts meanwhile.
		got := listIDs(t, r.List)
		if !wantIDs(got, i+1) {
			t.Fatalf("after %d findings the replica lists %v", i+1, got)
		}
	}
}

// BenchmarkUploadTail is the per-minute cost of copying the open
// segment's tail: 1,000 new findings in a segment that already holds
// 90,000 (near the 100,000 at which it is sealed), to a local-directory
// bucket. Put is not timed.
func BenchmarkUploadTail(b *testing.B) {
	ctx := context.Background()
	bucket, err := engine.NewLocalStorage(filepath.Join(b.TempDir(), "bucket"))
	if err != nil {
		b.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	node, err := Open(Options{Dir: b.TempDir(), Now: c.Now, Bucket: bucket, SyncInterval: time.Hour,
		SegmentMaxFindings: 1 << 30, SegmentDuration: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer node.Close()
	put := func(n int) {
		batch := make([]Stored, 0, 100)
		for i := 0; i < n; i++ {
			batch = append(batch, finding("n_plus_one_query", fmt.Sprintf("svc%d", i%20), tid(i), c.Now()))
			if len(batch) == cap(batch) {
				if err := node.Put(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	put(90_000)
	if err := node.UploadTail(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		put(1000)
		b.StartTimer()
		if err := node.UploadTail(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

package findingstore

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
	"github.com/tracedx/tracedx/internal/store/blockio/blockiotest"
)

// Another node reads a node's sealed findings from its copy in the
// bucket, and sees the segments it seals later; it never writes there.
func TestReplicaAnswersFromTheBucket(t *testing.T) {
	for name, newBucket := range blockiotest.Storages("tracedx-findings-test") {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := newBucket(t)
			c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			node, err := Open(Options{Dir: t.TempDir(), Now: c.Now, Bucket: bucket, SegmentMaxFindings: 10, Retention: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			put := func(n int, kind string) {
				for i := 0; i < n; i++ {
					if err := node.Put(ctx, []Stored{finding(kind, "cart", tid(i), c.Now())}); err != nil {
						t.Fatal(err)
					}
					c.Add(time.Second)
				}
				node.packWG.Wait()
				if err := node.UploadSealed(ctx); err != nil {
					t.Fatal(err)
				}
			}
			put(25, "n_plus_one_query") // two sealed segments, 5 in the open one

			r, err := OpenReplica(Options{Dir: t.TempDir(), Now: c.Now, Retention: 24 * time.Hour}, bucket, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := r.List(ctx, Query{Limit: 1000})
			if err != nil || len(got) != 20 {
				t.Fatalf("replica lists %d findings (%v), want the 20 sealed ones", len(got), err)
			}
			want, _ := node.List(ctx, Query{Limit: 20, To: got[0].Time.Add(time.Nanosecond)})
			if gj, wj := mustJSON(t, got), mustJSON(t, want); gj != wj {
				t.Fatalf("replica's findings differ from the node's sealed ones:\n got %s\nwant %s", gj, wj)
			}
			// The node seals more (a planned stop seals the open segment).
			put(3, "retry_storm")
			if err := node.Close(); err != nil {
				t.Fatal(err)
			}
			sum, err := r.Summarize(ctx, SummaryQuery{})
			if err != nil || sum.Total != 28 {
				t.Fatalf("replica's summary after the node's stop: %d findings (%v), want 28", sum.Total, err)
			}
			req := httptest.NewRequest("GET", "/api/v1/findings?kind=retry_storm&limit=2", nil)
			ans, err := r.Answer(req)
			if err != nil || len(ans.Findings) != 2 || !ans.Truncated || ans.Findings[0].Kind != "retry_storm" {
				t.Fatalf("replica's list answer: %+v (%v)", ans, err)
			}
			ids, _ := bucket.List(ctx)
			// Retention drops the replica's copies, not the bucket's: the
			// node deletes its own.
			c.Add(48 * time.Hour)
			if l, err := r.List(ctx, Query{}); err != nil || len(l) != 0 {
				t.Fatalf("replica past retention: %d findings (%v)", len(l), err)
			}
			if after, _ := bucket.List(ctx); len(after) != len(ids) {
				t.Fatalf("the replica changed the bucket: %v, was %v", after, ids)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// countingBucket counts and slows the bucket's listings.
type countingBucket struct {
	blockio.Storage
	lists atomic.Int64
}

func (b *countingBucket) List(ctx context.Context) ([]string, error) {
	b.lists.Add(1)
	time.Sleep(20 * time.Millisecond)
	return b.Storage.List(ctx)
}

// A replica refreshed on every query reads the bucket once per query, so
// it sees what the node copied just before it stopped, and queries that
// wait together share one read.
func TestReplicaQueriesWaitingTogetherShareARefresh(t *testing.T) {
	ctx := context.Background()
	bucket := &countingBucket{Storage: blockiotest.Storages("")["local"](t)}
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	node, err := Open(Options{Dir: t.TempDir(), Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	r, err := OpenReplica(Options{Dir: t.TempDir(), Now: c.Now, Retention: 24 * time.Hour}, bucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 3; i++ {
		if err := node.Put(ctx, []Stored{finding("n_plus_one_query", "cart", tid(i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		if err := node.UploadTail(ctx); err != nil {
			t.Fatal(err)
		}
		if ids := listIDs(t, r.List); !wantIDs(ids, i+1) {
			t.Fatalf("query %d right after the copy lists ids %v", i+1, ids)
		}
	}
	bucket.lists.Store(0)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.List(ctx, Query{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// The first to come lists, the others wait; those that came while it
	// listed share the next one.
	if n := bucket.lists.Load(); n > 3 {
		t.Fatalf("8 queries at once listed the bucket %d times", n)
	}
}

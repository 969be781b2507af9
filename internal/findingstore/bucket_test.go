package findingstore

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio/blockiotest"
)

// A node whose disk is lost gets its sealed findings back from the
// bucket; retention deletes them there too.
func TestSealedSegmentsSurviveTheDisk(t *testing.T) {
	for name, newBucket := range blockiotest.Storages("tracedx-findings-test") {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := newBucket(t)
			c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			dir := t.TempDir()
			a, err := Open(Options{Dir: dir, Now: c.Now, Bucket: bucket, SegmentMaxFindings: 10, Retention: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 7; i++ {
				var batch []Stored
				for j := 0; j < 5; j++ {
					batch = append(batch, finding("n_plus_one_query", "cart", tid(i*5+j), c.Now()))
					c.Add(time.Second)
				}
				if err := a.Put(ctx, batch); err != nil {
					t.Fatal(err)
				}
			}
			// Sealed segments are copied (once compressed); the open one
			// is not.
			a.packWG.Wait()
			if err := a.UploadSealed(ctx); err != nil {
				t.Fatal(err)
			}
			ids, err := bucket.List(ctx)
			if err != nil || len(ids) != 3 {
				t.Fatalf("bucket holds %d segments (%v), want the 3 sealed ones", len(ids), err)
			}
			before, err := a.List(ctx, Query{Limit: 1000})
			if err != nil || len(before) != 35 {
				t.Fatalf("%d findings before (%v)", len(before), err)
			}
			// A planned stop seals and copies the last segment.
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}

			b, err := Open(Options{Dir: t.TempDir(), Now: c.Now, Bucket: bucket, Retention: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			after, err := b.List(ctx, Query{Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			bj, _ := json.Marshal(before)
			aj, _ := json.Marshal(after)
			if string(aj) != string(bj) {
				t.Fatalf("findings restored from the bucket differ:\n got %s\nwant %s", aj, bj)
			}
			// New findings continue the ids.
			if err := b.Put(ctx, []Stored{finding("retry_storm", "cart", tid(99), c.Now())}); err != nil {
				t.Fatal(err)
			}
			if l, _ := b.List(ctx, Query{Limit: 1}); len(l) != 1 || l[0].ID <= before[0].ID {
				t.Fatalf("id after restore: %+v, last before %d", l, before[0].ID)
			}

			c.Add(48 * time.Hour)
			b.Prune()
			if err := b.UploadSealed(ctx); err != nil {
				t.Fatal(err)
			}
			if ids, err := bucket.List(ctx); err != nil || len(ids) != 0 {
				t.Fatalf("expired segments left in the bucket: %v %v", ids, err)
			}
		})
	}
}

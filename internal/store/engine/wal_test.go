package engine

import (
	"testing"
	"time"
)

// groupTestWAL is a WAL loop's state without a file: gather only reads
// the queue.
func groupTestWAL(shared uint8, lastSync, groupWait time.Duration) *wal {
	return &wal{reqs: make(chan *walReq, 8), stop: make(chan struct{}), shared: shared, lastSync: lastSync, groupWait: groupWait}
}

// sendLater queues reqs after d, as writers still decoding their requests
// would.
func sendLater(w *wal, d time.Duration, reqs ...*walReq) {
	go func() {
		time.Sleep(d)
		for _, r := range reqs {
			w.reqs <- r
		}
	}()
}

// While writes are concurrent, a record alone in the queue waits for the
// records of writers right behind it, so one sync serves them all.
func TestWALGroupWaitJoinsWritesUnderWay(t *testing.T) {
	w := groupTestWAL(1, 300*time.Millisecond, time.Hour)
	first, b, c := &walReq{p: []byte("a")}, &walReq{p: []byte("b")}, &walReq{p: []byte("c")}
	sendLater(w, 10*time.Millisecond, b, c)
	start := time.Now()
	batch := w.gather([]*walReq{first})
	if len(batch) != 3 || batch[0] != first || batch[1] != b || batch[2] != c {
		t.Fatalf("gathered %d records, want the first and both later ones in order", len(batch))
	}
	// The wait is bounded by the last sync's duration, not by the cap.
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("waited %v, more than the last sync took", el)
	}
}

// A record is synced without waiting for later ones when its writer is
// alone (no recent sync carried two records), and always when
// storage.wal_group_wait is below zero.
func TestWALRecordSyncedAtOnce(t *testing.T) {
	for name, w := range map[string]*wal{
		"lone writer": groupTestWAL(0, time.Hour, time.Hour),
		"wait off":    groupTestWAL(0xff, time.Hour, -1),
	} {
		t.Run(name, func(t *testing.T) {
			first, later := &walReq{p: []byte("a")}, &walReq{p: []byte("b")}
			sendLater(w, 50*time.Millisecond, later)
			if batch := w.gather([]*walReq{first}); len(batch) != 1 {
				t.Fatalf("gathered %d records, want only the first", len(batch))
			}
			if r := <-w.reqs; r != later {
				t.Fatal("the later record was not left queued")
			}
		})
	}
}

// Records already queued go with the first without waiting, and a
// rotation ends the wait: the cut waiting for it is not held up.
func TestWALGroupWaitEndsAtRotation(t *testing.T) {
	w := groupTestWAL(1, time.Hour, time.Hour)
	first, queued := &walReq{p: []byte("a")}, &walReq{p: []byte("b")}
	w.reqs <- queued
	if batch := w.gather([]*walReq{first}); len(batch) != 2 {
		t.Fatalf("gathered %d records, want the first and the queued one", len(batch))
	}
	rot := &walReq{rotate: true}
	sendLater(w, 10*time.Millisecond, rot)
	done := make(chan []*walReq)
	go func() { done <- w.gather([]*walReq{first}) }()
	select {
	case batch := <-done:
		if len(batch) != 2 || batch[1] != rot {
			t.Fatalf("gathered %d records, want the first and the rotation", len(batch))
		}
	case <-time.After(time.Minute):
		t.Fatal("a rotation did not end the group wait")
	}
}

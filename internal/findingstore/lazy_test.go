package findingstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// crash stops a store the way a killed process does: nothing is sealed,
// so no index is written for the open segment.
func crash(s *Store) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.stopScan)
	s.scanWG.Wait()
	s.packWG.Wait() // what a real crash leaves of it is TestCompressionCrashLeftovers'
	s.closeFiles()
}

func waitReady(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("store never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// After a clean close, opening reads only the indexes' metadata: no
// segment index is loaded until a query needs it, and a trace's findings
// are looked for only in the segments whose Bloom filter may hold it.
func TestOpenReadsOnlyMetadata(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	opt := Options{Dir: dir, Now: c.Now, SegmentMaxFindings: 50, SyncInterval: time.Hour}
	s, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 1000
	for i := range n {
		if err := s.Put(ctx, []Stored{finding([]string{"slow_query", "n_plus_one_query"}[i%2], "orders", tid(i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idx) != n/50 {
		t.Fatalf("%d index files, want %d", len(idx), n/50)
	}

	s, err = Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Ready() || s.Len() != n || len(s.cache.m) != 0 {
		t.Fatalf("after open: ready %v, len %d, %d indexes loaded", s.Ready(), s.Len(), len(s.cache.m))
	}
	got, err := s.ForTrace(ctx, tid(777))
	if err != nil || len(got) != 1 || got[0].TraceID != tid(777).String() {
		t.Fatalf("ForTrace: %v %v", got, err)
	}
	if loaded := len(s.cache.m); loaded > 2 {
		t.Fatalf("one trace's lookup loaded %d of %d segment indexes", loaded, n/50)
	}
	// The newest 10 findings come from the newest segment alone.
	s.cache = idxCache{maxEntries: 1 << 20}
	list, err := s.List(ctx, Query{Limit: 10})
	if err != nil || len(list) != 10 || list[0].TraceID != tid(n-1).String() {
		t.Fatalf("newest: %d findings, %v", len(list), err)
	}
	if loaded := len(s.cache.m); loaded != 1 {
		t.Fatalf("listing the newest 10 loaded %d segment indexes", loaded)
	}
	if counts := s.Counts(time.Time{}, time.Time{}); counts["slow_query"] != n/2 || counts["n_plus_one_query"] != n/2 {
		t.Fatalf("counts %v", counts)
	}
	// Put continues the ids.
	if err := s.Put(ctx, []Stored{finding("slow_query", "orders", tid(5000), c.Now())}); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.List(ctx, Query{Limit: 1}); l[0].ID != n {
		t.Fatalf("id after reopen %d, want %d", l[0].ID, n)
	}
}

// After a crash the open segment has no index: the store opens at once,
// answers from the indexed segments, indexes the other in the background
// (cutting its torn tail) and then says it is ready. New ids continue
// after the crashed segment's last finding.
func TestCrashedSegmentIsIndexedInTheBackground(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	opt := Options{Dir: dir, Now: c.Now, SegmentMaxFindings: 10}
	s, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 15 { // one sealed segment of 10, an open one of 5
		if err := s.Put(ctx, []Stored{finding("slow_query", "orders", tid(i), c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
	}
	crashed := s.cur.name
	crash(s)
	f, _ := os.OpenFile(crashed, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"slow_query","ti`)
	f.Close()

	gate := make(chan struct{})
	beforeIndex = func() { <-gate }
	t.Cleanup(func() { beforeIndex = nil })
	s, err = Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Ready() || s.Unindexed() != 1 || s.Len() != 10 {
		t.Fatalf("while indexing: ready %v, unindexed %d, len %d", s.Ready(), s.Unindexed(), s.Len())
	}
	if err := s.Put(ctx, []Stored{finding("slow_query", "orders", tid(100), c.Now())}); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.List(ctx, Query{Limit: 1}); len(l) != 1 || l[0].ID != 15 {
		t.Fatalf("a put during indexing: %+v", l)
	}
	close(gate)
	waitReady(t, s)
	if s.Len() != 16 {
		t.Fatalf("after indexing: %d findings, want 16", s.Len())
	}
	if got, _ := s.ForTrace(ctx, tid(12)); len(got) != 1 {
		t.Fatalf("a finding of the crashed segment: %v", got)
	}
	if fi, _ := os.Stat(crashed); fi.Size() != s.segs[1].size {
		t.Fatalf("torn tail not cut: file %d bytes, indexed %d", fi.Size(), s.segs[1].size)
	}
}

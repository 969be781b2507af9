package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// copiesIn is a peerReplicas over dir without replicas open: what a
// restarted node finds under data_dir/peers.
func copiesIn(t *testing.T, dir string, max int64, peers map[string]int) *peerReplicas {
	t.Helper()
	for peer, n := range peers {
		sub := filepath.Join(dir, peer, "findings")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "seg.jsonl"), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &peerReplicas{dir: dir, max: max, log: slog.New(slog.DiscardHandler), m: map[string]*peerReplica{},
		used: map[string]time.Time{}, upSince: map[string]time.Time{}, evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})}
}

// Copies left by an earlier run count and are evicted, least recently
// used first, but never the last one used.
func TestLeftoverPeerCopiesAreTrimmed(t *testing.T) {
	dir := t.TempDir()
	p := copiesIn(t, dir, 150, map[string]int{"n1": 100, "n2": 100, "n3": 100})
	p.touch("n3")
	time.Sleep(time.Millisecond)
	p.touch("n1")
	p.trim()
	if got := p.bytes.Load(); got != 100 {
		t.Fatalf("%d bytes of copies after the trim, want 100", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "n1")); err != nil {
		t.Fatalf("the copy used last was evicted: %v", err)
	}
	for _, gone := range []string{"n2", "n3"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Fatalf("the copies of %s stay over the bound", gone)
		}
	}
}

// A peer's copies go once it has answered for peerCopiesDropAfter; one
// that stops answering in between starts over.
func TestCopiesOfAnsweringPeersAreDropped(t *testing.T) {
	dir := t.TempDir()
	p := copiesIn(t, dir, 0, map[string]int{"n1": 10, "n2": 10})
	up := map[string]bool{"n1": true, "n2": true}
	t0 := time.Now()
	p.dropAnswering(func(n string) bool { return up[n] }, t0)
	up["n2"] = false
	p.dropAnswering(func(n string) bool { return up[n] }, t0.Add(peerCopiesDropAfter/2))
	up["n2"] = true
	p.dropAnswering(func(n string) bool { return up[n] }, t0.Add(peerCopiesDropAfter))
	if _, err := os.Stat(filepath.Join(dir, "n1")); !os.IsNotExist(err) {
		t.Fatal("the copies of n1, answering for peerCopiesDropAfter, stay")
	}
	if _, err := os.Stat(filepath.Join(dir, "n2")); err != nil {
		t.Fatalf("the copies of n2, down in between, were dropped: %v", err)
	}
}

package systemic

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/gob"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newPersistentSim(t *testing.T, seed int64, dir string) *sim {
	t.Helper()
	s := newSim(seed)
	s.d = New(Config{Dir: dir}, nil, nil, nil)
	return s
}

// restart snapshots the detector, drops it and restores a new one from
// the same Dir, as a server restart does; the new process evaluates from
// at onwards.
func (s *sim) restart(t *testing.T, dir string, at time.Time) {
	t.Helper()
	if err := s.d.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	s.d = New(Config{Dir: dir}, nil, nil, nil)
	s.nextEval = at
}

func (s *sim) count(key string) int {
	n := 0
	for _, f := range s.findings {
		if f.f.Key == key {
			n++
		}
	}
	return n
}

// A restored baseline judges at once: a fresh detector would need
// MinBaseline plus the longest window before latency_regression can fire.
func TestRestoreKeepsBaselines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newPersistentSim(t, 11, dir)
	s.run(t0, t0.Add(40*time.Minute))
	restart := t0.Add(42 * time.Minute)
	s.restart(t, dir, restart)
	s.shop.SlowBigCarts, s.shop.BigCartShare, s.shop.SlowFactor = true, 0.2, 12
	s.run(restart, restart.Add(15*time.Minute))
	key := "latency_regression/checkout/POST /api/checkout"
	got := s.first("latency_regression", key)
	if got == nil {
		t.Fatalf("latency regression after restart not detected; findings:%s", describe(s.findings))
	}
	// Without the restored baseline the first judgement would wait for
	// MinBaseline of folded history: 20 minutes at the defaults.
	if lag := got.at.Sub(restart); lag > 5*time.Minute {
		t.Errorf("detected %s after restart, want ≤ 5m (baseline restored)", lag)
	}
	// The slow stock lookups also slow their callers: more latency keys
	// are right, any other kind is not.
	for _, f := range s.findings {
		if f.f.Kind != "latency_regression" {
			t.Errorf("unexpected finding across the restart: %s %s", f.f.Key, f.f.Title)
		}
	}
}

// Known exception types survive a restart; warmup does not restart, so a
// type that is new just after the restart is reported.
func TestRestoreKeepsErrorTypes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newPersistentSim(t, 12, dir)
	s.run(t0, t0.Add(40*time.Minute))
	if n := len(s.findings); n != 0 {
		t.Fatalf("findings before the restart:%s", describe(s.findings))
	}
	restart := t0.Add(41 * time.Minute)
	s.restart(t, dir, restart)
	// The background SocketTimeoutException keeps coming: known, not new.
	s.run(restart, restart.Add(5*time.Minute))
	s.shop.ErrorRate, s.shop.ErrorType = 0.02, "FraudCheckUnavailableException"
	s.run(restart.Add(5*time.Minute), restart.Add(10*time.Minute))
	// payments and its caller checkout both record the new type.
	want := map[string]bool{"new_error_type/payments/FraudCheckUnavailableException": true,
		"new_error_type/checkout/FraudCheckUnavailableException": true}
	for _, f := range s.findings {
		if f.f.Kind != "new_error_type" || !want[f.f.Key] {
			t.Errorf("unexpected finding after the restart: %s %s", f.f.Key, f.f.Title)
		}
		delete(want, f.f.Key)
	}
	for k := range want {
		t.Errorf("%s not reported after the restart", k)
	}
}

// A new type seen just before the stop, not yet evaluated, is still
// reported after the restart (it is already in the known types).
func TestRestoreKeepsPendingNewType(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newPersistentSim(t, 13, dir)
	s.run(t0, t0.Add(35*time.Minute))
	s.shop.ErrorRate, s.shop.ErrorType = 1, "QuotaExceededException"
	at := t0.Add(35*time.Minute + 500*time.Millisecond)
	spans := s.shop.Checkout(at)
	s.d.Observe(at.Add(time.Second), spans) // no Evaluate before the stop
	s.shop.ErrorRate = 0
	s.restart(t, dir, t0.Add(36*time.Minute))
	s.run(t0.Add(36*time.Minute), t0.Add(37*time.Minute))
	if s.first("new_error_type", "new_error_type/payments/QuotaExceededException") == nil {
		t.Fatalf("new type seen before the stop lost:%s", describe(s.findings))
	}
}

// An ongoing finding keeps its open key across a restart.
func TestRestoreKeepsOpenFindings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newPersistentSim(t, 14, dir)
	s.run(t0, t0.Add(40*time.Minute))
	s.shop.ErrorRate = 0.3
	s.run(t0.Add(40*time.Minute), t0.Add(45*time.Minute))
	key := "error_rate_spike/payments/POST /charge"
	if s.count(key) != 1 {
		t.Fatalf("error spike not open before the restart:%s", describe(s.findings))
	}
	restart := t0.Add(46 * time.Minute)
	s.restart(t, dir, restart)
	s.run(restart, restart.Add(10*time.Minute))
	if n := s.count(key); n != 1 {
		t.Errorf("error spike reported %d times across the restart, want 1:%s", n, describe(s.findings))
	}
	if open := strings.Join(s.d.Open(), ","); !strings.Contains(open, key) {
		t.Errorf("open keys after the restart %s, want %s", open, key)
	}
}

// Downtime is neither a throughput drop nor a missing service, whether it
// is shorter than the windows (windows kept) or hours long (windows
// restart empty, baselines kept and not decayed over the gap).
func TestRestartGap(t *testing.T) {
	t.Parallel()
	for _, gap := range []time.Duration{4 * time.Minute, 3 * time.Hour} {
		t.Run(gap.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := newPersistentSim(t, 15, dir)
			s.run(t0, t0.Add(40*time.Minute))
			restart := t0.Add(40*time.Minute + gap)
			s.restart(t, dir, restart)
			s.run(restart, restart.Add(15*time.Minute))
			if len(s.findings) != 0 {
				t.Fatalf("findings after a %s downtime:%s", gap, describe(s.findings))
			}
			// The baselines still judge: a regression right after is caught.
			inject := restart.Add(15 * time.Minute)
			s.shop.SlowBigCarts, s.shop.BigCartShare, s.shop.SlowFactor = true, 0.2, 12
			s.run(inject, inject.Add(6*time.Minute))
			got := s.first("latency_regression", "latency_regression/checkout/POST /api/checkout")
			if got == nil || got.at.Sub(inject) > 5*time.Minute {
				t.Fatalf("latency regression after a %s downtime not detected within 5m:%s", gap, describe(s.findings))
			}
		})
	}
}

// After a long downtime a real drop is still reported, once the window
// holds only fresh data.
func TestRestartGapThenRealDrop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newPersistentSim(t, 16, dir)
	s.run(t0, t0.Add(40*time.Minute))
	restart := t0.Add(40*time.Minute + 3*time.Hour)
	s.restart(t, dir, restart)
	s.checkoutRate = 0.5
	s.run(restart, restart.Add(10*time.Minute))
	got := s.first("throughput_drop", "throughput_drop/frontend/POST /checkout")
	if got == nil {
		t.Fatalf("real drop after the downtime not detected:%s", describe(s.findings))
	}
	if lag := got.at.Sub(restart); lag < 5*time.Minute || lag > 6*time.Minute {
		t.Errorf("drop reported %s after the restart, want after one fresh 5m window", lag)
	}
}

func TestCorruptSnapshotMovedAside(t *testing.T) {
	valid := func(t *testing.T, dir string) {
		s := newPersistentSim(t, 17, dir)
		s.run(t0, t0.Add(2*time.Minute))
		if err := s.d.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	wrongVersion := func() []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if err := gob.NewEncoder(zw).Encode(&snapshot{Version: snapshotVersion + 1, Saved: t0}); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		return buf.Bytes()
	}
	cases := map[string]func(t *testing.T, path string){
		"garbage": func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a snapshot"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"truncated": func(t *testing.T, path string) {
			valid(t, filepath.Dir(path))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"wrong version": func(t *testing.T, path string) {
			if err := os.WriteFile(path, wrongVersion(), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, snapshotFile)
			spoil(t, path)
			var logs bytes.Buffer
			d := New(Config{Dir: dir}, nil, nil, slog.New(slog.NewTextHandler(&logs, nil)))
			if len(d.ops) != 0 || len(d.roots) != 0 || len(d.errTypes) != 0 || !d.started.IsZero() {
				t.Errorf("state restored from a bad snapshot")
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				t.Errorf("bad snapshot not moved aside: %v", err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("bad snapshot still in place: %v", err)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), path) {
				t.Errorf("no warning naming %s: %s", path, logs.String())
			}
			// The detector works and its next snapshot restores.
			s := &sim{d: d, shop: newSim(18).shop, checkoutRate: 4, nextEval: t0}
			s.run(t0, t0.Add(time.Minute))
			if err := d.Snapshot(); err != nil {
				t.Fatal(err)
			}
			d2 := New(Config{Dir: dir}, nil, nil, nil)
			if len(d2.ops) == 0 || len(d2.ops) != len(d.ops) || len(d2.roots) != len(d.roots) {
				t.Errorf("restored %d ops %d roots, want %d %d", len(d2.ops), len(d2.roots), len(d.ops), len(d.roots))
			}
		})
	}
}

// A crash while writing leaves a temporary file beside the previous
// snapshot, which must still restore.
func TestInterruptedSnapshotKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	s := newPersistentSim(t, 19, dir)
	s.run(t0, t0.Add(2*time.Minute))
	if err := s.d.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, snapshotFile+".tmp-123"), []byte("half a snap"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Dir: dir}, nil, nil, nil)
	if len(d.ops) == 0 || len(d.ops) != len(s.d.ops) {
		t.Fatalf("restored %d ops, want %d", len(d.ops), len(s.d.ops))
	}
}

func TestNoDirNoSnapshot(t *testing.T) {
	d := New(Config{}, nil, nil, nil)
	if err := d.Snapshot(); err != nil {
		t.Fatal(err)
	}
}

// Run writes a snapshot on the way out, whatever SnapshotInterval.
func TestRunSnapshotsOnExit(t *testing.T) {
	dir := t.TempDir()
	d := New(Config{Dir: dir, SnapshotInterval: time.Hour}, nil, nil, nil)
	s := &sim{d: d, shop: newSim(20).shop, checkoutRate: 4, nextEval: t0}
	s.run(t0, t0.Add(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	cancel()
	<-done
	r := New(Config{Dir: dir}, nil, nil, nil)
	if len(r.ops) == 0 || len(r.ops) != len(d.ops) || !r.started.Equal(d.started) {
		t.Fatalf("restored %d ops started %v, want %d ops started %v", len(r.ops), r.started, len(d.ops), d.started)
	}
}

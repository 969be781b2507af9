package tsdb

import (
	"testing"
	"time"
)

func TestCoveredSeconds(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 30, 20, 0, time.UTC)
	nowMin := UnixMinute(now)
	for _, c := range []struct {
		name              string
		start, end, first int64
		want              float64
	}{
		{"data since before the range: the whole range", nowMin - 60, nowMin - 10, nowMin - 600, 50 * 60},
		{"data from inside the range: from its first minute", nowMin - 60, nowMin - 10, nowMin - 20, 10 * 60},
		{"range ending in the future: up to now", nowMin - 60, nowMin + 30, nowMin - 20, 20*60 + 20},
		{"range before any data", nowMin - 60, nowMin - 30, nowMin - 20, 0},
		{"data for seconds only: a minute at least", nowMin - 60, nowMin + 1, nowMin, 60},
	} {
		if got := Covered(c.start, c.end, c.first, now); got != c.want {
			t.Errorf("%s: %v s, want %v", c.name, got, c.want)
		}
	}
}

func TestFirstMinuteSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	open := func() *Store[struct{}] {
		s, err := New[struct{}](Options{Dir: dir, Name: "t"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if _, ok := s.FirstMinute(); ok {
		t.Fatal("an empty store has no first minute")
	}
	old := UnixMinute(now.Add(-5 * 24 * time.Hour)) // on disk only, past MemDays
	for _, m := range []int64{UnixMinute(now) - 3, old, UnixMinute(now) - 1} {
		s.Update(Key{A: "a"}, m, func(acc *Acc, _ *struct{}) { acc.Count++ })
	}
	if f, _ := s.FirstMinute(); f != old {
		t.Fatalf("first minute %d, want %d", f, old)
	}
	if err := s.Flush(now, true); err != nil {
		t.Fatal(err)
	}
	if f, ok := open().FirstMinute(); !ok || f != old {
		t.Fatalf("after restart: first minute %d %v, want %d", f, ok, old)
	}
	// Retention drops the old day, and the time it covered with it.
	short, err := New[struct{}](Options{Dir: dir, Name: "t", Retention: 2 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := short.FirstMinute(); !ok || f != UnixMinute(now)-3 {
		t.Fatalf("after retention: first minute %d %v, want %d", f, ok, UnixMinute(now)-3)
	}
}

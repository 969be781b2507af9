package model

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestCheckTimes(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ns := func(tm time.Time) uint64 { return uint64(tm.UnixNano()) }
	for _, c := range []struct {
		start, end uint64
		want       string // "" for valid
	}{
		{ns(now), ns(now) + 1000, ""},
		{ns(now), ns(now), ""}, // zero-length spans are real (rounded timestamps)
		{ns(now.Add(23 * time.Hour)), ns(now.Add(23 * time.Hour)), ""},
		{0, math.MaxUint64, "start time is missing"},
		{ns(now), ns(now) - 1, "before start time"},
		{1, 2, "before 2000"},
		{ns(now.Add(25 * time.Hour)), ns(now.Add(25 * time.Hour)), "in the future"},
		{ns(now.Add(-48 * time.Hour)), ns(now), "duration 48h0m0s is longer than the limit of 24h0m0s"},
		{ns(now), math.MaxUint64, "longer than the limit"},
	} {
		s := Span{StartUnixNano: c.start, EndUnixNano: c.end}
		err := s.CheckTimes(now, 24*time.Hour)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("start %d end %d: %v, want %q", c.start, c.end, err, c.want)
		}
	}
	long := Span{StartUnixNano: ns(now.Add(-48 * time.Hour)), EndUnixNano: ns(now)}
	if err := long.CheckTimes(now, 0); err != nil {
		t.Errorf("no duration limit: %v", err)
	}
}

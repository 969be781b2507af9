package apiparam

import (
	"testing"
	"time"
)

func TestCount(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "7": 7, "10": 10, "11": 10, "99999999999999999999999": 10, "007": 7} {
		if got, err := Count(in, 10); err != nil || got != want {
			t.Errorf("Count(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1.5", "1e3", "ten", " 1"} {
		if _, err := Count(in, 10); err == nil {
			t.Errorf("Count(%q): no error", in)
		}
	}
}

func TestCheckTime(t *testing.T) {
	for _, tc := range []struct {
		t  time.Time
		ok bool
	}{
		{time.Unix(0, 0), true},
		{time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), false},
	} {
		if err := CheckTime(tc.t); (err == nil) != tc.ok {
			t.Errorf("CheckTime(%v) = %v, want ok=%v", tc.t, err, tc.ok)
		}
	}
	if time.Unix(MaxUnixSeconds, 0).UnixNano() < 0 || time.UnixMilli(MaxUnixMillis).UnixNano() < 0 || time.UnixMicro(MaxUnixMicros).UnixNano() < 0 {
		t.Error("a maximum overflows int64 nanoseconds")
	}
}

package model

import (
	"fmt"
	"time"
)

// EarliestValidTime is the earliest start time a span may have. Anything
// older is a clock that was never set or a zero/garbage timestamp, which
// would be stored and shown as 1970.
var EarliestValidTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxClockSkew is how far in the future a span may start: hosts' clocks
// disagree, but not by a day.
const MaxClockSkew = 24 * time.Hour

// CheckTimes reports why a span's timestamps cannot be stored: no start,
// an end before the start, a start outside [EarliestValidTime,
// now+MaxClockSkew], or a duration above maxDuration (0: no limit).
func (s *Span) CheckTimes(now time.Time, maxDuration time.Duration) error {
	start, end := s.StartUnixNano, s.EndUnixNano
	switch {
	case start == 0:
		return fmt.Errorf("start time is missing (0)")
	case end < start:
		return fmt.Errorf("end time %d is before start time %d", end, start)
	case start < uint64(EarliestValidTime.UnixNano()):
		return fmt.Errorf("start time %s is before %d", fmtNanos(start), EarliestValidTime.Year())
	case start > uint64(now.Add(MaxClockSkew).UnixNano()):
		return fmt.Errorf("start time %s is more than %s in the future", fmtNanos(start), MaxClockSkew)
	case maxDuration > 0 && end-start > uint64(maxDuration):
		return fmt.Errorf("duration %s is longer than the limit of %s", fmtDuration(end-start), maxDuration)
	}
	return nil
}

func fmtNanos(ns uint64) string {
	if ns > 1<<63-1 {
		return fmt.Sprintf("%d ns", ns)
	}
	return time.Unix(0, int64(ns)).UTC().Format(time.RFC3339Nano)
}

func fmtDuration(ns uint64) string {
	if ns > 1<<63-1 {
		return fmt.Sprintf("%d ns", ns)
	}
	return time.Duration(ns).String()
}

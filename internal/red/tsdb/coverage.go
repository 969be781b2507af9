package tsdb

import (
	"math"
	"time"
)

// noData is the first minute of a store that holds no record yet.
const noData = math.MaxInt64

// noteMinute lowers the store's first minute with data to m.
func (s *Store[E]) noteMinute(m int64) {
	for {
		cur := s.first.Load()
		if m >= cur || s.first.CompareAndSwap(cur, m) {
			return
		}
	}
}

// FirstMinute is the earliest unix minute the store holds data for (ok is
// false while it holds none): the start of what rates can be averaged over.
func (s *Store[E]) FirstMinute() (int64, bool) {
	m := s.first.Load()
	return m, m != noData
}

// loadFirst finds the first minute with data among the day files, oldest
// first (at start; afterwards updates keep it). Only a day older than the
// ones kept in memory is read for it: one file, once.
func (s *Store[E]) loadFirst(days []int64) {
	for _, d := range days {
		dd := s.days[d]
		if dd == nil {
			var err error
			if dd, err = s.readDay(d); err != nil || dd == nil {
				continue
			}
		}
		found := false
		for _, rs := range dd.recs {
			if len(rs) > 0 {
				s.noteMinute(rs[0].Minute)
				found = true
			}
		}
		if found {
			return
		}
	}
}

// MinCovered is the least time a rate is averaged over: a store that got
// its first span two seconds ago must not report it as 0.5/s.
const MinCovered = time.Minute

// CoveredSeconds is the part of the minutes [startMin, endMin) that data
// could have come from: from the later of startMin and the store's first
// minute with data, to the earlier of endMin and now. Rates are counts
// divided by it, so a range reaching before the store's first data or past
// now is not diluted by time nothing could be recorded in. It is 0 when
// the range ends before the first data, and at least MinCovered otherwise.
func (s *Store[E]) CoveredSeconds(startMin, endMin int64, now time.Time) float64 {
	first, ok := s.FirstMinute()
	if !ok {
		first = startMin
	}
	return Covered(startMin, endMin, first, now)
}

// Covered is CoveredSeconds for a given first minute with data.
func Covered(startMin, endMin, firstMin int64, now time.Time) float64 {
	from := float64(max(startMin, firstMin) * 60)
	to := math.Min(float64(endMin*60), float64(now.UnixNano())/1e9)
	if to <= from {
		if endMin <= firstMin {
			return 0
		}
		return MinCovered.Seconds()
	}
	return math.Max(to-from, MinCovered.Seconds())
}

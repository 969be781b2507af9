package tsdb

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Agg sums records over a query window.
type Agg struct {
	Count, Errors uint64
	Sum           [2]uint64
	H             [2][NumBuckets]uint64
}

// AddRec adds one record.
func (a *Agg) AddRec(r *Rec) {
	a.Count += r.Count
	a.Errors += r.Errors
	for h := 0; h < 2; h++ {
		a.Sum[h] += r.Sum[h]
		for _, bc := range r.H[h] {
			a.H[h][bc.I] += uint64(bc.N)
		}
	}
}

// Merge adds another aggregate.
func (a *Agg) Merge(b *Agg) {
	a.Count += b.Count
	a.Errors += b.Errors
	for h := 0; h < 2; h++ {
		a.Sum[h] += b.Sum[h]
		for i := range b.H[h] {
			a.H[h][i] += b.H[h][i]
		}
	}
}

// QuantileMS estimates a quantile of distribution h in milliseconds (0 when
// the distribution is empty).
func (a *Agg) QuantileMS(h int, q float64) float64 {
	us, ok := Quantile(a.H[h][:], q)
	if !ok {
		return 0
	}
	return Round3(us / 1000)
}

// HistCount is the number of samples in distribution h.
func (a *Agg) HistCount(h int) uint64 {
	var n uint64
	for _, c := range a.H[h] {
		n += c
	}
	return n
}

// ErrorRate is errors/count (0 when empty).
func (a *Agg) ErrorRate() float64 {
	if a.Count == 0 {
		return 0
	}
	return Round6(float64(a.Errors) / float64(a.Count))
}

// Round3 rounds to 3 decimals so JSON stays readable.
func Round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// Round6 rounds to 6 decimals.
func Round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// ParseTime accepts RFC3339 or an integer in unix seconds, milliseconds,
// microseconds or nanoseconds (told apart by magnitude, as Grafana and
// Jaeger clients send all of them). "" returns def.
func ParseTime(s string, def time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return def, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		switch {
		case n < 1e11:
			return time.Unix(n, 0), nil
		case n < 1e14:
			return time.UnixMilli(n), nil
		case n < 1e17:
			return time.UnixMicro(n), nil
		default:
			return time.Unix(0, n), nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f < 1e11 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: want RFC3339 or unix seconds/ms/µs/ns", s)
	}
	return t, nil
}

// ParseDuration accepts a Go duration ("5m") or a number of seconds. ""
// returns def.
func ParseDuration(s string, def time.Duration) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return def, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("bad duration %q: negative", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q: want e.g. 60s, 5m or seconds", s)
	}
	return d, nil
}

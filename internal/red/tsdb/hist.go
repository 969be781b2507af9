// Package tsdb is the small time-series engine behind RED metrics and the
// service graph: per-series 1-minute records (counts, errors, latency
// histograms), accumulated in memory while a minute is open, then compacted,
// kept in memory for recent days and appended to one file per day.
package tsdb

import (
	"math"
	"math/bits"
)

// Histogram layout: log-linear buckets over microseconds, 4 per power of
// two (relative width ≤ 25%, so a percentile estimated by interpolation is
// within ~12% of the truth), covering 1 µs to 2^41 µs (~25 days). Powers of
// two are bucket boundaries, so the coarser Prometheus buckets (2^k µs) are
// exact sums of these.
const (
	subBits    = 2
	subCount   = 1 << subBits
	maxOctave  = 40
	NumBuckets = 1 + (maxOctave+1)*subCount
)

// BucketOf returns the bucket of a duration in microseconds. Bucket 0 holds
// [0,1) µs; bucket 1+4k+j holds [2^k(1+j/4), 2^k(1+(j+1)/4)).
func BucketOf(us uint64) int {
	if us == 0 {
		return 0
	}
	k := bits.Len64(us) - 1
	if k > maxOctave {
		return NumBuckets - 1
	}
	var sub uint64
	if k >= subBits {
		sub = (us >> uint(k-subBits)) & (subCount - 1)
	} else {
		sub = (us << uint(subBits-k)) & (subCount - 1)
	}
	return 1 + k*subCount + int(sub)
}

// BucketLower is the inclusive lower bound of bucket i in µs.
func BucketLower(i int) float64 {
	if i <= 0 {
		return 0
	}
	i--
	return math.Ldexp(1+float64(i%subCount)/subCount, i/subCount)
}

// BucketUpper is the exclusive upper bound of bucket i in µs.
func BucketUpper(i int) float64 {
	if i <= 0 {
		return 1
	}
	i--
	return math.Ldexp(1+float64(i%subCount+1)/subCount, i/subCount)
}

// Number is what a histogram may count with.
type Number interface {
	~uint32 | ~uint64 | ~float32 | ~float64
}

// Quantile estimates the q-quantile (0..1) in µs from dense bucket counts,
// interpolating linearly inside the bucket. ok is false for an empty
// histogram.
func Quantile[N Number](h []N, q float64) (us float64, ok bool) {
	var total float64
	for _, n := range h {
		total += float64(n)
	}
	if total <= 0 {
		return 0, false
	}
	if q < 0 {
		q = 0
	}
	if q > 1 {
		q = 1
	}
	target := q * total
	var cum float64
	last := 0
	for i, n := range h {
		if n == 0 {
			continue
		}
		last = i
		c := float64(n)
		if cum+c >= target {
			frac := (target - cum) / c
			lo, hi := BucketLower(i), BucketUpper(i)
			return lo + frac*(hi-lo), true
		}
		cum += c
	}
	return BucketUpper(last), true
}

// PromBounds are the Prometheus histogram upper bounds in µs: 2^k µs for
// k = 8..24 (256 µs … ~16.8 s), close to Tempo's default span-metrics
// buckets and exact sums of the fine buckets.
const (
	promMinShift = 8
	promMaxShift = 24
	// NumProm counts the finite bounds plus the +Inf bucket.
	NumProm = promMaxShift - promMinShift + 2
)

// PromBucketOf returns the index of the smallest Prometheus bound ≥ us
// (NumProm-1 is +Inf).
func PromBucketOf(us uint64) int {
	if us <= 1<<promMinShift {
		return 0
	}
	i := bits.Len64(us-1) - promMinShift
	if i >= NumProm-1 {
		return NumProm - 1
	}
	return i
}

// PromBoundSeconds returns the finite upper bound of Prometheus bucket i in
// seconds.
func PromBoundSeconds(i int) float64 {
	return float64(uint64(1)<<uint(promMinShift+i)) / 1e6
}

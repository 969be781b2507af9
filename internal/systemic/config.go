package systemic

import "time"

// Config holds the thresholds of the cross-trace patterns. Zero fields take
// the defaults of shared/patterns.md (see Defaults).
type Config struct {
	// Dir keeps a snapshot (systemic.gob.gz) of the baselines, windows,
	// known exception types and open findings across restarts ("": memory
	// only). An unreadable snapshot is renamed *.corrupt and ignored.
	Dir string
	// SnapshotInterval is how often Run writes the snapshot (default 1 min;
	// it is also written when Run ends).
	SnapshotInterval time.Duration

	// Bucket is the time resolution of the sliding windows.
	Bucket time.Duration
	// EvalInterval is how often Run evaluates the patterns.
	EvalInterval time.Duration
	// UpdateInterval is how often at most an open finding whose figures
	// changed is rewritten in the store (default 1 min; once more when it
	// closes).
	UpdateInterval time.Duration
	// BaselineHalfLife: data older than the longest window is folded into
	// an exponentially decaying baseline with this half-life.
	BaselineHalfLife time.Duration
	// MinBaseline is how much observed history a baseline needs before
	// patterns compare against it.
	MinBaseline time.Duration
	// MinSamples is the least number of requests in a window (and in the
	// baseline) for rate and percentile patterns.
	MinSamples int

	// error_rate_spike: error share of an operation over OpErrorRate, or
	// of a service over ServiceErrorRate, across ErrorWindow, and at least
	// twice the baseline share.
	ErrorWindow      time.Duration
	OpErrorRate      float64
	ServiceErrorRate float64
	MinErrors        int

	// latency_regression: p95 over LatencyWindow ≥ LatencyFactor x the
	// baseline p95, and at least LatencyMinDelta slower.
	LatencyWindow   time.Duration
	LatencyFactor   float64
	LatencyMinDelta time.Duration

	// span_count_regression: mean spans per trace of an endpoint over
	// SpanWindow ≥ SpanFactor x baseline.
	SpanWindow time.Duration
	SpanFactor float64

	// new_error_type: an exception type unseen for ErrorTypeMemory;
	// types first seen during ErrorTypeWarmup after start are learnt
	// silently (the detector has no memory yet).
	ErrorTypeMemory time.Duration
	ErrorTypeWarmup time.Duration

	// missing_service: a service in ≥ MissingPresence of a flow's traces
	// in the baseline and in none over MissingWindow.
	MissingWindow   time.Duration
	MissingPresence float64

	// throughput_drop: requests of an entry endpoint over ThroughputWindow
	// under ThroughputFactor x expected, when at least MinExpected were
	// expected.
	ThroughputWindow time.Duration
	ThroughputFactor float64
	MinExpected      float64

	// cache_stampede: ≥ StampedeTraces traces of one endpoint missing the
	// same cache key within StampedeWindow.
	StampedeWindow time.Duration
	StampedeTraces int

	// auth_expiry_race: ≥ AuthFailures 401/403 answers mixed with
	// successes from one target within AuthWindow.
	AuthWindow   time.Duration
	AuthFailures int

	// concurrency_contention (contention.go).
	Contention ContentionConfig
}

// Defaults returns the thresholds of shared/patterns.md.
func Defaults() Config {
	return Config{
		Bucket: 10 * time.Second, EvalInterval: 10 * time.Second,
		BaselineHalfLife: time.Hour, MinBaseline: 10 * time.Minute, MinSamples: 20,
		ErrorWindow: 5 * time.Minute, OpErrorRate: 0.10, ServiceErrorRate: 0.05, MinErrors: 5,
		LatencyWindow: 10 * time.Minute, LatencyFactor: 2, LatencyMinDelta: 20 * time.Millisecond,
		SpanWindow: 10 * time.Minute, SpanFactor: 2,
		ErrorTypeMemory: 7 * 24 * time.Hour, ErrorTypeWarmup: 30 * time.Minute,
		MissingWindow: 5 * time.Minute, MissingPresence: 0.9,
		ThroughputWindow: 5 * time.Minute, ThroughputFactor: 0.5, MinExpected: 20,
		StampedeWindow: 2 * time.Second, StampedeTraces: 5,
		AuthWindow: 60 * time.Second, AuthFailures: 3,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := Defaults()
	dur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	f := func(v *float64, def float64) {
		if *v <= 0 {
			*v = def
		}
	}
	i := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	dur(&c.Bucket, d.Bucket)
	dur(&c.SnapshotInterval, time.Minute)
	dur(&c.EvalInterval, d.EvalInterval)
	dur(&c.UpdateInterval, time.Minute)
	dur(&c.BaselineHalfLife, d.BaselineHalfLife)
	dur(&c.MinBaseline, d.MinBaseline)
	i(&c.MinSamples, d.MinSamples)
	dur(&c.ErrorWindow, d.ErrorWindow)
	f(&c.OpErrorRate, d.OpErrorRate)
	f(&c.ServiceErrorRate, d.ServiceErrorRate)
	i(&c.MinErrors, d.MinErrors)
	dur(&c.LatencyWindow, d.LatencyWindow)
	f(&c.LatencyFactor, d.LatencyFactor)
	dur(&c.LatencyMinDelta, d.LatencyMinDelta)
	dur(&c.SpanWindow, d.SpanWindow)
	f(&c.SpanFactor, d.SpanFactor)
	dur(&c.ErrorTypeMemory, d.ErrorTypeMemory)
	dur(&c.ErrorTypeWarmup, d.ErrorTypeWarmup)
	dur(&c.MissingWindow, d.MissingWindow)
	f(&c.MissingPresence, d.MissingPresence)
	dur(&c.ThroughputWindow, d.ThroughputWindow)
	f(&c.ThroughputFactor, d.ThroughputFactor)
	f(&c.MinExpected, d.MinExpected)
	dur(&c.StampedeWindow, d.StampedeWindow)
	i(&c.StampedeTraces, d.StampedeTraces)
	dur(&c.AuthWindow, d.AuthWindow)
	i(&c.AuthFailures, d.AuthFailures)
	return c
}

func (c Config) maxWindow() time.Duration {
	return max(c.ErrorWindow, c.LatencyWindow, c.SpanWindow, c.MissingWindow, c.ThroughputWindow)
}

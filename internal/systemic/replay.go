package systemic

import (
	"log/slog"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Replay runs the detector in trace time instead of on the wall clock, so
// a recorded incident read back from files gives the findings live ingest
// gave. Its clock is the watermark, the latest span end seen: every trace
// is observed at the watermark after it, and the patterns are evaluated at
// every EvalInterval of trace time the watermark passes, as Run does
// every EvalInterval of wall-clock time.
//
// Replay is not safe for concurrent use; feed traces in order of start
// time (ReplayTraces sorts them).
type Replay struct {
	d        *Detector
	interval time.Duration
	mark     time.Time
	nextEval time.Time
	found    []Finding
	// observed is the watermark of the last trace observed; quiet is how
	// long after it evaluations can still see that trace in a window.
	observed    time.Time
	quiet       time.Duration
	evaluations int
}

// NewReplay returns a replay with cfg's thresholds. cfg.Dir is ignored: a
// replay neither reads nor writes a snapshot.
func NewReplay(cfg Config, log *slog.Logger) *Replay {
	cfg.Dir = ""
	r := &Replay{}
	r.d = New(cfg, nil, func() time.Time { return r.mark }, log)
	c := r.d.Config()
	r.interval = c.EvalInterval
	r.quiet = max(c.maxWindow(), c.AuthWindow, c.StampedeWindow) + 2*r.interval
	return r
}

// Feed observes one whole trace.
func (r *Replay) Feed(spans []model.Span) {
	if len(spans) == 0 {
		return
	}
	var end uint64
	for i := range spans {
		end = max(end, spans[i].EndUnixNano, spans[i].StartUnixNano)
	}
	if t := time.Unix(0, int64(end)).UTC(); t.After(r.mark) {
		r.mark = t
	}
	if r.nextEval.IsZero() {
		// Evaluations fall on multiples of the interval, as a ticker
		// started at an arbitrary moment would, one interval apart.
		r.nextEval = r.mark.Truncate(r.interval).Add(r.interval)
	}
	r.evaluateUntil(r.mark)
	r.d.Observe(r.mark, spans)
	r.observed = r.mark
}

// evaluateUntil evaluates at every interval up to t, except inside a
// stretch with no traffic: once every window is past the last trace,
// evaluations see nothing new (baselines fold by elapsed time, not by
// evaluation), so only the last one before t runs, to close what the
// quiet let lapse. A file spanning weeks took 26 s of empty evaluations.
func (r *Replay) evaluateUntil(t time.Time) {
	for !r.nextEval.IsZero() && !r.nextEval.After(t) {
		if !r.observed.IsZero() && r.nextEval.Sub(r.observed) > r.quiet {
			if last := t.Truncate(r.interval); last.After(r.nextEval) {
				r.nextEval = last
			}
		}
		r.evaluations++
		r.found = append(r.found, r.d.Evaluate(r.nextEval)...)
		r.nextEval = r.nextEval.Add(r.interval)
	}
}

// Finish evaluates once more, at the first evaluation time after the
// watermark (so findings of the last traces are not lost), and returns
// every finding opened during the replay, in order of detection.
func (r *Replay) Finish() []Finding {
	if !r.nextEval.IsZero() {
		r.evaluateUntil(r.nextEval)
	}
	out := r.found
	r.found = nil
	return out
}

// ReplayTraces replays whole traces in order of their first span's start
// and returns the cross-trace findings.
func ReplayTraces(cfg Config, traces [][]model.Span, log *slog.Logger) []Finding {
	order := make([]int, len(traces))
	starts := make([]uint64, len(traces))
	for i, tr := range traces {
		order[i] = i
		for j := range tr {
			if starts[i] == 0 || tr[j].StartUnixNano < starts[i] {
				starts[i] = tr[j].StartUnixNano
			}
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return starts[order[a]] < starts[order[b]] })
	r := NewReplay(cfg, log)
	for _, i := range order {
		r.Feed(traces[i])
	}
	return r.Finish()
}

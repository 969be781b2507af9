package baseline

import (
	"math"
	"sort"
	"time"

	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Robust says how windows that look like an incident are kept out of a
// baseline. The zero value takes the defaults.
type Robust struct {
	// Window is the span of trace time gathered before it is judged
	// (default 5 min).
	Window time.Duration
	// MinWindowSamples is how many samples a window needs before it is
	// judged at the end of Window; a quieter key's window stays open up to
	// 12 Windows so that one slow sample is not a verdict (default 10).
	MinWindowSamples int
	// MinEstablished is the decayed sample weight a baseline needs before
	// windows are judged against it; until then samples enter directly
	// (default 30).
	MinEstablished float64
	// AnomalyFactor: a window whose p50 is at least this many times the
	// usual p50 is anomalous, and so is one whose error share is at least
	// this many times the usual share and ErrorShareJump above it
	// (default 2).
	AnomalyFactor float64
	// ErrorShareJump is the least rise of the error share (0..1) that makes
	// a window anomalous (default 0.1).
	ErrorShareJump float64
	// AcceptAfter is how long anomalous windows must go on (three in four
	// windows at least) before they become the new normal (default 6 h).
	AcceptAfter time.Duration
	// ReleaseAfter: once normal windows have come back for this long after
	// the last anomalous one, the incident is over and its quarantined
	// samples are dropped (default 30 min).
	ReleaseAfter time.Duration
}

func (r Robust) withDefaults() Robust {
	if r.Window <= 0 {
		r.Window = 5 * time.Minute
	}
	if r.MinWindowSamples <= 0 {
		r.MinWindowSamples = 10
	}
	if r.MinEstablished <= 0 {
		r.MinEstablished = 30
	}
	if r.AnomalyFactor <= 1 {
		r.AnomalyFactor = 2
	}
	if r.ErrorShareJump <= 0 {
		r.ErrorShareJump = 0.1
	}
	if r.AcceptAfter <= 0 {
		r.AcceptAfter = 6 * time.Hour
	}
	if r.ReleaseAfter <= 0 {
		r.ReleaseAfter = 30 * time.Minute
	}
	return r
}

// series is what one key has learnt: the established baseline, the window
// being gathered, and the anomalous windows held out of the baseline.
type series struct {
	base     dist
	win      dist // decayed only when it closes late
	winStart int64
	q        *quarantine
}

// quarantine holds the anomalous windows of an ongoing shift.
type quarantine struct {
	d dist
	// since is the start of the first anomalous window, last the close of
	// the latest one (unix ns, trace time).
	since, last       int64
	anomalous, normal int // windows judged since `since`
	reason            string
}

func (d *dist) add(v uint64, failed bool) {
	d.h[tsdb.BucketOf(v)]++
	d.n++
	d.sum += float64(v)
	if failed {
		d.errs++
	}
}

// merge adds o into d (both already decayed to the same time, or o not
// decayed at all).
func (d *dist) merge(o *dist) {
	for i, w := range o.h {
		d.h[i] += w
	}
	d.n += o.n
	d.errs += o.errs
	d.sum += o.sum
}

func (d *dist) p50() float64 {
	v, _ := tsdb.Quantile(d.h[:], 0.5)
	return v
}

// observe adds one sample of key k at trace time t (unix ns).
func (b *Baselines) observe(s *series, k key, v uint64, failed bool, t int64) {
	r := &b.opt.Robust
	b.decayDist(&s.base, t)
	if s.win.n == 0 && s.q == nil && s.base.n < r.MinEstablished {
		s.base.add(v, failed)
		return
	}
	if s.win.n > 0 {
		age := time.Duration(t - s.winStart)
		if age >= r.Window && s.win.n >= float64(r.MinWindowSamples) || age >= 12*r.Window {
			b.closeWindow(s, k, t)
		}
	}
	if s.win.n == 0 {
		s.winStart, s.win.t = t, t
	}
	s.win.add(v, failed)
}

// anomaly says why window w would not be usual against base ("" = it is
// usual). A baseline too young to judge by accepts everything. Both tests
// also ask that chance could hardly explain the window, or a noisy key
// would lose its slow or failing windows to quarantine and its baseline
// would read better than the truth: the window's median must lie above
// the usual p90 (five of ten samples above it happens 0.2 % of the time),
// and its failures must exceed the usual count by three standard
// deviations.
func (b *Baselines) anomaly(base, w *dist) string {
	r := &b.opt.Robust
	if base.n < r.MinEstablished || w.n <= 0 {
		return ""
	}
	if bp := base.p50(); bp > 0 {
		wp := w.p50()
		p90, _ := tsdb.Quantile(base.h[:], 0.9)
		if wp >= r.AnomalyFactor*bp && wp >= p90 {
			return "slower"
		}
	}
	usual, now := base.errs/base.n, w.errs/w.n
	expected := w.n * usual
	if now >= r.AnomalyFactor*usual && now-usual >= r.ErrorShareJump &&
		w.errs >= expected+3*math.Sqrt(expected*(1-usual))+1 {
		return "errors"
	}
	return ""
}

// closeWindow judges the open window at trace time t and files it into the
// baseline or the quarantine.
func (b *Baselines) closeWindow(s *series, k key, t int64) {
	r := &b.opt.Robust
	defer func() { s.win = dist{} }()
	b.decayDist(&s.win, t) // a window left open by a quiet key counts as old
	why := b.anomaly(&s.base, &s.win)
	if why == "" {
		s.base.merge(&s.win)
		if s.q != nil {
			s.q.normal++
			if time.Duration(t-s.q.last) >= r.ReleaseAfter {
				b.log.Info("baseline: shift over, held-out samples dropped", "a", k.a, "b", k.b,
					"lasted", time.Duration(s.q.last-s.q.since).String())
				s.q = nil
			}
		}
		return
	}
	if s.q == nil {
		s.q = &quarantine{since: s.winStart, reason: why}
		s.q.d.t = t
		b.log.Info("baseline: anomalous window held out", "a", k.a, "b", k.b, "reason", why,
			"usual_p50_ms", tsdb.Round3(s.base.p50()/1000), "window_p50_ms", tsdb.Round3(s.win.p50()/1000))
	}
	b.decayDist(&s.q.d, t)
	s.q.d.merge(&s.win)
	s.q.last = t
	s.q.anomalous++
	// Three in four windows: an incident that comes and goes keeps the
	// good mode as usual rather than swapping it for the bad one.
	if time.Duration(t-s.q.since) >= r.AcceptAfter && s.q.anomalous >= 3*s.q.normal {
		b.log.Info("baseline: lasting shift accepted as the new normal", "a", k.a, "b", k.b, "reason", s.q.reason,
			"old_p50_ms", tsdb.Round3(s.base.p50()/1000), "new_p50_ms", tsdb.Round3(s.q.d.p50()/1000))
		s.base = s.q.d
		s.q = nil
	}
}

// usual is what lookups answer: the established baseline plus the open
// window when that window does not look anomalous (so a young or steady
// key is current to the sample); never the quarantine.
func (b *Baselines) usual(s *series) (dist, bool) {
	if s == nil {
		return dist{}, false
	}
	d := s.base
	if s.win.n > 0 && b.anomaly(&s.base, &s.win) == "" {
		d.merge(&s.win)
	}
	return d, d.n > 0
}

// Shift describes a key whose recent samples are held out of its baseline.
type Shift struct {
	Table     string // "operation", "statement" or "span_count"
	A, B      string // service and operation, or db system and shape
	Reason    string // "slower" ("larger" for span counts) or "errors"
	Since     time.Time
	UsualP50  float64 // ms (spans for span_count)
	ShiftP50  float64
	Anomalous int // windows held out so far
}

// Shifts lists the keys whose recent windows are held out as anomalous,
// longest-running first.
func (b *Baselines) Shifts() []Shift {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Shift
	for _, tb := range []struct {
		name  string
		m     map[key]*series
		scale float64
	}{{"operation", b.ops, 1000}, {"statement", b.stmts, 1000}, {"span_count", b.spanCounts, 1}} {
		for k, s := range tb.m {
			if s.q == nil {
				continue
			}
			reason := s.q.reason
			if tb.name == "span_count" && reason == "slower" {
				reason = "larger"
			}
			out = append(out, Shift{Table: tb.name, A: k.a, B: k.b, Reason: reason, Since: time.Unix(0, s.q.since).UTC(),
				UsualP50: tsdb.Round3(s.base.p50() / tb.scale), ShiftP50: tsdb.Round3(s.q.d.p50() / tb.scale), Anomalous: s.q.anomalous})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].A+"\x00"+out[i].B < out[j].A+"\x00"+out[j].B
	})
	return out
}

// ShiftCount is the number of keys whose recent windows are held out.
func (b *Baselines) ShiftCount() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n := 0
	for _, m := range []map[key]*series{b.ops, b.stmts, b.spanCounts} {
		for _, s := range m {
			if s.q != nil {
				n++
			}
		}
	}
	return n
}

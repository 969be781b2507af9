package systemic

import (
	"math"
	"time"
)

// An open finding is stored when it opens; while its key stays open the
// condition goes on changing (a stampede that grows from 5 to 20
// concurrent fetches, an error rate that climbs). Each evaluation keeps
// the newest version of it, and a version that says something new is
// written over the stored one (Updater), at most once per UpdateInterval
// and once more when the key closes, so the store shows today's figures
// for the cost of a few records per incident.

// peakKinds report a burst: the largest one seen while the finding is
// open is what it says (a smaller burst later is not news); the other
// kinds report their latest window.
var peakKinds = map[string]bool{"cache_stampede": true, "auth_expiry_race": true}

// magnitude is the figure of a finding whose change is worth a rewrite.
func magnitude(f *Finding) float64 {
	switch ev := f.Evidence.(type) {
	case StampedeEvidence:
		return float64(ev.Traces)
	case AuthRaceEvidence:
		return float64(ev.Failures)
	case ErrorRateEvidence:
		return ev.ErrorRate
	case LatencyEvidence:
		return ev.P95MS
	case SpanCountEvidence:
		return max(ev.MeanSpans, ev.VersionMeanSpans)
	case ThroughputEvidence:
		return float64(ev.Requests)
	case MissingServiceEvidence:
		return float64(ev.Traces)
	case NewErrorTypeEvidence:
		return 0 // the same type stays the same news
	}
	return f.ImpactMS
}

// minChange is the relative change of a latest-window figure that makes
// a rewrite worth it: the counts of a window move a little at every
// evaluation.
const minChange = 0.1

func newOpenKey(f Finding, now time.Time) *openKey {
	o := &openKey{wrote: now, shown: magnitude(&f), sev: f.Severity}
	if peakKinds[f.Kind] {
		// Until a larger burst, the one that opened it is the one to show.
		o.next = &f
	}
	return o
}

// revise takes the version f of an open finding from an evaluation.
func (o *openKey) revise(f Finding) {
	m := magnitude(&f)
	worse := f.Severity.Rank() > o.sev.Rank()
	if peakKinds[f.Kind] {
		top := o.shown
		if o.next != nil {
			top = max(top, magnitude(o.next))
		}
		if m > top || worse {
			o.next, o.dirty = &f, true
		}
		return
	}
	o.next = &f
	changed := f.Severity != o.sev || (o.shown == 0 && m != 0) || o.shown != 0 && math.Abs(m-o.shown) >= minChange*math.Abs(o.shown)
	o.dirty = o.dirty || changed
}

// due returns the version to write at evaluation now: a changed one once
// every (the UpdateInterval) since the last write; when closing, the last
// one if it changed or was seen after the last write. Its Updated is the
// last evaluation that saw the condition.
func (o *openKey) due(now time.Time, every time.Duration, closing bool) (Finding, bool) {
	if !o.stored || o.next == nil {
		return Finding{}, false
	}
	if !(o.dirty && now.Sub(o.wrote) >= every || closing && (o.dirty || o.last.After(o.wrote))) {
		return Finding{}, false
	}
	u := *o.next
	u.ID, u.Time, u.TraceID, u.Service, u.Operation = o.id, o.opened, o.trace, o.service, o.operation
	o.rev++
	u.Revision, u.Updated = o.rev, o.last
	o.wrote, o.shown, o.sev, o.dirty = now, magnitude(&u), u.Severity, false
	if !peakKinds[u.Kind] {
		o.next = nil
	}
	return u, true
}

// Stored tells the detector what the sink gave the findings that opened
// (their ids, and times), so later versions rewrite them.
func (d *Detector) Stored(fs []Finding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range fs {
		o := d.open[fs[i].Key]
		if o == nil || o.stored {
			continue
		}
		o.stored, o.id, o.opened = true, fs[i].ID, fs[i].Time
		o.trace, o.service, o.operation = fs[i].TraceID, fs[i].Service, fs[i].Operation
	}
}

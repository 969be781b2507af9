package alerting

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// findingSlot is the time resolution of the findings window.
const findingSlot = 5 * time.Second

// findingGroup is what findings rules tell apart.
type findingGroup struct {
	kind, service string
	severity      analyze.Severity
	systemic      bool
	// key tells cross-trace findings apart (the detector's key).
	key string
}

// findingAgg sums one group's findings of one slot.
type findingAgg struct {
	count  int
	impact float64
	// top is the finding alerts cite: the largest impact (per-trace) or
	// the newest (cross-trace), without its evidence.
	top findingstore.Stored
}

// findingsWindow counts stored findings per slot and group, so rules count
// exactly however many findings there are, without reading the store on
// every evaluation (reading and decoding 5,000 findings per rule took
// 150 ms and left counts short in busy systems).
type findingsWindow struct {
	mu    sync.Mutex
	keep  time.Duration
	slots map[int64]map[findingGroup]*findingAgg
}

func newFindingsWindow(keep time.Duration) *findingsWindow {
	return &findingsWindow{keep: keep + findingSlot, slots: map[int64]map[findingGroup]*findingAgg{}}
}

func slotOf(t time.Time) int64 { return t.UnixNano() / int64(findingSlot) }

func (w *findingsWindow) add(now time.Time, fs []findingstore.Stored) {
	oldest := slotOf(now.Add(-w.keep))
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range fs {
		f := &fs[i]
		s := slotOf(f.Time)
		if s < oldest {
			continue
		}
		g := findingGroup{kind: f.Kind, service: f.Service, severity: f.Severity, systemic: f.Systemic}
		if f.Systemic {
			g.key = f.Key
			if g.key == "" {
				g.key = f.Kind + "/" + f.Service + "/" + f.Operation
			}
		}
		groups := w.slots[s]
		if groups == nil {
			groups = map[findingGroup]*findingAgg{}
			w.slots[s] = groups
		}
		a := groups[g]
		if a == nil {
			a = &findingAgg{top: lean(f)}
			groups[g] = a
		} else if f.Systemic && !f.Time.Before(a.top.Time) || !f.Systemic && f.ImpactMS > a.top.ImpactMS {
			a.top = lean(f)
		}
		a.count++
		a.impact += f.ImpactMS
	}
}

// lean drops what alerts do not use, so the window stays small.
func lean(f *findingstore.Stored) findingstore.Stored {
	c := *f
	c.Evidence, c.SpanIDs, c.Fix = nil, nil, ""
	if len(c.ExampleTraceIDs) > 1 {
		c.ExampleTraceIDs = c.ExampleTraceIDs[:1]
	}
	return c
}

func (w *findingsWindow) prune(now time.Time) {
	oldest := slotOf(now.Add(-w.keep))
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.slots {
		if s < oldest {
			delete(w.slots, s)
		}
	}
}

// each calls fn for every group of every slot from from on (none on a
// nil window: an evaluator of RED rules alone needs none).
func (w *findingsWindow) each(from time.Time, fn func(findingGroup, *findingAgg)) {
	if w == nil {
		return
	}
	first := slotOf(from)
	w.mu.Lock()
	defer w.mu.Unlock()
	for s, groups := range w.slots {
		if s < first {
			continue
		}
		for g, a := range groups {
			fn(g, a)
		}
	}
}

// seedPage is how many findings one read of the store returns.
const seedPage = 10_000

// seed fills the window from the store once at start: the per-trace or
// cross-trace findings of the last span, newest first, a page at a time.
func (w *findingsWindow) seed(ctx context.Context, store FindingsReader, now time.Time, span time.Duration, systemic bool) (int, error) {
	from := now.Add(-span - findingSlot)
	to := time.Time{}
	seen := map[uint64]bool{}
	n := 0
	for {
		page, err := store.List(ctx, findingstore.Query{From: from, To: to, Systemic: &systemic, Limit: seedPage})
		if err != nil {
			return n, fmt.Errorf("reading the findings of the last %s: %w", human(span), err)
		}
		fresh := page[:0]
		for _, f := range page {
			if !seen[f.ID] {
				seen[f.ID] = true
				fresh = append(fresh, f)
			}
		}
		w.add(now, fresh)
		n += len(fresh)
		if len(page) < seedPage || len(fresh) == 0 {
			return n, nil
		}
		// The next page ends just after the oldest finding of this one:
		// findings of one trace share a time, and the page may have cut
		// through them (seen drops the repeats).
		to = page[len(page)-1].Time.Add(time.Nanosecond)
	}
}

package server

import (
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/systemic"
)

const (
	// clearlyLong makes a trace slow whatever its endpoint's baseline says
	// (or before there is one).
	clearlyLong = 2 * time.Second
	// priorityMinSamples is how many traces an endpoint's baseline needs
	// before "slower than usual" means anything.
	priorityMinSamples = 20
	// preferMemory is how long after the last skipped trace the queue
	// still counts as choosing between traces.
	preferMemory = 5 * time.Second
)

// priority says why a completing trace is worth analysing ahead of plain
// ones ("": it is not), from what the store knows before decoding it: its
// summary and the OR of its spans' systemic flags. It runs on the store's
// completion path, and only while the analysis queue is full, so it reads
// two baselines at most.
func (p *pipeline) priority(sum *model.TraceSummary, flags uint32) string {
	if sum.ErrorCount > 0 || flags&systemic.FlagRootFailed != 0 {
		return priorityError
	}
	if p.analytics && p.sampled(sum.TraceID) {
		return prioritySample
	}
	if systemic.NeedsTrace(flags) {
		return priorityShape
	}
	d := time.Duration(sum.DurationNano())
	if d >= clearlyLong {
		return prioritySlow
	}
	if p.history == nil || sum.RootService == "" {
		return ""
	}
	u := p.usual.of(p.history, sum.RootService, sum.RootName)
	if u.p95MS > 0 && float64(d)/1e6 > u.p95MS {
		return prioritySlow
	}
	// Repeated calls (N+1, retry storms, fan-out) make a trace larger than
	// its endpoint's usual.
	if u.spansP95 > 0 && float64(sum.SpanCount) > 1.5*u.spansP95 {
		return priorityShape
	}
	return ""
}

// usualLimits are an endpoint's p95 duration and span count (0: no
// baseline of priorityMinSamples yet).
type usualLimits struct{ p95MS, spansP95 float64 }

// usualCache keeps endpoints' usualLimits for usualFor: at the maximum
// rate thousands of traces a second are classified, and a baseline lookup
// computes quantiles of two histograms.
type usualCache struct {
	mu sync.Mutex
	at time.Time
	m  map[[2]string]usualLimits
}

// usualFor is how long cached limits are used; baselines move over
// minutes.
const usualFor = 10 * time.Second

func (c *usualCache) of(h *baseline.Baselines, service, operation string) usualLimits {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := timeNow(); c.m == nil || now.Sub(c.at) >= usualFor {
		c.m, c.at = map[[2]string]usualLimits{}, now
	}
	k := [2]string{service, operation}
	u, ok := c.m[k]
	if ok {
		return u
	}
	if b, ok := h.OperationDuration(service, operation); ok && b.Count >= priorityMinSamples {
		u.p95MS = b.P95MS
	}
	if n, ok := h.SpanCount(service, operation); ok && n.Count >= priorityMinSamples {
		u.spansP95 = n.P95
	}
	c.m[k] = u
	return u
}

// classify is priority for a trace handed over by the store.
func (p *pipeline) classify(c *engine.CompletedTrace) string { return p.priority(&c.Summary, c.Flags) }

// preferring reports whether the traces the worker analyses are chosen by
// priority now: the CPU share samples them (keep < 1), or the queue
// skipped traces lately.
func (p *pipeline) preferring(keep float64) bool {
	return keep < 1 || timeNow().UnixNano()-p.lastDrop.Load() < int64(preferMemory)
}

// splitKeep divides the share keep of traces the worker's CPU budget
// affords between the traces that matter (about vitalShare of them) and
// the plain ones: the former first, the latter what is left, but not less
// than keep's minKeep so the detectors still see some healthy traffic.
func splitKeep(keep, vitalShare float64) (vital, plain float64) {
	if keep >= 1 || vitalShare >= 1 {
		return min(1, keep), min(1, keep)
	}
	floor := min(keep, minKeep)
	if vitalShare <= keep {
		return 1, max(floor, (keep-vitalShare)/(1-vitalShare))
	}
	return keep / vitalShare, floor
}

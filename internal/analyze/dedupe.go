package analyze

import (
	"fmt"
	"strings"
)

// One root problem, one finding: some detectors see the same failed or
// slow span from different angles. When one finding says everything
// another says about a span (and more), the lesser one is dropped.

// subsumedBy lists, per kind, the kinds whose findings already explain its
// findings when they share its first (key) span.
var subsumedBy = map[string][]string{
	// A handled failure (the request did not fail) that was a retried
	// attempt, a swallowed call, a poisoned delivery or a failed branch is
	// told by that finding, with the context of what happened next.
	"error_origin": {"retry_storm", "swallowed_error", "poison_message", "partial_failure"},
	// A slow leaf that is a retried attempt or the origin of a timeout
	// cascade is that finding's evidence, not a second problem.
	"slow_dependency": {"retry_storm", "timeout_cascade"},
	// Calls queued for a worker pool are a fan-out too, but the cause is
	// the pool's size, which lock_contention names; and the idle time of
	// the parent before its first pooled call is that queue's wait.
	"fan_out":  {"lock_contention"},
	"idle_gap": {"lock_contention"},
}

// coveringKinds are the kinds whose findings' span ids subsumed reads:
// those of subsumedBy and retry_storm, whose attempts explain a backoff.
var coveringKinds = func() map[string]bool {
	m := map[string]bool{"retry_storm": true}
	for _, kinds := range subsumedBy {
		for _, k := range kinds {
			m[k] = true
		}
	}
	return m
}()

// mergeDuplicates drops findings subsumed by another finding on the same
// key span. error_origin findings of failed requests are kept: they say
// where the user's error started, which no other kind does.
func mergeDuplicates(fs []Finding) []Finding {
	covered := map[string]map[string]bool{} // kind -> span ids its findings name
	for _, f := range fs {
		if !coveringKinds[f.Kind] {
			// subsumed never asks: a cache_miss or n_plus_one_query
			// finding of a large trace names thousands of spans.
			continue
		}
		m := covered[f.Kind]
		if m == nil {
			m = map[string]bool{}
			covered[f.Kind] = m
		}
		for _, id := range f.SpanIDs {
			m[id] = true
		}
	}
	out := fs[:0]
	var counts []int
	same := map[[2]string]int{} // kind, title -> index in out
	for _, f := range fs {
		if subsumed(f, covered) {
			if f.Kind != "error_origin" {
				continue
			}
			// Every trace with a failed span names where the failure
			// started (the catalogue's contract), but a handled one is
			// told by the other finding: this one only points at it.
			f.Severity = SeverityInfo
		}
		// The same problem on repeated spans (each redelivery of a message,
		// each iteration of a loop) reads the same: one finding, a count.
		k := [2]string{f.Kind, problemKey(f)}
		if i, dup := same[k]; dup && f.Kind != "instrumentation_gap" { // it counts its own groups
			counts[i]++
			// The costliest occurrence speaks for all of them.
			kept := out[i]
			if f.ImpactMS > kept.ImpactMS {
				out[i], f = f, kept
			}
			out[i].SpanIDs = appendCapped(out[i].SpanIDs, f.SpanIDs, maxMergedSpanIDs)
			if f.Severity.Rank() > out[i].Severity.Rank() {
				out[i].Severity = f.Severity
			}
			continue
		}
		same[k] = len(out)
		out = append(out, f)
		counts = append(counts, 1)
	}
	for i, n := range counts {
		if n > 1 {
			out[i].Title += fmt.Sprintf(" (%d times in this trace)", n)
		}
	}
	return out
}

// problemKey says which findings of one kind are the same problem on
// repeated spans (a batch job running the same handler for every item, a
// consumer taking every message of a burst late): by default the same
// title; for kinds whose titles carry each occurrence's own numbers, what
// the problem is about (the operation, the target, the statement shape).
func problemKey(f Finding) string {
	var parts []string
	switch ev := f.Evidence.(type) {
	case IdleGapEvidence:
		parts = []string{ev.Span.Service, ev.Span.Operation, ev.Position, ev.LikelyCause}
	case SlowDependencyEvidence:
		parts = []string{ev.Peer, ev.Operation, ev.Parent.Service, ev.Parent.Operation}
	case NPlusOneEvidence:
		parts = []string{ev.DBSystem, ev.Shape, ev.Parent.Service, ev.Parent.Operation}
	case FanOutEvidence:
		parts = []string{ev.Target, ev.Operation, ev.Caller.Service, ev.Caller.Operation}
	case RetryStormEvidence:
		parts = []string{ev.Target, ev.Operation, ev.Caller.Service, ev.Caller.Operation}
	case CacheMissEvidence:
		parts = []string{ev.System, ev.KeyShape, ev.Lookup.Service, ev.Lookup.Operation}
	case ConsumerLagEvidence:
		parts = []string{ev.Destination, ev.Partition, ev.Consumer.Service, ev.Consumer.Operation}
	default:
		return f.Title
	}
	return strings.Join(parts, "\x00")
}

// maxMergedSpanIDs caps the example spans of a finding that stands for
// many repeats.
const maxMergedSpanIDs = 20

func appendCapped(dst, src []string, limit int) []string {
	for _, id := range src {
		if len(dst) >= limit {
			break
		}
		dst = append(dst, id)
	}
	return dst
}

func subsumed(f Finding, covered map[string]map[string]bool) bool {
	// A retry's backoff is part of the retry storm that names the failed
	// attempt before it: the storm counts its wasted time.
	if ev, ok := f.Evidence.(IdleGapEvidence); ok && ev.LikelyCause == "retry_backoff" && ev.Before != nil &&
		covered["retry_storm"][ev.Before.SpanID] {
		return true
	}
	by := subsumedBy[f.Kind]
	if len(by) == 0 || len(f.SpanIDs) == 0 {
		return false
	}
	if ev, ok := f.Evidence.(ErrorOriginEvidence); ok && ev.RootFailed {
		return false
	}
	key := f.SpanIDs[0]
	for _, k := range by {
		if covered[k][key] {
			return true
		}
	}
	return false
}

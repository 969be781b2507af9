package server

import (
	"testing"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
)

func stored(trace, kind string, spans ...string) findingstore.Stored {
	return findingstore.Stored{Finding: analyze.Finding{Kind: kind, TraceID: trace, SpanIDs: spans}}
}

// A trace completed again by late spans analyses to the same findings and
// one more about the late spans: only that one is new.
func TestStoredOnceDropsWhatATraceStoredBefore(t *testing.T) {
	o := newStoredOnce()
	first := []findingstore.Stored{stored("t1", "slow_query", "a"), stored("t1", "cache_miss", "b", "a")}
	if got := o.fresh(first); len(got) != 2 {
		t.Fatalf("first completion: %d of 2 stored", len(got))
	}
	again := []findingstore.Stored{stored("t1", "slow_query", "a"), stored("t1", "cache_miss", "b", "a", "c"),
		stored("t1", "consumer_lag", "d"), stored("t1", "slow_query", "e")}
	got := o.fresh(again)
	if len(got) != 2 || got[0].Kind != "consumer_lag" || got[1].SpanIDs[0] != "e" {
		t.Fatalf("second completion stored %+v, want the consumer_lag and the other query's slow_query", got)
	}
	if got := o.fresh([]findingstore.Stored{stored("t2", "slow_query", "a")}); len(got) != 1 {
		t.Errorf("another trace's finding on a same-named span was dropped")
	}
}

func TestStoredOnceForgetsTheOldestTraces(t *testing.T) {
	o := newStoredOnce()
	for i := range recentMax + 1 {
		o.fresh([]findingstore.Stored{stored(string(rune(i+1000)), "slow_query", "a")})
	}
	if len(o.seen) != recentMax {
		t.Fatalf("remembers %d traces, want %d", len(o.seen), recentMax)
	}
	if got := o.fresh([]findingstore.Stored{stored(string(rune(1000)), "slow_query", "a")}); len(got) != 1 {
		t.Errorf("the oldest trace, forgotten, stored nothing")
	}
	if got := o.fresh([]findingstore.Stored{stored(string(rune(1000+recentMax)), "slow_query", "a")}); len(got) != 0 {
		t.Errorf("a recent trace stored its finding twice")
	}
}

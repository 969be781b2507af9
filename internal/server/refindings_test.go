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

// A trace that never goes idle completes every trace_max_open: each
// completion renews it, so however many other traces store findings in
// between, its findings are stored once.
func TestStoredOnceRemembersATraceThatKeepsCompleting(t *testing.T) {
	o := newStoredOnce()
	poison := []findingstore.Stored{stored("busy", "poison_message", "a")}
	if got := o.fresh(poison); len(got) != 1 {
		t.Fatal("first completion stored nothing")
	}
	for round := range 3 {
		for i := range recentMax / 2 {
			o.fresh([]findingstore.Stored{stored(string(rune(round*recentMax+i+1000)), "slow_query", "a")})
		}
		if got := o.fresh([]findingstore.Stored{stored("busy", "poison_message", "a", "b")}); len(got) != 0 {
			t.Fatalf("round %d: the poison message stored again after %d other traces", round, recentMax/2)
		}
	}
	if len(o.seen) > recentMax {
		t.Fatalf("remembers %d traces, more than %d", len(o.seen), recentMax)
	}
}

// A message redelivered for hours completes its trace every
// trace_max_open; each analysis finds the gap before the newest
// redelivery, a new first span every time, at the same place.
func TestStoredOnceKeepsOneFindingPerPlaceOfAGrowingTrace(t *testing.T) {
	o := newStoredOnce()
	at := func(kind, span, svc, op string) findingstore.Stored {
		f := stored("t1", kind, span)
		f.Service, f.Operation = svc, op
		return f
	}
	if got := o.fresh([]findingstore.Stored{at("idle_gap", "a", "orders", "consume orders")}); len(got) != 1 {
		t.Fatalf("first completion: %d stored", len(got))
	}
	got := o.fresh([]findingstore.Stored{at("idle_gap", "b", "orders", "consume orders"),
		at("idle_gap", "c", "mailer", "send"), at("slow_query", "d", "orders", "consume orders")})
	if len(got) != 2 || got[0].Service != "mailer" || got[1].Kind != "slow_query" {
		t.Fatalf("second completion stored %+v, want mailer's idle_gap and the slow_query", got)
	}
}

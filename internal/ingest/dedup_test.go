package ingest

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// keyTable agrees with a map through inserts and removals, including
// keys that share home slots and probe runs that wrap around the end.
func TestKeyTableMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, spread := range []uint64{0, 1 << 62} { // 0: full 64-bit keys
		tb := newKeyTable(64)
		want := map[uint64]bool{}
		var keys []uint64
		for i := 0; i < 20_000; i++ {
			var k uint64
			if spread == 0 {
				k = rng.Uint64()
			} else {
				// Few distinct top bits: long runs, many shared homes,
				// and runs wrapping past the last slot.
				k = uint64(rng.IntN(4))<<62 | uint64(2+rng.IntN(100)) // never 0 or 1, which share a slot
			}
			if len(keys) < 60 && (len(keys) == 0 || rng.IntN(2) == 0) {
				if got := tb.insert(k); got != !want[k] {
					t.Fatalf("insert(%x) = %v with the key present: %v", k, got, want[k])
				}
				if !want[k] {
					want[k] = true
					keys = append(keys, k)
				}
			} else {
				j := rng.IntN(len(keys))
				tb.remove(keys[j])
				delete(want, keys[j])
				keys = append(keys[:j], keys[j+1:]...)
			}
			if tb.n != len(want) {
				t.Fatalf("%d keys in the table, want %d", tb.n, len(want))
			}
			for _, k := range keys {
				if !tb.has(k) {
					t.Fatalf("key %x lost after %d operations", k, i)
				}
			}
			if probe := rng.Uint64(); tb.has(probe) != want[probe] {
				t.Fatalf("has(%x) = %v", probe, !want[probe])
			}
		}
	}
}

// The key 0 is a valid hash; the table stores it as 1.
func TestKeyTableZero(t *testing.T) {
	tb := newKeyTable(4)
	if !tb.insert(0) || !tb.has(0) || tb.insert(0) {
		t.Fatal("key 0 not kept like any other")
	}
	tb.remove(0)
	if tb.has(0) || tb.n != 0 {
		t.Fatal("key 0 not removed")
	}
}

// BenchmarkRecentSpans measures the dedup window as a request of 500 new
// spans sees it with the default window full: one dedupe and one remember.
func BenchmarkRecentSpans(b *testing.B) {
	r := newRecentSpans(DefaultConfig().DedupWindowSpans)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := make([]uint64, DefaultConfig().DedupWindowSpans)
	for i := range fill {
		fill[i] = rng.Uint64()
	}
	r.remember(fill)
	spans := make([]model.Span, 500)
	keys := make([]uint64, 500)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range keys {
			keys[j] = rng.Uint64()
		}
		kept, k, _ := r.dedupe(spans, keys)
		if len(kept) != len(spans) {
			b.Fatalf("%d of %d new spans kept", len(kept), len(spans))
		}
		r.remember(k)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/span")
}

// spanKey tells spans apart by every part of their content, and only by
// that: a clone has the same key, any one change another.
func TestSpanKeyCoversTheSpansContent(t *testing.T) {
	base := model.Span{
		TraceID: model.TraceID{1}, SpanID: model.SpanID{2}, ParentSpanID: model.SpanID{3},
		Name: "GET /a", Service: "svc", StatusMessage: "m", TraceState: "k=v", Kind: model.KindServer,
		StatusCode: model.StatusError, StartUnixNano: 10, EndUnixNano: 20, Flags: 1,
		Attrs: model.Attrs{{Key: "s", Value: model.Str("x")}, {Key: "i", Value: model.Int(7)},
			{Key: "f", Value: model.Float(0.5)}, {Key: "b", Value: model.Bool(true)},
			{Key: "y", Value: model.Value{Type: model.TypeBytes, Bytes: []byte{1, 2}}}},
		Events: []model.Event{{TimeUnixNano: 15, Name: "e", Attrs: model.Attrs{{Key: "k", Value: model.Str("v")}}}},
		Links:  []model.Link{{TraceID: model.TraceID{4}, SpanID: model.SpanID{5}, Attrs: model.Attrs{{Key: "l", Value: model.Int(1)}}}},
	}
	key := func(scope string, s model.Span) uint64 {
		_, k := spanKey(nil, scope, &s)
		return k
	}
	want := key("t", base)
	if got := key("t", base.Clone()); got != want {
		t.Fatal("a clone has another key")
	}
	long := strings.Repeat("n", 127)
	changes := map[string]func(s *model.Span){
		"trace id":                         func(s *model.Span) { s.TraceID[15] = 9 },
		"span id":                          func(s *model.Span) { s.SpanID[7] = 9 },
		"parent":                           func(s *model.Span) { s.ParentSpanID = model.SpanID{} },
		"name":                             func(s *model.Span) { s.Name = "GET /b" },
		"name and service split elsewhere": func(s *model.Span) { s.Name, s.Service = "GET /as", "vc" },
		"long name":                        func(s *model.Span) { s.Name = long + "x" },
		"status message":                   func(s *model.Span) { s.StatusMessage = "" },
		"trace state":                      func(s *model.Span) { s.TraceState = "k=w" },
		"kind":                             func(s *model.Span) { s.Kind = model.KindClient },
		"status":                           func(s *model.Span) { s.StatusCode = model.StatusOK },
		"start":                            func(s *model.Span) { s.StartUnixNano++ },
		"end":                              func(s *model.Span) { s.EndUnixNano++ },
		"flags":                            func(s *model.Span) { s.Flags = 0 },
		"dropped attrs":                    func(s *model.Span) { s.DroppedAttributesCount = 1 },
		"dropped events":                   func(s *model.Span) { s.DroppedEventsCount = 1 },
		"string value":                     func(s *model.Span) { s.Attrs[0].Value.Str = "y" },
		"attr key":                         func(s *model.Span) { s.Attrs[0].Key = "t" },
		"int value":                        func(s *model.Span) { s.Attrs[1].Value.Int = 8 },
		"double value":                     func(s *model.Span) { s.Attrs[2].Value.Float = 0.25 },
		"bool value":                       func(s *model.Span) { s.Attrs[3].Value.Bool = false },
		"bytes value":                      func(s *model.Span) { s.Attrs[4].Value.Bytes = []byte{1, 3} },
		"value type":                       func(s *model.Span) { s.Attrs[0].Value = model.Value{Type: model.TypeArray, Str: "x"} },
		"one attr less":                    func(s *model.Span) { s.Attrs = s.Attrs[:4] },
		"event time":                       func(s *model.Span) { s.Events[0].TimeUnixNano++ },
		"event name":                       func(s *model.Span) { s.Events[0].Name = "f" },
		"event attr":                       func(s *model.Span) { s.Events[0].Attrs[0].Value.Str = "w" },
		"no events":                        func(s *model.Span) { s.Events = nil },
		"link trace":                       func(s *model.Span) { s.Links[0].TraceID[0] = 6 },
		"link span":                        func(s *model.Span) { s.Links[0].SpanID[0] = 6 },
		"link attr":                        func(s *model.Span) { s.Links[0].Attrs[0].Value.Int = 2 },
		"no links":                         func(s *model.Span) { s.Links = nil },
	}
	seen := map[uint64]string{want: "the span"}
	for name, change := range changes {
		s := base.Clone()
		change(&s)
		k := key("t", s)
		if other, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", name, other)
		}
		seen[k] = name
	}
	if key("u", base) == want {
		t.Error("another scope (tenant) has the same key")
	}
}

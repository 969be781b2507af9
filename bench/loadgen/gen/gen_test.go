package gen

import (
	"math/rand/v2"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

func TestFillGivesFreshIDs(t *testing.T) {
	ts, err := Templates(1, 2, 20)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	seen := map[pcommon.TraceID]int{}
	for round := 0; round < 2; round++ {
		body := ts[0].Fill(nil, rng)
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			t.Fatalf("filled request does not decode: %v", err)
		}
		td := req.Traces()
		if td.SpanCount() != ts[0].Spans {
			t.Fatalf("span count %d != %d", td.SpanCount(), ts[0].Spans)
		}
		ids := map[pcommon.TraceID]int{}
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			sp := rss.At(i).ScopeSpans().At(0).Spans()
			for k := 0; k < sp.Len(); k++ {
				ids[sp.At(k).TraceID()]++
				if sp.At(k).Attributes().Len() < 9 {
					t.Errorf("span with %d attributes", sp.At(k).Attributes().Len())
				}
			}
		}
		if len(ids) != 20 {
			t.Fatalf("round %d: %d distinct trace ids, want 20", round, len(ids))
		}
		for id, n := range ids {
			if n < 5 || n > 30 {
				t.Errorf("trace with %d spans", n)
			}
			if seen[id] > 0 {
				t.Errorf("trace id %x reused across rounds", id)
			}
			seen[id]++
		}
	}
}

package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestSequentialCallsChainRules(t *testing.T) {
	build := func(starts []float64, urls []string) *Trace {
		spans := []model.Span{p1Span(1, 0, "bff", "GET /home", model.KindServer, 0, 500)}
		for i, st := range starts {
			spans = append(spans, p1Call(byte(10+i), 1, st, st+100, urls[i], 200))
		}
		return NewTrace(spans)
	}
	three := []string{"http://users/v1/me", "http://orders/v1/recent", "http://recs/v1/top"}
	d := NewSequentialCalls()
	got := d.Detect(build([]float64{10, 112, 214}, three), nil)
	if len(got) != 1 || got[0].Evidence.(SequentialCallsEvidence).SavingMS != 200 {
		t.Fatalf("back-to-back chain: %+v", got)
	}
	if got := d.Detect(build([]float64{10, 105, 214}, three), nil); len(got) != 0 {
		t.Fatal("overlapping calls are not sequential")
	}
	if got := d.Detect(build([]float64{10, 130, 250}, three), nil); len(got) != 0 {
		t.Fatal("20 ms gaps: the caller did work in between")
	}
	same := []string{"http://users/v1/me", "http://users/v1/me", "http://users/v1/me"}
	if got := d.Detect(build([]float64{10, 112, 214}, same), nil); len(got) != 0 {
		t.Fatal("one target three times is fan_out's, not sequential_calls'")
	}
}

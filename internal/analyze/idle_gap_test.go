package analyze

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestIdleGapPositions(t *testing.T) {
	spans := []model.Span{
		p1Span(1, 0, "svc", "POST /x", model.KindServer, 0, 1000),
		p1Span(2, 1, "svc", "step", model.KindInternal, 300, 400),
		p1Span(3, 1, "svc", "step", model.KindInternal, 350, 420), // overlaps: no gap between 2 and 3
		p1Span(4, 1, "svc", "step", model.KindInternal, 430, 700),
	}
	got := NewIdleGap().Detect(NewTrace(spans), nil)
	pos := map[string]float64{}
	for _, f := range got {
		ev := f.Evidence.(IdleGapEvidence)
		pos[ev.Position] = ev.GapMS
	}
	if len(got) != 2 || pos["before_first_child"] != 300 || pos["after_last_child"] != 300 {
		t.Fatalf("gaps %v", pos)
	}
	// A child that outlives the parent covers up to the parent's end only.
	spans[3].EndUnixNano += 2000e6
	got = NewIdleGap().Detect(NewTrace(spans), nil)
	if len(got) != 1 || got[0].Evidence.(IdleGapEvidence).Position != "before_first_child" {
		t.Fatalf("outliving child: %+v", got)
	}
}

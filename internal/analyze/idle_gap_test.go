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

// SmartThings' recorded install flow: the page span ends, then the
// browser's next request arrives with the page's context. Before that
// request the page span has no child at all: no gap in it to report.
func TestIdleGapIgnoresChildrenAfterTheEnd(t *testing.T) {
	// Two pages, each followed by the browser's next request; the second
	// also makes a call inside it.
	var spans []model.Span
	for i, page := range []struct{ start, end, next float64 }{{0, 108, 258}, {1000, 1400, 9000}} {
		id := byte(1 + 3*i)
		spans = append(spans, p1Span(id, 0, "strongman", "post pages/install/page", model.KindServer, page.start, page.end),
			p1Span(id+1, id, "stLogin", "get /login", model.KindServer, page.next, page.next+128))
	}
	spans = append(spans, p1Span(3, 4, "strongman", "GET", model.KindClient, 1010, 1250))
	if got := NewIdleGap().Detect(NewTrace(spans), nil); len(got) != 1 || got[0].Evidence.(IdleGapEvidence).Position != "after_last_child" ||
		!p1Near(got[0].Evidence.(IdleGapEvidence).GapMS, 150, 0.01) {
		t.Fatalf("want only the 150 ms after the call inside the second page: %+v", got)
	}
}

package analyze

import (
	"fmt"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestNPlusOneBindParamsAndIdenticalLiterals(t *testing.T) {
	build := func(stmt func(i int) string, concurrent bool) *Trace {
		spans := []model.Span{p1Span(1, 0, "stock", "GET /x", model.KindServer, 0, 200)}
		for i := 0; i < 8; i++ {
			st := 10 + float64(i)*12
			if concurrent {
				st = 10
			}
			spans = append(spans, p1DB(byte(10+i), 1, st, st+10, stmt(i)))
		}
		return NewTrace(spans)
	}
	d := NewNPlusOneQuery()
	// Literals differ: a loop.
	if got := d.Detect(build(func(i int) string { return fmt.Sprintf("SELECT * FROM t WHERE id = %d", i) }, false), nil); len(got) != 1 {
		t.Fatalf("differing literals: %d findings", len(got))
	}
	// Bind markers hide the parameters: trust the shape.
	if got := d.Detect(build(func(int) string { return "SELECT * FROM t WHERE id = $1" }, false), nil); len(got) != 1 {
		t.Fatalf("bind params: %d findings", len(got))
	}
	// The very same literal text 8 times is not a loop over a list.
	if got := d.Detect(build(func(int) string { return "SELECT * FROM config WHERE k = 'tz'" }, false), nil); len(got) != 0 {
		t.Fatalf("identical literal statements reported")
	}
	// Concurrent repetitions: the loop costs one query on the critical
	// path, so batching saves about nothing.
	got := d.Detect(build(func(i int) string { return fmt.Sprintf("SELECT * FROM t WHERE id = %d", i) }, true), nil)
	if len(got) != 1 || got[0].ImpactMS != 0 || got[0].Evidence.(NPlusOneEvidence).CriticalMS != 10 {
		t.Fatalf("concurrent: %+v", got)
	}
}

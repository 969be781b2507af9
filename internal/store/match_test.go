package store

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestCompareValue(t *testing.T) {
	cases := []struct {
		v, want model.Value
		op      Op
		ok      bool
	}{
		{model.Int(500), model.Str("500"), OpEq, true},
		{model.Int(500), model.Int(404), OpGt, true},
		{model.Int(500), model.Int(500), OpLt, false},
		{model.Str("500"), model.Int(499), OpGt, true},
		{model.Float(1.5), model.Int(1), OpGte, true},
		{model.Str("GET"), model.Str("GET"), OpEq, true},
		{model.Str("GET"), model.Str("POST"), OpNeq, true},
		{model.Str("/orders/12"), model.Str("/orders/.*"), OpRegex, true},
		{model.Str("x/orders/12"), model.Str("/orders/.*"), OpRegex, false},
		{model.Str("/orders/12"), model.Str("/orders/.*"), OpNotRegex, false},
		{model.Bool(true), model.Str("true"), OpEq, true},
		{model.Str("10"), model.Str("9"), OpGt, false}, // text comparison when neither side is a number
	}
	for i, c := range cases {
		if got := CompareValue(c.v, c.op, c.want); got != c.ok {
			t.Errorf("case %d: CompareValue(%v, %d, %v) = %v, want %v", i, c.v, c.op, c.want, got, c.ok)
		}
	}
}

func TestMatchTraceNeedsOneSpanForAllConditions(t *testing.T) {
	errCode := model.StatusError
	spans := []model.Span{
		{Service: "api", Name: "GET /a", StatusCode: model.StatusOK, StartUnixNano: 10, EndUnixNano: 20},
		{Service: "db", Name: "SELECT", StatusCode: model.StatusError, StartUnixNano: 12, EndUnixNano: 18,
			Attrs: model.Attrs{{Key: "db.system", Value: model.Str("postgresql")}}},
	}
	q := Query{Service: "api", Status: &errCode}
	if MatchTrace(&q, spans) {
		t.Fatal("service and status are satisfied by different spans; the trace must not match")
	}
	q = Query{Service: "db", Status: &errCode, Attrs: []AttrFilter{{Key: "db.system", Op: OpEq, Value: model.Str("postgresql")}}}
	if !MatchTrace(&q, spans) {
		t.Fatal("db span satisfies all conditions")
	}
	q = Query{MinTraceDuration: 11}
	if MatchTrace(&q, spans) {
		t.Fatal("trace lasts 10ns, below the minimum")
	}
	q = Query{Attrs: []AttrFilter{{Scope: ScopeResource, Key: "service.name", Op: OpEq, Value: model.Str("db")}}}
	if !MatchTrace(&q, spans) {
		t.Fatal("service.name as a resource attribute must match the span's service")
	}
}

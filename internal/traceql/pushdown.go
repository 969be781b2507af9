package traceql

import (
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Pushdown returns a store pre-filter implied by the query: every trace the
// query matches also matches the returned store.Query, so the store may use
// it to skip data (the exact evaluation then runs on full traces). It is
// conservative: conditions it cannot express are dropped, never guessed.
// Range and Limit are left for the caller.
func (q *Query) Pushdown() store.Query {
	var sq store.Query
	if len(q.Pipeline) == 0 {
		return sq
	}
	f := impliedFilter(q.Pipeline[0].(SpansetExpr))
	if f == nil || f.Expr == nil {
		return sq
	}
	for _, c := range conjuncts(f.Expr, nil) {
		pushCondition(&sq, c)
	}
	return sq
}

// impliedFilter picks a selector that must match some span of every
// matching trace: the filter itself, or one side of an operator that needs
// both sides (&&, structural) — the right side for negated structural
// operators, whose left side may match nothing.
func impliedFilter(e SpansetExpr) *SpansetFilter {
	switch e := e.(type) {
	case *SpansetFilter:
		return e
	case *SpansetOp:
		if e.Op == OpSpansetOr {
			return nil
		}
		r := impliedFilter(e.RHS)
		if e.Not {
			return r
		}
		l := impliedFilter(e.LHS)
		// Prefer the side that constrains more.
		if l == nil || (r != nil && len(conjuncts(r.Expr, nil)) > len(conjuncts(l.Expr, nil))) {
			return r
		}
		return l
	}
	return nil
}

func conjuncts(e FieldExpr, out []FieldExpr) []FieldExpr {
	if e == nil {
		return out
	}
	if b, ok := e.(*BinaryExpr); ok && b.Op == OpAnd {
		return conjuncts(b.RHS, conjuncts(b.LHS, out))
	}
	return append(out, e)
}

var storeOps = map[BinOp]store.Op{
	OpEq: store.OpEq, OpNeq: store.OpNeq, OpGt: store.OpGt, OpGte: store.OpGte,
	OpLt: store.OpLt, OpLte: store.OpLte, OpRegex: store.OpRegex, OpNotRegex: store.OpNotRegex,
}

// pushCondition adds one `attribute op literal` condition to sq when the
// store can express it with the same or a looser meaning.
func pushCondition(sq *store.Query, c FieldExpr) {
	b, ok := c.(*BinaryExpr)
	if !ok || !b.Op.isComparison() {
		return
	}
	a, aok := b.LHS.(Attribute)
	v, vok := b.RHS.(Value)
	op := b.Op
	if !aok || !vok {
		a, aok = b.RHS.(Attribute)
		v, vok = b.LHS.(Value)
		if !aok || !vok || op == OpRegex || op == OpNotRegex {
			return
		}
		op = flip(op)
	}
	if a.Parent {
		return
	}
	switch a.Intrinsic {
	case IntrinsicName:
		if op == OpEq && v.Type == TypeString && sq.Operation == "" {
			sq.Operation = v.S
		}
	case IntrinsicKind:
		if op == OpEq && v.Type == TypeKind && len(sq.Kinds) == 0 {
			sq.Kinds = []model.SpanKind{model.SpanKind(v.I)}
		}
	case IntrinsicStatus:
		if op == OpEq && v.Type == TypeStatus && sq.Status == nil {
			s := model.StatusCode(v.I)
			sq.Status = &s
		}
	case IntrinsicDuration:
		lo, hi, ok := durationBounds(op, v)
		if ok {
			sq.MinDuration = maxU(sq.MinDuration, lo)
			sq.MaxDuration = minNonZero(sq.MaxDuration, hi)
		}
	case IntrinsicTraceDuration:
		lo, hi, ok := durationBounds(op, v)
		if ok {
			sq.MinTraceDuration = maxU(sq.MinTraceDuration, lo)
			sq.MaxTraceDuration = minNonZero(sq.MaxTraceDuration, hi)
		}
	case IntrinsicNone:
		var mv model.Value
		switch v.Type {
		case TypeString:
			mv = model.Str(v.S)
		case TypeInt:
			mv = model.Int(v.I)
		case TypeFloat:
			mv = model.Float(v.F)
		case TypeBool:
			if op != OpEq && op != OpNeq {
				return
			}
			mv = model.Bool(v.B)
		case TypeNil:
			// `!= nil` is a presence test; `= nil` (absence) has no store form.
			if op == OpNeq {
				sq.Attrs = append(sq.Attrs, store.AttrFilter{Scope: storeScope(a.Scope), Key: a.Name, Op: store.OpExists})
			}
			return
		default:
			return
		}
		if (op == OpRegex || op == OpNotRegex) && v.Type != TypeString {
			return
		}
		// Only the resource scope is exactly the denormalised Service; an
		// unscoped name would let a span attribute of that name win.
		if a.Name == "service.name" && a.Scope == ScopeResource && op == OpEq && v.Type == TypeString && sq.Service == "" {
			sq.Service = v.S
			return
		}
		sq.Attrs = append(sq.Attrs, store.AttrFilter{Scope: storeScope(a.Scope), Key: a.Name, Op: storeOps[op], Value: mv})
	}
}

func storeScope(s Scope) store.Scope {
	switch s {
	case ScopeSpan:
		return store.ScopeSpan
	case ScopeResource:
		return store.ScopeResource
	}
	return store.ScopeAny
}

// durationBounds turns `duration op literal` into inclusive [lo, hi] in ns
// (0: unbounded).
func durationBounds(op BinOp, v Value) (lo, hi uint64, ok bool) {
	if v.Type != TypeDuration || v.I < 0 {
		return 0, 0, false
	}
	d := uint64(v.I)
	switch op {
	case OpEq:
		if d == 0 {
			return 0, 0, false
		}
		return d, d, true
	case OpGt:
		return d + 1, 0, true
	case OpGte:
		return d, 0, true
	case OpLt:
		if d <= 1 {
			return 0, 0, false
		}
		return 0, d - 1, true
	case OpLte:
		if d == 0 {
			return 0, 0, false
		}
		return 0, d, true
	}
	return 0, 0, false
}

func maxU(a, b uint64) uint64 {
	if b > a {
		return b
	}
	return a
}

func minNonZero(a, b uint64) uint64 {
	if a == 0 {
		return b
	}
	if b == 0 || a < b {
		return a
	}
	return b
}

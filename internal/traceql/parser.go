package traceql

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 200

// MaxQueryLength bounds the query text.
const MaxQueryLength = 64 << 10

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
	q     *Query
	lim   Limits
}

// Parse parses a TraceQL query under DefaultLimits. Errors are
// *SyntaxError with a position and what was expected, or *LimitError.
func Parse(src string) (*Query, error) { return ParseLimited(src, DefaultLimits()) }

// ParseLimited parses a TraceQL query under lim.
func ParseLimited(src string, lim Limits) (*Query, error) {
	if len(src) > MaxQueryLength {
		return nil, &SyntaxError{Line: 1, Col: 1, Msg: fmt.Sprintf("query is longer than %d bytes", MaxQueryLength)}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	q := &Query{Source: src}
	p := &parser{src: src, toks: toks, q: q, lim: lim}
	if err := p.parseQuery(); err != nil {
		return nil, err
	}
	q.finish()
	return q, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) peekAt(n int) token {
	if p.i+n < len(p.toks) {
		return p.toks[p.i+n]
	}
	return p.toks[len(p.toks)-1]
}

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) is(kind tokKind, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return newSyntaxError(p.src, t.pos, format, args...)
}

func (p *parser) expect(kind tokKind, text, what string) (token, error) {
	t := p.peek()
	if t.kind != kind || t.text != text {
		return t, p.errAt(t, "expected %s, found %s", what, t.describe())
	}
	return p.next(), nil
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errAt(p.peek(), "query nested too deeply")
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

func (p *parser) parseQuery() error {
	if p.peek().kind == tEOF {
		return p.errAt(p.peek(), "empty query: expected a spanset selector such as { }")
	}
	first, err := p.parseSpansetExpr()
	if err != nil {
		return err
	}
	p.q.Pipeline = append(p.q.Pipeline, first)
	for p.is(tPunct, "|") {
		p.next()
		t := p.peek()
		if t.kind == tIdent {
			if f, ok := metricsNames[t.text]; ok {
				m, err := p.parseMetrics(f)
				if err != nil {
					return err
				}
				p.q.Metrics = m
				break
			}
		}
		st, err := p.parseStage()
		if err != nil {
			return err
		}
		p.q.Pipeline = append(p.q.Pipeline, st)
	}
	if p.q.Metrics != nil {
		for p.is(tPunct, "|") {
			p.next()
			if err := p.parseSecondStage(); err != nil {
				return err
			}
		}
	}
	if p.peek().kind == tIdent && p.peek().text == "with" {
		if err := p.parseHints(); err != nil {
			return err
		}
	}
	if t := p.peek(); t.kind != tEOF {
		exp := "'|' or end of query"
		if p.q.Metrics == nil && len(p.q.Pipeline) == 1 {
			exp = "'|', a spanset operator (&&, ||, >, >>, <, <<, ~) or end of query"
		}
		return p.errAt(t, "expected %s, found %s", exp, t.describe())
	}
	return nil
}

// startsSpanset looks past opening parentheses for a '{'.
func (p *parser) startsSpanset() bool {
	for n := 0; ; n++ {
		t := p.peekAt(n)
		if t.kind == tPunct && t.text == "(" {
			continue
		}
		return t.kind == tPunct && t.text == "{"
	}
}

func (p *parser) parseStage() (Stage, error) {
	t := p.peek()
	if p.startsSpanset() {
		return p.parseSpansetExpr()
	}
	if t.kind == tIdent {
		switch t.text {
		case "by":
			p.next()
			if _, err := p.expect(tPunct, "(", "'(' after by"); err != nil {
				return nil, err
			}
			f, err := p.parseFieldExpr()
			if err != nil {
				return nil, err
			}
			if _, err := p.expect(tPunct, ")", "')' closing by("); err != nil {
				return nil, err
			}
			return &GroupBy{Field: f}, nil
		case "select":
			p.next()
			fields, err := p.parseFieldList("select")
			if err != nil {
				return nil, err
			}
			if len(fields) == 0 {
				return nil, p.errAt(t, "select() needs at least one attribute")
			}
			return &Select{Fields: fields}, nil
		case "coalesce":
			p.next()
			if _, err := p.expect(tPunct, "(", "'(' after coalesce"); err != nil {
				return nil, err
			}
			if _, err := p.expect(tPunct, ")", "')' after coalesce("); err != nil {
				return nil, err
			}
			return &Coalesce{}, nil
		}
	}
	if t.kind == tIdent || t.kind == tInt || t.kind == tFloat || t.kind == tDuration || (t.kind == tPunct && t.text == "(") {
		return p.parseScalarFilter()
	}
	return nil, p.errAt(t, "expected a pipeline stage (a spanset selector, count(), avg(), min(), max(), sum(), by(), select(), coalesce() or a metrics function), found %s", t.describe())
}

func (p *parser) parseFieldList(fn string) ([]FieldExpr, error) {
	if _, err := p.expect(tPunct, "(", "'(' after "+fn); err != nil {
		return nil, err
	}
	var out []FieldExpr
	if p.is(tPunct, ")") {
		p.next()
		return out, nil
	}
	for {
		f, err := p.parseFieldExpr()
		if err != nil {
			return nil, err
		}
		out = append(out, f)
		if p.is(tPunct, ",") {
			p.next()
			continue
		}
		if _, err := p.expect(tPunct, ")", "',' or ')' in "+fn+"(...)"); err != nil {
			return nil, err
		}
		return out, nil
	}
}

// Spanset expressions: '&&' and '||' bind looser than structural operators.
func (p *parser) parseSpansetExpr() (SpansetExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	lhs, err := p.parseStructural()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tOp || (t.text != "&&" && t.text != "||") {
			return lhs, nil
		}
		p.next()
		rhs, err := p.parseStructural()
		if err != nil {
			return nil, err
		}
		op := OpSpansetAnd
		if t.text == "||" {
			op = OpSpansetOr
		}
		lhs = &SpansetOp{Op: op, LHS: lhs, RHS: rhs}
	}
}

var structuralOps = map[string]SpansetOp{
	">": {Op: OpChild}, ">>": {Op: OpDescendant}, "<": {Op: OpParent}, "<<": {Op: OpAncestor}, "~": {Op: OpSibling},
	"!>": {Op: OpChild, Not: true}, "!>>": {Op: OpDescendant, Not: true}, "!<": {Op: OpParent, Not: true},
	"!<<": {Op: OpAncestor, Not: true}, "!~": {Op: OpSibling, Not: true},
	"&>": {Op: OpChild, Union: true}, "&>>": {Op: OpDescendant, Union: true}, "&<": {Op: OpParent, Union: true},
	"&<<": {Op: OpAncestor, Union: true}, "&~": {Op: OpSibling, Union: true},
}

func (p *parser) parseStructural() (SpansetExpr, error) {
	lhs, err := p.parseSpansetPrimary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		tmpl, ok := structuralOps[t.text]
		if t.kind != tOp || !ok {
			return lhs, nil
		}
		p.next()
		rhs, err := p.parseSpansetPrimary()
		if err != nil {
			return nil, err
		}
		op := tmpl
		op.LHS, op.RHS = lhs, rhs
		lhs = &op
	}
}

func (p *parser) parseSpansetPrimary() (SpansetExpr, error) {
	t := p.peek()
	if t.kind == tPunct && t.text == "(" {
		p.next()
		e, err := p.parseSpansetExpr()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tPunct, ")", "')'"); err != nil {
			return nil, err
		}
		return e, nil
	}
	if t.kind == tPunct && t.text == "{" {
		p.next()
		if p.is(tPunct, "}") {
			p.next()
			return &SpansetFilter{Pos: t.pos}, nil
		}
		e, err := p.parseFieldExpr()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tPunct, "}", "'}' or an operator"); err != nil {
			return nil, err
		}
		return &SpansetFilter{Expr: e, Pos: t.pos}, nil
	}
	return nil, p.errAt(t, "expected a spanset selector '{', found %s", t.describe())
}

// Field expressions, lowest precedence first: || && comparisons + - * / % ^ unary.
func (p *parser) parseFieldExpr() (FieldExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	return p.parseOr()
}

func (p *parser) parseOr() (FieldExpr, error) {
	lhs, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "||") {
		p.next()
		rhs, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		lhs = &BinaryExpr{Op: OpOr, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

func (p *parser) parseAnd() (FieldExpr, error) {
	lhs, err := p.parseComparison()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "&&") {
		p.next()
		rhs, err := p.parseComparison()
		if err != nil {
			return nil, err
		}
		lhs = &BinaryExpr{Op: OpAnd, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

var comparisonOps = map[string]BinOp{"=": OpEq, "!=": OpNeq, ">": OpGt, ">=": OpGte, "<": OpLt, "<=": OpLte, "=~": OpRegex, "!~": OpNotRegex}

func (p *parser) parseComparison() (FieldExpr, error) {
	lhs, err := p.parseAdditive()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	op, ok := comparisonOps[t.text]
	if t.kind != tOp || !ok {
		return lhs, nil
	}
	p.next()
	rt := p.peek()
	rhs, err := p.parseAdditive()
	if err != nil {
		return nil, err
	}
	b := &BinaryExpr{Op: op, LHS: lhs, RHS: rhs}
	if op == OpRegex || op == OpNotRegex {
		lit, ok := rhs.(Value)
		if !ok || lit.Type != TypeString {
			return nil, p.errAt(rt, "expected a string pattern after %s", t.text)
		}
		re, err := compileRegex(lit.S, p.lim)
		var le *LimitError
		if errors.As(err, &le) {
			return nil, err
		}
		if err != nil {
			return nil, p.errAt(rt, "invalid regular expression: %v", err)
		}
		b.re = re
	}
	if nt := p.peek(); nt.kind == tOp {
		if _, ok := comparisonOps[nt.text]; ok {
			return nil, p.errAt(nt, "comparisons cannot be chained; use && between them")
		}
	}
	return b, nil
}

func (p *parser) parseAdditive() (FieldExpr, error) {
	lhs, err := p.parseMultiplicative()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "+") || p.is(tOp, "-") {
		op := OpAdd
		if p.next().text == "-" {
			op = OpSub
		}
		rhs, err := p.parseMultiplicative()
		if err != nil {
			return nil, err
		}
		lhs = &BinaryExpr{Op: op, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

func (p *parser) parseMultiplicative() (FieldExpr, error) {
	lhs, err := p.parsePower()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "*") || p.is(tOp, "/") || p.is(tOp, "%") {
		var op BinOp
		switch p.next().text {
		case "*":
			op = OpMul
		case "/":
			op = OpDiv
		default:
			op = OpMod
		}
		rhs, err := p.parsePower()
		if err != nil {
			return nil, err
		}
		lhs = &BinaryExpr{Op: op, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

func (p *parser) parsePower() (FieldExpr, error) {
	lhs, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	if p.is(tOp, "^") {
		p.next()
		rhs, err := p.parsePower() // right-associative
		if err != nil {
			return nil, err
		}
		return &BinaryExpr{Op: OpPow, LHS: lhs, RHS: rhs}, nil
	}
	return lhs, nil
}

func (p *parser) parseUnary() (FieldExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	t := p.peek()
	if t.kind == tOp && (t.text == "!" || t.text == "-") {
		p.next()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if t.text == "-" {
			// Fold negative literals so `> -1` stays a literal (pushdown).
			if v, ok := x.(Value); ok {
				switch v.Type {
				case TypeInt, TypeDuration:
					v.I = -v.I
					return v, nil
				case TypeFloat:
					v.F = -v.F
					return v, nil
				}
			}
			return &UnaryExpr{Op: OpNeg, X: x}, nil
		}
		return &UnaryExpr{Op: OpNot, X: x}, nil
	}
	return p.parseOperand()
}

func (p *parser) parseOperand() (FieldExpr, error) {
	t := p.next()
	switch t.kind {
	case tPunct:
		if t.text == "(" {
			e, err := p.parseFieldExpr()
			if err != nil {
				return nil, err
			}
			if _, err := p.expect(tPunct, ")", "')'"); err != nil {
				return nil, err
			}
			return e, nil
		}
	case tString:
		return Value{Type: TypeString, S: t.str}, nil
	case tInt:
		return Value{Type: TypeInt, I: t.i}, nil
	case tFloat:
		return Value{Type: TypeFloat, F: t.f}, nil
	case tDuration:
		return Value{Type: TypeDuration, I: int64(t.d)}, nil
	case tAttr:
		if t.attr.Intrinsic == IntrinsicFindingKind {
			p.q.usesFindings = true
		}
		return t.attr, nil
	case tIdent:
		if v, ok := keywordValue(t.text); ok {
			return v, nil
		}
		if in, ok := intrinsicNames[t.text]; ok {
			return Attribute{Intrinsic: in}, nil
		}
		if strings.HasPrefix(t.text, "event:") || strings.HasPrefix(t.text, "link:") {
			return nil, p.errAt(t, "%s is not supported (events and links are not queryable)", t.text)
		}
		return nil, p.errAt(t, "unknown identifier %q: attributes need a scope (span.%s, resource.%s or .%s); intrinsics are name, status, statusMessage, duration, kind, rootName, rootServiceName, traceDuration, finding.kind", t.text, t.text, t.text, t.text)
	}
	return nil, p.errAt(t, "expected an attribute, intrinsic or literal, found %s", t.describe())
}

func keywordValue(s string) (Value, bool) {
	switch s {
	case "true":
		return boolValue(true), true
	case "false":
		return boolValue(false), true
	case "nil":
		return Value{}, true
	case "ok":
		return Value{Type: TypeStatus, I: int64(model.StatusOK)}, true
	case "error":
		return Value{Type: TypeStatus, I: int64(model.StatusError)}, true
	case "unset":
		return Value{Type: TypeStatus, I: int64(model.StatusUnset)}, true
	}
	for _, k := range []model.SpanKind{model.KindUnspecified, model.KindInternal, model.KindServer, model.KindClient, model.KindProducer, model.KindConsumer} {
		if s == k.String() {
			return Value{Type: TypeKind, I: int64(k)}, true
		}
	}
	return Value{}, false
}

// Scalar filters: `count() > 3`, `avg(duration) >= 1s`, `(sum(.x) / count()) > 2`.
func (p *parser) parseScalarFilter() (Stage, error) {
	lhs, err := p.parseScalarAdd()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	op, ok := comparisonOps[t.text]
	if t.kind != tOp || !ok || op == OpRegex || op == OpNotRegex {
		return nil, p.errAt(t, "expected a comparison (=, !=, >, >=, <, <=) after the aggregate, found %s", t.describe())
	}
	p.next()
	rhs, err := p.parseScalarAdd()
	if err != nil {
		return nil, err
	}
	if !hasAggregate(lhs) && !hasAggregate(rhs) {
		return nil, p.errAt(t, "a scalar filter needs an aggregate such as count() or avg(duration)")
	}
	return &ScalarFilter{Op: op, LHS: lhs, RHS: rhs}, nil
}

func hasAggregate(e ScalarExpr) bool {
	switch e := e.(type) {
	case *Aggregate:
		return true
	case *ScalarBinary:
		return hasAggregate(e.LHS) || hasAggregate(e.RHS)
	}
	return false
}

func (p *parser) parseScalarAdd() (ScalarExpr, error) {
	lhs, err := p.parseScalarMul()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "+") || p.is(tOp, "-") {
		op := OpAdd
		if p.next().text == "-" {
			op = OpSub
		}
		rhs, err := p.parseScalarMul()
		if err != nil {
			return nil, err
		}
		lhs = &ScalarBinary{Op: op, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

func (p *parser) parseScalarMul() (ScalarExpr, error) {
	lhs, err := p.parseScalarOperand()
	if err != nil {
		return nil, err
	}
	for p.is(tOp, "*") || p.is(tOp, "/") {
		op := OpMul
		if p.next().text == "/" {
			op = OpDiv
		}
		rhs, err := p.parseScalarOperand()
		if err != nil {
			return nil, err
		}
		lhs = &ScalarBinary{Op: op, LHS: lhs, RHS: rhs}
	}
	return lhs, nil
}

func (p *parser) parseScalarOperand() (ScalarExpr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	t := p.next()
	switch t.kind {
	case tInt:
		return Value{Type: TypeInt, I: t.i}, nil
	case tFloat:
		return Value{Type: TypeFloat, F: t.f}, nil
	case tDuration:
		return Value{Type: TypeDuration, I: int64(t.d)}, nil
	case tOp:
		if t.text == "-" {
			x, err := p.parseScalarOperand()
			if err != nil {
				return nil, err
			}
			return &ScalarBinary{Op: OpSub, LHS: Value{Type: TypeInt}, RHS: x}, nil
		}
	case tPunct:
		if t.text == "(" {
			e, err := p.parseScalarAdd()
			if err != nil {
				return nil, err
			}
			if _, err := p.expect(tPunct, ")", "')'"); err != nil {
				return nil, err
			}
			return e, nil
		}
	case tIdent:
		for k, name := range aggNames {
			if t.text != name {
				continue
			}
			if _, err := p.expect(tPunct, "(", "'(' after "+name); err != nil {
				return nil, err
			}
			a := &Aggregate{Kind: AggKind(k)}
			if a.Kind != AggCount {
				f, err := p.parseFieldExpr()
				if err != nil {
					return nil, err
				}
				a.Field = f
			}
			if _, err := p.expect(tPunct, ")", "')' closing "+name+"("); err != nil {
				return nil, err
			}
			return a, nil
		}
	}
	return nil, p.errAt(t, "expected count(), avg(), min(), max(), sum() or a number, found %s", t.describe())
}

func (p *parser) parseMetrics(f MetricsFunc) (*MetricsAgg, error) {
	name := p.next()
	m := &MetricsAgg{Func: f}
	if _, err := p.expect(tPunct, "(", "'(' after "+name.text); err != nil {
		return nil, err
	}
	switch f {
	case MetricsRate, MetricsCountOverTime:
	case MetricsCompare:
		args, err := p.parseCompareArgs()
		if err != nil {
			return nil, err
		}
		m.Compare = args
	default:
		fe, err := p.parseFieldExpr()
		if err != nil {
			return nil, err
		}
		m.Field = fe
		if f == MetricsQuantileOverTime {
			for p.is(tPunct, ",") {
				p.next()
				t := p.next()
				var q float64
				switch t.kind {
				case tFloat:
					q = t.f
				case tInt:
					q = float64(t.i)
				default:
					return nil, p.errAt(t, "expected a quantile between 0 and 1, found %s", t.describe())
				}
				if q < 0 || q > 1 {
					return nil, p.errAt(t, "quantile %v is outside [0, 1]", q)
				}
				m.Quantiles = append(m.Quantiles, q)
			}
			if len(m.Quantiles) == 0 {
				return nil, p.errAt(p.peek(), "quantile_over_time needs at least one quantile, e.g. quantile_over_time(duration, .9)")
			}
		}
	}
	if _, err := p.expect(tPunct, ")", "')' closing "+name.text+"("); err != nil {
		return nil, err
	}
	if p.peek().kind == tIdent && p.peek().text == "by" {
		p.next()
		by, err := p.parseFieldList("by")
		if err != nil {
			return nil, err
		}
		m.By = by
		if f == MetricsCompare {
			return nil, p.errAt(name, "compare() takes no by(): it already splits by every attribute")
		}
	}
	return m, nil
}

func (p *parser) parseSecondStage() error {
	t := p.next()
	if p.q.Metrics.Func == MetricsCompare {
		return p.errAt(t, "compare() cannot be followed by another stage")
	}
	if t.kind == tIdent && (t.text == "topk" || t.text == "bottomk") {
		if _, err := p.expect(tPunct, "(", "'(' after "+t.text); err != nil {
			return err
		}
		n := p.next()
		if n.kind != tInt || n.i <= 0 {
			return p.errAt(n, "expected a positive integer, found %s", n.describe())
		}
		if _, err := p.expect(tPunct, ")", "')'"); err != nil {
			return err
		}
		if t.text == "topk" {
			p.q.Metrics.TopK = int(n.i)
		} else {
			p.q.Metrics.BottomK = int(n.i)
		}
		return nil
	}
	return p.errAt(t, "expected topk(n) or bottomk(n) after a metrics function, found %s", t.describe())
}

func (p *parser) parseHints() error {
	p.next() // with
	if _, err := p.expect(tPunct, "(", "'(' after with"); err != nil {
		return err
	}
	p.q.Hints = map[string]Value{}
	for !p.is(tPunct, ")") {
		k := p.next()
		if k.kind != tIdent {
			return p.errAt(k, "expected a hint name, found %s", k.describe())
		}
		if _, err := p.expect(tOp, "=", "'=' after hint name"); err != nil {
			return err
		}
		v, err := p.parseOperand()
		if err != nil {
			return err
		}
		lit, ok := v.(Value)
		if !ok {
			return p.errAt(k, "hint %s needs a literal value", k.text)
		}
		p.q.Hints[k.text] = lit
		if p.is(tPunct, ",") {
			p.next()
			continue
		}
		if !p.is(tPunct, ")") {
			return p.errAt(p.peek(), "expected ',' or ')' in with(...), found %s", p.peek().describe())
		}
	}
	p.next()
	return nil
}

// parseCompareArgs reads compare({filter}[, topN[, start, end]]).
func (p *parser) parseCompareArgs() (*CompareArgs, error) {
	t := p.peek()
	if !p.is(tPunct, "{") {
		return nil, p.errAt(t, "compare needs a spanset filter first, e.g. compare({ status = error }), found %s", t.describe())
	}
	sel, err := p.parseSpansetPrimary()
	if err != nil {
		return nil, err
	}
	f, ok := sel.(*SpansetFilter)
	if !ok {
		return nil, p.errAt(t, "compare takes one spanset filter { … }, not a spanset expression")
	}
	args := &CompareArgs{Selection: f, TopN: 10}
	var nums []int64
	for p.is(tPunct, ",") {
		p.next()
		n := p.next()
		if n.kind != tInt || n.i < 0 {
			return nil, p.errAt(n, "expected a non-negative integer in compare(), found %s", n.describe())
		}
		nums = append(nums, n.i)
	}
	switch len(nums) {
	case 0:
	case 1, 3:
		if nums[0] < 1 || nums[0] > 1000 {
			return nil, p.errAt(t, "compare's topN must be between 1 and 1000, got %d", nums[0])
		}
		args.TopN = int(nums[0])
		if len(nums) == 3 {
			args.Start, args.End = uint64(nums[1]), uint64(nums[2])
			if args.End <= args.Start {
				return nil, p.errAt(t, "compare's end must be after its start")
			}
		}
	default:
		return nil, p.errAt(t, "compare takes a filter, then optionally topN, then optionally both start and end (unix ns); got %d numbers", len(nums))
	}
	return args, nil
}

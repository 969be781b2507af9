package traceql

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// FindingsLookup gives the analysis findings of a trace: the finding kinds
// attached to each span. Kinds of findings that name no span are returned
// under the zero SpanID and apply to the trace's root spans.
type FindingsLookup interface {
	SpanFindingKinds(ctx context.Context, trace model.TraceID) (map[model.SpanID][]string, error)
}

// FindingsFunc adapts a function to FindingsLookup.
type FindingsFunc func(ctx context.Context, trace model.TraceID) (map[model.SpanID][]string, error)

// SpanFindingKinds calls f.
func (f FindingsFunc) SpanFindingKinds(ctx context.Context, trace model.TraceID) (map[model.SpanID][]string, error) {
	return f(ctx, trace)
}

// Label is a key/value attached to a spanset (by() groups, aggregates) or
// returned with a span (select(), matched conditions).
type Label struct {
	Key   string
	Value Value
}

// Spanset is one result of a query over a trace.
type Spanset struct {
	// Spans are the matched spans, ordered by start time; they point into
	// the slice given to Eval.
	Spans []*model.Span
	// Attrs are spanset-level values: by() keys and scalar-filter results.
	Attrs []Label

	idx []int32
	tc  *traceCtx
	q   *Query
}

// SpanAttrs returns the attributes to show with the i-th span: the ones
// the query's conditions referenced and those select() asked for (name and
// duration are reported as span fields and left out, as Tempo does).
func (s *Spanset) SpanAttrs(i int) []Label {
	if s.tc == nil || i < 0 || i >= len(s.idx) {
		return nil
	}
	var out []Label
	for _, a := range s.q.outAttrs {
		v := s.tc.eval(a.attr, s.idx[i])
		if v.Type == TypeNil || (a.attr.Intrinsic != IntrinsicNone && v.Type == TypeString && v.S == "") {
			continue // an empty intrinsic (statusMessage) means unset
		}
		out = append(out, Label{Key: a.key, Value: v})
	}
	return out
}

// Value evaluates a field (an attribute, intrinsic or expression) on the
// i-th span; TypeNil when absent.
func (s *Spanset) Value(i int, f FieldExpr) Value {
	if s.tc == nil || i < 0 || i >= len(s.idx) {
		return Value{}
	}
	return s.tc.eval(f, s.idx[i])
}

type outAttr struct {
	key  string
	attr Attribute
}

// finish derives what evaluation needs once from the AST.
func (q *Query) finish() {
	seen := map[string]bool{}
	add := func(a Attribute) {
		switch a.Intrinsic {
		case IntrinsicName, IntrinsicDuration:
			return
		}
		if a.Intrinsic.traceLevel() {
			return
		}
		key := a.Name
		if a.Intrinsic != IntrinsicNone || a.Parent {
			key = a.String()
		}
		if seen[key] {
			return
		}
		seen[key] = true
		q.outAttrs = append(q.outAttrs, outAttr{key: key, attr: a})
	}
	for _, st := range q.Pipeline {
		walkStage(st, func(a Attribute) {
			if a.Intrinsic == IntrinsicFindingKind {
				q.usesFindings = true
			}
		})
		switch st := st.(type) {
		case SpansetExpr:
			walkStage(st, add)
		case *Select:
			for _, f := range st.Fields {
				walkField(f, add)
			}
		}
	}
	if q.Metrics != nil {
		for _, f := range q.Metrics.By {
			walkField(f, func(a Attribute) {
				if a.Intrinsic == IntrinsicFindingKind {
					q.usesFindings = true
				}
			})
		}
	}
}

func walkStage(s Stage, fn func(Attribute)) {
	switch s := s.(type) {
	case *SpansetFilter:
		if s.Expr != nil {
			walkField(s.Expr, fn)
		}
	case *SpansetOp:
		walkStage(s.LHS, fn)
		walkStage(s.RHS, fn)
	case *GroupBy:
		walkField(s.Field, fn)
	case *Select:
		for _, f := range s.Fields {
			walkField(f, fn)
		}
	case *ScalarFilter:
		walkScalar(s.LHS, fn)
		walkScalar(s.RHS, fn)
	}
}

func walkScalar(e ScalarExpr, fn func(Attribute)) {
	switch e := e.(type) {
	case *Aggregate:
		if e.Field != nil {
			walkField(e.Field, fn)
		}
	case *ScalarBinary:
		walkScalar(e.LHS, fn)
		walkScalar(e.RHS, fn)
	}
}

func walkField(e FieldExpr, fn func(Attribute)) {
	switch e := e.(type) {
	case *BinaryExpr:
		walkField(e.LHS, fn)
		walkField(e.RHS, fn)
	case *UnaryExpr:
		walkField(e.X, fn)
	case Attribute:
		fn(e)
	}
}

// UsesFindings reports whether the query needs a FindingsLookup.
func (q *Query) UsesFindings() bool { return q.usesFindings }

// IsMetrics reports whether the query ends in a metrics function.
func (q *Query) IsMetrics() bool { return q.Metrics != nil }

// Eval runs the spanset part of the query (everything but a metrics stage)
// over the spans of one trace and returns the matching spansets; none when
// the trace does not match. findings may be nil when !q.UsesFindings().
func (q *Query) Eval(ctx context.Context, spans []model.Span, findings FindingsLookup) ([]Spanset, error) {
	if len(spans) == 0 {
		return nil, nil
	}
	tc := newTraceCtx(spans)
	if q.usesFindings {
		if findings == nil {
			return nil, fmt.Errorf("query uses finding.kind but no findings are available")
		}
		m, err := findings.SpanFindingKinds(ctx, spans[0].TraceID)
		if err != nil {
			return nil, fmt.Errorf("finding kinds of trace %s: %w", spans[0].TraceID, err)
		}
		tc.findings = m
	}
	all := make([]int32, len(spans))
	for i := range all {
		all[i] = int32(i)
	}
	first := q.Pipeline[0].(SpansetExpr)
	matched := tc.evalSpanset(first, all)
	if len(matched) == 0 {
		return nil, nil
	}
	sets := []workingSet{{idx: matched}}
	for _, st := range q.Pipeline[1:] {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sets = tc.applyStage(st, sets)
		if len(sets) == 0 {
			return nil, nil
		}
	}
	out := make([]Spanset, 0, len(sets))
	for _, ws := range sets {
		idx := append([]int32(nil), ws.idx...)
		sort.SliceStable(idx, func(a, b int) bool {
			return spans[idx[a]].StartUnixNano < spans[idx[b]].StartUnixNano
		})
		ss := Spanset{Attrs: ws.attrs, idx: idx, tc: tc, q: q, Spans: make([]*model.Span, len(idx))}
		for i, j := range idx {
			ss.Spans[i] = &spans[j]
		}
		out = append(out, ss)
	}
	return out, nil
}

type workingSet struct {
	idx   []int32
	attrs []Label
}

func (tc *traceCtx) applyStage(st Stage, sets []workingSet) []workingSet {
	switch st := st.(type) {
	case SpansetExpr:
		out := sets[:0]
		for _, ws := range sets {
			ws.idx = tc.evalSpanset(st, ws.idx)
			if len(ws.idx) > 0 {
				out = append(out, ws)
			}
		}
		return out
	case *ScalarFilter:
		out := sets[:0]
		for _, ws := range sets {
			l := tc.evalScalar(st.LHS, ws.idx)
			r := tc.evalScalar(st.RHS, ws.idx)
			if compare(st.Op, l, r, nil) {
				if a, ok := st.LHS.(*Aggregate); ok {
					ws.attrs = append(ws.attrs, Label{Key: a.String(), Value: l})
				}
				out = append(out, ws)
			}
		}
		return out
	case *GroupBy:
		var out []workingSet
		key := "by(" + st.Field.String() + ")"
		for _, ws := range sets {
			groups := map[string]int{}
			var gs []workingSet
			for _, i := range ws.idx {
				v := tc.eval(st.Field, i)
				if v.Type == TypeNil {
					continue
				}
				k := strconv.Itoa(int(v.Type)) + "\x00" + v.String()
				g, ok := groups[k]
				if !ok {
					g = len(gs)
					groups[k] = g
					attrs := append(append([]Label(nil), ws.attrs...), Label{Key: key, Value: v})
					gs = append(gs, workingSet{attrs: attrs})
				}
				gs[g].idx = append(gs[g].idx, i)
			}
			out = append(out, gs...)
		}
		return out
	case *Coalesce:
		if len(sets) <= 1 {
			return sets
		}
		var all []int32
		for _, ws := range sets {
			all = append(all, ws.idx...)
		}
		return []workingSet{{idx: uniqueSorted(all)}}
	}
	// Select only shapes the output.
	return sets
}

func (a *Aggregate) String() string {
	if a.Field == nil {
		return aggNames[a.Kind] + "()"
	}
	return aggNames[a.Kind] + "(" + a.Field.String() + ")"
}

func (tc *traceCtx) evalScalar(e ScalarExpr, idx []int32) Value {
	switch e := e.(type) {
	case Value:
		return e
	case *ScalarBinary:
		return arith(e.Op, tc.evalScalar(e.LHS, idx), tc.evalScalar(e.RHS, idx))
	case *Aggregate:
		if e.Kind == AggCount {
			return Value{Type: TypeInt, I: int64(len(idx))}
		}
		var sum, lo, hi float64
		n := 0
		typ := TypeFloat
		for _, i := range idx {
			v := tc.eval(e.Field, i)
			f, ok := v.number()
			if !ok {
				continue
			}
			if v.Type == TypeDuration {
				typ = TypeDuration
			}
			if n == 0 || f < lo {
				lo = f
			}
			if n == 0 || f > hi {
				hi = f
			}
			sum += f
			n++
		}
		if n == 0 {
			return Value{}
		}
		var r float64
		switch e.Kind {
		case AggAvg:
			r = sum / float64(n)
		case AggMin:
			r = lo
		case AggMax:
			r = hi
		case AggSum:
			r = sum
		}
		if typ == TypeDuration {
			return Value{Type: TypeDuration, I: int64(r)}
		}
		return Value{Type: TypeFloat, F: r}
	}
	return Value{}
}

// traceCtx is one trace prepared for evaluation: parent/child relations
// and trace-level intrinsics computed once.
type traceCtx struct {
	spans    []model.Span
	parent   []int32 // -1: root or parent not in the trace
	children [][]int32

	rootName, rootService string
	traceDuration         int64

	nsLeft, nsRight []int32 // nested-set numbers, computed on first use

	findings map[model.SpanID][]string
}

func newTraceCtx(spans []model.Span) *traceCtx {
	n := len(spans)
	tc := &traceCtx{spans: spans, parent: make([]int32, n), children: make([][]int32, n)}
	byID := make(map[model.SpanID]int32, n)
	for i := range spans {
		byID[spans[i].SpanID] = int32(i)
	}
	sum := model.Summarize(spans)
	tc.rootName, tc.rootService = sum.RootName, sum.RootService
	tc.traceDuration = int64(sum.DurationNano())
	for i := range spans {
		tc.parent[i] = -1
		if spans[i].ParentSpanID.IsZero() {
			continue
		}
		if p, ok := byID[spans[i].ParentSpanID]; ok && p != int32(i) {
			tc.parent[i] = p
		}
	}
	// A corrupt trace can contain a parent cycle; cut it so ancestor walks
	// terminate.
	for i := range spans {
		steps := 0
		for p := tc.parent[i]; p >= 0; p = tc.parent[p] {
			steps++
			if steps > n {
				tc.parent[i] = -1
				break
			}
		}
	}
	for i, p := range tc.parent {
		if p >= 0 {
			tc.children[p] = append(tc.children[p], int32(i))
		}
	}
	return tc
}

func (tc *traceCtx) nestedSet() {
	if tc.nsLeft != nil {
		return
	}
	n := len(tc.spans)
	tc.nsLeft, tc.nsRight = make([]int32, n), make([]int32, n)
	counter := int32(1)
	type frame struct {
		i    int32
		next int
	}
	byStart := func(ids []int32) {
		sort.SliceStable(ids, func(a, b int) bool { return tc.spans[ids[a]].StartUnixNano < tc.spans[ids[b]].StartUnixNano })
	}
	var roots []int32
	for i := range tc.spans {
		if tc.parent[i] < 0 {
			roots = append(roots, int32(i))
		}
		byStart(tc.children[i])
	}
	byStart(roots)
	for _, r := range roots {
		stack := []frame{{i: r}}
		tc.nsLeft[r] = counter
		counter++
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(tc.children[top.i]) {
				c := tc.children[top.i][top.next]
				top.next++
				tc.nsLeft[c] = counter
				counter++
				stack = append(stack, frame{i: c})
				continue
			}
			tc.nsRight[top.i] = counter
			counter++
			stack = stack[:len(stack)-1]
		}
	}
}

func (tc *traceCtx) findingKinds(i int32) []string {
	if tc.findings == nil {
		return nil
	}
	s := &tc.spans[i]
	kinds := tc.findings[s.SpanID]
	if s.ParentSpanID.IsZero() {
		if extra := tc.findings[model.SpanID{}]; len(extra) > 0 {
			kinds = append(append([]string(nil), kinds...), extra...)
		}
	}
	return kinds
}

// evalSpanset returns the candidates (a sorted index list) that e selects.
func (tc *traceCtx) evalSpanset(e SpansetExpr, cand []int32) []int32 {
	switch e := e.(type) {
	case *SpansetFilter:
		if e.Expr == nil {
			return cand
		}
		var out []int32
		for _, i := range cand {
			if v := tc.eval(e.Expr, i); v.Type == TypeBool && v.B {
				out = append(out, i)
			}
		}
		return out
	case *SpansetOp:
		l := tc.evalSpanset(e.LHS, cand)
		r := tc.evalSpanset(e.RHS, cand)
		switch e.Op {
		case OpSpansetAnd:
			if len(l) == 0 || len(r) == 0 {
				return nil
			}
			return uniqueSorted(append(append([]int32(nil), l...), r...))
		case OpSpansetOr:
			return uniqueSorted(append(append([]int32(nil), l...), r...))
		}
		return tc.structural(e, l, r)
	}
	return nil
}

// structural relates two spansets. It returns the right-hand spans that
// stand in the relation to some left-hand span (Not: that do not; Union:
// plus the left-hand spans that take part).
func (tc *traceCtx) structural(e *SpansetOp, l, r []int32) []int32 {
	n := len(tc.spans)
	inL := make([]bool, n)
	for _, i := range l {
		inL[i] = true
	}
	inR := make([]bool, n)
	for _, i := range r {
		inR[i] = true
	}
	matchR := make([]bool, n)
	matchL := make([]bool, n)
	switch e.Op {
	case OpChild: // r's parent is in l
		for _, b := range r {
			if p := tc.parent[b]; p >= 0 && inL[p] {
				matchR[b], matchL[p] = true, true
			}
		}
	case OpDescendant: // r has an ancestor in l
		for _, b := range r {
			for p := tc.parent[b]; p >= 0; p = tc.parent[p] {
				if inL[p] {
					matchR[b], matchL[p] = true, true
					if !e.Union {
						break
					}
				}
			}
		}
	case OpParent: // r is the parent of a span in l
		for _, a := range l {
			if p := tc.parent[a]; p >= 0 && inR[p] {
				matchR[p], matchL[a] = true, true
			}
		}
	case OpAncestor: // r is an ancestor of a span in l
		for _, a := range l {
			for p := tc.parent[a]; p >= 0; p = tc.parent[p] {
				if inR[p] {
					matchR[p], matchL[a] = true, true
				}
			}
		}
	case OpSibling: // r shares a parent with a different span in l
		countL := map[int32]int{}
		for _, a := range l {
			if p := tc.parent[a]; p >= 0 {
				countL[p]++
			}
		}
		countR := map[int32]int{}
		for _, b := range r {
			if p := tc.parent[b]; p >= 0 {
				countR[p]++
			}
		}
		for _, b := range r {
			p := tc.parent[b]
			if p < 0 {
				continue
			}
			c := countL[p]
			if inL[b] {
				c--
			}
			if c > 0 {
				matchR[b] = true
			}
		}
		if e.Union {
			for _, a := range l {
				p := tc.parent[a]
				if p < 0 {
					continue
				}
				c := countR[p]
				if inR[a] {
					c--
				}
				if c > 0 {
					matchL[a] = true
				}
			}
		}
	}
	var out []int32
	for _, b := range r {
		if matchR[b] != e.Not {
			out = append(out, b)
		}
	}
	if e.Union && !e.Not {
		for _, a := range l {
			if matchL[a] {
				out = append(out, a)
			}
		}
		out = uniqueSorted(out)
	}
	return out
}

func uniqueSorted(s []int32) []int32 {
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// eval computes a field expression for span i.
func (tc *traceCtx) eval(e FieldExpr, i int32) Value {
	switch e := e.(type) {
	case Value:
		return e
	case Attribute:
		return tc.attr(e, i)
	case *UnaryExpr:
		x := tc.eval(e.X, i)
		if e.Op == OpNot {
			if x.Type != TypeBool {
				return Value{}
			}
			return boolValue(!x.B)
		}
		return arith(OpSub, Value{Type: x.Type}, x)
	case *BinaryExpr:
		switch e.Op {
		case OpAnd:
			l := tc.eval(e.LHS, i)
			if l.Type != TypeBool || !l.B {
				return boolValue(false)
			}
			r := tc.eval(e.RHS, i)
			return boolValue(r.Type == TypeBool && r.B)
		case OpOr:
			if l := tc.eval(e.LHS, i); l.Type == TypeBool && l.B {
				return boolValue(true)
			}
			r := tc.eval(e.RHS, i)
			return boolValue(r.Type == TypeBool && r.B)
		}
		if e.Op.isComparison() {
			if a, ok := e.LHS.(Attribute); ok && a.Intrinsic == IntrinsicFindingKind {
				return boolValue(tc.compareMulti(e.Op, tc.findingKinds(tc.target(a, i)), tc.eval(e.RHS, i), e.re))
			}
			if a, ok := e.RHS.(Attribute); ok && a.Intrinsic == IntrinsicFindingKind && e.re == nil {
				return boolValue(tc.compareMulti(flip(e.Op), tc.findingKinds(tc.target(a, i)), tc.eval(e.LHS, i), nil))
			}
			return boolValue(compare(e.Op, tc.eval(e.LHS, i), tc.eval(e.RHS, i), e.re))
		}
		return arith(e.Op, tc.eval(e.LHS, i), tc.eval(e.RHS, i))
	}
	return Value{}
}

// compareMulti compares a multi-valued field: = and =~ hold when any value
// matches, != and !~ when none does (Tempo's array semantics).
func (tc *traceCtx) compareMulti(op BinOp, vals []string, want Value, re *regexp.Regexp) bool {
	if want.Type == TypeNil {
		switch op {
		case OpEq:
			return len(vals) == 0
		case OpNeq:
			return len(vals) > 0
		}
		return false
	}
	if len(vals) == 0 {
		return false
	}
	neg := op == OpNeq || op == OpNotRegex
	pos := op
	switch op {
	case OpNeq:
		pos = OpEq
	case OpNotRegex:
		pos = OpRegex
	}
	for _, v := range vals {
		if compare(pos, Value{Type: TypeString, S: v}, want, re) {
			return !neg
		}
	}
	return neg
}

func flip(op BinOp) BinOp {
	switch op {
	case OpGt:
		return OpLt
	case OpGte:
		return OpLte
	case OpLt:
		return OpGt
	case OpLte:
		return OpGte
	}
	return op
}

// target resolves parent.x to the parent's index (-1 when there is none).
func (tc *traceCtx) target(a Attribute, i int32) int32 {
	if a.Parent {
		return tc.parent[i]
	}
	return i
}

func (tc *traceCtx) attr(a Attribute, i int32) Value {
	i = tc.target(a, i)
	if i < 0 {
		return Value{}
	}
	s := &tc.spans[i]
	switch a.Intrinsic {
	case IntrinsicNone:
	case IntrinsicName:
		return Value{Type: TypeString, S: s.Name}
	case IntrinsicStatus:
		return Value{Type: TypeStatus, I: int64(s.StatusCode)}
	case IntrinsicStatusMessage:
		return Value{Type: TypeString, S: s.StatusMessage}
	case IntrinsicDuration:
		return Value{Type: TypeDuration, I: int64(s.DurationNano())}
	case IntrinsicKind:
		return Value{Type: TypeKind, I: int64(s.Kind)}
	case IntrinsicChildCount:
		return Value{Type: TypeInt, I: int64(len(tc.children[i]))}
	case IntrinsicRootName:
		return Value{Type: TypeString, S: tc.rootName}
	case IntrinsicRootServiceName:
		return Value{Type: TypeString, S: tc.rootService}
	case IntrinsicTraceDuration:
		return Value{Type: TypeDuration, I: tc.traceDuration}
	case IntrinsicNestedSetLeft:
		tc.nestedSet()
		return Value{Type: TypeInt, I: int64(tc.nsLeft[i])}
	case IntrinsicNestedSetRight:
		tc.nestedSet()
		return Value{Type: TypeInt, I: int64(tc.nsRight[i])}
	case IntrinsicNestedSetParent:
		// Roots report -1, which Grafana's Traces Drilldown uses to select
		// root spans ({nestedSetParent < 0}).
		if s.ParentSpanID.IsZero() {
			return Value{Type: TypeInt, I: -1}
		}
		p := tc.parent[i]
		if p < 0 {
			return Value{Type: TypeInt, I: 0}
		}
		tc.nestedSet()
		return Value{Type: TypeInt, I: int64(tc.nsLeft[p])}
	case IntrinsicTraceID:
		return Value{Type: TypeString, S: s.TraceID.String()}
	case IntrinsicSpanID:
		return Value{Type: TypeString, S: s.SpanID.String()}
	case IntrinsicParentID:
		if s.ParentSpanID.IsZero() {
			return Value{}
		}
		return Value{Type: TypeString, S: s.ParentSpanID.String()}
	case IntrinsicScopeName:
		return Value{Type: TypeString, S: s.ScopeName}
	case IntrinsicScopeVersion:
		return Value{Type: TypeString, S: s.ScopeVersion}
	case IntrinsicFindingKind:
		kinds := tc.findingKinds(i)
		if len(kinds) == 0 {
			return Value{}
		}
		return Value{Type: TypeString, S: strings.Join(kinds, ",")}
	}
	var v model.Value
	var ok bool
	switch a.Scope {
	case ScopeSpan:
		v, ok = s.Attrs.Get(a.Name)
	case ScopeResource:
		v, ok = s.Resource.Get(a.Name)
	default:
		v, ok = s.Attr(a.Name)
	}
	if !ok {
		if a.Scope != ScopeSpan && a.Name == "service.name" && s.Service != "" {
			return Value{Type: TypeString, S: s.Service}
		}
		return Value{}
	}
	return fromModel(v)
}

// compare applies a comparison. Mismatched types compare false, and so
// does anything compared with a missing attribute, except `= nil` and
// `!= nil`, which test presence.
func compare(op BinOp, l, r Value, re *regexp.Regexp) bool {
	if op == OpRegex || op == OpNotRegex {
		if l.Type == TypeNil {
			return false
		}
		if re == nil {
			if r.Type != TypeString {
				return false
			}
			var err error
			re, err = regexp.Compile("^(?:" + r.S + ")$")
			if err != nil {
				return false
			}
		}
		return re.MatchString(l.Text()) == (op == OpRegex)
	}
	if r.Type == TypeNil {
		// `x = nil` / `x != nil` test presence.
		switch op {
		case OpEq:
			return l.Type == TypeNil
		case OpNeq:
			return l.Type != TypeNil
		}
		return false
	}
	if l.Type == TypeNil {
		return false
	}
	var c int
	switch {
	case l.Type == TypeInt && r.Type == TypeInt, l.Type == TypeDuration && r.Type == TypeDuration:
		c = cmpInt(l.I, r.I)
	case (l.Type == TypeInt || l.Type == TypeFloat) && (r.Type == TypeInt || r.Type == TypeFloat):
		a, _ := l.number()
		b, _ := r.number()
		if math.IsNaN(a) || math.IsNaN(b) {
			return op == OpNeq
		}
		c = cmpFloat(a, b)
	case l.Type == TypeString && r.Type == TypeString:
		c = strings.Compare(l.S, r.S)
	case l.Type == r.Type && (l.Type == TypeStatus || l.Type == TypeKind):
		if op != OpEq && op != OpNeq {
			return false
		}
		c = cmpInt(l.I, r.I)
	case (l.Type == TypeStatus || l.Type == TypeKind) && r.Type == TypeString,
		l.Type == TypeString && (r.Type == TypeStatus || r.Type == TypeKind):
		// Lenient: `status = "error"` means what it says.
		if op != OpEq && op != OpNeq {
			return false
		}
		c = strings.Compare(strings.ToLower(l.Text()), strings.ToLower(r.Text()))
	case l.Type == TypeBool && r.Type == TypeBool:
		if op != OpEq && op != OpNeq {
			return false
		}
		if l.B != r.B {
			c = 1
		}
	default:
		return false
	}
	switch op {
	case OpEq:
		return c == 0
	case OpNeq:
		return c != 0
	case OpGt:
		return c > 0
	case OpGte:
		return c >= 0
	case OpLt:
		return c < 0
	case OpLte:
		return c <= 0
	}
	return false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// arith applies + - * / % ^ to numbers. Durations stay durations; an
// int/int division that is not exact becomes a float.
func arith(op BinOp, l, r Value) Value {
	a, ok1 := l.number()
	b, ok2 := r.number()
	if !ok1 || !ok2 {
		return Value{}
	}
	typ := TypeFloat
	switch {
	case l.Type == TypeDuration || r.Type == TypeDuration:
		typ = TypeDuration
	case l.Type == TypeInt && r.Type == TypeInt:
		typ = TypeInt
	}
	var res float64
	switch op {
	case OpAdd:
		res = a + b
	case OpSub:
		res = a - b
	case OpMul:
		res = a * b
	case OpDiv:
		if b == 0 {
			return Value{}
		}
		res = a / b
		if typ == TypeInt && math.Mod(a, b) != 0 {
			typ = TypeFloat
		}
	case OpMod:
		if b == 0 {
			return Value{}
		}
		res = math.Mod(a, b)
	case OpPow:
		res = math.Pow(a, b)
	default:
		return Value{}
	}
	if typ == TypeFloat || math.IsNaN(res) || math.IsInf(res, 0) || math.Abs(res) > math.MaxInt64/2 {
		return Value{Type: TypeFloat, F: res}
	}
	return Value{Type: typ, I: int64(res)}
}

// Package traceql parses and evaluates TraceQL, Grafana Tempo's trace query
// language, over tracedx's span model.
//
// The parser is hand-written (recursive descent) so errors carry a position
// and what was expected. Evaluation runs over one trace at a time: the
// store pre-filters with the store.Query that Pushdown derives from the AST
// (conditions every match implies), then Eval decides exactly.
//
// Beyond Tempo, the intrinsic `finding.kind` matches spans that tracedx's
// analysis flagged (e.g. `{ finding.kind = "n_plus_one_query" }`); the
// caller supplies the findings through FindingsLookup.
package traceql

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

// Query is a parsed TraceQL query.
type Query struct {
	// Source is the text the query was parsed from.
	Source string
	// Pipeline is the spanset part; its first stage is a SpansetExpr.
	Pipeline []Stage
	// Metrics is set for metrics queries (`... | rate() by(...)`).
	Metrics *MetricsAgg
	// Hints are `with(k=v, ...)`; parsed and otherwise ignored.
	Hints map[string]Value

	usesFindings bool
	outAttrs     []outAttr
}

// Stage is one pipeline stage: a SpansetExpr, *ScalarFilter, *GroupBy,
// *Select or *Coalesce.
type Stage interface{ stage() }

// SpansetExpr is a *SpansetFilter or a *SpansetOp.
type SpansetExpr interface {
	Stage
	spansetExpr()
}

// SpansetFilter is `{ expr }`; Expr is nil for `{}`.
type SpansetFilter struct {
	Expr FieldExpr
	Pos  int
}

// SpansetOpKind is a spanset operator.
type SpansetOpKind uint8

// Spanset operators. Structural ones return spans of the right-hand side
// (Union variants return both sides, Not variants invert the relation).
const (
	OpSpansetAnd SpansetOpKind = iota
	OpSpansetOr
	OpChild      // >
	OpDescendant // >>
	OpParent     // <
	OpAncestor   // <<
	OpSibling    // ~
)

// SpansetOp combines two spanset expressions.
type SpansetOp struct {
	Op       SpansetOpKind
	Not      bool // !> !>> !< !<< !~
	Union    bool // &> &>> &< &<< &~
	LHS, RHS SpansetExpr
}

// ScalarFilter is `| count() > 3`, `| avg(duration) > 1s`.
type ScalarFilter struct {
	Op       BinOp
	LHS, RHS ScalarExpr
}

// ScalarExpr is *Aggregate, *ScalarBinary or Value (a literal).
type ScalarExpr interface{ scalarExpr() }

// AggKind is an aggregate function.
type AggKind uint8

// Aggregates of the scalar filter stage.
const (
	AggCount AggKind = iota
	AggAvg
	AggMin
	AggMax
	AggSum
)

var aggNames = [...]string{"count", "avg", "min", "max", "sum"}

// Aggregate is count() or avg/min/max/sum(field).
type Aggregate struct {
	Kind  AggKind
	Field FieldExpr // nil for count()
}

// ScalarBinary is arithmetic between scalar expressions.
type ScalarBinary struct {
	Op       BinOp
	LHS, RHS ScalarExpr
}

// GroupBy is `| by(field)`.
type GroupBy struct{ Field FieldExpr }

// Select is `| select(a, b)`: extra attributes returned with each span.
type Select struct{ Fields []FieldExpr }

// Coalesce is `| coalesce()`: merges the spansets of a trace.
type Coalesce struct{}

// MetricsFunc is a metrics aggregation.
type MetricsFunc uint8

// Metrics functions.
const (
	MetricsRate MetricsFunc = iota
	MetricsCountOverTime
	MetricsMinOverTime
	MetricsMaxOverTime
	MetricsAvgOverTime
	MetricsSumOverTime
	MetricsQuantileOverTime
	MetricsHistogramOverTime
	// MetricsCompare splits the spans into a selection and a baseline and
	// counts every attribute value in each (Tempo's compare()).
	MetricsCompare
)

var metricsNames = map[string]MetricsFunc{
	"rate": MetricsRate, "count_over_time": MetricsCountOverTime,
	"min_over_time": MetricsMinOverTime, "max_over_time": MetricsMaxOverTime,
	"avg_over_time": MetricsAvgOverTime, "sum_over_time": MetricsSumOverTime,
	"quantile_over_time": MetricsQuantileOverTime, "histogram_over_time": MetricsHistogramOverTime,
	"compare": MetricsCompare,
}

// String returns the function's TraceQL name.
func (f MetricsFunc) String() string {
	for k, v := range metricsNames {
		if v == f {
			return k
		}
	}
	return "?"
}

// MetricsAgg is the metrics stage of a query.
type MetricsAgg struct {
	Func      MetricsFunc
	Field     FieldExpr // the *_over_time argument
	Quantiles []float64
	By        []FieldExpr
	// TopK/BottomK keep the N series with the highest/lowest value
	// (second-stage `| topk(n)`); 0 when absent.
	TopK, BottomK int
	// Compare is compare()'s arguments.
	Compare *CompareArgs
}

// CompareArgs are compare({selection}, topN, start, end).
type CompareArgs struct {
	// Selection decides which spans are the selection; the rest are the
	// baseline.
	Selection *SpansetFilter
	// TopN values are kept per attribute and group (default 10).
	TopN int
	// Start and End (unix ns, both or neither) also restrict the
	// selection to spans starting in (Start, End].
	Start, End uint64
}

func (*SpansetFilter) stage()       {}
func (*SpansetOp) stage()           {}
func (*ScalarFilter) stage()        {}
func (*GroupBy) stage()             {}
func (*Select) stage()              {}
func (*Coalesce) stage()            {}
func (*SpansetFilter) spansetExpr() {}
func (*SpansetOp) spansetExpr()     {}
func (*Aggregate) scalarExpr()      {}
func (*ScalarBinary) scalarExpr()   {}
func (Value) scalarExpr()           {}

// FieldExpr is an expression over one span: *BinaryExpr, *UnaryExpr,
// Attribute or Value.
type FieldExpr interface {
	fieldExpr()
	String() string
}

// BinOp is a binary operator inside a selector or scalar filter.
type BinOp uint8

// Binary operators.
const (
	OpAnd BinOp = iota
	OpOr
	OpEq
	OpNeq
	OpGt
	OpGte
	OpLt
	OpLte
	OpRegex
	OpNotRegex
	OpAdd
	OpSub
	OpMul
	OpDiv
	OpMod
	OpPow
)

var binOpText = [...]string{"&&", "||", "=", "!=", ">", ">=", "<", "<=", "=~", "!~", "+", "-", "*", "/", "%", "^"}

func (o BinOp) String() string { return binOpText[o] }

func (o BinOp) isComparison() bool { return o >= OpEq && o <= OpNotRegex }

// BinaryExpr is `lhs op rhs`.
type BinaryExpr struct {
	Op       BinOp
	LHS, RHS FieldExpr
	re       *regexp.Regexp // compiled when RHS is a literal pattern
}

// UnaryOp is ! or unary minus.
type UnaryOp uint8

// Unary operators.
const (
	OpNot UnaryOp = iota
	OpNeg
)

// UnaryExpr is `!x` or `-x`.
type UnaryExpr struct {
	Op UnaryOp
	X  FieldExpr
}

func (*BinaryExpr) fieldExpr() {}
func (*UnaryExpr) fieldExpr()  {}
func (Attribute) fieldExpr()   {}
func (Value) fieldExpr()       {}

func (b *BinaryExpr) String() string {
	return "(" + b.LHS.String() + " " + b.Op.String() + " " + b.RHS.String() + ")"
}

func (u *UnaryExpr) String() string {
	if u.Op == OpNot {
		return "!" + u.X.String()
	}
	return "-" + u.X.String()
}

// Scope of an attribute reference.
type Scope uint8

// Attribute scopes.
const (
	ScopeNone     Scope = iota // `.foo`: span first, then resource
	ScopeSpan                  // span.foo
	ScopeResource              // resource.foo
)

// Intrinsic is a built-in span or trace field.
type Intrinsic uint8

// Intrinsics. IntrinsicNone marks a plain attribute.
const (
	IntrinsicNone Intrinsic = iota
	IntrinsicName
	IntrinsicStatus
	IntrinsicStatusMessage
	IntrinsicDuration
	IntrinsicKind
	IntrinsicChildCount
	IntrinsicRootName
	IntrinsicRootServiceName
	IntrinsicTraceDuration
	IntrinsicNestedSetLeft
	IntrinsicNestedSetRight
	IntrinsicNestedSetParent
	IntrinsicTraceID
	IntrinsicSpanID
	IntrinsicParentID
	IntrinsicScopeName
	IntrinsicScopeVersion
	IntrinsicFindingKind
)

// intrinsicNames maps every accepted spelling to its intrinsic; the first
// spelling of each is the canonical one used in output.
var intrinsicNames = map[string]Intrinsic{
	"name": IntrinsicName, "span:name": IntrinsicName,
	"status": IntrinsicStatus, "span:status": IntrinsicStatus,
	"statusMessage": IntrinsicStatusMessage, "span:statusMessage": IntrinsicStatusMessage,
	"duration": IntrinsicDuration, "span:duration": IntrinsicDuration,
	"kind": IntrinsicKind, "span:kind": IntrinsicKind,
	"childCount": IntrinsicChildCount, "span:childCount": IntrinsicChildCount,
	"rootName": IntrinsicRootName, "trace:rootName": IntrinsicRootName,
	"rootServiceName": IntrinsicRootServiceName, "rootService": IntrinsicRootServiceName, "trace:rootService": IntrinsicRootServiceName,
	"traceDuration": IntrinsicTraceDuration, "trace:duration": IntrinsicTraceDuration,
	"nestedSetLeft": IntrinsicNestedSetLeft, "nestedSetRight": IntrinsicNestedSetRight, "nestedSetParent": IntrinsicNestedSetParent,
	"trace:id": IntrinsicTraceID, "traceID": IntrinsicTraceID,
	"span:id": IntrinsicSpanID, "spanID": IntrinsicSpanID,
	"span:parentID": IntrinsicParentID, "parentID": IntrinsicParentID,
	"instrumentation:name": IntrinsicScopeName, "instrumentation:version": IntrinsicScopeVersion,
}

var intrinsicCanonical = map[Intrinsic]string{
	IntrinsicName: "name", IntrinsicStatus: "status", IntrinsicStatusMessage: "statusMessage",
	IntrinsicDuration: "duration", IntrinsicKind: "kind", IntrinsicChildCount: "childCount",
	IntrinsicRootName: "rootName", IntrinsicRootServiceName: "rootServiceName",
	IntrinsicTraceDuration: "traceDuration", IntrinsicNestedSetLeft: "nestedSetLeft",
	IntrinsicNestedSetRight: "nestedSetRight", IntrinsicNestedSetParent: "nestedSetParent",
	IntrinsicTraceID: "trace:id", IntrinsicSpanID: "span:id", IntrinsicParentID: "span:parentID",
	IntrinsicScopeName: "instrumentation:name", IntrinsicScopeVersion: "instrumentation:version",
	IntrinsicFindingKind: "finding.kind",
}

// IntrinsicTags lists the intrinsic names a client may offer in a query
// editor (Tempo's "intrinsic" tag scope).
func IntrinsicTags() []string {
	return []string{
		"duration", "finding.kind", "kind", "name", "rootName", "rootServiceName",
		"span:duration", "span:kind", "span:name", "span:status", "span:statusMessage",
		"status", "statusMessage", "trace:duration", "trace:rootName", "trace:rootService", "traceDuration",
	}
}

// traceLevel reports whether the intrinsic is a property of the whole trace.
func (i Intrinsic) traceLevel() bool {
	return i == IntrinsicRootName || i == IntrinsicRootServiceName || i == IntrinsicTraceDuration || i == IntrinsicTraceID
}

// Attribute references an attribute or an intrinsic.
type Attribute struct {
	Scope     Scope
	Parent    bool // parent.x: evaluated on the span's parent
	Name      string
	Intrinsic Intrinsic
}

// String prints the attribute as TraceQL.
func (a Attribute) String() string {
	if a.Intrinsic != IntrinsicNone {
		if a.Parent {
			return "parent." + intrinsicCanonical[a.Intrinsic]
		}
		return intrinsicCanonical[a.Intrinsic]
	}
	var b strings.Builder
	if a.Parent {
		b.WriteString("parent")
	}
	switch a.Scope {
	case ScopeSpan:
		b.WriteString(prefixDot(a.Parent, "span"))
	case ScopeResource:
		b.WriteString(prefixDot(a.Parent, "resource"))
	}
	b.WriteByte('.')
	if strings.ContainsAny(a.Name, " \t\n"+attrTerminators+"\"") {
		b.WriteString(strconv.Quote(a.Name))
	} else {
		b.WriteString(a.Name)
	}
	return b.String()
}

func prefixDot(parent bool, s string) string {
	if parent {
		return "." + s
	}
	return s
}

// ValueType is the type of a TraceQL value.
type ValueType uint8

// Value types.
const (
	TypeNil ValueType = iota
	TypeBool
	TypeInt
	TypeFloat
	TypeString
	TypeDuration
	TypeStatus
	TypeKind
)

var typeNames = [...]string{"nil", "bool", "int", "float", "string", "duration", "status", "kind"}

// String returns the type's name as Tempo's tag-value API spells it.
func (t ValueType) String() string { return typeNames[t] }

// Value is a TraceQL literal or a value computed during evaluation.
type Value struct {
	Type ValueType
	S    string
	I    int64 // ints, durations (ns), status and kind codes
	F    float64
	B    bool
}

// String prints the value as a TraceQL literal.
func (v Value) String() string {
	switch v.Type {
	case TypeBool:
		return strconv.FormatBool(v.B)
	case TypeInt:
		return strconv.FormatInt(v.I, 10)
	case TypeFloat:
		return strconv.FormatFloat(v.F, 'g', -1, 64)
	case TypeString:
		return strconv.Quote(v.S)
	case TypeDuration:
		return time.Duration(v.I).String()
	case TypeStatus:
		return model.StatusCode(v.I).String()
	case TypeKind:
		return model.SpanKind(v.I).String()
	}
	return "nil"
}

// Text renders the value without quotes (for labels and attribute output).
func (v Value) Text() string {
	if v.Type == TypeString {
		return v.S
	}
	return v.String()
}

// number returns the numeric value of ints, floats and durations (ns).
func (v Value) number() (float64, bool) {
	switch v.Type {
	case TypeInt, TypeDuration:
		return float64(v.I), true
	case TypeFloat:
		return v.F, true
	}
	return 0, false
}

func boolValue(b bool) Value { return Value{Type: TypeBool, B: b} }

// fromModel converts an attribute value.
func fromModel(v model.Value) Value {
	switch v.Type {
	case model.TypeString, model.TypeArray, model.TypeMap:
		return Value{Type: TypeString, S: v.Str}
	case model.TypeInt:
		return Value{Type: TypeInt, I: v.Int}
	case model.TypeDouble:
		return Value{Type: TypeFloat, F: v.Float}
	case model.TypeBool:
		return Value{Type: TypeBool, B: v.Bool}
	case model.TypeBytes:
		return Value{Type: TypeString, S: v.AsString()}
	}
	return Value{}
}

// String prints the query back (normalised) for logs and error messages.
func (q *Query) String() string { return q.Source }

func (f *SpansetFilter) String() string {
	if f.Expr == nil {
		return "{}"
	}
	return "{ " + f.Expr.String() + " }"
}

package traceql

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

func TestParseValid(t *testing.T) {
	for _, q := range []string{
		`{}`,
		`{ }`,
		`{ .foo = "bar" }`,
		`{ span.http.url =~ "/api/.*" && resource.k8s.namespace.name != "dev" }`,
		`{ span."attr with space" = 1 }`,
		`{ resource.service.name = "a" } >> { span.db.system = "postgres" }`,
		`{ name = "a" } | count() > 3`,
		`{ } | avg(duration) > 1s | by(resource.service.name)`,
		`{ } | select(span.http.url, status)`,
		`{ } | rate() by(resource.service.name)`,
		`{ } | quantile_over_time(duration, .5, 0.9, 0.99) by(span.http.route, name)`,
		`{ } | count_over_time() | topk(5)`,
		`{ } | histogram_over_time(duration)`,
		`{ nestedSetParent<0 && true && status=error } | rate()  with(sample=true)`,
		`({nestedSetParent<0 && true  && status = error} &>> { status = error }) || ({nestedSetParent<0 && true  && status = error}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)`,
		"{ .a = `raw\\d+` }",
		`{ duration > 1m30s && duration < 2d }`,
		`{ span.n = -1 && span.f > -2.5 && span.e < 1e3 }`,
		`{ kind = unspecified || kind = internal || kind = producer || kind = consumer }`,
		`{ .a = nil }`,
		`{ parent.span.x = 1 && parent.resource.y = 2 && parent.z = 3 }`,
		`{ trace:rootService = "x" && trace:duration > 1s && span:kind = server }`,
		"{\n  name = \"x\"\n}\n",
	} {
		if _, err := Parse(q); err != nil {
			t.Errorf("Parse(%q): %v", q, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		q        string
		col      int
		contains string
	}{
		{``, 1, "empty query"},
		{`{`, 2, "expected an attribute, intrinsic or literal"},
		{`{ name = }`, 10, "expected an attribute, intrinsic or literal, found \"}\""},
		{`{ name = "x" `, 14, "expected '}'"},
		{`{ foo = 1 }`, 3, `unknown identifier "foo"`},
		{`{ .a = 1 } {`, 12, "expected '|', a spanset operator"},
		{`{ .a =~ 1 }`, 9, "string pattern"},
		{`{ .a =~ "(" }`, 9, "invalid regular expression"},
		{`{ .a = "unterminated }`, 8, "unterminated string"},
		{`{ .a = 1 } | count()`, 21, "expected a comparison"},
		{`{ .a = 1 } | 3 > 2`, 16, "needs an aggregate"},
		{`{ .a = 1 } | foo()`, 14, "expected count()"},
		{`{ } | quantile_over_time(duration)`, 34, "at least one quantile"},
		{`{ } | quantile_over_time(duration, 2)`, 36, "outside [0, 1]"},
		{`{ . = 1 }`, 4, "expected an attribute name"},
		{`{ span. = 1 }`, 8, "expected an attribute name"},
		{`{ event.x = 1 }`, 3, "not supported"},
		{`{ finding.severity = "x" }`, 11, "only finding.kind"},
		{`{ .a = 1 = 2 }`, 10, "cannot be chained"},
		{`{ .a = 12abc }`, 8, "invalid number"},
		{`{ .a = 1 } | by(`, 17, "expected an attribute"},
		{`{ .a # 1 }`, 6, "unexpected character"},
		{"{\n .a = \n}", 1, "line 3"},
		{`{ } | rate() | foo`, 16, "topk"},
		{`{ } | rate() with(sample=)`, 26, "expected an attribute, intrinsic or literal"},
	}
	for _, c := range cases {
		_, err := Parse(c.q)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q): want SyntaxError, got %v", c.q, err)
			continue
		}
		if !strings.Contains(err.Error(), c.contains) {
			t.Errorf("Parse(%q): error %q does not mention %q", c.q, err, c.contains)
		}
		if c.col != 1 && se.Col != c.col {
			t.Errorf("Parse(%q): col %d, want %d (%v)", c.q, se.Col, c.col, err)
		}
	}
}

func TestParseLiterals(t *testing.T) {
	cases := []struct {
		q    string
		want Value
	}{
		{`{ .a = 100ms }`, Value{Type: TypeDuration, I: int64(100 * time.Millisecond)}},
		{`{ .a = 1.5s }`, Value{Type: TypeDuration, I: int64(1500 * time.Millisecond)}},
		{`{ .a = 2d }`, Value{Type: TypeDuration, I: int64(48 * time.Hour)}},
		{`{ .a = 1h30m }`, Value{Type: TypeDuration, I: int64(90 * time.Minute)}},
		{`{ .a = 42 }`, Value{Type: TypeInt, I: 42}},
		{`{ .a = -42 }`, Value{Type: TypeInt, I: -42}},
		{`{ .a = 4.25 }`, Value{Type: TypeFloat, F: 4.25}},
		{`{ .a = "x\"y" }`, Value{Type: TypeString, S: `x"y`}},
		{`{ .a = true }`, Value{Type: TypeBool, B: true}},
		{`{ .a = error }`, Value{Type: TypeStatus, I: 2}},
		{`{ .a = client }`, Value{Type: TypeKind, I: 3}},
		{`{ .a = nil }`, Value{}},
	}
	for _, c := range cases {
		q := mustParse(t, c.q)
		b := q.Pipeline[0].(*SpansetFilter).Expr.(*BinaryExpr)
		if got := b.RHS.(Value); got != c.want {
			t.Errorf("%s: got %+v want %+v", c.q, got, c.want)
		}
	}
}

func TestParseStructure(t *testing.T) {
	q := mustParse(t, `{ .a = 1 } && { .b = 2 } >> { .c = 3 } | by(span.x) | count() > 1 | select(.y)`)
	if len(q.Pipeline) != 4 {
		t.Fatalf("stages: %d", len(q.Pipeline))
	}
	top := q.Pipeline[0].(*SpansetOp)
	if top.Op != OpSpansetAnd {
		t.Fatalf("top op %v", top.Op)
	}
	if r, ok := top.RHS.(*SpansetOp); !ok || r.Op != OpDescendant {
		t.Fatalf("rhs %#v", top.RHS)
	}
	if _, ok := q.Pipeline[1].(*GroupBy); !ok {
		t.Fatalf("stage 1 %T", q.Pipeline[1])
	}
	if _, ok := q.Pipeline[2].(*ScalarFilter); !ok {
		t.Fatalf("stage 2 %T", q.Pipeline[2])
	}
	if _, ok := q.Pipeline[3].(*Select); !ok {
		t.Fatalf("stage 3 %T", q.Pipeline[3])
	}
	// && binds tighter than || inside a selector.
	f := mustParse(t, `{ .a = 1 || .b = 2 && .c = 3 }`).Pipeline[0].(*SpansetFilter).Expr.(*BinaryExpr)
	if f.Op != OpOr {
		t.Fatalf("want || at the top, got %v", f.Op)
	}
	m := mustParse(t, `{ } | quantile_over_time(duration, .9, .99) by(resource.service.name, name) | topk(3) with(exemplars=true)`)
	if m.Metrics == nil || m.Metrics.Func != MetricsQuantileOverTime || len(m.Metrics.Quantiles) != 2 || len(m.Metrics.By) != 2 || m.Metrics.TopK != 3 {
		t.Fatalf("metrics %+v", m.Metrics)
	}
	if m.Hints["exemplars"] != boolValue(true) {
		t.Fatalf("hints %+v", m.Hints)
	}
}

func TestParseDeepNestingRejected(t *testing.T) {
	q := "{ " + strings.Repeat("(", 10000) + ".a = 1" + strings.Repeat(")", 10000) + " }"
	if _, err := Parse(q); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("want nesting error, got %v", err)
	}
	q = "{ " + strings.Repeat("!", 10000) + "true }"
	if _, err := Parse(q); err == nil {
		t.Fatal("want nesting error for unary chain")
	}
}

// FuzzParse checks that no input makes the parser (or evaluating what it
// accepts) panic or hang.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{ .a = "b" }`, `{ span.x =~ "a.*" && resource.y != 3 }`,
		`{ name = "a" } >> { kind = client } | count() > 2`,
		`{ } | avg(duration) > 1s | by(resource.service.name) | select(span.u)`,
		`{ } | quantile_over_time(duration, .9) by(name) | topk(2) with(a=1)`,
		`({ a } &>> { b }) || { c }`, `{ !(.a = nil) }`, `{ parent.name = "x" }`,
		`{ finding.kind = "n_plus_one_query" }`, `{ .a = 1h2m3s4ms5us6ns }`, "{ .a = `x` }",
		`{ duration * 2 ^ 3 % 5 / 1 - 4 + -1 > 0 }`, `{ } ~ { } !~ { } &~ { } < { } << { } !< { }`,
		`{ span."a b" = 1 }`, `{ .a = "\u00e9" }`, `{ 1 }`, `{ .a }`, `{ "x" =~ .a }`,
	} {
		f.Add(s)
	}
	spans := checkout()
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			var le *LimitError
			if !errors.As(err, &se) && !errors.As(err, &le) {
				t.Fatalf("neither a syntax nor a cost error %T: %v", err, err)
			}
			return
		}
		_ = q.Pushdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fl := FindingsFunc(func(context.Context, model.TraceID) (map[model.SpanID][]string, error) { return nil, nil })
		sets, err := q.Eval(ctx, spans, fl)
		if err != nil {
			return
		}
		for _, ss := range sets {
			for i := range ss.Spans {
				_ = ss.SpanAttrs(i)
			}
		}
		if q.IsMetrics() {
			m, err := q.NewMetricsEvaluator(MetricsRange{Start: t0, End: t0 + uint64(time.Second), Step: uint64(100 * time.Millisecond)})
			if err == nil {
				_ = m.Observe(ctx, spans, fl)
				_ = m.Result()
			}
		}
	})
}

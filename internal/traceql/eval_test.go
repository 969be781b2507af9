package traceql

import (
	"context"
	"errors"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestEvalSelectors(t *testing.T) {
	tr := checkout()
	cases := []struct{ q, want string }{
		{`{}`, "GET /checkout|POST /cart|SELECT a|SELECT b|SELECT c|call cart|call payment|charge"},
		{`{ true }`, "GET /checkout|POST /cart|SELECT a|SELECT b|SELECT c|call cart|call payment|charge"},
		{`{ false }`, ""},
		// intrinsics
		{`{ name = "charge" }`, "charge"},
		{`{ span:name = "charge" }`, "charge"},
		{`{ name != "charge" && kind = server }`, "GET /checkout|POST /cart"},
		{`{ status = error }`, "POST /cart"},
		{`{ span:status = ok }`, "SELECT c"},
		{`{ status = unset && kind = client && duration > 100ms }`, "call cart|call payment"},
		{`{ statusMessage = "boom" }`, "POST /cart"},
		{`{ duration >= 480ms && duration <= 500ms }`, "call payment|charge"},
		{`{ duration < 11ms }`, "SELECT a|SELECT b|SELECT c"},
		{`{ duration = 10ms }`, "SELECT a|SELECT b|SELECT c"},
		{`{ duration > 0.9s }`, "GET /checkout"},
		{`{ kind = client }`, "SELECT a|SELECT b|SELECT c|call cart|call payment"},
		{`{ kind != client }`, "GET /checkout|POST /cart|charge"},
		{`{ rootName = "GET /checkout" && name =~ "SELECT.*" }`, "SELECT a|SELECT b|SELECT c"},
		{`{ rootServiceName = "frontend" && resource.service.name = "payment" }`, "charge"},
		{`{ traceDuration > 999ms && name = "charge" }`, "charge"},
		{`{ traceDuration > 1001ms }`, ""},
		{`{ childCount = 3 }`, "POST /cart"},
		{`{ nestedSetParent < 0 }`, "GET /checkout"},
		{`{ instrumentation:name = "lib" && name = "charge" }`, "charge"},
		// attributes and scopes
		{`{ span.http.status_code = 500 }`, "POST /cart"},
		{`{ span.http.status_code >= 200 }`, "GET /checkout|POST /cart"},
		{`{ .http.status_code < 300 }`, "GET /checkout"},
		{`{ span.http.status_code = "500" }`, ""}, // types are strict, as in Tempo
		{`{ resource.service.name = "cart" }`, "POST /cart|SELECT a|SELECT b|SELECT c"},
		{`{ .service.name = "span-level" }`, "charge"}, // unscoped: span attribute first
		{`{ resource.service.name = "payment" }`, "charge"},
		{`{ span.service.name = "payment" }`, ""},
		{`{ resource.env = "prod" && span.amount > 12 }`, "charge"},
		{`{ span.amount = 12.5 }`, "charge"},
		{`{ span.amount < 13 && span.amount > 12.4 }`, "charge"},
		{`{ span.retry = true }`, "charge"},
		{`{ span.retry != false }`, "charge"},
		{`{ span.db.system != nil }`, "SELECT a|SELECT b|SELECT c"},
		{`{ span.db.system = nil && kind = client }`, "call cart|call payment"},
		{`{ span.db.system != "postgres" }`, "SELECT c"}, // missing attributes never match !=
		{`{ span.db.system =~ "post.*" }`, "SELECT a|SELECT b"},
		{`{ span.db.system =~ "post" }`, ""}, // full match
		{`{ span.db.system !~ "post.*" }`, "SELECT c"},
		{`{ span.http.status_code =~ "5.." }`, "POST /cart"},
		{`{ parent.name = "POST /cart" }`, "SELECT a|SELECT b|SELECT c"},
		{`{ parent.resource.service.name = "frontend" && kind = server }`, "POST /cart|charge"},
		// boolean logic, negation, parentheses
		{`{ name = "charge" || name = "SELECT a" }`, "SELECT a|charge"},
		{`{ (name = "charge" || name = "SELECT a") && kind = server }`, "charge"},
		{`{ !(kind = client) }`, "GET /checkout|POST /cart|charge"},
		{`{ !(span.db.system = "postgres") && kind = client }`, "SELECT c|call cart|call payment"},
		// arithmetic
		{`{ span.http.status_code - 300 = 200 }`, "POST /cart"},
		{`{ span.amount * 2 = 25 }`, "charge"},
		{`{ duration * 2 > 1.9s }`, "GET /checkout"},
		// literal on the left
		{`{ 500 = span.http.status_code }`, "POST /cart"},
		{`{ 100ms < duration && kind = server }`, "GET /checkout|POST /cart|charge"},
	}
	for _, c := range cases {
		if got := evalNames(t, c.q, tr, nil); got != c.want {
			t.Errorf("%s\n got  %q\n want %q", c.q, got, c.want)
		}
	}
}

func TestEvalSpansetOperators(t *testing.T) {
	tr := checkout()
	cases := []struct{ q, want string }{
		{`{ name = "charge" } && { status = error }`, "POST /cart|charge"},
		{`{ name = "charge" } && { name = "nope" }`, ""},
		{`{ name = "charge" } || { name = "nope" }`, "charge"},
		{`{ name = "charge" } || { status = error }`, "POST /cart|charge"},
		// structural: results are the right-hand side
		{`{ name = "POST /cart" } > { kind = client }`, "SELECT a|SELECT b|SELECT c"},
		{`{ name = "GET /checkout" } > { kind = server }`, ""},
		{`{ name = "GET /checkout" } >> { kind = server }`, "POST /cart|charge"},
		{`{ span.db.system = "postgres" } < { }`, "POST /cart"},
		{`{ name = "SELECT a" } << { }`, "GET /checkout|POST /cart|call cart"},
		{`{ name = "SELECT a" } ~ { }`, "SELECT b|SELECT c"},
		{`{ name = "SELECT a" } ~ { name = "SELECT a" }`, ""},
		{`{ kind = client } ~ { kind = client }`, "SELECT a|SELECT b|SELECT c|call cart|call payment"},
		// negated and union forms
		{`{ resource.service.name = "cart" } !>> { kind = client }`, "call cart|call payment"},
		{`{ name = "POST /cart" } !> { kind = client }`, "call cart|call payment"},
		{`{ name = "POST /cart" } &> { span.db.system = "mysql" }`, "POST /cart|SELECT c"},
		{`{ name = "call payment" } &>> { kind = server }`, "call payment|charge"},
		{`{ name = "SELECT c" } &< { }`, "POST /cart|SELECT c"},
		{`{ name = "SELECT c" } &<< { kind = server }`, "GET /checkout|POST /cart|SELECT c"},
		{`{ name = "SELECT c" } &~ { name = "SELECT a" }`, "SELECT a|SELECT c"},
		// precedence: structural binds tighter than && / ||
		{`{ name = "charge" } && { name = "POST /cart" } > { kind = client }`, "SELECT a|SELECT b|SELECT c|charge"},
		{`({ name = "charge" } && { name = "POST /cart" }) > { kind = client }`, "SELECT a|SELECT b|SELECT c"},
		{`{ name = "GET /checkout" } >> { name = "POST /cart" } > { span.db.system = "mysql" }`, "SELECT c"},
	}
	for _, c := range cases {
		if got := evalNames(t, c.q, tr, nil); got != c.want {
			t.Errorf("%s\n got  %q\n want %q", c.q, got, c.want)
		}
	}
}

func TestEvalPipelines(t *testing.T) {
	tr := checkout()
	cases := []struct{ q, want string }{
		{`{ kind = client } | count() > 4`, "SELECT a|SELECT b|SELECT c|call cart|call payment"},
		{`{ kind = client } | count() > 5`, ""},
		{`{ kind = client } | count() = 5`, "SELECT a|SELECT b|SELECT c|call cart|call payment"},
		{`{ kind = server } | avg(duration) > 500ms`, "GET /checkout|POST /cart|charge"},
		{`{ kind = server } | avg(duration) > 600ms`, ""},
		{`{ kind = server } | max(duration) >= 1s`, "GET /checkout|POST /cart|charge"},
		{`{ kind = server } | min(duration) < 300ms`, "GET /checkout|POST /cart|charge"},
		{`{ kind = server } | min(duration) < 200ms`, ""},
		{`{ } | sum(span.http.status_code) = 700`, "GET /checkout|POST /cart|SELECT a|SELECT b|SELECT c|call cart|call payment|charge"},
		{`{ } | count() / 2 = 4`, "GET /checkout|POST /cart|SELECT a|SELECT b|SELECT c|call cart|call payment|charge"},
		// by() splits, then the filter applies per group
		{`{ kind = client } | by(resource.service.name) | count() > 2`, "SELECT a|SELECT b|SELECT c"},
		{`{ kind = client } | by(resource.service.name) | count() = 2`, "call cart|call payment"},
		{`{ } | by(resource.service.name) | coalesce()`, "GET /checkout|POST /cart|SELECT a|SELECT b|SELECT c|call cart|call payment|charge"},
		// a later selector filters within each spanset
		{`{ kind = client } | { span.db.system = "postgres" }`, "SELECT a|SELECT b"},
		{`{ kind = client } | select(span.db.system)`, "SELECT a|SELECT b|SELECT c|call cart|call payment"},
	}
	for _, c := range cases {
		if got := evalNames(t, c.q, tr, nil); got != c.want {
			t.Errorf("%s\n got  %q\n want %q", c.q, got, c.want)
		}
	}
}

func TestGroupByAttrsAndSelect(t *testing.T) {
	q := mustParse(t, `{ kind = client && status != error } | by(resource.service.name) | select(span.db.system, statusMessage)`)
	sets, err := q.Eval(context.Background(), checkout(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 {
		t.Fatalf("want 2 groups, got %d", len(sets))
	}
	groups := map[string]int{}
	for _, s := range sets {
		if len(s.Attrs) != 1 || s.Attrs[0].Key != "by(resource.service.name)" {
			t.Fatalf("bad spanset attrs %+v", s.Attrs)
		}
		groups[s.Attrs[0].Value.S] = len(s.Spans)
	}
	if groups["cart"] != 3 || groups["frontend"] != 2 {
		t.Fatalf("groups %v", groups)
	}
	for _, s := range sets {
		if s.Attrs[0].Value.S != "cart" {
			continue
		}
		// Spans are ordered by start; the first is SELECT a.
		if s.Spans[0].Name != "SELECT a" {
			t.Fatalf("order: %s", s.Spans[0].Name)
		}
		attrs := s.SpanAttrs(0)
		got := map[string]string{}
		for _, a := range attrs {
			got[a.Key] = a.Value.Text()
		}
		// kind and status were in the condition, db.system and statusMessage selected.
		if got["kind"] != "client" || got["status"] != "unset" || got["db.system"] != "postgres" || got["statusMessage"] != "" {
			t.Fatalf("span attrs %v", got)
		}
	}
}

func TestFindingKind(t *testing.T) {
	tr := checkout()
	calls := 0
	fl := FindingsFunc(func(_ context.Context, id model.TraceID) (map[model.SpanID][]string, error) {
		calls++
		if id != tr[0].TraceID {
			t.Errorf("lookup for wrong trace %s", id)
		}
		return map[model.SpanID][]string{
			tr[3].SpanID:   {"n_plus_one_query"},
			tr[4].SpanID:   {"n_plus_one_query", "slow_query"},
			model.SpanID{}: {"timeout_cascade"},
		}, nil
	})
	cases := []struct{ q, want string }{
		{`{ finding.kind = "n_plus_one_query" }`, "SELECT a|SELECT b"},
		{`{ finding.kind = "slow_query" }`, "SELECT b"},
		{`{ finding.kind =~ "slow.*" }`, "SELECT b"},
		{`{ finding.kind != "slow_query" && finding.kind != nil }`, "GET /checkout|SELECT a"},
		{`{ finding.kind = "timeout_cascade" }`, "GET /checkout"}, // trace-level findings sit on the root
		{`{ finding.kind != nil && kind = client }`, "SELECT a|SELECT b"},
		{`{ "slow_query" = finding.kind }`, "SELECT b"},
		{`{ name = "POST /cart" } > { finding.kind = "n_plus_one_query" }`, "SELECT a|SELECT b"},
	}
	for _, c := range cases {
		if got := evalNames(t, c.q, tr, fl); got != c.want {
			t.Errorf("%s\n got  %q\n want %q", c.q, got, c.want)
		}
	}
	if calls != len(cases) {
		t.Errorf("lookup called %d times, want once per evaluation (%d)", calls, len(cases))
	}
	// Queries without finding.kind never call the lookup.
	calls = 0
	evalNames(t, `{ kind = client }`, tr, fl)
	if calls != 0 {
		t.Errorf("lookup called for a query that does not need it")
	}
	if _, err := mustParse(t, `{ finding.kind = "x" }`).Eval(context.Background(), tr, nil); err == nil {
		t.Errorf("want an error without a lookup")
	}
	boom := errors.New("boom")
	_, err := mustParse(t, `{ finding.kind = "x" }`).Eval(context.Background(), tr, FindingsFunc(func(context.Context, model.TraceID) (map[model.SpanID][]string, error) {
		return nil, boom
	}))
	if !errors.Is(err, boom) {
		t.Errorf("lookup error not propagated: %v", err)
	}
}

func TestEvalOrphansAndCycles(t *testing.T) {
	spans := checkout()
	// Detach "call payment": its parent is missing from the trace.
	spans[6].ParentSpanID = model.SpanID{9, 9}
	if got := evalNames(t, `{ name = "GET /checkout" } >> { }`, spans, nil); got != "POST /cart|SELECT a|SELECT b|SELECT c|call cart" {
		t.Errorf("descendants with orphan: %q", got)
	}
	if got := evalNames(t, `{ nestedSetParent < 0 }`, spans, nil); got != "GET /checkout" {
		t.Errorf("orphans are not roots: %q", got)
	}
	// A parent cycle must not hang ancestor walks.
	cyc := checkout()
	cyc[1].ParentSpanID = cyc[2].SpanID
	_ = evalNames(t, `{ } >> { }`, cyc, nil)
	_ = evalNames(t, `{ } << { }`, cyc, nil)
	_ = evalNames(t, `{ nestedSetLeft > 0 }`, cyc, nil)
}

func TestEvalCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := mustParse(t, `{ } | count() > 0`).Eval(ctx, checkout(), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

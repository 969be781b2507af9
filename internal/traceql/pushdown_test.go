package traceql

import (
	"reflect"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

func TestPushdown(t *testing.T) {
	errStatus := model.StatusError
	ms := func(d time.Duration) uint64 { return uint64(d) }
	cases := []struct {
		q    string
		want store.Query
	}{
		{`{}`, store.Query{}},
		{`{ resource.service.name = "cart" && name = "POST /cart" && kind = server && status = error }`,
			store.Query{Service: "cart", Operation: "POST /cart", Kinds: []model.SpanKind{model.KindServer}, Status: &errStatus}},
		{`{ duration > 100ms && duration <= 2s }`, store.Query{MinDuration: ms(100*time.Millisecond) + 1, MaxDuration: ms(2 * time.Second)}},
		{`{ 100ms <= duration }`, store.Query{MinDuration: ms(100 * time.Millisecond)}},
		{`{ traceDuration >= 1s }`, store.Query{MinTraceDuration: ms(time.Second)}},
		{`{ span.http.status_code = 500 && .db.system =~ "post.*" && resource.env != "dev" }`, store.Query{Attrs: []store.AttrFilter{
			{Scope: store.ScopeSpan, Key: "http.status_code", Op: store.OpEq, Value: model.Int(500)},
			{Scope: store.ScopeAny, Key: "db.system", Op: store.OpRegex, Value: model.Str("post.*")},
			{Scope: store.ScopeResource, Key: "env", Op: store.OpNeq, Value: model.Str("dev")},
		}}},
		{`{ span.x != nil && span.y = nil }`, store.Query{Attrs: []store.AttrFilter{{Scope: store.ScopeSpan, Key: "x", Op: store.OpExists}}}},
		// unscoped service.name could be a span attribute: pushed as an attribute, not as Service
		{`{ .service.name = "a" }`, store.Query{Attrs: []store.AttrFilter{{Scope: store.ScopeAny, Key: "service.name", Op: store.OpEq, Value: model.Str("a")}}}},
		// || inside, negation, parent and finding.kind are not pushed
		{`{ (name = "a" || name = "b") && kind = client && !(status = error) && parent.name = "x" && finding.kind = "y" }`,
			store.Query{Kinds: []model.SpanKind{model.KindClient}}},
		// || between spansets: nothing is implied
		{`{ name = "a" } || { name = "b" }`, store.Query{}},
		// && and structural: one side is implied (the more constrained one)
		{`{ name = "a" } && { name = "b" && kind = client }`, store.Query{Operation: "b", Kinds: []model.SpanKind{model.KindClient}}},
		{`{ name = "a" && kind = server } >> { name = "b" }`, store.Query{Operation: "a", Kinds: []model.SpanKind{model.KindServer}}},
		// negated structural: only the right side must match
		{`{ name = "a" && kind = server } !>> { name = "b" }`, store.Query{Operation: "b"}},
		{`{ kind = server } | count() > 2`, store.Query{Kinds: []model.SpanKind{model.KindServer}}},
		{`{ status = error } | rate() by(resource.service.name)`, store.Query{Status: &errStatus}},
		// status != and kind != have no store form
		{`{ status != error && kind != client }`, store.Query{}},
	}
	for _, c := range cases {
		got := mustParse(t, c.q).Pushdown()
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s\n got  %+v\n want %+v", c.q, got, c.want)
		}
	}
}

// TestPushdownImplied checks the contract on the fixture: whenever the
// query matches a trace, the pushed-down store query matches it too.
func TestPushdownImplied(t *testing.T) {
	tr := checkout()
	for _, q := range []string{
		`{ resource.service.name = "cart" && kind = client }`,
		`{ .service.name = "span-level" }`,
		`{ span.http.status_code = 500 && status = error && duration > 200ms }`,
		`{ span.db.system =~ "post.*" && duration < 11ms }`,
		`{ span.amount > 12 && span.retry = true }`,
		`{ name = "GET /checkout" } >> { span.db.system != "postgres" }`,
		`{ traceDuration = 1s && name = "charge" }`,
		`{ span.db.system != nil && resource.env = "prod" }`,
	} {
		pq := mustParse(t, q)
		if evalNames(t, q, tr, nil) == "" {
			t.Fatalf("%s: fixture should match", q)
		}
		sq := pq.Pushdown()
		if !store.MatchTrace(&sq, tr) {
			t.Errorf("%s: pushdown %+v rejects a matching trace", q, sq)
		}
	}
}

package servicegraph

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
)

func str(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }

// Database and cache calls make caller→database edges to a node per
// database, named as Tempo names database nodes.
func TestDatabaseNodesAreNamedByDatabase(t *testing.T) {
	c := &clock{}
	c.set(time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC))
	g := newGraph(t, "", c, Options{})
	at := c.now().Add(-10 * time.Minute)
	call := func(svc string, attrs ...model.Attr) model.Span {
		return span(tid(), sid(), svc, "db call", model.KindClient, at, time.Millisecond, false, attrs...)
	}
	g.Observe([]model.Span{
		call("orders", str("db.system", "postgresql"), str("db.namespace", "orders_db")),
		call("orders", str("db.system", "postgresql"), str("db.namespace", "orders_db")),
		call("billing", str("db.system.name", "postgresql"), str("db.namespace", "orders_db")), // current semconv
		call("users", str("db.system", "mysql"), str("db.name", "accounts")),                   // older semconv
		call("cart", str("db.system", "redis"), str("db.namespace", "0")),                      // an index, not a name
		call("cart", str("db.system", "memcached")),
		call("search", str("db.system", "elasticsearch"), str("peer.service", "es-main")),
	})
	m, err := g.ServiceMap(context.Background(), at.Add(-time.Minute), c.now())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range m.Edges {
		if e.ConnectionType != "database" {
			t.Errorf("edge %s→%s: connection type %q", e.Source, e.Target, e.ConnectionType)
		}
		got[e.Source+"→"+e.Target] = e.ConnectionType
	}
	for _, want := range []string{"orders→orders_db", "billing→orders_db", "users→accounts", "cart→redis", "cart→memcached", "search→es-main"} {
		if _, ok := got[want]; !ok {
			t.Errorf("missing edge %s in %v", want, got)
		}
	}
	types := map[string]string{}
	for _, n := range m.Nodes {
		types[n.ID] = n.Type
	}
	for _, db := range []string{"orders_db", "accounts", "redis", "memcached", "es-main"} {
		if types[db] != "database" {
			t.Errorf("node %s type %q, want database", db, types[db])
		}
	}
	if types["orders"] != "service" {
		t.Errorf("caller node type %q", types["orders"])
	}
	// Two calls in the 11 minutes since the first data: rates are per
	// second over that, not over a range that would reach further back.
	for _, e := range m.Edges {
		if e.Source == "orders" && math.Abs(e.Rate-2.0/600) > 1e-6 {
			t.Errorf("orders→orders_db rate %v, want 2 calls / 600 s", e.Rate)
		}
	}
}

package servicegraph

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/model"
)

// Database calls never wait in the pairing cache: at high rates they were
// most of it.
func TestDatabaseCallsAreRecordedWithoutWaiting(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{})
	var spans []model.Span
	for i := 0; i < 50; i++ {
		spans = append(spans, span(tid(), sid(), "api", "SELECT", model.KindClient, c.now(), time.Millisecond, i == 0,
			model.Attr{Key: "db.system", Value: model.Str("postgresql")}, model.Attr{Key: "db.namespace", Value: model.Str("shop")}))
	}
	g.Observe(spans)
	_, virtual, _, waiting := g.PairStats()
	if waiting != 0 || virtual != 50 {
		t.Fatalf("waiting %d virtual %d: database halves must not wait", waiting, virtual)
	}
	es, err := g.Edges(context.Background(), c.now().Add(-time.Minute), c.now().Add(time.Minute))
	if err != nil || len(es) != 1 || es[0].Target != "shop" || es[0].CallCount != 50 || es[0].ConnectionType != "database" {
		t.Fatalf("edges before any expiry: %v %+v", err, es)
	}
	// A SERVER span that arrived first (an instrumented database proxy)
	// still pairs.
	tr := tid()
	cl := span(tr, sid(), "api", "SELECT", model.KindClient, c.now(), time.Millisecond, false,
		model.Attr{Key: "db.system", Value: model.Str("postgresql")})
	sv := span(tr, cl.SpanID, "pgproxy", "query", model.KindServer, c.now(), time.Millisecond, false)
	g.Observe([]model.Span{sv})
	g.Observe([]model.Span{cl})
	if paired, _, _, waiting := g.PairStats(); paired != 1 || waiting != 0 {
		t.Fatalf("proxy pair: paired %d waiting %d", paired, waiting)
	}
}

func TestEvictionsAreCountedAndExported(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{MaxPending: 10})
	var spans []model.Span
	for i := 0; i < 25; i++ {
		spans = append(spans, span(tid(), sid(), "a", "call", model.KindClient, c.now(), time.Millisecond, false,
			model.Attr{Key: "peer.service", Value: model.Str("b")}))
	}
	g.Observe(spans)
	if ev := g.Evicted(); ev != 15 {
		t.Fatalf("evicted %d, want 15", ev)
	}
	// Expiry after the timeout is not an eviction.
	c.add(11 * time.Second)
	g.Expire()
	if ev := g.Evicted(); ev != 15 {
		t.Fatalf("expiry counted as eviction: %d", ev)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	if v := gathered(t, reg, "tracedx_servicegraph_evicted_total"); v != 15 {
		t.Errorf("exported evictions %v", v)
	}
	if v := gathered(t, reg, "tracedx_servicegraph_pending_halves"); v != 0 {
		t.Errorf("pending after expiry: %v", v)
	}
}

func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}

// Calls to a peer that never answers stop waiting in the cache; the first
// call that pairs again (the peer got instrumented) brings waiting back.
func TestUninstrumentedPeersSkipTheCache(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{})
	calls := func(n int) []model.Span {
		var out []model.Span
		for range n {
			out = append(out, span(tid(), sid(), "a", "GET", model.KindClient, c.now(), time.Millisecond, false,
				model.Attr{Key: "peer.service", Value: model.Str("b")}))
		}
		return out
	}
	g.Observe(calls(uninstrumentedAfter))
	if _, _, _, waiting := g.PairStats(); waiting != uninstrumentedAfter {
		t.Fatalf("waiting %d before the peer is known", waiting)
	}
	c.add(11 * time.Second)
	g.Expire()
	g.Observe(calls(probeEvery * 4))
	_, virtual, _, waiting := g.PairStats()
	if waiting != 4 || virtual != uninstrumentedAfter+probeEvery*4-4 {
		t.Fatalf("known uninstrumented peer: waiting %d (want the 4 probes) virtual %d", waiting, virtual)
	}
	// The peer gets instrumented: a probe pairs with its SERVER span.
	c.add(11 * time.Second)
	g.Expire()
	var probe []model.Span
	for len(probe) == 0 {
		cl := calls(1)
		g.Observe(cl)
		if _, _, _, w := g.PairStats(); w == 1 {
			probe = cl
		}
	}
	g.Observe([]model.Span{span(probe[0].TraceID, probe[0].SpanID, "b", "GET", model.KindServer, c.now(), time.Millisecond, false)})
	if paired, _, _, _ := g.PairStats(); paired != 1 {
		t.Fatalf("probe did not pair: %d", paired)
	}
	g.Observe(calls(10))
	if _, _, _, waiting := g.PairStats(); waiting != 10 {
		t.Fatalf("after a pairing every call must wait again: waiting %d", waiting)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	if v := gathered(t, reg, "tracedx_servicegraph_uninstrumented_calls_total"); v < probeEvery*4-4 {
		t.Errorf("uninstrumented calls exported: %v", v)
	}
}

// A client naming its own service as the peer (common for calls through a
// gateway) makes no edge unless it pairs; once it never does, it stops
// waiting too.
func TestSelfNamedPeerStopsWaiting(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{})
	for range 2 {
		var out []model.Span
		for range uninstrumentedAfter {
			out = append(out, span(tid(), sid(), "a", "GET", model.KindClient, c.now(), time.Millisecond, false,
				model.Attr{Key: "peer.service", Value: model.Str("a")}))
		}
		g.Observe(out)
		c.add(11 * time.Second)
		g.Expire()
	}
	_, virtual, dropped, waiting := g.PairStats()
	if virtual != 0 || dropped != 2*uninstrumentedAfter || waiting != 0 || g.immediate < uninstrumentedAfter-2 {
		t.Fatalf("virtual %d dropped %d waiting %d immediate %d", virtual, dropped, waiting, g.immediate)
	}
}

func TestPendingMapIsRebuiltAfterABurst(t *testing.T) {
	c := &clock{}
	c.set(time.Now())
	g := newGraph(t, "", c, Options{})
	var out []model.Span
	for range 10000 {
		out = append(out, span(tid(), sid(), "a", "GET", model.KindClient, c.now(), time.Millisecond, false)) // no peer: waits
	}
	g.Observe(out)
	g.Expire()
	if g.pendingPeak != 10000 {
		t.Fatalf("peak %d", g.pendingPeak)
	}
	c.add(11 * time.Second)
	g.Observe(out[:10]) // expires the burst, 10 new halves wait
	g.Expire()
	if _, _, _, waiting := g.PairStats(); waiting != 10 || g.pendingPeak != 10 {
		t.Fatalf("waiting %d, peak after rebuild %d", waiting, g.pendingPeak)
	}
}

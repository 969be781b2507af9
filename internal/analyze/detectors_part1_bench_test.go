package analyze

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// p1BigTrace builds a ~10k-span trace full of the patterns part 1 looks
// for (N+1 loops, fan-outs, sequential calls, retries, gaps), so the
// benchmark exercises the slow paths, not just the walk.
func p1BigTrace(subtrees int) []model.Span {
	var spans []model.Span
	var next uint64
	const base = uint64(1_795_000_000_000_000_000)
	add := func(parent int, svc, name string, kind model.SpanKind, startUS, durUS uint64, attrs ...model.Attr) int {
		next++
		s := model.Span{TraceID: model.TraceID{9, 9}, Name: name, Kind: kind, Service: svc,
			StartUnixNano: base + startUS*1000, EndUnixNano: base + (startUS+durUS)*1000, Attrs: attrs}
		for i := 0; i < 8; i++ {
			s.SpanID[i] = byte(next >> (8 * i))
		}
		if parent >= 0 {
			s.ParentSpanID = spans[parent].SpanID
		}
		spans = append(spans, s)
		return len(spans) - 1
	}
	str := func(k, v string) model.Attr { return model.Attr{Key: k, Value: model.Str(v)} }
	num := func(k string, v int64) model.Attr { return model.Attr{Key: k, Value: model.Int(v)} }
	db := func(stmt string) []model.Attr {
		return []model.Attr{str("db.system", "postgresql"), str("db.statement", stmt), str("net.peer.name", "pg-main")}
	}
	span := uint64(subtrees) * 200_000
	root := add(-1, "gateway", "GET /api/bulk", model.KindServer, 0, span+1000,
		str("http.request.method", "GET"), str("http.route", "/api/bulk"), num("http.response.status_code", 200))
	for i := 0; i < subtrees; i++ {
		t0 := uint64(i)*200_000 + 100
		svc := fmt.Sprintf("svc-%d", i%17)
		c := add(root, "gateway", "GET", model.KindClient, t0, 190_000, str("http.request.method", "GET"),
			str("url.full", fmt.Sprintf("http://%s:8080/api/items/%d", svc, i)), str("server.address", svc))
		s := add(c, svc, "GET /api/items/{id}", model.KindServer, t0+50, 189_900, str("http.request.method", "GET"),
			str("http.route", "/api/items/{id}"), num("http.response.status_code", 200))
		at := t0 + 100
		for q := 0; q < 30; q++ {
			add(s, svc, "SELECT shop.items", model.KindClient, at, 2000, db(fmt.Sprintf("SELECT * FROM items WHERE id = %d AND tenant = 'acme'", i*100+q))...)
			at += 2100
		}
		for f := 0; f < 10; f++ {
			fc := add(s, svc, "GET", model.KindClient, at, 3000, str("http.request.method", "GET"), str("peer.service", "pricing"),
				str("url.full", fmt.Sprintf("http://pricing:8080/v2/prices/%d?c=EUR", i*10+f)))
			fs := add(fc, "pricing", "GET /v2/prices/{sku}", model.KindServer, at+10, 2980, str("http.route", "/v2/prices/{sku}"))
			add(fs, "pricing", "GET", model.KindClient, at+20, 1000, str("db.system", "redis"), str("db.statement", fmt.Sprintf("GET price:%d", f)))
			at += 3100
		}
		for k, tgt := range []string{"users", "orders", "loyalty"} {
			add(s, svc, "GET", model.KindClient, at, 4000, str("http.request.method", "GET"), str("peer.service", tgt),
				str("url.path", fmt.Sprintf("/v1/%s/%d", tgt, k)))
			at += 4010
		}
		for r := 0; r < 3; r++ {
			rc := add(s, svc, "inventory.v1.Inventory/Reserve", model.KindClient, at, 5000, str("rpc.system", "grpc"),
				str("rpc.service", "inventory.v1.Inventory"), str("rpc.method", "Reserve"), str("server.address", "inventory"),
				num("rpc.grpc.status_code", 14))
			spans[rc].StatusCode = model.StatusError
			spans[rc].StatusMessage = "UNAVAILABLE: pool timed out"
			rs := add(rc, "inventory", "inventory.v1.Inventory/Reserve", model.KindServer, at+10, 4980)
			spans[rs].StatusCode = model.StatusError
			at += 6000
		}
		for w := 0; w < 10; w++ {
			in := add(s, svc, "work", model.KindInternal, at, 4000)
			add(in, svc, "SELECT shop.a", model.KindClient, at+100, 200, db("SELECT 1 FROM a WHERE x = 1")...)
			add(in, svc, "UPDATE shop.b", model.KindClient, at+2500, 200, db("UPDATE b SET y = 2 WHERE x = 1")...)
			at += 4100
		}
	}
	return spans
}

func p1Detectors() []Detector {
	want := map[string]bool{}
	for _, k := range part1Kinds {
		want[k] = true
	}
	var out []Detector
	for _, d := range DefaultDetectors() {
		if want[d.Kind()] {
			out = append(out, d)
		}
	}
	return out
}

// BenchmarkDetectorsPart1 runs the nine part-1 detectors on a 10k-span
// trace. "with_tree" includes building the tree and the critical path (what
// one analysis costs); "detectors_only" reuses them and clears only the
// detectors' own per-trace memo.
func BenchmarkDetectorsPart1(b *testing.B) {
	spans := p1BigTrace(99)
	ds := p1Detectors()
	env := &Env{History: NoHistory{}}
	run := func(b *testing.B, fresh func() *Trace) {
		b.ReportAllocs()
		var findings int
		for b.Loop() {
			tr := fresh()
			findings = 0
			for _, d := range ds {
				findings += len(d.Detect(tr, env))
			}
		}
		b.ReportMetric(float64(len(spans)), "spans")
		b.ReportMetric(float64(findings), "findings")
	}
	b.Run("with_tree", func(b *testing.B) { run(b, func() *Trace { return NewTrace(spans) }) })
	shared := NewTrace(spans)
	shared.CriticalPath()
	b.Run("detectors_only", func(b *testing.B) {
		run(b, func() *Trace { shared.memo = nil; return shared })
	})
}

// TestDetectorsPart1BigTrace guards against quadratic behaviour: the big
// trace must produce the findings it was built with.
func TestDetectorsPart1BigTrace(t *testing.T) {
	spans := p1BigTrace(99)
	if len(spans) != 10000 {
		t.Fatalf("built %d spans, want 10000", len(spans))
	}
	tr := NewTrace(spans)
	count := map[string]int{}
	for _, d := range p1Detectors() {
		for _, f := range d.Detect(tr, &Env{History: NoHistory{}}) {
			if ev, ok := f.Evidence.(FanOutEvidence); ok && ev.Target != "pricing" {
				continue // the gateway also calls each svc-k a few times
			}
			count[f.Kind]++
		}
	}
	// One N+1 loop, one fan-out to pricing, one retry chain per subtree.
	for _, k := range []string{"n_plus_one_query", "fan_out", "retry_storm"} {
		if count[k] != 99 {
			t.Errorf("%s: %d findings, want 99 (all: %v)", k, count[k], count)
		}
	}
}

// TestCritUnderMatchesTimeUnder checks the indexed critical-path lookups
// against CriticalPath.TimeUnder on real fixtures and the big trace.
func TestCritUnderMatchesTimeUnder(t *testing.T) {
	traces := []*Trace{NewTrace(p1BigTrace(5))}
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*", "*.json"))
	for _, f := range files {
		traces = append(traces, p1LoadFixture(t, f))
	}
	for ti, tr := range traces {
		cp := tr.CriticalPath()
		for i, n := range tr.Nodes {
			if got, want := critUnder(tr, n), cp.TimeUnder(n); got != want {
				t.Fatalf("trace %d node %d: critUnder %d, TimeUnder %d", ti, i, got, want)
			}
			// Sets with a node and its siblings and parent (overlaps).
			set := append([]*Node{n}, n.Children...)
			if n.Parent != nil {
				set = append(set, n.Parent.Children...)
			}
			if got, want := critUnder(tr, set...), cp.TimeUnder(set...); got != want {
				t.Fatalf("trace %d node %d set: critUnder %d, TimeUnder %d", ti, i, got, want)
			}
		}
		if critTotal(tr) != cp.Total() {
			t.Fatalf("critTotal differs")
		}
	}
}

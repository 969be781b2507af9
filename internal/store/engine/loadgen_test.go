package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// loadgenBatch returns about n spans shaped like the harness's load (the
// generator of bench/loadgen): high-cardinality url.path and url.full, db
// statements, per-service resources, spans grouped by service as SDKs send
// them. Benchmarks of the cut and the conversion use it so their figures
// match what the server's profile under the harness shows.
func loadgenBatch(rng *rand.Rand, n int, base time.Time) []model.Span {
	var out []model.Span
	for len(out) < n {
		out = append(out, otlpconv.FromTraces(gen.Traces(rng, 20, base))...)
	}
	return out
}

// Converting level-0 blocks of the harness's spans keeps every span exact.
// Their string columns (url.path, url.full, db.query.text, scopes) point
// into the builder's arena until each batch of rows is written, and the
// arena is written over for the next batch; the spans span many batches,
// so a value read after its batch was reused would show here.
func TestConvertKeepsLoadgenSpans(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	base := time.Unix(1_700_000_000, 0)
	var all []model.Span
	for i := 0; i < 3; i++ {
		spans := loadgenBatch(rng, 5000, base.Add(time.Duration(i)*time.Minute))
		all = append(all, spans...)
		if err := e.Write(ctx, spans); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
		t.Fatalf("after compaction: %d level-0 and %d Parquet blocks, want 0 and 1", l0, pq)
	}
	checkAllTraces(t, e, all)
	paths := map[string]bool{}
	for i := range all {
		if v, ok := all[i].Attrs.Get("url.path"); ok {
			paths[v.AsString()] = true
		}
	}
	// The check above is only as strong as the variety of the values.
	if len(paths) < 1000 {
		t.Fatalf("only %d distinct url.path values in %d spans", len(paths), len(all))
	}
}

// dedicatedIndex finds exactly the dedicated keys: each at its column, and
// no other key, including keys one byte off and of the same lengths.
func TestDedicatedIndex(t *testing.T) {
	for j, d := range dedicated {
		if got, ok := dedicatedIndex([]byte(d.key)); !ok || got != j {
			t.Errorf("%q: column %d %v, want %d", d.key, got, ok, j)
		}
		for _, k := range []string{d.key[:len(d.key)-1] + "x", "x" + d.key[1:], d.key + ".x", d.key[:len(d.key)-1]} {
			if _, isDed := dedicatedByKey[k]; isDed {
				continue
			}
			if got, ok := dedicatedIndex([]byte(k)); ok {
				t.Errorf("%q is not dedicated, got column %d", k, got)
			}
		}
	}
	for _, k := range []string{"", "a", "client.port", "http.request.body.size", strings.Repeat("k", 300)} {
		if _, ok := dedicatedIndex([]byte(k)); ok {
			t.Errorf("%q is not dedicated", k)
		}
	}
}

// The cut's catalog, built from encoded spans through its caches, lists
// the same attribute names and values as the catalog built from the
// decoded spans, for the harness's spans (kinds interleaved, values
// repeating and not).
func TestRawCatalogMatchesCatalog(t *testing.T) {
	spans := loadgenBatch(rand.New(rand.NewPCG(7, 8)), 20_000, time.Unix(1_700_000_000, 0))
	want := newCatalog()
	want.addAttrs(spans)
	got := newRawCatalog()
	var buf []byte
	for i := range spans {
		buf = appendFramed(buf[:0], &spans[i])
		var r rawSpan
		if err := parseRawCatalog(buf, 4, len(buf)-4, &r, nil); err != nil {
			t.Fatal(err)
		}
		got.add(buf, &r, spans[i].Service, spans[i].Name, true)
	}
	values := func(vs []model.Value) map[string]bool {
		m := map[string]bool{}
		for _, v := range vs {
			m[fmt.Sprintf("%d:%s", v.Type, v.AsString())] = true
		}
		return m
	}
	exported := got.export(0, 0)
	if len(exported.Attrs) != len(want.attrs) {
		t.Fatalf("%d attribute keys, want %d", len(exported.Attrs), len(want.attrs))
	}
	many := 0
	for _, a := range exported.Attrs {
		w := want.attrs[attrKey{a.Scope, a.Key}]
		if w == nil {
			t.Fatalf("key %q (scope %d) not in the decoded catalog", a.Key, a.Scope)
		}
		var wv []model.Value
		for _, v := range w.values {
			wv = append(wv, v)
		}
		if g, w := values(a.Values), values(wv); !reflect.DeepEqual(g, w) {
			for v := range w {
				if !g[v] {
					t.Errorf("%q: value %s missing (%d values, want %d)", a.Key, v, len(g), len(w))
					break
				}
			}
			for v := range g {
				if !w[v] {
					t.Errorf("%q: value %s not in the decoded catalog", a.Key, v)
					break
				}
			}
		}
		if len(a.Values) > 8 {
			many++
		}
	}
	if many == 0 {
		t.Fatal("no key with more values than the cache holds; the test checks nothing")
	}
}

// A trace of many thousand spans is converted a batch of rows at a time:
// the builder buffers at most flushRowsAt rows (~1 KiB each) of it, where
// it held every row of the trace (a 200,000-span trace took 470 MB of a
// 256 MiB server), and the converted trace is exact though its rows were
// written in several batches, the arena reused between them.
func TestConvertHugeTraceBuffersBoundedRows(t *testing.T) {
	ctx := context.Background()
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	spans := loadgenBatch(rand.New(rand.NewPCG(9, 10)), 4*flushRowsAt+100, time.Unix(1_700_000_000, 0))
	id := model.TraceID{0xa1, 15: 0x9e}
	for i := range spans {
		spans[i].TraceID = id
	}
	var buf []byte
	for i := range spans {
		buf = appendFramed(buf, &spans[i])
	}
	bb, err := newBlockBuilder(ctx, e.storage, "huge-trace-test", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := bb.addRawTrace(buf, len(spans)); err != nil {
		t.Fatal(err)
	}
	if c := cap(bb.rows); c > 2*flushRowsAt {
		t.Errorf("the builder buffered rows for %d of the trace's %d spans, want at most %d", c, len(spans), 2*flushRowsAt)
	}
	bb.abort()

	convertSpans(t, e, spans)
	if l0, pq := blockFormats(e); l0 != 0 || pq != 1 {
		t.Fatalf("after compaction: %d level-0 and %d Parquet blocks, want 0 and 1", l0, pq)
	}
	checkAllTraces(t, e, spans)
}

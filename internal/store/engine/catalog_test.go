package engine

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// A catalog survives meta.json with every value of every type it keeps,
// in the typed lists, and smaller than the model.Value objects before.
func TestCatalogJSONRoundTrip(t *testing.T) {
	c := newCatalog()
	var spans []model.Span
	for i := range 300 {
		spans = append(spans, model.Span{
			StartUnixNano: uint64(1700000000000000000 + i),
			Attrs: []model.Attr{
				{Key: "url.full", Value: model.Str("http://inventory:8080/internal/v1/reserve/" + string(rune('a'+i%26)) + string(rune('a'+i/26)))},
				{Key: "http.response.body.size", Value: model.Int(int64(i * 37))},
				{Key: "ratio", Value: model.Float(float64(i) / 7)},
				{Key: "cache.hit", Value: model.Bool(i%2 == 0)},
				{Key: "weird", Value: model.Float(math.NaN())},
				{Key: "unset", Value: model.Value{}},
			},
			Resource: []model.Attr{{Key: "service.name", Value: model.Str("inventory")}},
		})
	}
	c.addAttrs(spans)
	exp := c.export()
	b, err := json.Marshal(exp)
	if err != nil {
		t.Fatalf("marshal (a NaN value must not fail the block): %v", err)
	}
	var back catalogJSON
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got := newCatalog()
	got.merge(&back)
	all := store.TimeRange{}
	for _, k := range []string{"url.full", "http.response.body.size", "ratio", "cache.hit", "unset"} {
		want := c.attrValues(store.ScopeSpan, k, all, 0)
		have := got.attrValues(store.ScopeSpan, k, all, 0)
		if len(want) == 0 || !slices.EqualFunc(want, have, func(x, y model.Value) bool { return x.Type == y.Type && x.AsString() == y.AsString() }) {
			t.Fatalf("%s: got %d values %v, want %d %v", k, len(have), have[:min(3, len(have))], len(want), want[:min(3, len(want))])
		}
	}
	if v := got.attrValues(store.ScopeSpan, "weird", all, 0); len(v) != 0 {
		t.Fatalf("NaN kept as %v", v)
	}
	if n := got.attrNames(store.ScopeResource, all); !slices.Equal(n, []string{"service.name"}) {
		t.Fatalf("resource keys %v", n)
	}

	// The same catalog as builds before the typed lists wrote it.
	type legacyAttr struct {
		Scope  store.Scope   `json:"scope"`
		Key    string        `json:"key"`
		Seen   seen          `json:"seen"`
		Values []model.Value `json:"values"`
	}
	var legacy []legacyAttr
	for _, a := range exp.Attrs {
		vs := slices.DeleteFunc(slices.Clone(a.Values), func(v model.Value) bool { return v.Type == model.TypeDouble && math.IsNaN(v.Float) })
		legacy = append(legacy, legacyAttr{a.Scope, a.Key, a.Seen, vs})
	}
	lb, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	nb, _ := json.Marshal(exp.Attrs)
	if len(nb)*2 > len(lb) {
		t.Fatalf("typed lists take %d bytes, model.Value objects %d: want less than half", len(nb), len(lb))
	}
}

// Blocks written before the typed lists (testdata/preSpillKeys, whose
// meta.json holds model.Value objects) still offer their values.
func TestCatalogReadsLegacyMeta(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata/preSpillKeys/blocks/dnderl3dm1u8-0c79b9c5", fileMeta))
	if err != nil {
		t.Fatal(err)
	}
	var legacy struct {
		Catalog struct {
			Attrs []struct {
				Scope  store.Scope       `json:"scope"`
				Key    string            `json:"key"`
				Values []json.RawMessage `json:"values"`
			} `json:"attrs"`
		} `json:"catalog"`
	}
	if err := json.Unmarshal(raw, &legacy); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/preSpillKeys")); err != nil {
		t.Fatal(err)
	}
	e := openT(t, Options{Dir: dir, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	defer e.Close()
	checked := 0
	for _, a := range legacy.Catalog.Attrs {
		if len(a.Values) == 0 {
			continue
		}
		got, err := e.AttributeValues(context.Background(), a.Scope, a.Key, store.TimeRange{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(a.Values) {
			t.Fatalf("%s: %d values, the old meta.json holds %d", a.Key, len(got), len(a.Values))
		}
		var first model.Value
		if err := json.Unmarshal(a.Values[0], &first); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(got, func(v model.Value) bool { return v.Type == first.Type && v.AsString() == first.AsString() }) {
			t.Fatalf("%s: %v not among %v", a.Key, first, got)
		}
		checked++
	}
	if checked < 3 {
		t.Fatalf("only %d keys with values in the testdata catalog", checked)
	}
}

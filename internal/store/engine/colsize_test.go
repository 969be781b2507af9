package engine

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"
)

// TestColumnSizes prints where block bytes go (run with -v and
// TRACEDX_COLSIZES=1); it is a tuning aid, skipped by default.
func TestColumnSizes(t *testing.T) {
	if os.Getenv("TRACEDX_COLSIZES") == "" {
		t.Skip("set TRACEDX_COLSIZES=1")
	}
	e := openT(t, Options{Dir: t.TempDir(), IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
	defer e.Close()
	g := newGen(5)
	ts := uint64(time.Now().UnixNano())
	for i := 0; i < 400; i++ {
		b := g.batch(500, ts, 5e6)
		ts += 200e6
		if err := e.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			e.Flush(context.Background())
		}
	}
	e.Flush(context.Background())
	e.Compact(context.Background())
	b := e.blocks[0]
	sizes := map[string]int64{}
	md := b.pf.Metadata()
	for _, rg := range md.RowGroups {
		for _, c := range rg.Columns {
			sizes[c.MetaData.PathInSchema[0]] += c.MetaData.TotalCompressedSize
		}
	}
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range sizes {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	n := float64(b.meta.Spans)
	for _, x := range l {
		t.Logf("%-32s %8.2f B/span", x.k, float64(x.v)/n)
	}
	t.Logf("data %.2f index %.2f total %.2f B/span, %d row groups", float64(b.meta.DataBytes)/n, float64(b.meta.IndexBytes)/n, float64(b.diskBytes())/n, len(md.RowGroups))
}

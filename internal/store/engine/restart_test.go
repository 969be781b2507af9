package engine

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/s3store"
)

// A node restarted with the local disk cache a previous start filled
// opens the bucket's blocks without a request per block (meta, trace
// index and the data file's size, footer and page index come from the
// cache), and finds what it found before; a damaged entry is fetched
// again.
func TestRestartOpensBlocksFromTheDiskCache(t *testing.T) {
	if !onS3() {
		t.Skip("set TRACEDX_TEST_S3_ENDPOINT: the disk cache is object storage's")
	}
	dir := t.TempDir()
	o := testOpts(dir)
	o.BlockMaxSpans = 6000 // several compacted blocks
	e := openT(t, o)
	r := rand.New(rand.NewPCG(41, 42))
	spans := scanTestSpans(r, 900)
	writeCompacted(t, e, spans, 4000)
	parquetBlocks := 0
	s := e.snap()
	for _, b := range s.blocks {
		if b.pf != nil {
			parquetBlocks++
		}
	}
	s.release()
	if parquetBlocks < 2 {
		t.Fatalf("%d Parquet blocks after compaction: the test needs several", parquetBlocks)
	}
	blocks := len(storedBlocks(t, dir))
	if blocks < 2 {
		t.Fatalf("%d blocks: the test needs several", blocks)
	}
	queries := make([]store.Query, 20)
	want := make([][]model.TraceSummary, len(queries))
	for i := range queries {
		queries[i] = scanTestQuery(r, spans)
		var err error
		if want[i], err = e.Search(context.Background(), queries[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := testS3Config(dir)
	cfg.CacheDir = t.TempDir()
	start := func() (*Engine, float64) {
		cfg.SpoolDir = t.TempDir()
		st, err := s3store.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		before := s3Requests(t, st)[0]
		e, err := Open(context.Background(), Options{Dir: t.TempDir(), Storage: st, IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return e, s3Requests(t, st)[0] - before
	}
	e, first := start() // fills the cache
	e.Close()
	e, again := start()
	defer e.Close()
	if first < float64(3*blocks) {
		t.Fatalf("the first start made %v requests for %d blocks: it should fetch each block's files", first, blocks)
	}
	if again > 2 {
		t.Fatalf("the restart made %v requests for %d blocks, want the listing only", again, blocks)
	}
	for i, q := range queries {
		got, err := e.Search(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, want[i], func(a, b model.TraceSummary) bool { return a.TraceID == b.TraceID }) {
			t.Fatalf("query %d after the restart: %d traces, %d before", i, len(got), len(want[i]))
		}
	}
}

package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// These tests need an S3 server: TRACEDX_TEST_S3_ENDPOINT (e.g.
// http://127.0.0.1:9000) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
// e2e/minio.sh starts MinIO and runs them.
func testConfig(t *testing.T) Config {
	t.Helper()
	ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT")
	if ep == "" {
		t.Skip("TRACEDX_TEST_S3_ENDPOINT not set (e2e/minio.sh runs this against MinIO)")
	}
	return Config{
		Endpoint: ep, Bucket: "tracedx-s3store-test",
		Prefix:   fmt.Sprintf("t%d-%s", time.Now().UnixNano(), t.Name()),
		SpoolDir: t.TempDir(),
	}
}

func open(t *testing.T, cfg Config) *Storage {
	t.Helper()
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeBlock(t *testing.T, s *Storage, id string, files map[string][]byte, commit bool) {
	t.Helper()
	w, err := s.Create(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f, err := w.File(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(files[n]); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if commit {
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	} else if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
}

func TestBlockVisibleOnlyWithItsMarker(t *testing.T) {
	ctx := context.Background()
	s := open(t, testConfig(t))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	// Data uploaded, marker not: a crash here leaves nothing listed.
	w, err := s.Create(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := w.File("data.parquet")
	f.Write(data)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m, _ := w.File("meta.json")
	m.Write([]byte(`{"v":1}`))
	m.Close()
	if ids, _ := s.List(ctx); len(ids) != 0 {
		t.Fatalf("block listed before commit: %v", ids)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.List(ctx); !slices.Equal(ids, []string{"b1"}) {
		t.Fatalf("after commit: %v", ids)
	}
	if b, err := s.ReadAll(ctx, "b1", "meta.json"); err != nil || string(b) != `{"v":1}` {
		t.Fatalf("meta: %q %v", b, err)
	}
	if n, err := s.Size(ctx, "b1"); err != nil || n != int64(len(data))+7 {
		t.Fatalf("size %d %v", n, err)
	}
	// An aborted block leaves no object behind.
	writeBlock(t, s, "b2", map[string][]byte{"data.parquet": data[:1000]}, false)
	if objs, _ := s.objects(ctx, "b2"); len(objs) != 0 {
		t.Fatalf("aborted block left %d objects", len(objs))
	}
	if err := s.Delete(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.List(ctx); len(ids) != 0 {
		t.Fatalf("deleted block listed: %v", ids)
	}
	if objs, _ := s.objects(ctx, "b1"); len(objs) != 0 {
		t.Fatalf("deleted block left %d objects", len(objs))
	}
	if _, err := s.Open(ctx, "b1", "data.parquet"); err == nil {
		t.Fatal("opened a deleted block's file")
	}
}

// Random ranged reads return the object's bytes, each chunk is fetched
// once while it stays cached, and no read downloads the whole object.
func TestRangedReads(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.ChunkBytes = 64 << 10
	cfg.CacheBytes = 1 << 20
	s := open(t, cfg)
	r := rand.New(rand.NewPCG(1, 2))
	data := writeRandomBlock(t, s, 5<<20+123, r)
	f, err := s.Open(ctx, "b", "data")
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != int64(len(data)) {
		t.Fatalf("size %d", f.Size())
	}
	for i := 0; i < 300; i++ {
		off := r.Int64N(int64(len(data)))
		n := r.IntN(200 << 10)
		buf := make([]byte, n)
		k, err := f.ReadAt(buf, off)
		want := data[off:min(off+int64(n), int64(len(data)))]
		if k != len(want) || !bytes.Equal(buf[:k], want) {
			t.Fatalf("ReadAt(%d, %d): %d bytes, equal=%v", n, off, k, bytes.Equal(buf[:k], want))
		}
		if k < n && !errors.Is(err, io.EOF) {
			t.Fatalf("short read without EOF: %v", err)
		}
	}
	down := testutil.ToFloat64(s.m.downloaded)
	// The footer read of a Parquet file: tiny reads at the end, served by
	// one chunk.
	before := testutil.ToFloat64(s.m.cacheMisses)
	tail := make([]byte, 8)
	for i := 0; i < 10; i++ {
		f.ReadAt(tail, int64(len(data)-8-i))
	}
	if misses := testutil.ToFloat64(s.m.cacheMisses) - before; misses > 1 {
		t.Fatalf("ten reads within one chunk fetched %v chunks", misses)
	}
	if int(down) < len(data)/2 {
		t.Logf("downloaded %.0f of %d bytes over 300 reads", down, len(data))
	}
	if hits := testutil.ToFloat64(s.m.cacheHits); hits == 0 {
		t.Fatal("range cache never hit")
	}

	// A sequential scan (a column read page by page) reads ahead: one GET
	// per readAhead chunks.
	s.DropCache()
	gets := func() float64 { return testutil.ToFloat64(s.m.requests.WithLabelValues("get_range", "ok")) }
	before = gets()
	page := make([]byte, 4096)
	for off := int64(0); off < int64(len(data)); off += int64(len(page)) {
		k, _ := f.ReadAt(page, off)
		if !bytes.Equal(page[:k], data[off:off+int64(k)]) {
			t.Fatalf("scan at %d: wrong bytes", off)
		}
	}
	chunks := float64(len(data))/float64(cfg.ChunkBytes) + 1
	ahead := float64(f.(*rangeFile).readAhead())
	if n := gets() - before; n > chunks/ahead+3 {
		t.Fatalf("sequential scan of %.0f chunks took %.0f GETs, want about %.0f", chunks, n, chunks/ahead+1)
	}
}

// FetchRanges returns each range's bytes, fetches ranges near each other
// with one GET and distant ones with GETs of their own, serves ranges
// whose chunks are cached without a GET, and clips ranges at the end.
func TestFetchRanges(t *testing.T) {
	ctx := context.Background()
	s, data, file := openRandomFile(t, 64<<10, 4<<20, rand.New(rand.NewPCG(5, 6)))
	f := file.(blockio.RangeFetcher)
	gets := func() float64 { return rangeGets(s) }
	check := func(ranges []blockio.Range, wantGets float64) {
		t.Helper()
		before := gets()
		got, err := f.FetchRanges(ctx, ranges)
		if err != nil {
			t.Fatal(err)
		}
		for i, rg := range ranges {
			want := data[rg.Off:min(rg.Off+rg.Len, int64(len(data)))]
			if !bytes.Equal(got[i], want) {
				t.Fatalf("range %d [%d,+%d): %d bytes, want %d, equal=%v", i, rg.Off, rg.Len, len(got[i]), len(want), bytes.Equal(got[i], want))
			}
		}
		if n := gets() - before; n != wantGets {
			t.Fatalf("%d ranges took %.0f GETs, want %.0f", len(ranges), n, wantGets)
		}
	}
	// Out of order: three ranges within fetchGap of each other (one GET),
	// one far from them, and one running past the end.
	far := int64(3 << 20)
	check([]blockio.Range{
		{Off: far + 100, Len: 5000},
		{Off: 10, Len: 1000},
		{Off: 2000, Len: 70 << 10},
		{Off: int64(len(data)) - 10, Len: 100},
		{Off: 2000 + 70<<10 + fetchGap - 1, Len: 1},
	}, 3)
	// Cached chunks serve a range without a GET.
	if _, err := file.ReadAt(make([]byte, 10), 1<<20); err != nil {
		t.Fatal(err)
	}
	check([]blockio.Range{{Off: 1<<20 + 5, Len: 100}}, 0)
	check(nil, 0)
	if _, err := f.FetchRanges(ctx, []blockio.Range{{Off: -1, Len: 3}}); err == nil {
		t.Fatal("negative offset accepted")
	}
}

// Prefetch caches the chunks of its ranges with one GET per group of runs
// less than prefetchGap apart, leaves the chunks in a gap uncached, and
// fetches nothing for cached chunks.
func TestPrefetchJoinsNearbyRuns(t *testing.T) {
	ctx := context.Background()
	s, data, file := openRandomFile(t, 16<<10, 4<<20, rand.New(rand.NewPCG(7, 8)))
	f := file.(*rangeFile)
	cs := s.cfg.ChunkBytes
	gets := func() float64 { return rangeGets(s) }
	down := func() float64 { return testutil.ToFloat64(s.m.downloaded) }
	cached := func(c int64) bool { _, ok := s.cache.peek(f.key, c); return ok }
	// Chunks 0-1, then 4 (a gap of two chunks), then one a gap of
	// prefetchGap further (its own GET), then one far away.
	near := int64(4)
	apart := near + 1 + prefetchGap/cs + 1
	far := int64(200)
	ranges := []blockio.Range{
		{Off: 100, Len: cs + 10},
		{Off: near*cs + 5, Len: 10},
		{Off: apart * cs, Len: 1},
		{Off: far*cs + 3, Len: 2},
	}
	g0, d0 := gets(), down()
	if err := f.Prefetch(ctx, ranges); err != nil {
		t.Fatal(err)
	}
	if n := gets() - g0; n != 3 {
		t.Fatalf("prefetch took %.0f GETs, want 3 (chunks 0-4 joined)", n)
	}
	if d := down() - d0; d != float64(5+1+1)*float64(cs) {
		t.Fatalf("prefetch downloaded %.0f bytes, want %d", d, 7*cs)
	}
	for _, c := range []int64{0, 1, near, apart, far} {
		if !cached(c) {
			t.Fatalf("chunk %d not cached", c)
		}
	}
	for _, c := range []int64{2, 3} {
		if cached(c) {
			t.Fatalf("chunk %d of a gap cached", c)
		}
	}
	// Served from the cache, with the object's bytes.
	g0 = gets()
	buf := make([]byte, cs+10)
	if _, err := f.ReadAt(buf, 100); err != nil || !bytes.Equal(buf, data[100:100+cs+10]) {
		t.Fatalf("read of prefetched chunks: %v", err)
	}
	if err := f.Prefetch(ctx, ranges[1:]); err != nil {
		t.Fatal(err)
	}
	if n := gets() - g0; n != 0 {
		t.Fatalf("reading and prefetching cached chunks took %.0f GETs", n)
	}
}

// Throttling (503 SlowDown) and dropped connections are retried: every
// operation succeeds through a proxy that fails a third of the requests.
func TestThrottlingIsRetried(t *testing.T) {
	cfg := testConfig(t)
	target, err := url.Parse(cfg.Endpoint)
	if err != nil || target.Scheme == "" {
		t.Skip("needs an http:// endpoint to proxy")
	}
	var n, failed atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			failed.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	cfg.Endpoint = srv.URL
	cfg.ChunkBytes = 16 << 10
	s := open(t, cfg)
	ctx := context.Background()
	data := bytes.Repeat([]byte("tracedx "), 40_000)
	for i := 0; i < 5; i++ {
		writeBlock(t, s, fmt.Sprint("b", i), map[string][]byte{"data": data, "meta.json": []byte("{}")}, true)
	}
	ids, err := s.List(ctx)
	if err != nil || len(ids) != 5 {
		t.Fatalf("list through throttling: %v %v", ids, err)
	}
	for _, id := range ids {
		f, err := s.Open(ctx, id, "data")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(data))
		if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
			t.Fatalf("read through throttling: %v", err)
		}
	}
	if failed.Load() == 0 {
		t.Fatal("the proxy throttled nothing")
	}
	t.Logf("%d of %d requests throttled, all operations succeeded", failed.Load(), n.Load())
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	s := open(t, testConfig(t))
	start := time.Now()
	_, err := s.ReadAll(context.Background(), "missing", "meta.json")
	if err == nil || !strings.Contains(err.Error(), "NoSuchKey") && !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing object: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("a missing object took %v: retried", time.Since(start))
	}
}

func TestRangeCacheEvictsLeastRecent(t *testing.T) {
	c := newRangeCache(3 * 10)
	for i := int64(0); i < 3; i++ {
		c.put("k", i, make([]byte, 10))
	}
	c.get("k", 0) // 1 is now the least recent
	c.put("k", 3, make([]byte, 10))
	if _, ok := c.peek("k", 1); ok {
		t.Fatal("least recent chunk kept")
	}
	for _, n := range []int64{0, 2, 3} {
		if _, ok := c.peek("k", n); !ok {
			t.Fatalf("chunk %d evicted", n)
		}
	}
	c.put("other/x", 0, make([]byte, 5))
	c.dropPrefix("k")
	if c.bytes != 5 || c.ll.Len() != 1 {
		t.Fatalf("after dropPrefix: %d bytes, %d chunks", c.bytes, c.ll.Len())
	}
}

func TestDiskCacheBoundedAndKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	c, err := newDiskCache(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	get := func(id, name string) ([]byte, bool) {
		b, ok, _ := c.get(id, name)
		return b, ok
	}
	c.put("b1", "index", bytes.Repeat([]byte{1}, 200))
	c.put("b1", "meta.json", []byte("{}"))
	if b, ok := get("b1", "index"); !ok || len(b) != 200 {
		t.Fatalf("get: %d bytes, %v", len(b), ok)
	}
	os.WriteFile(filepath.Join(dir, "b1", ".tmp-torn"), []byte("x"), 0o644)
	// A restart finds the entries and drops a torn write.
	c, err = newDiskCache(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := get("b1", "meta.json"); !ok || c.bytes != 202+2*trailerLen {
		t.Fatalf("after reopen: ok=%v bytes=%d", ok, c.bytes)
	}
	if _, err := os.Stat(filepath.Join(dir, "b1", ".tmp-torn")); err == nil {
		t.Fatal("torn temporary file kept")
	}
	// Over the bound, the least recently used go first.
	time.Sleep(10 * time.Millisecond)
	for i := 0; i < 5; i++ {
		c.put(fmt.Sprint("b", i+2), "index", bytes.Repeat([]byte{2}, 200))
		time.Sleep(2 * time.Millisecond)
	}
	if c.bytes > 1000 {
		t.Fatalf("cache holds %d bytes, bound 1000", c.bytes)
	}
	if _, ok := get("b1", "index"); ok {
		t.Fatal("least recently used entry kept over the bound")
	}
	if _, ok := get("b6", "index"); !ok {
		t.Fatal("newest entry evicted")
	}
	c.drop("b6")
	if _, ok := get("b6", "index"); ok {
		t.Fatal("dropped block still cached")
	}
}

func TestReadAllFromDiskCacheAfterRestart(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.CacheDir = t.TempDir()
	s := open(t, cfg)
	writeBlock(t, s, "b", map[string][]byte{"index": []byte("the index"), "meta.json": []byte("{}")}, true)
	if b, err := s.ReadAll(ctx, "b", "index"); err != nil || string(b) != "the index" {
		t.Fatalf("first read: %q %v", b, err)
	}
	s = open(t, cfg) // restart
	if b, err := s.ReadAll(ctx, "b", "index"); err != nil || string(b) != "the index" {
		t.Fatalf("read after restart: %q %v", b, err)
	}
	if hits := testutil.ToFloat64(s.m.diskHits); hits != 1 {
		t.Fatalf("disk cache hits after restart: %v, want 1", hits)
	}
	if err := s.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAll(ctx, "b", "index"); err == nil {
		t.Fatal("deleted block still read from the disk cache")
	}
}

// writeRandomBlock writes block "b" with a data file of n random bytes
// drawn from r (and an empty meta.json), and returns the data.
// openRandomFile opens a block file of n random bytes, on a storage whose
// chunks are chunk bytes.
func openRandomFile(t *testing.T, chunk int64, n int, r *rand.Rand) (*Storage, []byte, blockio.File) {
	t.Helper()
	cfg := testConfig(t)
	cfg.ChunkBytes = chunk
	s := open(t, cfg)
	data := writeRandomBlock(t, s, n, r)
	f, err := s.Open(context.Background(), "b", "data")
	if err != nil {
		t.Fatal(err)
	}
	return s, data, f
}

// rangeGets counts the ranged GETs that succeeded.
func rangeGets(s *Storage) float64 {
	return testutil.ToFloat64(s.m.requests.WithLabelValues("get_range", "ok"))
}

func writeRandomBlock(t *testing.T, s *Storage, n int, r *rand.Rand) []byte {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.UintN(256))
	}
	writeBlock(t, s, "b", map[string][]byte{"data": data, "meta.json": []byte("{}")}, true)
	return data
}

func TestDirsListsTheNamesUnderAPrefix(t *testing.T) {
	cfg := testConfig(t)
	// Listing needs no spool directory (a multi-tenant node lists its
	// tenants so); writing a block does.
	lister := cfg
	lister.SpoolDir = ""
	root := open(t, lister)
	if _, err := root.Create(context.Background(), "b"); err == nil {
		t.Error("Create without a spool directory succeeded")
	}
	for _, id := range []string{"shop", "billing"} {
		sub := cfg
		sub.Prefix = cfg.Prefix + "/tenants/" + id
		sub.SpoolDir = t.TempDir()
		writeBlock(t, open(t, sub), "b1", map[string][]byte{"meta.json": []byte("{}")}, true)
	}
	// An object right under the listed prefix names nothing.
	if _, err := root.client.PutObject(context.Background(), cfg.Bucket, cfg.Prefix+"/tenants/stray", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := root.Dirs(context.Background(), "tenants")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"billing", "shop"}) {
		t.Fatalf("Dirs(tenants) = %q, want [billing shop]", got)
	}
	if got, err := root.Dirs(context.Background(), "nothing-here"); err != nil || len(got) != 0 {
		t.Fatalf("Dirs(nothing-here) = %q, %v; want none", got, err)
	}
}

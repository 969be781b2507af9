package findingstore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// realistic is a finding shaped like the detectors' (a statement, a
// culprit, evidence, a fix): text that repeats from finding to finding.
func realistic(i int, at time.Time) Stored {
	stmt := []string{
		"SELECT id, status, total FROM orders WHERE customer_id = ? ORDER BY created_at DESC LIMIT ?",
		"SELECT sku, qty, price FROM order_items WHERE order_id = ?",
		"UPDATE stock SET reserved = reserved + ? WHERE sku = ?",
	}[i%3]
	svc := []string{"frontend", "checkout", "inventory"}[i%3]
	f := finding("slow_query", svc, tid(i), at)
	f.Title = fmt.Sprintf("%s: %s ran %d ms, %.1fx its usual", svc, stmt, 40+i%50, 10+float64(i%70)/3)
	f.SpanIDs = []string{fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15)}
	f.Evidence = map[string]any{"shape": stmt, "statement": stmt, "db_system": "postgresql", "duration_ms": 40 + i%50,
		"entry": map[string]any{"span_id": fmt.Sprintf("%016x", uint64(i)*31), "service": svc, "operation": "GET /api/checkout"}}
	f.Culprit = &analyze.Culprit{Service: svc, Operation: stmt, SpanID: f.SpanIDs[0],
		Reason: svc + " issues this postgresql statement, which ran long itself, so the statement and what it reads are the place to look."}
	f.Fix = "Look at the statement's plan (EXPLAIN ANALYZE): an index for its filter and sort, fewer rows read, or a cached result."
	return f
}

// answers is what the store says to a set of queries, as JSON.
func answers(t *testing.T, s *Store, n int) string {
	t.Helper()
	ctx := context.Background()
	var out []any
	for _, q := range []Query{{Limit: n + 10}, {Limit: 7}, {Kind: "slow_query", Service: "checkout", Limit: 50}} {
		l, err := s.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} {
		l, err := s.ForTrace(ctx, tid(i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	out = append(out, s.Counts(time.Time{}, time.Time{}), s.Len())
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fill writes n realistic findings, one a second, into a store with
// segments of 200 findings, closes it and returns what it answered before
// closing.
func fill(t *testing.T, dir string, from, n int) string {
	t.Helper()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(from) * time.Second)}
	s, err := Open(Options{Dir: dir, Now: c.Now, SegmentMaxFindings: 200})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if err := s.Put(context.Background(), []Stored{realistic(i, c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
	}
	a := answers(t, s, from+n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return a
}

func openDir(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, SegmentMaxFindings: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitReady(t, s)
	return s
}

func dirBytes(t *testing.T, dir, pattern string) int64 {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, pattern))
	var n int64
	for _, name := range names {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// Sealed segments are stored compressed, in a fraction of the JSON's
// bytes, and the store answers exactly what it answers from plain
// segments, before and after a restart.
func TestSealedSegmentsAreCompressed(t *testing.T) {
	const n = 1000
	packed, plain := t.TempDir(), t.TempDir()
	before := fill(t, packed, 0, n)
	compressSealed = false
	plainAnswers := fill(t, plain, 0, n)
	compressSealed = true
	if before != plainAnswers {
		t.Fatal("answers from compressed segments differ from plain ones")
	}
	if names, _ := filepath.Glob(filepath.Join(packed, "*"+segSuffix)); len(names) != 0 {
		t.Fatalf("plain segments left after sealing: %v", names)
	}
	z, j := dirBytes(t, packed, "*"+zSuffix), dirBytes(t, plain, "*"+segSuffix)
	if z == 0 || z*4 > j {
		t.Fatalf("compressed segments take %d bytes for %d of JSON lines (want under a quarter)", z, j)
	}
	s := openDir(t, packed)
	if got := answers(t, s, n); got != before {
		t.Fatal("answers after reopening differ")
	}
	if d := s.DiskBytes(); d != z+dirBytes(t, packed, "*"+idxSuffix) {
		t.Fatalf("DiskBytes %d, files %d", d, z+dirBytes(t, packed, "*"+idxSuffix))
	}
	// New ids continue after the compressed segments' last.
	if err := s.Put(context.Background(), []Stored{realistic(n, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))}); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.List(context.Background(), Query{Limit: 1}); len(l) != 1 || l[0].ID != n {
		t.Fatalf("id after reopen: %+v", l)
	}
}

// Segments written before compression (plain JSON lines) stay readable
// beside compressed ones, and are not rewritten.
func TestPlainSegmentsStayReadable(t *testing.T) {
	dir := t.TempDir()
	compressSealed = false
	fill(t, dir, 0, 500)
	compressSealed = true
	plainBefore, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	fill(t, dir, 500, 500)
	plainAfter, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if !reflect.DeepEqual(plainBefore, plainAfter) || len(plainBefore) == 0 {
		t.Fatalf("plain segments before %v, after %v", plainBefore, plainAfter)
	}
	ref := t.TempDir()
	compressSealed = false
	want := fill(t, ref, 0, 1000)
	compressSealed = true
	s := openDir(t, dir)
	if got := answers(t, s, 1000); got != want {
		t.Fatal("answers over plain and compressed segments differ from plain ones")
	}
}

// A crash after the compressed segment is renamed into place but before
// the plain one is removed leaves both; opening keeps the compressed one.
// A crash while writing it leaves only a temporary file, which goes.
func TestCompressionCrashLeftovers(t *testing.T) {
	dir, ref := t.TempDir(), t.TempDir()
	want := fill(t, dir, 0, 400)
	compressSealed = false
	fill(t, ref, 0, 400)
	compressSealed = true
	plain, _ := filepath.Glob(filepath.Join(ref, "*"+segSuffix))
	for _, p := range plain {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	zs, _ := filepath.Glob(filepath.Join(dir, "*"+zSuffix))
	if err := os.WriteFile(zs[0]+".tmp", []byte("half a segment"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openDir(t, dir)
	if got := answers(t, s, 400); got != want {
		t.Fatal("answers differ after the leftovers")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, name := range left {
		if strings.HasSuffix(name, segSuffix) || strings.HasSuffix(name, ".tmp") {
			t.Fatalf("leftover %s kept", name)
		}
	}
}

// Segments sealed while the store runs are compressed in the background,
// and queries meanwhile and after answer as from plain segments.
func TestSegmentsCompressWhileOpen(t *testing.T) {
	ref := t.TempDir()
	compressSealed = false
	want := fill(t, ref, 0, 450)
	compressSealed = true

	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := Open(Options{Dir: dir, Now: c.Now, SegmentMaxFindings: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 450 {
		if err := s.Put(context.Background(), []Stored{realistic(i, c.Now())}); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Second)
		if i%50 == 0 {
			answers(t, s, i+1) // reads race with the background swaps
		}
	}
	s.packWG.Wait()
	if zs, _ := filepath.Glob(filepath.Join(dir, "*"+zSuffix)); len(zs) != 2 {
		t.Fatalf("%d compressed segments while open, want the 2 sealed", len(zs))
	}
	if got := answers(t, s, 450); got != want {
		t.Fatal("answers differ from plain segments'")
	}
}

// Indexes of the layout before compressed records ("TDXFIX02": records
// as they are) are read as they are; the compressed ones are smaller.
func TestIndexV02StaysReadable(t *testing.T) {
	dir := t.TempDir()
	want := fill(t, dir, 0, 1000)
	idx, _ := filepath.Glob(filepath.Join(dir, "*"+idxSuffix))
	if len(idx) == 0 {
		t.Fatal("no index files")
	}
	var packed, plain int64
	for _, p := range idx {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:8]) != idxMagic {
			t.Fatalf("%s starts %q", p, b[:8])
		}
		m, _, off, err := readMeta(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := readPackedRecords(f, off, m.count)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		old := append([]byte(idxMagic02), b[8:off]...)
		old = append(old, recs...)
		if err := os.WriteFile(p, old, 0o644); err != nil {
			t.Fatal(err)
		}
		packed += int64(len(b))
		plain += int64(len(old))
	}
	if packed*2 > plain {
		t.Fatalf("compressed indexes take %d bytes, plain %d (want under half)", packed, plain)
	}
	t.Logf("indexes: %d bytes compressed, %d plain", packed, plain)
	s := openDir(t, dir)
	if got := answers(t, s, 1000); got != want {
		t.Fatal("answers from TDXFIX02 indexes differ")
	}
}

// BenchmarkCompressSegment measures sealing's compression of realistic
// findings (one op: a segment of 10,000):
//
//	go test -run '^$' -bench CompressSegment -benchmem ./internal/findingstore/
func BenchmarkCompressSegment(b *testing.B) {
	var lines []byte
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 10_000 {
		st := realistic(i, at)
		st.ID = uint64(i)
		j, err := json.Marshal(&st)
		if err != nil {
			b.Fatal(err)
		}
		lines = append(append(lines, j...), '\n')
	}
	src := filepath.Join(b.TempDir(), "plain")
	if err := os.WriteFile(src, lines, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	dst := filepath.Join(b.TempDir(), "x"+zSuffix)
	b.SetBytes(int64(len(lines)))
	b.ResetTimer()
	for range b.N {
		if err := compressSegment(f, int64(len(lines)), dst); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st, _ := os.Stat(dst)
	b.ReportMetric(float64(st.Size())/float64(len(lines)), "ratio")
}

// A compressed segment whose index is gone (removed by hand, as
// bench/findingstart -unindexed does) is indexed in the background from
// its compressed lines, and answers as before.
func TestCompressedSegmentWithoutIndex(t *testing.T) {
	dir := t.TempDir()
	want := fill(t, dir, 0, 600)
	idx, _ := filepath.Glob(filepath.Join(dir, "*"+idxSuffix))
	for _, p := range idx {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	s := openDir(t, dir)
	if got := answers(t, s, 600); got != want {
		t.Fatal("answers after indexing compressed segments differ")
	}
	if err := s.Put(context.Background(), []Stored{realistic(600, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))}); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.List(context.Background(), Query{Limit: 1}); len(l) != 1 || l[0].ID != 600 {
		t.Fatalf("id after indexing: %+v", l)
	}
}

package s3store

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// requests counts the successful requests of op so far.
func requests(s *Storage, op string) float64 {
	return testutil.ToFloat64(s.m.requests.WithLabelValues(op, "ok"))
}

// damage flips a byte in the middle of a disk cache entry.
func damage(t *testing.T, dir, id, name string) {
	t.Helper()
	p := filepath.Join(dir, cacheRel(id, name))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A damaged entry of the disk cache (a flipped bit, a file cut short) is
// not returned: it is dropped, the file fetched from the bucket again and
// cached anew.
func TestDiskCacheDamagedEntryIsRefetched(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.CacheDir = t.TempDir()
	s := open(t, cfg)
	index := bytes.Repeat([]byte("the index "), 100)
	writeBlock(t, s, "b", map[string][]byte{"index": index, "meta.json": []byte("{}")}, true)
	if _, err := s.ReadAll(ctx, "b", "index"); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []bool{false, true} {
		if cut {
			p := filepath.Join(cfg.CacheDir, cacheRel("b", "index"))
			if err := os.Truncate(p, 300); err != nil {
				t.Fatal(err)
			}
		} else {
			damage(t, cfg.CacheDir, "b", "index")
		}
		s = open(t, cfg) // restart
		got, err := s.ReadAll(ctx, "b", "index")
		if err != nil || !bytes.Equal(got, index) {
			t.Fatalf("cut=%v: read %d bytes (%v), want the index", cut, len(got), err)
		}
		if n := testutil.ToFloat64(s.m.diskDamaged); n != 1 {
			t.Fatalf("cut=%v: %v damaged entries counted, want 1", cut, n)
		}
		if n := requests(s, "get"); n != 1 {
			t.Fatalf("cut=%v: %v GETs, want the file fetched again", cut, n)
		}
		s = open(t, cfg) // the entry was rewritten whole
		if got, err := s.ReadAll(ctx, "b", "index"); err != nil || !bytes.Equal(got, index) || requests(s, "get") != 0 {
			t.Fatalf("cut=%v: after refetch: %d bytes, %v, %v GETs", cut, len(got), err, requests(s, "get"))
		}
	}
}

// A file's kept tail opens it after a restart without a request and
// serves reads inside the tail; reads before it go to the bucket. A
// damaged tail is ignored: the file opens from the bucket.
func TestKeptTailOpensWithoutRequests(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.CacheDir = t.TempDir()
	s := open(t, cfg)
	r := rand.New(rand.NewPCG(7, 8))
	data := writeRandomBlock(t, s, 300<<10, r)
	f, err := s.Open(ctx, "b", "data")
	if err != nil {
		t.Fatal(err)
	}
	tailOff := int64(len(data) - 5000)
	if err := f.(blockio.TailKeeper).KeepTail(ctx, tailOff); err != nil {
		t.Fatal(err)
	}
	read := func(f blockio.File, off, n int64) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[off:off+n]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
	}
	s = open(t, cfg) // restart
	f, err = s.Open(ctx, "b", "data")
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", f.Size(), len(data))
	}
	read(f, tailOff+100, 4000)
	read(f, int64(len(data))-8, 8)
	if n := requests(s, "stat") + requests(s, "get_range"); n != 0 {
		t.Fatalf("%v requests to open the file and read its tail, want none", n)
	}
	read(f, 1000, 5000)
	if n := requests(s, "get_range"); n != 1 {
		t.Fatalf("%v GETs for a read before the tail, want 1", n)
	}

	damage(t, cfg.CacheDir, "b", tailEntry("data"))
	s = open(t, cfg)
	if f, err = s.Open(ctx, "b", "data"); err != nil {
		t.Fatal(err)
	}
	if n := requests(s, "stat"); n != 1 {
		t.Fatalf("damaged tail: %v HEADs, want the size asked of the bucket", n)
	}
	read(f, tailOff+100, 4000)
	if n := testutil.ToFloat64(s.m.diskDamaged); n != 1 {
		t.Fatalf("%v damaged entries counted, want 1", n)
	}
}

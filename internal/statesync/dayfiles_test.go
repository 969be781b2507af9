package statesync

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
	"github.com/tracedx/tracedx/internal/store/blockio/blockiotest"
)

// dayNamed parses <prefix>YYYYMMDD.log, the shape of the history files.
func dayNamed(prefix string) func(string) (time.Time, bool) {
	return func(name string) (time.Time, bool) {
		s, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return time.Time{}, false
		}
		s, ok = strings.CutSuffix(s, ".log")
		if !ok {
			return time.Time{}, false
		}
		t, err := time.Parse("20060102", s)
		return t, err == nil
	}
}

// blocksOf lists the bucket's blocks of one file.
func blocksOf(t *testing.T, st blockio.Storage, file string) []string {
	t.Helper()
	ids, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, file+idSep) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func TestDayFilesSurviveTheDisk(t *testing.T) {
	for name, open := range blockiotest.Storages("tracedx-state-test") {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := open(t)
			clock := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
			now := func() time.Time { return clock }
			sets := func(dir string) []Days {
				return []Days{
					{Dir: filepath.Join(dir, "metrics"), Day: dayNamed("red-"), Retention: 3 * 24 * time.Hour},
					{Dir: filepath.Join(dir, "summaries"), Day: dayNamed("sum-"), Retention: 30 * 24 * time.Hour},
				}
			}
			dir := t.TempDir()
			write := func(dir, sub, name, s string, flag int) {
				p := filepath.Join(dir, sub, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|flag, 0o644)
				if err == nil {
					_, err = f.WriteString(s)
					f.Close()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			read := func(dir, sub, name string) string {
				b, err := os.ReadFile(filepath.Join(dir, sub, name))
				if err != nil {
					return "missing"
				}
				return string(b)
			}
			restored := func(sub, name string) string {
				t.Helper()
				fresh := t.TempDir()
				if err := NewDayMirror(bucket, sets(fresh), 0, now, quiet).Restore(ctx); err != nil {
					t.Fatal(err)
				}
				return read(fresh, sub, name)
			}
			upload := func(m *DayMirror, final bool) {
				t.Helper()
				if err := m.Upload(ctx, final); err != nil {
					t.Fatal(err)
				}
			}
			const today = "red-20260310.log"
			write(dir, "metrics", today, "0123456789", os.O_TRUNC)
			write(dir, "metrics", "red-20260308.log", "two days ago", os.O_TRUNC)
			write(dir, "summaries", "sum-20260301.log", "archived", os.O_TRUNC)
			write(dir, "metrics", "unrelated.txt", "not a day file", os.O_TRUNC)
			m := NewDayMirror(bucket, sets(dir), 5*time.Minute, now, quiet)
			upload(m, false)
			if ids, _ := bucket.List(ctx); len(ids) != 3 {
				t.Fatalf("bucket holds %v, want one block for each of the 3 day files", ids)
			}

			// Today's file grows: within the interval it is not uploaded
			// again; after it, only what it gained is.
			write(dir, "metrics", today, "ab", os.O_APPEND)
			clock = clock.Add(time.Minute)
			upload(m, false)
			if got := restored("metrics", today); got != "0123456789" {
				t.Fatalf("copy within the interval: %q, want the first upload", got)
			}
			clock = clock.Add(5 * time.Minute)
			upload(m, false)
			if b := blocksOf(t, bucket, today); len(b) != 2 || !strings.HasSuffix(b[1], "000000000000010-000000000000012") {
				t.Fatalf("blocks after an append: %v, want the first and one of bytes 10-12", b)
			}
			if got := restored("metrics", today); got != "0123456789ab" {
				t.Fatalf("restored %q after an append", got)
			}

			// A restarted node (a new mirror) with the same files: nothing
			// unchanged is uploaded again; an append goes on the parts.
			m = NewDayMirror(bucket, sets(dir), 5*time.Minute, now, quiet)
			upload(m, true)
			if b := blocksOf(t, bucket, today); len(b) != 2 {
				t.Fatalf("unchanged file uploaded again after a restart: %v", b)
			}
			write(dir, "metrics", today, "c", os.O_APPEND)
			upload(m, true)
			if b := blocksOf(t, bucket, today); len(b) != 3 || !strings.HasSuffix(b[2], "000000000000012-000000000000013") {
				t.Fatalf("blocks after an append following a restart: %v", b)
			}

			// Once the parts outweigh the first block, the whole file is
			// uploaded again and the parts deleted.
			write(dir, "metrics", today, "defghijk", os.O_APPEND)
			upload(m, true)
			if b := blocksOf(t, bucket, today); len(b) != 1 || !strings.HasSuffix(b[0], "000000000000000-000000000000021") {
				t.Fatalf("blocks once the parts outweigh the first: %v, want one of the whole file", b)
			}
			// A file whose copied bytes changed (a repair cut a torn end) is
			// uploaded whole too.
			write(dir, "metrics", today, "0123456789abcdefghijkX", os.O_TRUNC)
			upload(m, true)
			if b := blocksOf(t, bucket, today); len(b) != 2 {
				t.Fatalf("blocks after an append: %v", b)
			}
			// Longer, so only the copied bytes tell.
			write(dir, "metrics", today, "0123456789abcdefghijkYZ", os.O_TRUNC)
			clock = clock.Add(time.Second) // a new generation's id
			upload(m, true)
			if got := restored("metrics", today); got != "0123456789abcdefghijkYZ" {
				t.Fatalf("restored %q after a rewrite", got)
			}
			if b := blocksOf(t, bucket, today); len(b) != 1 {
				t.Fatalf("blocks after a rewrite: %v, want the new whole file only", b)
			}

			// The disk is lost: a new data directory gets every day back.
			fresh := t.TempDir()
			if err := NewDayMirror(bucket, sets(fresh), 0, now, quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			for _, f := range [][3]string{{"metrics", "red-20260308.log", "two days ago"}, {"summaries", "sum-20260301.log", "archived"},
				{"metrics", "unrelated.txt", "missing"}} {
				if got := read(fresh, f[0], f[1]); got != f[2] {
					t.Fatalf("restored %s: %q, want %q", f[1], got, f[2])
				}
			}
			// A file present locally is kept.
			write(dir, "metrics", "red-20260308.log", ", local", os.O_APPEND)
			if err := NewDayMirror(bucket, sets(dir), 0, now, quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			if got := read(dir, "metrics", "red-20260308.log"); got != "two days ago, local" {
				t.Fatalf("local file replaced by the bucket's: %q", got)
			}

			// A file that stopped growing is joined into one block.
			write(dir, "summaries", "sum-20260301.log", ", more", os.O_APPEND)
			upload(m, true)
			if b := blocksOf(t, bucket, "sum-20260301.log"); len(b) != 2 {
				t.Fatalf("blocks after an append: %v", b)
			}
			clock = clock.Add(30 * time.Minute)
			upload(m, false)
			if b := blocksOf(t, bucket, "sum-20260301.log"); len(b) != 2 {
				t.Fatalf("blocks of a file quiet for 30 minutes: %v, want them kept", b)
			}
			clock = clock.Add(30 * time.Minute)
			upload(m, false)
			if b := blocksOf(t, bucket, "sum-20260301.log"); len(b) != 1 {
				t.Fatalf("blocks of a file quiet for an hour: %v, want one", b)
			}
			if got := restored("summaries", "sum-20260301.log"); got != "archived, more" {
				t.Fatalf("restored %q after joining", got)
			}

			// Two days on, 2026-03-08 is past the metrics' 3 days: retention
			// deletes its copy, and a restore does not bring it back.
			clock = clock.Add(2 * 24 * time.Hour)
			os.Remove(filepath.Join(dir, "metrics", "red-20260308.log"))
			upload(m, false)
			if b := blocksOf(t, bucket, "red-20260308.log"); len(b) != 0 {
				t.Fatalf("expired day still in the bucket: %v", b)
			}
			if ids, _ := bucket.List(ctx); len(ids) != 2 {
				t.Fatalf("bucket holds %v, want today's metrics and the archive", ids)
			}
		})
	}
}

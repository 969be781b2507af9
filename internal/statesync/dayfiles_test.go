package statesync

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
			write := func(dir, sub, name, s string) {
				p := filepath.Join(dir, sub, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
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
			write(dir, "metrics", "red-20260310.log", "today 1")
			write(dir, "metrics", "red-20260308.log", "two days ago")
			write(dir, "summaries", "sum-20260301.log", "archived")
			write(dir, "metrics", "unrelated.txt", "not a day file")
			m := NewDayMirror(bucket, sets(dir), 5*time.Minute, now, quiet)
			if err := m.Upload(ctx, false); err != nil {
				t.Fatal(err)
			}
			// Today's file grows; within the interval it is not uploaded
			// again, after it (or at shutdown) it is, replacing its copy.
			write(dir, "metrics", "red-20260310.log", "today 1+2")
			clock = clock.Add(time.Minute)
			if err := m.Upload(ctx, false); err != nil {
				t.Fatal(err)
			}
			lost := t.TempDir()
			if err := NewDayMirror(bucket, sets(lost), 0, now, quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			if got := read(lost, "metrics", "red-20260310.log"); got != "today 1" {
				t.Fatalf("copy within the interval: %q, want the first upload", got)
			}
			clock = clock.Add(5 * time.Minute)
			if err := m.Upload(ctx, false); err != nil {
				t.Fatal(err)
			}
			ids, _ := bucket.List(ctx)
			slices.Sort(ids)
			if len(ids) != 3 {
				t.Fatalf("bucket holds %v, want one copy of each of the 3 day files", ids)
			}
			for _, id := range ids {
				if strings.HasPrefix(id, "unrelated") {
					t.Fatalf("a file that is no day file was copied: %v", ids)
				}
			}

			// The disk is lost: a new data directory gets every day back.
			fresh := t.TempDir()
			if err := NewDayMirror(bucket, sets(fresh), 0, now, quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			for _, f := range [][3]string{{"metrics", "red-20260310.log", "today 1+2"}, {"metrics", "red-20260308.log", "two days ago"},
				{"summaries", "sum-20260301.log", "archived"}} {
				if got := read(fresh, f[0], f[1]); got != f[2] {
					t.Fatalf("restored %s: %q, want %q", f[1], got, f[2])
				}
			}
			// A file present locally is kept.
			write(dir, "metrics", "red-20260308.log", "two days ago, local")
			if err := NewDayMirror(bucket, sets(dir), 0, now, quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			if got := read(dir, "metrics", "red-20260308.log"); got != "two days ago, local" {
				t.Fatalf("local file replaced by the bucket's: %q", got)
			}

			// Two days on, 2026-03-08 is past the metrics' 3 days: retention
			// deletes its copy, and a restore does not bring it back.
			clock = clock.Add(2 * 24 * time.Hour)
			os.Remove(filepath.Join(dir, "metrics", "red-20260308.log"))
			if err := m.Upload(ctx, false); err != nil {
				t.Fatal(err)
			}
			ids, _ = bucket.List(ctx)
			for _, id := range ids {
				if strings.HasPrefix(id, "red-20260308") {
					t.Fatalf("expired day still in the bucket: %v", ids)
				}
			}
			if len(ids) != 2 {
				t.Fatalf("bucket holds %v, want today's metrics and the archive", ids)
			}
		})
	}
}

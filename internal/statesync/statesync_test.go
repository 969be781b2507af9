package statesync

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/tracedx/tracedx/internal/store/blockio/blockiotest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestStateSurvivesTheDisk(t *testing.T) {
	stores := blockiotest.Storages("tracedx-state-test")
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			bucket := open(t)
			dir := t.TempDir()
			files := func(dir string) []File {
				return []File{{Name: "baseline.json.gz", Path: filepath.Join(dir, "baselines", "baseline.json.gz")},
					{Name: "systemic.gob.gz", Path: filepath.Join(dir, "systemic", "systemic.gob.gz")}}
			}
			write := func(f File, s string) {
				os.MkdirAll(filepath.Dir(f.Path), 0o755)
				if err := os.WriteFile(f.Path, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := New(bucket, files(dir), quiet)
			// Only one of the two written yet.
			write(files(dir)[0], "baselines v1")
			if err := m.Upload(ctx); err != nil {
				t.Fatal(err)
			}
			write(files(dir)[1], "systemic v1")
			write(files(dir)[0], "baselines v2, longer")
			if err := m.Upload(ctx); err != nil {
				t.Fatal(err)
			}
			ids, err := bucket.List(ctx)
			if err != nil || len(ids) != 1 {
				t.Fatalf("bucket holds %v (%v), want the newest copy only", ids, err)
			}
			// Unchanged files are not uploaded again.
			if err := m.Upload(ctx); err != nil {
				t.Fatal(err)
			}
			if again, _ := bucket.List(ctx); len(again) != 1 || again[0] != ids[0] {
				t.Fatalf("unchanged state uploaded again: %v", again)
			}

			// The disk is lost: a new data directory gets both back.
			fresh := t.TempDir()
			if err := New(bucket, files(fresh), quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			for i, want := range []string{"baselines v2, longer", "systemic v1"} {
				got, err := os.ReadFile(files(fresh)[i].Path)
				if err != nil || string(got) != want {
					t.Fatalf("restored %s: %q (%v), want %q", files(fresh)[i].Name, got, err, want)
				}
			}
			// A file present locally is kept: it is the newer.
			write(files(dir)[0], "baselines v3 (local)")
			if err := New(bucket, files(dir), quiet).Restore(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(files(dir)[0].Path); string(got) != "baselines v3 (local)" {
				t.Fatalf("local file replaced by the bucket's: %q", got)
			}
		})
	}
}

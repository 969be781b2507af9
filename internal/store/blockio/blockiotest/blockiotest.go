// Package blockiotest gives tests the object storages to run on: a local
// directory always, and MinIO when TRACEDX_TEST_S3_ENDPOINT is set
// (e2e/minio.sh starts one; credentials from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY).
package blockiotest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/store/s3store"
)

// Storages maps a name ("local", "minio") to a constructor of an empty
// storage; on MinIO each gets a prefix of its own in bucket.
func Storages(bucket string) map[string]func(t *testing.T) blockio.Storage {
	out := map[string]func(t *testing.T) blockio.Storage{
		"local": func(t *testing.T) blockio.Storage {
			st, err := engine.NewLocalStorage(filepath.Join(t.TempDir(), "bucket"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
	if ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT"); ep != "" {
		out["minio"] = func(t *testing.T) blockio.Storage {
			st, err := s3store.New(context.Background(), s3store.Config{Endpoint: ep, Bucket: bucket,
				Prefix: fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()), SpoolDir: t.TempDir(),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	}
	return out
}

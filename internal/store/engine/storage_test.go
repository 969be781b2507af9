package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tracedx/tracedx/internal/store/s3store"
)

// The engine's tests run on local block storage by default. With
// TRACEDX_TEST_S3_ENDPOINT set (credentials from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY) the tests that open engines through testOpts keep
// their blocks on that S3 server instead, in bucket TRACEDX_TEST_S3_BUCKET
// (default tracedx-engine-test), one prefix per test directory, so
// reopening a directory reopens its blocks. e2e/minio.sh runs them so.
const s3EndpointEnv = "TRACEDX_TEST_S3_ENDPOINT"

var testStorages = struct {
	sync.Mutex
	m map[string]BlockStorage
}{m: map[string]BlockStorage{}}

func onS3() bool { return os.Getenv(s3EndpointEnv) != "" }

// s3LatencyEnv (a duration, e.g. 10ms) puts a proxy in front of the S3
// server that delays every request by it: a server on the same machine
// answers in well under a millisecond, a region of a cloud in several.
const s3LatencyEnv = "TRACEDX_TEST_S3_LATENCY"

var s3Proxy = sync.OnceValue(func() string {
	ep := os.Getenv(s3EndpointEnv)
	d, err := time.ParseDuration(os.Getenv(s3LatencyEnv))
	if err != nil || d <= 0 {
		return ep
	}
	target, err := url.Parse(ep)
	if err != nil {
		panic(fmt.Sprintf("%s: %v", s3EndpointEnv, err))
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	// Its connections to the server are kept, as the client keeps its
	// own: with http.DefaultTransport's 2 idle connections per host, a
	// search's burst of GETs opened and closed dozens of connections to
	// the server, a cost of the test's proxy, not of a remote bucket.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	proxy.Transport = tr
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(d)
		proxy.ServeHTTP(w, r)
	})).URL
})

// s3TestEndpoint is the S3 server's endpoint, through the delaying proxy
// when TRACEDX_TEST_S3_LATENCY is set.
func s3TestEndpoint() string { return s3Proxy() }

// testStorage returns the block storage of test directory dir (nil: the
// engine's default, local).
func testStorage(dir string) BlockStorage {
	if !onS3() {
		return nil
	}
	testStorages.Lock()
	defer testStorages.Unlock()
	if st, ok := testStorages.m[dir]; ok {
		return st
	}
	st, err := s3store.New(context.Background(), testS3Config(dir))
	if err != nil {
		panic(fmt.Sprintf("engine tests on S3: %v", err))
	}
	testStorages.m[dir] = st
	return st
}

// testS3Config is the configuration of the S3 storage of test directory
// dir: a second storage with it (a restarted node) sees the same blocks.
func testS3Config(dir string) s3store.Config {
	bucket := os.Getenv("TRACEDX_TEST_S3_BUCKET")
	if bucket == "" {
		bucket = "tracedx-engine-test"
	}
	// Named by the (random, unique) directory alone, so the kill test's
	// child process finds the same prefix as its parent.
	prefix := "enginetest/" + strings.Trim(strings.ReplaceAll(dir, string(filepath.Separator), "-"), "-")
	return s3store.Config{
		Endpoint: s3TestEndpoint(),
		Bucket:   bucket,
		Prefix:   prefix,
		SpoolDir: filepath.Join(dir, "s3spool"),
	}
}

// removeS3Prefix deletes every object under the prefix of test directory
// dir: the blocks, and what the engine's own deletes leave behind (objects
// of blocks compacted away after a delete grace, unfinished uploads).
func removeS3Prefix(ctx context.Context, dir string) error {
	ep, err := url.Parse(os.Getenv(s3EndpointEnv))
	if err != nil {
		return err
	}
	cfg := testS3Config(dir)
	client, err := minio.New(ep.Host, &minio.Options{Creds: credentials.NewEnvAWS(), Secure: ep.Scheme == "https"})
	if err != nil {
		return err
	}
	objs := client.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix + "/", Recursive: true})
	for r := range client.RemoveObjects(ctx, cfg.Bucket, objs, minio.RemoveObjectsOptions{}) {
		if r.Err != nil {
			return fmt.Errorf("remove %s: %w", r.ObjectName, r.Err)
		}
	}
	return nil
}

// blockStorageOf is where the blocks of test directory dir are.
func blockStorageOf(t *testing.T, dir string) BlockStorage {
	t.Helper()
	if st := testStorage(dir); st != nil {
		return st
	}
	return &LocalStorage{Dir: filepath.Join(dir, "blocks")}
}

// storedBlocks lists the committed blocks of test directory dir.
func storedBlocks(t *testing.T, dir string) []string {
	t.Helper()
	ids, err := blockStorageOf(t, dir).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// storedBytes is the size of every block of dir.
func storedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	if !onS3() {
		return dirSize(t, filepath.Join(dir, "blocks"))
	}
	var n int64
	for _, id := range storedBlocks(t, dir) {
		sz, err := testStorage(dir).Size(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		n += sz
	}
	return n
}

// localBlocksOnly skips tests that edit block files on local disk.
func localBlocksOnly(t *testing.T) {
	if onS3() {
		t.Skip("edits block files on local disk; not applicable to S3 storage")
	}
}

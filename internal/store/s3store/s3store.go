// Package s3store keeps the storage engine's blocks in an S3 bucket (AWS S3,
// MinIO and other servers speaking the S3 API). Blocks are read by byte
// range, so answering a trace by id fetches a few ranges, never a whole
// block; a block becomes visible when its marker file (the engine's
// meta.json) is uploaded, which happens last, after every data object.
package s3store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Config says which bucket to use and how.
type Config struct {
	// Endpoint is host:port, or a URL whose scheme picks TLS (http:// is
	// plain). Required.
	Endpoint string
	// Bucket is created when missing. Required.
	Bucket string
	// Prefix namespaces the objects ("tracedx/" keeps blocks under
	// tracedx/blocks/). Nodes of one cluster use the same prefix.
	Prefix string
	// Region is sent with requests ("" lets the client discover it).
	Region string
	// AccessKey and SecretKey default to AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY.
	AccessKey, SecretKey string
	// SpoolDir holds block files between writing and upload. Without it
	// the storage reads and lists only, and Create fails: a node listing
	// the bucket's tenants has no blocks to write there.
	SpoolDir string
	// MarkerName is the file whose presence makes a block visible; it is
	// uploaded by Commit, after every other file (default "meta.json").
	MarkerName string
	// ChunkBytes is the unit of ranged reads and of the range cache
	// (default 16 KiB: a scan prefetching a few pages of a small column
	// fetches whole chunks, most of them other columns' bytes when chunks
	// are large; runs of chunks still go in one GET of up to 4 MiB, and
	// Prefetch joins runs a little apart. A span-filter search at 2M
	// spans fetched 14.0 MiB with 64 KiB chunks, 10.3 MiB with 16 KiB).
	ChunkBytes int64
	// CacheBytes bounds the in-memory cache of ranges (default 64 MiB).
	CacheBytes int64
	// CacheDir, when set, keeps blocks' small files (meta and trace
	// index, read whole) on local disk, at most CacheDirBytes (default
	// 1 GiB), so a restart does not download them again.
	CacheDir      string
	CacheDirBytes int64
	// Attempts is how many times a failed request is tried in all, with
	// jittered exponential backoff between tries (default 8: about 12 s).
	Attempts int
	// DeleteGrace delays deleting a removed block's data objects, so
	// queries of other nodes that still list it can finish (its marker
	// goes at once). Default 0: at once.
	DeleteGrace time.Duration
	Logger      *slog.Logger
}

// Storage is a blockio.Storage on an S3 bucket.
type Storage struct {
	cfg    Config
	client *minio.Client
	base   string // cfg.Prefix, ending in "/" unless empty
	prefix string // base + "blocks/"
	cache  *rangeCache
	disk   *diskCache // nil without CacheDir
	log    *slog.Logger
	m      metrics

	// gets holds a slot per ranged GET in flight (maxGetsInFlight).
	gets chan struct{}
}

var _ blockio.Storage = (*Storage)(nil)

// New connects to the bucket (creating it when missing) and clears the
// spool directory of interrupted uploads.
func New(ctx context.Context, cfg Config) (*Storage, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3 storage: endpoint and bucket are required")
	}
	if cfg.MarkerName == "" {
		cfg.MarkerName = "meta.json"
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 16 << 10
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, secure, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewEnvAWS()
	}
	// The client's own retries are off: when a server answers before
	// reading a whole upload (503 SlowDown does), the client seeks the
	// body for its retry while the transport may still be reading it (a
	// data race the race detector reports). Retry does each try with a
	// fresh body instead.
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: transport for %s: %w", cfg.Endpoint, err)
	}
	// A search has up to maxGetsInFlight GETs in flight at once; with the
	// default's 16 idle connections per host, every burst past 16 opened
	// new connections (a TLS handshake each on a real bucket) and closed
	// them after.
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, maxGetsInFlight)
	client, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: cfg.Region, MaxRetries: 1, Transport: tr})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: client for %s: %w", cfg.Endpoint, err)
	}
	if cfg.SpoolDir != "" {
		if err := os.RemoveAll(cfg.SpoolDir); err != nil {
			return nil, fmt.Errorf("s3 storage: clear spool dir: %w", err)
		}
		if err := os.MkdirAll(cfg.SpoolDir, 0o755); err != nil {
			return nil, fmt.Errorf("s3 storage: create spool dir: %w", err)
		}
	}
	prefix := cfg.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &Storage{
		cfg: cfg, client: client, base: prefix, prefix: prefix + "blocks/",
		cache: newRangeCache(cfg.CacheBytes),
		gets:  make(chan struct{}, maxGetsInFlight),
		log:   cfg.Logger.With("component", "s3store", "bucket", cfg.Bucket),
		m:     newMetrics(),
	}
	if cfg.CacheDir != "" {
		if cfg.CacheDirBytes <= 0 {
			cfg.CacheDirBytes = 1 << 30
		}
		if s.disk, err = newDiskCache(cfg.CacheDir, cfg.CacheDirBytes); err != nil {
			return nil, err
		}
	}
	if err := s.ensureBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func parseEndpoint(ep string) (host string, secure bool, err error) {
	if !strings.Contains(ep, "://") {
		return ep, true, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("s3 storage: endpoint %q: %w", ep, err)
	}
	switch u.Scheme {
	case "http":
		return u.Host, false, nil
	case "https":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("s3 storage: endpoint %q: scheme must be http or https", ep)
}

func (s *Storage) ensureBucket(ctx context.Context) error {
	var ok bool
	err := s.retry(ctx, "bucket_exists", func() (err error) {
		ok, err = s.client.BucketExists(ctx, s.cfg.Bucket)
		return err
	})
	if err != nil {
		return fmt.Errorf("s3 storage: check bucket %q at %s: %w", s.cfg.Bucket, s.cfg.Endpoint, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
	if err != nil {
		// Another node may have created it meanwhile.
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return fmt.Errorf("s3 storage: create bucket %q: %w", s.cfg.Bucket, err)
	}
	s.log.Info("created bucket")
	return nil
}

func (s *Storage) key(id, name string) string { return s.prefix + id + "/" + name }

// Collectors are the storage's Prometheus metrics.
func (s *Storage) Collectors() []prometheus.Collector { return s.m.collectors() }

// List returns the blocks whose marker exists.
func (s *Storage) List(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.retry(ctx, "list", func() error {
		ids = ids[:0]
		for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
			if obj.Err != nil {
				return obj.Err
			}
			rest := strings.TrimPrefix(obj.Key, s.prefix)
			if id, name, ok := strings.Cut(rest, "/"); ok && name == s.cfg.MarkerName {
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: list blocks: %w", err)
	}
	return ids, nil
}

// Dirs lists the names directly under <prefix>/<under>/ in the bucket:
// the tenants of a multi-tenant deployment keep their blocks and state
// under <prefix>/tenants/<id>/.
func (s *Storage) Dirs(ctx context.Context, under string) ([]string, error) {
	p := s.base + strings.Trim(under, "/") + "/"
	var names []string
	err := s.retry(ctx, "list", func() error {
		names = names[:0]
		for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: p}) {
			if obj.Err != nil {
				return obj.Err
			}
			// Without Recursive, each name below p comes once, as a
			// common prefix ending in "/"; objects right under p are not
			// names of anything.
			if name, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, p), "/"); ok && name != "" {
				names = append(names, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: list %s: %w", p, err)
	}
	return names, nil
}

// Create starts a block. Its files are spooled to local disk and uploaded
// when closed (an upload from a file can be retried; a stream cannot); the
// marker file is kept in memory and uploaded by Commit.
func (s *Storage) Create(ctx context.Context, id string) (blockio.Writer, error) {
	if s.cfg.SpoolDir == "" {
		return nil, fmt.Errorf("s3 storage: block %s: no spool directory to write it in (the storage was opened to read only)", id)
	}
	dir, err := os.MkdirTemp(s.cfg.SpoolDir, id+"-")
	if err != nil {
		return nil, fmt.Errorf("s3 storage: spool block %s: %w", id, err)
	}
	return &writer{s: s, ctx: ctx, id: id, dir: dir}, nil
}

// Open opens a block file for ranged reads.
func (s *Storage) Open(ctx context.Context, id, name string) (blockio.File, error) {
	key := s.key(id, name)
	if e, ok := s.diskGet(id, tailEntry(name)); ok && len(e) >= 8 {
		// Kept by KeepTail: the size and the bytes opening the file reads.
		size := int64(binary.LittleEndian.Uint64(e))
		tail := e[8:]
		if int64(len(tail)) <= size {
			return &rangeFile{s: s, key: key, id: id, name: name, size: size, tail: tail, tailOff: size - int64(len(tail))}, nil
		}
	}
	var info minio.ObjectInfo
	err := s.retry(ctx, "stat", func() (err error) {
		info, err = s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: open %s: %w", key, err)
	}
	return &rangeFile{s: s, key: key, id: id, name: name, size: info.Size}, nil
}

// diskGet returns a file from the disk cache.
func (s *Storage) diskGet(id, name string) ([]byte, bool) {
	if s.disk == nil {
		return nil, false
	}
	b, ok, bad := s.disk.get(id, name)
	if bad {
		s.m.diskDamaged.Inc()
		s.log.Warn("damaged disk cache entry dropped; fetching it again", "block", id, "file", name)
	}
	if ok {
		s.m.diskHits.Inc()
	}
	return b, ok
}

// tailEntry names the disk cache entry of a file's tail.
func tailEntry(name string) string { return name + ".tail" }

// ReadAll downloads one whole (small) file, through the disk cache.
func (s *Storage) ReadAll(ctx context.Context, id, name string) ([]byte, error) {
	if b, ok := s.diskGet(id, name); ok {
		return b, nil
	}
	key := s.key(id, name)
	var b []byte
	err := s.retry(ctx, "get", func() error {
		obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer obj.Close()
		b, err = io.ReadAll(obj)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: read %s: %w", key, err)
	}
	s.m.downloaded.Add(float64(len(b)))
	if s.disk != nil {
		s.disk.put(id, name, b)
	}
	return b, nil
}

// Delete removes the marker first, so the block disappears from List at
// once and a crash midway leaves only unlisted objects, then the rest
// (after DeleteGrace).
func (s *Storage) Delete(ctx context.Context, id string) error {
	marker := s.key(id, s.cfg.MarkerName)
	err := s.retry(ctx, "delete", func() error {
		return s.client.RemoveObject(ctx, s.cfg.Bucket, marker, minio.RemoveObjectOptions{})
	})
	if err != nil {
		return fmt.Errorf("s3 storage: delete block %s: %w", id, err)
	}
	s.cache.dropPrefix(s.prefix + id + "/")
	if s.disk != nil {
		s.disk.drop(id)
	}
	if s.cfg.DeleteGrace <= 0 {
		return s.deleteObjects(ctx, id)
	}
	time.AfterFunc(s.cfg.DeleteGrace, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.deleteObjects(ctx, id); err != nil {
			s.log.Warn("deleting objects of a removed block failed; they stay unlisted", "block", id, "err", err)
		}
	})
	return nil
}

func (s *Storage) deleteObjects(ctx context.Context, id string) error {
	objs, err := s.objects(ctx, id)
	if err != nil {
		return err
	}
	for _, o := range objs {
		err := s.retry(ctx, "delete", func() error {
			return s.client.RemoveObject(ctx, s.cfg.Bucket, o.Key, minio.RemoveObjectOptions{})
		})
		if err != nil {
			return fmt.Errorf("s3 storage: delete %s: %w", o.Key, err)
		}
	}
	return nil
}

func (s *Storage) objects(ctx context.Context, id string) ([]minio.ObjectInfo, error) {
	var out []minio.ObjectInfo
	err := s.retry(ctx, "list", func() error {
		out = out[:0]
		for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.prefix + id + "/", Recursive: true}) {
			if obj.Err != nil {
				return obj.Err
			}
			out = append(out, obj)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: list block %s: %w", id, err)
	}
	return out, nil
}

// Size sums the block's objects.
func (s *Storage) Size(ctx context.Context, id string) (int64, error) {
	objs, err := s.objects(ctx, id)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, o := range objs {
		n += o.Size
	}
	return n, nil
}

type writer struct {
	s      *Storage
	ctx    context.Context
	id     string
	dir    string
	mu     sync.Mutex
	keys   []string
	marker []byte
	hasM   bool
}

func (w *writer) File(name string) (io.WriteCloser, error) {
	if name == w.s.cfg.MarkerName {
		return &markerFile{w: w}, nil
	}
	if strings.ContainsAny(name, "/\\") {
		return nil, fmt.Errorf("s3 storage: bad block file name %q", name)
	}
	f, err := os.Create(filepath.Join(w.dir, name))
	if err != nil {
		return nil, fmt.Errorf("s3 storage: spool %s/%s: %w", w.id, name, err)
	}
	return &spoolFile{w: w, f: f, name: name}, nil
}

type markerFile struct {
	w   *writer
	buf bytes.Buffer
}

func (m *markerFile) Write(p []byte) (int, error) { return m.buf.Write(p) }
func (m *markerFile) Close() error {
	m.w.mu.Lock()
	m.w.marker, m.w.hasM = m.buf.Bytes(), true
	m.w.mu.Unlock()
	return nil
}

type spoolFile struct {
	w    *writer
	f    *os.File
	name string
}

func (f *spoolFile) Write(p []byte) (int, error) { return f.f.Write(p) }

// Close uploads the spooled file and removes it locally.
func (f *spoolFile) Close() error {
	path := f.f.Name()
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("s3 storage: spool %s: %w", path, err)
	}
	defer os.Remove(path)
	w := f.w
	key := w.s.key(w.id, f.name)
	var n int64
	err := w.s.retry(w.ctx, "put", func() error {
		info, err := w.s.client.FPutObject(w.ctx, w.s.cfg.Bucket, key, path, minio.PutObjectOptions{
			ContentType: "application/octet-stream",
			PartSize:    16 << 20, // parts are buffered in memory: keep them small
		})
		n = info.Size
		return err
	})
	w.mu.Lock()
	w.keys = append(w.keys, key)
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("s3 storage: upload %s: %w", key, err)
	}
	w.s.m.uploaded.Add(float64(n))
	return nil
}

// Commit uploads the marker: the block is visible from here on.
func (w *writer) Commit() error {
	defer os.RemoveAll(w.dir)
	w.mu.Lock()
	marker, ok := w.marker, w.hasM
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("s3 storage: block %s committed without its %s", w.id, w.s.cfg.MarkerName)
	}
	key := w.s.key(w.id, w.s.cfg.MarkerName)
	err := w.s.retry(w.ctx, "put", func() error {
		_, err := w.s.client.PutObject(w.ctx, w.s.cfg.Bucket, key, bytes.NewReader(marker), int64(len(marker)),
			minio.PutObjectOptions{ContentType: "application/json"})
		return err
	})
	if err != nil {
		return fmt.Errorf("s3 storage: commit block %s: %w", w.id, err)
	}
	w.s.m.uploaded.Add(float64(len(marker)))
	return nil
}

// Abort removes what was uploaded; objects left behind (a failed delete)
// are never listed, having no marker.
func (w *writer) Abort() error {
	os.RemoveAll(w.dir)
	w.mu.Lock()
	keys := w.keys
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first error
	for _, k := range keys {
		if err := w.s.client.RemoveObject(ctx, w.s.cfg.Bucket, k, minio.RemoveObjectOptions{}); err != nil && first == nil {
			first = fmt.Errorf("s3 storage: abort block %s: %w", w.id, err)
		}
	}
	return first
}

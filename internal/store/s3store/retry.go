package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
)

// permanent S3 error codes: trying again cannot help.
var permanent = map[string]bool{
	"NoSuchKey": true, "NoSuchBucket": true, "AccessDenied": true, "InvalidAccessKeyId": true,
	"SignatureDoesNotMatch": true, "InvalidArgument": true, "InvalidRange": true, "InvalidBucketName": true,
}

func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true // a response cut short
	}
	return !permanent[minio.ToErrorResponse(err).Code]
}

// retry runs fn until it succeeds, fails permanently or Attempts are
// spent, sleeping with jittered exponential backoff between tries
// (throttling: SlowDown, 503; connection resets; 5xx). An error that remains
// goes to the engine, which keeps the data in the WAL and head, and its
// memory bound turns a lasting outage into back-pressure on ingest.
func (s *Storage) retry(ctx context.Context, op string, fn func() error) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			s.m.requests.WithLabelValues(op, "ok").Inc()
			return nil
		}
		if !retryable(err) || attempt >= s.cfg.Attempts {
			s.m.requests.WithLabelValues(op, "error").Inc()
			if attempt > 1 {
				return fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return err
		}
		s.m.retries.WithLabelValues(op).Inc()
		s.log.Warn("s3 request failed, retrying", "op", op, "attempt", attempt, "err", err)
		d := wait/2 + rand.N(wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(d):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

type metrics struct {
	requests               *prometheus.CounterVec
	retries                *prometheus.CounterVec
	downloaded, uploaded   prometheus.Counter
	cacheHits, cacheMisses prometheus.Counter
	diskHits               prometheus.Counter
	diskDamaged            prometheus.Counter
}

func newMetrics() metrics {
	return metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_s3_requests_total",
			Help: "S3 requests by operation and final result (after retries)."}, []string{"op", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_s3_retries_total",
			Help: "S3 requests tried again after an error or throttling."}, []string{"op"}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_downloaded_bytes_total",
			Help: "Bytes read from the bucket."}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_uploaded_bytes_total",
			Help: "Bytes written to the bucket."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_range_cache_hits_total",
			Help: "Block chunks served from the in-memory range cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_range_cache_misses_total",
			Help: "Block chunks fetched from the bucket."}),
		diskHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_disk_cache_hits_total",
			Help: "Block metas, trace indexes and data file tails (footer and page index) read from the local disk cache instead of the bucket."}),
		diskDamaged: prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_s3_disk_cache_damaged_total",
			Help: "Local disk cache entries that failed their checksum; they were dropped and fetched from the bucket again."}),
	}
}

func (m metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.retries, m.downloaded, m.uploaded, m.cacheHits, m.cacheMisses, m.diskHits, m.diskDamaged}
}

package server

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// onMinIO points cfg's block storage at the test MinIO, under a prefix of
// the test's own; it skips the test when there is no MinIO.
func onMinIO(t *testing.T, cfg *config.Config, bucket string) {
	t.Helper()
	ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT")
	if ep == "" {
		t.Skip("TRACEDX_TEST_S3_ENDPOINT not set: run e2e/minio.sh")
	}
	cfg.Storage.Backend = "s3"
	cfg.Storage.S3.Endpoint, cfg.Storage.S3.Bucket = ep, bucket
	cfg.Storage.S3.Prefix = fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	cfg.Storage.S3.AccessKey, cfg.Storage.S3.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
}

var rateField = regexp.MustCompile(`"rate":[0-9.e-]+,?`)

// With blocks in S3, a node whose disk is lost gets its RED and
// service-graph history and its summary archive back from the bucket.
func TestHistoryAndArchiveOutliveTheDiskOnS3(t *testing.T) {
	saved := retentionNow
	t.Cleanup(func() { retentionNow = saved })
	var shift time.Duration
	retentionNow = func() time.Time { return time.Now().Add(shift) }

	cfg := config.Default()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Storage.TraceIdleTimeout = 100 * time.Millisecond
	cfg.Storage.Retention, cfg.Retention.Findings = 24*time.Hour, 10*24*time.Hour
	onMinIO(t, &cfg, "tracedx-server-history-test")
	cfg.DataDir = t.TempDir()
	s, stop := runServer(t, cfg)

	at := time.Now().Add(-2 * time.Minute).Truncate(time.Minute)
	spans := slowOrder(0, at)
	id := spans[0].TraceID.String()
	postOTLP(t, s.Addr("otlp-http"), spans)
	window := "start=" + strconv.FormatInt(at.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(at.Add(time.Hour).UnixMilli(), 10)
	red := func(s *Server) string {
		body, err := getBody(s.Addr("http"), "/api/v1/metrics/operations?service=orders&"+window)
		if err != nil {
			t.Fatal(err)
		}
		// The rate divides by the part of the window covered so far,
		// which moves with the clock.
		return rateField.ReplaceAllString(canonical(body), "")
	}
	serviceMap := func(s *Server) string {
		body, err := getBody(s.Addr("http"), "/api/v1/servicemap?"+window)
		if err != nil {
			t.Fatal(err)
		}
		return rateField.ReplaceAllString(canonical(body), "")
	}
	search := func(s *Server) archivedSearch {
		var r archivedSearch
		getJSON(t, s, "/api/v1/search?service=orders&"+window, &r)
		return r
	}
	// Stored, then past its retention: only its summary remains.
	for deadline := time.Now().Add(20 * time.Second); len(search(s).Traces) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("trace not stored")
		}
	}
	ctx := context.Background()
	eng := s.Store().(*engine.Engine)
	if err := eng.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	shift = 25 * time.Hour
	if err := eng.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if r := search(s); len(r.Traces) != 1 || r.Traces[0].TraceID != id || r.Traces[0].TraceAvailable == nil || *r.Traces[0].TraceAvailable {
		t.Fatalf("archived summary before the disk was lost: %+v", r)
	}
	wantRED, wantMap := red(s), serviceMap(s)
	if wantRED == canonical(`{"operations":[]}`) || !strings.Contains(wantMap, `"orders"`) {
		t.Fatalf("no history to lose: RED %s, map %s", wantRED, wantMap)
	}
	stop()
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}

	cfg.DataDir = t.TempDir()
	again, _ := runServer(t, cfg)
	if got := red(again); got != wantRED {
		t.Fatalf("RED history after the disk was lost:\n got %s\nwant %s", got, wantRED)
	}
	if got := serviceMap(again); got != wantMap {
		t.Fatalf("service map after the disk was lost:\n got %s\nwant %s", got, wantMap)
	}
	if r := search(again); len(r.Traces) != 1 || r.Traces[0].TraceID != id || r.Traces[0].SpanCount != len(spans) {
		t.Fatalf("archived summary after the disk was lost: %+v", r)
	}
}

package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/freeport"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/summaryarchive"
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

// answerWithoutRates is a JSON answer without its rates: a rate divides
// by the part of the window covered so far, which moves with the clock.
func answerWithoutRates(t *testing.T, s *Server, path string) string {
	t.Helper()
	body, err := getBody(s.Addr("http"), path)
	if err != nil {
		t.Fatal(err)
	}
	// Which nodes did not answer is checked apart (answered_test.go).
	return withoutNodeFields(rateField.ReplaceAllString(canonical(body), ""))
}

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
		return answerWithoutRates(t, s, "/api/v1/metrics/operations?service=orders&"+window)
	}
	serviceMap := func(s *Server) string { return answerWithoutRates(t, s, "/api/v1/servicemap?"+window) }
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

// findingKeys are a findings list's findings by trace and kind (ids are
// per node) and the nodes the answer says it lacks or read from the
// bucket.
type findingKeys struct {
	keys       []string
	unanswered []string
	fromBucket []string
}

func listFindings(t *testing.T, s *Server, query string) findingKeys {
	t.Helper()
	var l struct {
		Findings []struct {
			Kind    string    `json:"kind"`
			TraceID string    `json:"trace_id"`
			Time    time.Time `json:"time"`
		} `json:"findings"`
		Unanswered []string `json:"unanswered_nodes"`
		FromBucket []string `json:"from_bucket_nodes"`
	}
	getJSON(t, s, "/api/v1/findings?"+query, &l)
	out := findingKeys{unanswered: l.Unanswered, fromBucket: l.FromBucket}
	for _, f := range l.Findings {
		out.keys = append(out.keys, f.Kind+"/"+f.TraceID+"/"+f.Time.UTC().Format(time.RFC3339Nano))
	}
	slices.Sort(out.keys)
	return out
}

// waitForSlowOrders waits until s lists the findings of all slow orders
// (query) and returns them.
func waitForSlowOrders(t *testing.T, s *Server, query string) findingKeys {
	t.Helper()
	var got findingKeys
	for deadline := time.Now().Add(30 * time.Second); len(got.keys) < slowOrders; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("findings of %d slow orders: %v", slowOrders, got.keys)
		}
		got = listFindings(t, s, query)
	}
	return got
}

// clusterOnMinIO runs n whole servers as one cluster on one MinIO
// prefix, and returns them with their stops and data directories.
func clusterOnMinIO(t *testing.T, n int, mutate func(*config.Config)) (nodes []*Server, stops []func(), dirs []string) {
	t.Helper()
	var peers []cluster.Peer
	for i := 0; i < n; i++ {
		peers = append(peers, cluster.Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: freeport.Addr(t), HTTP: freeport.Addr(t)})
	}
	prefix := ""
	for _, p := range peers {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", OTLPGRPC: p.OTLPGRPC, HTTP: p.HTTP}
		cfg.Cluster.NodeID, cfg.Cluster.Peers = p.ID, peers
		cfg.Storage.TraceIdleTimeout = 300 * time.Millisecond
		onMinIO(t, &cfg, "tracedx-server-cluster-test")
		if prefix == "" {
			prefix = cfg.Storage.S3.Prefix
		}
		cfg.Storage.S3.Prefix = prefix // one cluster, one bucket
		mutate(&cfg)
		s, stop := runServer(t, cfg)
		nodes, stops, dirs = append(nodes, s), append(stops, stop), append(dirs, cfg.DataDir)
	}
	return nodes, stops, dirs
}

// A node that is stopped leaves its sealed findings and its history in
// the bucket: the other nodes' findings list and summary, RED metrics
// and service map still include them, and the findings list says which
// node it read from the bucket.
func TestStoppedNodesFindingsStillAnswerOnS3(t *testing.T) {
	nodes, stops, dirs := clusterOnMinIO(t, 2, func(*config.Config) {})
	now := time.Now()
	postOTLP(t, nodes[0].Addr("otlp-http"), shopTraffic(40, now))
	const query = "kind=slow_query&limit=100"
	before := waitForSlowOrders(t, nodes[0], query)
	var sumBefore struct{ Total int }
	getJSON(t, nodes[0], "/api/v1/findings/summary?kind=slow_query", &sumBefore)
	to := now.Truncate(time.Minute).Add(time.Minute)
	window := "start=" + strconv.FormatInt(to.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(to.UnixMilli(), 10)
	analytics := []string{"/api/v1/metrics/operations?" + window, "/api/v1/servicemap?" + window}
	var analyticsBefore []string
	for _, path := range analytics {
		analyticsBefore = append(analyticsBefore, answerWithoutRates(t, nodes[0], path))
	}

	// n1 stops: a planned stop seals its open segment and copies it.
	stops[1]()
	own, err := findingstore.Open(findingstore.Options{Dir: filepath.Join(dirs[1], "findings")})
	if err != nil {
		t.Fatal(err)
	}
	n1Findings := own.Len()
	own.Close()
	if n1Findings == 0 || n1Findings == len(before.keys) {
		t.Fatalf("n1 stored %d of the %d findings: the test needs them spread", n1Findings, len(before.keys))
	}

	after := listFindings(t, nodes[0], query)
	if !slices.Equal(after.keys, before.keys) {
		t.Fatalf("findings with n1 stopped:\n got %v\nwant %v", after.keys, before.keys)
	}
	if !slices.Equal(after.unanswered, []string{"n1"}) || !slices.Equal(after.fromBucket, []string{"n1"}) {
		t.Fatalf("answer marked unanswered %v, from the bucket %v; want n1 for both", after.unanswered, after.fromBucket)
	}
	var sumAfter struct{ Total int }
	getJSON(t, nodes[0], "/api/v1/findings/summary?kind=slow_query", &sumAfter)
	if sumAfter.Total != sumBefore.Total {
		t.Fatalf("findings summary with n1 stopped: %d findings, had %d", sumAfter.Total, sumBefore.Total)
	}
	// Its RED metrics and service-map edges, from its history in the
	// bucket (copied at its stop).
	for i, path := range analytics {
		if got := answerWithoutRates(t, nodes[0], path); got != analyticsBefore[i] {
			t.Fatalf("%s with n1 stopped:\n got %s\nwant %s", path, got, analyticsBefore[i])
		}
	}
}

// Each node archives the summaries of the blocks it expires: a search
// merges every node's archive, and while a node is down its archive is
// read from the bucket.
func TestArchivedSummariesMergeAndOutliveAStoppedNodeOnS3(t *testing.T) {
	saved := retentionNow
	t.Cleanup(func() { retentionNow = saved })
	var shift time.Duration
	retentionNow = func() time.Time { return time.Now().Add(shift) }
	nodes, stops, dirs := clusterOnMinIO(t, 2, func(c *config.Config) {
		c.Storage.Retention, c.Retention.Findings = 24*time.Hour, 10*24*time.Hour
	})
	ctx := context.Background()
	engines := func(fn func(*engine.Engine) error) {
		t.Helper()
		for _, n := range nodes {
			if err := fn(n.Store().(*engine.Engine)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Many small blocks, so that both nodes own (and expire) some.
	now := time.Now()
	var sent []string
	for i := 0; i < 12; i++ {
		o := slowOrder(100+i, now.Add(-20*time.Minute+time.Duration(i)*time.Minute))
		o[0].TraceID[1], o[1].TraceID[1] = byte(i*37), byte(i*37) // spread over the ring
		sent = append(sent, o[0].TraceID.String())
		postOTLP(t, nodes[i%2].Addr("otlp-http"), o)
		time.Sleep(50 * time.Millisecond)
		engines(func(e *engine.Engine) error { return e.Flush(ctx) })
	}
	slices.Sort(sent)
	window := "&start=" + strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(now.UnixMilli(), 10)
	search := func(s *Server) []string {
		var r archivedSearch
		getJSON(t, s, "/api/v1/search?service=orders&limit=100"+window, &r)
		var ids []string
		for _, tr := range r.Traces {
			if tr.TraceAvailable == nil || *tr.TraceAvailable {
				t.Fatalf("trace %s still stored after retention: %+v", tr.TraceID, r)
			}
			ids = append(ids, tr.TraceID)
		}
		slices.Sort(ids)
		return ids
	}
	// Every node sees every block, the owners expire them, and every node
	// sees that they are gone.
	time.Sleep(500 * time.Millisecond) // spans forwarded to their owner
	engines(func(e *engine.Engine) error { return e.Flush(ctx) })
	engines(func(e *engine.Engine) error { return e.Refresh(ctx) })
	shift = 25 * time.Hour
	engines(func(e *engine.Engine) error { return e.ApplyRetention(ctx) })
	engines(func(e *engine.Engine) error { return e.Refresh(ctx) })
	for i, n := range nodes {
		if got := search(n); !slices.Equal(got, sent) {
			t.Fatalf("node %d's search of the archived summaries: %v, want %v", i, got, sent)
		}
	}

	stops[1]()
	a, err := summaryarchive.Open(summaryarchive.Options{Dir: filepath.Join(dirs[1], "summaries"), Now: retentionNow})
	if err != nil {
		t.Fatal(err)
	}
	own, err := a.Search(ctx, store.Query{})
	if err != nil || len(own) == 0 || len(own) == len(sent) {
		t.Fatalf("n1 archived %d of %d traces (%v): the test needs them spread", len(own), len(sent), err)
	}
	if got := search(nodes[0]); !slices.Equal(got, sent) {
		t.Fatalf("search with n1 stopped: %v, want %v", got, sent)
	}
}

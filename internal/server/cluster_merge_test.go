package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/freeport"
	"github.com/tracedx/tracedx/internal/model"
)

// startClusterServers runs n whole servers as one cluster: on MinIO when
// TRACEDX_TEST_S3_ENDPOINT is set, else each with its own block storage
// (the aggregates merged here do not go through the bucket).
func startClusterServers(t *testing.T, n int, mutate func(*config.Config)) []*Server {
	t.Helper()
	nodes, _, _ := startClusterNodes(t, n, mutate)
	return nodes
}

// startClusterNodes is startClusterServers that returns the nodes' stops
// and configurations too (to start one again).
func startClusterNodes(t testing.TB, n int, mutate func(*config.Config)) (out []*Server, stops []func(), cfgs []config.Config) {
	t.Helper()
	var peers []cluster.Peer
	for i := 0; i < n; i++ {
		peers = append(peers, cluster.Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: freeport.Addr(t), HTTP: freeport.Addr(t)})
	}
	for _, p := range peers {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", OTLPGRPC: p.OTLPGRPC, HTTP: p.HTTP}
		cfg.Cluster.NodeID, cfg.Cluster.Peers = p.ID, peers
		if ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT"); ep != "" {
			cfg.Storage.Backend = "s3"
			cfg.Storage.S3.Endpoint, cfg.Storage.S3.Bucket = ep, "tracedx-server-cluster-test"
			cfg.Storage.S3.Prefix = fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
			cfg.Storage.S3.AccessKey, cfg.Storage.S3.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		mutate(&cfg)
		s, stop := runServer(t, cfg)
		out, stops, cfgs = append(out, s), append(stops, stop), append(cfgs, cfg)
	}
	return out, stops, cfgs
}

const slowOrders = 8

// shopTraffic is n checkout traces of varied latency, some failing, plus
// slow orders (each a finding), all between 40 and 10 minutes ago.
func shopTraffic(n int, now time.Time) []model.Span {
	spans := checkoutCalls(n, 30*time.Minute, now.Add(-10*time.Minute))
	for i := range spans {
		// Latencies spread over several histogram buckets, but less than
		// twice the usual: the baselines (per node, see slowOrders) must
		// not call any of them slow. A fifth of the api calls fail.
		k := uint64(binary.BigEndian.Uint64(spans[i].TraceID[8:]))
		spans[i].EndUnixNano += (k * k % 5) * 1e6
		if spans[i].Service == "api" && spans[i].Kind == model.KindServer && k%5 == 0 {
			spans[i].StatusCode = model.StatusError
		}
	}
	// Fewer slow orders than the baselines need to learn that the query
	// is always slow: the baselines are per node (each learns from the
	// traces it owns), so beyond that the nodes would judge later slow
	// orders differently from one node that saw them all.
	for i := 0; i < slowOrders; i++ {
		o := slowOrder(i, now.Add(-35*time.Minute+time.Duration(i)*time.Minute))
		// Distinct costs: each group has one costliest example.
		for k := range o {
			o[k].EndUnixNano += uint64(i) * 7e6
		}
		spans = append(spans, o...)
	}
	// Services seen in one trace each: on one node only.
	for k := 0; k < 6; k++ {
		at := uint64(now.Add(-20*time.Minute + time.Duration(k)*time.Second).UnixNano())
		spans = append(spans, model.Span{TraceID: model.TraceID{0x77, byte(k)}, SpanID: model.SpanID{0x77, byte(k)}, Service: fmt.Sprintf("nightly-%d", k),
			Name: "rebuild index", Kind: model.KindInternal, StartUnixNano: at, EndUnixNano: at + uint64(k+1)*1e9})
	}
	// Random trace ids, as SDKs make them (the ring places traces by id).
	r := rand.New(rand.NewPCG(11, 12))
	ids := map[model.TraceID]model.TraceID{}
	for i := range spans {
		id, ok := ids[spans[i].TraceID]
		if !ok {
			binary.BigEndian.PutUint64(id[:8], r.Uint64())
			binary.BigEndian.PutUint64(id[8:], r.Uint64())
			ids[spans[i].TraceID] = id
		}
		spans[i].TraceID = id
	}
	return spans
}

func getBody(addr, path string) (string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b), err
}

// canonical re-encodes a JSON answer (map keys sorted).
func canonical(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// Spans spread over three nodes (each batch to another node, every trace
// stored and counted by its owner): every aggregate API the UI and
// Grafana read answers, on every node, exactly what one node that saw all
// the spans answers.
func TestClusterAggregatesEqualOneNode(t *testing.T) {
	idle := func(c *config.Config) { c.Storage.TraceIdleTimeout = 300 * time.Millisecond }
	nodes := startClusterServers(t, 3, idle)
	ref := oneNodeLike(t, idle)

	now := time.Now()
	spans := shopTraffic(300, now)
	spreadTraffic(t, nodes, ref, spans)

	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	// Whole minutes ending in the past: rates do not move with the clock
	// between the questions to the nodes and to the reference.
	to := now.Truncate(time.Minute).Add(-5 * time.Minute)
	from := to.Add(-45 * time.Minute)
	rng := "start=" + ms(from) + "&end=" + ms(to)
	jaegerRng := "endTs=" + ms(to) + "&lookback=" + strconv.FormatInt((45*time.Minute).Milliseconds(), 10) + "&step=300000&ratePer=600000"
	paths := []string{
		"/api/v1/metrics/services?points=9&" + rng,
		"/api/v1/metrics/operations?" + rng,
		"/api/v1/metrics/operations?service=api&kind=server&sort=error_rate&" + rng,
		"/api/v1/metrics/series?service=api&step=300&group_by_operation=true&" + rng,
		"/api/v1/servicemap?" + rng,
		"/api/dependencies?endTs=" + ms(to) + "&lookback=3600000",
		"/api/metrics/calls?service=frontend&service=api&" + jaegerRng,
		"/api/metrics/latencies?service=api&quantile=0.95&groupByOperation=true&" + jaegerRng,
		"/api/metrics/errors?service=api&" + jaegerRng,
		"/api/v1/findings/summary?from=" + ms(from) + "&to=" + ms(now),
		"/api/services",
		"/api/services/api/operations",
		"/api/v1/services",
		"/api/v1/attributes?scope=any",
		"/api/v1/attributes/db.system/values",
		"/tempo/api/v2/search/tag/resource.service.name/values",
	}
	// The reference analyses every trace first (after the idle timeout):
	// each slow order is at least one finding.
	summary := paths[9]
	deadline := time.Now().Add(40 * time.Second)
	for {
		var sum struct{ Total int }
		body, err := getBody(ref.Addr("http"), summary)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(body), &sum)
		if sum.Total >= slowOrders+60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference found %d findings in %d slow orders and 60 failed api calls", sum.Total, slowOrders)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if diff := clusterDiff(t, nodes, ref, paths, deadline); diff != "" {
		t.Fatal(diff)
	}
	// The answers compared hold the traffic (not empty answers).
	sm, _ := getBody(nodes[2].Addr("http"), paths[4])
	if !bytes.Contains([]byte(sm), []byte(`"source":"frontend","target":"api","call_count":300,"error_count":60`)) {
		t.Fatalf("service map without the traffic: %s", sm)
	}
	for _, p := range paths[len(paths)-2:] {
		body, _ := getBody(nodes[0].Addr("http"), p)
		if !bytes.Contains([]byte(body), []byte("postgresql")) && !bytes.Contains([]byte(body), []byte("nightly-3")) {
			t.Fatalf("%s: %s", p, body)
		}
	}
}

// With blocks in S3, a node whose disk is lost gets its findings and
// baselines back from the bucket (written at shutdown, copied, restored
// on start).
func TestFindingsOutliveTheDiskOnS3(t *testing.T) {
	ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT")
	if ep == "" {
		t.Skip("TRACEDX_TEST_S3_ENDPOINT not set: run e2e/minio.sh")
	}
	cfg := config.Default()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Storage.TraceIdleTimeout = 300 * time.Millisecond
	cfg.Storage.Backend = "s3"
	cfg.Storage.S3.Endpoint, cfg.Storage.S3.Bucket = ep, "tracedx-server-findings-test"
	cfg.Storage.S3.Prefix = fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	cfg.Storage.S3.AccessKey, cfg.Storage.S3.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")

	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(done); _ = s.Wait(ctx) }()
	now := time.Now()
	for i := 0; i < 5; i++ {
		postOTLP(t, s.Addr("otlp-http"), slowOrder(i, now.Add(-time.Duration(i+1)*time.Minute)))
	}
	list := func(s *Server) string {
		body, err := getBody(s.Addr("http"), "/api/v1/findings?kind=slow_query&limit=100")
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	var before string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var l struct{ Findings []json.RawMessage }
		before = list(s)
		_ = json.Unmarshal([]byte(before), &l)
		if len(l.Findings) == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("findings of 5 slow orders: %s", before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	s.Close()
	learnt, err := os.ReadFile(filepath.Join(cfg.DataDir, "baselines", baseline.SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}

	cfg.DataDir = t.TempDir()
	again, _ := runServer(t, cfg)
	if after := list(again); canonical(after) != canonical(before) {
		t.Fatalf("findings after the disk was lost:\n got %s\nwant %s", after, before)
	}
	// The baselines learnt before are back too.
	if got, err := os.ReadFile(filepath.Join(cfg.DataDir, "baselines", baseline.SnapshotFile)); err != nil || !bytes.Equal(got, learnt) {
		t.Fatalf("baselines after the disk was lost: %d bytes (%v), had %d", len(got), err, len(learnt))
	}
}

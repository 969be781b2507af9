//go:build minio

// Package cluster_test runs three `tracedx serve` processes on one MinIO
// bucket: e2e/minio.sh builds MinIO, starts it and runs this with
// TRACEDX_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/tracedx/tracedx/internal/freeport"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const bucket = "tracedx-e2e-cluster"

type node struct {
	id, grpcAddr, httpAddr, dir string
	cmd                         *exec.Cmd
	log                         *bytes.Buffer
	done                        chan struct{}
}

func buildTracedx(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	bin := filepath.Join(t.TempDir(), "tracedx")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tracedx")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type cluster struct {
	t      *testing.T
	bin    string
	cfg    string
	peers  string
	nodes  []*node
	prefix string
}

func (c *cluster) start(n *node) {
	c.t.Helper()
	n.log = &bytes.Buffer{}
	n.done = make(chan struct{})
	n.cmd = exec.Command(c.bin, "serve", "--config", c.cfg,
		"--data-dir", n.dir, "--node-id", n.id, "--peers", c.peers,
		"--otlp-grpc-addr", n.grpcAddr, "--http-addr", n.httpAddr,
		"--otlp-http-addr", "", "--zipkin-addr", "", "--tempo-addr", "",
		"--storage", "s3", "--s3-endpoint", os.Getenv("TRACEDX_TEST_S3_ENDPOINT"),
		"--s3-bucket", bucket, "--s3-prefix", c.prefix)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { n.cmd.Wait(); close(n.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + n.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-n.done:
			c.t.Fatalf("node %s exited:\n%s", n.id, n.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.t.Fatalf("node %s not healthy within 30s:\n%s", n.id, n.log)
}

func startCluster(t *testing.T, size int) *cluster {
	if os.Getenv("TRACEDX_TEST_S3_ENDPOINT") == "" {
		t.Skip("TRACEDX_TEST_S3_ENDPOINT not set: run e2e/minio.sh")
	}
	c := &cluster{t: t, bin: buildTracedx(t), prefix: fmt.Sprintf("e2e-%d", time.Now().UnixNano())}
	c.cfg = filepath.Join(t.TempDir(), "tracedx.yaml")
	// Short intervals so the test sees refreshes and compactions quickly.
	conf := "storage:\n  trace_idle_timeout: 1s\n  compact_interval: 2s\ncluster:\n  refresh_interval: 1s\n"
	if err := os.WriteFile(c.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i := 0; i < size; i++ {
		n := &node{id: fmt.Sprintf("node-%d", i), grpcAddr: freeport.Addr(t), httpAddr: freeport.Addr(t), dir: t.TempDir()}
		c.nodes = append(c.nodes, n)
		peers = append(peers, fmt.Sprintf("%s=%s/%s", n.id, n.grpcAddr, n.httpAddr))
	}
	c.peers = strings.Join(peers, ",")
	for _, n := range c.nodes {
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.done:
			case <-time.After(20 * time.Second):
				n.cmd.Process.Kill()
			}
			if t.Failed() {
				t.Logf("log of %s:\n%s", n.id, tail(n.log.String(), 30))
			}
		}
	})
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// batch is one OTLP request: traces of three spans each.
type batch struct {
	traces map[string]int // trace id (hex) → spans
	td     ptrace.Traces
}

func makeBatch(r *rand.Rand, service string, ntraces int) batch {
	b := batch{traces: map[string]int{}, td: ptrace.NewTraces()}
	rs := b.td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	for i := 0; i < ntraces; i++ {
		var tid pcommon.TraceID
		for k := range tid {
			tid[k] = byte(r.UintN(256))
		}
		var parent pcommon.SpanID
		for j := 0; j < 3; j++ {
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(tid)
			var sid pcommon.SpanID
			for k := range sid {
				sid[k] = byte(r.UintN(256))
			}
			sp.SetSpanID(sid)
			sp.SetParentSpanID(parent)
			parent = sid
			sp.SetName(fmt.Sprintf("op-%d", j))
			start := now.Add(time.Duration(j) * time.Millisecond)
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(5 * time.Millisecond)))
		}
		b.traces[fmt.Sprintf("%x", tid[:])] = 3
	}
	return b
}

func send(addr string, b batch) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(b.td))
	return err
}

func getJSON(url string, out any) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return 200, json.Unmarshal(body, out)
}

// traceSpans is how many spans a node returns for a trace (0: not found).
func traceSpans(n *node, id string) (int, error) {
	var tr struct {
		Spans []struct {
			SpanID string `json:"span_id"`
		} `json:"spans"`
	}
	code, err := getJSON("http://"+n.httpAddr+"/api/v1/traces/"+id, &tr)
	if code == 404 {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	distinct := map[string]bool{}
	for _, s := range tr.Spans {
		distinct[s.SpanID] = true
	}
	return len(distinct), nil
}

func searchService(n *node, service string) (map[string]int, error) {
	var res struct {
		Traces []struct {
			TraceID   string `json:"trace_id"`
			SpanCount int    `json:"span_count"`
		} `json:"traces"`
	}
	if _, err := getJSON("http://"+n.httpAddr+"/api/v1/search?limit=10000&service="+service, &res); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, t := range res.Traces {
		out[t.TraceID] = t.SpanCount
	}
	return out, nil
}

// eventually retries check until it passes or the time is up.
func eventually(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// checkAll asserts every node returns every acknowledged trace whole, by
// id and by search.
func (c *cluster) checkAll(t *testing.T, service string, want map[string]int, d time.Duration) {
	t.Helper()
	for _, n := range c.nodes {
		eventually(t, d, "trace by id from "+n.id, func() error {
			for id, spans := range want {
				got, err := traceSpans(n, id)
				if err != nil {
					return err
				}
				if got != spans {
					return fmt.Errorf("trace %s: %d spans, want %d", id, got, spans)
				}
			}
			return nil
		})
		eventually(t, d, "search from "+n.id, func() error {
			got, err := searchService(n, service)
			if err != nil {
				return err
			}
			for id := range want {
				if _, ok := got[id]; !ok {
					return fmt.Errorf("trace %s not found by search (%d found)", id, len(got))
				}
			}
			return nil
		})
	}
}

// checkAggregates asserts every node answers the RED metrics and the
// operations of service for the whole cluster: each node records only the
// spans of the traces it owns, so this holds only if the answers merge
// every node's share.
func (c *cluster) checkAggregates(t *testing.T, service string, spans int) {
	t.Helper()
	rng := fmt.Sprintf("start=%d&end=%d", time.Now().Add(-time.Hour).UnixMilli(), time.Now().Add(time.Minute).UnixMilli())
	for _, n := range c.nodes {
		var svc struct {
			Services []struct {
				Service string `json:"service"`
				Count   int    `json:"count"`
			} `json:"services"`
		}
		if _, err := getJSON("http://"+n.httpAddr+"/api/v1/metrics/services?"+rng, &svc); err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, s := range svc.Services {
			if s.Service == service {
				got = s.Count
			}
		}
		if got != spans {
			t.Errorf("%s: RED counts %d spans of %s, want %d (the cluster's)", n.id, got, service, spans)
		}
		var ops struct {
			Data []string `json:"data"`
		}
		if _, err := getJSON("http://"+n.httpAddr+"/api/services/"+service+"/operations", &ops); err != nil {
			t.Fatal(err)
		}
		if len(ops.Data) != 3 {
			t.Errorf("%s: operations of %s: %v, want op-0, op-1, op-2", n.id, service, ops.Data)
		}
	}
}

func TestThreeNodesOneBucket(t *testing.T) {
	c := startCluster(t, 3)
	r := rand.New(rand.NewPCG(7, 8))

	// Spans sent to any node are found from every node: right away (the
	// owners' heads), and after they are cut into blocks in the bucket.
	want := map[string]int{}
	for i := 0; i < 30; i++ {
		b := makeBatch(r, "checkout", 10)
		if err := send(c.nodes[i%3].grpcAddr, b); err != nil {
			t.Fatalf("send to %s: %v", c.nodes[i%3].id, err)
		}
		for id, n := range b.traces {
			want[id] = n
		}
	}
	c.checkAll(t, "checkout", want, 10*time.Second)
	time.Sleep(3 * time.Second) // idle timeout: the traces go to blocks
	c.checkAll(t, "checkout", want, 10*time.Second)
	c.checkAggregates(t, "checkout", 3*len(want))

	// kill -9 one node while batches go to every node: every batch that
	// was acknowledged is found afterwards, from every node. Batches that
	// needed the dead node were refused with a retryable error and are
	// retried by the sender until it is back.
	acked := map[string]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refused int
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := rand.New(rand.NewPCG(uint64(w), 99))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				b := makeBatch(rr, "payment", 2)
				target := c.nodes[(w+k)%3]
				err := send(target.grpcAddr, b)
				mu.Lock()
				if err == nil {
					for id, n := range b.traces {
						acked[id] = n
					}
				} else {
					refused++
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	victim := c.nodes[1]
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	time.Sleep(1500 * time.Millisecond)
	c.start(victim) // same data dir: its WAL replays
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("nothing acknowledged")
	}
	t.Logf("%d traces acknowledged, %d batches refused while node-1 was down", len(acked), refused)
	if refused == 0 {
		t.Error("no batch was refused while a node was down: forwarding to it cannot have been tried")
	}
	c.checkAll(t, "payment", acked, 20*time.Second)

	// Compaction runs once per block: no block is the input of two
	// compactions, and every node ends up listing the same blocks.
	client, err := minio.New(strings.TrimPrefix(os.Getenv("TRACEDX_TEST_S3_ENDPOINT"), "http://"),
		&minio.Options{Creds: credentials.NewEnvAWS()})
	if err != nil {
		t.Fatal(err)
	}
	var compacted int
	eventually(t, 30*time.Second, "compaction", func() error {
		sources := map[string]string{}
		compacted = 0
		ctx := context.Background()
		for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: c.prefix + "/blocks/", Recursive: true}) {
			if obj.Err != nil {
				return obj.Err
			}
			if !strings.HasSuffix(obj.Key, "/meta.json") {
				continue
			}
			o, err := client.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			var meta struct {
				ID      string   `json:"id"`
				Sources []string `json:"sources"`
			}
			err = json.NewDecoder(o).Decode(&meta)
			o.Close()
			if err != nil {
				// Deleted between list and get (compacted meanwhile).
				continue
			}
			if len(meta.Sources) > 0 {
				compacted++
			}
			for _, s := range meta.Sources {
				if prev, dup := sources[s]; dup {
					t.Fatalf("block %s compacted twice: into %s and %s", s, prev, obj.Key)
				}
				sources[s] = obj.Key
			}
		}
		if compacted == 0 {
			return fmt.Errorf("no compacted block in the bucket yet")
		}
		return nil
	})
	t.Logf("%d compacted blocks in the bucket", compacted)
	c.checkAll(t, "payment", acked, 20*time.Second)
	c.checkAll(t, "checkout", want, 20*time.Second)
}

package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/store/s3store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// sinkRef lets ingest start before the ring (which needs every node's
// bound address) exists.
type sinkRef struct {
	mu   sync.Mutex
	w    Writer
	ring atomic.Pointer[Ring]
}

// forwardsTrace is ingest's ForwardsTrace once the ring exists.
func (r *sinkRef) forwardsTrace(id model.TraceID) bool {
	ring := r.ring.Load()
	return ring != nil && ring.OwnedElsewhere(id)
}

func (r *sinkRef) Write(ctx context.Context, spans []model.Span) error {
	r.mu.Lock()
	w := r.w
	r.mu.Unlock()
	return w.Write(ctx, spans)
}

// Owners and WriteEncoded pass on the forwarder's, as the server's
// sink is the forwarder itself.
func (r *sinkRef) Owners(ctx context.Context) (int, int, func(model.TraceID) int) {
	r.mu.Lock()
	w := r.w
	r.mu.Unlock()
	if s, ok := w.(ingest.SplitSink); ok {
		return s.Owners(ctx)
	}
	return 0, 0, nil
}

func (r *sinkRef) WriteEncoded(ctx context.Context, node int, req []byte, spans int) error {
	r.mu.Lock()
	w := r.w
	r.mu.Unlock()
	return w.(ingest.SplitSink).WriteEncoded(ctx, node, req, spans)
}

type node struct {
	eng   *engine.Engine
	in    *ingest.Server
	web   *httptest.Server
	mux   *http.ServeMux
	store *Store
	ring  *Ring
	// traceRequests counts the peer API requests for traces by id it
	// answered (pathTrace and pathTraces).
	traceRequests atomic.Int64
	// oldBuild, set, answers as a node without pathTraces.
	oldBuild atomic.Bool
}

// startCluster runs n nodes in-process on one block storage, each with
// its OTLP/gRPC ingest and HTTP peer API on port 0.
func startCluster(t testing.TB, n int) []*node {
	// Refreshes are explicit; the interval also sets how long a node
	// serves its recent blocks to peers, which must outlast a slow run.
	return startClusterWith(t, n, engine.Options{IdleTimeout: time.Hour, FlushInterval: time.Hour, CompactInterval: time.Hour, RefreshInterval: time.Hour})
}

// startClusterWith starts n nodes whose engines use the timings of o.
func startClusterWith(t testing.TB, n int, o engine.Options) []*node {
	t.Helper()
	ctx := context.Background()
	// On MinIO when e2e/minio.sh gives one, else a shared directory.
	var shared engine.BlockStorage
	var err error
	if ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT"); ep != "" {
		shared, err = s3store.New(ctx, s3store.Config{Endpoint: ep, Bucket: "tracedx-cluster-test",
			Prefix: fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()), SpoolDir: t.TempDir(), Logger: quiet})
	} else {
		shared, err = engine.NewLocalStorage(filepath.Join(t.TempDir(), "bucket"))
	}
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*node, n)
	refs := make([]*sinkRef, n)
	var peers []Peer
	for i := range nodes {
		refs[i] = &sinkRef{}
		in, err := ingest.New(ingest.Config{GRPCAddr: "127.0.0.1:0", Forwarded: Security{}.FromPeer, ForwardsTrace: refs[i].forwardsTrace},
			refs[i], nil, quiet, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(ctx); err != nil {
			t.Fatal(err)
		}
		nd := &node{in: in, mux: http.NewServeMux()}
		nd.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == pathTrace || r.URL.Path == pathTraces {
				nd.traceRequests.Add(1)
			}
			if r.URL.Path == pathTraces && nd.oldBuild.Load() {
				http.NotFound(w, r)
				return
			}
			nd.mux.ServeHTTP(w, r)
		}))
		web := nd.web
		nodes[i] = nd
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: in.GRPCAddr(), HTTP: web.Listener.Addr().String()})
		t.Cleanup(func() {
			web.Close()
			in.Shutdown(context.Background())
		})
	}
	for i, nd := range nodes {
		ring, err := NewRing(peers, peers[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		eo := o
		eo.Dir, eo.Storage, eo.OwnsBlock, eo.Logger = t.TempDir(), shared, ring.OwnsBlock, quiet
		eng, err := engine.Open(ctx, eo)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close() })
		fw, err := NewForwarder(ring, eng, Security{}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fw.Close() })
		refs[i].mu.Lock()
		refs[i].w = fw
		refs[i].mu.Unlock()
		refs[i].ring.Store(ring)
		nd.eng, nd.ring = eng, ring
		nd.store = NewStore(eng, eng, ring, Security{}, quiet)
		RegisterPeerRoutes(nd.mux, eng, Security{}, quiet)
	}
	return nodes
}

func makeTraces(r *rand.Rand, n int) []model.Span {
	var spans []model.Span
	base := uint64(time.Now().Add(-time.Minute).UnixNano())
	for i := 0; i < n; i++ {
		var tid model.TraceID
		for k := range tid {
			tid[k] = byte(r.UintN(256))
		}
		root := model.SpanID{byte(i), byte(i >> 8), 1}
		start := base + uint64(i)*1e6
		spans = append(spans,
			model.Span{TraceID: tid, SpanID: root, Name: "GET /cart", Service: "frontend", Kind: model.KindServer,
				StartUnixNano: start, EndUnixNano: start + 5e6},
			model.Span{TraceID: tid, SpanID: model.SpanID{byte(i), byte(i >> 8), 2}, ParentSpanID: root, Name: "SELECT",
				Service: "cart", Kind: model.KindClient, StartUnixNano: start + 1e6, EndUnixNano: start + 3e6})
	}
	return spans
}

func export(t testing.TB, addr string, spans []model.Span) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = ptraceotlp.NewGRPCClient(conn).Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)))
	return err
}

// checkEverywhere asserts every node answers every trace whole, by id and
// by search, whatever node owns it.
func checkEverywhere(t *testing.T, stage string, nodes []*node, spans []model.Span) {
	t.Helper()
	ctx := context.Background()
	want := map[model.TraceID]int{}
	for _, s := range spans {
		want[s.TraceID]++
	}
	for i, nd := range nodes {
		var refs []store.TraceRef
		for id, n := range want {
			got, err := nd.store.Trace(ctx, id, store.TimeRange{})
			if err != nil || len(got) != n {
				t.Fatalf("%s: node %d: trace %s: %d spans, want %d (%v)", stage, i, id, len(got), n, err)
			}
			refs = append(refs, store.TraceRef{ID: id})
		}
		checkTracesTogether(t, stage, i, nodes, refs, want)
		res, err := nd.store.Search(ctx, store.Query{Service: "cart", Limit: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != len(want) {
			t.Fatalf("%s: node %d: search found %d traces, want %d", stage, i, len(res), len(want))
		}
		for _, r := range res {
			if r.SpanCount != want[r.TraceID] {
				t.Fatalf("%s: node %d: trace %s summarised with %d spans, want %d", stage, i, r.TraceID, r.SpanCount, want[r.TraceID])
			}
		}
		scanned := 0
		err = nd.store.ScanTraces(ctx, store.Query{Service: "frontend", Limit: 10_000}, func(spans []model.Span) error {
			if len(spans) != want[spans[0].TraceID] {
				return fmt.Errorf("scan: trace %s with %d spans", spans[0].TraceID, len(spans))
			}
			scanned++
			return nil
		})
		if err != nil || scanned != len(want) {
			t.Fatalf("%s: node %d: scan saw %d traces, want %d (%v)", stage, i, scanned, len(want), err)
		}
		checkUnlimitedScan(t, stage, i, nd, want)
	}
}

// checkTracesTogether asserts node i reads the traces of refs, and one
// absent, whole and in order with one request to each peer.
func checkTracesTogether(t *testing.T, stage string, i int, nodes []*node, refs []store.TraceRef, want map[model.TraceID]int) {
	t.Helper()
	var absent model.TraceID
	absent[0] = 0xfe
	refs = append(slices.Clone(refs), store.TraceRef{ID: absent}, refs[0])
	before := make([]int64, len(nodes))
	for k, nd := range nodes {
		before[k] = nd.traceRequests.Load()
	}
	got, err := nodes[i].store.Traces(context.Background(), refs)
	if err != nil || len(got) != len(refs) {
		t.Fatalf("%s: node %d: Traces: %d answers for %d ids (%v)", stage, i, len(got), len(refs), err)
	}
	for k, r := range refs {
		if len(got[k]) != want[r.ID] {
			t.Fatalf("%s: node %d: Traces: trace %s: %d spans, want %d", stage, i, r.ID, len(got[k]), want[r.ID])
		}
		if !slices.IsSortedFunc(got[k], func(a, b model.Span) int { return cmp.Compare(a.StartUnixNano, b.StartUnixNano) }) {
			t.Fatalf("%s: node %d: Traces: trace %s not in start order", stage, i, r.ID)
		}
	}
	for k, nd := range nodes {
		wantReq := int64(1)
		switch {
		case k == i:
			wantReq = 0
		case nd.oldBuild.Load():
			wantReq = int64(len(want)) + 2 // the batch refused, then each id once
		}
		if n := nd.traceRequests.Load() - before[k]; n != wantReq {
			t.Fatalf("%s: node %d: Traces of %d ids asked node %d %d times, want %d", stage, i, len(refs), k, n, wantReq)
		}
	}
}

// checkUnlimitedScan asserts an unlimited scan (comparisons, TraceQL
// metrics) of one node sees every trace of the cluster once, whole and
// newest first, and that one stopping after n traces saw the n newest.
func checkUnlimitedScan(t *testing.T, stage string, i int, nd *node, want map[model.TraceID]int) {
	t.Helper()
	var starts []uint64
	seen := map[model.TraceID]bool{}
	err := nd.store.ScanTraces(context.Background(), store.Query{Service: "frontend"}, func(spans []model.Span) error {
		id := spans[0].TraceID
		if seen[id] || len(spans) != want[id] {
			return fmt.Errorf("unlimited scan: trace %s again (%v) or with %d spans, want %d", id, seen[id], len(spans), want[id])
		}
		seen[id] = true
		starts = append(starts, traceStart(spans))
		return nil
	})
	if err != nil || len(seen) != len(want) {
		t.Fatalf("%s: node %d: unlimited scan saw %d traces, want %d (%v)", stage, i, len(seen), len(want), err)
	}
	if !slices.IsSortedFunc(starts, func(a, b uint64) int { return cmp.Compare(b, a) }) {
		t.Fatalf("%s: node %d: unlimited scan not newest first", stage, i)
	}
	var first []uint64
	err = nd.store.ScanTraces(context.Background(), store.Query{Service: "frontend"}, func(spans []model.Span) error {
		first = append(first, traceStart(spans))
		if len(first) == 25 {
			return store.ErrStop
		}
		return nil
	})
	if err != nil || !slices.Equal(first, starts[:25]) {
		t.Fatalf("%s: node %d: a scan stopped after 25 traces saw other traces than the 25 newest (%v)", stage, i, err)
	}
}

func TestClusterAnswersEverywhere(t *testing.T) {
	ctx := context.Background()
	nodes := startCluster(t, 3)
	spans := makeTraces(rand.New(rand.NewPCG(1, 2)), 300)
	// Every batch goes to node 0; the ring spreads the traces.
	if err := export(t, nodes[0].in.GRPCAddr(), spans); err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		st := nd.eng.Stats()
		if st.HeadSpans == 0 || st.HeadSpans == int64(len(spans)) {
			t.Fatalf("node %d holds %d of %d spans: traces are not spread by owner", i, st.HeadSpans, len(spans))
		}
		for _, s := range spans {
			owns := nd.ring.TraceOwner(s.TraceID).ID == nd.ring.Self().ID
			_, err := nd.eng.PeerTrace(ctx, s.TraceID, nil)
			if owns != (err == nil) {
				t.Fatalf("node %d: trace %s owned=%v but stored=%v", i, s.TraceID, owns, err == nil)
			}
		}
	}
	checkEverywhere(t, "in heads", nodes, spans)

	// Cut to blocks: before the others refresh, owners serve their recent
	// blocks; after, everyone reads them from the shared storage and owners
	// leave them out (no span counted twice).
	for _, nd := range nodes {
		if err := nd.eng.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkEverywhere(t, "recent blocks", nodes, spans)
	// A node of an older build answers traces one by one.
	nodes[2].oldBuild.Store(true)
	checkEverywhere(t, "recent blocks, a node of an older build", nodes, spans)
	nodes[2].oldBuild.Store(false)
	for _, nd := range nodes {
		if err := nd.eng.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkEverywhere(t, "shared blocks", nodes, spans)

	// Compaction runs once per block: each node compacts only the blocks
	// it owns, every block is owned by exactly one node.
	total := 0
	for _, nd := range nodes {
		total += nd.eng.Stats().Blocks
	}
	if total != 3*3 {
		t.Fatalf("each node should list the 3 blocks, got %d in all", total)
	}
	owned := 0
	for _, id := range nodes[0].eng.RecentBlocks(time.Hour) {
		n := 0
		for _, nd := range nodes {
			if nd.ring.OwnsBlock(id) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("block %s has %d owners", id, n)
		}
		owned++
	}
	if owned != 3 {
		t.Fatalf("%d blocks, want 3", owned)
	}
}

func TestForwardFailureIsRetryable(t *testing.T) {
	nodes := startCluster(t, 2)
	// Find a trace node 1 owns, stop node 1, send it to node 0.
	var spans []model.Span
	for _, s := range makeTraces(rand.New(rand.NewPCG(3, 4)), 50) {
		if nodes[0].ring.TraceOwner(s.TraceID).ID == "n1" {
			spans = append(spans, s)
		}
	}
	if len(spans) == 0 {
		t.Fatal("no trace owned by n1")
	}
	nodes[1].in.Shutdown(context.Background())
	err := export(t, nodes[0].in.GRPCAddr(), spans)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("forward to a stopped node: %v, want UNAVAILABLE (retryable)", err)
	}
	// And nothing of it was stored on node 0 as if acknowledged.
	if _, err := nodes[0].eng.PeerTrace(context.Background(), spans[0].TraceID, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("span of n1's trace kept on n0: %v", err)
	}
}

func TestRingSpreadsAndParsesPeers(t *testing.T) {
	peers, err := ParsePeers("a=h1:4317/h1:16686, b=h2:4317/h2:16686,c=h3:4317/h3:16686")
	if err != nil || len(peers) != 3 || peers[1].OTLPGRPC != "h2:4317" || peers[1].HTTP != "h2:16686" {
		t.Fatalf("ParsePeers: %+v %v", peers, err)
	}
	if _, err := ParsePeers("a=h1:4317"); err == nil {
		t.Fatal("peer without HTTP address accepted")
	}
	if _, err := NewRing(peers, "d"); err == nil {
		t.Fatal("node id outside the peer list accepted")
	}
	r, _ := NewRing(peers, "a")
	count := map[string]int{}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 30_000; i++ {
		var id model.TraceID
		for k := range id {
			id[k] = byte(rng.UintN(256))
		}
		count[r.TraceOwner(id).ID]++
	}
	for id, n := range count {
		if n < 7_000 || n > 13_000 {
			t.Fatalf("node %s owns %d of 30000 traces: ring is lopsided %v", id, n, count)
		}
	}
	// Sequential ids (load generators, some SDKs) spread as well.
	clear(count)
	for i := uint64(1); i <= 30_000; i++ {
		var id model.TraceID
		binary.BigEndian.PutUint64(id[8:], i)
		count[r.TraceOwner(id).ID]++
	}
	for id, n := range count {
		if len(count) != 3 || n < 7_000 || n > 13_000 {
			t.Fatalf("node %s owns %d of 30000 sequential traces: ring is lopsided %v", id, n, count)
		}
	}
}

// refusingWriter is a node's store that refuses every write with err.
type refusingWriter struct{ err error }

func (w refusingWriter) Write(context.Context, []model.Span) error { return w.err }

// A tenant over its rate limit on the owner is told so (429 /
// RESOURCE_EXHAUSTED) by the node it sent to, not that the cluster is
// overloaded (503 / UNAVAILABLE).
func TestForwardKeepsTheOwnersRateLimit(t *testing.T) {
	ctx := context.Background()
	owner, err := ingest.New(ingest.Config{GRPCAddr: "127.0.0.1:0"},
		refusingWriter{fmt.Errorf("tenant over its limit: %w", ingest.ErrRateLimited)}, nil, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Shutdown(context.Background()) })
	peers := []Peer{{ID: "n0", OTLPGRPC: "127.0.0.1:1", HTTP: "127.0.0.1:1"}, {ID: "n1", OTLPGRPC: owner.GRPCAddr(), HTTP: "127.0.0.1:1"}}
	ring, err := NewRing(peers, "n0")
	if err != nil {
		t.Fatal(err)
	}
	fw, err := NewForwarder(ring, refusingWriter{errors.New("n0 must not store n1's spans")}, Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	var spans []model.Span
	for _, s := range makeTraces(rand.New(rand.NewPCG(5, 6)), 50) {
		if ring.TraceOwner(s.TraceID).ID == "n1" {
			spans = append(spans, s)
		}
	}
	if len(spans) == 0 {
		t.Fatal("no trace owned by n1")
	}
	err = fw.Write(ctx, spans)
	if !errors.Is(err, ingest.ErrRateLimited) || errors.Is(err, store.ErrOverloaded) {
		t.Fatalf("forward to an owner over the tenant's limit: %v, want a rate-limit error", err)
	}
}

// A span forwarded to its owner is deduplicated there, where it is
// stored: a sender's retry is stored once whether it goes to the same
// node or to another.
func TestRetriesOfForwardedSpansStoredOnce(t *testing.T) {
	nodes := startCluster(t, 2)
	var spans []model.Span
	for _, s := range makeTraces(rand.New(rand.NewPCG(21, 22)), 20) {
		if nodes[0].ring.TraceOwner(s.TraceID).ID == "n1" {
			spans = append(spans, s)
		}
	}
	if len(spans) == 0 {
		t.Fatal("no trace owned by n1")
	}
	for _, to := range []int{0, 0, 1} {
		if err := export(t, nodes[to].in.GRPCAddr(), spans); err != nil {
			t.Fatalf("export to n%d: %v", to, err)
		}
	}
	// The owner dropped both retries; the node forwarding them did not
	// hash them at all.
	dedup := func(nd *node) int {
		return int(testutil.ToFloat64(nd.in.Metrics().SpansDeduplicated.WithLabelValues("otlp_grpc")))
	}
	if got := dedup(nodes[1]); got != 2*len(spans) {
		t.Errorf("the owner dropped %d duplicates, want %d", got, 2*len(spans))
	}
	if got := dedup(nodes[0]); got != 0 {
		t.Errorf("the forwarding node dropped %d duplicates of spans it does not own", got)
	}
	want := map[model.TraceID]int{}
	for _, s := range spans {
		want[s.TraceID]++
	}
	for id, n := range want {
		got, err := nodes[1].eng.PeerTrace(context.Background(), id, nil)
		if err != nil || len(got) != n {
			t.Fatalf("trace %s on its owner: %d spans (%v), want %d", id, len(got), err, n)
		}
	}
}

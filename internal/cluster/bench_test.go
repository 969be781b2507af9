package cluster

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/store/s3store"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// minorFaults is how many times this process has touched a page for
// the first time: the kernel's time for each is in the CPU counted, but
// in no function of a profile that says why.
func minorFaults() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// ingestCase is one deployment BenchmarkIngest compares.
type ingestCase struct {
	name  string
	nodes int
	s3    bool
	// byTraceID sends each trace to its owner (as the Collector's
	// loadbalancing exporter with routing_key traceID does) to nodes
	// running with cluster.forward: false; otherwise batches go
	// round-robin to nodes that forward to the owners.
	byTraceID bool
	// split cuts every batch into this many requests of consecutive
	// traces (0: one request), the request sizes the by-trace-id case
	// gives its nodes, without a cluster: what is left is the cost per
	// request.
	split int
	// instrumented batches are the load generator's 50 traces (~500
	// spans with the attributes HTTP and database instrumentation sets)
	// instead of 250 two-span traces of ids, names and times: fixed
	// costs per request and per hop weigh less next to spans that cost
	// what real ones do.
	instrumented bool
	// sendersPerNode gives every node 8 concurrent senders, where the
	// other cases share 8 among all nodes: a node's WAL groups as many
	// records per sync as it has requests in flight, and a sender that
	// keeps a queue per backend (as the loadbalancing exporter can) gives
	// each node that many.
	sendersPerNode bool
	// rebatch joins each owner's parts of consecutive batches into
	// requests of at least a batch's spans, as the loadbalancing
	// exporter's per-backend sending queue does with `batch` set: a
	// node then gets requests of the single node's size.
	rebatch bool
}

// BenchmarkIngest sends OTLP/gRPC batches of ~500 spans from 8 clients to
// the nodes of an in-process cluster and reports the nodes' CPU per span:
// ingest, forwarding to owners, WAL, head, and a final cut of every span
// into blocks in storage. The clients run in a child process (see
// runIngestSender), so the CPU counted (getrusage of this process) is the
// nodes' alone; MinIO's is reported apart when TRACEDX_BENCH_MINIO_PID
// names its process. The local case is the embedded single node (blocks
// on disk, no cluster); the s3 cases need TRACEDX_TEST_S3_ENDPOINT
// (MinIO).
//
//	go test -run '^$' -bench 'Ingest/^local$/^nodes=1$' -benchtime 200x ./internal/cluster/
func BenchmarkIngest(b *testing.B) {
	for _, c := range []ingestCase{
		{name: "local/nodes=1", nodes: 1},
		{name: "local/split=3/nodes=1", nodes: 1, split: 3},
		{name: "local/split=125/nodes=1", nodes: 1, split: 125},
		{name: "s3/nodes=1", nodes: 1, s3: true},
		{name: "s3/nodes=3/forward", nodes: 3, s3: true},
		{name: "s3/nodes=3/by-trace-id", nodes: 3, s3: true, byTraceID: true},
		{name: "s3/nodes=3/by-trace-id/senders=8-per-node", nodes: 3, s3: true, byTraceID: true, sendersPerNode: true},
		{name: "s3/nodes=3/by-trace-id/rebatched", nodes: 3, s3: true, byTraceID: true, rebatch: true},
		{name: "instrumented/local/nodes=1", nodes: 1, instrumented: true},
		{name: "instrumented/s3/nodes=3/forward", nodes: 3, s3: true, instrumented: true},
		{name: "instrumented/s3/nodes=3/by-trace-id", nodes: 3, s3: true, byTraceID: true, instrumented: true},
		{name: "instrumented/s3/nodes=3/by-trace-id/senders=8-per-node", nodes: 3, s3: true, byTraceID: true, instrumented: true, sendersPerNode: true},
		{name: "instrumented/s3/nodes=3/by-trace-id/rebatched", nodes: 3, s3: true, byTraceID: true, instrumented: true, rebatch: true},
	} {
		b.Run(c.name, func(b *testing.B) { benchIngest(b, c) })
	}
}

func benchIngest(b *testing.B, c ingestCase) {
	storage := benchStorage(b, c.s3)
	addrs, owner, engines := startIngestNodes(b, c.nodes, storage, !c.byTraceID)
	r := rand.New(rand.NewPCG(9, 9))
	// A node runs for days: what it pays once after it starts (the first
	// touch of its dedup table, buffers the allocator has not handed out
	// yet) is not a cost per span. Each case first sends a warm-up load
	// and cuts it into blocks before the clock starts.
	warm := filepath.Join(b.TempDir(), "warm-up")
	writeIngestRequests(b, warm, c, r, owner, len(addrs), warmUpBatches)
	workers := 8
	if c.sendersPerNode {
		workers *= len(addrs)
	}
	startIngestSender(b, warm, addrs, workers).send(b)
	for _, e := range engines {
		if err := e.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	measured := filepath.Join(b.TempDir(), "requests")
	spans := writeIngestRequests(b, measured, c, r, owner, len(addrs), b.N)
	sender := startIngestSender(b, measured, addrs, workers)
	writes0, syncs0, blocks0 := engineTotals(engines)
	// The garbage of building the requests is collected now, not by the
	// nodes' GC cycles inside the measurement.
	runtime.GC()
	b.ResetTimer()
	stopProfile := profileWindow(b)
	cpu0, minio0, t0, faults0 := cpuTime(), minioCPU(), time.Now(), minorFaults()
	sender.send(b)
	cpuFlush := cpuTime()
	_, _, early := engineTotals(engines)
	early -= blocks0
	// Cutting the spans into blocks (and uploading them) is counted too:
	// it is where local disk and object storage differ.
	for _, e := range engines {
		if err := e.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	cpu, wall := cpuTime()-cpu0, time.Since(t0)
	minio := minioCPU() - minio0
	faults := minorFaults() - faults0
	stopProfile()
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(spans)/1e3, "cpu-µs/span")
	b.ReportMetric(float64(spans)/wall.Seconds(), "spans/s")
	b.ReportMetric(float64((cpu0+cpu-cpuFlush).Nanoseconds())/float64(spans)/1e3, "flush-cpu-µs/span")
	if c.s3 && minio0 >= 0 {
		b.ReportMetric(float64(minio.Nanoseconds())/float64(spans)/1e3, "minio-cpu-µs/span")
	}
	// What the engines were handed: the per-request costs (a write, a WAL
	// record, a share of a sync) are paid per write.
	writes, syncs, blocks := engineTotals(engines)
	writes, syncs, blocks = writes-writes0, syncs-syncs0, blocks-blocks0
	b.ReportMetric(float64(blocks), "blocks")
	b.ReportMetric(float64(faults)*1000/float64(spans), "page-faults/1k-spans")
	// Blocks cut before the final flush: none, or the run paid cuts the
	// others did not (see startIngestNodes).
	b.ReportMetric(float64(early), "early-blocks")
	b.ReportMetric(float64(spans)/float64(writes), "spans/write")
	b.ReportMetric(float64(writes)/float64(max(syncs, 1)), "writes/fsync")
}

// warmUpBatches is the warm-up load of every case: ~25k spans touch
// every page of a node's dedup table.
const warmUpBatches = 50

// engineTotals sums the engines' write batches, WAL syncs and blocks cut.
func engineTotals(engines []*engine.Engine) (writes, syncs, blocks uint64) {
	for _, e := range engines {
		st := e.Stats()
		writes += st.WriteBatchesTotal
		syncs += st.WALFsyncsTotal
		blocks += st.BlocksFlushedTotal
	}
	return writes, syncs, blocks
}

// writeIngestRequests encodes n of the case's batches, split as the case
// sends them, into path for the sender process, and returns their spans.
// Requests are built and encoded before the clock starts, into a file
// the sender process reads: what a sender spends building a batch and
// splitting it by owner is the Collector's, not the cluster's, and
// requests kept in this process would be live heap the nodes' GC
// scans and paces itself by.
func writeIngestRequests(b *testing.B, path string, c ingestCase, r *rand.Rand, owner func(model.TraceID) int, nodes, n int) int {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	put := func(node int, spans []model.Span) {
		body, err := ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(spans)).MarshalProto()
		if err != nil {
			b.Fatal(err)
		}
		var hdr [8]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(node))
		binary.LittleEndian.PutUint32(hdr[4:], uint32(len(body)))
		w.Write(hdr[:])
		w.Write(body)
	}
	spans := 0
	pending := make([][]model.Span, nodes)
	for i := 0; i < n; i++ {
		batch := makeTraces(r, 250)
		if c.instrumented {
			batch = otlpconv.FromTraces(gen.Traces(r, 50, time.Now()))
		}
		spans += len(batch)
		if c.split > 1 {
			// Two spans a trace: cut between traces.
			per := (len(batch)/2 + c.split - 1) / c.split * 2
			for len(batch) > 0 {
				k := min(per, len(batch))
				put(0, batch[:k])
				batch = batch[k:]
			}
			continue
		}
		if !c.byTraceID {
			put(i%nodes, batch)
			continue
		}
		for _, s := range batch {
			o := owner(s.TraceID)
			pending[o] = append(pending[o], s)
		}
		for o, part := range pending {
			if len(part) > 0 && (!c.rebatch || len(part) >= len(batch)) {
				put(o, part)
				pending[o] = nil
			}
		}
	}
	for o, part := range pending {
		if len(part) > 0 {
			put(o, part)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return spans
}

// profileWindow starts a CPU profile of the measured window alone when
// TRACEDX_BENCH_CPUPROFILE is set, into that path followed by the case's
// name (a run holds several cases), and returns what stops it:
// -test.cpuprofile also profiles building the requests and starting the
// nodes, which differ between cases and blur a comparison of them. The
// b.N = 1 run that precedes a -benchtime run is not profiled.
func profileWindow(b *testing.B) func() {
	path := os.Getenv("TRACEDX_BENCH_CPUPROFILE")
	if path == "" || b.N == 1 {
		return func() {}
	}
	f, err := os.Create(path + "." + strings.NewReplacer("/", "_", "=", "").Replace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatalf("TRACEDX_BENCH_CPUPROFILE: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// minioCPU is the CPU time MinIO's process has used so far, when
// TRACEDX_BENCH_MINIO_PID names it (-1 otherwise): the S3 cases' storage
// runs outside this process, so its work is not in cpu-µs/span. Clock
// ticks of 10 ms: a rough figure over runs of a few seconds.
func minioCPU() time.Duration {
	pid := os.Getenv("TRACEDX_BENCH_MINIO_PID")
	if pid == "" {
		return -1
	}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: utime and stime are the 12th and 13th.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

const (
	senderFileEnv    = "TRACEDX_INGEST_SENDER_FILE"
	senderAddrsEnv   = "TRACEDX_INGEST_SENDER_ADDRS"
	senderWorkersEnv = "TRACEDX_INGEST_SENDER_WORKERS"
)

// TestMain runs this test binary as BenchmarkIngest's sender process
// when the benchmark starts it so.
func TestMain(m *testing.M) {
	if path := os.Getenv(senderFileEnv); path != "" {
		os.Exit(runIngestSender(path))
	}
	os.Exit(m.Run())
}

// ingestSender is a running sender process.
type ingestSender struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startIngestSender starts the sender process on the requests in path and
// returns once its connections to the nodes are up, so that neither its
// start nor the connections' handshakes fall inside the measurement.
func startIngestSender(b *testing.B, path string, addrs []string, workers int) *ingestSender {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), senderFileEnv+"="+path, senderAddrsEnv+"="+strings.Join(addrs, ","),
		senderWorkersEnv+"="+strconv.Itoa(workers))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &ingestSender{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	b.Cleanup(func() {
		s.stdin.Close()
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	s.expect(b, "ready")
	return s
}

// send has the sender send every request and returns once all are
// answered.
func (s *ingestSender) send(b *testing.B) {
	if _, err := io.WriteString(s.stdin, "go\n"); err != nil {
		b.Fatal(err)
	}
	s.expect(b, "done")
	if err := s.cmd.Wait(); err != nil {
		b.Fatalf("sender: %v", err)
	}
}

func (s *ingestSender) expect(b *testing.B, word string) {
	for s.out.Scan() {
		line := s.out.Text()
		if line == "ingest-sender: "+word {
			return
		}
		if strings.HasPrefix(line, "ingest-sender: ") {
			b.Fatal(line)
		}
	}
	b.Fatalf("sender ended before %q: %v", word, s.out.Err())
}

// runIngestSender is the sender process: it reads the requests
// BenchmarkIngest encoded, connects to every node, says "ready", and on a
// line from its stdin sends the requests from its workers, each request
// to its node, and says "done". It returns the process's exit code.
func runIngestSender(path string) int {
	fail := func(err error) int {
		fmt.Printf("ingest-sender: %v\n", err)
		return 1
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	type request struct {
		node int
		body []byte
	}
	var reqs []request
	for len(data) >= 8 {
		n := int(binary.LittleEndian.Uint32(data[4:]))
		reqs = append(reqs, request{int(binary.LittleEndian.Uint32(data)), data[8 : 8+n]})
		data = data[8+n:]
	}
	workers, err := strconv.Atoi(os.Getenv(senderWorkersEnv))
	if err != nil {
		return fail(err)
	}
	var conns []*grpc.ClientConn
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range strings.Split(os.Getenv(senderAddrsEnv), ",") {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fail(err)
		}
		defer conn.Close()
		conn.Connect()
		for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
			if !conn.WaitForStateChange(ctx, st) {
				return fail(fmt.Errorf("connecting to %s: %w", addr, ctx.Err()))
			}
		}
		conns = append(conns, conn)
	}
	fmt.Println("ingest-sender: ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fail(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if stop || i >= len(reqs) {
					return
				}
				resp, err := exportRaw(conns[reqs[i].node], reqs[i].body)
				// A fully successful export is answered with the empty
				// message; anything else is a partial success, spans the
				// nodes did not store.
				if err == nil && len(resp) > 0 {
					err = fmt.Errorf("partial success: % x", resp)
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fail(firstErr)
	}
	fmt.Println("ingest-sender: done")
	return 0
}

func benchStorage(b *testing.B, s3 bool) engine.BlockStorage {
	if !s3 {
		st, err := engine.NewLocalStorage(filepath.Join(b.TempDir(), "blocks"))
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	ep := os.Getenv("TRACEDX_TEST_S3_ENDPOINT")
	if ep == "" {
		b.Skip("TRACEDX_TEST_S3_ENDPOINT is not set (see e2e/minio.sh)")
	}
	st, err := s3store.New(context.Background(), s3store.Config{Endpoint: ep, Bucket: "tracedx-cluster-test",
		Prefix: fmt.Sprintf("bench-%d", time.Now().UnixNano()), SpoolDir: b.TempDir(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// startIngestNodes starts n nodes on one block storage, as the server
// wires them: a single node and a node with cluster.forward: false write
// to their engine directly, the others through a Forwarder. It returns the
// nodes' OTLP/gRPC addresses, the index of a trace's owner in them and
// the engines.
func startIngestNodes(b *testing.B, n int, storage engine.BlockStorage, forward bool) ([]string, func(model.TraceID) int, []*engine.Engine) {
	ctx := context.Background()
	refs := make([]*sinkRef, n)
	addrs := make([]string, n)
	peers := make([]Peer, n)
	for i := range refs {
		refs[i] = &sinkRef{}
		// As the server wires a cluster node: a peer's requests were
		// checked where they were received.
		cfg := ingest.Config{GRPCAddr: "127.0.0.1:0"}
		if n > 1 {
			cfg.Forwarded = Security{}.FromPeer
		}
		if n > 1 && forward {
			cfg.ForwardsTrace = refs[i].forwardsTrace
		}
		in, err := ingest.New(cfg, refs[i], nil, quiet, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := in.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { in.Shutdown(context.Background()) })
		addrs[i] = in.GRPCAddr()
		peers[i] = Peer{ID: fmt.Sprintf("n%d", i), OTLPGRPC: addrs[i], HTTP: "127.0.0.1:1"}
	}
	var ring *Ring
	engines := make([]*engine.Engine, n)
	for i, ref := range refs {
		r, err := NewRing(peers, peers[i].ID)
		if err != nil {
			b.Fatal(err)
		}
		ring = r
		// No cut before the final flush in a 200x run of any case (a
		// longer one reports its early cuts in early-blocks): with the default
		// idle timeout (10 s) a run slowed past it by a loaded machine cut
		// its oldest traces mid-run, and with the default head bound
		// (128 MiB, early cuts above a quarter of it) the instrumented
		// cases cut early, the single node (holding every span) six or
		// seven times, each cluster node once. Every cut has a fixed
		// cost, so either made a case's CPU per span depend on something
		// other than the deployment.
		o := engine.Options{Dir: b.TempDir(), Storage: storage, Logger: quiet,
			IdleTimeout: time.Hour, HeadMaxBytes: 1 << 30}
		// storage.wal_group_wait, to compare: -1s turns the wait off.
		if v := os.Getenv("TRACEDX_BENCH_WAL_GROUP_WAIT"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("TRACEDX_BENCH_WAL_GROUP_WAIT: %v", err)
			}
			o.WALGroupWait = d
		}
		if n > 1 {
			o.OwnsBlock = r.OwnsBlock
		}
		eng, err := engine.Open(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { eng.Close() })
		engines[i] = eng
		var w Writer = eng
		if n > 1 && forward {
			fw, err := NewForwarder(r, eng, Security{}, quiet)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { fw.Close() })
			w = fw
		}
		ref.mu.Lock()
		ref.w = w
		ref.mu.Unlock()
		ref.ring.Store(r)
	}
	index := map[string]int{}
	for i, p := range peers {
		index[p.ID] = i
	}
	return addrs, func(id model.TraceID) int { return index[ring.TraceOwner(id).ID] }, engines
}

// BenchmarkForwardRequest is what a node receiving a batch of 500 spans
// spends on the two thirds of them it forwards (the request's decoding
// included): encoded from the model, or copied in the bytes they came in.
// bare spans are BenchmarkIngest's (ids, names, times); instrumented ones
// are the load generator's, with the attributes HTTP and database
// instrumentation sets.
//
//	go test -run '^$' -bench ForwardRequest -benchtime 2000x ./internal/cluster/
func BenchmarkForwardRequest(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	bare, err := ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(makeTraces(rng, 250))).MarshalProto()
	if err != nil {
		b.Fatal(err)
	}
	instrumented, err := ptraceotlp.NewExportRequestFromTraces(gen.Traces(rng, 50, time.Now())).MarshalProto()
	if err != nil {
		b.Fatal(err)
	}
	for _, req := range []struct {
		name string
		data []byte
	}{{"bare", bare}, {"instrumented", instrumented}} {
		b.Run(req.name+"/encode", func(b *testing.B) { benchForward(b, req.data, false) })
		b.Run(req.name+"/copy", func(b *testing.B) { benchForward(b, req.data, true) })
		b.Run(req.name+"/split", func(b *testing.B) { benchSplit(b, req.data) })
	}
}

// benchSplit is benchForward for a request split by owner before it is
// decoded (ingest.SplitSink): the other owners' two thirds are only
// checked, this node's third decoded.
func benchSplit(b *testing.B, data []byte) {
	ring, err := NewRing([]Peer{{ID: "a"}, {ID: "b"}, {ID: "c"}}, "a")
	if err != nil {
		b.Fatal(err)
	}
	var sp otlpconv.TraceSplitter
	n := 0
	cpu0 := cpuTime()
	for range b.N {
		if err := sp.Split(data, 3, ring.ownerIndex, ring.self); err != nil {
			b.Fatal(err)
		}
		for o, part := range sp.Parts {
			decode := otlpconv.CheckTracesProtoPooled
			if o == ring.self {
				decode = otlpconv.DecodeTracesProtoPooled
			}
			d, err := decode(part, otlpconv.DefaultLimits())
			if err != nil {
				b.Fatal(err)
			}
			n += len(d.Spans)
			d.Release()
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(n), "cpu-ns/span")
}

func benchForward(b *testing.B, data []byte, copyRaw bool) {
	var buf []byte
	n := 0
	// CPU time, not wall time: the machines this runs on are shared.
	cpu0 := cpuTime()
	for range b.N {
		var decoded []model.Span
		var x *otlpconv.RawIndex
		var err error
		if copyRaw {
			var raws *otlpconv.RawSpans
			decoded, raws, _, err = otlpconv.DecodeTracesProtoRaw(data, otlpconv.DefaultLimits())
			x = otlpconv.NewRawIndex(raws)
		} else {
			decoded, _, err = otlpconv.DecodeTracesProto(data, otlpconv.DefaultLimits())
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(decoded)
		buf, _ = appendRequest(buf[:0], decoded[:len(decoded)*2/3], x)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(n), "cpu-ns/span")
}

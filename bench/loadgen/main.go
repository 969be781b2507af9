// Command loadgen replays pre-encoded, realistic OTLP trace requests with
// fresh random 128-bit trace ids against an OTLP/gRPC or OTLP/HTTP endpoint
// and reports the spans the server acknowledged per second.
//
//	go run ./bench/loadgen -addr 127.0.0.1:4317 -duration 30s -workers 8
//	go run ./bench/loadgen -protocol http -addr 127.0.0.1:4318 -rate 100000
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	// gzip: the -gzip flag's gRPC compressor (grpc.UseCompressor finds it
	// registered by name; without it every request failed with Internal).
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
)

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// rawCodec sends pre-encoded request bytes as they are; the server sees an
// ordinary protobuf message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// Result is the JSON report (-json).
type Result struct {
	Protocol        string         `json:"protocol"`
	Workers         int            `json:"workers"`
	DurationSeconds float64        `json:"duration_seconds"`
	Requests        int64          `json:"requests"`
	SpansSent       int64          `json:"spans_sent"`
	SpansAccepted   int64          `json:"spans_accepted"`
	SpansPerSecond  float64        `json:"accepted_spans_per_second"`
	Errors          map[string]int `json:"errors"`
	LatencyP50Ms    float64        `json:"latency_p50_ms"`
	LatencyP99Ms    float64        `json:"latency_p99_ms"`
	SpansPerRequest float64        `json:"spans_per_request"`
	BytesPerRequest float64        `json:"bytes_per_request"`
}

func main() {
	var (
		protocol  = flag.String("protocol", "grpc", "grpc or http")
		addr      = flag.String("addr", "", "server address (default 127.0.0.1:4317 for grpc, 127.0.0.1:4318 for http)")
		workers   = flag.Int("workers", 8, "concurrent senders (requests in flight)")
		conns     = flag.Int("conns", 2, "gRPC connections shared by the workers")
		duration  = flag.Duration("duration", 30*time.Second, "how long to send")
		rate      = flag.Float64("rate", 0, "target spans/s over all workers (0: as fast as the server acknowledges)")
		traces    = flag.Int("traces-per-request", 30, "traces per request (5-30 spans each, ~525 spans per request at 30)")
		templates = flag.Int("templates", 32, "distinct pre-encoded requests to rotate through")
		seed      = flag.Uint64("seed", 1, "random seed of the templates")
		gz        = flag.Bool("gzip", false, "gzip-compress requests (costs generator CPU)")
		asJSON    = flag.Bool("json", false, "print the result as JSON")
		httpPath  = flag.String("http-path", "/v1/traces", "URL path of OTLP/HTTP (VictoriaTraces: /insert/opentelemetry/v1/traces)")
	)
	flag.Parse()
	if *addr == "" {
		*addr = map[string]string{"grpc": "127.0.0.1:4317", "http": "127.0.0.1:4318"}[*protocol]
	}
	if *protocol != "grpc" && *protocol != "http" {
		fmt.Fprintln(os.Stderr, "loadgen: -protocol must be grpc or http")
		os.Exit(2)
	}
	ts, err := gen.Templates(*seed, *templates, *traces)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	var send sender
	switch *protocol {
	case "grpc":
		send, err = newGRPCSender(*addr, *conns, *gz)
	case "http":
		send = newHTTPSender(*addr, *httpPath, *workers, *gz)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	res := run(send, ts, *workers, *duration, *rate)
	res.Protocol = *protocol
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Printf("protocol %s, %d workers, %.1fs: %d requests, %d spans sent, %d accepted\n",
		res.Protocol, res.Workers, res.DurationSeconds, res.Requests, res.SpansSent, res.SpansAccepted)
	fmt.Printf("accepted: %.0f spans/s  (request: %.0f spans, %.0f bytes; latency p50 %.2f ms, p99 %.2f ms)\n",
		res.SpansPerSecond, res.SpansPerRequest, res.BytesPerRequest, res.LatencyP50Ms, res.LatencyP99Ms)
	if len(res.Errors) > 0 {
		fmt.Printf("errors: %v\n", res.Errors)
	}
}

// sender sends one encoded request and returns how many spans the server
// rejected (partial success) or an error whose text keys the error count.
type sender interface {
	send(ctx context.Context, body []byte, scratch *[]byte) (rejected int64, err error)
}

func run(s sender, ts []*gen.Template, workers int, d time.Duration, rate float64) Result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var requests, sent, accepted atomic.Int64
	var mu sync.Mutex
	errs := map[string]int{}
	lat := make([][]time.Duration, workers)
	perWorker := rate / float64(workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(time.Now().UnixNano())))
			var buf, scratch []byte
			next := time.Now()
			for i := w; ctx.Err() == nil; i++ {
				t := ts[i%len(ts)]
				if perWorker > 0 {
					next = next.Add(time.Duration(float64(t.Spans) / perWorker * float64(time.Second)))
					if wait := time.Until(next); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return
						}
					}
				}
				buf = t.Fill(buf, rng)
				t0 := time.Now()
				rejected, err := s.send(ctx, buf, &scratch)
				// gRPC enforces the deadline with its own timer, which can fire
				// before ctx's: an error at or after the deadline is the run's
				// end cutting the request off, not a server error.
				if deadline, _ := ctx.Deadline(); err != nil && (ctx.Err() != nil || !time.Now().Before(deadline)) {
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				requests.Add(1)
				sent.Add(int64(t.Spans))
				if err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					continue
				}
				accepted.Add(int64(t.Spans) - rejected)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	var spans, bytes float64
	for _, t := range ts {
		spans += float64(t.Spans)
		bytes += float64(len(t.Body))
	}
	return Result{
		Workers: workers, DurationSeconds: elapsed, Requests: requests.Load(),
		SpansSent: sent.Load(), SpansAccepted: accepted.Load(),
		SpansPerSecond: float64(accepted.Load()) / elapsed, Errors: errs,
		LatencyP50Ms: pct(0.5), LatencyP99Ms: pct(0.99),
		SpansPerRequest: spans / float64(len(ts)), BytesPerRequest: bytes / float64(len(ts)),
	}
}

type grpcSender struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64
	opts  []grpc.CallOption
}

func newGRPCSender(addr string, n int, gz bool) (*grpcSender, error) {
	s := &grpcSender{opts: []grpc.CallOption{grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64 << 20)}}
	if gz {
		s.opts = append(s.opts, grpc.UseCompressor("gzip"))
	}
	for i := 0; i < max(n, 1); i++ {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

func (g *grpcSender) send(ctx context.Context, body []byte, scratch *[]byte) (int64, error) {
	c := g.conns[g.next.Add(1)%uint64(len(g.conns))]
	if err := c.Invoke(ctx, exportMethod, &body, scratch, g.opts...); err != nil {
		return 0, errors.New("grpc " + status.Code(err).String())
	}
	return rejectedOf(*scratch)
}

func rejectedOf(resp []byte) (int64, error) {
	if len(resp) == 0 {
		return 0, nil
	}
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(resp); err != nil {
		return 0, errors.New("undecodable response")
	}
	return r.PartialSuccess().RejectedSpans(), nil
}

type httpSender struct {
	url    string
	client *http.Client
	gz     bool
}

func newHTTPSender(addr, path string, workers int, gz bool) *httpSender {
	tr := &http.Transport{MaxIdleConns: workers, MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
	return &httpSender{url: "http://" + addr + path, client: &http.Client{Transport: tr}, gz: gz}
}

func (h *httpSender) send(ctx context.Context, body []byte, scratch *[]byte) (int64, error) {
	if h.gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = b.Bytes()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if h.gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, errors.New("http transport error")
	}
	defer resp.Body.Close()
	b := bytes.NewBuffer((*scratch)[:0])
	_, _ = io.Copy(b, resp.Body)
	*scratch = b.Bytes()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("http %d", resp.StatusCode)
	}
	return rejectedOf(*scratch)
}

package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/bench/loadgen/gen"
	"github.com/tracedx/tracedx/internal/model"
)

// BenchmarkDecodeConvert measures the CPU cost of the ingest hot path
// without network or storage: nesting check, protobuf decode into the
// model, limit checks, dedup (spans repeat after the first iteration, so
// they are found in the window and not written, as a retry would be).
// "direct" is the server's path, "pdata" the one it replaced (pdata's
// decoder, then conversion to the model).
func BenchmarkDecodeConvert(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		benchExport(b, func(s *Server, body []byte) (exportResult, error) {
			return s.exportTraces(context.Background(), protoHTTP, formatProto, body)
		})
	})
	b.Run("pdata", func(b *testing.B) { benchExport(b, exportViaPdata) })
}

func benchExport(b *testing.B, export func(*Server, []byte) (exportResult, error)) {
	ts, err := gen.Templates(1, 4, 30)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make([][]byte, len(ts))
	spans := 0
	for i, t := range ts {
		bodies[i] = t.Fill(nil, rng)
		spans += t.Spans
	}
	s, err := New(DefaultConfig(), funcSink(func(context.Context, []model.Span) error { return nil }), nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		for _, body := range bodies {
			res, err := export(s, body)
			if err != nil || res.rejected > 0 {
				b.Fatal(err, res.msg)
			}
		}
	}
	b.ReportMetric(float64(spans*b.N)/b.Elapsed().Seconds(), "spans/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(spans*b.N), "ns/span")
	// CPU time, unlike wall time, holds still on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(spans*b.N), "cpu-ns/span")
	b.SetBytes(int64(len(bodies[0]) * len(bodies)))
}

// BenchmarkDecodeOnly isolates pdata decoding for comparison.
func BenchmarkDecodeOnly(b *testing.B) {
	ts, err := gen.Templates(1, 1, 30)
	if err != nil {
		b.Fatal(err)
	}
	body := ts[0].Fill(nil, rand.New(rand.NewPCG(1, 2)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(ts[0].Spans*b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkGRPCExport measures one OTLP/gRPC export request of the
// harness's shape (30 traces, ~250 KB, fresh ids) through a real listener
// into a sink that keeps nothing: framing, the request buffer, decode,
// checks. B/op counts client and server; the server's part is what moves
// when the request path changes.
func BenchmarkGRPCExport(b *testing.B) {
	bodies, spans := exportBodies(b)
	s := startServer(b, testConfig(), funcSink(func(context.Context, []model.Span) error { return nil }), nil)
	conn := dial(b, s.GRPCAddr())
	const method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	b.ReportAllocs()
	b.SetBytes(int64(len(bodies[0])))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var resp []byte
		if err := conn.Invoke(context.Background(), method, bodies[i%len(bodies)], &resp, grpc.ForceCodec(rawCodec{})); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(spans/len(bodies)), "ns/span")
}

// BenchmarkHTTPExport is BenchmarkGRPCExport over OTLP/HTTP (protobuf,
// one kept-alive connection) uncompressed, gzip- and zstd-compressed, so
// the protocols' and encodings' bytes per request can be compared.
func BenchmarkHTTPExport(b *testing.B) {
	bodies, spans := exportBodies(b)
	for _, enc := range []string{"", "gzip", "zstd"} {
		name := enc
		if name == "" {
			name = "identity"
		}
		b.Run(name, func(b *testing.B) {
			sent := make([][]byte, len(bodies))
			for i, body := range bodies {
				sent[i] = compress(b, enc, body)
			}
			s := startServer(b, testConfig(), funcSink(func(context.Context, []model.Span) error { return nil }), nil)
			url := "http://" + s.HTTPAddr() + "/v1/traces"
			client := &http.Client{Transport: &http.Transport{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(bodies[0])))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(sent[i%len(sent)]))
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Content-Type", ctProto)
				if enc != "" {
					req.Header.Set("Content-Encoding", enc)
				}
				exportExpecting(b, client, req, http.StatusOK)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(spans/len(bodies)), "ns/span")
		})
	}
}

// BenchmarkHTTPRefused measures OTLP/HTTP requests of the harness's size
// that admission refuses, over loopback with keep-alive: reading their
// bodies is what they cost (cpu-ns/request counts client and server).
func BenchmarkHTTPRefused(b *testing.B) {
	bodies, _ := exportBodies(b)
	cfg := testConfig()
	cfg.Admit = func() error { return errors.New("memory budget exceeded") }
	s := startServer(b, cfg, funcSink(func(context.Context, []model.Span) error { return nil }), nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	client := &http.Client{Transport: &http.Transport{}}
	b.SetBytes(int64(len(bodies[0])))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", ctProto)
		exportExpecting(b, client, req, http.StatusServiceUnavailable)
	}
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/request")
}

// exportExpecting sends req and reads its whole answer, which must have
// the status want.
func exportExpecting(b *testing.B, client *http.Client, req *http.Request, want int) {
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("status %d, want %d", resp.StatusCode, want)
	}
}

// exportBodies are 64 export requests of the harness's shape with fresh
// ids, and their span count.
func exportBodies(b *testing.B) ([][]byte, int) {
	ts, err := gen.Templates(1, 4, 30)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	bodies := make([][]byte, 64)
	spans := 0
	for i := range bodies {
		t := ts[i%len(ts)]
		bodies[i] = t.Fill(nil, rng)
		spans += t.Spans
	}
	return bodies, spans
}

// processCPU is the CPU time the process has used (user and system, all
// threads).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package ingest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

func testConfig() Config {
	c := DefaultConfig()
	c.GRPCAddr, c.HTTPAddr, c.ZipkinAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return c
}

func startServer(t testing.TB, cfg Config, sink Sink, logs LogSink) *Server {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg, sink, logs, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A connection the client dialed but never sent a request on (its
		// transport races dials against connections coming free) counts as
		// active to the server for its first 5 s, which Shutdown would wait
		// out: the client lets go of its idle connections first.
		http.DefaultClient.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// tid/sid build distinct ids from a small number.
func tid(n byte) pcommon.TraceID { return pcommon.TraceID{15: n, 0: 0xab} }
func sid(n byte) pcommon.SpanID  { return pcommon.SpanID{7: n, 0: 0xcd} }

// sampleTraces builds n spans of one trace.
func sampleTraces(trace byte, n int) ptrace.Traces {
	return svcSpans(n, func(i int, sp ptrace.Span) {
		sp.SetTraceID(tid(trace))
		sp.SetSpanID(sid(byte(i + 1)))
		sp.SetName("op")
	})
}

// svcSpans builds n spans of service "svc", each lasting a millisecond in
// November 2023, with what fill sets on span i.
func svcSpans(n int, fill func(i int, sp ptrace.Span)) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc")
	ss := rs.ScopeSpans().AppendEmpty()
	for i := 0; i < n; i++ {
		sp := ss.Spans().AppendEmpty()
		sp.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + int64(i)))
		sp.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_001_000_000 + int64(i)))
		fill(i, sp)
	}
	return td
}

func protoBody(t *testing.T, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, url, ct string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// assertServing checks that the OTLP/HTTP endpoint still accepts data.
func assertServing(t *testing.T, s *Server, st *memstore.Store, trace byte) {
	t.Helper()
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, sampleTraces(trace, 2)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("server no longer serving: %d %s", resp.StatusCode, body)
	}
	spans, err := st.Trace(context.Background(), model.TraceID(tid(trace)), store.TimeRange{})
	if err != nil || len(spans) != 2 {
		t.Fatalf("spans after valid request: %d %v", len(spans), err)
	}
}

// funcSink adapts a function to Sink.
type funcSink func(ctx context.Context, spans []model.Span) error

func (f funcSink) Write(ctx context.Context, spans []model.Span) error { return f(ctx, spans) }

// logCapture records log records.
type logCapture struct {
	mu   sync.Mutex
	recs []LogRecord
}

func (l *logCapture) WriteLogs(_ context.Context, recs []LogRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, recs...)
	return nil
}

func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	return compress(t, "gzip", data)
}

// compress encodes data in a Content-Encoding ("": as it is).
func compress(t testing.TB, enc string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "":
		return data
	case "gzip":
		w = gzip.NewWriter(&b)
	case "zstd":
		zw, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		t.Fatalf("unknown encoding %q", enc)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// metricValue reads a counter or gauge (avoids client_golang's testutil,
// whose extra dependencies are not in go.sum).
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

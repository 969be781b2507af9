package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

func badCount(s *Server, proto, reason string) float64 {
	return metricValue(s.metrics.BadRequests.WithLabelValues(proto, reason))
}

func TestHTTPBadInput(t *testing.T) {
	st := memstore.New()
	cfg := testConfig()
	cfg.MaxSpansPerRequest = 50
	s := startServer(t, cfg, st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	valid := protoBody(t, sampleTraces(1, 3))

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("this is not protobuf at all \xff\xff\xff"))
	_ = zw.Close()

	cases := []struct {
		name, ct string
		body     []byte
		hdr      []string
		code     int
		reason   string
		msg      string
	}{
		{"truncated protobuf", ctProto, valid[:len(valid)-7], nil, 400, reasonDecode, "cannot decode OTLP protobuf"},
		{"garbage gzip protobuf", ctProto, gz.Bytes(), []string{"Content-Encoding", "gzip"}, 400, reasonDecode, "cannot decode OTLP protobuf"},
		{"invalid json", ctJSON, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":`), nil, 400, reasonDecode, "cannot decode OTLP JSON"},
		{"not gzip", ctProto, valid, []string{"Content-Encoding", "gzip"}, 400, reasonDecode, "decompress"},
		{"wrong content type", "text/plain", valid, nil, 415, reasonContentType, "unsupported Content-Type"},
		{"missing content type", "", valid, nil, 415, reasonContentType, "unsupported Content-Type"},
		{"unknown encoding", ctProto, valid, []string{"Content-Encoding", "br"}, 415, reasonEncoding, "Content-Encoding"},
		{"too many spans", ctProto, protoBody(t, sampleTraces(2, 51)), nil, 413, reasonTooManySpans, "51 spans, limit is 50"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := badCount(s, protoHTTP, c.reason)
			resp, body := post(t, url, c.ct, c.body, c.hdr...)
			if resp.StatusCode != c.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.code, body)
			}
			if !strings.Contains(errMessage(t, resp, body), c.msg) {
				t.Errorf("message %q does not contain %q", errMessage(t, resp, body), c.msg)
			}
			if got := badCount(s, protoHTTP, c.reason); got != before+1 {
				t.Errorf("metric %s = %v, want %v", c.reason, got, before+1)
			}
		})
	}

	t.Run("wrong method", func(t *testing.T) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("GET: %d allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
		}
		if badCount(s, protoHTTP, reasonMethod) != 1 {
			t.Error("method metric not counted")
		}
	})
	assertServing(t, s, st, 200)
}

// errMessage decodes the google.rpc.Status body of an OTLP/HTTP error.
func errMessage(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	switch resp.Header.Get("Content-Type") {
	case ctProto:
		var st spb.Status
		if err := proto.Unmarshal(body, &st); err != nil {
			t.Fatalf("error body is not a protobuf Status: %v", err)
		}
		return st.Message
	case ctJSON:
		var st struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("error body is not a JSON Status: %v", err)
		}
		return st.Message
	}
	return string(body)
}

// zeroReader yields n zero bytes without allocating them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

func TestHTTPHugeBodies(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	const hundredMB = 100 << 20

	send := func(r io.Reader, length int64, enc string) int {
		req, _ := http.NewRequest(http.MethodPost, url, r)
		req.ContentLength = length
		req.Header.Set("Content-Type", ctProto)
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(errMessage(t, resp, b), "exceeds the limit") {
			t.Errorf("message: %s", b)
		}
		return resp.StatusCode
	}
	if code := send(&zeroReader{hundredMB}, hundredMB, ""); code != 413 {
		t.Errorf("100 MB with length: %d", code)
	}
	// Chunked: the server only learns the size while reading.
	if code := send(&zeroReader{hundredMB}, -1, ""); code != 413 {
		t.Errorf("100 MB chunked: %d", code)
	}
	// A gzip bomb: small on the wire, 100 MB decompressed.
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = io.Copy(zw, &zeroReader{hundredMB})
	_ = zw.Close()
	if code := send(bytes.NewReader(gz.Bytes()), int64(gz.Len()), "gzip"); code != 413 {
		t.Errorf("gzip bomb: %d", code)
	}
	if got := badCount(s, protoHTTP, reasonTooLarge); got != 3 {
		t.Errorf("too_large metric = %v, want 3", got)
	}
	assertServing(t, s, st, 201)
}

// millionAttrs encodes one span with n attributes (built with the OTLP
// proto structs, since a pdata map deduplicates keys on every insert).
func millionAttrs(n int) []byte {
	attrs := make([]*commonpb.KeyValue, n)
	for i := range attrs {
		attrs[i] = &commonpb.KeyValue{Key: fmt.Sprintf("k%d", i), Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(i)}}}
	}
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), Name: "fat", Attributes: attrs,
			StartTimeUnixNano: 1_700_000_000_000_000_000, EndTimeUnixNano: 1_700_000_000_000_000_001,
		}}}},
	}}}
	b, _ := proto.Marshal(req)
	return b
}

func TestMillionAttributes(t *testing.T) {
	st := memstore.New()
	body := millionAttrs(1_000_000)

	// With the default body limit the request is refused for its size.
	s := startServer(t, testConfig(), st, nil)
	resp, msg := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, body)
	if resp.StatusCode != 413 {
		t.Fatalf("default limits: %d %s", resp.StatusCode, msg)
	}

	// With a larger body limit the span is kept with the first 128
	// attributes; the rest are dropped and counted, as an SDK would.
	cfg := testConfig()
	cfg.MaxRequestBytes = 64 << 20
	s2 := startServer(t, cfg, st, nil)
	resp, msg = post(t, "http://"+s2.HTTPAddr()+"/v1/traces", ctProto, body)
	if resp.StatusCode != 200 || len(msg) != 0 {
		t.Fatalf("attribute limit: %d %s", resp.StatusCode, errMessage(t, resp, msg))
	}
	spans, err := st.Trace(context.Background(), model.TraceID(bytes.Repeat([]byte{1}, 16)), store.TimeRange{})
	if err != nil || len(spans) != 1 {
		t.Fatalf("stored: %v %v", spans, err)
	}
	if got := spans[0]; len(got.Attrs) != 128 || got.DroppedAttributesCount != 1_000_000-128 || got.Attrs.Str("k127") != "127" {
		t.Errorf("kept %d attributes, dropped %d", len(got.Attrs), got.DroppedAttributesCount)
	}
	if got := metricValue(s2.metrics.Limited.WithLabelValues("dropped_attribute")); got != 1_000_000-128 {
		t.Errorf("dropped attributes metric = %v", got)
	}
	// Same over gRPC; the identical span is not stored twice.
	conn := dial(t, s2.GRPCAddr())
	if _, err := ptraceotlp.NewGRPCClient(conn).Export(context.Background(), mustRequest(t, body)); err != nil {
		t.Fatalf("grpc: %v", err)
	}
	if spans, _ := st.Trace(context.Background(), model.TraceID(bytes.Repeat([]byte{1}, 16)), store.TimeRange{}); len(spans) != 1 {
		t.Errorf("after a re-send: %d spans stored", len(spans))
	}
	assertServing(t, s2, st, 202)
}

func mustRequest(t *testing.T, body []byte) ptraceotlp.ExportRequest {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		t.Fatal(err)
	}
	return req
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// badIDRequest has one valid span and spans with wrong-length ids.
func badIDRequest(trace byte) []byte {
	tb := func() []byte { t := tid(trace); return t[:] }
	sb := func(n byte) []byte { s := sid(n); return s[:] }
	good := &tracepb.Span{TraceId: tb(), SpanId: sb(1), Name: "good", StartTimeUnixNano: 1_700_000_000_000_000_000, EndTimeUnixNano: 1_700_000_000_000_000_001}
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			good,
			{TraceId: tb()[:15], SpanId: sb(2), Name: "short trace id"},
			{TraceId: tb(), SpanId: append(sb(3), 9), Name: "long span id"},
			{TraceId: tb(), SpanId: sb(4), ParentSpanId: []byte{1, 2}, Name: "short parent"},
			{TraceId: make([]byte, 16), SpanId: sb(5), Name: "zero trace id", StartTimeUnixNano: 1_700_000_000_000_000_000, EndTimeUnixNano: 1_700_000_000_000_000_001},
		}}},
	}}}
	b, _ := proto.Marshal(req)
	return b
}

func TestInvalidIDsPartialSuccess(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	check := func(trace byte, rejected int64, msg string) {
		t.Helper()
		spans, err := st.Trace(context.Background(), model.TraceID(tid(trace)), store.TimeRange{})
		if err != nil || len(spans) != 1 || spans[0].Name != "good" {
			t.Fatalf("stored: %+v %v", spans, err)
		}
		if rejected != 4 || !strings.Contains(msg, "4 span(s) rejected") {
			t.Errorf("partial success: rejected=%d msg=%q", rejected, msg)
		}
	}

	t.Run("http protobuf", func(t *testing.T) {
		resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, badIDRequest(10))
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		r := ptraceotlp.NewExportResponse()
		if err := r.UnmarshalProto(body); err != nil {
			t.Fatal(err)
		}
		check(10, r.PartialSuccess().RejectedSpans(), r.PartialSuccess().ErrorMessage())
	})
	t.Run("http json", func(t *testing.T) {
		js := fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"j"}}]},
		"scopeSpans":[{"spans":[
		 {"traceId":"%[1]s","spanId":"cd00000000000001","name":"good","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000000001"},
		 {"traceId":"%[1]s00","spanId":"cd00000000000002","name":"long trace id"},
		 {"traceId":"%[1]s","spanId":"cd0000000000003","name":"odd span id"},
		 {"traceId":"%[1]s","spanId":"cd00000000000004","name":"bad link","links":[{"traceId":"ab","spanId":"cd00000000000001"}]},
		 {"traceId":"%[1]s","spanId":"0000000000000000","name":"zero span id","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000000001"}]}]}]}`, tid(11).String())
		resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctJSON, []byte(js))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctJSON {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		r := ptraceotlp.NewExportResponse()
		if err := r.UnmarshalJSON(body); err != nil {
			t.Fatal(err)
		}
		check(11, r.PartialSuccess().RejectedSpans(), r.PartialSuccess().ErrorMessage())
	})
	t.Run("grpc", func(t *testing.T) {
		var resp []byte
		err := dial(t, s.GRPCAddr()).Invoke(context.Background(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
			badIDRequest(12), &resp, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		r := ptraceotlp.NewExportResponse()
		if err := r.UnmarshalProto(resp); err != nil {
			t.Fatal(err)
		}
		check(12, r.PartialSuccess().RejectedSpans(), r.PartialSuccess().ErrorMessage())
	})
	if got := metricValue(s.metrics.SpansRejected.WithLabelValues(protoHTTP, reasonInvalidID)); got != 8 {
		t.Errorf("rejected spans metric (http) = %v", got)
	}
}

// rawCodec sends pre-encoded bytes, so tests can send broken protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestGRPCBadInput(t *testing.T) {
	st := memstore.New()
	cfg := testConfig()
	cfg.MaxRequestBytes = 1 << 20
	s := startServer(t, cfg, st, nil)
	conn := dial(t, s.GRPCAddr())
	invoke := func(body []byte) error {
		var resp []byte
		return conn.Invoke(context.Background(), "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
			body, &resp, grpc.ForceCodec(rawCodec{}))
	}
	valid := protoBody(t, sampleTraces(1, 3))
	// A body that does not decode is the client's error, not the server's.
	err := invoke(valid[:len(valid)-5])
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cannot decode OTLP protobuf") {
		t.Errorf("truncated: %v", err)
	}
	if badCount(s, protoGRPC, reasonDecode) != 1 {
		t.Error("grpc decode failure not counted")
	}
	// A field number over 2^31 once made the nesting scan index its table
	// below zero: a panic, which gRPC does not recover from.
	hugeField := protowire.AppendBytes(protowire.AppendVarint(nil, 1<<34|uint64(protowire.BytesType)), []byte("x"))
	if err := invoke(append(hugeField, valid...)); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not valid protobuf") {
		t.Errorf("field number over 2^31: %v", err)
	}
	if err := invoke(make([]byte, 2<<20)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized message: %v", err)
	}
	if err := invoke(valid); err != nil {
		t.Fatalf("valid request after bad ones: %v", err)
	}
	assertServing(t, s, st, 203)
}

func TestOverloadedIsRetryable(t *testing.T) {
	sink := funcSink(func(context.Context, []model.Span) error {
		return fmt.Errorf("wal full: %w", store.ErrOverloaded)
	})
	s := startServer(t, testConfig(), sink, nil)

	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, sampleTraces(1, 1)))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("http: %d retry-after=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	_, err := ptraceotlp.NewGRPCClient(dial(t, s.GRPCAddr())).Export(context.Background(),
		ptraceotlp.NewExportRequestFromTraces(sampleTraces(1, 1)))
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("grpc: %v", err)
	}
	if !hasRetryInfo(st) {
		t.Error("UNAVAILABLE without RetryInfo")
	}
	resp, _ = post(t, "http://"+s.ZipkinAddr()+"/api/v2/spans", ctJSON, []byte(`[{"traceId":"01","id":"02","timestamp":1700000000000000,"duration":5}]`))
	if resp.StatusCode != 503 {
		t.Errorf("zipkin: %d", resp.StatusCode)
	}
	if got := metricValue(s.metrics.Requests.WithLabelValues(protoGRPC, "traces", "overloaded")); got != 1 {
		t.Errorf("overloaded metric = %v", got)
	}
}

func hasRetryInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay.AsDuration() == time.Second {
			return true
		}
	}
	return false
}

func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	sink := funcSink(func(ctx context.Context, _ []model.Span) error {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	cfg := testConfig()
	cfg.MaxConcurrentRequests = 1
	cfg.ConcurrencyWait = 20 * time.Millisecond
	s := startServer(t, cfg, sink, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	first := make(chan int)
	go func() {
		resp, _ := post(t, url, ctProto, protoBody(t, sampleTraces(1, 1)))
		first <- resp.StatusCode
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	resp, body := post(t, url, ctProto, protoBody(t, sampleTraces(2, 1)))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second request: %d %s", resp.StatusCode, body)
	}
	_, err := ptraceotlp.NewGRPCClient(dial(t, s.GRPCAddr())).Export(context.Background(),
		ptraceotlp.NewExportRequestFromTraces(sampleTraces(3, 1)))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !hasRetryInfo(st) {
		t.Errorf("grpc: %v", err)
	}
	close(release)
	if code := <-first; code != 200 {
		t.Errorf("first request: %d", code)
	}
}

func TestRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpansPerSecond = 10
	st := memstore.New()
	s := startServer(t, cfg, st, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	if resp, b := post(t, url, ctProto, protoBody(t, sampleTraces(1, 10))); resp.StatusCode != 200 {
		t.Fatalf("first: %d %s", resp.StatusCode, b)
	}
	if resp, b := post(t, url, ctProto, protoBody(t, sampleTraces(2, 10))); resp.StatusCode != 429 {
		t.Fatalf("second within the same second: %d %s", resp.StatusCode, b)
	}
}

// refusingSink is a RateSink that refuses every request while refuse is
// set, as a tenant over its own limit does.
type refusingSink struct {
	Sink
	refuse atomic.Bool
}

func (r *refusingSink) Admit(context.Context, int) error {
	if r.refuse.Load() {
		return fmt.Errorf("tenant over its limit: %w", ErrRateLimited)
	}
	return nil
}

// A request the sink's own rate refuses spends none of the node's: a
// tenant over its limit does not use up the node's rate for the others.
func TestSinkRefusalKeepsTheNodeRate(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpansPerSecond = 10
	sink := &refusingSink{Sink: memstore.New()}
	s := startServer(t, cfg, sink, nil)
	url := "http://" + s.HTTPAddr() + "/v1/traces"
	sink.refuse.Store(true)
	for i := range 3 {
		if resp, b := post(t, url, ctProto, protoBody(t, sampleTraces(byte(1+i), 10))); resp.StatusCode != 429 ||
			!strings.Contains(string(b), "tenant over its limit") {
			t.Fatalf("refused by the sink: %d %s", resp.StatusCode, b)
		}
	}
	sink.refuse.Store(false)
	if resp, b := post(t, url, ctProto, protoBody(t, sampleTraces(9, 10))); resp.StatusCode != 200 {
		t.Fatalf("after the sink's refusals: %d %s, want the node's whole rate left", resp.StatusCode, b)
	}
}

func TestZipkinBadInput(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	url := "http://" + s.ZipkinAddr() + "/api/v2/spans"
	for _, c := range []struct {
		name, ct, body string
		code           int
		reason         string
	}{
		{"invalid json", ctJSON, `[{"traceId":`, 400, reasonDecode},
		{"not an array", ctJSON, `{"traceId":"1"}`, 400, reasonDecode},
		{"protobuf", "application/x-protobuf", "\x0a\x01", 415, reasonContentType},
	} {
		resp, body := post(t, url, c.ct, []byte(c.body))
		if resp.StatusCode != c.code || len(body) == 0 {
			t.Errorf("%s: %d %s", c.name, resp.StatusCode, body)
		}
		if badCount(s, protoZipkin, c.reason) == 0 {
			t.Errorf("%s: not counted", c.name)
		}
	}
	resp, body := post(t, url, ctJSON, []byte(`[
	 {"traceId":"00000000000000aa","id":"00000000000000bb","name":"good","timestamp":1700000000000000,"duration":5},
	 {"traceId":"00000000000000aa00000000000000aa00","id":"00000000000000cc","name":"bad","timestamp":1700000000000000}]`))
	if resp.StatusCode != 202 || !strings.Contains(string(body), "1 span(s) rejected: 1 invalid_id") ||
		!strings.Contains(string(body), "00000000000000aa00000000000000aa00") {
		t.Errorf("partial: %d %s", resp.StatusCode, body)
	}
	spans, err := st.Trace(context.Background(), model.TraceID{15: 0xaa}, store.TimeRange{})
	if err != nil || len(spans) != 1 || spans[0].Name != "good" {
		t.Errorf("stored: %v %v", spans, err)
	}
	getResp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	getResp.Body.Close()
	if getResp.StatusCode != 405 {
		t.Errorf("GET: %d", getResp.StatusCode)
	}
	assertServing(t, s, st, 204)
}

func TestShutdownRefusesNewWork(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	addr := s.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Post("http://"+addr+"/v1/traces", ctProto, bytes.NewReader(protoBody(t, sampleTraces(1, 1)))); err == nil {
		t.Error("request after shutdown succeeded")
	}
}

// A request admission refuses is answered before gRPC reads it: a message
// over the size limit gets the retryable UNAVAILABLE, not the
// RESOURCE_EXHAUSTED that reading it would give, and the refusal is counted
// like any other request's outcome.
func TestGRPCRefusedBeforeTheMessageIsRead(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	var stored atomic.Int64
	cfg := testConfig()
	cfg.MaxRequestBytes = 4 << 10
	cfg.Admit = func() error {
		if refuse.Load() {
			return errors.New("memory budget exceeded")
		}
		return nil
	}
	s := startServer(t, cfg, funcSink(func(_ context.Context, spans []model.Span) error {
		stored.Add(int64(len(spans)))
		return nil
	}), nil)
	client := ptraceotlp.NewGRPCClient(dial(t, s.GRPCAddr()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()

	big := ptraceotlp.NewExportRequestFromTraces(sampleTraces(1, 200))
	if n, _ := big.MarshalProto(); len(n) <= int(cfg.MaxRequestBytes) {
		t.Fatalf("request of %d bytes is not over the %d-byte limit", len(n), cfg.MaxRequestBytes)
	}
	_, err := client.Export(ctx, big)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !hasRetryInfo(st) {
		t.Fatalf("refused oversized request: %v; want UNAVAILABLE with RetryInfo", err)
	}
	if got := metricValue(s.metrics.Requests.WithLabelValues(protoGRPC, "traces", "overloaded")); got != 1 {
		t.Errorf("overloaded requests = %v, want 1", got)
	}

	refuse.Store(false)
	_, err = client.Export(ctx, big)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted {
		t.Fatalf("admitted oversized request: %v; want RESOURCE_EXHAUSTED", err)
	}
	if _, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(sampleTraces(1, 1))); err != nil {
		t.Fatalf("admitted request: %v", err)
	}
	if stored.Load() != 1 {
		t.Errorf("stored %d spans, want 1", stored.Load())
	}
}

// readSizes is a request body that records the size of each read.
type readSizes struct {
	r     io.Reader
	sizes []int
}

func (b *readSizes) Read(p []byte) (int, error) {
	b.sizes = append(b.sizes, len(p))
	return b.r.Read(p)
}

// A request admission refuses unread has its body read to the end, in
// large reads, before the 503: the connection stays usable for the retry
// without net/http draining it 8 KB at a time.
func TestHTTPRefusedBodyIsDrainedInLargeReads(t *testing.T) {
	cfg := testConfig()
	cfg.Admit = func() error { return errors.New("memory budget exceeded") }
	s, err := New(cfg, funcSink(func(context.Context, []model.Span) error { return nil }), nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	payload := protoBody(t, sampleTraces(4, 2500))
	if len(payload) <= 64<<10 || len(payload) > drainBytes {
		t.Fatalf("body of %d bytes: want one over a read and within what is drained", len(payload))
	}
	body := &readSizes{r: bytes.NewReader(payload)}
	req := httptest.NewRequest(http.MethodPost, "/v1/traces", body)
	req.Header.Set("Content-Type", ctProto)
	req.ContentLength = int64(len(payload))
	rec := httptest.NewRecorder()
	s.OTLPHTTPHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("refused request: %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n, _ := body.r.Read(make([]byte, 1)); n != 0 {
		t.Error("the refused request's body was not read to the end")
	}
	if len(body.sizes) == 0 || slices.Min(body.sizes) < 64<<10 {
		t.Errorf("body read in reads of %v bytes, want 64 KiB or more", body.sizes)
	}
}

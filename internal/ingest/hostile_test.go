package ingest

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/otlpconv/otlpconvtest"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
)

const traceExport = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

func deepTraceRequest(depth int) []byte {
	return otlpconvtest.TraceRequest(bytes.Repeat([]byte{0xde}, 16), bytes.Repeat([]byte{0xad}, 8), "deep",
		otlpconvtest.KeyValue("deep", otlpconvtest.NestedArray(depth)))
}

// The crash: one 9.5 MB request whose attribute is an array nested
// a million levels deep overflowed the stack and killed the process. It is
// now refused before decoding on every endpoint, and the server serves on.
func TestMillionLevelNestingIsRefused(t *testing.T) {
	// With 64 MB of stack instead of 1 GB, the code before this fix died
	// with "fatal error: stack overflow" in pdata's decoder at once.
	defer debug.SetMaxStack(debug.SetMaxStack(64 << 20))
	st := memstore.New()
	cfg := testConfig()
	cfg.MaxRequestBytes = 64 << 20 // let the JSON form (27 MB) reach the decoder
	s := startServer(t, cfg, st, nil)
	pb := deepTraceRequest(1_000_000)
	if len(pb) < 9<<20 {
		t.Fatalf("payload is %d bytes, want the issue's 9.5 MB", len(pb))
	}
	js := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"dededededededededededededededede","spanId":"adadadadadadadad",` +
		`"attributes":[{"key":"deep","value":` + string(otlpconvtest.NestedArrayJSON(1_000_000)) + `}]}]}]}]}`)

	for _, c := range []struct {
		name, ct string
		body     []byte
	}{{"http protobuf", ctProto, pb}, {"http json", ctJSON, js}} {
		resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", c.ct, c.body)
		if msg := errMessage(t, resp, body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, "nested more than 128 levels") {
			t.Errorf("%s: %d %s", c.name, resp.StatusCode, msg)
		}
	}
	var resp []byte
	err := dial(t, s.GRPCAddr()).Invoke(context.Background(), traceExport, pb, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("grpc: %v", err)
	}
	logs := otlpconvtest.LogsRequest(otlpconvtest.NestedArray(1_000_000))
	err = dial(t, s.GRPCAddr()).Invoke(context.Background(), "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
		logs, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("grpc logs: %v", err)
	}
	if got := badCount(s, protoHTTP, reasonTooDeep); got != 2 {
		t.Errorf("too_deep counted %v times over HTTP", got)
	}
	assertServing(t, s, st, 210)
}

// A value nested deeper than the depth limit but within what the decoder
// can take is kept, cut to the limit with a marker.
func TestDeepValueIsCut(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, deepTraceRequest(100))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, errMessage(t, resp, body))
	}
	spans, err := st.Trace(context.Background(), model.TraceID(bytes.Repeat([]byte{0xde}, 16)), store.TimeRange{})
	if err != nil || len(spans) != 1 {
		t.Fatalf("stored %v %v", spans, err)
	}
	v := spans[0].Attrs.Str("deep")
	if !strings.Contains(v, otlpconv.DepthMarker) || strings.Count(v, "[") != 32+strings.Count(otlpconv.DepthMarker, "[") {
		t.Errorf("value: %s", v)
	}
	if got := metricValue(s.metrics.Limited.WithLabelValues("truncated_value")); got != 1 {
		t.Errorf("truncated values counted %v", got)
	}
}

func logsRequestWithBadID(trace byte) []byte {
	good := tid(trace)
	req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: []*logspb.LogRecord{
			{TraceId: good[:], TimeUnixNano: 1_700_000_000_000_000_000, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "kept"}}},
			{TraceId: []byte{0x0b, 0xad, 0x1d}, EventName: "bad", Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "dropped"}}},
		}}},
	}}}
	b, _ := proto.Marshal(req)
	return b
}

// One bad trace id in a logs request used to refuse the whole request.
func TestLogsInvalidIDPartialSuccess(t *testing.T) {
	logs := &logCapture{}
	s := startServer(t, testConfig(), memstore.New(), logs)
	check := func(what string, r plogotlp.ExportResponse) {
		t.Helper()
		ps := r.PartialSuccess()
		if ps.RejectedLogRecords() != 1 || !strings.Contains(ps.ErrorMessage(), "trace id 0bad1d has 3 bytes, want 16") {
			t.Errorf("%s: rejected %d %q", what, ps.RejectedLogRecords(), ps.ErrorMessage())
		}
	}
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/logs", ctProto, logsRequestWithBadID(1))
	r := plogotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("http: %d %v", resp.StatusCode, err)
	}
	check("http protobuf", r)

	var raw []byte
	if err := dial(t, s.GRPCAddr()).Invoke(context.Background(), "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
		logsRequestWithBadID(2), &raw, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatalf("grpc: %v", err)
	}
	r = plogotlp.NewExportResponse()
	if err := r.UnmarshalProto(raw); err != nil {
		t.Fatal(err)
	}
	check("grpc", r)

	js := fmt.Sprintf(`{"resourceLogs":[{"scopeLogs":[{"logRecords":[
	  {"traceId":"%s","timeUnixNano":"1700000000000000000","body":{"stringValue":"kept"}},
	  {"traceId":"0bad1d","body":{"stringValue":"dropped"}}]}]}]}`, tid(3))
	resp, body = post(t, "http://"+s.HTTPAddr()+"/v1/logs", ctJSON, []byte(js))
	r = plogotlp.NewExportResponse()
	if err := r.UnmarshalJSON(body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("http json: %d %v %s", resp.StatusCode, err, body)
	}
	if ps := r.PartialSuccess(); ps.RejectedLogRecords() != 1 || !strings.Contains(ps.ErrorMessage(), `trace id "0bad1d"`) {
		t.Errorf("http json: %d %q", ps.RejectedLogRecords(), ps.ErrorMessage())
	}
	if len(logs.recs) != 3 {
		t.Fatalf("stored %d records, want the 3 good ones", len(logs.recs))
	}
	for _, rec := range logs.recs {
		if rec.Body != "kept" {
			t.Errorf("stored %+v", rec)
		}
	}
}

// The message of a span rejected for its id shows the id as sent.
func TestInvalidIDMessageShowsTheIDSent(t *testing.T) {
	s := startServer(t, testConfig(), memstore.New(), nil)
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, badIDRequest(20))
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	short := tid(20)
	want := fmt.Sprintf(`span "short trace id": trace id %x has 15 bytes, want 16`, short[:15])
	if msg := r.PartialSuccess().ErrorMessage(); !strings.Contains(msg, want) {
		t.Errorf("message %q lacks %q", msg, want)
	}
	// A huge id is clipped.
	if got := clipHex(bytes.Repeat([]byte{0xab}, 1000)); len(got) > 70 || !strings.HasSuffix(got, "…") {
		t.Errorf("clipped: %q", got)
	}
}

func spanAt(td ptrace.Traces, name string, start, end uint64) {
	sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().AppendEmpty()
	sp.SetTraceID(tid(30))
	sp.SetSpanID(sid(byte(td.SpanCount())))
	sp.SetName(name)
	sp.SetStartTimestamp(pcommon.Timestamp(start))
	sp.SetEndTimestamp(pcommon.Timestamp(end))
}

// start=0, end=MaxUint64 was stored and shown as 1969 lasting 18 trillion
// ms. Spans with impossible times are rejected one by one.
func TestInvalidTimestampsRejected(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	now := uint64(time.Now().UnixNano())
	td := sampleTraces(30, 1) // a valid span
	for _, c := range []struct {
		name       string
		start, end uint64
	}{
		{"zero start", 0, math.MaxUint64},
		{"end before start", now, now - 1},
		{"1970", 5_000_000_000, 6_000_000_000},
		{"two days long", now - uint64(48*time.Hour), now},
		{"next week", now + uint64(7*24*time.Hour), now + uint64(7*24*time.Hour) + 1},
	} {
		spanAt(td, c.name, c.start, c.end)
	}
	spanAt(td, "skewed an hour ahead", now+uint64(time.Hour), now+uint64(time.Hour)+1000)
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, td))
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	ps := r.PartialSuccess()
	if ps.RejectedSpans() != 5 || !strings.Contains(ps.ErrorMessage(), `5 invalid_time (first: span "zero start"`) ||
		!strings.Contains(ps.ErrorMessage(), "start time is missing") {
		t.Errorf("partial success: %d %q", ps.RejectedSpans(), ps.ErrorMessage())
	}
	spans, _ := st.Trace(context.Background(), model.TraceID(tid(30)), store.TimeRange{})
	if len(spans) != 2 {
		t.Errorf("stored %d spans, want the valid and the skewed one", len(spans))
	}
	if got := metricValue(s.metrics.SpansRejected.WithLabelValues(protoHTTP, reasonInvalidTime)); got != 5 {
		t.Errorf("invalid_time metric %v", got)
	}
}

// A retrying exporter re-sends a batch it got no answer for: the spans
// must be stored once, whatever protocol the retry uses.
func TestRetriedSpansAreStoredOnce(t *testing.T) {
	var fail atomic.Bool
	st := memstore.New()
	sink := funcSink(func(ctx context.Context, spans []model.Span) error {
		if fail.Load() {
			return store.ErrOverloaded
		}
		return st.Write(ctx, spans)
	})
	s := startServer(t, testConfig(), sink, nil)
	stored := func(trace byte) int {
		spans, _ := st.Trace(context.Background(), model.TraceID(tid(trace)), store.TimeRange{})
		return len(spans)
	}
	body := protoBody(t, sampleTraces(40, 3))
	for i := 0; i < 2; i++ {
		if resp, b := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, body); resp.StatusCode != 200 || len(b) != 0 {
			t.Fatalf("send %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if _, err := ptraceotlp.NewGRPCClient(dial(t, s.GRPCAddr())).Export(context.Background(),
		ptraceotlp.NewExportRequestFromTraces(sampleTraces(40, 3))); err != nil {
		t.Fatal(err)
	}
	if n := stored(40); n != 3 {
		t.Errorf("after three sends: %d spans stored, want 3", n)
	}
	if got := metricValue(s.metrics.SpansDeduplicated.WithLabelValues(protoHTTP)); got != 3 {
		t.Errorf("deduplicated (http) = %v", got)
	}

	// Within one request; a span with the same ids but other content (a
	// late update, the other half of a shared span) is kept.
	td := sampleTraces(41, 2)
	ss := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	ss.At(0).CopyTo(ss.AppendEmpty())
	changed := ss.AppendEmpty()
	ss.At(0).CopyTo(changed)
	changed.Attributes().PutStr("late", "attribute")
	if resp, b := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, td)); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if n := stored(41); n != 3 {
		t.Errorf("in-request duplicate: %d spans stored, want 3", n)
	}

	// A batch that failed to store is not a duplicate when it comes back.
	fail.Store(true)
	body = protoBody(t, sampleTraces(42, 2))
	if resp, _ := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, body); resp.StatusCode != 503 {
		t.Fatalf("overloaded: %d", resp.StatusCode)
	}
	fail.Store(false)
	if resp, _ := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, body); resp.StatusCode != 200 {
		t.Fatalf("retry: %d", resp.StatusCode)
	}
	if n := stored(42); n != 2 {
		t.Errorf("retry after a failed write: %d spans stored, want 2", n)
	}
}

func TestDedupWindowIsBounded(t *testing.T) {
	r := newRecentSpans(4)
	r.remember([]uint64{1, 2, 3, 4, 5, 6, 7, 6})
	if r.table.n != 4 {
		t.Errorf("%d keys remembered, want 4", r.table.n)
	}
	for k := uint64(1); k <= 7; k++ {
		if want := k >= 4; r.has(k) != want {
			t.Errorf("has(%d) = %v, want %v (the last 4 distinct keys)", k, r.has(k), want)
		}
	}
}

func TestSpansPerTraceLimit(t *testing.T) {
	st := memstore.New()
	cfg := testConfig()
	cfg.MaxSpansPerTrace = 2
	s := startServer(t, cfg, st, nil)
	resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, sampleTraces(50, 3)))
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); resp.StatusCode != 200 || err != nil {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if ps := r.PartialSuccess(); ps.RejectedSpans() != 1 || !strings.Contains(ps.ErrorMessage(), "more than 2 spans") {
		t.Errorf("%d %q", ps.RejectedSpans(), ps.ErrorMessage())
	}
}

// A request of no more spans than the per-trace limit skips counting per
// trace; one more span than the limit, all of one trace, is counted.
func TestSpansPerTraceLimitAtTheBoundary(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpansPerTrace = 3
	s := startServer(t, cfg, memstore.New(), nil)
	for spans, rejected := range map[int]int64{3: 0, 4: 1, 7: 4} {
		resp, body := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctProto, protoBody(t, sampleTraces(byte(60+spans), spans)))
		r := ptraceotlp.NewExportResponse()
		if err := r.UnmarshalProto(body); resp.StatusCode != 200 || err != nil {
			t.Fatalf("%d spans: %d %v", spans, resp.StatusCode, err)
		}
		if got := r.PartialSuccess().RejectedSpans(); got != rejected {
			t.Errorf("%d spans of one trace, limit 3: %d rejected, want %d (%q)", spans, got, rejected, r.PartialSuccess().ErrorMessage())
		}
	}
}

// A web page can POST to a local Zipkin port without a preflight when it
// sends no Content-Type or a "simple" one.
func TestZipkinRequiresJSONContentType(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	span := []byte(`[{"traceId":"00000000000000ee","id":"00000000000000bb","name":"injected","timestamp":1700000000000000,"duration":5}]`)
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		resp, body := post(t, "http://"+s.ZipkinAddr()+"/api/v2/spans", ct, span)
		if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "application/json") {
			t.Errorf("Content-Type %q: %d %s", ct, resp.StatusCode, body)
		}
	}
	if _, err := st.Trace(context.Background(), model.TraceID{15: 0xee}, store.TimeRange{}); err == nil {
		t.Error("spans without a JSON content type were stored")
	}
	if resp, body := post(t, "http://"+s.ZipkinAddr()+"/api/v2/spans", "application/json; charset=utf-8", span); resp.StatusCode != 202 {
		t.Errorf("json: %d %s", resp.StatusCode, body)
	}
}

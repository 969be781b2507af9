package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/memstore"
	"github.com/tracedx/tracedx/internal/zipkin"
)

// recordTrace produces a small checkout trace with the OpenTelemetry SDK:
// every attribute type, events, links, an error status, two scopes.
func recordTrace(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	res := resource.NewSchemaless(
		attribute.String("service.name", "checkout"),
		attribute.String("service.version", "1.4.2"),
		attribute.Int("process.pid", 4242),
	)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res))
	ctx := context.Background()
	base := time.Unix(1_700_000_000, 123_456_789)

	other := tp.Tracer("queue")
	_, linked := other.Start(ctx, "enqueue", trace.WithTimestamp(base), trace.WithSpanKind(trace.SpanKindProducer))
	linked.End(trace.WithTimestamp(base.Add(time.Millisecond)))

	tr := tp.Tracer("shop/http", trace.WithInstrumentationVersion("0.9.1"))
	ctx, root := tr.Start(ctx, "GET /orders/{id}", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(base),
		trace.WithAttributes(
			attribute.String("http.request.method", "GET"),
			attribute.String("http.route", "/orders/{id}"),
			attribute.Int("http.response.status_code", 500),
			attribute.Bool("retry", true),
			attribute.Float64("load", 0.75),
			attribute.StringSlice("tags", []string{"a", "b"}),
			attribute.Int64Slice("ports", []int64{80, 443}),
		),
		trace.WithLinks(trace.Link{SpanContext: linked.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("link.kind", "cause")}}),
	)
	root.AddEvent("cache miss", trace.WithTimestamp(base.Add(2*time.Millisecond)),
		trace.WithAttributes(attribute.String("cache.key", "order:1"), attribute.Int("attempt", 2)))
	_, db := tr.Start(ctx, "SELECT orders", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(base.Add(3*time.Millisecond)),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.query.text", "SELECT * FROM orders WHERE id = $1")))
	db.SetStatus(otelcodes.Error, "connection reset")
	db.End(trace.WithTimestamp(base.Add(40 * time.Millisecond)))
	root.SetStatus(otelcodes.Error, "internal error")
	root.End(trace.WithTimestamp(base.Add(50 * time.Millisecond)))
	ended := rec.Ended()
	if len(ended) != 3 {
		t.Fatalf("recorded %d spans", len(ended))
	}
	return ended
}

func statusOf(c otelcodes.Code) model.StatusCode {
	switch c {
	case otelcodes.Error:
		return model.StatusError
	case otelcodes.Ok:
		return model.StatusOK
	}
	return model.StatusUnset
}

// expectValue converts an SDK attribute value to what the model must hold.
func expectValue(t *testing.T, v attribute.Value) model.Value {
	t.Helper()
	switch v.Type() {
	case attribute.STRING:
		return model.Str(v.AsString())
	case attribute.BOOL:
		return model.Bool(v.AsBool())
	case attribute.INT64:
		return model.Int(v.AsInt64())
	case attribute.FLOAT64:
		return model.Float(v.AsFloat64())
	case attribute.STRINGSLICE, attribute.INT64SLICE, attribute.BOOLSLICE, attribute.FLOAT64SLICE:
		b, err := json.Marshal(v.AsInterface())
		if err != nil {
			t.Fatal(err)
		}
		return model.Value{Type: model.TypeArray, Str: string(b)}
	}
	t.Fatalf("unexpected attribute type %v", v.Type())
	return model.Value{}
}

func checkAttrs(t *testing.T, what string, got model.Attrs, want []attribute.KeyValue) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d attributes, want %d: %+v", what, len(got), len(want), got)
	}
	for _, kv := range want {
		g, ok := got.Get(string(kv.Key))
		if !ok {
			t.Errorf("%s: attribute %s missing", what, kv.Key)
			continue
		}
		w := expectValue(t, kv.Value)
		if g.Type != w.Type || g.AsString() != w.AsString() {
			t.Errorf("%s: attribute %s = %#v, want %#v", what, kv.Key, g, w)
		}
	}
}

// checkStored reads every recorded span back from the store field by field.
func checkStored(t *testing.T, st store.Store, recorded []sdktrace.ReadOnlySpan) {
	t.Helper()
	byTrace := map[model.TraceID][]model.Span{}
	for _, ro := range recorded {
		id := model.TraceID(ro.SpanContext().TraceID())
		if _, ok := byTrace[id]; ok {
			continue
		}
		spans, err := st.Trace(context.Background(), id, store.TimeRange{})
		if err != nil {
			t.Fatalf("trace %s: %v", id, err)
		}
		byTrace[id] = spans
	}
	total := 0
	for _, spans := range byTrace {
		total += len(spans)
	}
	if total != len(recorded) {
		t.Errorf("stored %d spans, sent %d", total, len(recorded))
	}
	for _, ro := range recorded {
		var got *model.Span
		spans := byTrace[model.TraceID(ro.SpanContext().TraceID())]
		for i := range spans {
			if spans[i].SpanID == model.SpanID(ro.SpanContext().SpanID()) {
				got = &spans[i]
			}
		}
		if got == nil {
			t.Errorf("span %s not stored", ro.Name())
			continue
		}
		name := ro.Name()
		if got.Name != name || got.Kind != model.SpanKind(ro.SpanKind()) {
			t.Errorf("%s: name/kind %q %v", name, got.Name, got.Kind)
		}
		if got.ParentSpanID != model.SpanID(ro.Parent().SpanID()) {
			t.Errorf("%s: parent %s", name, got.ParentSpanID)
		}
		if got.StartUnixNano != uint64(ro.StartTime().UnixNano()) || got.EndUnixNano != uint64(ro.EndTime().UnixNano()) {
			t.Errorf("%s: times %d..%d", name, got.StartUnixNano, got.EndUnixNano)
		}
		if got.StatusCode != statusOf(ro.Status().Code) || got.StatusMessage != ro.Status().Description {
			t.Errorf("%s: status %v %q", name, got.StatusCode, got.StatusMessage)
		}
		if got.Flags&0xff != uint32(ro.SpanContext().TraceFlags()) {
			t.Errorf("%s: flags %x", name, got.Flags)
		}
		checkAttrs(t, name+" attrs", got.Attrs, ro.Attributes())
		checkAttrs(t, name+" resource", got.Resource, ro.Resource().Attributes())
		if got.Service != "checkout" {
			t.Errorf("%s: service %q", name, got.Service)
		}
		scope := ro.InstrumentationScope()
		if got.ScopeName != scope.Name || got.ScopeVersion != scope.Version {
			t.Errorf("%s: scope %q %q, want %+v", name, got.ScopeName, got.ScopeVersion, scope)
		}
		if len(got.Events) != len(ro.Events()) {
			t.Errorf("%s: %d events", name, len(got.Events))
		}
		for i, e := range ro.Events() {
			if i >= len(got.Events) {
				break
			}
			if got.Events[i].Name != e.Name || got.Events[i].TimeUnixNano != uint64(e.Time.UnixNano()) {
				t.Errorf("%s: event %d = %+v", name, i, got.Events[i])
			}
			checkAttrs(t, name+" event", got.Events[i].Attrs, e.Attributes)
		}
		if len(got.Links) != len(ro.Links()) {
			t.Errorf("%s: %d links", name, len(got.Links))
		}
		for i, l := range ro.Links() {
			if i >= len(got.Links) {
				break
			}
			if got.Links[i].TraceID != model.TraceID(l.SpanContext.TraceID()) || got.Links[i].SpanID != model.SpanID(l.SpanContext.SpanID()) {
				t.Errorf("%s: link %d ids", name, i)
			}
			checkAttrs(t, name+" link", got.Links[i].Attrs, l.Attributes)
		}
	}
	// Independent spot checks, so the comparison above cannot pass by
	// reading the same wrong value on both sides.
	var root *model.Span
	for _, spans := range byTrace {
		for i := range spans {
			if spans[i].Name == "GET /orders/{id}" {
				root = &spans[i]
			}
		}
	}
	if root == nil {
		t.Fatal("root span missing")
	}
	if root.Kind != model.KindServer || root.StatusCode != model.StatusError || root.Attrs.Str("http.route") != "/orders/{id}" ||
		root.Attrs.Str("http.response.status_code") != "500" || root.ScopeName != "shop/http" || root.ScopeVersion != "0.9.1" ||
		root.Resource.Str("service.version") != "1.4.2" || root.DurationNano() != 50_000_000 || len(root.Events) != 1 ||
		root.Events[0].Name != "cache miss" || len(root.Links) != 1 || root.Links[0].Attrs.Str("link.kind") != "cause" {
		t.Errorf("root span: %+v", root)
	}
	if v, _ := root.Attrs.Get("tags"); v.Type != model.TypeArray || v.Str != `["a","b"]` {
		t.Errorf("array attribute: %#v", v)
	}
}

func TestOTLPGRPCExporter(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(s.GRPCAddr()), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	spans := recordTrace(t)
	if err := exp.ExportSpans(ctx, spans); err != nil {
		t.Fatalf("export: %v", err)
	}
	checkStored(t, st, spans)
	if got := metricValue(s.metrics.SpansAccepted.WithLabelValues(protoGRPC)); got != 3 {
		t.Errorf("accepted metric = %v", got)
	}
}

func TestOTLPHTTPExporter(t *testing.T) {
	for _, gz := range []bool{false, true} {
		st := memstore.New()
		s := startServer(t, testConfig(), st, nil)
		ctx := context.Background()
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(s.HTTPAddr()), otlptracehttp.WithInsecure()}
		if gz {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			t.Fatal(err)
		}
		spans := recordTrace(t)
		if err := exp.ExportSpans(ctx, spans); err != nil {
			t.Fatalf("export (gzip=%v): %v", gz, err)
		}
		_ = exp.Shutdown(ctx)
		checkStored(t, st, spans)
	}
}

// The same trace sent as OTLP JSON (what curl users and browsers send).
func TestOTLPHTTPJSON(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	body, err := os.ReadFile("testdata/trace.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, out := post(t, "http://"+s.HTTPAddr()+"/v1/traces", ctJSON, body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctJSON || string(out) != "{}" {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), out)
	}
	id, _ := model.ParseTraceID("5b8efff798038103d269b633813fc60c")
	spans, err := st.Trace(context.Background(), id, store.TimeRange{})
	if err != nil || len(spans) != 2 {
		t.Fatalf("stored %d %v", len(spans), err)
	}
	var child *model.Span
	for i := range spans {
		if !spans[i].IsRoot() {
			child = &spans[i]
		}
	}
	if child == nil || child.Name != "SELECT shop.orders" || child.Kind != model.KindClient ||
		child.ParentSpanID.String() != "eee19b7ec3c1b174" || child.Service != "orders" ||
		child.Attrs.Str("db.system") != "mysql" || child.StatusCode != model.StatusError ||
		child.StartUnixNano != 1544712660300000000 || child.EndUnixNano != 1544712661300000000 {
		t.Errorf("child span: %+v", child)
	}
	if v, _ := child.Attrs.Get("db.rows"); v.Type != model.TypeInt || v.Int != 12 {
		t.Errorf("int attribute from JSON string: %#v", v)
	}
}

func TestZipkinIngest(t *testing.T) {
	st := memstore.New()
	s := startServer(t, testConfig(), st, nil)
	data, err := os.ReadFile("../zipkin/testdata/spans.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := zipkin.ToModel(data)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := post(t, "http://"+s.ZipkinAddr()+"/api/v2/spans", "application/json; charset=utf-8", data)
	if resp.StatusCode != 202 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// Gzip-compressed too, into a fresh store.
	st2 := memstore.New()
	s2 := startServer(t, testConfig(), st2, nil)
	resp, body = post(t, "http://"+s2.ZipkinAddr()+"/api/v2/spans", ctJSON, gzipBytes(t, data), "Content-Encoding", "gzip")
	if resp.StatusCode != 202 {
		t.Fatalf("gzip: %d %s", resp.StatusCode, body)
	}
	for _, store_ := range []*memstore.Store{st, st2} {
		for _, w := range want {
			spans, err := store_.Trace(context.Background(), w.TraceID, store.TimeRange{})
			if err != nil {
				t.Fatalf("trace %s: %v", w.TraceID, err)
			}
			var got *model.Span
			for i := range spans {
				if spans[i].SpanID == w.SpanID {
					got = &spans[i]
				}
			}
			if got == nil {
				t.Fatalf("span %s missing", w.SpanID)
			}
			if got.Name != w.Name || got.Kind != w.Kind || got.ParentSpanID != w.ParentSpanID || got.Service != w.Service ||
				got.StartUnixNano != w.StartUnixNano || got.EndUnixNano != w.EndUnixNano || got.StatusCode != w.StatusCode ||
				got.StatusMessage != w.StatusMessage || len(got.Attrs) != len(w.Attrs) || len(got.Events) != len(w.Events) {
				t.Errorf("span %s: got %+v want %+v", w.SpanID, got, w)
			}
		}
	}
	// Spot-check values from the fixture itself.
	id, _ := model.ParseTraceID("5af7183fb1d4cf5f")
	spans, _ := st.Trace(context.Background(), id, store.TimeRange{})
	if len(spans) != 1 || spans[0].Service != "frontend" || spans[0].Kind != model.KindServer ||
		spans[0].StatusMessage != "boom" || spans[0].Attrs.Str("http.path") != "/api" {
		t.Errorf("zipkin server span: %+v", spans)
	}
}

func TestLogs(t *testing.T) {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "billing")
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("logger")
	lr := sl.LogRecords().AppendEmpty()
	lr.SetTraceID(tid(7))
	lr.SetSpanID(sid(3))
	lr.SetTimestamp(pcommon.Timestamp(1_700_000_000_000_000_001))
	lr.SetSeverityNumber(plog.SeverityNumberError)
	lr.SetSeverityText("ERROR")
	lr.Body().SetStr("payment declined")
	lr.Attributes().PutInt("amount", 42)
	lr2 := sl.LogRecords().AppendEmpty()
	lr2.SetObservedTimestamp(pcommon.Timestamp(99))
	lr2.Body().SetEmptyMap().PutStr("k", "v")

	logs := &logCapture{}
	s := startServer(t, testConfig(), memstore.New(), logs)
	req := plogotlp.NewExportRequestFromLogs(ld)
	pb, _ := req.MarshalProto()
	js, _ := req.MarshalJSON()
	if resp, b := post(t, "http://"+s.HTTPAddr()+"/v1/logs", ctProto, pb); resp.StatusCode != 200 {
		t.Fatalf("http proto: %d %s", resp.StatusCode, b)
	}
	if resp, b := post(t, "http://"+s.HTTPAddr()+"/v1/logs", ctJSON, js); resp.StatusCode != 200 {
		t.Fatalf("http json: %d %s", resp.StatusCode, b)
	}
	if _, err := plogotlp.NewGRPCClient(dial(t, s.GRPCAddr())).Export(context.Background(), req); err != nil {
		t.Fatalf("grpc: %v", err)
	}
	if len(logs.recs) != 6 {
		t.Fatalf("got %d records", len(logs.recs))
	}
	for i := 0; i < 6; i += 2 {
		r, r2 := logs.recs[i], logs.recs[i+1]
		if r.TraceID != model.TraceID(tid(7)) || r.SpanID != model.SpanID(sid(3)) || r.TimeUnixNano != 1_700_000_000_000_000_001 ||
			r.SeverityNumber != 17 || r.SeverityText != "ERROR" || r.Body != "payment declined" ||
			r.Attrs.Str("amount") != "42" || r.Service != "billing" || r.ScopeName != "logger" {
			t.Errorf("record %d: %+v", i, r)
		}
		if r2.TimeUnixNano != 99 || r2.Body != `{"k":"v"}` {
			t.Errorf("record %d: %+v", i+1, r2)
		}
	}

	// Without a log sink, records are accepted, counted and dropped.
	s2 := startServer(t, testConfig(), memstore.New(), nil)
	if resp, b := post(t, "http://"+s2.HTTPAddr()+"/v1/logs", ctProto, pb); resp.StatusCode != 200 {
		t.Fatalf("no sink: %d %s", resp.StatusCode, b)
	}
	if got := metricValue(s2.metrics.LogsDropped); got != 2 {
		t.Errorf("dropped = %v", got)
	}
	if resp, _ := post(t, "http://"+s2.HTTPAddr()+"/v1/logs", ctProto, []byte{0x0a, 0xff}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad logs payload: %d", resp.StatusCode)
	}
}

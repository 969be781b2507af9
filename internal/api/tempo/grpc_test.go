package tempo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tracedx/tracedx/internal/api/tempo/tempopb"
)

// serveGRPCAndHTTP runs the handler as the Tempo port runs it: one
// listener, HTTP/1 and h2c, gRPC routed by Mux. It returns the address.
func serveGRPCAndHTTP(t *testing.T) string {
	t.Helper()
	h := newTestHandler(t, Options{})
	srv := &http.Server{Handler: Mux(h, NewGRPCServer(h)), ReadHeaderTimeout: 5 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// dialLikeGrafana connects as Grafana's Tempo data source does for an
// http:// URL: plain-text gRPC to host:port of the data source URL.
func dialLikeGrafana(t *testing.T, addr string) tempopb.StreamingQuerierClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return tempopb.NewStreamingQuerierClient(conn)
}

// drain reads a server stream to its end and returns every message.
func drain[T any](t *testing.T, s grpc.ServerStreamingClient[T], err error) []*T {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []*T
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		out = append(out, m)
	}
}

func TestStreamingSearchOverGRPC(t *testing.T) {
	addr := serveGRPCAndHTTP(t)
	c := dialLikeGrafana(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := c.Search(ctx, &tempopb.SearchRequest{Query: `{ resource.service.name = "cart" }`, Limit: 20, SpansPerSpanSet: 3, Start: 1699999000, End: 1700000200})
	msgs := drain(t, s, err)
	if len(msgs) == 0 {
		t.Fatal("no message on the search stream")
	}
	last := msgs[len(msgs)-1]
	if len(last.Traces) != 1 || last.Traces[0].TraceID != traceA {
		t.Fatalf("traces %v", last.Traces)
	}
	tr := last.Traces[0]
	if tr.RootServiceName != "frontend" || tr.DurationMs != 1000 || tr.StartTimeUnixNano == 0 {
		t.Errorf("trace metadata %+v", tr)
	}
	if len(tr.SpanSets) == 0 || len(tr.SpanSets[0].Spans) == 0 || tr.SpanSets[0].Spans[0].SpanID == "" {
		t.Errorf("spansets %v", tr.SpanSets)
	}
	if tr.ServiceStats["cart"].GetSpanCount() == 0 {
		t.Errorf("serviceStats %v", tr.ServiceStats)
	}
	if last.Metrics.GetInspectedTraces() == 0 {
		t.Errorf("metrics %v", last.Metrics)
	}

	// A bad query is the client's fault: InvalidArgument with the parser's message.
	s, err = c.Search(ctx, &tempopb.SearchRequest{Query: `{ .a = `})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad query: %v", err)
	}

	// The same port still answers plain HTTP/1.
	resp, err := http.Get("http://" + addr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Errorf("/ready over HTTP/1: %d %s", resp.StatusCode, resp.Proto)
	}
}

func TestStreamingTagsOverGRPC(t *testing.T) {
	c := dialLikeGrafana(t, serveGRPCAndHTTP(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s1, err := c.SearchTags(ctx, &tempopb.SearchTagsRequest{})
	v1 := drain(t, s1, err)
	if got := v1[len(v1)-1].TagNames; len(got) != 8 || got[0] != "amount" {
		t.Errorf("SearchTags %v", got)
	}

	s2, err := c.SearchTagsV2(ctx, &tempopb.SearchTagsRequest{Scope: "resource"})
	v2 := drain(t, s2, err)
	scopes := v2[len(v2)-1].Scopes
	if len(scopes) != 1 || scopes[0].Name != "resource" || !reflect.DeepEqual(scopes[0].Tags, []string{"deployment.environment", "service.name"}) {
		t.Errorf("SearchTagsV2 %v", scopes)
	}

	s3, err := c.SearchTagValues(ctx, &tempopb.SearchTagValuesRequest{TagName: "service.name"})
	v3 := drain(t, s3, err)
	if got := v3[len(v3)-1].TagValues; !reflect.DeepEqual(got, []string{"cart", "frontend", "payment"}) {
		t.Errorf("SearchTagValues %v", got)
	}

	s4, err := c.SearchTagValuesV2(ctx, &tempopb.SearchTagValuesRequest{TagName: "resource.service.name", Query: `{ resource.service.name = "cart" }`})
	v4 := drain(t, s4, err)
	var vals []string
	for _, tv := range v4[len(v4)-1].TagValues {
		if tv.Type != "string" {
			t.Errorf("type of %q is %q", tv.Value, tv.Type)
		}
		vals = append(vals, tv.Value)
	}
	sort.Strings(vals)
	if !reflect.DeepEqual(vals, []string{"cart"}) {
		t.Errorf("SearchTagValuesV2 %v", vals)
	}

	_, err = drainErr(c.SearchTagValuesV2(ctx, &tempopb.SearchTagValuesRequest{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("missing tag name: %v", err)
	}
}

func drainErr[T any](s grpc.ServerStreamingClient[T], err error) ([]*T, error) {
	if err != nil {
		return nil, err
	}
	var out []*T
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestStreamingMetricsOverGRPC(t *testing.T) {
	c := dialLikeGrafana(t, serveGRPCAndHTTP(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := c.MetricsQueryRange(ctx, &tempopb.QueryRangeRequest{
		Query: `{ } | count_over_time() by(resource.service.name)`,
		Start: 1700000000 * 1e9, End: 1700000200 * 1e9, Step: 100 * 1e9,
	})
	msgs := drain(t, s, err)
	res := msgs[len(msgs)-1]
	total := map[string]float64{}
	for _, ser := range res.Series {
		if len(ser.Labels) != 1 || ser.Labels[0].Key != "resource.service.name" {
			t.Fatalf("labels %v", ser.Labels)
		}
		for _, smp := range ser.Samples {
			if smp.TimestampMs%100_000 != 0 {
				t.Errorf("sample at %d ms is not on a 100 s step", smp.TimestampMs)
			}
			total[ser.Labels[0].Value.GetStringValue()] += smp.Value
		}
	}
	if total["cart"] == 0 || total["payment"] != 1 {
		t.Errorf("span counts per service %v", total)
	}

	is, err := c.MetricsQueryInstant(ctx, &tempopb.QueryInstantRequest{Query: `{ } | count_over_time()`, Start: 1700000000 * 1e9, End: 1700000200 * 1e9})
	inst := drain(t, is, err)
	if got := inst[len(inst)-1].Series; len(got) != 1 || got[0].Value <= 0 {
		t.Errorf("instant %v", got)
	}

	_, err = drainErr(c.MetricsQueryRange(ctx, &tempopb.QueryRangeRequest{Query: `{ }`}))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("non-metrics query: %v", err)
	}
}

// TestCompareForTracesDrilldown runs the instant compare() query of
// Grafana's Traces Drilldown comparison tab, over HTTP and gRPC.
func TestCompareForTracesDrilldown(t *testing.T) {
	h := newTestHandler(t, Options{})
	q := `{ } | compare({ status = error })`
	res := getJSON(t, h, "/api/metrics/query?q="+urlq(q)+"&start=1699999000&end=1700000200")
	got := map[string]float64{}
	for _, s := range path(t, res, "series").([]any) {
		ls := path(t, s, "labels").([]any)
		if len(ls) != 2 {
			t.Fatalf("labels %v", ls)
		}
		meta := path(t, ls[0], "value", "stringValue").(string)
		attr := path(t, ls[1], "key").(string)
		val := ""
		if v, ok := path(t, ls[1], "value").(map[string]any)["stringValue"]; ok {
			val = v.(string)
		}
		got[meta+" "+attr+"="+val] = path(t, s, "value").(float64)
	}
	if got["selection resource.service.name=cart"] == 0 || got["baseline resource.service.name=payment"] != 1 {
		t.Errorf("service split %v", got)
	}
	if got["selection_total name="] == 0 || got["baseline_total name="] == 0 {
		t.Errorf("totals missing: %v", got)
	}

	c := dialLikeGrafana(t, serveGRPCAndHTTP(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.MetricsQueryInstant(ctx, &tempopb.QueryInstantRequest{Query: q, Start: 1699999000 * 1e9, End: 1700000200 * 1e9})
	msgs := drain(t, s, err)
	n := 0
	for _, ser := range msgs[len(msgs)-1].Series {
		if ser.Labels[0].Key == "__meta_type" && ser.Labels[0].Value.GetStringValue() == "selection" {
			n++
		}
	}
	if n == 0 {
		t.Error("no selection series over gRPC")
	}
}

// TestLargeSearchComesInParts: a search answer over the message budget is
// split by traces; the union of the messages (what Grafana accumulates) is
// the whole answer, and every message stays within the budget.
func TestLargeSearchComesInParts(t *testing.T) {
	h := newTestHandler(t, Options{})
	srv := grpc.NewServer()
	const budget = 100 // smaller than one trace: one trace per message
	tempopb.RegisterStreamingQuerierServer(srv, &streamingQuerier{http: h, maxMessage: budget})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	c := dialLikeGrafana(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	whole := getJSON(t, h, "/api/search?q="+urlq("{ }")+"&limit=20")
	want := len(path(t, whole, "traces").([]any))
	s, err := c.Search(ctx, &tempopb.SearchRequest{Query: "{ }", Limit: 20})
	msgs := drain(t, s, err)
	seen := map[string]bool{}
	for _, m := range msgs {
		if len(m.Traces) > 1 && proto.Size(m) > budget {
			t.Errorf("message of %d bytes over the %d budget", proto.Size(m), budget)
		}
		if m.Metrics.GetInspectedTraces() == 0 {
			t.Error("a part without metrics")
		}
		for _, tr := range m.Traces {
			seen[tr.TraceID] = true
		}
	}
	if want < 2 || len(msgs) < 2 || len(seen) != want {
		t.Fatalf("%d messages with %d distinct traces, want %d traces in several messages", len(msgs), len(seen), want)
	}
}

// Command check sends traces through an OpenTelemetry Collector, each in
// several requests, and checks where they landed on a tracedx cluster:
// every trace's spans on exactly one node (the peer API answers from a
// node's own data only), and every node answering trace-by-id (Jaeger API)
// with all of them.
//
//	go run ./bench/otelcol/check -collector 127.0.0.1:24300 -nodes 127.0.0.1:24305,127.0.0.1:24306,127.0.0.1:24307
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracedx/tracedx/internal/model"
)

func main() {
	collector := flag.String("collector", "127.0.0.1:4317", "the Collector's OTLP/gRPC address")
	nodeList := flag.String("nodes", "", "the nodes' HTTP addresses, comma-separated")
	traces := flag.Int("traces", 30, "traces to send")
	parts := flag.Int("parts", 3, "requests per trace (2 spans each, one service each)")
	wait := flag.Duration("wait", 3*time.Second, "time for the Collector to flush before checking")
	flag.Parse()
	nodes := strings.Split(*nodeList, ",")

	conn, err := grpc.NewClient(*collector, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)
	ids := make([]model.TraceID, *traces)
	for i := range ids {
		_, _ = rand.Read(ids[i][:])
	}
	// Part p of every trace goes in one request, so a trace's parts
	// travel in different requests, as spans of different services do.
	now := time.Now()
	for p := 0; p < *parts; p++ {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("check-svc-%d", p))
		ss := rs.ScopeSpans().AppendEmpty()
		for _, id := range ids {
			for s := 0; s < 2; s++ {
				sp := ss.Spans().AppendEmpty()
				sp.SetTraceID(pcommon.TraceID(id))
				var sid pcommon.SpanID
				_, _ = rand.Read(sid[:])
				sp.SetSpanID(sid)
				sp.SetName(fmt.Sprintf("op-%d-%d", p, s))
				sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
				sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
		cancel()
		if err != nil {
			log.Fatalf("export part %d: %v", p, err)
		}
	}
	time.Sleep(*wait)

	want := 2 * *parts
	failed := false
	perNode := make([]int, len(nodes))
	for _, id := range ids {
		holders := ""
		for i, n := range nodes {
			got := peerSpans(n, id)
			if got > 0 {
				holders += fmt.Sprintf(" %s:%d", n, got)
				perNode[i]++
			}
			if got != 0 && got != want {
				failed = true
			}
			if all := jaegerSpans(n, id); all != want {
				fmt.Printf("trace %x: node %s answers %d spans, want %d\n", id, n, all, want)
				failed = true
			}
		}
		if strings.Count(holders, ":")/2 != 1 {
			fmt.Printf("trace %x: held by%s, want one node with %d spans\n", id, holders, want)
			failed = true
		}
	}
	fmt.Printf("%d traces of %d spans in %d requests each: traces held per node %v\n", len(ids), want, *parts, perNode)
	if failed {
		fmt.Println("FAIL")
		os.Exit(1)
	}
	fmt.Println("ok: each trace on one node, every node answers every trace whole")
}

// peerSpans is how many of the trace's spans node holds itself.
func peerSpans(node string, id model.TraceID) int {
	body, _ := json.Marshal(map[string]any{"trace_id": id})
	req, _ := http.NewRequest(http.MethodPost, "http://"+node+"/internal/cluster/v1/trace", bytes.NewReader(body))
	req.Header.Set("X-Tracedx-Peer", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return 0
	}
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("peer trace on %s: %s: %s", node, resp.Status, b)
	}
	var u ptrace.ProtoUnmarshaler
	td, err := u.UnmarshalTraces(b)
	if err != nil {
		log.Fatal(err)
	}
	return td.SpanCount()
}

// jaegerSpans is how many spans node answers for the trace (its own and
// its peers').
func jaegerSpans(node string, id model.TraceID) int {
	resp, err := http.Get("http://" + node + "/api/traces/" + hex.EncodeToString(id[:]))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0
	}
	var out struct {
		Data []struct {
			Spans []json.RawMessage `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		log.Fatalf("trace on %s: %v", node, err)
	}
	n := 0
	for _, t := range out.Data {
		n += len(t.Spans)
	}
	return n
}

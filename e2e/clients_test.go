//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestTelemetrygen sends traces with the OpenTelemetry Collector's
// telemetrygen over gRPC and HTTP and counts them back through search.
func TestTelemetrygen(t *testing.T) {
	bin := requireTool(t, "telemetrygen",
		"go install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@"+telemetrygenVersion)
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			const traces, children = 40, 2
			service := fmt.Sprintf("e2e-telemetrygen-%s-%d", protocol, time.Now().UnixNano())
			args := []string{"traces", "--otlp-insecure",
				"--traces", strconv.Itoa(traces), "--child-spans", strconv.Itoa(children),
				"--workers", "2",
				// --rate defaults to 1 per worker: without it 40 traces take 20 s.
				"--rate", "200",
				"--service", service}
			if protocol == "http" {
				args = append(args, "--otlp-http", "--otlp-endpoint", shared.OTLPHTTP)
			} else {
				args = append(args, "--otlp-endpoint", shared.OTLPGRPC)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
				t.Fatalf("telemetrygen %v: %v\n%s", args, err, out)
			}
			// --traces is per worker.
			wantTraces := traces * 2
			var res apiSearch
			err := eventually(15*time.Second, func() error {
				var err error
				res, err = shared.search(context.Background(), url.Values{"service": {service}, "limit": {"1000"}})
				if err != nil {
					return err
				}
				if len(res.Traces) != wantTraces {
					return fmt.Errorf("search service=%s found %d traces, want %d", service, len(res.Traces), wantTraces)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			spans := 0
			for _, tr := range res.Traces {
				spans += tr.SpanCount
				if tr.SpanCount != 1+children || tr.RootService != service {
					t.Errorf("trace %s: %d spans, root service %q; want %d spans from %s",
						tr.TraceID, tr.SpanCount, tr.RootService, 1+children, service)
				}
			}
			if spans != wantTraces*(1+children) {
				t.Errorf("counted %d spans, want %d", spans, wantTraces*(1+children))
			}
			// The service is listed, and one trace reads back in full.
			var svcs struct {
				Services []string `json:"services"`
			}
			if err := shared.getJSON(context.Background(), "/api/v1/services", &svcs); err != nil {
				t.Fatal(err)
			}
			if !contains(svcs.Services, service) {
				t.Errorf("/api/v1/services lacks %s", service)
			}
			tr := shared.waitTrace(t, res.Traces[0].TraceID, 1+children)
			if len(tr.Spans) != 1+children {
				t.Errorf("trace %s read back with %d spans, want %d", tr.TraceID, len(tr.Spans), 1+children)
			}
		})
	}
}

// telemetrygenVersion is the version e2e/ci.sh installs.
const telemetrygenVersion = "v0.161.0"

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOTelJS sends traces with the OpenTelemetry JS SDK (OTLP/HTTP
// protobuf exporter from npm) and reads every span back.
func TestOTelJS(t *testing.T) {
	t.Parallel()
	node := requireTool(t, "node", "apt-get install nodejs npm")
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "js")
	check := exec.Command(node, "-e", "require.resolve('@opentelemetry/exporter-trace-otlp-proto')")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err != nil {
		missing(t, fmt.Sprintf("the npm packages of e2e/js are not installed (npm ci in e2e/js): %v: %s", err, out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const traces = 4
	cmd := exec.CommandContext(ctx, node, "send.js", "http://"+shared.OTLPHTTP+"/v1/traces", strconv.Itoa(traces))
	cmd.Dir = dir
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node send.js: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		// The SDK reports export failures on stderr and still exits 0.
		t.Logf("node send.js stderr:\n%s", stderr.String())
	}
	var sent []struct {
		TraceID      string `json:"trace_id"`
		SpanID       string `json:"span_id"`
		ParentSpanID string `json:"parent_span_id"`
		Name         string `json:"name"`
	}
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("node send.js printed %q: %v", out, err)
	}
	if len(sent) != traces*3 {
		t.Fatalf("the JS SDK ended %d spans, want %d", len(sent), traces*3)
	}
	byTrace := map[string]int{}
	for _, s := range sent {
		byTrace[s.TraceID]++
	}
	got := map[string]apiSpan{}
	for id, n := range byTrace {
		tr := shared.waitTrace(t, id, n)
		if len(tr.Spans) != n {
			t.Errorf("trace %s: %d spans read back, %d sent", id, len(tr.Spans), n)
		}
		for _, s := range tr.Spans {
			got[s.SpanID] = s
		}
	}
	for _, s := range sent {
		g, ok := got[s.SpanID]
		if !ok {
			t.Errorf("span %s (%s) not read back", s.SpanID, s.Name)
			continue
		}
		if g.Name != s.Name || g.ParentSpanID != s.ParentSpanID || g.Service != "js-checkout" {
			t.Errorf("span %s: got name %q parent %q service %q; want %q %q js-checkout",
				s.SpanID, g.Name, g.ParentSpanID, g.Service, s.Name, s.ParentSpanID)
		}
		switch g.Name {
		case "POST /charge":
			if g.Status.Code != "error" || g.Status.Message != "card declined" || g.Kind != "client" {
				t.Errorf("span %s: status %+v kind %s; want error 'card declined', client", s.SpanID, g.Status, g.Kind)
			}
		case "SELECT shop.carts":
			if v, _ := g.attr("db.system"); v != "postgresql" {
				t.Errorf("span %s: db.system = %v", s.SpanID, v)
			}
		case "POST /checkout":
			if g.Kind != "server" || g.Scope.Name != "tracedx-e2e-js" {
				t.Errorf("span %s: kind %s scope %+v", s.SpanID, g.Kind, g.Scope)
			}
		}
	}
}

// syncBuffer is an output buffer a child process writes to while the
// test reads it; it keeps the first 1 MiB.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *syncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 1<<20 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *syncBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.b)
}

func (l *syncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

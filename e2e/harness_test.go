//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tracedxBin is the binary built once by TestMain; shared is the server
// most tests send to (each test uses its own service names and trace ids,
// so they do not see each other's data).
var (
	tracedxBin string
	shared     *tracedxServer
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "tracedx-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	tracedxBin, err = buildTracedx(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	shared, err = startTracedx(filepath.Join(tmp, "shared"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	code := m.Run()
	if err := shared.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: stopping the shared server:", err)
		if code == 0 {
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: last lines of the shared server's log:\n%s\n", shared.logTail(40))
	}
	return code
}

// buildTracedx compiles ./cmd/tracedx of this module into dir.
func buildTracedx(dir string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	bin := filepath.Join(dir, "tracedx")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tracedx")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/tracedx: %w\n%s", err, out)
	}
	return bin, nil
}

// tracedxServer is one `tracedx serve` child process.
type tracedxServer struct {
	cmd      *exec.Cmd
	HTTP     string // UI, /api/v1, Jaeger API, /healthz
	OTLPGRPC string
	OTLPHTTP string
	Zipkin   string
	done     chan error
	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
	log      bytes.Buffer
}

// startTracedx starts `tracedx serve` with every listener on a free
// loopback port. Ports are chosen by the kernel (":0") and read back from
// the server's "tracedx ready" log line, so there is no window in which
// another process could take a port picked in advance.
// Flags in extra come last and so win over these.
func startTracedx(dataDir string, extra ...string) (*tracedxServer, error) {
	const loopback = "127.0.0.1:0"
	args := []string{"serve",
		"--data-dir", dataDir,
		"--otlp-grpc-addr", loopback,
		"--otlp-http-addr", loopback,
		"--zipkin-addr", loopback,
		"--http-addr", loopback,
		"--tempo-addr", loopback,
		"--trace-idle-timeout", "2s",
	}
	cmd := exec.Command(tracedxBin, append(args, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting tracedx serve: %w", err)
	}
	s := &tracedxServer{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			s.mu.Lock()
			s.log.Write(line)
			s.log.WriteByte('\n')
			s.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "tracedx ready" {
				select {
				case ready <- rec:
				default:
				}
			}
		}
		s.done <- cmd.Wait()
	}()
	select {
	case rec := <-ready:
		str := func(k string) string { v, _ := rec[k].(string); return v }
		s.HTTP = strings.TrimPrefix(str("ui"), "http://")
		s.OTLPGRPC, s.OTLPHTTP, s.Zipkin = str("otlp_grpc"), str("otlp_http"), str("zipkin")
	case err := <-s.done:
		return nil, fmt.Errorf("tracedx serve exited before it was ready (%v):\n%s", err, s.logTail(30))
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("tracedx serve did not log \"tracedx ready\" within 30s:\n%s", s.logTail(30))
	}
	if s.HTTP == "" || s.OTLPGRPC == "" || s.OTLPHTTP == "" {
		_ = s.stop()
		return nil, fmt.Errorf("tracedx ready line lacks addresses (http=%q grpc=%q otlp-http=%q)", s.HTTP, s.OTLPGRPC, s.OTLPHTTP)
	}
	if err := s.waitHealthy(15 * time.Second); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// waitHealthy polls /healthz until it answers 200.
func (s *tracedxServer) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.HTTP + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("GET /healthz on %s never answered 200 within %s: %v", s.HTTP, timeout, last)
}

// stop sends SIGTERM and waits for a clean exit (then kills).
func (s *tracedxServer) stop() error {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.done:
			if err != nil {
				s.stopErr = fmt.Errorf("tracedx serve exited with %w", err)
			}
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.stopErr = errors.New("tracedx serve did not stop within 20s of SIGTERM; killed")
		}
	})
	return s.stopErr
}

func (s *tracedxServer) logTail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := strings.Split(strings.TrimRight(s.log.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- /api/v1 client -------------------------------------------------------

// apiError is a non-2xx answer of the API.
type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

func (s *tracedxServer) getJSON(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HTTP+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: reading body: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %w", path, &apiError{Status: resp.StatusCode, Body: string(body)})
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decoding %q: %w", path, truncate(body, 200), err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

type apiAttr struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type apiSpan struct {
	TraceID      string  `json:"trace_id"`
	SpanID       string  `json:"span_id"`
	ParentSpanID string  `json:"parent_span_id"`
	Name         string  `json:"name"`
	Kind         string  `json:"kind"`
	Service      string  `json:"service"`
	DurationMS   float64 `json:"duration_ms"`
	Status       struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
	Resource   []apiAttr `json:"resource"`
	Attributes []apiAttr `json:"attributes"`
	Scope      struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"scope"`
}

func (s apiSpan) attr(key string) (any, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value, true
		}
	}
	return nil, false
}

type apiTrace struct {
	TraceID   string    `json:"trace_id"`
	SpanCount int       `json:"span_count"`
	Spans     []apiSpan `json:"spans"`
}

type apiSummary struct {
	TraceID       string  `json:"trace_id"`
	RootService   string  `json:"root_service"`
	RootOperation string  `json:"root_operation"`
	DurationMS    float64 `json:"duration_ms"`
	SpanCount     int     `json:"span_count"`
	ErrorCount    int     `json:"error_count"`
}

type apiSearch struct {
	Traces []apiSummary `json:"traces"`
	Count  int          `json:"count"`
}

type apiFinding struct {
	Kind     string          `json:"kind"`
	Severity string          `json:"severity"`
	Title    string          `json:"title"`
	TraceID  string          `json:"trace_id"`
	SpanIDs  []string        `json:"span_ids"`
	ImpactMS float64         `json:"impact_ms"`
	Evidence json.RawMessage `json:"evidence"`
	Fix      string          `json:"fix"`
}

type apiAnalysis struct {
	TraceID       string       `json:"trace_id"`
	RootService   string       `json:"root_service"`
	RootOperation string       `json:"root_operation"`
	SpanCount     int          `json:"span_count"`
	Findings      []apiFinding `json:"findings"`
	CriticalPath  []struct {
		SpanID string `json:"span_id"`
	} `json:"critical_path"`
	Why []string `json:"why"`
}

func (a apiAnalysis) kinds() []string {
	out := make([]string, 0, len(a.Findings))
	for _, f := range a.Findings {
		out = append(out, f.Kind)
	}
	return out
}

func (a apiAnalysis) find(kind string) (apiFinding, bool) {
	for _, f := range a.Findings {
		if f.Kind == kind {
			return f, true
		}
	}
	return apiFinding{}, false
}

// waitTrace polls GET /api/v1/traces/{id} until it holds at least want
// spans (ingest is acknowledged before the span is readable everywhere).
func (s *tracedxServer) waitTrace(t testing.TB, id string, want int) apiTrace {
	t.Helper()
	var tr apiTrace
	err := eventually(15*time.Second, func() error {
		tr = apiTrace{}
		if err := s.getJSON(context.Background(), "/api/v1/traces/"+id, &tr); err != nil {
			return err
		}
		if len(tr.Spans) < want {
			return fmt.Errorf("trace %s has %d spans, want %d", id, len(tr.Spans), want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading trace back: %v", err)
	}
	return tr
}

func (s *tracedxServer) analysis(t testing.TB, id string) apiAnalysis {
	t.Helper()
	var a apiAnalysis
	if err := s.getJSON(context.Background(), "/api/v1/traces/"+id+"/analysis", &a); err != nil {
		t.Fatalf("analysis of %s: %v", id, err)
	}
	return a
}

// search runs GET /api/v1/search with the given parameters.
func (s *tracedxServer) search(ctx context.Context, q url.Values) (apiSearch, error) {
	var res apiSearch
	err := s.getJSON(ctx, "/api/v1/search?"+q.Encode(), &res)
	return res, err
}

// eventually retries fn every 100 ms until it returns nil or timeout
// passes; it returns fn's last error.
func eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireTool returns the path of an external program. Outside CI a
// missing program skips the test with the reason; in CI (env CI set) it
// fails, because e2e/ci.sh is supposed to have installed it.
func requireTool(t testing.TB, name, installHint string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// go install puts binaries in GOPATH/bin, which need not be on PATH.
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	missing(t, fmt.Sprintf("%s is not installed (%s)", name, installHint))
	return ""
}

// missing skips outside CI and fails in CI.
func missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set, so this must run: %s; run e2e/ci.sh", reason)
	}
	t.Skipf("skipped outside CI: %s; e2e/ci.sh installs it", reason)
}

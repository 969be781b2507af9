package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
)

// syncBuffer is a bytes.Buffer the demo writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var uiLine = regexp.MustCompile(`open http://(\S+)`)

// TestDemoShowsFindingsWithinHalfAMinute runs `tracedx demo` as a new user
// does (defaults but every listener on port 0) and expects five findings
// in the API within 30 s of the start.
func TestDemoShowsFindingsWithinHalfAMinute(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for up to 30 s")
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runDemo(ctx, demoRun{
			dataDir: t.TempDir(),
			listen:  config.Listen{HTTP: "127.0.0.1:0", OTLPGRPC: "127.0.0.1:0", OTLPHTTP: "127.0.0.1:0", Zipkin: "127.0.0.1:0", Tempo: "127.0.0.1:0"},
			rate:    4, every: 15 * time.Second, lag: 45 * time.Second,
		}, &stdout, &stderr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("demo exited %d: %s", code, stderr.String())
		}
	}()

	var ui string
	for ui == "" && time.Since(start) < 10*time.Second {
		if m := uiLine.FindStringSubmatch(stdout.String()); m != nil {
			ui = m[1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ui == "" {
		t.Fatalf("no UI address printed; stdout %q stderr %s", stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String(), "http:///") || strings.Contains(stdout.String(), "curl") {
		t.Errorf("with no control address the demo must not offer a curl command: %q", stdout.String())
	}
	var last string
	for time.Since(start) < 30*time.Second {
		total, kinds, err := findingsSummary(ui)
		if err != nil {
			t.Fatal(err)
		}
		last = fmt.Sprintf("%d findings %v", total, kinds)
		if total >= 5 {
			t.Logf("after %s: %s", time.Since(start).Round(time.Second), last)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("after 30 s only %s", last)
}

func findingsSummary(addr string) (int, map[string]int, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/findings/summary")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var sum struct {
		Total  int `json:"total"`
		Counts []struct {
			Kind  string `json:"kind"`
			Count int    `json:"count"`
		} `json:"counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil {
		return 0, nil, fmt.Errorf("findings summary: %w", err)
	}
	kinds := map[string]int{}
	for _, c := range sum.Counts {
		kinds[c.Kind] = c.Count
	}
	return sum.Total, kinds, nil
}

package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// A real server traced while a keep-alive client sends requests, one of
// which blocks for 30 ms: reqwait must find every request and put the slow
// one's time under a wait.
func TestWalkFindsRequestsAndTheirWaits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(30 * time.Millisecond)
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 10000))
	}))
	defer srv.Close()
	client := srv.Client()
	get := func(path string) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/warm") // the connection exists before the trace starts

	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	const fast = 6
	for i := 0; i < fast; i++ {
		get("/fast")
		time.Sleep(2 * time.Millisecond)
	}
	get("/slow")
	get("/fast") // ends the slow request: its goroutine reads for this one
	time.Sleep(5 * time.Millisecond)
	trace.Stop()

	w, err := walk(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.reqs) < fast+1 {
		t.Fatalf("found %d requests, want at least %d", len(w.reqs), fast+1)
	}
	var slowest *request
	for _, q := range w.reqs {
		if slowest == nil || q.took() > slowest.took() {
			slowest = q
		}
	}
	if got := ms(slowest.took()); got < 30 || got > 1000 {
		t.Fatalf("slowest request took %.2f ms, want the 30 ms one", got)
	}
	if waited := slowest.states["Waiting (sleep)"]; ms(waited) < 25 {
		t.Errorf("the slow request waited %.2f ms in sleep, want ~30 (states %v)", ms(waited), slowest.states)
	}
	if len(slowest.waits) == 0 || !strings.Contains(slowest.waits[0], "time.Sleep") {
		t.Errorf("the slow request's wait should name time.Sleep, got %q", slowest.waits)
	}
}

func TestReadProbesKeepsTraceByIDCalls(t *testing.T) {
	file := filepath.Join(t.TempDir(), "probes")
	log := `load 1 "jaeger GET /api/traces?service" 100 9.5 0.1 9.0
load 1 "jaeger GET /api/traces/{id}" 200 1.25 0.05 1.2
settled 3 "tempo GET /api/v2/traces/{id}" 300 0.75 0.02 0.7
garbage
`
	if err := os.WriteFile(file, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := readProbes(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].name != "jaeger GET /api/traces/{id}" || ps[0].start != 200 || ps[0].took != 1.25 || ps[1].wrote != 0.02 {
		t.Fatalf("probes = %+v", ps)
	}
}

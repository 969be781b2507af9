package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/freeport"
	"github.com/tracedx/tracedx/internal/priority"
)

// Run, which owns the process, gives it spare Go processors on a single
// CPU while queries run, so they never wait for the one processor, and
// not before (internal/priority).
func TestRunRaisesProcessorsForQueries(t *testing.T) {
	if priority.CPUs() >= priority.MinProcs {
		t.Skipf("%d CPUs: the floor of %d processors is met without raising", priority.CPUs(), priority.MinProcs)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(priority.CPUs()))
	t.Setenv("GOMAXPROCS", "")
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	api := freeport.Addr(t)
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: api}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, io.Discard) }()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n := runtime.GOMAXPROCS(0); n != priority.CPUs() {
			cancel()
			t.Fatalf("GOMAXPROCS %d before any query, want the %d CPUs", n, priority.CPUs())
		}
		if resp, err = http.Get("http://" + api + "/api/services"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("the API never answered: %v", err)
		}
	}
	resp.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); runtime.GOMAXPROCS(0) < priority.MinProcs; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("GOMAXPROCS still %d after a query, want %d", runtime.GOMAXPROCS(0), priority.MinProcs)
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if n := runtime.GOMAXPROCS(0); n != priority.CPUs() {
		t.Fatalf("GOMAXPROCS %d after Run returned, want the %d CPUs back", n, priority.CPUs())
	}
}

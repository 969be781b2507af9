package server

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/priority"
)

// Run, which owns the process, gives it spare Go processors on a single
// CPU so queries never wait for the one processor (internal/priority).
func TestRunRaisesProcessors(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	t.Setenv("GOMAXPROCS", "")
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, io.Discard) }()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.GOMAXPROCS(0) < priority.MinProcs {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("Run returned %v before raising GOMAXPROCS", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("GOMAXPROCS still %d 30 s after Run started, want at least %d", runtime.GOMAXPROCS(0), priority.MinProcs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
}

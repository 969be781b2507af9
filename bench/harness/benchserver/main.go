// Command benchserver runs only tracedx's ingest servers in front of the
// embedded engine (or a discarding sink), for the harness when the full
// `tracedx serve` is not wanted or not available, and to measure the ingest
// path alone (-store discard).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // profiling endpoints when TRACEDX_PPROF_ADDR is set
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/engine"
)

type discard struct{ n atomic.Int64 }

func (d *discard) Write(_ context.Context, spans []model.Span) error {
	d.n.Add(int64(len(spans)))
	return nil
}

func main() {
	dataDir := flag.String("data-dir", "./benchserver-data", "engine directory")
	storeKind := flag.String("store", "engine", "engine or discard")
	grpcAddr := flag.String("otlp-grpc-addr", "127.0.0.1:4317", "OTLP/gRPC address")
	httpAddr := flag.String("otlp-http-addr", "127.0.0.1:4318", "OTLP/HTTP address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if addr := os.Getenv("TRACEDX_PPROF_ADDR"); addr != "" {
		go func() { log.Warn("pprof listener", "err", http.ListenAndServe(addr, nil)) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var sink ingest.Sink
	var eng *engine.Engine
	switch *storeKind {
	case "discard":
		sink = &discard{}
	case "engine":
		var err error
		if eng, err = engine.Open(ctx, engine.Options{Dir: *dataDir}); err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
		sink = eng
	default:
		fmt.Fprintln(os.Stderr, "benchserver: -store must be engine or discard")
		os.Exit(2)
	}
	cfg := ingest.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.ZipkinAddr = *grpcAddr, *httpAddr, ""
	srv, err := ingest.New(cfg, sink, nil, log, nil)
	if err == nil {
		err = srv.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	if eng != nil {
		// Flush and compact so the harness measures compacted size.
		if err := eng.Flush(shut); err != nil {
			log.Warn("flush", "err", err)
		}
		if err := eng.Compact(shut); err != nil {
			log.Warn("compact", "err", err)
		}
		if err := eng.Close(); err != nil {
			log.Warn("close", "err", err)
		}
	}
}

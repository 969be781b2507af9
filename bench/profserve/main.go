// Command profserve is `tracedx` with Go's profiling endpoints added, for
// profiling the real server under the harness without changing it:
//
//	go build -o /tmp/profserve ./bench/profserve
//	TRACEDX_PPROF_ADDR=127.0.0.1:6060 go run ./bench/harness -bin /tmp/profserve
//	go tool pprof -top http://127.0.0.1:6060/debug/pprof/profile?seconds=10
//
// TRACEDX_PPROF_CONTENTION=1 also records the block and mutex profiles
// (/debug/pprof/block, /debug/pprof/mutex), which cost a little on every
// contended lock: where a query waits for the ingest path.
// TRACEDX_MEMTRACE=<file> writes RSS and the runtime's memory figures
// there every 20 ms (see memTrace). Without either it behaves exactly
// like tracedx.
package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on the default mux
	"os"
	"runtime"
	"time"

	"github.com/tracedx/tracedx/internal/cli"
)

func main() {
	// Only the server traces: the file would be truncated by any other
	// subcommand run with the same environment.
	if p := os.Getenv("TRACEDX_MEMTRACE"); p != "" && len(os.Args) > 1 && os.Args[1] == "serve" {
		go memTrace(p)
	}
	if addr := os.Getenv("TRACEDX_PPROF_ADDR"); addr != "" {
		if os.Getenv("TRACEDX_PPROF_CONTENTION") == "1" {
			runtime.SetBlockProfileRate(int(10 * time.Microsecond))
			runtime.SetMutexProfileFraction(5)
		}
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				slog.Error("pprof listener", "addr", addr, "err", err)
			}
		}()
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

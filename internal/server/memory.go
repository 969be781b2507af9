package server

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/config"
)

// applyMemoryLimit sets the process's soft memory limit. Without one the
// heap grows to twice the live data between collections (GOGC=100) and
// RSS sits at ~3× the live heap; with it the collector runs more often
// only when the process nears the limit. It is process-wide, so only Run
// (which owns the process) calls it, never New.
func applyMemoryLimit(cfg config.Config, log *slog.Logger) {
	limit, source := cfg.EffectiveMemoryLimit(os.Getenv("GOMEMLIMIT"))
	switch source {
	case "none":
		debug.SetMemoryLimit(math.MaxInt64)
	case "GOMEMLIMIT":
		// The runtime has applied it at start.
	default:
		debug.SetMemoryLimit(limit)
	}
	log.Info("memory limit", "bytes", currentMemoryLimit(), "source", source)
}

// currentMemoryLimit reads the limit without changing it (0: none).
func currentMemoryLimit() int64 {
	l := debug.SetMemoryLimit(-1)
	if l == math.MaxInt64 {
		return 0
	}
	return l
}

func memoryLimitGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_memory_limit_bytes",
		Help: "Soft memory limit of the Go runtime (memory_limit / GOMEMLIMIT); 0 when there is none."},
		func() float64 { return float64(currentMemoryLimit()) })
}

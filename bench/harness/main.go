// Command harness measures tracedx ingest end to end on one machine: it
// starts the server pinned to one CPU (taskset), runs bench/loadgen pinned
// to another, and reports accepted spans/s, server CPU seconds per million
// spans, peak RSS and disk bytes per span after compaction.
//
//	go run ./bench/harness -duration 30s
//	go run ./bench/harness -server benchserver -store discard   # ingest path only
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tracedx/tracedx/bench/internal/proc"
)

type loadResult struct {
	SpansAccepted  int64          `json:"spans_accepted"`
	SpansPerSecond float64        `json:"accepted_spans_per_second"`
	Errors         map[string]int `json:"errors"`
	LatencyP99Ms   float64        `json:"latency_p99_ms"`
}

// Report is the harness output (-json).
type Report struct {
	Server              string  `json:"server"`
	Protocol            string  `json:"protocol"`
	DurationSeconds     float64 `json:"duration_seconds"`
	SpansAccepted       int64   `json:"spans_accepted"`
	SpansPerSecond      float64 `json:"accepted_spans_per_second"`
	CPUSecondsPerMSpans float64 `json:"server_cpu_seconds_per_million_spans"`
	// SettledCPUSecondsPerMSpans also counts the settle period, so it
	// includes the background work the spans cause after the load
	// (level-0 conversion, compaction): whether a conversion round falls
	// inside the load window or after it otherwise moves the figure above
	// by a second per million spans from run to run.
	SettledCPUSecondsPerMSpans float64        `json:"settled_cpu_seconds_per_million_spans"`
	ServerCPUPercent           float64        `json:"server_cpu_percent"`
	PeakRSSMB                  float64        `json:"peak_rss_mb"`
	DiskBytes                  int64          `json:"disk_bytes"`
	DiskBytesPerSpan           float64        `json:"disk_bytes_per_span"`
	Errors                     map[string]int `json:"errors,omitempty"`
	LatencyP99Ms               float64        `json:"latency_p99_ms"`
}

func main() {
	var (
		server    = flag.String("server", "tracedx", "tracedx (`tracedx serve`, built from ./cmd/tracedx) or benchserver (ingest + engine only)")
		store     = flag.String("store", "engine", "benchserver only: engine or discard")
		bin       = flag.String("bin", "", "use this server binary instead of building one")
		protocol  = flag.String("protocol", "grpc", "grpc or http")
		duration  = flag.Duration("duration", 30*time.Second, "load duration")
		workers   = flag.Int("workers", 8, "loadgen workers")
		rate      = flag.Float64("rate", 0, "loadgen target spans/s (0: max)")
		settle    = flag.Duration("settle", 15*time.Second, "wait after the load for background flush/compaction before stopping the server")
		serverCPU = flag.String("server-cpu", "0", "taskset CPU list of the server")
		genCPU    = flag.String("gen-cpu", "1", "taskset CPU list of the load generator")
		keep      = flag.Bool("keep", false, "keep the data directory")
		asJSON    = flag.Bool("json", false, "print the report as JSON")
		srvArgs   = flag.String("server-args", "", "extra server flags, space separated (e.g. \"--analytics=false --analysis=false\" to measure what analysis costs)")
	)
	flag.Parse()
	work, err := os.MkdirTemp("", "tracedx-bench-")
	check(err)
	dataDir := filepath.Join(work, "data")
	if !*keep {
		defer os.RemoveAll(work)
	}
	loadgen := filepath.Join(work, "loadgen")
	step("building loadgen")
	check(run("go", "build", "-o", loadgen, "./bench/loadgen"))
	srvBin := *bin
	if srvBin == "" {
		srvBin = filepath.Join(work, *server)
		pkg := map[string]string{"tracedx": "./cmd/tracedx", "benchserver": "./bench/harness/benchserver"}[*server]
		if pkg == "" {
			fatal("-server must be tracedx or benchserver")
		}
		step("building " + pkg)
		check(run("go", "build", "-o", srvBin, pkg))
	}
	grpcAddr, httpAddr := freeAddr(), freeAddr()
	args := []string{"-c", *serverCPU, srvBin}
	if *server == "tracedx" {
		args = append(args, "serve", "--data-dir", dataDir, "--otlp-grpc-addr", grpcAddr, "--otlp-http-addr", httpAddr,
			"--zipkin-addr", "", "--http-addr", freeAddr(), "--tempo-addr", "", "--log-level", "warn")
	} else {
		args = append(args, "-data-dir", dataDir, "-store", *store, "-otlp-grpc-addr", grpcAddr, "-otlp-http-addr", httpAddr)
	}
	args = append(args, strings.Fields(*srvArgs)...)
	step("starting " + strings.Join(append([]string{"taskset"}, args...), " "))
	srv := exec.Command("taskset", args...)
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	check(srv.Start())
	pid := srv.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	target := grpcAddr
	if *protocol == "http" {
		target = httpAddr
	}
	waitListening(target, exited)
	cpu0 := cpuSeconds(pid)

	step(fmt.Sprintf("loading %s for %s with %d workers on CPU %s", target, *duration, *workers, *genCPU))
	var out bytes.Buffer
	lg := exec.Command("taskset", "-c", *genCPU, loadgen, "-json", "-protocol", *protocol, "-addr", target,
		"-duration", duration.String(), "-workers", strconv.Itoa(*workers), "-rate", fmt.Sprint(*rate))
	lg.Stdout, lg.Stderr = &out, os.Stderr
	t0 := time.Now()
	check(lg.Run())
	elapsed := time.Since(t0).Seconds()
	cpu1 := cpuSeconds(pid)
	var lr loadResult
	check(json.Unmarshal(out.Bytes(), &lr))

	step(fmt.Sprintf("settling %s for flush and compaction", *settle))
	time.Sleep(*settle)
	cpu2 := cpuSeconds(pid)
	rss := peakRSSKB(pid)
	step("stopping the server (SIGTERM)")
	_ = srv.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		_ = srv.Process.Kill()
		<-exited
	}
	disk := duBytes(dataDir)

	r := Report{
		Server: *server, Protocol: *protocol, DurationSeconds: elapsed,
		SpansAccepted: lr.SpansAccepted, SpansPerSecond: lr.SpansPerSecond,
		ServerCPUPercent: 100 * (cpu1 - cpu0) / elapsed,
		PeakRSSMB:        float64(rss) / 1024, DiskBytes: disk, Errors: lr.Errors, LatencyP99Ms: lr.LatencyP99Ms,
	}
	if *server == "benchserver" {
		r.Server += "/" + *store
	}
	if lr.SpansAccepted > 0 {
		r.CPUSecondsPerMSpans = (cpu1 - cpu0) / float64(lr.SpansAccepted) * 1e6
		r.SettledCPUSecondsPerMSpans = (cpu2 - cpu0) / float64(lr.SpansAccepted) * 1e6
		r.DiskBytesPerSpan = float64(disk) / float64(lr.SpansAccepted)
	}
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Printf("server %s, %s, %.0fs\n", r.Server, r.Protocol, r.DurationSeconds)
	fmt.Printf("  accepted spans/s:             %.0f (%d spans)\n", r.SpansPerSecond, r.SpansAccepted)
	fmt.Printf("  server CPU s per 1M spans:    %.2f (server at %.0f%% of a core)\n", r.CPUSecondsPerMSpans, r.ServerCPUPercent)
	fmt.Printf("  ... until settled:            %.2f\n", r.SettledCPUSecondsPerMSpans)
	fmt.Printf("  peak RSS (VmHWM):             %.0f MB\n", r.PeakRSSMB)
	fmt.Printf("  disk bytes/span after compaction: %.1f (%d bytes)\n", r.DiskBytesPerSpan, r.DiskBytes)
	fmt.Printf("  load p99 latency:             %.1f ms\n", r.LatencyP99Ms)
	if len(r.Errors) > 0 {
		fmt.Printf("  errors: %v\n", r.Errors)
	}
}

func step(s string) { fmt.Fprintln(os.Stderr, "harness:", s) }

func fatal(s string) {
	fmt.Fprintln(os.Stderr, "harness:", s)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fatal(err.Error())
	}
}

func run(name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func freeAddr() string {
	addr, err := proc.FreeAddr()
	check(err)
	return addr
}

func waitListening(addr string, exited <-chan error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			fatal(fmt.Sprintf("server exited during startup: %v", err))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fatal("server did not listen on " + addr)
}

// cpuSeconds reads utime+stime of pid from /proc/<pid>/stat. The server
// runs as a child of taskset, which execs it, so the pid is the server's.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the command name (which may contain spaces).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks()
}

func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

func peakRSSKB(pid int) int64 {
	kb, err := proc.PeakRSSKB(pid)
	check(err)
	return kb
}

func duBytes(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

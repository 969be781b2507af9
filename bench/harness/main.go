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
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	QueriesDuringLoad          *queryStats    `json:"queries_during_load,omitempty"`
	QueriesSettled             *queryStats    `json:"queries_settled,omitempty"`
}

// config is what one run needs, from the flags.
type config struct {
	server, store, bin, protocol string
	duration, settle             time.Duration
	workers                      int
	rate                         float64
	serverCPU, genCPU            string
	keep, queries                bool
	srvArgs                      string
	loadgen, work                string
	probeLog                     io.Writer
	probeCPU                     string
}

func main() {
	var c config
	flag.StringVar(&c.server, "server", "tracedx", "tracedx (`tracedx serve`, built from ./cmd/tracedx), benchserver (ingest + engine only), or, with -bin, jaeger (v2 all-in-one, memory storage) or victoriatraces")
	flag.StringVar(&c.store, "store", "engine", "benchserver only: engine or discard")
	flag.StringVar(&c.bin, "bin", "", "use this server binary instead of building one")
	flag.StringVar(&c.protocol, "protocol", "grpc", "grpc or http (victoriatraces: http)")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "load duration")
	flag.IntVar(&c.workers, "workers", 8, "loadgen workers")
	flag.Float64Var(&c.rate, "rate", 0, "loadgen target spans/s (0: max)")
	flag.DurationVar(&c.settle, "settle", 15*time.Second, "wait after the load for background flush/compaction before stopping the server")
	flag.StringVar(&c.serverCPU, "server-cpu", "0", "taskset CPU list of the server")
	flag.StringVar(&c.genCPU, "gen-cpu", "1", "taskset CPU list of the load generator")
	probeCPU := flag.String("probe-cpu", "", "CPU list the harness itself (the query probes) runs on during the load and after (default: -gen-cpu; \"any\": not pinned)")
	flag.BoolVar(&c.keep, "keep", false, "keep the data directory")
	flag.BoolVar(&c.queries, "queries", false, "probe query latency (search by service, 20 results, and trace by id) during the load's second half and after settling: through the Jaeger v1 API, and for tracedx also through Jaeger api_v3, Tempo and /api/v1")
	asJSON := flag.Bool("json", false, "print the report as JSON")
	flag.StringVar(&c.srvArgs, "server-args", "", "extra server flags, space separated (e.g. \"--analytics=false --analysis=false\" to measure what analysis costs)")
	probeLog := flag.String("probe-log", "", "with -queries, append every probe (phase, round, API, CLOCK_MONOTONIC start ns, ms, ms until the request was written, ms until the first response byte) to this file, to line probes up with a runtime trace of the server")
	compare := flag.String("compare", "", "run the same load against several servers in turn and print a table: name=binary,... with names tracedx, jaeger, victoriatraces (see bench/compare)")
	flag.Parse()
	if *probeLog != "" {
		f, err := os.OpenFile(*probeLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		check(err)
		defer f.Close()
		c.probeLog = f
	}
	work, err := os.MkdirTemp("", "tracedx-bench-")
	check(err)
	if !c.keep {
		defer os.RemoveAll(work)
	}
	c.work = work
	c.loadgen = filepath.Join(work, "loadgen")
	step("building loadgen")
	check(run("go", "build", "-o", c.loadgen, "./bench/loadgen"))
	c.probeCPU = *probeCPU
	if c.probeCPU == "" {
		c.probeCPU = c.genCPU
	}
	if *compare != "" {
		var reports []Report
		for _, kv := range strings.Split(*compare, ",") {
			name, bin, ok := strings.Cut(kv, "=")
			if !ok {
				fatal("-compare wants name=binary,...")
			}
			one := c
			one.server, one.bin, one.srvArgs = name, bin, ""
			if name == "tracedx" {
				one.srvArgs = c.srvArgs
			}
			if name == "victoriatraces" {
				one.protocol = "http"
			}
			reports = append(reports, runOnce(one))
		}
		if *asJSON {
			_ = json.NewEncoder(os.Stdout).Encode(reports)
			return
		}
		printTable(reports)
		return
	}
	r := runOnce(c)
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	printReport(r)
}

// runOnce starts one server, loads it, settles, stops it and reports.
func runOnce(c config) Report {
	dataDir := filepath.Join(c.work, c.server+"-data")
	srvBin := c.bin
	if srvBin == "" {
		srvBin = filepath.Join(c.work, c.server)
		pkg := map[string]string{"tracedx": "./cmd/tracedx", "benchserver": "./bench/harness/benchserver"}[c.server]
		if pkg == "" {
			fatal("-server must be tracedx or benchserver, or jaeger / victoriatraces with -bin")
		}
		step("building " + pkg)
		check(run("go", "build", "-o", srvBin, pkg))
	}
	grpcAddr, httpAddr, queryAddr := freeAddr(), freeAddr(), freeAddr()
	args := []string{"-c", c.serverCPU, srvBin}
	queryBase, tempoBase, httpPath := "http://"+queryAddr, "", "/v1/traces"
	switch c.server {
	case "tracedx":
		args = append(args, "serve", "--data-dir", dataDir, "--otlp-grpc-addr", grpcAddr, "--otlp-http-addr", httpAddr,
			"--zipkin-addr", "", "--http-addr", queryAddr, "--tempo-addr", "", "--log-level", "warn")
		tempoBase = "http://" + queryAddr + "/tempo" // the Tempo API, as the UI reaches it
	case "benchserver":
		args = append(args, "-data-dir", dataDir, "-store", c.store, "-otlp-grpc-addr", grpcAddr, "-otlp-http-addr", httpAddr)
	case "jaeger":
		cfg := filepath.Join(c.work, "jaeger.yaml")
		check(os.WriteFile(cfg, []byte(jaegerConfig(grpcAddr, httpAddr, queryAddr)), 0o644))
		args = append(args, "--config", cfg)
	case "victoriatraces":
		if c.protocol != "http" {
			fatal("victoriatraces takes OTLP over HTTP only: use -protocol http")
		}
		httpAddr = queryAddr
		queryBase, httpPath = "http://"+queryAddr+"/select/jaeger", "/insert/opentelemetry/v1/traces"
		args = append(args, "-httpListenAddr="+queryAddr, "-storageDataPath="+dataDir, "-loggerLevel=WARN")
	default:
		fatal("unknown -server " + c.server)
	}
	args = append(args, strings.Fields(c.srvArgs)...)
	step("starting " + strings.Join(append([]string{"taskset"}, args...), " "))
	srv := exec.Command("taskset", args...)
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	check(srv.Start())
	pid := srv.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	target := grpcAddr
	if c.protocol == "http" {
		target = httpAddr
	}
	waitListening(target, exited)
	cpu0 := cpuSeconds(pid)

	if c.probeCPU != "any" {
		check(pinSelf(c.probeCPU)) // after any build, which wants every CPU
	}
	step(fmt.Sprintf("loading %s for %s with %d workers on CPU %s", target, c.duration, c.workers, c.genCPU))
	var out bytes.Buffer
	lg := exec.Command("taskset", "-c", c.genCPU, c.loadgen, "-json", "-protocol", c.protocol, "-addr", target, "-http-path", httpPath,
		"-duration", c.duration.String(), "-workers", strconv.Itoa(c.workers), "-rate", fmt.Sprint(c.rate))
	lg.Stdout, lg.Stderr = &out, os.Stderr
	var during chan queryStats
	if c.queries {
		during = make(chan queryStats, 1)
		go func() { during <- probeQueries(queryBase, tempoBase, c.duration/2, c.duration/2, "load", c.probeLog) }()
	}
	t0 := time.Now()
	check(lg.Run())
	elapsed := time.Since(t0).Seconds()
	cpu1 := cpuSeconds(pid)
	var lr loadResult
	check(json.Unmarshal(out.Bytes(), &lr))

	step(fmt.Sprintf("settling %s for flush and compaction", c.settle))
	time.Sleep(c.settle)
	cpu2 := cpuSeconds(pid)
	var settled queryStats
	if c.queries {
		settled = probeQueries(queryBase, tempoBase, 0, 5*time.Second, "settled", c.probeLog)
	}
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
		Server: c.server, Protocol: c.protocol, DurationSeconds: elapsed,
		SpansAccepted: lr.SpansAccepted, SpansPerSecond: lr.SpansPerSecond,
		ServerCPUPercent: 100 * (cpu1 - cpu0) / elapsed,
		PeakRSSMB:        float64(rss) / 1024, DiskBytes: disk, Errors: lr.Errors, LatencyP99Ms: lr.LatencyP99Ms,
	}
	if c.queries {
		d := <-during
		r.QueriesDuringLoad, r.QueriesSettled = &d, &settled
	}
	if c.server == "benchserver" {
		r.Server += "/" + c.store
	}
	if lr.SpansAccepted > 0 {
		r.CPUSecondsPerMSpans = (cpu1 - cpu0) / float64(lr.SpansAccepted) * 1e6
		r.SettledCPUSecondsPerMSpans = (cpu2 - cpu0) / float64(lr.SpansAccepted) * 1e6
		r.DiskBytesPerSpan = float64(disk) / float64(lr.SpansAccepted)
	}
	return r
}

func printReport(r Report) {
	fmt.Printf("server %s, %s, %.0fs\n", r.Server, r.Protocol, r.DurationSeconds)
	fmt.Printf("  accepted spans/s:             %.0f (%d spans)\n", r.SpansPerSecond, r.SpansAccepted)
	fmt.Printf("  server CPU s per 1M spans:    %.2f (server at %.0f%% of a core)\n", r.CPUSecondsPerMSpans, r.ServerCPUPercent)
	fmt.Printf("  ... until settled:            %.2f\n", r.SettledCPUSecondsPerMSpans)
	fmt.Printf("  peak RSS (VmHWM):             %.0f MB\n", r.PeakRSSMB)
	fmt.Printf("  disk bytes/span after compaction: %.1f (%d bytes)\n", r.DiskBytesPerSpan, r.DiskBytes)
	fmt.Printf("  load p99 latency:             %.1f ms\n", r.LatencyP99Ms)
	for _, q := range []struct {
		when string
		s    *queryStats
	}{{"during load", r.QueriesDuringLoad}, {"settled", r.QueriesSettled}} {
		if q.s != nil {
			tempo := ""
			if q.s.TempoSearchP50Ms > 0 {
				tempo = fmt.Sprintf(", Tempo search p50 %.1f / p99 %.1f ms", q.s.TempoSearchP50Ms, q.s.TempoSearchP99Ms)
			}
			fmt.Printf("  queries %s: search p50 %.1f / p99 %.1f ms, trace by id p50 %.1f / p99 %.1f ms%s (%d rounds, %d failed)\n",
				q.when, q.s.SearchP50Ms, q.s.SearchP99Ms, q.s.TraceP50Ms, q.s.TraceP99Ms, tempo, q.s.Rounds, q.s.Failed)
			names := slices.Sorted(maps.Keys(q.s.APIs))
			for _, name := range names {
				a := q.s.APIs[name]
				fmt.Printf("    %-40s p50 %6.1f / p99 %6.1f ms (%d calls, %d failed)\n", name, a.P50Ms, a.P99Ms, a.N, a.Failed)
			}
		}
	}
	if len(r.Errors) > 0 {
		fmt.Printf("  errors: %v\n", r.Errors)
	}
}

func printTable(rs []Report) {
	fmt.Println("| server | spans/s | CPU s / 1M spans | peak RSS MB | search p50/p99 ms (load) | trace p50/p99 ms (load) | search p50/p99 ms (settled) | trace p50/p99 ms (settled) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		q := func(s *queryStats, search bool) string {
			switch {
			case s == nil:
				return "-"
			case search:
				return fmt.Sprintf("%.1f / %.1f", s.SearchP50Ms, s.SearchP99Ms)
			}
			return fmt.Sprintf("%.1f / %.1f", s.TraceP50Ms, s.TraceP99Ms)
		}
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %s | %s | %s | %s |\n", r.Server, r.SpansPerSecond, r.CPUSecondsPerMSpans, r.PeakRSSMB,
			q(r.QueriesDuringLoad, true), q(r.QueriesDuringLoad, false), q(r.QueriesSettled, true), q(r.QueriesSettled, false))
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

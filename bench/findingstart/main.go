// Command findingstart measures how `tracedx serve` starts with many
// findings on disk: it writes -n findings into a data directory through
// the findings store (segments and their index files, as a server that
// ran for a week leaves them), then starts the server and reports when
// its HTTP listener answered /healthz, when /readyz said every finding is
// queryable, the peak RSS after a few finding queries, and the query
// latencies.
//
//	go run ./bench/findingstart -n 10000000 -dir /tmp/findings10m   # builds once, then reuses
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tracedx/tracedx/bench/internal/proc"
	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/model"
)

func main() {
	n := flag.Int("n", 10_000_000, "findings to store")
	dir := flag.String("dir", "", "data directory (default: a temporary one, removed after); findings are built only when it has none")
	bin := flag.String("bin", "", "server binary (default: built from ./cmd/tracedx)")
	rebuild := flag.Bool("unindexed", false, "remove the index files before starting, to measure the background indexing of an older store")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "findingstart-")
		check(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	fdir := filepath.Join(*dir, "findings")
	// Plain (.jsonl) or compressed (.jsonz) segments.
	if have, _ := filepath.Glob(filepath.Join(fdir, "findings-*.json?")); len(have) == 0 {
		start := time.Now()
		check(build(fdir, *n))
		fmt.Fprintf(os.Stderr, "findingstart: wrote %d findings in %s\n", *n, time.Since(start).Round(time.Second))
	}
	if *rebuild {
		idx, _ := filepath.Glob(filepath.Join(fdir, "*.idx"))
		for _, f := range idx {
			check(os.Remove(f))
		}
	}
	if *bin == "" {
		*bin = filepath.Join(os.TempDir(), "findingstart-tracedx")
		c := exec.Command("go", "build", "-o", *bin, "./cmd/tracedx")
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		check(c.Run())
	}
	addr, err := proc.FreeAddr()
	check(err)
	srv := exec.Command(*bin, "serve", "--data-dir", *dir, "--http-addr", addr, "--otlp-grpc-addr", "", "--otlp-http-addr", "",
		"--zipkin-addr", "", "--tempo-addr", "", "--log-level", "warn")
	srv.Stderr = os.Stderr
	start := time.Now()
	check(srv.Start())
	defer func() {
		_ = srv.Process.Signal(os.Interrupt)
		_ = srv.Wait()
	}()
	base := "http://" + addr
	listening := waitStatus(base+"/healthz", start, 2*time.Minute)
	ready := waitStatus(base+"/readyz", start, 30*time.Minute)
	queries := map[string]time.Duration{}
	for name, path := range map[string]string{
		"newest 100":        "/api/v1/findings?limit=100",
		"one kind, 1 day":   "/api/v1/findings?kind=retry_storm&from=24h&limit=100",
		"one trace":         "/api/v1/findings?trace_id=" + traceID(*n/2).String(),
		"summary, all time": "/api/v1/findings/summary",
	} {
		t0 := time.Now()
		get(base + path)
		queries[name] = time.Since(t0)
	}
	rss, err := proc.PeakRSSKB(srv.Process.Pid)
	check(err)
	fmt.Printf("findings on disk:           %d (%s)\n", *n, *dir)
	fmt.Printf("listening (/healthz 200):   %s\n", listening.Round(time.Millisecond))
	fmt.Printf("ready (/readyz 200):        %s\n", ready.Round(time.Millisecond))
	fmt.Printf("peak RSS after queries:     %.0f MB\n", float64(rss)/1024)
	for name, d := range queries {
		fmt.Printf("query %-20s %s\n", name+":", d.Round(time.Millisecond))
	}
}

var kinds = []string{"n_plus_one_query", "retry_storm", "slow_query", "error_origin", "timeout_cascade", "idle_gap", "fan_out", "lock_contention"}
var services = []string{"frontend", "checkout", "cart", "payments", "inventory", "shipping", "orders", "users"}

func traceID(i int) model.TraceID {
	var id model.TraceID
	for b := range 8 {
		id[b] = byte(uint64(i) >> (8 * b))
		id[8+b] = byte((uint64(i) * 0x9e3779b97f4a7c15) >> (8 * b))
	}
	return id
}

// build stores n findings spread over the last 7 days (the default
// retention), in batches as the analysis pipeline puts them.
func build(dir string, n int) error {
	end := time.Now()
	step := 7 * 24 * time.Hour / time.Duration(n)
	clock := end.Add(-7 * 24 * time.Hour)
	s, err := findingstore.Open(findingstore.Options{Dir: dir, SyncInterval: time.Hour, SegmentDuration: 1000 * time.Hour,
		Now: func() time.Time { return clock }})
	if err != nil {
		return err
	}
	batch := make([]findingstore.Stored, 0, 1000)
	for i := range n {
		t := clock
		batch = append(batch, findingstore.Stored{Finding: analyze.Finding{
			Kind: kinds[i%len(kinds)], Severity: analyze.SeverityWarning, Title: "SELECT * FROM items WHERE id = ? ran 40 times under GET /cart",
			TraceID: traceID(i).String(), SpanIDs: []string{"00f067aa0ba902b7", "53995c3f42cd8ad8"}, ImpactMS: float64(i % 500),
			Evidence: map[string]any{"count": 40, "statement": "SELECT * FROM items WHERE id = ?"}, Fix: "Batch the lookups into one query.",
		}, Time: t, Service: services[i%len(services)], Operation: "GET /cart"})
		if len(batch) == cap(batch) {
			if err := s.Put(context.Background(), batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
		clock = clock.Add(step)
	}
	if err := s.Put(context.Background(), batch); err != nil {
		return err
	}
	return s.Close()
}

func waitStatus(url string, start time.Time, limit time.Duration) time.Duration {
	for time.Since(start) < limit {
		if resp, err := http.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	check(fmt.Errorf("%s not 200 within %s", url, limit))
	return 0
}

func get(url string) {
	resp, err := http.Get(url)
	check(err)
	defer resp.Body.Close()
	var v any
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		check(fmt.Errorf("GET %s: %s", url, resp.Status))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "findingstart:", err)
		os.Exit(1)
	}
}

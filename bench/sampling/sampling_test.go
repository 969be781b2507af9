// Package sampling measures tail sampling on the demo shop's load: the
// same traffic goes to two servers, one keeping every trace and one
// sampling; it compares their disk use, findings and RED metrics.
//
//	TRACEDX_BENCH_SAMPLING=90s go test -run TestSamplingOnDemoLoad -v -timeout 15m ./bench/sampling/
//
// It is not part of CI (skipped without the variable): it runs the demo
// for real time.
package sampling

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/demo"
	"github.com/tracedx/tracedx/internal/server"
	"github.com/tracedx/tracedx/internal/store/engine"
)

type instance struct {
	s    *server.Server
	dir  string
	done chan struct{}
}

func start(t *testing.T, ctx context.Context, sampling bool) *instance {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	cfg.Storage.TraceIdleTimeout = 3 * time.Second
	// Both servers must see every trace whole: no CPU shedding, no
	// uniform subsampling of the analytics, so any difference between
	// them is sampling's.
	cfg.Analysis.MaxCPUShare = 0
	cfg.Analysis.QueueSpans = 1 << 20
	cfg.Analytics.BaselineTracesPerSecond = 0
	cfg.Analytics.WholeTracesPerSecond = 0
	// The policy measured: errors, findings (two example traces per
	// finding kind, endpoint and minute), one trace per endpoint and
	// minute, and 1 % of the rest.
	cfg.Sampling = config.Sampling{Enabled: sampling, KeepErrors: true, KeepFindings: "warning", Rate: 0.01,
		MinPerMinute: 1, MaxFindingTracesPerMinute: 2}
	// What grows with time is the kept traces: the others stay for
	// retention.traces (a day) and then go, so they leave at compaction here.
	cfg.Retention.Traces = 0
	s, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	in := &instance{s: s, dir: cfg.DataDir, done: make(chan struct{})}
	go func() { defer close(in.done); _ = s.Wait(ctx) }()
	return in
}

// tee forwards every OTLP/HTTP request to both servers.
func tee(t *testing.T, to ...*instance) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		code := http.StatusOK
		for _, in := range to {
			req, _ := http.NewRequest("POST", "http://"+in.s.Addr("otlp-http")+r.URL.Path, bytes.NewReader(body))
			req.Header = r.Header.Clone()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				code = http.StatusServiceUnavailable
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				code = resp.StatusCode
			}
		}
		w.WriteHeader(code)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func getJSON(t *testing.T, in *instance, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + in.s.Addr("http") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if m, ok := v.(*map[string]any); ok {
		withoutRates(*m)
	}
}

// withoutRates removes per-second rates: they divide by a window that
// ends at the time of the query, so the two servers, asked milliseconds
// apart, differ in the sixth digit. The counts they derive from are
// compared.
func withoutRates(v any) {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "rate")
		for _, e := range x {
			withoutRates(e)
		}
	case []any:
		for _, e := range x {
			withoutRates(e)
		}
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

type findingKey struct{ Kind, TraceID, Key string }

func findings(t *testing.T, in *instance) []findingKey {
	var l struct {
		Findings []struct {
			Kind    string `json:"kind"`
			TraceID string `json:"trace_id"`
			Key     string `json:"key"`
		} `json:"findings"`
	}
	getJSON(t, in, "/api/v1/findings?limit=10000", &l)
	out := make([]findingKey, len(l.Findings))
	for i, f := range l.Findings {
		out[i] = findingKey{f.Kind, f.TraceID, f.Key}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.TraceID != b.TraceID {
			return a.TraceID < b.TraceID
		}
		return a.Key < b.Key
	})
	return out
}

func minus(a, b []findingKey) []findingKey {
	in := map[findingKey]bool{}
	for _, k := range b {
		in[k] = true
	}
	var out []findingKey
	for _, k := range a {
		if !in[k] {
			out = append(out, k)
		}
	}
	return out
}

func TestSamplingOnDemoLoad(t *testing.T) {
	run, err := time.ParseDuration(os.Getenv("TRACEDX_BENCH_SAMPLING"))
	if err != nil {
		t.Skip("set TRACEDX_BENCH_SAMPLING to a duration (e.g. 90s) to run this benchmark")
	}
	ctx, cancel := context.WithCancel(context.Background())
	// control is a second server without sampling: how much two servers
	// fed the same traffic differ anyway (findings judged against
	// baselines that depend on the order traces are analysed in).
	full, control, sampled := start(t, ctx, false), start(t, ctx, false), start(t, ctx, true)
	shopCtx, stopShop := context.WithCancel(ctx)
	begin := time.Now()
	shop, err := demo.Start(shopCtx, demo.Options{Endpoint: tee(t, full, control, sampled), Rate: 40, IncidentEvery: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go shop.Run(shopCtx)
	time.Sleep(run)
	stopShop()
	shop.Close(context.Background())
	end := time.Now()
	// Let every trace complete and be analysed, then compact.
	time.Sleep(10 * time.Second)
	for _, in := range []*instance{full, control, sampled} {
		eng := in.s.Store().(*engine.Engine)
		if err := eng.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Second)
	for _, in := range []*instance{full, control, sampled} {
		if err := in.s.Store().(*engine.Engine).Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Blocks are what grows with time; the write-ahead log is truncated
	// once its spans are in blocks, so it stays bounded.
	fullBytes, sampledBytes := dirBytes(t, filepath.Join(full.dir, "traces", "blocks")), dirBytes(t, filepath.Join(sampled.dir, "traces", "blocks"))
	ratio := float64(fullBytes) / float64(max(sampledBytes, 1))
	perHour := func(b int64) float64 { return float64(b) / end.Sub(begin).Hours() / (1 << 20) }
	t.Logf("load %v: blocks %d B without sampling (%.1f MiB/h), %d B with (%.1f MiB/h): %.1fx less",
		end.Sub(begin).Round(time.Second), fullBytes, perHour(fullBytes), sampledBytes, perHour(sampledBytes), ratio)
	t.Logf("whole traces directory (with the write-ahead log): %d B without sampling, %d B with",
		dirBytes(t, filepath.Join(full.dir, "traces")), dirBytes(t, filepath.Join(sampled.dir, "traces")))
	fs, ss := full.s.Store().(*engine.Engine).Stats(), sampled.s.Store().(*engine.Engine).Stats()
	t.Logf("spans in blocks: %d without sampling, %d with", fs.BlockSpans, ss.BlockSpans)

	ff, cf, sf := findings(t, full), findings(t, control), findings(t, sampled)
	noise := len(minus(ff, cf)) + len(minus(cf, ff))
	diff := len(minus(ff, sf)) + len(minus(sf, ff))
	t.Logf("findings: %d without sampling, %d with; %d differ from the server without sampling (its twin without sampling: %d)",
		len(ff), len(sf), diff, noise)
	if diff > noise {
		t.Errorf("findings only without sampling: %v; only with: %v", minus(ff, sf), minus(sf, ff))
	}
	// A fixed range in the past, so rates do not depend on when each
	// server is asked.
	rng := "start=" + strconv.FormatInt(begin.Add(-time.Minute).UnixMilli(), 10) + "&end=" + strconv.FormatInt(end.Add(5*time.Second).UnixMilli(), 10)
	var fr, sr, fo, so map[string]any
	getJSON(t, full, "/api/v1/metrics/services?"+rng, &fr)
	getJSON(t, sampled, "/api/v1/metrics/services?"+rng, &sr)
	if !reflect.DeepEqual(fr, sr) {
		t.Errorf("RED per service differs:\nwithout %v\nwith    %v", fr, sr)
	}
	getJSON(t, full, "/api/v1/servicemap?"+rng, &fo)
	getJSON(t, sampled, "/api/v1/servicemap?"+rng, &so)
	if !reflect.DeepEqual(fo, so) {
		t.Errorf("service map differs:\nwithout %v\nwith    %v", fo, so)
	}
	var svcs struct {
		Services []struct {
			Service string `json:"service"`
		} `json:"services"`
	}
	getJSON(t, full, "/api/v1/metrics/services?"+rng, &svcs)
	for _, sv := range svcs.Services {
		var a, b map[string]any
		path := "/api/v1/metrics/operations?service=" + sv.Service + "&" + rng
		getJSON(t, full, path, &a)
		getJSON(t, sampled, path, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("RED per operation of %s differs:\nwithout %v\nwith    %v", sv.Service, a, b)
		}
	}
	resp, err := http.Get("http://" + sampled.s.Addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, line := range bytes.Split(metrics, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("tracedx_sampling_decisions_total{")) {
			t.Log(string(line))
		}
	}
	if ratio < 10 {
		t.Errorf("disk falls %.1fx with sampling, want at least 10x", ratio)
	}
	cancel()
	for _, in := range []*instance{full, control, sampled} {
		<-in.done
		in.s.Close()
	}
}

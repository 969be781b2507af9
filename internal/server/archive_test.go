package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// runServer starts a server on dir and returns it with its stop.
// archiveServer runs a server on dir with OTLP/HTTP and the API on port 0.
func archiveServer(t *testing.T, dir string, mutate func(*config.Config)) (*Server, func()) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Listen = config.Listen{OTLPHTTP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	mutate(&cfg)
	return runServer(t, cfg)
}

// runServer starts a whole server on cfg; stop (also run at the test's
// end) stops it, so a test can restart on the same data directory.
func runServer(t testing.TB, cfg config.Config) (*Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		cancel()
		s.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Wait(ctx)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			s.Close()
		}
	}
	t.Cleanup(stop)
	return s, stop
}

type archivedSearch struct {
	Traces []struct {
		TraceID        string  `json:"trace_id"`
		RootService    string  `json:"root_service"`
		RootOperation  string  `json:"root_operation"`
		SpanCount      int     `json:"span_count"`
		DurationMS     float64 `json:"duration_ms"`
		TraceAvailable *bool   `json:"trace_available"`
		RetentionDays  float64 `json:"retention_days"`
	} `json:"traces"`
}

// Past the traces' retention a trace is gone by id, but its summary is
// still found by /api/v1/search, marked trace_available: false, until
// retention.findings; its finding links to it; a restart keeps it.
func TestSummariesOutliveTheirTraces(t *testing.T) {
	saved := retentionNow
	t.Cleanup(func() { retentionNow = saved })
	var shift time.Duration
	retentionNow = func() time.Time { return time.Now().Add(shift) }

	dir := t.TempDir()
	mutate := func(c *config.Config) {
		c.Storage.TraceIdleTimeout = 100 * time.Millisecond
		c.Storage.Retention, c.Retention.Findings = 24*time.Hour, 10*24*time.Hour
	}
	s, stop := archiveServer(t, dir, mutate)
	at := time.Now().Add(-time.Minute)
	spans := slowOrder(0, at)
	id := spans[0].TraceID
	postOTLP(t, s.Addr("otlp-http"), spans)
	type listed struct {
		Findings []struct {
			TraceAvailable *bool  `json:"trace_available"`
			TraceSummary   string `json:"trace_summary"`
		} `json:"findings"`
	}
	var l listed
	for deadline := time.Now().Add(20 * time.Second); len(l.Findings) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no finding stored")
		}
		getJSON(t, s, "/api/v1/findings?service=orders", &l)
	}
	ctx := context.Background()
	eng := s.Store().(*engine.Engine)
	if err := eng.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rng := "&start=" + strconv.FormatInt(at.Add(-time.Hour).UnixMilli(), 10) + "&end=" + strconv.FormatInt(at.Add(time.Hour).UnixMilli(), 10)
	search := func(s *Server) archivedSearch {
		var r archivedSearch
		getJSON(t, s, "/api/v1/search?service=orders"+rng, &r)
		return r
	}
	if r := search(s); len(r.Traces) != 1 || r.Traces[0].TraceAvailable != nil {
		t.Fatalf("while stored: %+v", r)
	}

	shift = 25 * time.Hour
	if err := eng.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr("http") + "/api/v1/traces/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("trace past retention: %s", resp.Status)
	}
	r := search(s)
	if len(r.Traces) != 1 || r.Traces[0].TraceID != id.String() || r.Traces[0].TraceAvailable == nil || *r.Traces[0].TraceAvailable ||
		r.Traces[0].RootOperation != "GET /orders" || r.Traces[0].SpanCount != len(spans) || r.Traces[0].DurationMS != 1120 || r.Traces[0].RetentionDays != 1 {
		t.Fatalf("archived summary: %+v", r)
	}
	// Sorted search and a span-attribute search (which the archive cannot
	// answer: no archived result rather than a wrong one).
	var sorted archivedSearch
	getJSON(t, s, "/api/v1/search?sort=longest&findings=true&service=orders"+rng, &sorted)
	if len(sorted.Traces) != 1 || sorted.Traces[0].TraceAvailable == nil || *sorted.Traces[0].TraceAvailable {
		t.Errorf("sorted search: %+v", sorted)
	}
	var byAttr archivedSearch
	getJSON(t, s, "/api/v1/search?attr=db.system%3Dpostgresql"+rng, &byAttr)
	if len(byAttr.Traces) != 0 {
		t.Errorf("attribute search answered from summaries: %+v", byAttr)
	}

	// The finding links to the summary.
	getJSON(t, s, "/api/v1/findings?service=orders", &l)
	f := l.Findings[0]
	if f.TraceAvailable == nil || *f.TraceAvailable || !strings.Contains(f.TraceSummary, id.String()) {
		t.Fatalf("finding of a gone trace: %+v", f)
	}
	var linked archivedSearch
	getJSON(t, s, f.TraceSummary+rng, &linked)
	if len(linked.Traces) != 1 || linked.Traces[0].TraceID != id.String() {
		t.Fatalf("the finding's link %s: %+v", f.TraceSummary, linked)
	}

	// A damaged archive file (here: not one at all) is set aside at
	// start; the server opens, the rest of the archive answers.
	stop()
	damaged := filepath.Join(dir, "summaries", at.Add(-48*time.Hour).UTC().Format("2006-01-02")+".tdsa")
	if err := os.WriteFile(damaged, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ = archiveServer(t, dir, mutate)
	if _, err := os.Stat(damaged + ".corrupt"); err != nil {
		t.Errorf("damaged file not set aside: %v", err)
	}
	resp, err = http.Get("http://" + s.Addr("http") + "/api/v1/search?trace_id=xyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad trace_id: %s", resp.Status)
	}
	if r := search(s); len(r.Traces) != 1 || r.Traces[0].TraceID != id.String() {
		t.Fatalf("after a restart: %+v", r)
	}
	shift = 11 * 24 * time.Hour
	if r := search(s); len(r.Traces) != 0 {
		t.Fatalf("past retention.findings: %+v", r)
	}
}

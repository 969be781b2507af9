package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
)

func testPipeline(t *testing.T, mutate func(*config.Config)) *pipeline {
	t.Helper()
	cfg := config.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	hist, err := baseline.New(baseline.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), reg: prometheus.NewRegistry()}
	return newPipeline(s, hist)
}

func traceOf(n int, svc string) []model.Span {
	var tr model.TraceID
	tr[0], tr[15] = 1, byte(n)
	spans := make([]model.Span, n)
	start := uint64(time.Now().Add(-time.Second).UnixNano())
	for i := range spans {
		spans[i] = model.Span{TraceID: tr, SpanID: model.SpanID{byte(i + 1)}, Service: svc, Name: "GET /x", Kind: model.KindServer,
			StartUnixNano: start, EndUnixNano: start + uint64(time.Millisecond)}
		if i > 0 {
			spans[i].ParentSpanID = spans[0].SpanID
			spans[i].Kind = model.KindInternal
		}
	}
	return spans
}

func TestQueueIsBoundedBySpans(t *testing.T) {
	p := testPipeline(t, func(c *config.Config) { c.Analysis.QueueSpans = 250 })
	for range 3 {
		p.traceComplete(model.TraceID{}, traceOf(100, "a"))
	}
	if q, d := p.queued.Load(), p.dropped.Load(); q != 200 || d != 1 || len(p.queue) != 2 {
		t.Fatalf("queued %d spans in %d traces, dropped %d; want 200, 2, 1", q, len(p.queue), d)
	}
	// Draining frees the budget.
	for len(p.queue) > 0 {
		p.process(context.Background(), <-p.queue)
	}
	if q := p.queued.Load(); q != 0 {
		t.Fatalf("queued %d after draining", q)
	}
	// A trace larger than the whole budget is still taken when the queue is
	// empty, but nothing may join it.
	p.traceComplete(model.TraceID{}, traceOf(1000, "a"))
	p.traceComplete(model.TraceID{}, traceOf(1, "a"))
	if q, d := p.queued.Load(), p.dropped.Load(); q != 1000 || d != 2 {
		t.Fatalf("big trace: queued %d dropped %d", q, d)
	}
}

type countingSink struct{ put, observed int }

func (c *countingSink) putTrace(context.Context, []model.Span, analyze.Result) error {
	c.put++
	return nil
}
func (c *countingSink) traceFindings(context.Context, model.TraceID) ([]analyze.Finding, bool, error) {
	return nil, false, nil
}
func (c *countingSink) observe([]model.Span) { c.observed++ }

func TestSheddingSkipsDetectorsButNotSystemic(t *testing.T) {
	p := testPipeline(t, nil)
	sink := &countingSink{}
	p.findings = sink
	p.keepBits.Store(math.Float64bits(0)) // below minKeep: shed everything
	for range 20 {
		p.process(context.Background(), traceOf(3, "shed"))
	}
	if sink.put != 0 || sink.observed != 20 || p.shed.Load() != 20 || p.analysed.Load() != 20 {
		t.Fatalf("shedding: put %d observed %d shed %d", sink.put, sink.observed, p.shed.Load())
	}
	if _, ok := p.history.OperationDuration("shed", "GET /x"); ok {
		t.Error("baselines fed while shedding")
	}
	p.keepBits.Store(math.Float64bits(1))
	for range 20 {
		p.process(context.Background(), traceOf(3, "kept"))
	}
	if sink.put != 20 || sink.observed != 40 || p.shed.Load() != 20 {
		t.Fatalf("keeping: put %d observed %d shed %d", sink.put, sink.observed, p.shed.Load())
	}
	if _, ok := p.history.OperationDuration("kept", "GET /x"); !ok {
		t.Error("baselines not fed")
	}
}

func TestSwitchesSelectWork(t *testing.T) {
	p := testPipeline(t, func(c *config.Config) { c.Analytics.Enabled = false })
	sink := &countingSink{}
	p.findings = sink
	p.process(context.Background(), traceOf(3, "a"))
	if sink.put != 1 || sink.observed != 0 {
		t.Fatalf("analysis only: put %d observed %d", sink.put, sink.observed)
	}
	p = testPipeline(t, func(c *config.Config) { c.Analysis.Enabled = false })
	sink = &countingSink{}
	p.findings = sink
	p.process(context.Background(), traceOf(3, "a"))
	if sink.put != 0 || sink.observed != 1 {
		t.Fatalf("analytics only: put %d observed %d", sink.put, sink.observed)
	}
	p = testPipeline(t, func(c *config.Config) { c.Analysis.Enabled, c.Analytics.Enabled = false, false })
	p.traceComplete(model.TraceID{}, traceOf(3, "a"))
	if p.active() || len(p.queue) != 0 {
		t.Fatal("nothing to do, yet traces are queued")
	}
}

func TestNextKeep(t *testing.T) {
	s := time.Second
	// CPU-bound, worker at 40 % of the process: halve towards 20 %.
	if k := nextKeep(1, 0.2, s, s, 400*time.Millisecond, 1); math.Abs(k-0.5) > 1e-9 {
		t.Errorf("over budget: keep %v, want 0.5", k)
	}
	// Not CPU-bound: no shedding, recover.
	if k := nextKeep(0.5, 0.2, s, 500*time.Millisecond, 400*time.Millisecond, 1); k != 0.75 {
		t.Errorf("idle CPU: keep %v, want 0.75", k)
	}
	// CPU-bound, within budget but close to it: hold.
	if k := nextKeep(0.5, 0.2, s, s, 190*time.Millisecond, 1); k != 0.5 {
		t.Errorf("at budget: keep %v, want 0.5", k)
	}
	// Two cores, one busy: not CPU-bound.
	if k := nextKeep(0.5, 0.2, s, s, 900*time.Millisecond, 2); k != 0.75 {
		t.Errorf("half the cores: keep %v", k)
	}
	if k := nextKeep(0.02, 0.2, s, s, s, 1); k != minKeep {
		t.Errorf("floor: keep %v", k)
	}
	if k := nextKeep(0.1, 0, s, s, s, 1); k != 1 {
		t.Errorf("shedding disabled: keep %v", k)
	}
}

func TestRateSamplerKeepsAboutTheRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := rateSampler{perSecond: 100}
	t0 := time.Unix(1000, 0)
	kept := 0
	// 10 s at 2000 events/s: after the first second about 100 per second.
	for i := range 20000 {
		if r.keep(t0.Add(time.Duration(i)*500*time.Microsecond), rng) && i >= 2000 {
			kept++
		}
	}
	if kept < 800 || kept > 1000 {
		t.Fatalf("kept %d of 18000 events over 9 s, want ~900", kept)
	}
	all := rateSampler{}
	for range 100 {
		if !all.keep(t0, rng) {
			t.Fatal("perSecond 0 must keep everything")
		}
	}
}

func TestDetectorThresholdsFromConfig(t *testing.T) {
	var an config.Analysis
	if err := yaml.Unmarshal([]byte("detectors:\n  n_plus_one_query: {min_repetitions: 3}\n  idle_gap: false\n"), &an); err != nil {
		t.Fatal(err)
	}
	ds, err := detectorsOf(an)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Kind() == "idle_gap" {
			t.Error("idle_gap switched off in the config, still run")
		}
	}

	// Three identical queries of 30 ms under one handler: below the default
	// of 5 repetitions, an N+1 with min_repetitions 3.
	start := uint64(time.Now().Add(-time.Second).UnixNano())
	tr := model.TraceID{7}
	spans := []model.Span{{TraceID: tr, SpanID: model.SpanID{1}, Service: "orders", Name: "GET /orders", Kind: model.KindServer,
		StartUnixNano: start, EndUnixNano: start + 100e6}}
	for i := range 3 {
		s := model.Span{TraceID: tr, SpanID: model.SpanID{byte(i + 2)}, ParentSpanID: model.SpanID{1}, Service: "orders",
			Name: "SELECT customers", Kind: model.KindClient, StartUnixNano: start + uint64(i)*31e6, EndUnixNano: start + uint64(i)*31e6 + 30e6}
		s.Attrs = model.Attrs{{Key: "db.system", Value: model.Str("postgresql")},
			{Key: "db.query.text", Value: model.Str(fmt.Sprintf("SELECT * FROM customers WHERE id = %d", 40+i))}}
		spans = append(spans, s)
	}
	has := func(res analyze.Result) bool {
		for _, f := range res.Findings {
			if f.Kind == "n_plus_one_query" {
				return true
			}
		}
		return false
	}
	p := testPipeline(t, nil)
	if has(p.analyze(spans)) {
		t.Fatal("default thresholds: 3 queries reported as N+1")
	}
	p.detectors = ds
	if !has(p.analyze(spans)) {
		t.Fatal("min_repetitions 3 from the config not applied")
	}

	if err := yaml.Unmarshal([]byte("detectors:\n  n_plus_one: {min_repetitions: 3}\n"), &an); err != nil {
		t.Fatal(err)
	}
	if _, err := detectorsOf(an); err == nil || !strings.Contains(err.Error(), "n_plus_one") {
		t.Fatalf("unknown kind accepted or not named: %v", err)
	}
}

// TestDocumentedConfigLoads keeps docs/configuration.md true: its YAML
// block is the default configuration and its detector section loads.
func TestDocumentedConfigLoads(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/configuration.md")
	}
	file := filepath.Join(t.TempDir(), "tracedx.yaml")
	if err := os.WriteFile(file, []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load([]string{"--config", file}, nil)
	if err != nil {
		t.Fatalf("documented file: %v", err)
	}
	if _, err := detectorsOf(cfg.Analysis); err != nil {
		t.Fatalf("documented detectors: %v", err)
	}
	def := config.Default()
	cfg.Analysis.Detectors, def.Analysis.Detectors = yaml.Node{}, yaml.Node{}
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("the documented file is not the defaults:\n doc %+v\n def %+v", cfg, def)
	}
}

package server

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/model"
)

// pipeline is the diagnosis path: the store hands over each completed
// trace, a worker analyses it, stores its findings and feeds the baselines
// and the cross-trace detectors.
type pipeline struct {
	s       *Server
	log     *slog.Logger
	history *baseline.Baselines
	queue   chan []model.Span

	analysed, dropped atomic.Uint64
	findings          findingSink
}

// findingSink stores per-trace findings and answers lookups; the findings
// store implements it.
type findingSink interface {
	putTrace(ctx context.Context, spans []model.Span, res analyze.Result) error
	traceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error)
	observe(spans []model.Span)
}

func newPipeline(s *Server, history *baseline.Baselines) *pipeline {
	p := &pipeline{s: s, log: s.log.With("component", "analysis"), history: history, queue: make(chan []model.Span, 4096)}
	s.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_traces_total", Help: "Completed traces analysed."},
			func() float64 { return float64(p.analysed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tracedx_analysis_dropped_total", Help: "Completed traces not analysed because the queue was full."},
			func() float64 { return float64(p.dropped.Load()) }),
	)
	return p
}

// traceComplete is the store's completion hook. It must not block the
// store: when analysis falls behind, traces are skipped (and counted), the
// spans themselves are safe in the store.
func (p *pipeline) traceComplete(_ model.TraceID, spans []model.Span) {
	if !p.s.cfg.Analysis.Enabled {
		return
	}
	select {
	case p.queue <- spans:
	default:
		p.dropped.Add(1)
	}
}

func (p *pipeline) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case spans := <-p.queue:
			res := p.analyze(spans)
			if p.findings != nil {
				if err := p.findings.putTrace(ctx, spans, res); err != nil {
					p.log.Warn("storing findings", "trace_id", res.TraceID, "err", err)
				}
				p.findings.observe(spans)
			}
			p.history.ObserveTrace(spans)
			p.analysed.Add(1)
		}
	}
}

// analyze runs every detector with the server's history.
func (p *pipeline) analyze(spans []model.Span) analyze.Result {
	return analyze.Analyze(spans, analyze.Options{History: p.history})
}

// TraceFindings implements v1.FindingsLookup.
func (p *pipeline) TraceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error) {
	if p.findings == nil {
		return nil, false, nil
	}
	return p.findings.traceFindings(ctx, id)
}

func (p *pipeline) registerRoutes(*http.ServeMux) {}

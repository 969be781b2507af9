package server

import (
	"context"
	"net/http"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/tempo"
	"github.com/tracedx/tracedx/internal/attribution"
	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/grouping"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/systemic"
	"github.com/tracedx/tracedx/internal/traceql"
	"github.com/tracedx/tracedx/internal/web"
)

// tempoHandler returns the Tempo-compatible API.
func tempoHandler(st store.Store, p *pipeline, q config.Query) http.Handler {
	return tempo.NewHandler(st, tempo.Options{Findings: tempo.FindingsFrom(p), Sampled: p.sampledReason, QueryTimeout: q.Timeout, MaxTraceSpans: q.MaxAPITraceSpans,
		QueryLimits: traceql.Limits{MaxRegexBytes: q.MaxRegexBytes, MaxRegexInsts: q.MaxRegexInstructions}})
}

// tempoWithGRPC adds Tempo's gRPC streaming API to the Tempo port.
func tempoWithGRPC(h http.Handler) http.Handler { return tempo.Mux(h, tempo.NewGRPCServer(h)) }

// uiHandler serves the web UI.
func uiHandler() http.Handler { return web.Handler() }

// extraRoutes are the cross-trace analysis endpoints.
func (s *Server) extraRoutes(st store.Store, p *pipeline) []func(*http.ServeMux) {
	routes := []func(*http.ServeMux){
		func(m *http.ServeMux) { compare.RegisterRoutes(m, st) },
		func(m *http.ServeMux) { attribution.RegisterRoutes(m, st) },
		func(m *http.ServeMux) { grouping.RegisterRoutes(m, st) },
	}
	if fs, ok := p.findings.(*storedFindings); ok {
		routes = append(routes, func(m *http.ServeMux) { findingstore.RegisterRoutes(m, fs.fs) })
	}
	return routes
}

// storedFindings connects the pipeline to the findings store and the
// cross-trace detectors.
type storedFindings struct {
	fs *findingstore.Store
	// sink stores into fs and counts what it stores.
	sink systemic.Sink
	sys  *systemic.Detector
	// once keeps a trace completed again by late spans from storing its
	// findings twice.
	once *storedOnce
}

func (f *storedFindings) putTrace(ctx context.Context, spans []model.Span, res analyze.Result) error {
	fs := findingstore.FromResult(spans, res)
	if f.once != nil {
		fs = f.once.fresh(fs)
	}
	if len(fs) == 0 {
		return nil
	}
	return f.sink.Put(ctx, fs)
}

func (f *storedFindings) traceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error) {
	l, err := f.fs.ForTrace(ctx, id)
	return findingstore.Findings(l), len(l) > 0, err
}

// FindingsBetween lists the findings of traces stored for [from, to),
// newest first, for the root-cause ranking (v1.FindingsInRange); in a
// cluster, every node's.
func (f *storedFindings) FindingsBetween(ctx context.Context, from, to time.Time, traces []model.TraceID, limit int) ([]analyze.Finding, error) {
	l, err := f.fs.ClusterList(ctx, findingstore.Query{From: from, To: to, Traces: traces, Limit: limit})
	return findingstore.Findings(l), err
}

func (f *storedFindings) observeSummary(t systemic.TraceSummary) { f.sys.ObserveSummary(timeNow(), t) }
func (f *storedFindings) observeTrace(spans []model.Span)        { f.sys.ObserveTrace(timeNow(), spans) }

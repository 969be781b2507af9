// Package v1 is tracedx's own JSON query API (/api/v1/...): trace by id
// with every OTLP field, analysis, search with attribute comparisons and
// per-trace summaries, and the lists that drive search forms. Field names
// are snake_case; times come as RFC 3339 text and unix nanoseconds;
// durations in milliseconds as floats. docs/api.md is the reference.
package v1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// FindingsLookup returns findings already stored for a trace (by the
// server's background analysis, including cross-trace detectors). ok is
// false when nothing is stored for it.
type FindingsLookup interface {
	TraceFindings(ctx context.Context, id model.TraceID) (findings []analyze.Finding, ok bool, err error)
}

// FindingsInRange lists the findings of the given traces stored for a
// time range (by their trace's start); at most limit, newest first.
type FindingsInRange interface {
	FindingsBetween(ctx context.Context, from, to time.Time, traces []model.TraceID, limit int) ([]analyze.Finding, error)
}

// Deps are what the API needs. Only Store is required.
type Deps struct {
	Store store.Store
	// Analyzer runs the diagnosis of one trace (the server wires
	// analyze.Analyze with its history). Nil: the critical path only.
	Analyzer func(spans []model.Span) analyze.Result
	// Findings, when set, are the record: a trace with stored findings is
	// answered with them (see Explain), and Analyzer only says where
	// today's baselines would judge differently.
	Findings FindingsLookup
	// Explain builds the critical path and why chain of a trace around its
	// stored findings (the server wires analyze.Explain with its history).
	// Nil: analyze.Explain without history.
	Explain func(spans []model.Span, stored []analyze.Finding) analyze.Result
	// WindowFindings, when set, gives the root-cause ranking the findings
	// of each window in one query (else Findings is asked per sampled
	// trace).
	WindowFindings FindingsInRange
	// Routes lets the server register more /api/v1 endpoints on the same
	// mux (patterns like "GET /api/v1/findings").
	Routes []func(mux *http.ServeMux)
	Logger *slog.Logger
	// Now is the clock for relative times (tests pin it).
	Now func() time.Time
	// MaxSearchLimit caps limit on /api/v1/search (default 1000).
	MaxSearchLimit int
	// Sampled, when set, gives the tail-sampling decision about a trace
	// for search results ("": unknown).
	Sampled func(model.TraceID) string
	// Archive, when set, adds the summaries of traces retention deleted
	// to /api/v1/search (marked trace_available: false).
	Archive GoneSummaries
	// TraceRetention says how long a trace with the given sampling decision
	// was kept, for the retention_days of an archived result (nil: absent).
	TraceRetention func(sampled string) time.Duration
	// MaxTraceSpans is the largest page of /api/v1/traces/{id} (default
	// 10,000 spans).
	MaxTraceSpans int
	// MaxAnalysisSpans: the analysis of a larger trace is refused with 422
	// (default 50,000 spans).
	MaxAnalysisSpans int
	// QueryTimeout bounds a trace or analysis request; beyond it the
	// answer is 503 with the reason (default 30 s).
	QueryTimeout time.Duration
}

type api struct {
	d   Deps
	mux *http.ServeMux
	// rejudge: an analyzer with detectors is wired, so comparing its
	// verdict with the stored one means something.
	rejudge bool
}

// NewHandler returns the /api/v1 routes.
func NewHandler(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.MaxSearchLimit <= 0 {
		d.MaxSearchLimit = 1000
	}
	rejudge := d.Analyzer != nil
	if d.Analyzer == nil {
		d.Analyzer = CriticalPathOnly
	}
	if d.MaxTraceSpans <= 0 {
		d.MaxTraceSpans = 10_000
	}
	if d.MaxAnalysisSpans <= 0 {
		d.MaxAnalysisSpans = 50_000
	}
	if d.QueryTimeout <= 0 {
		d.QueryTimeout = 30 * time.Second
	}
	if d.Explain == nil {
		d.Explain = func(spans []model.Span, stored []analyze.Finding) analyze.Result {
			return analyze.Explain(spans, stored, nil)
		}
	}
	a := &api{d: d, mux: http.NewServeMux(), rejudge: rejudge}
	a.mux.HandleFunc("GET /api/v1/traces/{id}", a.trace)
	a.mux.HandleFunc("GET /api/v1/traces/{id}/analysis", a.analysis)
	a.mux.HandleFunc("GET /api/v1/search", a.searchSorted)
	a.mux.HandleFunc("GET /api/v1/search/durations", a.durations)
	a.mux.HandleFunc("GET /api/v1/traceids", a.resolveIDs)
	a.mux.HandleFunc("GET /api/v1/services", a.services)
	a.mux.HandleFunc("GET /api/v1/services/{service}/operations", a.operations)
	a.mux.HandleFunc("GET /api/v1/attributes", a.attributes)
	a.mux.HandleFunc("GET /api/v1/attributes/{key}/values", a.attributeValues)
	a.mux.HandleFunc("GET /api/v1/rootcause", a.rootCause)
	for _, reg := range d.Routes {
		reg(a.mux)
	}
	a.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s (see docs/api.md)", r.Method, r.URL.Path))
	})
	return a
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// clientError marks errors caused by the request.
type clientError struct{ err error }

func (c clientError) Error() string { return c.err.Error() }
func (c clientError) Unwrap() error { return c.err }

func badf(format string, args ...any) error { return clientError{fmt.Errorf(format, args...)} }

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ce clientError
	var tl errTooLarge
	switch {
	case errors.As(err, &ce):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.As(err, &tl):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrOverloaded), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		a.d.Logger.ErrorContext(r.Context(), "api v1 request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// CriticalPathOnly is the analyzer used when none is wired: the trace's
// shape and critical path, no findings.
func CriticalPathOnly(spans []model.Span) analyze.Result {
	t := analyze.NewTrace(spans)
	res := analyze.Result{TraceID: t.ID.String(), SpanCount: len(spans), Findings: []analyze.Finding{}, Why: []string{}}
	if r := t.Root(); r != nil {
		res.RootService, res.RootOperation = r.Span.Service, r.Span.Name
	}
	res.DurationMS = analyze.NS(t.Duration())
	res.CriticalPath = t.CriticalPath().Steps(t)
	if res.CriticalPath == nil {
		res.CriticalPath = []analyze.PathStep{}
	}
	return res
}

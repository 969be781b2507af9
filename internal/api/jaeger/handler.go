// Package jaeger serves the query APIs that Jaeger clients already speak:
// the v1 JSON API behind the Jaeger UI and Grafana's Jaeger data source
// (/api/services, /api/traces, /api/dependencies, /api/metrics/...) and the
// api_v3 HTTP gateway (/api/v3/...), which returns OTLP JSON.
//
// Response shapes follow what the clients parse, checked against the Jaeger
// UI's client code and Jaeger's own handlers (see docs/compatibility.md).
package jaeger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Options configure the handler. The zero value works: dependencies and RED
// metrics are then computed by scanning stored traces.
type Options struct {
	// Dependencies answers /api/dependencies. Nil: ScanDependencies over the
	// store.
	Dependencies DependencySource
	// Metrics answers /api/metrics/*. Nil: ScanMetrics over the store.
	Metrics MetricsSource
	// DefaultSearchLimit applies to /api/traces and /api/v3/traces when the
	// client sends no limit (Jaeger's default is 100).
	DefaultSearchLimit int
	// MaxSearchLimit caps client limits so one request cannot pull the whole
	// store into memory.
	MaxSearchLimit int
	// MaxTraceSpans cuts a trace by id to its first spans by start (0: no
	// cap); Jaeger's formats have no pages, and a 200k-span trace is
	// 155 MB of JSON. The Jaeger trace says so in its warnings.
	MaxTraceSpans int
	Logger        *slog.Logger
	// Sampled, when set, gives tracedx's tail-sampling decision about a
	// trace (""; none), shown as the SampledTag of its root span and the
	// sampled field of api_v3 trace summaries.
	Sampled func(model.TraceID) string
	// Now is the clock (tests pin it).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.DefaultSearchLimit <= 0 {
		o.DefaultSearchLimit = 100
	}
	if o.MaxSearchLimit <= 0 {
		o.MaxSearchLimit = 1500
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

type handler struct {
	st   store.Store
	opts Options
	mux  *http.ServeMux
}

// NewHandler returns the Jaeger v1 and api_v3 routes on one handler. Mount it
// at the root of the Jaeger query port (paths start with /api/).
func NewHandler(st store.Store, opts Options) http.Handler {
	opts.defaults()
	if opts.Dependencies == nil {
		opts.Dependencies = &ScanDependencies{Store: st}
	}
	if opts.Metrics == nil {
		opts.Metrics = &ScanMetrics{Store: st}
	}
	h := &handler{st: st, opts: opts, mux: http.NewServeMux()}

	// v1 JSON API.
	h.mux.HandleFunc("GET /api/services", h.services)
	h.mux.HandleFunc("GET /api/services/{service}/operations", h.serviceOperations)
	h.mux.HandleFunc("GET /api/operations", h.operations)
	h.mux.HandleFunc("GET /api/traces", h.searchTraces)
	h.mux.HandleFunc("GET /api/traces/{traceID}", h.getTrace)
	h.mux.HandleFunc("GET /api/dependencies", h.dependencies)
	h.mux.HandleFunc("GET /api/metrics/{metric}", h.metrics)

	// api_v3 HTTP gateway.
	h.mux.HandleFunc("GET /api/v3/services", h.v3Services)
	h.mux.HandleFunc("GET /api/v3/operations", h.v3Operations)
	h.mux.HandleFunc("GET /api/v3/traces/{traceID}", h.v3GetTrace)
	h.mux.HandleFunc("GET /api/v3/traces", h.v3FindTraces)
	h.mux.HandleFunc("GET /api/v3/trace-summaries", h.v3TraceSummaries)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// envelope is the v1 response wrapper every Jaeger v1 client unwraps.
type envelope struct {
	Data   any        `json:"data"`
	Total  int        `json:"total"`
	Limit  int        `json:"limit"`
	Offset int        `json:"offset"`
	Errors []apiError `json:"errors"`
}

type apiError struct {
	Code    int    `json:"code,omitempty"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

// badRequest marks errors caused by the client's parameters.
type badRequest struct{ err error }

func (b badRequest) Error() string { return b.err.Error() }
func (b badRequest) Unwrap() error { return b.err }

// BadRequest marks an error from a DependencySource or MetricsSource as the
// client's fault (answered 400 with its message) rather than a server error.
func BadRequest(err error) error { return badRequest{err} }

func badParam(name string, err error) error {
	return badRequest{fmt.Errorf("unable to parse param '%s': %w", name, err)}
}

func badf(format string, args ...any) error { return badRequest{fmt.Errorf(format, args...)} }

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if prettyPrint(r) {
		enc.SetIndent("", prettyIndent)
	}
	_ = enc.Encode(v)
}

// prettyPrint reports whether the client asked for indented JSON (the
// Jaeger UI's JSON buttons do).
func prettyPrint(r *http.Request) bool {
	p := r.URL.Query().Get("prettyPrint")
	return p != "" && p != "false"
}

const prettyIndent = "    "

func (h *handler) writeData(w http.ResponseWriter, r *http.Request, data any, total int, errs []apiError) {
	writeJSON(w, r, http.StatusOK, envelope{Data: data, Total: total, Errors: errs})
}

// writeErr writes the v1 error envelope: 400 for bad parameters, 404 for
// missing traces, 499-style cancellations are logged quietly, the rest 500.
func (h *handler) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status == http.StatusInternalServerError {
		h.opts.Logger.ErrorContext(r.Context(), "jaeger api request failed", "path", r.URL.Path, "err", err)
	}
	writeJSON(w, r, status, envelope{Errors: []apiError{{Code: status, Msg: err.Error()}}})
}

func statusOf(err error) int {
	var br badRequest
	switch {
	case errors.As(err, &br):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, store.ErrOverloaded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// parseLimit reads a result count: absent or 0 means def; larger values
// are capped at limitMax (apiparam.Count).
func parseLimit(v string, def, limitMax int) (int, error) {
	if v == "" {
		return min(def, limitMax), nil
	}
	n, err := apiparam.Count(v, limitMax)
	if err != nil || n > 0 {
		return n, err
	}
	return min(def, limitMax), nil
}

// parseTraceIDParam accepts Jaeger's hex forms (16 or 32 chars, or shorter
// without leading zeros).
func parseTraceIDParam(s string) (model.TraceID, error) {
	id, err := model.ParseTraceID(s)
	if err != nil {
		return id, badRequest{err}
	}
	return id, nil
}

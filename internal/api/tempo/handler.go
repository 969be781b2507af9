// Package tempo serves Grafana Tempo's HTTP query API (port 3200) over a
// store.Store, so Grafana's Tempo data source and Traces Drilldown work
// against tracedx unchanged: trace by id (JSON and protobuf), TraceQL
// search, tag discovery and TraceQL metrics.
//
// JSON follows what Tempo's gogo jsonpb marshaler emits: camelCase names,
// 64-bit integers as strings, enums by name, ids inside OTLP traces in
// base64 (they are protobuf bytes) and hex in search results (strings).
package tempo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/traceql"
	"github.com/tracedx/tracedx/internal/version"
)

// Options configure the handler; the zero value works.
type Options struct {
	// Findings answers the finding.kind intrinsic. Nil: queries using it
	// get a 400 explaining that findings are not available.
	Findings traceql.FindingsLookup
	// FindingKinds lists the values offered for finding.kind in tag-value
	// lookups. Nil: analyze.Kinds().
	FindingKinds func() []string
	// MaxSearchLimit caps /api/search's limit (default 1000).
	MaxSearchLimit int
	// MaxTraceSpans cuts a trace by id to its first spans by start (0: no
	// cap): Tempo's trace format has no pages.
	MaxTraceSpans int
	// MaxScanTraces caps the traces one search or metrics query evaluates
	// (default 200,000); beyond it results are marked partial.
	MaxScanTraces int
	// TagValuesScanTraces is how many recent matching traces a tag-value
	// lookup filtered by q inspects (default 1,000).
	TagValuesScanTraces int
	// Version is reported by /api/status/buildinfo. Grafana's data source
	// no longer probes it, but keep it Tempo-like (default "2.9.0").
	Version string
	Logger  *slog.Logger
	// Sampled, when set, gives tracedx's tail-sampling decision about a
	// trace (""; none), shown in search results as the SampledAttr
	// attribute of each of its span sets.
	Sampled func(model.TraceID) string
	// Now is the clock (tests pin it).
	Now func() time.Time
	// QueryLimits bound the cost of a TraceQL query (zero: traceql.DefaultLimits).
	QueryLimits traceql.Limits
	// QueryTimeout is the time budget of one request; a query that runs
	// out of it is answered 422 (0: 30s).
	QueryTimeout time.Duration
}

func (o *Options) defaults() {
	if o.MaxSearchLimit <= 0 {
		o.MaxSearchLimit = 1000
	}
	if o.MaxScanTraces <= 0 {
		o.MaxScanTraces = 200_000
	}
	if o.TagValuesScanTraces <= 0 {
		o.TagValuesScanTraces = 1000
	}
	if o.Version == "" {
		o.Version = "2.9.0"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FindingKinds == nil {
		o.FindingKinds = analyze.Kinds
	}
	if o.QueryLimits == (traceql.Limits{}) {
		o.QueryLimits = traceql.DefaultLimits()
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 30 * time.Second
	}
}

type handler struct {
	st   store.Store
	opts Options
	mux  *http.ServeMux
}

// NewHandler returns Tempo's query API. Mount it at the root of the Tempo
// port (paths start with /api/).
func NewHandler(st store.Store, opts Options) http.Handler {
	opts.defaults()
	h := &handler{st: st, opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/echo", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("echo"))
	})
	h.mux.HandleFunc("GET /api/status/buildinfo", h.buildInfo)
	// Tempo's readiness probe; Grafana and load balancers check it.
	h.mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ready\n"))
	})
	h.mux.HandleFunc("GET /api/traces/{traceID}", h.traceV1)
	h.mux.HandleFunc("GET /api/v2/traces/{traceID}", h.traceV2)
	h.mux.HandleFunc("GET /api/search", h.search)
	h.mux.HandleFunc("GET /api/search/tags", h.tagsV1)
	h.mux.HandleFunc("GET /api/v2/search/tags", h.tagsV2)
	// Tag names may contain slashes, so these are matched by prefix.
	h.mux.HandleFunc("GET /api/search/tag/", h.tagValuesV1)
	h.mux.HandleFunc("GET /api/v2/search/tag/", h.tagValuesV2)
	h.mux.HandleFunc("GET /api/metrics/query_range", h.queryRange)
	h.mux.HandleFunc("GET /api/metrics/query", h.queryInstant)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), h.opts.QueryTimeout, errBudget)
	defer cancel()
	h.mux.ServeHTTP(w, r.WithContext(ctx))
}

// errBudget is the cause of a request running out of QueryTimeout.
var errBudget = errors.New("query time budget exhausted")

func (h *handler) parse(text string) (*traceql.Query, error) {
	return traceql.ParseLimited(text, h.opts.QueryLimits)
}

func (h *handler) buildInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{
		"version":   h.opts.Version,
		"revision":  version.Revision(),
		"branch":    "main",
		"buildUser": "tracedx",
		"buildDate": "",
		"goVersion": runtime.Version(),
	})
}

// badRequest marks client errors (answered 400 with the message, as
// Tempo does in plain text; Grafana shows it verbatim).
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	var se *traceql.SyntaxError
	var le *traceql.LimitError
	switch {
	case errors.As(err, &br), errors.As(err, &se):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.As(err, &le):
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
	case errors.Is(context.Cause(r.Context()), errBudget):
		http.Error(w, fmt.Sprintf("query too expensive: it ran out of its time budget of %s; narrow the time range or the query", h.opts.QueryTimeout),
			http.StatusUnprocessableEntity)
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "trace not found", http.StatusNotFound)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, "query timed out", http.StatusGatewayTimeout)
	case errors.Is(err, store.ErrOverloaded):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		h.opts.Logger.Error("tempo api", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error: "+err.Error(), http.StatusInternalServerError)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// FindingsFrom adapts a per-trace findings store (the server pipeline's
// TraceFindings) to traceql.FindingsLookup. Findings naming no span
// attach to the trace's root spans.
func FindingsFrom(src interface {
	TraceFindings(ctx context.Context, id model.TraceID) ([]analyze.Finding, bool, error)
}) traceql.FindingsLookup {
	return traceql.FindingsFunc(func(ctx context.Context, id model.TraceID) (map[model.SpanID][]string, error) {
		fs, ok, err := src.TraceFindings(ctx, id)
		if err != nil || !ok {
			return nil, err
		}
		out := map[model.SpanID][]string{}
		for _, f := range fs {
			if len(f.SpanIDs) == 0 {
				out[model.SpanID{}] = appendUnique(out[model.SpanID{}], f.Kind)
				continue
			}
			for _, s := range f.SpanIDs {
				id, err := model.ParseSpanID(s)
				if err != nil {
					continue
				}
				out[id] = appendUnique(out[id], f.Kind)
			}
		}
		return out, nil
	})
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

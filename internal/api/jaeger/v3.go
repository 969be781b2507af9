package jaeger

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/store"
)

// api_v3 is Jaeger's grpc-gateway JSON: protobuf JSON names (camelCase),
// int64 as strings, errors as {"error":{"httpCode","message"}}.

type v3Error struct {
	Error v3ErrorDetails `json:"error"`
}

type v3ErrorDetails struct {
	HTTPCode int    `json:"httpCode"`
	Message  string `json:"message"`
}

func (h *handler) v3Err(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status == http.StatusInternalServerError {
		h.opts.Logger.ErrorContext(r.Context(), "jaeger api_v3 request failed", "path", r.URL.Path, "err", err)
	}
	writeJSON(w, r, status, v3Error{Error: v3ErrorDetails{HTTPCode: status, Message: err.Error()}})
}

func (h *handler) v3NotFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusNotFound, v3Error{Error: v3ErrorDetails{HTTPCode: http.StatusNotFound, Message: "No traces found"}})
}

// v3Param reads the canonical camelCase name, then the snake_case alias.
func v3Param(q url.Values, canonical, alias string) (value, name string) {
	if v := q.Get(canonical); v != "" {
		return v, canonical
	}
	return q.Get(alias), alias
}

func v3Bad(name string, err error) error {
	return badRequest{fmt.Errorf("malformed parameter %s: %w", name, err)}
}

func (h *handler) v3Services(w http.ResponseWriter, r *http.Request) {
	svcs, err := h.st.Services(r.Context(), store.TimeRange{})
	if err != nil {
		h.v3Err(w, r, fmt.Errorf("listing services: %w", err))
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"services": svcs})
}

func (h *handler) v3Operations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kv, name := v3Param(q, "spanKind", "span_kind")
	out, err := h.listOperations(r.Context(), q.Get("service"), name, kv, model.SpanKind.String)
	if err != nil {
		h.v3Err(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"operations": out})
}

// parseV3TraceID accepts hex, and base64 as Jaeger's gateway does (the
// protobuf JSON form of bytes).
func parseV3TraceID(s string) (model.TraceID, error) {
	id, err := model.ParseTraceID(s)
	if err == nil {
		return id, nil
	}
	if len(s) <= 24 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, e := enc.DecodeString(s); e == nil && len(b) == 16 {
				copy(id[:], b)
				return id, nil
			}
		}
	}
	return id, v3Bad("trace_id", err)
}

func parseRFC3339(q url.Values, canonical, alias string) (uint64, error) {
	v, name := v3Param(q, canonical, alias)
	if v == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, v3Bad(name, fmt.Errorf("want RFC 3339 time such as 2026-01-02T15:04:05.999Z: %w", err))
	}
	if err := apiparam.CheckTime(t); err != nil {
		return 0, v3Bad(name, err)
	}
	return uint64(t.UnixNano()), nil
}

func (h *handler) v3GetTrace(w http.ResponseWriter, r *http.Request) {
	id, err := parseV3TraceID(r.PathValue("traceID"))
	if err != nil {
		h.v3Err(w, r, err)
		return
	}
	q := r.URL.Query()
	var hint store.TimeRange
	if hint.Start, err = parseRFC3339(q, "startTime", "start_time"); err != nil {
		h.v3Err(w, r, err)
		return
	}
	if hint.End, err = parseRFC3339(q, "endTime", "end_time"); err != nil {
		h.v3Err(w, r, err)
		return
	}
	// api_v3 answers OTLP, which has no place for a warning: a trace over
	// the cap is cut to its first spans by start (see Options.MaxTraceSpans).
	spans, _, err := store.TraceCapped(r.Context(), h.st, id, hint, h.opts.MaxTraceSpans)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(spans) == 0) {
		h.v3NotFound(w, r)
		return
	}
	if err != nil {
		h.v3Err(w, r, fmt.Errorf("reading trace %s: %w", id, err))
		return
	}
	h.markSampled(spans)
	h.writeOTLP(w, r, [][]model.Span{spans})
}

// writeOTLP writes {"result":<OTLP JSON TracesData>} of the traces' spans,
// grouped as otlpconv.TracesOf groups them, the JSON pdata writes for
// them appended straight from the spans into a pooled buffer.
func (h *handler) writeOTLP(w http.ResponseWriter, r *http.Request, traces [][]model.Span) {
	e := getV1Encoder()
	defer putV1Encoder(e)
	b := append(e.buf, `{"result":`...)
	b = otlpconv.AppendTracesJSON(b, traces)
	e.buf = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(e.buf)))
	_, _ = w.Write(e.buf)
}

func (h *handler) parseV3Query(q url.Values) (store.Query, error) {
	var sq store.Query
	sq.Service, _ = v3Param(q, "query.serviceName", "query.service_name")
	sq.Operation, _ = v3Param(q, "query.operationName", "query.operation_name")
	if q.Get("query.filter") != "" {
		return sq, v3Bad("query.filter", errors.New("expression filters are not supported; use query.attributes"))
	}
	if raw := q.Get("query.attributes"); raw != "" {
		var m map[string]string
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return sq, v3Bad("query.attributes", fmt.Errorf("want a JSON object of strings: %w", err))
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := applyTag(&sq, "query.attributes", k, m[k]); err != nil {
				return sq, err
			}
		}
	}
	var err error
	if sq.Range.Start, err = parseRFC3339(q, "query.startTimeMin", "query.start_time_min"); err != nil {
		return sq, err
	}
	if sq.Range.End, err = parseRFC3339(q, "query.startTimeMax", "query.start_time_max"); err != nil {
		return sq, err
	}
	if sq.Range.Start != 0 && sq.Range.End != 0 && sq.Range.Start >= sq.Range.End {
		return sq, badf("query.startTimeMin must be before query.startTimeMax")
	}
	for _, p := range [][2]string{{"query.durationMin", "query.duration_min"}, {"query.durationMax", "query.duration_max"}} {
		v, name := v3Param(q, p[0], p[1])
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return sq, v3Bad(name, fmt.Errorf("want a duration such as 100ms, got %q", v))
		}
		if p[0] == "query.durationMin" {
			sq.MinDuration = uint64(d)
		} else {
			sq.MaxDuration = uint64(d)
		}
	}
	if sq.MinDuration != 0 && sq.MaxDuration != 0 && sq.MaxDuration < sq.MinDuration {
		return sq, badf("query.durationMax must not be less than query.durationMin")
	}
	n, name := v3Param(q, "query.searchDepth", "query.search_depth")
	if n == "" {
		n, name = q.Get("query.num_traces"), "query.num_traces"
	}
	if sq.Limit, err = parseLimit(n, h.opts.DefaultSearchLimit, h.opts.MaxSearchLimit); err != nil {
		return sq, v3Bad(name, err)
	}
	return sq, nil
}

func (h *handler) v3FindTraces(w http.ResponseWriter, r *http.Request) {
	sq, err := h.parseV3Query(r.URL.Query())
	if err != nil {
		h.v3Err(w, r, err)
		return
	}
	found, err := searchWholeTraces(r.Context(), h.st, sq)
	if err != nil {
		h.v3Err(w, r, fmt.Errorf("searching traces: %w", err))
		return
	}
	// searchWholeTraces leaves out empty traces: none found is none at all.
	// The traces go to the conversion as they are, not appended into one
	// slice first (BenchmarkV3Encode).
	if len(found) == 0 {
		h.v3NotFound(w, r)
		return
	}
	for _, spans := range found {
		h.markSampled(spans)
	}
	h.writeOTLP(w, r, found)
}

// TraceSummary is an api_v3 trace summary (protobuf JSON: int64 times as
// decimal strings).
type TraceSummary struct {
	TraceID              string           `json:"traceId"`
	RootServiceName      string           `json:"rootServiceName,omitempty"`
	RootOperationName    string           `json:"rootOperationName,omitempty"`
	MinStartTimeUnixNano string           `json:"minStartTimeUnixNano"`
	MaxEndTimeUnixNano   string           `json:"maxEndTimeUnixNano"`
	SpanCount            int              `json:"spanCount"`
	ErrorSpanCount       int              `json:"errorSpanCount"`
	Services             []ServiceSummary `json:"services"`
	// Sampled is tracedx's tail-sampling decision (not in Jaeger's proto).
	Sampled string `json:"sampled,omitempty"`
}

// ServiceSummary counts one service's spans in a trace.
type ServiceSummary struct {
	Name           string `json:"name"`
	SpanCount      int    `json:"spanCount"`
	ErrorSpanCount int    `json:"errorSpanCount"`
}

func (h *handler) v3TraceSummaries(w http.ResponseWriter, r *http.Request) {
	sq, err := h.parseV3Query(r.URL.Query())
	if err != nil {
		h.v3Err(w, r, err)
		return
	}
	sums, err := h.st.Search(r.Context(), sq)
	if err != nil {
		h.v3Err(w, r, fmt.Errorf("searching traces: %w", err))
		return
	}
	out := make([]TraceSummary, 0, len(sums))
	for i := range sums {
		s := &sums[i]
		ts := TraceSummary{
			TraceID:              s.TraceID.String(),
			RootServiceName:      s.RootService,
			RootOperationName:    s.RootName,
			MinStartTimeUnixNano: strconv.FormatUint(s.StartUnixNano, 10),
			MaxEndTimeUnixNano:   strconv.FormatUint(s.EndUnixNano, 10),
			SpanCount:            s.SpanCount,
			ErrorSpanCount:       s.ErrorCount,
			Services:             make([]ServiceSummary, 0, len(s.Services)),
		}
		for _, sv := range s.Services {
			ts.Services = append(ts.Services, ServiceSummary{Name: sv.Name, SpanCount: sv.SpanCount, ErrorSpanCount: sv.ErrorCount})
		}
		if h.opts.Sampled != nil {
			ts.Sampled = h.opts.Sampled(s.TraceID)
		}
		out = append(out, ts)
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"summaries": out})
}

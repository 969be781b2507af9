package jaeger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Operation is an entry of /api/operations.
type Operation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

func (h *handler) services(w http.ResponseWriter, r *http.Request) {
	svcs, err := h.st.Services(r.Context(), store.TimeRange{})
	if err != nil {
		h.writeErr(w, r, fmt.Errorf("listing services: %w", err))
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	h.writeData(w, r, svcs, len(svcs), nil)
}

func (h *handler) serviceOperations(w http.ResponseWriter, r *http.Request) {
	ops, err := h.st.Operations(r.Context(), r.PathValue("service"), store.TimeRange{})
	if err != nil {
		h.writeErr(w, r, fmt.Errorf("listing operations: %w", err))
		return
	}
	// This older endpoint lists names only; one name may exist with
	// several kinds.
	seen := map[string]bool{}
	names := []string{}
	for _, op := range ops {
		if !seen[op.Name] {
			seen[op.Name] = true
			names = append(names, op.Name)
		}
	}
	sort.Strings(names)
	h.writeData(w, r, names, len(names), nil)
}

// v1KindName is the spanKind string of the v1 API: Jaeger has no value for
// OTLP's UNSPECIFIED and reports it as "".
func v1KindName(k model.SpanKind) string {
	if k == model.KindUnspecified {
		return ""
	}
	return k.String()
}

func parseKindFilter(name, v string) (kind model.SpanKind, set bool, err error) {
	if v == "" {
		return 0, false, nil
	}
	k, ok := model.ParseSpanKind(v)
	if !ok {
		return 0, false, badParam(name, fmt.Errorf("unsupported span kind %q (want server, client, producer, consumer, internal or unspecified)", v))
	}
	return k, true, nil
}

func (h *handler) operations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out, err := h.listOperations(r.Context(), q.Get("service"), "spanKind", q.Get("spanKind"), v1KindName)
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	h.writeData(w, r, out, len(out), nil)
}

// listOperations answers the operations endpoints of v1 and api_v3, which
// differ in the kind parameter's name and in how they spell kinds.
func (h *handler) listOperations(ctx context.Context, service, kindParam, kindValue string, kindName func(model.SpanKind) string) ([]Operation, error) {
	kind, filter, err := parseKindFilter(kindParam, kindValue)
	if err != nil {
		return nil, err
	}
	ops, err := h.st.Operations(ctx, service, store.TimeRange{})
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	out := make([]Operation, 0, len(ops))
	for _, op := range ops {
		if !filter || op.Kind == kind {
			out = append(out, Operation{Name: op.Name, SpanKind: kindName(op.Kind)})
		}
	}
	return out, nil
}

func (h *handler) getTrace(w http.ResponseWriter, r *http.Request) {
	id, err := parseTraceIDParam(r.PathValue("traceID"))
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	q := r.URL.Query()
	var hint store.TimeRange
	if hint.Start, err = parseMicros(q, "start"); err != nil {
		h.writeErr(w, r, err)
		return
	}
	if hint.End, err = parseMicros(q, "end"); err != nil {
		h.writeErr(w, r, err)
		return
	}
	spans, total, err := store.TraceCapped(r.Context(), h.st, id, hint, h.opts.MaxTraceSpans)
	if err == nil && len(spans) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			// Jaeger's exact message; clients match on the 404 code.
			h.writeErr(w, r, store.ErrNotFound)
			return
		}
		h.writeErr(w, r, fmt.Errorf("reading trace %s: %w", id, err))
		return
	}
	h.markSampled(spans)
	tr := v1Trace{spans: spans}
	if total > len(spans) {
		tr.warnings = append(tr.warnings, cutWarning(len(spans), total))
	}
	h.writeTraces(w, r, []v1Trace{tr}, 0, nil)
}

// cutWarning says a trace was cut at the API's span cap.
func cutWarning(kept, total int) string {
	return fmt.Sprintf("trace cut to its first %d of %d spans by start (query.max_api_trace_spans); "+
		"tracedx's /api/v1/traces/{id} pages through all of them", kept, total)
}

// parseMicros reads a unix-microseconds parameter as unix nanoseconds.
func parseMicros(q url.Values, name string) (uint64, error) {
	v := q.Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > apiparam.MaxUnixMicros {
		return 0, badParam(name, fmt.Errorf("want unix microseconds between 0 and %d, got %q", apiparam.MaxUnixMicros, v))
	}
	return uint64(n) * 1000, nil
}

// parseLookback reads the UI's lookback ("1h", "2d", "1w"; "custom" and ""
// mean none). Lookbacks beyond what int64 nanoseconds hold mean "since
// the epoch".
func parseLookback(v string) (time.Duration, error) {
	if v == "" || v == "custom" {
		return 0, nil
	}
	unit := time.Duration(0)
	switch {
	case strings.HasSuffix(v, "d"):
		unit = 24 * time.Hour
	case strings.HasSuffix(v, "w"):
		unit = 7 * 24 * time.Hour
	}
	if unit != 0 {
		n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
		if errors.Is(err, strconv.ErrRange) || (err == nil && n > uint64(math.MaxInt64/unit)) {
			return math.MaxInt64, nil
		}
		if err == nil && n > 0 {
			return time.Duration(n) * unit, nil
		}
	} else if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, nil
	}
	return 0, badParam("lookback", fmt.Errorf("want a duration such as 1h, 2d or 1w, got %q", v))
}

// searchRequest is a parsed /api/traces request.
type searchRequest struct {
	q        store.Query
	traceIDs []model.TraceID
}

func (h *handler) parseSearch(r *http.Request) (searchRequest, error) {
	var sr searchRequest
	q := r.URL.Query()
	for _, s := range q["traceID"] {
		// The UI's "compare" view sends ids comma-separated too.
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			id, err := model.ParseTraceID(part)
			if err != nil {
				return sr, badParam("traceID", err)
			}
			sr.traceIDs = append(sr.traceIDs, id)
		}
	}
	if len(sr.traceIDs) > h.opts.MaxSearchLimit {
		return sr, badParam("traceID", fmt.Errorf("%d trace ids, at most %d per request", len(sr.traceIDs), h.opts.MaxSearchLimit))
	}
	sq := &sr.q
	sq.Service = q.Get("service")
	sq.Operation = q.Get("operation")
	var err error
	if sq.Range.Start, err = parseMicros(q, "start"); err != nil {
		return sr, err
	}
	if sq.Range.End, err = parseMicros(q, "end"); err != nil {
		return sr, err
	}
	if sq.Range.End != 0 && sq.Range.Start > sq.Range.End {
		return sr, badf("start (%d) must not be after end (%d)", sq.Range.Start/1000, sq.Range.End/1000)
	}
	if sq.Range.Start == 0 {
		// start wins over lookback (the UI sends both), so lookback is
		// only checked when used.
		lb, err := parseLookback(q.Get("lookback"))
		if err != nil {
			return sr, err
		}
		if lb > 0 {
			end := sq.Range.End
			if end == 0 {
				end = uint64(h.opts.Now().UnixNano())
			}
			if uint64(lb) < end {
				sq.Range.Start = end - uint64(lb)
			}
		}
	}
	// The range end is inclusive in Jaeger (µs precision); ours is
	// half-open in ns.
	if sq.Range.End != 0 {
		sq.Range.End += 1000
	}
	for _, name := range []string{"minDuration", "maxDuration"} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return sr, badParam(name, fmt.Errorf("want a duration such as 100ms or 1.5s, got %q", v))
		}
		if name == "minDuration" {
			sq.MinDuration = uint64(d)
		} else {
			sq.MaxDuration = uint64(d)
		}
	}
	if sq.MinDuration != 0 && sq.MaxDuration != 0 && sq.MaxDuration < sq.MinDuration {
		return sr, badf("maxDuration must be greater than minDuration")
	}
	if sq.Limit, err = parseLimit(q.Get("limit"), h.opts.DefaultSearchLimit, h.opts.MaxSearchLimit); err != nil {
		return sr, badParam("limit", err)
	}
	tags := map[string]string{}
	var tagOrder []string
	addTag := func(k, v string) {
		if _, dup := tags[k]; !dup {
			tagOrder = append(tagOrder, k)
		}
		tags[k] = v
	}
	for _, raw := range q["tags"] {
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return sr, badParam("tags", fmt.Errorf("want a JSON object such as {\"http.status_code\":\"500\"}: %w", err))
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := m[k].(type) {
			case string:
				addTag(k, v)
			case bool, float64:
				addTag(k, fmt.Sprint(v))
			default:
				return sr, badParam("tags", fmt.Errorf("value of %q must be a string, number or bool", k))
			}
		}
	}
	for _, raw := range q["tag"] {
		k, v, ok := strings.Cut(raw, ":")
		if !ok || k == "" {
			return sr, badParam("tag", fmt.Errorf("want key:value, got %q", raw))
		}
		addTag(k, v)
	}
	for _, k := range tagOrder {
		if err := applyTag(sq, "tags", k, tags[k]); err != nil {
			return sr, err
		}
	}
	return sr, nil
}

// applyTag turns one Jaeger tag filter into a query condition. The tags
// that tracedx derives from OTLP fields (error, span.kind,
// otel.status_code) filter on those fields, so a search the UI offers for
// a tag it displays finds the span.
func applyTag(q *store.Query, param, k, v string) error {
	switch k {
	case "error":
		if b, err := strconv.ParseBool(v); err == nil && b {
			st := model.StatusError
			q.Status = &st
			return nil
		}
	case "otel.status_code":
		var st model.StatusCode
		switch strings.ToUpper(v) {
		case "ERROR":
			st = model.StatusError
		case "OK":
			st = model.StatusOK
		case "UNSET":
			st = model.StatusUnset
		default:
			return badParam(param, fmt.Errorf("otel.status_code must be OK, ERROR or UNSET, got %q", v))
		}
		q.Status = &st
		return nil
	case "span.kind":
		kind, ok := model.ParseSpanKind(v)
		if !ok {
			return badParam(param, fmt.Errorf("unsupported span.kind %q", v))
		}
		q.Kinds = append(q.Kinds, kind)
		return nil
	}
	q.Attrs = append(q.Attrs, store.AttrFilter{Scope: store.ScopeAny, Key: k, Op: store.OpEq, Value: model.Str(v)})
	return nil
}

func (h *handler) searchTraces(w http.ResponseWriter, r *http.Request) {
	sr, err := h.parseSearch(r)
	if err != nil {
		h.writeErr(w, r, err)
		return
	}
	ctx := r.Context()
	traces := []v1Trace{}
	if len(sr.traceIDs) > 0 {
		// Fetch by id: missing traces are reported per id in errors, the
		// others returned (Jaeger's behaviour for the compare view).
		var errs []apiError
		for _, id := range sr.traceIDs {
			spans, err := h.st.Trace(ctx, id, store.TimeRange{})
			if errors.Is(err, store.ErrNotFound) || (err == nil && len(spans) == 0) {
				errs = append(errs, apiError{Msg: store.ErrNotFound.Error(), TraceID: jaegerTraceID(id)})
				continue
			}
			if err != nil {
				h.writeErr(w, r, fmt.Errorf("reading trace %s: %w", id, err))
				return
			}
			h.markSampled(spans)
			traces = append(traces, v1Trace{spans: spans})
		}
		h.writeTraces(w, r, traces, len(traces), errs)
		return
	}
	// Each group of the traces found is encoded on the goroutine that read
	// it (searchInGroups), into an encoder of its own.
	var encs []*v1Encoder
	var counts []int
	defer func() {
		for _, e := range encs {
			if e != nil {
				putV1Encoder(e)
			}
		}
	}()
	err = searchInGroups(ctx, h.st, sr.q, func(n int) { encs, counts = make([]*v1Encoder, n), make([]int, n) },
		func(g int, found [][]model.Span) error {
			e := getV1Encoder()
			encs[g], counts[g] = e, len(found)
			for i, spans := range found {
				h.markSampled(spans)
				if i > 0 {
					e.buf = append(e.buf, ',')
				}
				e.appendTrace(spans, nil)
			}
			return nil
		})
	if err != nil {
		h.writeErr(w, r, fmt.Errorf("searching traces: %w", err))
		return
	}
	out := getV1Encoder()
	defer putV1Encoder(out)
	out.buf = append(out.buf, `{"data":[`...)
	total := 0
	for g, e := range encs {
		if counts[g] == 0 {
			continue
		}
		if total > 0 {
			out.buf = append(out.buf, ',')
		}
		out.buf = append(out.buf, e.buf...)
		total += counts[g]
	}
	out.closeEnvelope(total, nil)
	writeV1Body(w, r, out.buf)
}

package v1

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

func parseID(s string) (model.TraceID, error) {
	id, err := model.ParseTraceID(s)
	if err != nil {
		return id, clientError{err}
	}
	if id.IsZero() {
		return id, badf("trace id %q is all zeros, which is not a valid trace id", s)
	}
	return id, nil
}

// traceParams reads the trace id and the optional start/end hint.
func (a *api) traceParams(r *http.Request) (model.TraceID, store.TimeRange, error) {
	id, err := parseID(r.PathValue("id"))
	if err != nil {
		return id, store.TimeRange{}, err
	}
	hint, err := a.parseRange(r.URL.Query())
	return id, hint, err
}

// loadTrace reads a trace with the optional start/end hint.
func (a *api) loadTrace(r *http.Request) ([]model.Span, model.TraceID, error) {
	id, hint, err := a.traceParams(r)
	if err != nil {
		return nil, id, err
	}
	spans, err := a.d.Store.Trace(r.Context(), id, hint)
	if err == nil && len(spans) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, id, fmt.Errorf("trace %s: %w", id, err)
	}
	return spans, id, nil
}

func (a *api) trace(w http.ResponseWriter, r *http.Request) {
	r, cancel := a.queryContext(r)
	defer cancel()
	offset, limit, err := a.pageParams(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, id, err := a.loadPage(r, offset, limit)
	if err != nil {
		a.fail(w, r, timeoutError(r.Context(), err))
		return
	}
	writeJSON(w, http.StatusOK, pageJSON(id, page, offset, limit, r.URL))
}

// loadPage reads one page of a trace: from the store alone when it can,
// else cut out of the whole trace.
func (a *api) loadPage(r *http.Request, offset, limit int) (store.TracePage, model.TraceID, error) {
	pager, ok := a.d.Store.(store.TracePager)
	if !ok {
		spans, id, err := a.loadTrace(r)
		if err != nil {
			return store.TracePage{}, id, err
		}
		return pageOf(spans, offset, limit), id, nil
	}
	id, hint, err := a.traceParams(r)
	if err != nil {
		return store.TracePage{}, id, err
	}
	page, err := pager.TracePage(r.Context(), id, hint, offset, limit)
	if err != nil {
		return page, id, fmt.Errorf("trace %s: %w", id, err)
	}
	return page, id, nil
}

func (a *api) analysis(w http.ResponseWriter, r *http.Request) {
	r, cancel := a.queryContext(r)
	defer cancel()
	if err := a.checkAnalysisSize(r); err != nil {
		a.fail(w, r, timeoutError(r.Context(), err))
		return
	}
	spans, id, err := a.loadTrace(r)
	if err != nil {
		a.fail(w, r, timeoutError(r.Context(), err))
		return
	}
	if len(spans) > a.d.MaxAnalysisSpans {
		a.fail(w, r, a.tooLargeForAnalysis(id, len(spans)))
		return
	}
	var stored []analyze.Finding
	var have bool
	if a.d.Findings != nil {
		stored, have, err = a.d.Findings.TraceFindings(r.Context(), id)
		if err != nil {
			a.fail(w, r, fmt.Errorf("reading stored findings of %s: %w", id, err))
			return
		}
	}
	out, err := runAnalysis(r.Context(), func() analysisJSON { return a.judge(spans, stored, have) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	capAnalysis(&out)
	writeJSON(w, http.StatusOK, out)
}

// judge is the analysis of a trace: its stored findings explained (and
// compared with today's verdict) when there are any, else computed now.
func (a *api) judge(spans []model.Span, stored []analyze.Finding, have bool) analysisJSON {
	out := analysisJSON{Source: "computed", Rejudged: []rejudgedJSON{}}
	if have {
		out.Source = "stored"
		out.Result = a.d.Explain(spans, stored)
		if a.rejudge {
			out.Rejudged = rejudge(stored, a.d.Analyzer(spans).Findings)
		}
		if n := len(out.Rejudged); n > 0 {
			out.Note = fmt.Sprintf("%d finding(s) would be judged differently against today's baselines (see rejudged); "+
				"the findings shown are the ones stored when the trace was analysed", n)
		}
	} else {
		out.Result = a.d.Analyzer(spans)
	}
	if out.Findings == nil {
		out.Findings = []analyze.Finding{}
	}
	if out.CriticalPath == nil {
		out.CriticalPath = []analyze.PathStep{}
	}
	if out.Why == nil {
		out.Why = []string{}
	}
	return out
}

// checkAnalysisSize refuses a trace too large to analyse before reading
// it, when the store can count its spans: reading a 200k-span trace only
// to refuse it took seconds and hundreds of MB.
func (a *api) checkAnalysisSize(r *http.Request) error {
	sc, ok := a.d.Store.(store.SpanCounter)
	if !ok {
		return nil
	}
	id, hint, err := a.traceParams(r)
	if err != nil {
		return err
	}
	n, err := sc.TraceSpanCount(r.Context(), id, hint)
	if err != nil {
		return err
	}
	if n > a.d.MaxAnalysisSpans {
		return a.tooLargeForAnalysis(id, n)
	}
	return nil
}

func (a *api) tooLargeForAnalysis(id model.TraceID, n int) error {
	return errTooLarge{fmt.Sprintf("trace %s has %d spans, more than the %d an analysis on request may take (query.max_analysis_spans); "+
		"its findings from the background analysis are at /api/v1/findings?trace_id=%s", id, n, a.d.MaxAnalysisSpans, id)}
}

// rejudge lists where today's analysis of a trace disagrees with its stored
// findings: another severity, a stored finding it would not report, or one
// it would add. Findings of kinds the per-trace detectors never produce
// (cross-trace ones) are not compared.
func rejudge(stored, now []analyze.Finding) []rejudgedJSON {
	perTrace := map[string]bool{}
	for _, k := range analyze.Kinds() {
		perTrace[k] = true
	}
	key := func(f *analyze.Finding) string { return f.Kind + "\x00" + strings.Join(f.SpanIDs, ",") }
	byKey := make(map[string]*analyze.Finding, len(now))
	for i := range now {
		byKey[key(&now[i])] = &now[i]
	}
	out := []rejudgedJSON{}
	seen := map[string]bool{}
	for i := range stored {
		f := &stored[i]
		k := key(f)
		seen[k] = true
		if !perTrace[f.Kind] {
			continue
		}
		switch n := byKey[k]; {
		case n == nil:
			out = append(out, rejudgedJSON{Kind: f.Kind, SpanIDs: nonNil(f.SpanIDs), StoredSeverity: string(f.Severity), NowSeverity: "none"})
		case n.Severity != f.Severity:
			out = append(out, rejudgedJSON{Kind: f.Kind, SpanIDs: nonNil(f.SpanIDs), StoredSeverity: string(f.Severity),
				NowSeverity: string(n.Severity), NowTitle: n.Title})
		}
	}
	for i := range now {
		if f := &now[i]; !seen[key(f)] {
			out = append(out, rejudgedJSON{Kind: f.Kind, SpanIDs: nonNil(f.SpanIDs), StoredSeverity: "none",
				NowSeverity: string(f.Severity), NowTitle: f.Title})
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// parseTime accepts RFC 3339, unix milliseconds, or a Go duration meaning
// "that long ago" (start=1h).
func (a *api) parseTime(name, v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > apiparam.MaxUnixMillis {
			return 0, badf("%s: want unix milliseconds between 0 and %d, got %d", name, apiparam.MaxUnixMillis, n)
		}
		return uint64(n) * uint64(time.Millisecond), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if err := apiparam.CheckTime(t); err != nil {
			return 0, badf("%s: %v", name, err)
		}
		return uint64(t.UnixNano()), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		// A duration reaching before 1970 means "from the beginning".
		return uint64(max(a.d.Now().Add(-d).UnixNano(), 0)), nil
	}
	return 0, badf("%s: want RFC 3339 (2026-01-02T15:04:05Z), unix milliseconds, or a duration ago (1h), got %q", name, v)
}

func (a *api) parseRange(q url.Values) (store.TimeRange, error) {
	var r store.TimeRange
	var err error
	if r.Start, err = a.parseTime("start", q.Get("start")); err != nil {
		return r, err
	}
	if r.End, err = a.parseTime("end", q.Get("end")); err != nil {
		return r, err
	}
	if r.End != 0 && r.Start >= r.End {
		return r, badf("start must be before end")
	}
	return r, nil
}

// maxAttributeValues caps the limit of /api/v1/attributes/{key}/values.
const maxAttributeValues = 10_000

// parseLimit reads a positive count; values beyond limitMax, however many
// digits they have, are capped.
func parseLimit(v string, def, limitMax int) (int, error) {
	if v == "" {
		return min(def, limitMax), nil
	}
	n, err := apiparam.Count(v, limitMax)
	if err != nil || n == 0 {
		return 0, badf("limit: want a positive integer, got %q", v)
	}
	return n, nil
}

// parseDuration accepts Go durations (250ms, 1.5s) or a bare number of
// milliseconds.
func parseDuration(name, v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > float64(apiparam.MaxUnixMillis) || math.IsNaN(f) {
			return 0, badf("%s: want milliseconds between 0 and %d, got %q", name, apiparam.MaxUnixMillis, v)
		}
		return uint64(f * 1e6), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badf("%s: want a duration such as 250ms or 1.5s (or milliseconds), got %q", name, v)
	}
	return uint64(d), nil
}

// attrOps in match order: two-character operators first.
var attrOps = []struct {
	text string
	op   store.Op
}{
	{">=", store.OpGte}, {"<=", store.OpLte}, {"!=", store.OpNeq}, {"=~", store.OpRegex}, {"!~", store.OpNotRegex},
	{"=", store.OpEq}, {">", store.OpGt}, {"<", store.OpLt},
}

// ParseAttrFilter parses "key<op>value" (op: = != > >= < <= =~ !~) or a
// bare "key" (attribute present). A "resource." prefix selects resource
// attributes, "span." span attributes; otherwise span then resource.
// Numeric values compare numerically; quote a value to force text.
func ParseAttrFilter(s string) (store.AttrFilter, error) {
	var f store.AttrFilter
	cut := strings.IndexAny(s, "=!<>")
	key, rest := s, ""
	if cut >= 0 {
		key, rest = s[:cut], s[cut:]
	}
	key = strings.TrimSpace(key)
	switch {
	case strings.HasPrefix(key, "resource."):
		f.Scope, key = store.ScopeResource, strings.TrimPrefix(key, "resource.")
	case strings.HasPrefix(key, "span."):
		f.Scope, key = store.ScopeSpan, strings.TrimPrefix(key, "span.")
	}
	if key == "" {
		return f, badf("attr %q: missing attribute name before the operator", s)
	}
	f.Key = key
	if cut < 0 {
		f.Op = store.OpExists
		return f, nil
	}
	found := false
	for _, o := range attrOps {
		if strings.HasPrefix(rest, o.text) {
			f.Op, rest, found = o.op, rest[len(o.text):], true
			break
		}
	}
	if !found {
		return f, badf("attr %q: unknown operator; use = != > >= < <= =~ !~", s)
	}
	f.Value = literal(strings.TrimSpace(rest))
	if f.Op == store.OpRegex || f.Op == store.OpNotRegex {
		f.Value = model.Str(f.Value.AsString())
		if _, err := compileCheck(f.Value.Str); err != nil {
			return f, badf("attr %q: bad regular expression: %v", s, err)
		}
	}
	if (f.Op == store.OpGt || f.Op == store.OpGte || f.Op == store.OpLt || f.Op == store.OpLte) && f.Value.Type == model.TypeString && f.Value.Str == "" {
		return f, badf("attr %q: missing value after the operator", s)
	}
	return f, nil
}

// literal types a filter value: integers and floats become numbers (so
// they compare numerically with int attributes), quoted text stays text.
func literal(v string) model.Value {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		if u, err := strconv.Unquote(v); err == nil {
			return model.Str(u)
		}
	}
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return model.Int(i)
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return model.Float(f)
	}
	return model.Str(v)
}

// ParseSearch turns /api/v1/search parameters into a store query.
func (a *api) ParseSearch(q url.Values) (store.Query, error) {
	var sq store.Query
	var err error
	if sq.Range, err = a.parseRange(q); err != nil {
		return sq, err
	}
	sq.Service = q.Get("service")
	sq.Operation = q.Get("operation")
	for _, v := range q["kind"] {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			k, ok := model.ParseSpanKind(part)
			if !ok {
				return sq, badf("kind: unknown span kind %q; use server, client, producer, consumer, internal or unspecified", part)
			}
			sq.Kinds = append(sq.Kinds, k)
		}
	}
	if v := q.Get("status"); v != "" {
		var st model.StatusCode
		switch strings.ToLower(v) {
		case "error":
			st = model.StatusError
		case "ok":
			st = model.StatusOK
		case "unset":
			st = model.StatusUnset
		default:
			return sq, badf("status: want ok, error or unset, got %q", v)
		}
		sq.Status = &st
	}
	if sq.MinDuration, err = parseDuration("minDuration", q.Get("minDuration")); err != nil {
		return sq, err
	}
	if sq.MaxDuration, err = parseDuration("maxDuration", q.Get("maxDuration")); err != nil {
		return sq, err
	}
	if sq.MaxDuration != 0 && sq.MaxDuration < sq.MinDuration {
		return sq, badf("maxDuration must not be less than minDuration")
	}
	if sq.MinTraceDuration, err = parseDuration("minTraceDuration", q.Get("minTraceDuration")); err != nil {
		return sq, err
	}
	if sq.MaxTraceDuration, err = parseDuration("maxTraceDuration", q.Get("maxTraceDuration")); err != nil {
		return sq, err
	}
	for _, v := range q["attr"] {
		f, err := ParseAttrFilter(v)
		if err != nil {
			return sq, err
		}
		sq.Attrs = append(sq.Attrs, f)
	}
	for _, v := range q["trace_id"] {
		for _, part := range strings.Split(v, ",") {
			id, err := model.ParseTraceID(strings.TrimSpace(part))
			if err != nil {
				return sq, badf("trace_id: %v", err)
			}
			sq.TraceIDs = append(sq.TraceIDs, id)
		}
	}
	sq.Limit, err = parseLimit(q.Get("limit"), 20, a.d.MaxSearchLimit)
	return sq, err
}

// SearchResponse is the body of GET /api/v1/search.
type SearchResponse struct {
	Traces []SummaryJSON `json:"traces"`
	Count  int           `json:"count"`
	Limit  int           `json:"limit"`
}

func (a *api) search(w http.ResponseWriter, r *http.Request) {
	sq, err := a.ParseSearch(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sums, gone, err := a.searchAll(r.Context(), sq)
	if err != nil {
		a.fail(w, r, fmt.Errorf("searching: %w", err))
		return
	}
	resp := SearchResponse{Traces: make([]SummaryJSON, len(sums)), Count: len(sums), Limit: sq.Limit}
	for i := range sums {
		resp.Traces[i] = summaryJSON(&sums[i])
		a.markSummary(&resp.Traces[i], gone, sums[i].TraceID)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *api) services(w http.ResponseWriter, r *http.Request) {
	rng, err := a.parseRange(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	svcs, err := a.d.Store.Services(r.Context(), rng)
	if err != nil {
		a.fail(w, r, fmt.Errorf("listing services: %w", err))
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": svcs})
}

// OperationJSON is a span name with its kind.
type OperationJSON struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

func (a *api) operations(w http.ResponseWriter, r *http.Request) {
	rng, err := a.parseRange(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	svc := r.PathValue("service")
	ops, err := a.d.Store.Operations(r.Context(), svc, rng)
	if err != nil {
		a.fail(w, r, fmt.Errorf("listing operations: %w", err))
		return
	}
	out := make([]OperationJSON, len(ops))
	for i, op := range ops {
		out[i] = OperationJSON{Name: op.Name, Kind: op.Kind.String()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"service": svc, "operations": out})
}

func parseScope(v string) (store.Scope, string, error) {
	switch strings.ToLower(v) {
	case "", "any":
		return store.ScopeAny, "any", nil
	case "span":
		return store.ScopeSpan, "span", nil
	case "resource":
		return store.ScopeResource, "resource", nil
	}
	return 0, "", badf("scope: want span, resource or any, got %q", v)
}

func (a *api) attributes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	scope, name, err := parseScope(q.Get("scope"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rng, err := a.parseRange(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	keys, err := a.d.Store.AttributeNames(r.Context(), scope, rng)
	if err != nil {
		a.fail(w, r, fmt.Errorf("listing attribute names: %w", err))
		return
	}
	if keys == nil {
		keys = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"scope": name, "attributes": keys})
}

func (a *api) attributeValues(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := r.PathValue("key")
	scope, name, err := parseScope(q.Get("scope"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// The same prefixes as search filters work here.
	if scope == store.ScopeAny {
		switch {
		case strings.HasPrefix(key, "resource."):
			scope, name, key = store.ScopeResource, "resource", strings.TrimPrefix(key, "resource.")
		case strings.HasPrefix(key, "span."):
			scope, name, key = store.ScopeSpan, "span", strings.TrimPrefix(key, "span.")
		}
	}
	rng, err := a.parseRange(q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := parseLimit(q.Get("limit"), 100, maxAttributeValues)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	vals, err := a.d.Store.AttributeValues(r.Context(), scope, key, rng, limit)
	if err != nil {
		a.fail(w, r, fmt.Errorf("listing values of %s: %w", key, err))
		return
	}
	out := make([]ValueJSON, len(vals))
	for i, v := range vals {
		out[i] = valueJSON(v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "scope": name, "values": out})
}

// compileCheck validates a filter regex the way the store applies it
// (anchored, RE2), so a bad pattern is a 400 rather than an empty result.
func compileCheck(p string) (*regexp.Regexp, error) { return regexp.Compile("^(?:" + p + ")$") }

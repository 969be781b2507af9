package tempo

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/traceql"
)

func (h *handler) tagRange(r *http.Request) (store.TimeRange, error) {
	q := r.URL.Query()
	start, err := parseUnixSeconds(q.Get("start"), "start")
	if err != nil {
		return store.TimeRange{}, err
	}
	end, err := parseUnixSeconds(q.Get("end"), "end")
	if err != nil {
		return store.TimeRange{}, err
	}
	if start != 0 && end != 0 && end <= start {
		return store.TimeRange{}, badRequest{fmt.Sprintf("http parameter start must be before end. received start=%s end=%s", q.Get("start"), q.Get("end"))}
	}
	if end != 0 {
		end += 1e9
	}
	return store.TimeRange{Start: start, End: end}, nil
}

func tagLimit(r *http.Request, def int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := apiparam.Count(s, maxTagLimit)
	if err != nil {
		return 0, badRequest{fmt.Sprintf("invalid limit: %q must be a non-negative integer", s)}
	}
	if n == 0 {
		return def, nil
	}
	return n, nil
}

// maxTagLimit caps the limit of tag-name and tag-value lookups.
const maxTagLimit = 10_000

// tagsV1 answers /api/search/tags: {"tagNames": [...]} (span and resource
// attribute names together, as Tempo's v1 endpoint does).
func (h *handler) tagsV1(w http.ResponseWriter, r *http.Request) {
	scopes, err := h.requestScopeTags(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	set := map[string]bool{}
	for _, s := range scopes {
		if s.Name == "intrinsic" {
			continue
		}
		for _, t := range s.Tags {
			set[t] = true
		}
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	writeJSON(w, http.StatusOK, map[string]any{"tagNames": names, "metrics": map[string]any{}})
}

// requestScopeTags answers the tag-name lookups for the request's range
// and scope parameters.
func (h *handler) requestScopeTags(r *http.Request) ([]scopeTags, error) {
	rng, err := h.tagRange(r)
	if err != nil {
		return nil, err
	}
	return h.scopeTags(r, rng, r.URL.Query().Get("scope"))
}

type scopeTags struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// tagsV2 answers /api/v2/search/tags?scope=: {"scopes":[{name,tags}]}.
func (h *handler) tagsV2(w http.ResponseWriter, r *http.Request) {
	scopes, err := h.requestScopeTags(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"scopes": scopes, "metrics": map[string]any{}})
}

func (h *handler) scopeTags(r *http.Request, rng store.TimeRange, scope string) ([]scopeTags, error) {
	limit, err := tagLimit(r, 0)
	if err != nil {
		return nil, err
	}
	var want []string
	switch scope {
	case "", "none", "all":
		want = []string{"resource", "span", "intrinsic"}
	case "resource", "span", "intrinsic":
		want = []string{scope}
	case "event", "link", "instrumentation":
		// Valid Tempo scopes that tracedx does not index.
		return []scopeTags{{Name: scope, Tags: []string{}}}, nil
	default:
		return nil, badRequest{fmt.Sprintf("invalid scope: %s", scope)}
	}
	out := make([]scopeTags, 0, len(want))
	for _, s := range want {
		var tags []string
		switch s {
		case "intrinsic":
			tags = traceql.IntrinsicTags()
		case "resource":
			tags, err = h.st.AttributeNames(r.Context(), store.ScopeResource, rng)
		case "span":
			tags, err = h.st.AttributeNames(r.Context(), store.ScopeSpan, rng)
		}
		if err != nil {
			return nil, fmt.Errorf("attribute names (%s): %w", s, err)
		}
		if tags == nil {
			tags = []string{}
		}
		if limit > 0 && len(tags) > limit {
			tags = tags[:limit]
		}
		out = append(out, scopeTags{Name: s, Tags: tags})
	}
	return out, nil
}

// tagName extracts {tag} from /api[/v2]/search/tag/{tag}/values.
func tagName(path, prefix string) (string, bool) {
	rest := strings.TrimPrefix(path, prefix)
	name, ok := strings.CutSuffix(rest, "/values")
	return name, ok && name != "" && rest != path
}

// tagValuesParams reads the range and limit of a tag-value lookup.
func (h *handler) tagValuesParams(r *http.Request) (store.TimeRange, int, error) {
	rng, err := h.tagRange(r)
	if err != nil {
		return rng, 0, err
	}
	limit, err := tagLimit(r, 1000)
	return rng, limit, err
}

// tagValuesV1 answers /api/search/tag/{tag}/values: {"tagValues":[...]}.
// The tag is an attribute name looked up in span, then resource attributes.
func (h *handler) tagValuesV1(w http.ResponseWriter, r *http.Request) {
	name, ok := tagName(r.URL.Path, "/api/search/tag/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	rng, limit, err := h.tagValuesParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	vals, err := h.st.AttributeValues(r.Context(), store.ScopeAny, name, rng, limit)
	if err != nil {
		h.fail(w, r, fmt.Errorf("values of %q: %w", name, err))
		return
	}
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, v.AsString())
	}
	writeJSON(w, http.StatusOK, map[string]any{"tagValues": out, "metrics": map[string]any{}})
}

type tagValue struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// tagValuesV2 answers /api/v2/search/tag/{tag}/values?q=. The tag is a
// TraceQL identifier (resource.service.name, span.http.method, .foo,
// status, name...). A q that parses restricts values to spans it matches;
// one that does not (Grafana sends half-typed queries) is ignored.
func (h *handler) tagValuesV2(w http.ResponseWriter, r *http.Request) {
	name, ok := tagName(r.URL.Path, "/api/v2/search/tag/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	attr, err := parseTagIdentifier(name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rng, limit, err := h.tagValuesParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var vals []tagValue
	if fq := h.filterQuery(r.URL.Query().Get("q")); fq != nil {
		vals, err = h.valuesFromMatches(r, fq, attr, rng, limit)
	} else {
		vals, err = h.valuesFromIndex(r, attr, rng, limit)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if vals == nil {
		vals = []tagValue{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tagValues": vals, "metrics": map[string]any{}})
}

// filterQuery returns q parsed when it usefully filters tag values.
func (h *handler) filterQuery(s string) *traceql.Query {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	q, err := traceql.Parse(s)
	if err != nil || q.IsMetrics() || (q.UsesFindings() && h.opts.Findings == nil) {
		return nil
	}
	if f, ok := q.Pipeline[0].(*traceql.SpansetFilter); ok && f.Expr == nil && len(q.Pipeline) == 1 {
		return nil // {} filters nothing
	}
	return q
}

func parseTagIdentifier(name string) (traceql.Attribute, error) {
	q, err := traceql.Parse("{ " + name + " != nil }")
	if err != nil {
		return traceql.Attribute{}, badRequest{fmt.Sprintf("invalid tag %q: want a TraceQL attribute such as resource.service.name, span.http.method or status", name)}
	}
	f, ok := q.Pipeline[0].(*traceql.SpansetFilter)
	if !ok {
		return traceql.Attribute{}, badRequest{fmt.Sprintf("invalid tag %q", name)}
	}
	b, ok := f.Expr.(*traceql.BinaryExpr)
	if !ok {
		return traceql.Attribute{}, badRequest{fmt.Sprintf("invalid tag %q", name)}
	}
	a, ok := b.LHS.(traceql.Attribute)
	if !ok || a.Parent {
		return traceql.Attribute{}, badRequest{fmt.Sprintf("invalid tag %q: not an attribute", name)}
	}
	return a, nil
}

func keywords(vs ...string) []tagValue {
	out := make([]tagValue, len(vs))
	for i, v := range vs {
		out[i] = tagValue{Type: "keyword", Value: v}
	}
	return out
}

func (h *handler) valuesFromIndex(r *http.Request, a traceql.Attribute, rng store.TimeRange, limit int) ([]tagValue, error) {
	ctx := r.Context()
	switch a.Intrinsic {
	case traceql.IntrinsicStatus:
		return keywords("error", "ok", "unset"), nil
	case traceql.IntrinsicKind:
		return keywords("client", "consumer", "internal", "producer", "server", "unspecified"), nil
	case traceql.IntrinsicFindingKind:
		var out []tagValue
		for _, k := range h.opts.FindingKinds() {
			out = append(out, tagValue{Type: "string", Value: k})
		}
		return out, nil
	case traceql.IntrinsicName:
		ops, err := h.st.Operations(ctx, "", rng)
		if err != nil {
			return nil, fmt.Errorf("operations: %w", err)
		}
		seen := map[string]bool{}
		var out []tagValue
		for _, op := range ops {
			if !seen[op.Name] && (limit == 0 || len(out) < limit) {
				seen[op.Name] = true
				out = append(out, tagValue{Type: "string", Value: op.Name})
			}
		}
		return out, nil
	case traceql.IntrinsicRootServiceName:
		svcs, err := h.st.Services(ctx, rng)
		if err != nil {
			return nil, fmt.Errorf("services: %w", err)
		}
		return stringValues(svcs, limit), nil
	case traceql.IntrinsicNone:
	default:
		// Other intrinsics (durations, ids, nested-set numbers) have no
		// useful value list.
		return nil, nil
	}
	if a.Name == "service.name" && a.Scope != traceql.ScopeSpan {
		svcs, err := h.st.Services(ctx, rng)
		if err != nil {
			return nil, fmt.Errorf("services: %w", err)
		}
		return stringValues(svcs, limit), nil
	}
	scope := store.ScopeAny
	switch a.Scope {
	case traceql.ScopeSpan:
		scope = store.ScopeSpan
	case traceql.ScopeResource:
		scope = store.ScopeResource
	}
	vals, err := h.st.AttributeValues(ctx, scope, a.Name, rng, limit)
	if err != nil {
		return nil, fmt.Errorf("values of %q: %w", a.Name, err)
	}
	out := make([]tagValue, 0, len(vals))
	for _, v := range vals {
		out = append(out, tagValue{Type: modelTypeName(v), Value: v.AsString()})
	}
	return out, nil
}

func stringValues(vs []string, limit int) []tagValue {
	var out []tagValue
	for _, v := range vs {
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, tagValue{Type: "string", Value: v})
	}
	return out
}

func modelTypeName(v model.Value) string {
	switch v.Type {
	case model.TypeInt:
		return "int"
	case model.TypeDouble:
		return "float"
	case model.TypeBool:
		return "bool"
	}
	return "string"
}

// valuesFromMatches collects the tag's values from the spans q matches in
// the most recent TagValuesScanTraces matching traces.
func (h *handler) valuesFromMatches(r *http.Request, q *traceql.Query, a traceql.Attribute, rng store.TimeRange, limit int) ([]tagValue, error) {
	ctx := r.Context()
	sq := q.Pushdown()
	sq.Range = rng
	sq.Limit = h.opts.TagValuesScanTraces
	seen := map[string]tagValue{}
	err := h.st.ScanTraces(ctx, sq, func(spans []model.Span) error {
		sets, err := q.Eval(ctx, spans, h.opts.Findings)
		if err != nil || len(sets) == 0 {
			return err
		}
		for _, ss := range sets {
			for i := range ss.Spans {
				v := ss.Value(i, a)
				if v.Type == traceql.TypeNil {
					continue
				}
				typ := v.Type.String()
				if v.Type == traceql.TypeStatus || v.Type == traceql.TypeKind {
					typ = "keyword"
				}
				seen[typ+"\x00"+v.Text()] = tagValue{Type: typ, Value: v.Text()}
			}
		}
		if limit > 0 && len(seen) >= limit {
			return store.ErrStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrStop) {
		return nil, err
	}
	out := make([]tagValue, 0, len(seen))
	for _, v := range seen {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

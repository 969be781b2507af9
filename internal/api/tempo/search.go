package tempo

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/api/apiparam"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/traceql"
)

// rootNotReceived is what Tempo reports as the root service of a trace
// whose root span has not arrived.
const rootNotReceived = "<root span not yet received>"

type searchParams struct {
	query        *traceql.Query
	limit, spss  int
	rng          store.TimeRange
	minDur, maxD uint64 // trace duration bounds (legacy minDuration/maxDuration)
}

// maxSpansPerSpanSet caps spss: each result carries that many spans per
// matched spanset, so an unbounded value would copy whole traces.
const maxSpansPerSpanSet = 1000

func (h *handler) parseSearch(r *http.Request) (*searchParams, error) {
	q := r.URL.Query()
	p := &searchParams{limit: 20, spss: 3}
	if s := q.Get("limit"); s != "" {
		n, err := apiparam.Count(s, h.opts.MaxSearchLimit)
		if err != nil || n == 0 {
			return nil, badRequest{fmt.Sprintf("invalid limit: %q must be a positive integer", s)}
		}
		p.limit = n
	}
	if s := q.Get("spss"); s != "" {
		n, err := apiparam.Count(s, maxSpansPerSpanSet)
		if err != nil {
			return nil, badRequest{fmt.Sprintf("invalid spss: %q must be a non-negative integer", s)}
		}
		p.spss = n
	}
	start, err := parseUnixSeconds(q.Get("start"), "start")
	if err != nil {
		return nil, err
	}
	end, err := parseUnixSeconds(q.Get("end"), "end")
	if err != nil {
		return nil, err
	}
	if start != 0 && end != 0 && end <= start {
		return nil, badRequest{fmt.Sprintf("http parameter start must be before end. received start=%s end=%s", q.Get("start"), q.Get("end"))}
	}
	if end != 0 {
		end += 1e9 // end is inclusive at second granularity
	}
	p.rng = store.TimeRange{Start: start, End: end}
	for _, d := range []struct {
		name string
		dst  *uint64
	}{{"minDuration", &p.minDur}, {"maxDuration", &p.maxD}} {
		if s := q.Get(d.name); s != "" {
			v, err := time.ParseDuration(s)
			if err != nil || v < 0 {
				return nil, badRequest{fmt.Sprintf("invalid %s: %q is not a duration such as 100ms", d.name, s)}
			}
			*d.dst = uint64(v)
		}
	}
	if p.maxD != 0 && p.maxD < p.minDur {
		return nil, badRequest{"invalid maxDuration: maxDuration must be greater than minDuration"}
	}
	text, tags := q.Get("q"), q.Get("tags")
	if text != "" && tags != "" {
		return nil, badRequest{"invalid request: can't specify tags and q in the same query"}
	}
	if tags != "" {
		text, err = legacyTagsQuery(tags, func() []string {
			svcs, _ := h.st.Services(r.Context(), store.TimeRange{})
			return svcs
		})
		if err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(text) == "" {
		text = "{}"
	}
	p.query, err = h.parse(text)
	if err != nil {
		return nil, err
	}
	if p.query.IsMetrics() {
		return nil, badRequest{"metrics queries are answered by /api/metrics/query_range, not /api/search"}
	}
	if p.query.UsesFindings() && h.opts.Findings == nil {
		return nil, badRequest{"finding.kind is not available: this server runs no trace analysis"}
	}
	return p, nil
}

// legacyTagsQuery turns Tempo's pre-TraceQL `tags` (logfmt key=value) into
// a selector: values match case-insensitively as substrings, as the old
// search did. A service.name value that is part of exactly one known
// service name (services, called at most once) becomes an equality on that
// name: the same traces, but the store answers it from its service index
// instead of testing every span against a regular expression.
func legacyTagsQuery(s string, services func() []string) (string, error) {
	pairs, err := parseLogfmt(s)
	if err != nil {
		return "", badRequest{fmt.Sprintf("invalid tags: %v", err)}
	}
	seen := map[string]bool{}
	var conds []string
	for _, kv := range pairs {
		if seen[kv[0]] {
			return "", badRequest{fmt.Sprintf("invalid tags: duplicate key %q", kv[0])}
		}
		seen[kv[0]] = true
		var lhs string
		switch kv[0] {
		case "name":
			lhs = "name"
		case "service.name":
			lhs = "resource.service.name"
			if only, ok := onlyServiceContaining(services(), kv[1]); ok {
				conds = append(conds, lhs+" = "+strconv.Quote(only))
				continue
			}
		default:
			lhs = "." + strconv.Quote(kv[0])
		}
		pat := "(?i).*" + regexp.QuoteMeta(kv[1]) + ".*"
		conds = append(conds, lhs+" =~ "+strconv.Quote(pat))
	}
	if len(conds) == 0 {
		return "{}", nil
	}
	return "{ " + strings.Join(conds, " && ") + " }", nil
}

// onlyServiceContaining returns the one service whose name contains sub
// case-insensitively, if exactly one does.
func onlyServiceContaining(services []string, sub string) (string, bool) {
	sub = strings.ToLower(sub)
	found, n := "", 0
	for _, s := range services {
		if strings.Contains(strings.ToLower(s), sub) {
			found, n = s, n+1
		}
	}
	return found, n == 1
}

// parseLogfmt reads `k=v k2="v 2"`.
func parseLogfmt(s string) ([][2]string, error) {
	var out [][2]string
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			return out, nil
		}
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ' ' {
			j++
		}
		key := s[i:j]
		if key == "" {
			return nil, fmt.Errorf("empty key at offset %d", i)
		}
		if j >= len(s) || s[j] != '=' {
			return nil, fmt.Errorf("key %q has no value (want key=value)", key)
		}
		j++
		var val string
		if j < len(s) && s[j] == '"' {
			k := j + 1
			for k < len(s) && s[k] != '"' {
				if s[k] == '\\' {
					k++
				}
				k++
			}
			if k >= len(s) {
				return nil, fmt.Errorf("unterminated quote in value of %q", key)
			}
			v, err := strconv.Unquote(s[j : k+1])
			if err != nil {
				return nil, fmt.Errorf("bad quoted value of %q", key)
			}
			val, i = v, k+1
		} else {
			k := j
			for k < len(s) && s[k] != ' ' {
				k++
			}
			val, i = s[j:k], k
		}
		out = append(out, [2]string{key, val})
	}
}

// traceResult is one search hit, rendered.
type traceResult struct {
	start uint64
	json  []byte
}

func (h *handler) search(w http.ResponseWriter, r *http.Request) {
	p, err := h.parseSearch(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	sq := p.query.Pushdown()
	sq.Range = p.rng
	sq.MinTraceDuration = max(sq.MinTraceDuration, p.minDur)
	if p.maxD != 0 && (sq.MaxTraceDuration == 0 || p.maxD < sq.MaxTraceDuration) {
		sq.MaxTraceDuration = p.maxD
	}
	var (
		results             []traceResult
		inspected, inspectB uint64
		partial             bool
	)
	errLimit := errors.New("scan limit")
	err = h.st.ScanTraces(ctx, sq, func(spans []model.Span) error {
		if inspected >= uint64(h.opts.MaxScanTraces) {
			partial = true
			return errLimit
		}
		inspected++
		inspectB += approxBytes(spans)
		sum := model.Summarize(spans)
		if d := sum.DurationNano(); d < p.minDur || (p.maxD != 0 && d > p.maxD) {
			return nil
		}
		sets, err := p.query.Eval(ctx, spans, h.opts.Findings)
		if err != nil {
			return err
		}
		if len(sets) == 0 {
			return nil
		}
		h.markSampled(sum.TraceID, sets)
		results = append(results, traceResult{start: sum.StartUnixNano, json: renderTrace(&sum, sets, p.spss)})
		if len(results) >= p.limit {
			return store.ErrStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errLimit) {
		h.fail(w, r, err)
		return
	}
	// The store scans newest first; sort anyway so the contract (newest
	// first, a long-standing Tempo complaint) does not rest on every engine.
	sort.SliceStable(results, func(i, j int) bool { return results[i].start > results[j].start })
	var b bytes.Buffer
	b.WriteString(`{"traces":[`)
	for i, t := range results {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(t.json)
	}
	fmt.Fprintf(&b, `],"metrics":{"inspectedTraces":%d,"inspectedBytes":"%d","completedJobs":1,"totalJobs":1}`, inspected, inspectB)
	if partial {
		fmt.Fprintf(&b, `,"status":"PARTIAL","message":%q`, fmt.Sprintf("stopped after inspecting %d traces; narrow the time range or the query", inspected))
	}
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}

// approxBytes estimates a trace's stored size for inspectedBytes.
func approxBytes(spans []model.Span) uint64 {
	var n uint64
	for i := range spans {
		s := &spans[i]
		n += 64 + uint64(len(s.Name)+len(s.StatusMessage))
		for _, a := range s.Attrs {
			n += uint64(len(a.Key)+len(a.Value.Str)) + 8
		}
	}
	return n
}

func renderTrace(sum *model.TraceSummary, sets []traceql.Spanset, spss int) []byte {
	var b bytes.Buffer
	j := &jw{b: &b}
	j.open('{')
	j.key("traceID")
	writeJSONString(&b, sum.TraceID.String())
	root := sum.RootService
	if sum.RootName == "" && root == "" {
		root = rootNotReceived
	}
	j.str("rootServiceName", root)
	j.str("rootTraceName", sum.RootName)
	j.u64("startTimeUnixNano", sum.StartUnixNano)
	j.key("durationMs")
	b.WriteString(strconv.FormatUint(sum.DurationNano()/1e6, 10))
	j.key("spanSet")
	writeSpanset(j, &sets[0], spss)
	j.key("spanSets")
	j.open('[')
	for i := range sets {
		j.sep()
		writeSpanset(j, &sets[i], spss)
	}
	j.close(']')
	j.key("serviceStats")
	j.open('{')
	for _, s := range sum.Services {
		j.key(jsonKey(s.Name))
		j.open('{')
		j.u32("spanCount", uint32(s.SpanCount))
		j.u32("errorCount", uint32(s.ErrorCount))
		j.close('}')
	}
	j.close('}')
	j.close('}')
	return b.Bytes()
}

// jsonKey escapes a map key for jw.key, which writes it between quotes.
func jsonKey(s string) string {
	var b bytes.Buffer
	writeJSONString(&b, s)
	return b.String()[1 : b.Len()-1]
}

func writeSpanset(j *jw, ss *traceql.Spanset, spss int) {
	j.open('{')
	j.key("spans")
	j.open('[')
	n := len(ss.Spans)
	if spss > 0 && n > spss {
		n = spss
	}
	for i := 0; i < n; i++ {
		s := ss.Spans[i]
		j.sep()
		j.open('{')
		j.key("spanID")
		writeJSONString(j.b, s.SpanID.String())
		j.str("name", s.Name)
		j.u64("startTimeUnixNano", s.StartUnixNano)
		j.u64("durationNanos", s.DurationNano())
		writeLabels(j, "attributes", ss.SpanAttrs(i))
		j.close('}')
	}
	j.close(']')
	j.u32("matched", uint32(len(ss.Spans)))
	writeLabels(j, "attributes", ss.Attrs)
	j.close('}')
}

// writeLabels writes key: [{key, value}…], leaving out an empty list as
// jsonpb does.
func writeLabels(j *jw, key string, ls []traceql.Label) {
	if len(ls) > 0 {
		writeLabelArray(j, key, ls)
	}
}

func writeLabelArray(j *jw, key string, ls []traceql.Label) {
	j.key(key)
	j.open('[')
	for _, l := range ls {
		j.sep()
		j.open('{')
		j.key("key")
		writeJSONString(j.b, l.Key)
		j.key("value")
		writeValue(j, l.Value)
		j.close('}')
	}
	j.close(']')
}

// writeValue renders a TraceQL value as an OTLP AnyValue; status, kind and
// durations become their text, as Grafana displays them.
func writeValue(j *jw, v traceql.Value) {
	j.open('{')
	switch v.Type {
	case traceql.TypeInt:
		j.key("intValue")
		j.b.WriteString(`"` + strconv.FormatInt(v.I, 10) + `"`)
	case traceql.TypeFloat:
		j.key("doubleValue")
		writeJSONFloat(j.b, v.F)
	case traceql.TypeBool:
		j.key("boolValue")
		j.b.WriteString(strconv.FormatBool(v.B))
	case traceql.TypeNil:
	default:
		j.key("stringValue")
		writeJSONString(j.b, v.Text())
	}
	j.close('}')
}

// SampledAttr is the span-set attribute of search results carrying
// tracedx's tail-sampling decision about the trace: why it was kept, or
// "dropped" (it then leaves storage after retention.traces). Tempo's
// results have no trace-level attributes; span-set ones are what Grafana
// shows with each result.
const SampledAttr = "tracedx.sampled"

func (h *handler) markSampled(id model.TraceID, sets []traceql.Spanset) {
	if h.opts.Sampled == nil {
		return
	}
	reason := h.opts.Sampled(id)
	if reason == "" {
		return
	}
	for i := range sets {
		sets[i].Attrs = append(slices.Clip(sets[i].Attrs), traceql.Label{Key: SampledAttr, Value: traceql.Value{Type: traceql.TypeString, S: reason}})
	}
}

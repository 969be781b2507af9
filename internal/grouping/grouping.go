// Package grouping groups the traces of one endpoint by the shape of their
// call tree, so a user can tell one odd request from a systemic problem:
// "97 % of checkouts make 1 items query, 3 % make 11–50".
//
// The signature of a node is its (service, operation) label followed by
// the sorted signatures of its children, where identical sibling subtrees
// collapse into one with a count bucket (1, 2, 3–5, 6–10, 11–50, 51–100,
// >100). Sorting makes the order of concurrent calls irrelevant; buckets
// make 12 and 13 queries the same shape while 1 and 51 differ.
package grouping

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/compare"
	"github.com/tracedx/tracedx/internal/findingstore/apiutil"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Group is one shape.
type Group struct {
	// ID is a stable hash of the signature (16 hex chars).
	ID string `json:"id"`
	// Shape is the signature as an indented tree, one node per line,
	// "x3-5" marking collapsed repetitions.
	Shape           []string `json:"shape"`
	Count           int      `json:"count"`
	Share           float64  `json:"share"`
	ExampleTraceIDs []string `json:"example_trace_ids"`
	MeanDurationMS  float64  `json:"mean_duration_ms"`
	ErrorShare      float64  `json:"error_share"`
	SpanCount       float64  `json:"mean_span_count"`
}

// Result lists the groups, largest first.
type Result struct {
	Traces int     `json:"traces"`
	Groups []Group `json:"groups"`
}

// Options tune grouping.
type Options struct {
	// Root picks the endpoint node in each trace (nil: the trace root);
	// traces where it returns nil are skipped.
	Root func(t *analyze.Trace) *analyze.Node
	// Examples per group (default 5).
	Examples int
}

// Bucket names a repetition count.
func Bucket(n int) string {
	switch {
	case n <= 2:
		return fmt.Sprint(n)
	case n <= 5:
		return "3-5"
	case n <= 10:
		return "6-10"
	case n <= 50:
		return "11-50"
	case n <= 100:
		return "51-100"
	}
	return ">100"
}

func nodeLabel(n *analyze.Node) string {
	l := n.Span.Service + ": " + n.Span.Name
	if analyze.IsDB(n) {
		l = n.Span.Service + ": " + analyze.DBShape(n.Span)
	} else if analyze.IsCall(n) {
		svc, op := analyze.CallTarget(nil, n)
		l += " → " + strings.TrimSpace(svc+" "+op)
	}
	if len(l) > 160 {
		l = l[:160] + "…"
	}
	return l
}

// signature returns the canonical text of n's subtree: lines of
// "depth-indent label [xbucket]". Built bottom-up with an explicit stack so
// deep traces cannot overflow.
func signature(root *analyze.Node) string {
	type frame struct {
		n    *analyze.Node
		next int
		kids []string
	}
	var result string
	stack := []*frame{{n: root}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		if f.next < len(f.n.Children) {
			c := f.n.Children[f.next]
			f.next++
			stack = append(stack, &frame{n: c})
			continue
		}
		stack = stack[:len(stack)-1]
		counts := map[string]int{}
		for _, k := range f.kids {
			counts[k]++
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString(nodeLabel(f.n))
		b.WriteString("\n")
		for _, k := range keys {
			// Indent the child subtree and mark the first line's count.
			lines := strings.Split(strings.TrimSuffix(k, "\n"), "\n")
			for i, l := range lines {
				b.WriteString("  ")
				b.WriteString(l)
				if i == 0 && counts[k] > 1 {
					b.WriteString("  x" + Bucket(counts[k]))
				}
				b.WriteString("\n")
			}
		}
		sig := b.String()
		if len(stack) == 0 {
			result = sig
		} else {
			p := stack[len(stack)-1]
			p.kids = append(p.kids, sig)
		}
	}
	return result
}

// Signature returns the shape signature of a trace from its root.
func Signature(t *analyze.Trace) string {
	if r := t.Root(); r != nil {
		return signature(r)
	}
	return ""
}

type acc struct {
	sig                  string
	count, failed, spans int
	dur                  float64
	examples             []string
}

// Traces groups traces by shape.
func Traces(traces [][]model.Span, opt Options) Result {
	if opt.Examples <= 0 {
		opt.Examples = 5
	}
	groups := map[string]*acc{}
	res := Result{Groups: []Group{}}
	for _, spans := range traces {
		t := analyze.NewTrace(spans)
		root := t.Root()
		if opt.Root != nil {
			root = opt.Root(t)
		}
		if root == nil {
			continue
		}
		res.Traces++
		sig := signature(root)
		a := groups[sig]
		if a == nil {
			a = &acc{sig: sig}
			groups[sig] = a
		}
		a.count++
		a.dur += analyze.NS(root.Duration())
		if analyze.Failed(root) {
			a.failed++
		}
		n := 0
		stack := []*analyze.Node{root}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n++
			stack = append(stack, x.Children...)
		}
		a.spans += n
		if len(a.examples) < opt.Examples {
			a.examples = append(a.examples, t.ID.String())
		}
	}
	for _, a := range groups {
		h := fnv.New64a()
		h.Write([]byte(a.sig))
		res.Groups = append(res.Groups, Group{ID: fmt.Sprintf("%016x", h.Sum64()),
			Shape: strings.Split(strings.TrimSuffix(a.sig, "\n"), "\n"), Count: a.count,
			Share:           math.Round(1000*float64(a.count)/float64(res.Traces)) / 1000,
			ExampleTraceIDs: a.examples, MeanDurationMS: math.Round(10*a.dur/float64(a.count)) / 10,
			ErrorShare: math.Round(1000*float64(a.failed)/float64(a.count)) / 1000,
			SpanCount:  math.Round(10*float64(a.spans)/float64(a.count)) / 10})
	}
	sort.Slice(res.Groups, func(i, j int) bool {
		if res.Groups[i].Count != res.Groups[j].Count {
			return res.Groups[i].Count > res.Groups[j].Count
		}
		return res.Groups[i].ID < res.Groups[j].ID
	})
	return res
}

// RegisterRoutes mounts GET /api/v1/groups?service=&operation=&start=&end=&limit=
// (limit: traces scanned, default 500, max 5000). Traces are grouped from
// the endpoint's span (service, operation), not the trace root, so callers
// reaching the endpoint through different paths share a group.
func RegisterRoutes(mux *http.ServeMux, st store.Store) {
	mux.HandleFunc("GET /api/v1/groups", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		svc, op := q.Get("service"), q.Get("operation")
		if svc == "" {
			apiutil.Fail(w, r, apiutil.Badf("service is required"))
			return
		}
		rng, err := apiutil.ParseRange(q, "start", "end", time.Now())
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		limit, err := apiutil.ParseLimit("limit", q.Get("limit"), 500, 5000)
		if err != nil {
			apiutil.Fail(w, r, err)
			return
		}
		var traces [][]model.Span
		err = st.ScanTraces(r.Context(), store.Query{Range: rng, Service: svc, Operation: op, Limit: limit}, func(spans []model.Span) error {
			traces = append(traces, spans)
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrStop) {
			apiutil.Fail(w, r, fmt.Errorf("scanning traces of %s: %w", svc, err))
			return
		}
		apiutil.WriteJSON(w, http.StatusOK, Traces(traces, Options{Root: compare.EndpointRoot(svc, op)}))
	})
}

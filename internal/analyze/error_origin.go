package analyze

import (
	"fmt"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// ErrorOrigin finds the root cause of a failed trace: the deepest failed
// span whose own children did not fail, under the layers that only passed
// the error up.
type ErrorOrigin struct {
	// MaxChain caps the layers listed in evidence (the chain is cut in the
	// middle, origin and root are always kept).
	MaxChain int `yaml:"max_chain"`
}

// NewErrorOrigin returns the detector with docs/patterns.md defaults
// (every trace with an error span).
func NewErrorOrigin() *ErrorOrigin { return &ErrorOrigin{MaxChain: 20} }

func init() { Register(func() Detector { return NewErrorOrigin() }) }

// Kind implements Detector.
func (*ErrorOrigin) Kind() string { return "error_origin" }

// ErrorLayer is one span on the chain from the root to the origin.
type ErrorLayer struct {
	SpanRef
	Failed        bool   `json:"failed"`
	ExceptionType string `json:"exception_type,omitempty"`
	Message       string `json:"message,omitempty"`
	HTTPStatus    int    `json:"http_status,omitempty"`
}

// ErrorOriginEvidence is the evidence of an error_origin finding.
type ErrorOriginEvidence struct {
	Origin           SpanRef      `json:"origin"`
	ExceptionType    string       `json:"exception_type"`
	ExceptionMessage string       `json:"exception_message"`
	Chain            []ErrorLayer `json:"chain"` // root first, origin last
	// PropagatedLayers counts the failed ancestors of the origin: spans
	// that failed only because the origin did.
	PropagatedLayers int `json:"propagated_layers"`
	// RewrappedLayers counts those of them that reported an error of their
	// own making (another exception type or message): the original cause
	// is hidden behind that many wrappers.
	RewrappedLayers int  `json:"rewrapped_layers"`
	ServicesCrossed int  `json:"services_crossed"`
	RootFailed      bool `json:"root_failed"`
	// OtherOrigins counts further independent failed leaves in the trace.
	OtherOrigins int `json:"other_origins"`
}

// Detect implements Detector. One finding per trace: the origin of the
// failure that reached highest (ideally the root); ties go to the deeper
// origin, then the earlier one. Critical when the root failed, warning when
// some layer handled the error.
func (d *ErrorOrigin) Detect(t *Trace, _ *Env) []Finding {
	var origins []*Node
	for _, n := range t.Nodes {
		if !Failed(n) {
			continue
		}
		leaf := true
		for _, c := range n.Children {
			if Failed(c) {
				leaf = false
				break
			}
		}
		if leaf {
			origins = append(origins, n)
		}
	}
	if len(origins) == 0 {
		return nil
	}
	// reach: how many consecutive failed ancestors sit above the origin.
	reach := func(n *Node) (int, bool) {
		k := 0
		p := n.Parent
		for ; p != nil && Failed(p); p = p.Parent {
			k++
		}
		return k, p == nil
	}
	var best *Node
	bestReach, bestTop := -1, false
	for _, o := range origins {
		r, top := reach(o)
		better := best == nil || (top && !bestTop) ||
			(top == bestTop && (r > bestReach || (r == bestReach && (o.Depth > best.Depth ||
				(o.Depth == best.Depth && o.Start() < best.Start())))))
		if better {
			best, bestReach, bestTop = o, r, top
		}
	}
	o := best
	typ, msg := ExceptionOf(o.Span)
	if typ == "" && msg == "" {
		if code, ok := HTTPStatus(o.Span); ok {
			msg = fmt.Sprintf("HTTP %d", code)
		}
	}
	ev := ErrorOriginEvidence{Origin: RefOf(t, o), ExceptionType: typ, ExceptionMessage: model.Clip(msg, 300),
		OtherOrigins: len(origins) - 1}

	var path []*Node
	for p := o; p != nil; p = p.Parent {
		path = append(path, p)
	}
	ev.RootFailed = Failed(path[len(path)-1]) && path[len(path)-1].Parent == nil
	services := map[string]bool{}
	for i := len(path) - 1; i >= 0; i-- {
		n := path[i]
		lt, lm := ExceptionOf(n.Span)
		l := ErrorLayer{SpanRef: RefOf(t, n), Failed: Failed(n), ExceptionType: lt, Message: model.Clip(lm, 200)}
		l.HTTPStatus, _ = HTTPStatus(n.Span)
		ev.Chain = append(ev.Chain, l)
		if n != o && l.Failed {
			ev.PropagatedLayers++
			if (lt != "" && lt != typ) || (lm != "" && lm != msg && !strings.Contains(lm, msg)) {
				ev.RewrappedLayers++
			}
		}
		services[n.Span.Service] = true
	}
	ev.ServicesCrossed = len(services)
	if d.MaxChain > 2 && len(ev.Chain) > d.MaxChain {
		keep := d.MaxChain / 2
		ev.Chain = append(ev.Chain[:keep:keep], ev.Chain[len(ev.Chain)-(d.MaxChain-keep):]...)
	}

	sev := SeverityWarning
	if ev.RootFailed {
		sev = SeverityCritical
	}
	what := typ
	if IsWrapperErrorType(typ) {
		what = "" // "*fmt.wrapError: a: b: c" says no more than "a: b: c"
	}
	switch {
	case what == "" && msg != "":
		what = model.Clip(msg, 80)
	case what == "":
		what = "error"
	case msg != "":
		what += ": " + model.Clip(msg, 80)
	}
	top := o
	for _, n := range path {
		if Failed(n) {
			top = n
		}
	}
	title := fmt.Sprintf("%s in %s", what, spanLabel(t, o))
	code, hasCode := HTTPStatus(top.Span)
	switch {
	case ev.RootFailed && hasCode && code >= 500:
		title = fmt.Sprintf("HTTP %d from %s caused by %s, %s below", code, spanLabel(t, top), title, layers(o.Depth-top.Depth))
	case ev.PropagatedLayers > 0:
		title += fmt.Sprintf(", passed up %s to %s", layers(ev.PropagatedLayers), spanLabel(t, top))
	}
	ids := make([]string, 0, len(path))
	ids = append(ids, o.Span.SpanID.String())
	for _, n := range path[1:] {
		if Failed(n) {
			ids = append(ids, n.Span.SpanID.String())
		}
	}
	// Wrapper types (*fmt.wrapError) and "a: b: c" message chains hide the
	// original error; name that one as the thing to fix.
	fix := fmt.Sprintf("Start at %s %s: fix or guard %s there", o.Span.Service, o.Span.Name,
		nonEmpty(quoteCause(typ, msg), "the failure"))
	if ev.RewrappedLayers > 0 {
		fix += fmt.Sprintf("; %d layer(s) re-wrapped the error, keep the original cause in their messages", ev.RewrappedLayers)
	}
	fix += "."
	return []Finding{{Kind: d.Kind(), Severity: sev, Title: title, SpanIDs: ids,
		ImpactMS: roundMS(critUnder(t, o)), Evidence: ev, Fix: fix}}
}

func nonEmpty(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// quoteCause names the original error for a fix sentence: its type, or
// its innermost message part in quotes when the type is a wrapper.
func quoteCause(typ, msg string) string {
	t, m := OriginalError(typ, msg)
	switch {
	case t != "":
		return t
	case m != "":
		return fmt.Sprintf("%q", model.Clip(m, 80))
	}
	return ""
}

func layers(n int) string {
	if n == 1 {
		return "1 layer"
	}
	return fmt.Sprintf("%d layers", n)
}

package rootcause

import (
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// withInferredKinds returns spans whose unspecified kinds are filled in
// from the shape of the trace, or spans itself when every span has a kind.
// Converters from Jaeger or CSV exports and some instrumentations drop the
// span kind; without it no call would be known as a call, and the time in
// front of a callee (a network delay) would be charged to the caller. A
// span without a kind is the entry of its service when it has no parent or
// its parent is another service's; else a call when a child belongs to
// another service; else internal work.
func withInferredKinds(spans []model.Span) []model.Span {
	missing := false
	for i := range spans {
		if spans[i].Kind == model.KindUnspecified {
			missing = true
			break
		}
	}
	if !missing {
		return spans
	}
	service := make(map[model.SpanID]string, len(spans))
	for i := range spans {
		service[spans[i].SpanID] = spans[i].Service
	}
	callsOut := make(map[model.SpanID]bool)
	for i := range spans {
		s := &spans[i]
		if ps, ok := service[s.ParentSpanID]; ok && !s.ParentSpanID.IsZero() && s.Service != "" && ps != s.Service {
			callsOut[s.ParentSpanID] = true
		}
	}
	out := make([]model.Span, len(spans))
	copy(out, spans)
	for i := range out {
		s := &out[i]
		if s.Kind != model.KindUnspecified {
			continue
		}
		ps, hasParent := service[s.ParentSpanID]
		switch {
		case s.ParentSpanID.IsZero() || !hasParent || ps != s.Service:
			s.Kind = model.KindServer
		case callsOut[s.SpanID]:
			s.Kind = model.KindClient
		default:
			s.Kind = model.KindInternal
		}
	}
	return out
}

// withTemplateNames returns spans whose names hold ids ("GET
// /api/orders/8812", "getOrder 5f3a9c…") renamed to their template, or
// spans itself when no name changes. The ranking compares operations
// across windows; an id in the name makes each request an operation of
// its own, seen once, and a service's slowdown is then spread over
// thousands of keys that each look like noise.
func withTemplateNames(spans []model.Span) []model.Span {
	var out []model.Span
	for i := range spans {
		name := templateName(spans[i].Name)
		if name == spans[i].Name {
			continue
		}
		if out == nil {
			out = make([]model.Span, len(spans))
			copy(out, spans)
		}
		out[i].Name = name
	}
	if out == nil {
		return spans
	}
	return out
}

// templateName replaces the id-like words and path segments of a span name.
func templateName(name string) string {
	words := strings.Fields(name)
	changed := false
	for i, w := range words {
		var t string
		if strings.Contains(w, "/") {
			t = analyze.NormalizeURL(w)
		} else if analyze.LooksLikeID(w) {
			t = "{id}"
		} else {
			continue
		}
		if t != w {
			words[i], changed = t, true
		}
	}
	if !changed {
		return name
	}
	return strings.Join(words, " ")
}

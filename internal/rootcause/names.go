package rootcause

import (
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

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

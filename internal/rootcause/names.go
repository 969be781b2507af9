package rootcause

import (
	"strings"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
)

// withTemplateNames returns spans whose names hold ids ("GET
// /api/orders/8812", "getOrder 5f3a9c…") renamed to their template, and
// database spans named only generically renamed to their statement's
// shape (statementName), or spans itself when no name changes. The ranking compares operations
// across windows; an id in the name makes each request an operation of
// its own, seen once, and a service's slowdown is then spread over
// thousands of keys that each look like noise.
func withTemplateNames(spans []model.Span) []model.Span {
	var out []model.Span
	for i := range spans {
		name := templateName(spans[i].Name)
		if shape := statementName(&spans[i]); shape != "" {
			name = shape
		}
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

// genericDBWords are the words of database span names that say nothing of
// the statement: node-postgres' "pg.query:SELECT postgres", otelsql's
// "sql.conn.query", mysql2's "SELECT".
var genericDBWords = map[string]bool{"pg": true, "query": true, "sql": true, "conn": true, "exec": true, "execute": true,
	"tx": true, "mysql": true, "postgres": true, "postgresql": true, "db": true, "select": true, "insert": true,
	"update": true, "delete": true}

// statementName returns the normalised statement of a database span whose
// name is generic, or "". Every query of a service otherwise shares one
// operation, and a slow SELECT FOR UPDATE is ranked as "pg.query:SELECT
// postgres" beside the point lookups that stayed fast.
func statementName(s *model.Span) string {
	if analyze.DBSystem(s) == "" {
		return ""
	}
	stmt := s.Attrs.Str("db.query.text", "db.statement")
	if stmt == "" {
		return ""
	}
	dbName := strings.ToLower(s.Attrs.Str("db.namespace", "db.name"))
	for _, w := range strings.FieldsFunc(strings.ToLower(s.Name), func(r rune) bool { return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' }) {
		if !genericDBWords[w] && w != dbName {
			return ""
		}
	}
	return model.Clip(analyze.NormalizeStatement(stmt), 160)
}

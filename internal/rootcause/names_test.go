package rootcause

import (
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

func TestTemplateNames(t *testing.T) {
	for in, want := range map[string]string{
		"GET /api/v1/orders/8812":                       "GET /api/v1/orders/{id}",
		"getOrder 5f3a9c1e-2b7d-4c11-9a0e-0d3c5e7f9a21": "getOrder {id}",
		"GET /api/v1/orders/{orderId}":                  "GET /api/v1/orders/{orderId}",
		"SELECT shop.orders":                            "SELECT shop.orders",
		"HTTP GET":                                      "HTTP GET",
	} {
		if got := templateName(in); got != want {
			t.Errorf("templateName(%q) = %q, want %q", in, got, want)
		}
	}
}

// Database spans named only by their instrumentation take their
// statement's shape; a name that says what it reads stays.
func TestStatementNames(t *testing.T) {
	const stmt = "SELECT qty FROM stock WHERE sku = $1 FOR UPDATE"
	const shape = "SELECT qty FROM stock WHERE sku = ? FOR UPDATE"
	for _, c := range []struct {
		name, system, text, namespace, want string
	}{
		{"pg.query:SELECT postgres", "postgresql", stmt, "postgres", shape},
		{"sql.conn.query", "postgresql", stmt, "", shape},
		{"SELECT", "mysql", stmt, "", shape},
		{"SELECT products", "postgresql", "SELECT products WHERE id = ?", "", ""},
		{"pg.query:SELECT postgres", "postgresql", "", "postgres", ""},
		{"GET", "", stmt, "", ""},
	} {
		s := model.Span{Name: c.name}
		if c.system != "" {
			s.Attrs = append(s.Attrs, model.Attr{Key: "db.system", Value: model.Str(c.system)})
		}
		if c.text != "" {
			s.Attrs = append(s.Attrs, model.Attr{Key: "db.statement", Value: model.Str(c.text)})
		}
		if c.namespace != "" {
			s.Attrs = append(s.Attrs, model.Attr{Key: "db.name", Value: model.Str(c.namespace)})
		}
		if got := statementName(&s); got != c.want {
			t.Errorf("statementName(%q, %q) = %q, want %q", c.name, c.text, got, c.want)
		}
	}
}

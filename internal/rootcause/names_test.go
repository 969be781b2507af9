package rootcause

import "testing"

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

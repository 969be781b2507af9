package analyze

import "testing"

func TestNormalizeStatement(t *testing.T) {
	cases := []struct{ in, want string }{
		{"SELECT * FROM customers WHERE id = 101", "SELECT * FROM customers WHERE id = ?"},
		{"SELECT  *\n\tFROM customers WHERE id = 150 ", "SELECT * FROM customers WHERE id = ?"},
		{"SELECT name FROM users WHERE email = 'a@b.com' AND age > 21.5", "SELECT name FROM users WHERE email = ? AND age > ?"},
		{"SELECT * FROM t WHERE id IN (1,2,3)", "SELECT * FROM t WHERE id IN (?)"},
		{"SELECT * FROM t WHERE id in ( 1, 2, 3, 4 )", "SELECT * FROM t WHERE id in (?)"},
		{"SELECT * FROM t WHERE id IN ('a', 'b')", "SELECT * FROM t WHERE id IN (?)"},
		{"SELECT * FROM t WHERE id IN ($1, $2, $3)", "SELECT * FROM t WHERE id IN (?)"},
		{"SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = 1)", "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = ?)"},
		{"INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')", "INSERT INTO t (a, b) VALUES (?, ?)"},
		{"SELECT 1 /* traceparent='00-abc-def-01' */", "SELECT ?"},
		{"SELECT a -- trailing comment\nFROM t", "SELECT a FROM t"},
		{"UPDATE t SET v = -5 WHERE k = 'it''s'", "UPDATE t SET v = ? WHERE k = ?"},
		{"SELECT \"id\", \"name\" FROM \"orders\" WHERE \"id\" = 7", "SELECT \"id\", \"name\" FROM \"orders\" WHERE \"id\" = ?"},
		{"SELECT * FROM t WHERE k = '550e8400-e29b-41d4-a716-446655440000'", "SELECT * FROM t WHERE k = ?"},
		{"GET session:550e8400-e29b-41d4-a716-446655440000", "GET session:?"},
		{"HGET user:1234:profile name", "HGET user:?:profile name"},
		{"GET cart:9f86d081884c7d65", "GET cart:?"},
		{`{"find": "customers", "filter": {"_id": 42, "tags": {"$in": ["a", "b", "c"]}}}`, `{"find": "customers", "filter": {"_id": ?, "tags": {"$in": [?]}}}`},
		{"SELECT x FROM orders_2024 WHERE a = 0x1F", "SELECT x FROM orders_2024 WHERE a = ?"},
		{"SELECT * FROM t WHERE a = 'unterminated", "SELECT * FROM t WHERE a = ?"},
		{"", ""},
	}
	for _, c := range cases {
		if got := NormalizeStatement(c.in); got != c.want {
			t.Errorf("NormalizeStatement(%q)\n got  %q\n want %q", c.in, got, c.want)
		}
	}
	if NormalizeStatement("SELECT * FROM c WHERE id = 101") != NormalizeStatement("SELECT * FROM c WHERE id = 150") {
		t.Error("id = 101 and id = 150 must be one shape")
	}
	if NormalizeStatement("SELECT * FROM a WHERE id = 1") == NormalizeStatement("SELECT * FROM b WHERE id = 1") {
		t.Error("different tables must be different shapes")
	}
}

func TestLooksLikeID(t *testing.T) {
	yes := []string{"42", "550e8400-e29b-41d4-a716-446655440000", "9f86d081884c7d65", "2024-01-15",
		"user@example.com", "ord_12345", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "deadbeefdeadbeefdeadbeef", "sku-9f3a2c1b7e"}
	no := []string{"", "orders", "v1", "v2", "api", "customers", "GetStock", "orders_2024x", "page-2", "health", "deadbeef", "id"}
	for _, s := range yes {
		if !LooksLikeID(s) {
			t.Errorf("LooksLikeID(%q) = false, want true", s)
		}
	}
	for _, s := range no {
		if LooksLikeID(s) {
			t.Errorf("LooksLikeID(%q) = true, want false", s)
		}
	}
}

func TestNormalizeURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://api.example.com/v1/orders/12345?expand=items#x", "/v1/orders/{id}"},
		{"/users/550e8400-e29b-41d4-a716-446655440000/cart", "/users/{id}/cart"},
		{"http://inventory:8080/stock/sku-9f3a2c1b7e", "/stock/{id}"},
		{"/api/orders/{orderId}/items/:item", "/api/orders/{orderId}/items/:item"},
		{"http://host", "/"},
		{"", "/"},
		{"/v2/customers/42/orders/7", "/v2/customers/{id}/orders/{id}"},
	}
	for _, c := range cases {
		if got := NormalizeURL(c.in); got != c.want {
			t.Errorf("NormalizeURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func BenchmarkNormalizeStatement(b *testing.B) {
	s := "SELECT c.id, c.name, c.email FROM customers c WHERE c.id = 48213 AND c.region IN ('eu', 'us', 'ap') /* app=orders */"
	for b.Loop() {
		NormalizeStatement(s)
	}
}

package tempo

import "testing"

func TestLegacyTagsServiceRewrite(t *testing.T) {
	svcs := []string{"frontend", "Cart", "cart-worker", "payments"}
	cases := []struct{ tags, want string }{
		// One service contains the value: equality, answered from the index.
		{"service.name=pay", `{ resource.service.name = "payments" }`},
		{"service.name=FRONT", `{ resource.service.name = "frontend" }`},
		// Several (Cart, cart-worker) or none: the substring regex stays.
		{"service.name=cart", `{ resource.service.name =~ "(?i).*cart.*" }`},
		{"service.name=nope", `{ resource.service.name =~ "(?i).*nope.*" }`},
		{"service.name=pay db.system=pg", `{ resource.service.name = "payments" && ."db.system" =~ "(?i).*pg.*" }`},
	}
	for _, c := range cases {
		got, err := legacyTagsQuery(c.tags, func() []string { return svcs })
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.tags, got, err, c.want)
		}
	}
}

package tenant

import (
	"context"
	"errors"
	"testing"

	"github.com/tracedx/tracedx/internal/auth"
)

func TestResolve(t *testing.T) {
	bound := auth.WithIdentity(context.Background(), auth.Identity{Tenant: "acme"})
	unbound := auth.WithIdentity(context.Background(), auth.Identity{})
	cases := []struct {
		name   string
		ctx    context.Context
		header string
		want   string
		err    error
	}{
		{"header alone", context.Background(), "acme", "acme", nil},
		{"token's tenant without a header", bound, "", "acme", nil},
		{"token and header agree", bound, "acme", "acme", nil},
		{"header names another tenant", bound, "other", "", ErrMismatch},
		{"unbound token, header decides", unbound, "other", "other", nil},
		{"nothing", unbound, "", "", ErrMissing},
	}
	for _, c := range cases {
		got, err := Resolve(c.ctx, c.header)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%s: %q, %v; want %q, %v", c.name, got, err, c.want, c.err)
		}
	}
	for _, bad := range []string{"..", "../etc", "a/b", ".hidden", "x y", string(make([]byte, 65))} {
		if _, err := Resolve(context.Background(), bad); err == nil {
			t.Errorf("tenant id %q accepted", bad)
		}
	}
}

type fake struct{ closed *int }

func (f fake) Close() { *f.closed++ }

func TestRouterOpensOncePerTenant(t *testing.T) {
	opened, closed := map[string]int{}, 0
	r := NewRouter(func(id string) (fake, error) {
		opened[id]++
		if id == "broken" {
			return fake{}, errors.New("disk full")
		}
		return fake{closed: &closed}, nil
	})
	for _, id := range []string{"a", "b", "a", "a"} {
		if _, err := r.Get(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get("broken"); err == nil {
		t.Error("a failed open was not reported")
	}
	if opened["a"] != 1 || opened["b"] != 1 {
		t.Errorf("opened %v, want each once", opened)
	}
	if ids := r.IDs(); len(ids) != 2 || ids[0] != "a" || ids[1] != "b" {
		t.Errorf("ids %v", ids)
	}
	_ = r.Close()
	if closed != 2 {
		t.Errorf("closed %d instances, want 2", closed)
	}
	if _, err := r.Get("a"); err == nil {
		t.Error("Get after Close succeeded")
	}
}

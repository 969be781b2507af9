package tenant

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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

// A tenant being opened holds up only its own requests: others go on, and
// its concurrent requests share the one open.
func TestRouterOpenHoldsUpOnlyItsTenant(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	opened := map[string]int{}
	closed := 0
	r := NewRouter(func(id string) (fake, error) {
		mu.Lock()
		opened[id]++
		mu.Unlock()
		if id == "slow" {
			close(started)
			<-release
		}
		return fake{closed: &closed}, nil
	})
	slow := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := r.Get("slow")
			slow <- err
		}()
	}
	<-started
	got := make(chan error, 1)
	go func() {
		_, err := r.Get("quick")
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a tenant waited for another tenant's open")
	}
	close(release)
	for range 3 {
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if opened["slow"] != 1 || opened["quick"] != 1 {
		t.Fatalf("opened %v, want each once", opened)
	}
}

// Close waits for an open in progress and closes what it opened; the
// request that opened it gets an error, not a closed instance.
func TestRouterCloseDuringOpen(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	closed := 0
	r := NewRouter(func(string) (fake, error) {
		close(started)
		<-release
		return fake{closed: &closed}, nil
	})
	got := make(chan error, 1)
	go func() {
		_, err := r.Get("a")
		got <- err
	}()
	<-started
	done := make(chan struct{})
	go func() {
		_ = r.Close()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Close returned while an open was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-done
	if err := <-got; err == nil {
		t.Fatal("the open that Close overtook returned an instance")
	}
	if closed != 1 {
		t.Fatalf("closed %d instances, want the one opened during Close", closed)
	}
}

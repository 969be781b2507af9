package priority

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestYieldWaitsForQueries(t *testing.T) {
	var g Gate
	if w := g.Yield(context.Background(), time.Second); w != 0 {
		t.Fatalf("no query running, yet Yield waited %v", w)
	}
	end := g.Begin()
	end2 := g.Begin()
	done := make(chan time.Duration)
	go func() { done <- g.Yield(context.Background(), 10*time.Second) }()
	select {
	case w := <-done:
		t.Fatalf("Yield returned after %v while two queries ran", w)
	case <-time.After(50 * time.Millisecond):
	}
	end()
	end() // a second call of the same end must not count twice
	select {
	case w := <-done:
		t.Fatalf("Yield returned after %v while one query still ran", w)
	case <-time.After(50 * time.Millisecond):
	}
	end2()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Yield still waiting after the last query ended")
	}
	if g.Active() != 0 {
		t.Fatalf("active = %d after every query ended", g.Active())
	}
}

func TestYieldBoundedWait(t *testing.T) {
	var g Gate
	defer g.Begin()()
	if w := g.Yield(context.Background(), 20*time.Millisecond); w < 20*time.Millisecond || w > 5*time.Second {
		t.Fatalf("Yield under a never-ending query waited %v, want about 20ms", w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w := g.Yield(ctx, time.Hour); w > 5*time.Second {
		t.Fatalf("Yield with a cancelled context waited %v", w)
	}
}

func TestMiddlewareMarksRequests(t *testing.T) {
	var g Gate
	var during int
	h := g.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { during = g.Active() }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if during != 1 || g.Active() != 0 {
		t.Fatalf("active during request %d, after %d; want 1, 0", during, g.Active())
	}
	var nilGate *Gate
	nilGate.Middleware(h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	nilGate.Yield(context.Background(), time.Hour)
}

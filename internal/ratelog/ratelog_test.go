package ratelog

import (
	"testing"
	"time"
)

func TestOneLinePerInterval(t *testing.T) {
	l := Limiter{Every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if _, ok := l.Allow(t0); !ok {
		t.Fatal("first event held back")
	}
	passed := 0
	for i := 1; i < 2800; i++ { // 2,800 failures in 40 s
		if _, ok := l.Allow(t0.Add(time.Duration(i) * 40 * time.Second / 2800)); ok {
			passed++
		}
	}
	if passed != 3 {
		t.Fatalf("%d more lines in 40 s, want 3", passed)
	}
	held, ok := l.Allow(t0.Add(40 * time.Second))
	if !ok || held == 0 {
		t.Fatalf("after the interval: ok %v, held %d", ok, held)
	}
}

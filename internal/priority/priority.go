// Package priority lets interactive work go ahead of background work on a
// busy CPU. Go has no goroutine priorities, and on one core a query waits
// behind whatever runs: the trace-analysis worker can hold the core for a
// whole 10 ms scheduler slice, and a backlog of completed traces keeps it
// runnable for seconds. Queries mark themselves on a Gate; background
// workers call Yield between units of work and stand aside while any
// query runs.
package priority

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"time"
)

// Gate counts the interactive requests in flight. The zero value is ready;
// a nil *Gate does nothing, so callers need no checks.
type Gate struct {
	mu     sync.Mutex
	active int
	idle   chan struct{} // closed when active drops to 0
}

// Begin marks one interactive request as running until end is called.
func (g *Gate) Begin() (end func()) {
	if g == nil {
		return func() {}
	}
	installed.Load().touch()
	g.mu.Lock()
	if g.active == 0 {
		g.idle = make(chan struct{})
	}
	g.active++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			installed.Load().touch() // the hold counts from the end of the last request
			g.mu.Lock()
			if g.active--; g.active == 0 {
				close(g.idle)
			}
			g.mu.Unlock()
		})
	}
}

// Active is the number of interactive requests in flight.
func (g *Gate) Active() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active
}

// Middleware runs every request of h as interactive work.
func (g *Gate) Middleware(h http.Handler) http.Handler {
	if g == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.Begin()()
		h.ServeHTTP(w, r)
	})
}

// Yield is called by background work between units. It always offers the
// processor to other runnable goroutines (ingest requests waiting to
// acknowledge) and, while interactive requests run, waits for them to
// finish, at most maxWait so that a steady stream of queries slows
// background work down without stopping it. It reports how long it waited.
func (g *Gate) Yield(ctx context.Context, maxWait time.Duration) time.Duration {
	runtime.Gosched()
	if g == nil {
		return 0
	}
	g.mu.Lock()
	if g.active == 0 {
		g.mu.Unlock()
		return 0
	}
	idle := g.idle
	g.mu.Unlock()
	start := time.Now()
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Since(start)
}

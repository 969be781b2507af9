// Package ratelog rate-limits log lines that every request of an overload
// or outage would repeat: one line per interval goes through, carrying the
// number held back since the last one.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one event through per Every.
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	last time.Time
	held int
}

// Allow reports whether to log now and, if so, how many events were held
// back since the last line.
func (l *Limiter) Allow(now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.held++
		return 0, false
	}
	held, l.held, l.last = l.held, 0, now
	return held, true
}

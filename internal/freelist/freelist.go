// Package freelist keeps a bounded number of idle values (buffers, as a
// rule) for reuse by later work.
//
// It is what a sync.Pool is not for a server whose heap sits near its
// memory limit: a sync.Pool empties at every other collection, and such a
// server collects several times a second, so its hot buffers were
// allocated and grown again after each collection, which fed the
// collections in turn. A List holds at most its size; a value put into a
// full List is dropped for the collector.
package freelist

// List is a bounded set of idle values. The zero List holds nothing;
// use New.
type List[T any] struct{ idle chan T }

// New returns a List that holds up to n idle values.
func New[T any](n int) *List[T] { return &List[T]{idle: make(chan T, n)} }

// Get takes an idle value; ok is false (and v the zero value) when there
// is none.
func (l *List[T]) Get() (v T, ok bool) {
	select {
	case v = <-l.idle:
		return v, true
	default:
		return v, false
	}
}

// Put hands v back for a later Get; it reports false, and drops v, when
// the List is full. The caller must not use v after Put.
func (l *List[T]) Put(v T) bool {
	select {
	case l.idle <- v:
		return true
	default:
		return false
	}
}

// Len is the number of idle values held.
func (l *List[T]) Len() int { return len(l.idle) }

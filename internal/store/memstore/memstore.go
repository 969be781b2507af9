// Package memstore is an in-memory store.Store: correct and simple, not
// fast or durable. Tests of the query, API and analysis packages use it so
// they do not depend on the embedded engine.
package memstore

import (
	"context"
	"sort"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Store keeps every span in memory.
type Store struct {
	mu     sync.RWMutex
	traces map[model.TraceID][]model.Span
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{traces: map[model.TraceID][]model.Span{}} }

// Write stores copies of the spans.
func (m *Store) Write(ctx context.Context, spans []model.Span) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range spans {
		// Copies that share no memory with the caller's, which an ingest
		// receiver reuses once Write returns.
		m.traces[spans[i].TraceID] = append(m.traces[spans[i].TraceID], spans[i].Clone())
	}
	return nil
}

// Trace returns a copy of the trace's spans.
func (m *Store) Trace(_ context.Context, id model.TraceID, _ store.TimeRange) ([]model.Span, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	sp, ok := m.traces[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]model.Span(nil), sp...), nil
}

// matching returns the matching traces newest first.
func (m *Store) matching(ctx context.Context, q store.Query) ([][]model.Span, error) {
	m.mu.RLock()
	var out [][]model.Span
	for _, spans := range m.traces {
		if store.MatchTrace(&q, spans) {
			out = append(out, append([]model.Span(nil), spans...))
		}
	}
	m.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := func(sp []model.Span) uint64 {
		lo := sp[0].StartUnixNano
		for i := range sp {
			if sp[i].StartUnixNano < lo {
				lo = sp[i].StartUnixNano
			}
		}
		return lo
	}
	sort.Slice(out, func(i, j int) bool {
		si, sj := start(out[i]), start(out[j])
		if si != sj {
			return si > sj
		}
		return string(out[i][0].TraceID[:]) < string(out[j][0].TraceID[:])
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Search returns summaries newest first.
func (m *Store) Search(ctx context.Context, q store.Query) ([]model.TraceSummary, error) {
	traces, err := m.matching(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]model.TraceSummary, len(traces))
	for i, t := range traces {
		out[i] = model.Summarize(t)
	}
	return out, nil
}

// ScanTraces streams matching traces newest first.
func (m *Store) ScanTraces(ctx context.Context, q store.Query, fn func([]model.Span) error) error {
	traces, err := m.matching(ctx, q)
	if err != nil {
		return err
	}
	for _, t := range traces {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(t); err != nil {
			if err == store.ErrStop {
				return nil
			}
			return err
		}
	}
	return nil
}

func (m *Store) each(r store.TimeRange, fn func(s *model.Span)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, spans := range m.traces {
		for i := range spans {
			if r.Overlaps(spans[i].StartUnixNano, spans[i].EndUnixNano) {
				fn(&spans[i])
			}
		}
	}
}

// Services lists service names, sorted.
func (m *Store) Services(_ context.Context, r store.TimeRange) ([]string, error) {
	set := map[string]bool{}
	m.each(r, func(s *model.Span) { set[s.Service] = true })
	return sortedKeys(set), nil
}

// Operations lists span names and kinds of a service, sorted.
func (m *Store) Operations(_ context.Context, service string, r store.TimeRange) ([]store.Operation, error) {
	set := map[store.Operation]bool{}
	m.each(r, func(s *model.Span) {
		if service == "" || s.Service == service {
			set[store.Operation{Name: s.Name, Kind: s.Kind}] = true
		}
	})
	out := make([]store.Operation, 0, len(set))
	for op := range set {
		out = append(out, op)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Kind < out[j].Kind
	})
	return out, nil
}

// AttributeNames lists attribute keys of a scope, sorted.
func (m *Store) AttributeNames(_ context.Context, scope store.Scope, r store.TimeRange) ([]string, error) {
	set := map[string]bool{}
	m.each(r, func(s *model.Span) {
		if scope != store.ScopeResource {
			for _, a := range s.Attrs {
				set[a.Key] = true
			}
		}
		if scope != store.ScopeSpan {
			for _, a := range s.Resource {
				set[a.Key] = true
			}
		}
	})
	return sortedKeys(set), nil
}

// AttributeValues lists distinct values of a key, sorted by text.
func (m *Store) AttributeValues(_ context.Context, scope store.Scope, key string, r store.TimeRange, limit int) ([]model.Value, error) {
	seen := map[string]model.Value{}
	m.each(r, func(s *model.Span) {
		var v model.Value
		var ok bool
		switch scope {
		case store.ScopeSpan:
			v, ok = s.Attrs.Get(key)
		case store.ScopeResource:
			v, ok = s.Resource.Get(key)
		default:
			v, ok = s.Attr(key)
		}
		if ok {
			seen[v.AsString()] = v
		}
	})
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]model.Value, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	return out, nil
}

// Close does nothing.
func (m *Store) Close() error { return nil }

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

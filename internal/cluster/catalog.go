package cluster

import (
	"context"
	"fmt"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// The catalogs (services, operations, attribute names and values) of a
// node's engine cover the blocks in the bucket and its own head; spans
// still only in a peer's head are missing from them until that peer cuts
// them into a block. The cluster's catalogs are the union of every node's
// (sets: a name that several nodes list counts once).
const (
	partServices   = "services"
	partOperations = "operations"
	partAttrNames  = "attribute-names"
	partAttrValues = "attribute-values"
)

type catalogRequest struct {
	Range   store.TimeRange `json:"range"`
	Service string          `json:"service,omitempty"`
	Scope   store.Scope     `json:"scope,omitempty"`
	Key     string          `json:"key,omitempty"`
	Limit   int             `json:"limit,omitempty"`
}

// ServeCatalogParts serves this node's catalogs (of its local engine) to
// its peers.
func ServeCatalogParts(p *Parts, local store.Store) {
	ServePart(p, partServices, func(ctx context.Context, q catalogRequest) ([]string, error) {
		return local.Services(ctx, q.Range)
	})
	ServePart(p, partOperations, func(ctx context.Context, q catalogRequest) ([]store.Operation, error) {
		return local.Operations(ctx, q.Service, q.Range)
	})
	ServePart(p, partAttrNames, func(ctx context.Context, q catalogRequest) ([]string, error) {
		return local.AttributeNames(ctx, q.Scope, q.Range)
	})
	ServePart(p, partAttrValues, func(ctx context.Context, q catalogRequest) ([]model.Value, error) {
		return local.AttributeValues(ctx, q.Scope, q.Key, q.Range, q.Limit)
	})
}

// union merges lists, keeping the first of each key, in the order of less.
func union[T any](lists [][]T, key func(T) string, less func(a, b T) bool) []T {
	seen := map[string]bool{}
	var out []T
	for _, l := range lists {
		for _, v := range l {
			if k := key(v); !seen[k] {
				seen[k] = true
				out = append(out, v)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

func stringKey(s string) string   { return s }
func stringLess(a, b string) bool { return a < b }

// Services lists the services of every node.
func (s *Store) Services(ctx context.Context, r store.TimeRange) ([]string, error) {
	local, err := s.Store.Services(ctx, r)
	if err != nil {
		return nil, err
	}
	lists := append(AskPeers[catalogRequest, []string](ctx, s, partServices, catalogRequest{Range: r}), local)
	return union(lists, stringKey, stringLess), nil
}

// Operations lists the operations of a service on every node.
func (s *Store) Operations(ctx context.Context, service string, r store.TimeRange) ([]store.Operation, error) {
	local, err := s.Store.Operations(ctx, service, r)
	if err != nil {
		return nil, err
	}
	lists := append(AskPeers[catalogRequest, []store.Operation](ctx, s, partOperations, catalogRequest{Range: r, Service: service}), local)
	return union(lists, func(o store.Operation) string { return fmt.Sprintf("%d\x00%s", o.Kind, o.Name) },
		func(a, b store.Operation) bool {
			if a.Name != b.Name {
				return a.Name < b.Name
			}
			return a.Kind < b.Kind
		}), nil
}

// AttributeNames lists the attribute keys of every node.
func (s *Store) AttributeNames(ctx context.Context, scope store.Scope, r store.TimeRange) ([]string, error) {
	local, err := s.Store.AttributeNames(ctx, scope, r)
	if err != nil {
		return nil, err
	}
	lists := append(AskPeers[catalogRequest, []string](ctx, s, partAttrNames, catalogRequest{Range: r, Scope: scope}), local)
	return union(lists, stringKey, stringLess), nil
}

// valueLess is the engine's order of values: by type, numbers by value,
// others by their text.
func valueLess(a, b model.Value) bool {
	if a.Type != b.Type {
		return a.Type < b.Type
	}
	if a.Type == model.TypeInt {
		return a.Int < b.Int
	}
	return a.AsString() < b.AsString()
}

// AttributeValues lists the distinct values of an attribute on every
// node, at most limit.
func (s *Store) AttributeValues(ctx context.Context, scope store.Scope, key string, r store.TimeRange, limit int) ([]model.Value, error) {
	local, err := s.Store.AttributeValues(ctx, scope, key, r, limit)
	if err != nil {
		return nil, err
	}
	peers := AskPeers[catalogRequest, []model.Value](ctx, s, partAttrValues, catalogRequest{Range: r, Scope: scope, Key: key, Limit: limit})
	out := union(append([][]model.Value{local}, peers...), func(v model.Value) string {
		return fmt.Sprintf("%d\x00%s\x00%d\x00%v\x00%t\x00%x", v.Type, v.Str, v.Int, v.Float, v.Bool, v.Bytes)
	}, valueLess)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

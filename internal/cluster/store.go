package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
)

// clockSkew widens the window of recent blocks a node reports as loaded:
// block ids carry their maker's clock.
const clockSkew = time.Minute

// peerTimeout bounds a query to a peer: a slow peer delays an answer by
// this much at most.
const peerTimeout = 5 * time.Second

// Store is the store.Store of a cluster node's query APIs: the local
// engine (which sees every block in the bucket) plus, for trace by id,
// search and scans, what each peer holds that the bucket does not show
// yet. The catalogs are merged from every node's (catalog.go).
type Store struct {
	store.Store
	local   Local
	peers   []*peerClient
	log     *slog.Logger
	failure *prometheus.CounterVec
}

// NewStore wraps the local engine; peers are asked with sec.
func NewStore(eng store.Store, local Local, ring *Ring, sec Security, log *slog.Logger) *Store {
	s := &Store{Store: eng, local: local, log: log.With("component", "cluster"),
		failure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_cluster_peer_query_failures_total",
			Help: "Peer queries that failed; the answer was given without that peer's recent spans."}, []string{"peer"})}
	hc := newPeerHTTP(sec, peerTimeout)
	for _, p := range ring.Others() {
		s.peers = append(s.peers, &peerClient{peer: p, http: hc})
	}
	return s
}

// Collectors are the store's metrics.
func (s *Store) Collectors() []prometheus.Collector { return []prometheus.Collector{s.failure} }

func (s *Store) exclude() []string {
	return s.local.RecentBlocks(s.local.PeerWindow() + clockSkew)
}

// fanOut calls fn for every peer concurrently. A peer that fails (down,
// restarting) is logged and counted and left out: its traces' spans in
// the bucket are still answered; those only in its head or WAL come back
// when it does.
func (s *Store) fanOut(ctx context.Context, what string, fn func(ctx context.Context, p *peerClient) error) {
	var wg sync.WaitGroup
	for _, p := range s.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx, p); err != nil && ctx.Err() == nil {
				answered.Unanswered(ctx, p.peer.ID)
				s.failure.WithLabelValues(p.peer.ID).Inc()
				s.log.Warn("peer query failed; answering without its recent spans", "query", what, "peer", p.peer.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// Trace merges the local spans with the peers'.
func (s *Store) Trace(ctx context.Context, id model.TraceID, hint store.TimeRange) ([]model.Span, error) {
	var local []model.Span
	ex, err := s.localConsistent(func() error {
		var err error
		local, err = s.Store.Trace(ctx, id, hint)
		if errors.Is(err, store.ErrNotFound) {
			local, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	all := local
	s.fanOut(ctx, "trace", func(ctx context.Context, p *peerClient) error {
		spans, err := p.trace(ctx, id, ex)
		mu.Lock()
		all = append(all, spans...)
		mu.Unlock()
		return err
	})
	if len(all) == 0 {
		return nil, store.ErrNotFound
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].StartUnixNano < all[j].StartUnixNano })
	return all, nil
}

// Traces is store.TracesReader's: Trace for many traces at once, the
// local spans of all of them read together, and one request to every
// peer for all of them (in chunks of maxPeerTraceIDs) instead of one per
// trace and peer. out[k] holds the spans of refs[k] ordered by start
// time, nil when no node holds any.
func (s *Store) Traces(ctx context.Context, refs []store.TraceRef) ([][]model.Span, error) {
	// Each id once: the peers' spans are added to its slice.
	first := make(map[model.TraceID]int, len(refs))
	var uniq []store.TraceRef
	for _, r := range refs {
		if _, ok := first[r.ID]; !ok {
			first[r.ID] = len(uniq)
			uniq = append(uniq, r)
		}
	}
	var got [][]model.Span
	ex, err := s.localConsistent(func() error {
		var err error
		got, err = s.localTraces(ctx, uniq)
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([]model.TraceID, len(uniq))
	for i, r := range uniq {
		ids[i] = r.ID
	}
	var mu sync.Mutex
	s.fanOut(ctx, "traces", func(ctx context.Context, p *peerClient) error {
		return p.traces(ctx, ids, ex, func(spans []model.Span) {
			mu.Lock()
			defer mu.Unlock()
			for _, sp := range spans {
				if k, ok := first[sp.TraceID]; ok {
					got[k] = append(got[k], sp)
				}
			}
		})
	})
	out := make([][]model.Span, len(refs))
	for i, r := range refs {
		spans := got[first[r.ID]]
		if len(spans) == 0 {
			continue
		}
		sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartUnixNano < spans[j].StartUnixNano })
		out[i] = spans
	}
	return out, nil
}

// localTraces reads refs from the local engine, together when it can.
func (s *Store) localTraces(ctx context.Context, refs []store.TraceRef) ([][]model.Span, error) {
	if tr, ok := s.Store.(store.TracesReader); ok {
		return tr.Traces(ctx, refs)
	}
	out := make([][]model.Span, len(refs))
	for i, r := range refs {
		spans, err := s.Store.Trace(ctx, r.ID, r.Hint)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		out[i] = spans
	}
	return out, nil
}

// localConsistent runs the local part of a query so that it saw exactly
// the recent blocks that the peers are then told to leave out: a peer's
// block this node loads during the query (a refresh) would otherwise be
// answered twice, once here and once by its node. It repeats the local
// query (at most a few times) while the set changed under it.
func (s *Store) localConsistent(query func() error) ([]string, error) {
	ex := s.exclude()
	for try := 0; ; try++ {
		if err := query(); err != nil {
			return nil, err
		}
		after := s.exclude()
		if slices.Equal(ex, after) || try == 3 {
			return after, nil
		}
		ex = after
	}
}

// Search merges the local results with the peers': parts of one trace on
// several nodes are combined into one summary. Trace-level conditions
// (trace duration) are judged by each node on its part.
func (s *Store) Search(ctx context.Context, q store.Query) ([]model.TraceSummary, error) {
	var local []model.TraceSummary
	ex, err := s.localConsistent(func() error {
		var err error
		local, err = s.Store.Search(ctx, q)
		return err
	})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	parts := map[model.TraceID][]model.TraceSummary{}
	add := func(res []model.TraceSummary) {
		mu.Lock()
		for _, r := range res {
			parts[r.TraceID] = append(parts[r.TraceID], r)
		}
		mu.Unlock()
	}
	add(local)
	s.fanOut(ctx, "search", func(ctx context.Context, p *peerClient) error {
		res, err := p.search(ctx, q, ex)
		add(res)
		return err
	})
	out := make([]model.TraceSummary, 0, len(parts))
	for _, ps := range parts {
		out = append(out, engine.MergeSummaries(ps))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartUnixNano > out[j].StartUnixNano })
	limit := q.Limit
	if limit <= 0 {
		limit = engine.DefaultSearchLimit
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// ScanTraces with a limit (the search of the Jaeger and Tempo APIs) is a
// merged Search followed by a merged Trace of each result; without a
// limit it is scanAll.
func (s *Store) ScanTraces(ctx context.Context, q store.Query, fn func(spans []model.Span) error) error {
	if q.Limit <= 0 {
		return s.scanAll(ctx, q, fn)
	}
	sums, err := s.Search(ctx, q)
	if err != nil {
		return err
	}
	for _, sum := range sums {
		spans, err := s.Trace(ctx, sum.TraceID, store.TimeRange{})
		if errors.Is(err, store.ErrNotFound) {
			continue // expired since the search
		}
		if err != nil {
			return err
		}
		if err := fn(spans); err != nil {
			if errors.Is(err, store.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

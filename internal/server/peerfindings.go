package server

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// replicaRefresh is how often a replica of a down peer's findings looks
// for segments the peer sealed since (it uploads them every 15 s).
const replicaRefresh = 15 * time.Second

// peerReplicas are, with the s3 backend in a cluster, the copies of the
// peers' sealed findings this node answers from while a peer is down
// (nil otherwise). A peer's replica is opened the first time the peer
// does not answer, and kept under data_dir/peers/<node> (its segments
// are downloaded then and dropped by retention.findings).
type peerReplicas struct {
	open func(ctx context.Context, peer string) (*findingstore.Replica, error)
	mu   sync.Mutex
	m    map[string]*findingstore.Replica
}

func (s *Server) peerReplicas(cfg config.Config, ring *cluster.Ring, dir func(string) string) *peerReplicas {
	if ring == nil || cfg.Storage.Backend != "s3" {
		return nil
	}
	p := &peerReplicas{m: map[string]*findingstore.Replica{}}
	p.open = func(ctx context.Context, peer string) (*findingstore.Replica, error) {
		base := filepath.Join(dir("peers"), peer)
		st, err := s.nodeBucketOf(ctx, cfg, "findings", peer, filepath.Join(base, "spool"))
		if err != nil {
			return nil, err
		}
		return findingstore.OpenReplica(findingstore.Options{Dir: filepath.Join(base, "findings"), Retention: cfg.Retention.Findings,
			TraceAvailable: s.hasTrace, Logger: s.log.With("peer", peer)}, st, replicaRefresh)
	}
	s.closers = append(s.closers, p.close)
	return p
}

func (p *peerReplicas) get(ctx context.Context, peer string) (*findingstore.Replica, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.m[peer]; r != nil {
		return r, nil
	}
	r, err := p.open(ctx, peer)
	if err != nil {
		return nil, err
	}
	p.m[peer] = r
	return r, nil
}

func (p *peerReplicas) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, r := range p.m {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// listFallback answers a down peer's findings list; nil without replicas.
func (p *peerReplicas) listFallback() cluster.ListFallback {
	if p == nil {
		return nil
	}
	return func(peer string, r *http.Request) (*findingstore.ListResponse, error) {
		rep, err := p.get(r.Context(), peer)
		if err != nil {
			return nil, err
		}
		return rep.Answer(r)
	}
}

// summaryFallback answers a down peer's findings summary part.
func (p *peerReplicas) summaryFallback() cluster.Fallback[findingstore.SummaryQuery, findingstore.Summary] {
	if p == nil {
		return nil
	}
	return func(ctx context.Context, peer string, q findingstore.SummaryQuery) (findingstore.Summary, error) {
		rep, err := p.get(ctx, peer)
		if err != nil {
			return findingstore.Summary{}, err
		}
		return rep.Summarize(ctx, q)
	}
}

// partListFallback answers a down peer's findings list part (the
// root-cause ranking reads it).
func (p *peerReplicas) partListFallback() cluster.Fallback[findingstore.Query, []findingstore.Stored] {
	if p == nil {
		return nil
	}
	return func(ctx context.Context, peer string, q findingstore.Query) ([]findingstore.Stored, error) {
		rep, err := p.get(ctx, peer)
		if err != nil {
			return nil, err
		}
		return rep.List(ctx, q)
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/statesync"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/summaryarchive"
)

// replicaRefresh is how often a replica of a down peer's findings looks
// for segments the peer sealed since (it uploads them every 15 s).
const replicaRefresh = 15 * time.Second

// peerReplicas are, with the s3 backend in a cluster, the copies of the
// peers' sealed findings and archived summaries this node answers from
// while a peer is down (nil otherwise). A peer's replica is opened the
// first time the peer does not answer, and kept under
// data_dir/peers/<node> (findings segments are downloaded then, archive
// day files as searches reach them; both dropped by retention.findings).
type peerReplicas struct {
	open func(ctx context.Context, peer string) (*peerReplica, error)
	mu   sync.Mutex
	m    map[string]*peerReplica
}

type peerReplica struct {
	findings *findingstore.Replica
	archive  *archiveReplica
}

func (s *Server) peerReplicas(cfg config.Config, ring *cluster.Ring, dir func(string) string) *peerReplicas {
	if ring == nil || cfg.Storage.Backend != "s3" {
		return nil
	}
	p := &peerReplicas{m: map[string]*peerReplica{}}
	p.open = func(ctx context.Context, peer string) (*peerReplica, error) {
		base := filepath.Join(dir("peers"), peer)
		log := s.log.With("peer", peer)
		findings, err := s.nodeBucketOf(ctx, cfg, "findings", peer, filepath.Join(base, "spool"))
		if err != nil {
			return nil, err
		}
		history, err := s.nodeBucketOf(ctx, cfg, "history", peer, filepath.Join(base, "spool"))
		if err != nil {
			return nil, err
		}
		f, err := findingstore.OpenReplica(findingstore.Options{Dir: filepath.Join(base, "findings"), Retention: cfg.Retention.Findings,
			TraceAvailable: s.hasTrace, Logger: log}, findings, replicaRefresh)
		if err != nil {
			return nil, err
		}
		days := statesync.Days{Dir: filepath.Join(base, "summaries"), Day: summaryarchive.FileDay, Retention: cfg.Retention.Findings}
		a, err := summaryarchive.Open(summaryarchive.Options{Dir: days.Dir, Retention: days.Retention,
			Now: func() time.Time { return retentionNow() }, Logger: log})
		if err != nil {
			f.Close()
			return nil, err
		}
		mirror := statesync.NewDayMirror(history, []statesync.Days{days}, 0, func() time.Time { return retentionNow() }, log)
		return &peerReplica{findings: f, archive: &archiveReplica{mirror: mirror, a: a}}, nil
	}
	s.closers = append(s.closers, p.close)
	return p
}

func (p *peerReplicas) get(ctx context.Context, peer string) (*peerReplica, error) {
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
		errs = append(errs, r.findings.Close())
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
		return rep.findings.Answer(r)
	}
}

// fallback makes a part's fallback of answer, run on the peer's replica;
// nil without replicas.
func fallback[Req, Resp any](p *peerReplicas, answer func(ctx context.Context, r *peerReplica, req Req) (Resp, error)) cluster.Fallback[Req, Resp] {
	if p == nil {
		return nil
	}
	return func(ctx context.Context, peer string, req Req) (Resp, error) {
		rep, err := p.get(ctx, peer)
		if err != nil {
			var zero Resp
			return zero, err
		}
		return answer(ctx, rep, req)
	}
}

// summaryFallback answers a down peer's findings summary part.
func (p *peerReplicas) summaryFallback() cluster.Fallback[findingstore.SummaryQuery, findingstore.Summary] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q findingstore.SummaryQuery) (findingstore.Summary, error) {
		return r.findings.Summarize(ctx, q)
	})
}

// partListFallback answers a down peer's findings list part (the
// root-cause ranking reads it).
func (p *peerReplicas) partListFallback() cluster.Fallback[findingstore.Query, []findingstore.Stored] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q findingstore.Query) ([]findingstore.Stored, error) {
		return r.findings.List(ctx, q)
	})
}

// archiveFallback answers a down peer's archived summaries.
func (p *peerReplicas) archiveFallback() cluster.Fallback[store.Query, []summaryarchive.Entry] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q store.Query) ([]summaryarchive.Entry, error) {
		return r.archive.search(ctx, q)
	})
}

// archiveReplica is a down peer's summary archive: the day files a search
// reaches are downloaded from the peer's copy in the bucket first.
type archiveReplica struct {
	mu     sync.Mutex // one download at a time
	mirror *statesync.DayMirror
	a      *summaryarchive.Archive
}

func (r *archiveReplica) search(ctx context.Context, q store.Query) ([]summaryarchive.Entry, error) {
	if !summaryarchive.Searchable(&q) {
		return nil, nil
	}
	inRange := func(name string) bool {
		day, ok := summaryarchive.FileDay(name)
		lo, hi := uint64(day.UnixNano()), uint64(day.Add(24*time.Hour).UnixNano())
		return ok && (q.Range.End == 0 || lo < q.Range.End) && (q.Range.Start == 0 || hi > q.Range.Start)
	}
	r.mu.Lock()
	err := r.mirror.Pull(ctx, inRange)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("reading the archived summaries in the bucket: %w", err)
	}
	return r.a.Search(ctx, q)
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/red/tsdb"
	"github.com/tracedx/tracedx/internal/servicegraph"
	"github.com/tracedx/tracedx/internal/statesync"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/summaryarchive"
)

// replicaRefresh is how often a replica of a down peer's findings looks
// for segments and tail parts the peer copied since: on every query
// (queries at the same time share one listing). A listing is one request,
// and any interval leaves a replica that was read while its peer was
// still up (a blip, peers starting one after the other) without what the
// peer copied at its stop or in its last minute.
const replicaRefresh = 0

// peerReplicas are, with the s3 backend in a cluster, the copies of the
// peers' findings, RED and service-graph history and archived
// summaries this node answers from while a peer is down (nil otherwise).
// A peer's replica is opened the first time the peer does not answer, and
// kept under data_dir/peers/<node> (findings segments are downloaded
// then, day files as queries reach them; all dropped by retention, by the
// byte bound in peercopies.go, and once the peer answers again).
type peerReplicas struct {
	open func(ctx context.Context, peer string) (*peerReplica, error)
	// dir is data_dir/peers; max bounds the bytes under it (0: no bound).
	dir string
	max int64
	log *slog.Logger

	mu sync.Mutex
	m  map[string]*peerReplica
	// used is when each unit of the copies (copyUnit) last answered.
	used map[string]time.Time
	// upSince is when each peer with copies was first seen answering
	// again (absent: down, or not seen yet).
	upSince map[string]time.Time

	trimMu  sync.Mutex // one trim at a time; others skip
	bytes   atomic.Int64
	evicted prometheus.Counter
}

type peerReplica struct {
	peer, base string
	// use is held shared while the replica answers and alone while its
	// files are evicted, so no answer reads a file being deleted.
	use sync.RWMutex
	// fmu guards findings, nil until used and after an eviction.
	fmu          sync.Mutex
	findings     *findingstore.Replica
	openFindings func() (*findingstore.Replica, error)
	days         *dayReplica
	sets         []statesync.Days
}

func (s *Server) peerReplicas(cfg config.Config, ring *cluster.Ring, dir func(string) string) *peerReplicas {
	if ring == nil || cfg.Storage.Backend != "s3" {
		return nil
	}
	p := &peerReplicas{dir: dir("peers"), max: peerCopiesBound(cfg), log: s.log.With("component", "peer-copies"),
		m: map[string]*peerReplica{}, used: map[string]time.Time{}, upSince: map[string]time.Time{}}
	p.open = func(ctx context.Context, peer string) (*peerReplica, error) {
		base := filepath.Join(p.dir, peer)
		log := s.log.With("peer", peer)
		findings, err := s.nodeBucketOf(ctx, cfg, "findings", peer, filepath.Join(base, "spool"))
		if err != nil {
			return nil, err
		}
		history, err := s.nodeBucketOf(ctx, cfg, "history", peer, filepath.Join(base, "spool"))
		if err != nil {
			return nil, err
		}
		openFindings := func() (*findingstore.Replica, error) {
			return findingstore.OpenReplica(findingstore.Options{Dir: filepath.Join(base, "findings"), Retention: cfg.Retention.Findings,
				TraceAvailable: s.hasTrace, Logger: log}, findings, replicaRefresh)
		}
		sets := dayFileSets(cfg, func(sub string) string { return filepath.Join(base, sub) })
		a, err := summaryarchive.Open(summaryarchive.Options{Dir: sets[2].Dir, Retention: sets[2].Retention,
			Now: func() time.Time { return retentionNow() }, Logger: log})
		if err != nil {
			return nil, err
		}
		mirror := statesync.NewDayMirror(history, sets, 0, func() time.Time { return retentionNow() }, log)
		// Only today in memory: the node holds its own history too.
		days := &dayReplica{mirror: mirror, archive: a, history: map[string]*tsdb.Store[struct{}]{},
			touch: func(name string) { p.touch(peer + "/" + name) },
			historyOpts: map[string]tsdb.Options{
				red.HistoryName:          {Dir: sets[0].Dir, Name: red.HistoryName, NHist: 1, Retention: sets[0].Retention, MemDays: 1, Logger: log},
				servicegraph.HistoryName: {Dir: sets[1].Dir, Name: servicegraph.HistoryName, NHist: 2, Retention: sets[1].Retention, MemDays: 1, Logger: log},
			}}
		return &peerReplica{peer: peer, base: base, openFindings: openFindings, days: days, sets: sets}, nil
	}
	p.evicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "tracedx_cluster_peer_copies_evicted_total",
		Help: "Files of down peers' copies (a peer's findings count as one) deleted to keep data_dir/peers within cluster.peer_copies_max_bytes."})
	s.reg.MustRegister(p.evicted, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_cluster_peer_copies_bytes",
		Help: "Bytes of the copies of down peers' findings and history under data_dir/peers, as of the last answer from them or check."},
		func() float64 { return float64(p.bytes.Load()) }))
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

// current is the peer's open replica (nil: none).
func (p *peerReplicas) current(peer string) *peerReplica {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[peer]
}

// with runs answer on the peer's replica, then keeps the copies within
// their bound.
func (p *peerReplicas) with(ctx context.Context, peer string, answer func(r *peerReplica) error) error {
	rep, err := p.get(ctx, peer)
	if err != nil {
		return err
	}
	rep.use.RLock()
	for p.current(peer) != rep {
		// Dropped (its peer answers again) before it was locked.
		rep.use.RUnlock()
		if rep, err = p.get(ctx, peer); err != nil {
			return err
		}
		rep.use.RLock()
	}
	err = answer(rep)
	rep.use.RUnlock()
	p.trim()
	return err
}

// findingsOf is the peer's findings replica, opened again after an
// eviction; the findings count as used.
func (p *peerReplicas) findingsOf(r *peerReplica) (*findingstore.Replica, error) {
	p.touch(r.peer + "/" + findingsUnit)
	r.fmu.Lock()
	defer r.fmu.Unlock()
	if r.findings == nil {
		f, err := r.openFindings()
		if err != nil {
			return nil, err
		}
		r.findings = f
	}
	return r.findings, nil
}

// closeFindings closes the findings replica, if open.
func (r *peerReplica) closeFindings() error {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	if r.findings == nil {
		return nil
	}
	err := r.findings.Close()
	r.findings = nil
	return err
}

func (p *peerReplicas) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, r := range p.m {
		errs = append(errs, r.closeFindings())
	}
	return errors.Join(errs...)
}

// listFallback answers a down peer's findings list; nil without replicas.
func (p *peerReplicas) listFallback() cluster.ListFallback {
	if p == nil {
		return nil
	}
	return func(peer string, req *http.Request) (resp *findingstore.ListResponse, err error) {
		err = p.with(req.Context(), peer, func(r *peerReplica) error {
			f, err := p.findingsOf(r)
			if err == nil {
				resp, err = f.Answer(req)
			}
			return err
		})
		return resp, err
	}
}

// fallback makes a part's fallback of answer, run on the peer's replica;
// nil without replicas.
func fallback[Req, Resp any](p *peerReplicas, answer func(ctx context.Context, r *peerReplica, req Req) (Resp, error)) cluster.Fallback[Req, Resp] {
	if p == nil {
		return nil
	}
	return func(ctx context.Context, peer string, req Req) (resp Resp, err error) {
		err = p.with(ctx, peer, func(r *peerReplica) error {
			resp, err = answer(ctx, r, req)
			return err
		})
		return resp, err
	}
}

// summaryFallback answers a down peer's findings summary part.
func (p *peerReplicas) summaryFallback() cluster.Fallback[findingstore.SummaryQuery, findingstore.Summary] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q findingstore.SummaryQuery) (findingstore.Summary, error) {
		f, err := p.findingsOf(r)
		if err != nil {
			return findingstore.Summary{}, err
		}
		return f.Summarize(ctx, q)
	})
}

// partListFallback answers a down peer's findings list part (the
// root-cause ranking reads it).
func (p *peerReplicas) partListFallback() cluster.Fallback[findingstore.Query, []findingstore.Stored] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q findingstore.Query) ([]findingstore.Stored, error) {
		f, err := p.findingsOf(r)
		if err != nil {
			return nil, err
		}
		return f.List(ctx, q)
	})
}

// archiveFallback answers a down peer's archived summaries.
func (p *peerReplicas) archiveFallback() cluster.Fallback[store.Query, []summaryarchive.Entry] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q store.Query) ([]summaryarchive.Entry, error) {
		return r.days.searchArchive(ctx, q)
	})
}

// historyFallback answers a down peer's RED or service-graph records
// (name: red.HistoryName, servicegraph.HistoryName).
func (p *peerReplicas) historyFallback(name string) cluster.Fallback[tsdb.Part, tsdb.Partial] {
	return fallback(p, func(ctx context.Context, r *peerReplica, q tsdb.Part) (tsdb.Partial, error) {
		return r.days.historyPart(ctx, name, q)
	})
}

// dayReplica is a down peer's day files (its RED and service-graph
// history and its summary archive): those a query reaches are downloaded
// from the peer's copy in the bucket first.
type dayReplica struct {
	mu      sync.Mutex // one download at a time; history stores reopened under it
	mirror  *statesync.DayMirror
	archive *summaryarchive.Archive
	// history are the peer's RED and edge stores, opened over the files
	// downloaded so far, by name; historyOpts open them.
	history     map[string]*tsdb.Store[struct{}]
	historyOpts map[string]tsdb.Options
	// touch notes a day file a query reached as used.
	touch func(name string)
}

// pull downloads the day files of the days [from, to) (zero: unbounded)
// that match.
func (r *dayReplica) pull(ctx context.Context, from, to time.Time, match func(name string) (time.Time, bool)) (int, error) {
	n, err := r.mirror.Pull(ctx, func(name string) bool {
		day, ok := match(name)
		ok = ok && (to.IsZero() || day.Before(to)) && (from.IsZero() || day.Add(24*time.Hour).After(from))
		if ok {
			r.touch(name)
		}
		return ok
	})
	if err != nil {
		return n, fmt.Errorf("reading the peer's day files in the bucket: %w", err)
	}
	return n, nil
}

func (r *dayReplica) searchArchive(ctx context.Context, q store.Query) ([]summaryarchive.Entry, error) {
	if !summaryarchive.Searchable(&q) {
		return nil, nil
	}
	var from, to time.Time
	if q.Range.Start != 0 {
		from = time.Unix(0, int64(q.Range.Start))
	}
	if q.Range.End != 0 {
		to = time.Unix(0, int64(q.Range.End))
	}
	r.mu.Lock()
	_, err := r.pull(ctx, from, to, summaryarchive.FileDay)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return r.archive.Search(ctx, q)
}

func (r *dayReplica) historyPart(ctx context.Context, name string, p tsdb.Part) (tsdb.Partial, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.pull(ctx, time.Unix(p.StartMin*60, 0), time.Unix(p.EndMin*60, 0), tsdbDays(name))
	if err != nil {
		return tsdb.Partial{}, err
	}
	st := r.history[name]
	if st == nil || n > 0 {
		// The store reads the recent days at open: open it again over
		// what was downloaded.
		if st, err = tsdb.New[struct{}](r.historyOpts[name]); err != nil {
			return tsdb.Partial{}, err
		}
		r.history[name] = st
	}
	return st.Partial(p)
}

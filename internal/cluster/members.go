package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// pathAlive is where a node answers its peers' liveness probes.
const pathAlive = "/internal/cluster/v1/alive"

// probeTimeout bounds one liveness probe: a node slower than this to say
// it is alive is of no use to a query either.
const probeTimeout = 2 * time.Second

// Members knows which nodes of the cluster answer. What is split between
// the nodes by count rather than by trace is split between those: a
// tenant's ingest rate (each node admits its share of the limit) and the
// alert rules (each rule is evaluated by one node). Nodes that stop
// answering drop out of the split after two missed probes and come back
// at the first answer.
type Members struct {
	ring *Ring
	hc   *peerHTTP
	log  *slog.Logger

	mu sync.RWMutex
	// failed counts each peer's failed probes in a row; a peer is down
	// from downAfter on. Every peer counts as up until then: a node that
	// starts before its peers admits no more than its share, and one
	// missed probe (a restart, a slow moment) moves no rule.
	failed map[string]int

	healthy prometheus.GaugeFunc
}

// NewMembers tracks the nodes of ring, probed with sec.
func NewMembers(ring *Ring, sec Security, log *slog.Logger) *Members {
	m := &Members{ring: ring, hc: newPeerHTTP(sec, probeTimeout), log: log.With("component", "cluster"), failed: map[string]int{}}
	m.healthy = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_cluster_healthy_nodes",
		Help: "Nodes of the cluster that answered their last liveness probe, this one included: tenant rate limits and alert rules are split between them."},
		func() float64 { return float64(m.Healthy()) })
	return m
}

// Collectors are the members' metrics.
func (m *Members) Collectors() []prometheus.Collector { return []prometheus.Collector{m.healthy} }

// RegisterMemberRoutes answers the peers' liveness probes on mux (peer
// token required, like the rest of the peer API).
func RegisterMemberRoutes(mux *http.ServeMux, sec Security) {
	mux.Handle("GET "+pathAlive, sec.requirePeer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})))
}

// Run probes every peer every interval until ctx ends.
func (m *Members) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Probe asks every peer once whether it is alive.
func (m *Members) Probe(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range m.ring.Others() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.probe(ctx, p)
			if ctx.Err() != nil {
				return
			}
			m.mu.Lock()
			was := m.failed[p.ID] >= downAfter
			if err != nil {
				m.failed[p.ID]++
			} else {
				delete(m.failed, p.ID)
			}
			now := m.failed[p.ID] >= downAfter
			m.mu.Unlock()
			switch {
			case now && !was:
				m.log.Warn("peer stopped answering; its share of rate limits and alert rules moves to the others", "peer", p.ID, "err", err)
			case was && !now:
				m.log.Info("peer answers again", "peer", p.ID)
			}
		}()
	}
	wg.Wait()
}

func (m *Members) probe(ctx context.Context, p Peer) error {
	req, err := m.hc.newRequest(ctx, http.MethodGet, p, pathAlive, nil)
	if err != nil {
		return err
	}
	resp, err := m.hc.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("liveness probe of %s: %s", p.ID, resp.Status)
	}
	return nil
}

// downAfter is how many probes in a row a peer must miss to be down.
const downAfter = 2

// Healthy is how many nodes answer, this one included.
func (m *Members) Healthy() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := len(m.ring.peers)
	for _, f := range m.failed {
		if f >= downAfter {
			n--
		}
	}
	return n
}

// Up says whether the peer id counts as answering: it has not missed
// downAfter probes in a row.
func (m *Members) Up(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.failed[id] < downAfter
}

// Owns says whether this node is the one of the answering nodes that
// handles key (an alert rule's name): the node with the highest hash of
// its id and the key (rendezvous hashing), so that a node leaving moves
// only its own keys, and every node that sees the same nodes answering
// picks the same owner.
func (m *Members) Owns(key string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	best, bestHash := -1, uint64(0)
	for i, p := range m.ring.peers {
		if i != m.ring.self && m.failed[p.ID] >= downAfter {
			continue
		}
		if h := xxhash.Sum64String(p.ID + "\x00" + key); best < 0 || h > bestHash {
			best, bestHash = i, h
		}
	}
	return best == m.ring.self
}

// Package servicegraph builds the service dependency map from spans at
// ingest: CLIENT→SERVER parent/child pairs and PRODUCER→CONSUMER pairs (by
// parent or span link) across services, plus edges to uninstrumented peers
// named by peer.service / server.address on CLIENT spans that never get a
// SERVER child, and caller→database edges (a node per database, named by
// db.namespace, else db.system) for database and cache calls. Per edge it keeps 1-minute records (calls,
// failures, client- and server-side latency histograms) in the same engine
// and files as RED metrics, so any time window can be queried, and exposes
// the traces_service_graph_* Prometheus series Grafana's service map reads.
//
// The two halves of a call usually arrive in different batches (each
// service exports on its own), so they meet in a bounded pairing cache keyed
// by (trace id, client span id) with an expiry (PairTimeout). Durability is
// that of RED metrics: a kill -9 loses the unflushed minutes and the
// pending (unpaired) halves.
package servicegraph

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Connection types, as Tempo's connection_type label.
const (
	ConnUnset           uint8 = 0
	ConnVirtualNode     uint8 = 1
	ConnMessagingSystem uint8 = 2
	ConnDatabase        uint8 = 3
)

var connNames = [...]string{"", "virtual_node", "messaging_system", "database"}

// ConnName is the connection_type label value ("" for a plain call).
func ConnName(c uint8) string {
	if int(c) < len(connNames) {
		return connNames[c]
	}
	return ""
}

// Options configure the graph.
type Options struct {
	// Dir holds the day files ("" = memory only).
	Dir string
	// Retention of the 1-minute edge records (default 30 days).
	Retention time.Duration
	// FlushInterval of compaction + disk append (default 30 s).
	FlushInterval time.Duration
	// PairTimeout is how long one half of a call waits for the other
	// (default 10 s, Tempo's default wait).
	PairTimeout time.Duration
	// MaxPending bounds the pairing cache (default 50000 halves, ~16 MB
	// with the map's and the expiry queue's slack); when full, the oldest
	// halves are resolved early (counted as evicted).
	MaxPending int
	// MaxEdges caps (client, server, type) series (default 20000).
	MaxEdges int
	// MemoryDays of compacted minutes kept decoded in memory (default 2).
	MemoryDays int
	// NodeStats, when set, supplies node figures (entry-span rate, error
	// rate, p95); pass the *red.Metrics. Without it, or for nodes it does
	// not know (uninstrumented peers), nodes are described by their
	// incoming edges.
	NodeStats NodeStatser
}

// NodeStatser supplies per-service node figures over a window;
// *red.Metrics implements it.
type NodeStatser interface {
	ServiceStats(ctx context.Context, start, end time.Time) (map[string]red.ServiceStat, error)
}

type exemplar struct {
	trace model.TraceID
	us    uint64
	ns    uint64
}

// edgeProm is the cumulative state behind one edge's Prometheus series.
type edgeProm struct {
	total, failed        uint64
	clientN, serverN     uint64
	clientSum, serverSum uint64 // µs
	client, server       [tsdb.NumProm]uint64
	exClient, exServer   [tsdb.NumProm]exemplar
}

type pendKey struct {
	trace model.TraceID
	span  model.SpanID
}

// half is one side of a call. Strings point into the span (no copy): a
// half lives at most PairTimeout.
type half struct {
	service  string
	peer     string
	startNS  uint64
	endNS    uint64
	us       uint64
	peerConn uint8
	kind     model.SpanKind
	failed   bool
}

// pending is the half that arrived first. Kept under 128 bytes so the map
// stores it inline (larger values cost an allocation per insert).
type pending struct {
	h        half
	isServer bool
	deadline int64
}

// peerKey is a (client service, named peer) pair.
type peerKey struct{ service, peer string }

// peerStat tracks whether calls to a named peer ever pair. A peer that is
// not instrumented (no SERVER spans) would otherwise hold every call to it
// in the pairing cache for PairTimeout: at high rates most of the cache's
// memory and of its CPU (random probes of a large map).
type peerStat struct {
	unpaired uint32 // consecutive calls resolved without a partner
	calls    uint32
}

const (
	// uninstrumentedAfter consecutive unpaired calls mark a peer as
	// uninstrumented: its calls are recorded without waiting, except
	// one in probeEvery, which still waits so a peer that gets
	// instrumented is noticed (its first pairing clears the mark).
	uninstrumentedAfter = 100
	probeEvery          = 64
	maxPeerStats        = 10000
)

type queued struct {
	key      pendKey
	deadline int64
}

// Graph is the service graph. Safe for concurrent use.
type Graph struct {
	st  *tsdb.Store[edgeProm]
	log *slog.Logger
	opt Options
	now func() time.Time
	// remote gives the other cluster nodes' edges (nil: single node).
	remote tsdb.Remote

	mu      sync.Mutex // pairing cache; taken once per Observe batch
	pending map[pendKey]pending
	// pendingPeak is the largest size of pending since it was last
	// rebuilt: Go maps never shrink, and a map emptied by deletions keeps
	// its memory and makes every lookup of an absent key probe far.
	pendingPeak int
	peers       map[peerKey]*peerStat
	queue       []queued
	qhead       int
	// nowMin is the current minute as of the latest Observe or expiry:
	// reading the clock per recorded edge was a measurable share of ingest.
	nowMin int64
	// dbPeers interns the "system/destination" names of messaging peers,
	// which would otherwise be concatenated for every call.
	dbPeers map[[2]string]string
	// counters for /metrics-less introspection and tests
	paired, virtual, dropped, evicted uint64
	immediate                         uint64 // calls to uninstrumented peers recorded without waiting

	startOnce sync.Once
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// HistoryName prefixes the day files of the edge history in Options.Dir.
const HistoryName = "edges"

// New opens the graph, restoring persisted edge series from opt.Dir.
func New(opt Options, log *slog.Logger) (*Graph, error) {
	if log == nil {
		log = slog.Default()
	}
	if opt.Retention <= 0 {
		opt.Retention = 30 * 24 * time.Hour
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = 30 * time.Second
	}
	if opt.PairTimeout <= 0 {
		opt.PairTimeout = 10 * time.Second
	}
	if opt.MaxPending <= 0 {
		opt.MaxPending = 50000
	}
	st, err := tsdb.New[edgeProm](tsdb.Options{
		Dir: opt.Dir, Name: HistoryName, NHist: 2, Retention: opt.Retention,
		MemDays: opt.MemoryDays, MaxSeries: opt.MaxEdges, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("service graph: %w", err)
	}
	return &Graph{st: st, log: log, opt: opt, now: time.Now, pending: map[pendKey]pending{}, peers: map[peerKey]*peerStat{}, done: make(chan struct{})}, nil
}

// Start runs expiry of unpaired halves (every second) and the periodic
// flush until ctx ends or Close is called.
func (g *Graph) Start(ctx context.Context) {
	g.startOnce.Do(func() {
		ctx, g.cancel = context.WithCancel(ctx)
		go g.loop(ctx)
	})
}

func (g *Graph) loop(ctx context.Context) {
	defer close(g.done)
	exp := time.NewTicker(time.Second)
	defer exp.Stop()
	fl := time.NewTicker(g.opt.FlushInterval)
	defer fl.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-exp.C:
			g.Expire()
		case <-fl.C:
			if err := g.st.Flush(g.now(), false); err != nil {
				g.log.Error("service graph flush failed", "err", err)
			}
		}
	}
}

// Close stops background work, resolves every pending half (unpaired
// clients with a peer become edges) and persists all open minutes.
func (g *Graph) Close() error {
	var err error
	g.closeOnce.Do(func() {
		if g.cancel != nil {
			g.cancel()
			<-g.done
		}
		g.mu.Lock()
		g.nowMin = tsdb.UnixMinute(g.now())
		g.expireLocked(1<<63-1, true)
		g.mu.Unlock()
		err = g.st.Flush(g.now(), true)
	})
	return err
}

// Flush compacts closed minutes and persists them now.
func (g *Graph) Flush() error { return g.st.Flush(g.now(), false) }

// Expire resolves halves whose pairing window has passed.
func (g *Graph) Expire() {
	t := g.now()
	now := t.UnixNano()
	g.mu.Lock()
	g.nowMin = tsdb.UnixMinute(t)
	g.expireLocked(now, false)
	g.shrinkLocked()
	g.mu.Unlock()
}

// shrinkLocked rebuilds the pairing map once it holds under an eighth of
// its peak (after a burst, or once uninstrumented peers stop waiting).
func (g *Graph) shrinkLocked() {
	g.pendingPeak = max(g.pendingPeak, len(g.pending))
	if g.pendingPeak < 4096 || len(g.pending)*8 > g.pendingPeak {
		return
	}
	m := make(map[pendKey]pending, len(g.pending))
	for k, v := range g.pending {
		m[k] = v
	}
	g.pending, g.pendingPeak = m, len(m)
}

// Observe pairs the spans of a batch with each other and with halves from
// earlier batches. One lock per batch; no allocation per span once the
// cache has grown.
func (g *Graph) Observe(spans []model.Span) {
	t := g.now()
	now := t.UnixNano()
	deadline := now + int64(g.opt.PairTimeout)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nowMin = tsdb.UnixMinute(t)
	g.expireLocked(now, false)
	for i := range spans {
		sp := &spans[i]
		switch sp.Kind {
		case model.KindClient, model.KindProducer:
			h := halfOf(sp)
			h.peer, h.peerConn = g.peerOf(sp)
			k := pendKey{sp.TraceID, sp.SpanID}
			if p, ok := g.pending[k]; ok {
				if p.isServer {
					delete(g.pending, k)
					g.record(sp.TraceID, &h, &p.h)
				}
				continue // else a duplicate client span
			}
			if h.peerConn == ConnDatabase {
				// Databases rarely have SERVER spans: record the edge to the
				// database node now (as Tempo does) instead of holding the
				// half for PairTimeout. At high rates these halves were most
				// of the cache.
				g.resolveUnpaired(sp.TraceID, &pending{h: h})
				continue
			}
			if h.peer != "" {
				if st := g.peers[peerKey{h.service, h.peer}]; st != nil && st.unpaired >= uninstrumentedAfter {
					if st.calls++; st.calls%probeEvery != 0 {
						g.immediate++
						g.resolveUnpaired(sp.TraceID, &pending{h: h})
						continue
					}
				}
			}
			g.insert(k, pending{h: h, deadline: deadline})
		case model.KindServer, model.KindConsumer:
			h := halfOf(sp)
			var keys [3]pendKey
			n := 0
			if !sp.ParentSpanID.IsZero() {
				keys[n] = pendKey{sp.TraceID, sp.ParentSpanID}
				n++
			}
			if sp.Kind == model.KindConsumer {
				for j := 0; j < len(sp.Links) && n < len(keys); j++ {
					keys[n] = pendKey{sp.Links[j].TraceID, sp.Links[j].SpanID}
					n++
				}
			}
			paired := false
			for _, k := range keys[:n] {
				if p, ok := g.pending[k]; ok && !p.isServer {
					delete(g.pending, k)
					g.record(k.trace, &p.h, &h)
					paired = true
					break
				}
			}
			if paired {
				continue
			}
			for _, k := range keys[:n] {
				if _, ok := g.pending[k]; !ok {
					g.insert(k, pending{h: h, isServer: true, deadline: deadline})
				}
			}
		}
	}
}

func halfOf(sp *model.Span) half {
	return half{service: sp.Service, kind: sp.Kind, startNS: sp.StartUnixNano, endNS: sp.EndUnixNano,
		us: sp.DurationNano() / 1000, failed: sp.StatusCode == model.StatusError}
}

// peerOf names the remote side of a CLIENT/PRODUCER span for when no
// SERVER/CONSUMER span answers it (an uninstrumented service, a database,
// a broker).
//
// One pass over the attributes instead of a lookup per candidate key: this
// runs for every CLIENT and PRODUCER span at ingest.
func (g *Graph) peerOf(sp *model.Span) (string, uint8) {
	const (
		peerService = iota
		dbSystemName
		dbSystem
		dbNamespace
		dbName
		msgSystem
		msgDestName
		msgDest
		serverAddress
		netPeerName
		rpcService
		nKeys
	)
	var at [nKeys]*model.Value // first occurrence of each key
	for i := range sp.Attrs {
		var k int
		switch sp.Attrs[i].Key {
		case "peer.service":
			k = peerService
		case "db.system.name":
			k = dbSystemName
		case "db.system":
			k = dbSystem
		case "db.namespace":
			k = dbNamespace
		case "db.name":
			k = dbName
		case "messaging.system":
			k = msgSystem
		case "messaging.destination.name":
			k = msgDestName
		case "messaging.destination":
			k = msgDest
		case "server.address":
			k = serverAddress
		case "net.peer.name":
			k = netPeerName
		case "rpc.service":
			k = rpcService
		default:
			continue
		}
		if at[k] == nil {
			at[k] = &sp.Attrs[i].Value
		}
	}
	// str is Attrs.Str over the given keys: the first present one's value.
	str := func(a, b, c int) string {
		for _, k := range [3]int{a, b, c} {
			if k >= 0 && at[k] != nil {
				return at[k].AsString()
			}
		}
		return ""
	}
	// A database or cache is a node of its own, named as Tempo names it:
	// peer.service when the caller set one, else the database
	// (db.namespace, formerly db.name), else the system (db.system.name,
	// formerly db.system). A bare number is Redis's database index, not a
	// name: the system names the node then.
	sys, ns := str(dbSystemName, dbSystem, -1), str(dbNamespace, dbName, -1)
	if isIndex(ns) && sys != "" {
		ns = ""
	}
	if sys != "" || ns != "" {
		if v := str(peerService, -1, -1); v != "" {
			return v, ConnDatabase
		}
		if ns != "" {
			return ns, ConnDatabase
		}
		return sys, ConnDatabase
	}
	if v := str(peerService, -1, -1); v != "" {
		return v, ConnVirtualNode
	}
	if sys := str(msgSystem, -1, -1); sys != "" {
		if d := str(msgDestName, msgDest, -1); d != "" {
			return g.joinPeer(sys, d), ConnMessagingSystem
		}
		return sys, ConnMessagingSystem
	}
	if v := str(serverAddress, netPeerName, rpcService); v != "" {
		return v, ConnVirtualNode
	}
	return "", ConnUnset
}

// isIndex reports whether s is a bare database number.
func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// joinPeer returns "a/b", interned: queues are few, their calls many.
func (g *Graph) joinPeer(a, b string) string {
	k := [2]string{a, b}
	if v, ok := g.dbPeers[k]; ok {
		return v
	}
	if g.dbPeers == nil || len(g.dbPeers) >= 4096 {
		g.dbPeers = map[[2]string]string{} // a flood of names must not grow it without bound
	}
	v := strings.Clone(b)
	if a != "" {
		v = a + "/" + b
	}
	// The key's strings may point into a request's buffer; keep copies.
	g.dbPeers[[2]string{strings.Clone(a), strings.Clone(b)}] = v
	return v
}

func (g *Graph) insert(k pendKey, p pending) {
	if len(g.pending) >= g.opt.MaxPending {
		g.evictOldest()
	}
	g.pending[k] = p
	if len(g.queue)-g.qhead > 2*g.opt.MaxPending+1024 {
		g.compactQueue()
	}
	g.queue = append(g.queue, queued{k, p.deadline})
}

// compactQueue drops queue entries of halves already paired, so the queue
// stays proportional to the pending halves rather than to rate × timeout.
func (g *Graph) compactQueue() {
	out := g.queue[:0]
	for _, q := range g.queue[g.qhead:] {
		if p, ok := g.pending[q.key]; ok && p.deadline == q.deadline {
			out = append(out, q)
		}
	}
	for i := len(out); i < len(g.queue); i++ {
		g.queue[i] = queued{}
	}
	g.queue, g.qhead = out, 0
}

func (g *Graph) evictOldest() {
	for g.qhead < len(g.queue) {
		q := g.queue[g.qhead]
		g.qhead++
		if p, ok := g.pending[q.key]; ok && p.deadline == q.deadline {
			delete(g.pending, q.key)
			g.evicted++
			g.resolveUnpaired(q.key.trace, &p)
			return
		}
	}
}

// expireLocked resolves entries whose deadline ≤ now (all of them when
// all is set).
func (g *Graph) expireLocked(now int64, all bool) {
	for g.qhead < len(g.queue) {
		q := g.queue[g.qhead]
		if !all && q.deadline > now {
			break
		}
		g.qhead++
		if p, ok := g.pending[q.key]; ok && p.deadline == q.deadline {
			delete(g.pending, q.key)
			g.resolveUnpaired(q.key.trace, &p)
		}
	}
	// Reuse the queue's backing array once the consumed prefix dominates.
	if g.qhead > 1024 && g.qhead*2 > len(g.queue) {
		n := copy(g.queue, g.queue[g.qhead:])
		g.queue = g.queue[:n]
		g.qhead = 0
	} else if g.qhead == len(g.queue) {
		g.queue = g.queue[:0]
		g.qhead = 0
	}
}

func (g *Graph) resolveUnpaired(trace model.TraceID, p *pending) {
	if !p.isServer && p.h.peer != "" && p.h.peerConn != ConnDatabase {
		// Also when the peer is the client's own service: such a call
		// makes no edge unless it pairs, so it is worth waiting for only
		// while it sometimes does.
		k := peerKey{p.h.service, p.h.peer}
		st := g.peers[k]
		if st == nil && len(g.peers) < maxPeerStats {
			st = &peerStat{}
			g.peers[k] = st
		}
		if st != nil && st.unpaired < 1<<31 {
			st.unpaired++
		}
	}
	if !p.isServer && p.h.peer != "" && p.h.peer != p.h.service {
		g.virtual++
		g.recordEdge(trace, tsdb.Key{A: p.h.service, B: p.h.peer, K: p.h.peerConn}, &p.h, nil)
		return
	}
	g.dropped++
}

func (g *Graph) record(trace model.TraceID, c, s *half) {
	g.paired++
	if c.peer != "" {
		if st := g.peers[peerKey{c.service, c.peer}]; st != nil {
			st.unpaired = 0
		}
	}
	conn := ConnUnset
	if c.kind == model.KindProducer || s.kind == model.KindConsumer {
		conn = ConnMessagingSystem
	}
	g.recordEdge(trace, tsdb.Key{A: c.service, B: s.service, K: conn}, c, s)
}

// recordEdge adds one call; s is nil for a virtual (uninstrumented) peer.
func (g *Graph) recordEdge(trace model.TraceID, k tsdb.Key, c, s *half) {
	nowMin := g.nowMin
	minute := tsdb.MinuteOfNano(c.startNS)
	if minute < nowMin-int64(g.opt.Retention/time.Minute) || minute > nowMin+10 {
		minute = -1
	}
	failed := c.failed || (s != nil && s.failed)
	cb, cpb := tsdb.BucketOf(c.us), tsdb.PromBucketOf(c.us)
	g.st.Update(k, minute, func(acc *tsdb.Acc, e *edgeProm) {
		if acc != nil {
			acc.Count++
			if failed {
				acc.Errors++
			}
			acc.Sum[0] += c.us
			acc.H[0][cb]++
			if s != nil {
				acc.Sum[1] += s.us
				acc.H[1][tsdb.BucketOf(s.us)]++
			}
		}
		e.total++
		if failed {
			e.failed++
		}
		e.clientN++
		e.clientSum += c.us
		e.client[cpb]++
		e.exClient[cpb] = exemplar{trace, c.us, c.endNS}
		if s != nil {
			spb := tsdb.PromBucketOf(s.us)
			e.serverN++
			e.serverSum += s.us
			e.server[spb]++
			e.exServer[spb] = exemplar{trace, s.us, s.endNS}
		}
	})
}

// PairStats reports pairing outcomes since start: calls paired from both
// halves, calls recorded to a virtual peer after expiry, halves dropped
// unpaired, and halves currently waiting.
func (g *Graph) PairStats() (paired, virtual, dropped uint64, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paired, g.virtual, g.dropped, len(g.pending)
}

// Evicted is the number of halves resolved before their PairTimeout
// because the pairing cache was full (MaxPending).
func (g *Graph) Evicted() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.evicted
}

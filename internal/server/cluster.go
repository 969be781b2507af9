package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/baseline"
	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/red"
	"github.com/tracedx/tracedx/internal/red/tsdb"
	"github.com/tracedx/tracedx/internal/servicegraph"
	"github.com/tracedx/tracedx/internal/statesync"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/store/s3store"
	"github.com/tracedx/tracedx/internal/summaryarchive"
	"github.com/tracedx/tracedx/internal/systemic"
)

// blockStorage is where the engine keeps blocks: nil for the default
// (local, under the data directory) or the configured S3 bucket. The WAL
// and the head stay local either way.
func (s *Server) blockStorage(ctx context.Context, cfg config.Config, engineDir string) (engine.BlockStorage, error) {
	if cfg.Storage.Backend != "s3" {
		return nil, nil
	}
	c := cfg.Storage.S3
	sc := s3store.Config{
		Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, CacheBytes: c.CacheBytes,
		SpoolDir: filepath.Join(engineDir, "s3spool"),
		CacheDir: filepath.Join(engineDir, "s3cache"),
		Logger:   s.log,
	}
	if len(cfg.Cluster.Peers) > 0 {
		// Other nodes may still read a compacted block until their next
		// refresh drops it.
		sc.DeleteGrace = 6*cfg.Cluster.RefreshInterval + 30*time.Second
	}
	st, err := s3store.New(ctx, sc)
	if err != nil {
		return nil, err
	}
	s.reg.MustRegister(st.Collectors()...)
	return st, nil
}

// nodeBucket is this node's own area of the bucket, with the s3 backend
// (nil otherwise): <prefix>/<area>/<node id> ("single" for the node id
// of a node outside a cluster).
func (s *Server) nodeBucket(ctx context.Context, cfg config.Config, area, spool string) (blockio.Storage, error) {
	if cfg.Storage.Backend != "s3" {
		return nil, nil
	}
	node := cfg.Cluster.NodeID
	if node == "" {
		node = "single"
	}
	return s.nodeBucketOf(ctx, cfg, area, node, spool)
}

// nodeBucketOf is node's area of the bucket (the s3 backend only).
func (s *Server) nodeBucketOf(ctx context.Context, cfg config.Config, area, node, spool string) (blockio.Storage, error) {
	c := cfg.Storage.S3
	prefix := strings.TrimSuffix(c.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return s3store.New(ctx, s3store.Config{
		Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: prefix + area + "/" + node, Region: c.Region,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, SpoolDir: spool, Logger: s.log,
	})
}

// syncState, with the s3 backend, restores the baselines' and the
// cross-trace detectors' snapshots that the data directory lacks (a lost
// disk) before they are opened, and copies them to the bucket every
// minute and at shutdown (after they are written).
func (s *Server) syncState(ctx context.Context, cfg config.Config, dir func(string) string) error {
	st, err := s.nodeBucket(ctx, cfg, "state", dir("state-spool"))
	if err != nil || st == nil {
		return err
	}
	m := statesync.New(st, []statesync.File{
		{Name: baseline.SnapshotFile, Path: filepath.Join(dir("baselines"), baseline.SnapshotFile)},
		{Name: systemic.SnapshotFile, Path: filepath.Join(dir("systemic"), systemic.SnapshotFile)},
	}, s.log)
	s.mirrored(ctx, "baselines and detector state", stateTimeout, m.Restore, m.Run, m.Upload)
	return s.syncDayFiles(ctx, cfg, dir)
}

// mirrored restores from the bucket, within restoreTimeout, the files
// that the data directory lacks, then has run copy them every minute and
// final copy them at shutdown: after the components that write them
// closed, as closers run last-added first.
func (s *Server) mirrored(ctx context.Context, what string, restoreTimeout time.Duration, restore func(context.Context) error,
	run func(context.Context, time.Duration), final func(context.Context) error) {
	rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	err := restore(rctx)
	cancel()
	if err != nil {
		s.log.Error("restoring from the bucket failed; starting from the local disk", "what", what, "err", err)
	}
	s.background = append(s.background, func(ctx context.Context) { run(ctx, time.Minute) })
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
		defer cancel()
		return final(ctx)
	})
}

// historyUpload is how often what a growing day file (today's RED and
// service-graph history) gained is copied: what it gained since is lost
// with the disk.
const historyUpload = 5 * time.Minute

// dayFileSets are the day files of a data directory: the RED history,
// the service-graph history and the summary archive, in that order.
func dayFileSets(cfg config.Config, dir func(string) string) []statesync.Days {
	history := cfg.MetricsRetention()
	if history <= 0 {
		history = tsdb.DefaultRetention
	}
	return []statesync.Days{
		{Dir: dir("metrics"), Day: tsdbDays(red.HistoryName), Retention: history},
		{Dir: dir("servicegraph"), Day: tsdbDays(servicegraph.HistoryName), Retention: history},
		{Dir: dir("summaries"), Day: summaryarchive.FileDay, Retention: cfg.Retention.Findings},
	}
}

// tsdbDays is the day of a file of the tsdb store named name.
func tsdbDays(name string) func(string) (time.Time, bool) {
	return func(file string) (time.Time, bool) { return tsdb.FileDay(name, file) }
}

// syncDayFiles, with the s3 backend, restores the RED and service-graph
// history and the summary archive's day files that the data directory
// lacks, before they are opened, and copies changed ones to the bucket
// (<prefix>/history/<node>) every minute and at shutdown.
func (s *Server) syncDayFiles(ctx context.Context, cfg config.Config, dir func(string) string) error {
	st, err := s.nodeBucket(ctx, cfg, "history", dir("history-spool"))
	if err != nil || st == nil {
		return err
	}
	m := statesync.NewDayMirror(st, dayFileSets(cfg, dir), historyUpload, func() time.Time { return retentionNow() }, s.log)
	// A lost disk's month of history is gigabytes: more time than for
	// the state snapshots. A restore cut short leaves the rest missing,
	// so the next start downloads it.
	s.mirrored(ctx, "RED and service-graph history, summary archive", 10*time.Minute, m.Restore, m.Run,
		func(ctx context.Context) error { return m.Upload(ctx, true) })
	return nil
}

const stateTimeout = time.Minute

// clusterRing is the cluster's ring, nil for a single node.
func clusterRing(cfg config.Config) (*cluster.Ring, error) {
	if len(cfg.Cluster.Peers) == 0 {
		return nil, nil
	}
	return cluster.NewRing(cfg.Cluster.Peers, cfg.Cluster.NodeID)
}

// withPeerHosts allows the peers' HTTP host names on this node's HTTP
// listener (the Host check refuses names it does not know): peers query
// each other by the names in the peer list.
func withPeerHosts(cfg config.Config) []string {
	hosts := append([]string(nil), cfg.Listen.AllowedHosts...)
	for _, p := range cfg.Cluster.Peers {
		if h, _, err := net.SplitHostPort(p.HTTP); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// clusterEngineOptions splits compaction and retention between the nodes
// and makes each pick up the blocks of the others.
func clusterEngineOptions(o *engine.Options, cfg config.Config, ring *cluster.Ring) {
	if ring == nil {
		return
	}
	o.OwnsBlock = ring.OwnsBlock
	o.RefreshInterval = cfg.Cluster.RefreshInterval
	o.CutInterval = clusterCutInterval(cfg)
}

// clusterCutInterval is how often at most a cluster node cuts its head
// into a block (engine.Options.CutInterval): a node receives a share of
// the spans, and cutting it every second made three nodes write, and open
// each other's, three times the blocks of one. A trace completes at most
// that long after it went idle (a third of trace_idle_timeout, at most
// 3 s) instead of within a second.
func clusterCutInterval(cfg config.Config) time.Duration {
	return min(3*time.Second, cfg.Storage.TraceIdleTimeout/3)
}

// joinCluster wraps the ingest sink (spans go to their trace's owner) and
// the query store (peers' recent spans merged in), and mounts the peer
// API and the merged findings list. A single node gets sink and store back.
// peer says how to reach the peers; a tenant's instance (multitenancy)
// talks to the same tenant's instances on the peers.
func (s *Server) joinCluster(cfg config.Cluster, ring *cluster.Ring, eng *engine.Engine, sink ingest.Sink, peer cluster.Security, log *slog.Logger) (ingest.Sink, store.Store, error) {
	if ring == nil {
		return sink, eng, nil
	}
	cs := cluster.NewStore(eng, eng, ring, peer, log)
	s.reg.MustRegister(cs.Collectors()...)
	log.Info("cluster node", "node_id", ring.Self().ID, "peers", len(ring.Others()), "forward", cfg.Forward)
	if !cfg.Forward {
		return sink, cs, nil
	}
	fw, err := cluster.NewForwarder(ring, sink, peer, log)
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, fw.Close)
	s.reg.MustRegister(fw.Collectors()...)
	return fw, cs, nil
}

// dedupAtOwner leaves the dedup of spans forwarded to their owner to the
// owner (ingest.Config.ForwardsTrace), which stores them.
func dedupAtOwner(c *ingest.Config, cfg config.Cluster, ring *cluster.Ring) {
	if ring != nil && cfg.Forward {
		c.ForwardsTrace = ring.OwnedElsewhere
	}
}

// clusterRoutes mounts the peer query API and merges the findings list.
// A peer that does not answer is answered from its findings in the
// bucket (down, with the s3 backend).
func clusterRoutes(mux *http.ServeMux, ring *cluster.Ring, eng *engine.Engine, apiV1 http.Handler, peer cluster.Security, down *peerReplicas, log *slog.Logger) {
	if ring == nil {
		return
	}
	cluster.RegisterPeerRoutes(mux, eng, peer, log)
	mux.Handle("GET /api/v1/findings", cluster.MergeFindingsOr(apiV1, ring, peer, log, down.listFallback()))
}

// reportAnswers makes every answer of a cluster node name the nodes that
// did not answer its queries (JSON fields of tracedx's own answers, a
// header on every answer); h as it is for a single node.
func reportAnswers(ring *cluster.Ring, h http.Handler) http.Handler {
	if ring == nil {
		return h
	}
	return answered.Middleware(h)
}

// Names of the aggregate parts nodes serve each other.
const (
	partRED             = "red"
	partEdges           = "servicegraph"
	partFindingsSummary = "findings-summary"
	partFindingsList    = "findings-list"
	partArchive         = "summaries-gone"
)

// clusterAggregates makes the aggregate APIs answer for the whole
// cluster. Each node records RED metrics, service-graph edges and
// findings of the traces it owns (and its catalogs hold what its head
// holds), so every node serves its share of these to its peers and merges
// theirs into its answers: RED metrics (v1, Jaeger Monitor API, alert
// counts), the service map and Jaeger dependencies, the findings summary,
// the findings the root-cause ranking reads, and the services, operations
// and attribute catalogs.
// The archive of expired traces' summaries is merged too (each node
// archives the blocks it expires). A peer that does not answer is
// answered, for findings and archived summaries, from its copies in the
// bucket (down). It returns the parts served (nil for a single node), to
// which more can be added.
func clusterAggregates(mux *http.ServeMux, st store.Store, local store.Store, metrics *red.Metrics, graph *servicegraph.Graph, fs *findingstore.Store,
	gone *goneSummaries, peer cluster.Security, down *peerReplicas, log *slog.Logger) *cluster.Parts {
	cs, ok := st.(*cluster.Store)
	if !ok {
		return nil
	}
	parts := &cluster.Parts{}
	cluster.ServeCatalogParts(parts, local)
	serveRecords := func(name string, part func(tsdb.Part) (tsdb.Partial, error), down cluster.Fallback[tsdb.Part, tsdb.Partial]) tsdb.Remote {
		cluster.ServePart(parts, name, func(_ context.Context, p tsdb.Part) (tsdb.Partial, error) { return part(p) })
		return func(ctx context.Context, p tsdb.Part) []tsdb.Partial {
			return cluster.AskPeersOr(ctx, cs, name, p, down)
		}
	}
	metrics.SetRemote(serveRecords(partRED, metrics.Part, down.historyFallback(red.HistoryName)))
	graph.SetRemote(serveRecords(partEdges, graph.Part, down.historyFallback(servicegraph.HistoryName)))
	cluster.ServePart(parts, partFindingsSummary, fs.Summarize)
	fs.SetPeerSummaries(func(ctx context.Context, q findingstore.SummaryQuery) []findingstore.Summary {
		return cluster.AskPeersOr(ctx, cs, partFindingsSummary, q, down.summaryFallback())
	})
	cluster.ServePart(parts, partFindingsList, fs.List)
	fs.SetPeerLists(func(ctx context.Context, q findingstore.Query) [][]findingstore.Stored {
		return cluster.AskPeersOr(ctx, cs, partFindingsList, q, down.partListFallback())
	})
	cluster.ServePart(parts, partArchive, gone.a.Search)
	gone.peers = func(ctx context.Context, q store.Query) [][]summaryarchive.Entry {
		return cluster.AskPeersOr(ctx, cs, partArchive, q, down.archiveFallback())
	}
	cluster.RegisterPartRoutes(mux, parts, peer, log)
	return parts
}

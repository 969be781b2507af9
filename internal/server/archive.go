package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/engine"
	"github.com/tracedx/tracedx/internal/summaryarchive"
)

// retentionNow is the clock trace retention and the summary archive
// measure age by; tests move it days ahead.
var retentionNow = time.Now

// openSummaryArchive opens the archive of expired traces' summaries in
// dir, kept for retention (retention.findings), and registers its size
// metric.
func (s *Server) openSummaryArchive(dir string, retention time.Duration, log *slog.Logger) (*summaryarchive.Archive, error) {
	a, err := summaryarchive.Open(summaryarchive.Options{Dir: dir, Retention: retention, Now: func() time.Time { return retentionNow() },
		Logger: log.With("component", "summaryarchive")})
	if err != nil {
		return nil, err
	}
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_summary_archive_bytes",
		Help: "Bytes of the archive of expired traces' summaries (kept for retention.findings)."},
		func() float64 { return float64(a.Bytes()) }))
	// Appends expire old days too, but appends stop when no block expires.
	s.background = append(s.background, func(ctx context.Context) {
		periodic.Run(ctx, time.Hour, func(context.Context) error { return a.Expire() },
			func(err error) { log.Error("expiring the summary archive", "err", err) })
	})
	return a, nil
}

// archiveExpired is the engine's OnExpire: the summaries of a block's
// traces go to the archive before the block is deleted.
func archiveExpired(a *summaryarchive.Archive) func(context.Context, []engine.ExpiredTrace) error {
	return func(ctx context.Context, ts []engine.ExpiredTrace) error {
		es := make([]summaryarchive.Entry, len(ts))
		for i, t := range ts {
			es[i] = summaryarchive.Entry(t)
		}
		return a.Append(ctx, es)
	}
}

// goneSummaries answers /api/v1/search from the archive for the traces
// no longer stored: a trace whose other fragments are still stored is
// the store's answer.
type goneSummaries struct {
	a      *summaryarchive.Archive
	stored func(model.TraceID) bool
	// peers, in a cluster, are the other nodes' archives' answers: each
	// node archives the blocks it expires.
	peers func(ctx context.Context, q store.Query) [][]summaryarchive.Entry
}

func (g *goneSummaries) SearchGone(ctx context.Context, q store.Query) ([]summaryarchive.Entry, error) {
	es, err := g.a.Search(ctx, q)
	if err != nil {
		return nil, err
	}
	if g.peers != nil {
		es = summaryarchive.Merge(append(g.peers(ctx, q), es), q.Limit)
	}
	out := es[:0]
	for _, e := range es {
		if !g.stored(e.Summary.TraceID) {
			out = append(out, e)
		}
	}
	return out, nil
}

// traceRetention is how long a trace with the given sampling decision was
// kept: sampling's "dropped" ones go after retention.traces, the others
// after the kept-trace retention.
func traceRetention(cfg config.Config) func(sampled string) time.Duration {
	return func(sampled string) time.Duration {
		if sampled == "dropped" {
			if r := cfg.UnkeptTraceRetention(); r > 0 {
				return r
			}
		}
		return cfg.TraceRetention()
	}
}

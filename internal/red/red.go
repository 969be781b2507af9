// Package red computes RED metrics (rate, errors, duration) from spans at
// ingest, per (service, operation, span kind): 1-minute series kept far
// longer than raw spans, a Go query API, JSON endpoints, the Jaeger
// /api/metrics shape and a Prometheus collector with exemplars in the
// span-metrics naming Grafana reads.
//
// Cost model: Observe takes one shard lock per span (32 shards, no global
// lock) and allocates nothing once a series exists; a minute's dense
// accumulator is recycled through a pool when the minute is compacted.
//
// Durability: open minutes are compacted and appended to a per-day file by a
// background flush (every FlushInterval, default 30 s) and on Close. A
// kill -9 loses the minutes not yet flushed — at most the current minute
// plus one flush interval; a restart restores everything flushed.
package red

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/red/tsdb"
)

// Options configure RED metrics.
type Options struct {
	// Dir holds the day files ("" = memory only, lost on restart).
	Dir string
	// Retention of the 1-minute series (default 30 days).
	Retention time.Duration
	// FlushInterval of the background compaction + disk append (default 30 s).
	FlushInterval time.Duration
	// MaxSeries caps (service, operation, kind) series (default 20000);
	// beyond it operations fold into "__overflow__<n>".
	MaxSeries int
	// MemoryDays of compacted minutes kept decoded in memory (default 2);
	// older days are read from disk when queried.
	MemoryDays int
	// ExemplarLabel names the exemplar label holding the trace id
	// (default DefaultExemplarLabel, as Tempo's metrics-generator).
	ExemplarLabel string
}

// exemplar is the last span seen for a bucket: enough to link a metric
// point to a trace.
type exemplar struct {
	trace model.TraceID
	us    uint64
	ns    uint64 // span end, unix ns
}

// promState is the cumulative (since start) state behind the Prometheus
// series of one (service, operation, kind), indexed by status code.
type promState struct {
	calls   [3]uint64
	sumUS   [3]uint64
	bytes   [3]uint64 // OTLP size of the spans (traces_spanmetrics_size_total)
	buckets [3][tsdb.NumProm]uint64
	ex      [3][tsdb.NumProm]exemplar
}

// Metrics is the RED metrics engine. All methods are safe for concurrent use.
type Metrics struct {
	st *tsdb.Store[promState]
	// remote gives the other cluster nodes' records (nil: single node).
	remote tsdb.Remote
	log    *slog.Logger
	opt    Options
	now    func() time.Time

	startOnce sync.Once
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// HistoryName prefixes the day files of the RED history in Options.Dir.
const HistoryName = "red"

// New opens RED metrics, restoring the persisted series from opt.Dir.
// Call Start to run the background flush and Close to flush on shutdown.
func New(opt Options, log *slog.Logger) (*Metrics, error) {
	if log == nil {
		log = slog.Default()
	}
	if opt.Retention <= 0 {
		opt.Retention = 30 * 24 * time.Hour
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = 30 * time.Second
	}
	if opt.ExemplarLabel == "" {
		opt.ExemplarLabel = DefaultExemplarLabel
	}
	st, err := tsdb.New[promState](tsdb.Options{
		Dir: opt.Dir, Name: HistoryName, NHist: 1, Retention: opt.Retention,
		MemDays: opt.MemoryDays, MaxSeries: opt.MaxSeries, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("red metrics: %w", err)
	}
	return &Metrics{st: st, log: log, opt: opt, now: time.Now, done: make(chan struct{})}, nil
}

// Start runs the periodic flush until ctx ends or Close is called.
func (m *Metrics) Start(ctx context.Context) {
	m.startOnce.Do(func() {
		ctx, m.cancel = context.WithCancel(ctx)
		go m.loop(ctx)
	})
}

func (m *Metrics) loop(ctx context.Context) {
	defer close(m.done)
	periodic.Run(ctx, m.opt.FlushInterval, func(context.Context) error { return m.Flush() },
		func(err error) { m.log.Error("red metrics flush failed", "err", err) })
}

// Flush compacts closed minutes and persists them now.
func (m *Metrics) Flush() error { return m.st.Flush(m.now(), false) }

// Close stops the background flush and persists every open minute.
func (m *Metrics) Close() error {
	var err error
	m.closeOnce.Do(func() {
		if m.cancel != nil {
			m.cancel()
			<-m.done
		}
		err = m.st.Flush(m.now(), true)
	})
	return err
}

// futureSlackMin tolerates producer clocks slightly ahead of ours; spans
// further in the future (or older than retention) still count in the
// Prometheus counters but stay out of the minute series.
const futureSlackMin = 10

// Observe records spans. Called by the server after a durable write; cheap:
// one shard lock and no allocation per span.
func (m *Metrics) Observe(spans []model.Span) {
	nowMin := tsdb.UnixMinute(m.now())
	minMin := nowMin - int64(m.opt.Retention/time.Minute)
	for i := range spans {
		sp := &spans[i]
		us := sp.DurationNano() / 1000
		minute := tsdb.MinuteOfNano(sp.StartUnixNano)
		if minute < minMin || minute > nowMin+futureSlackMin {
			minute = -1
		}
		st := sp.StatusCode
		if st > model.StatusError {
			st = model.StatusUnset
		}
		b, pb := tsdb.BucketOf(us), tsdb.PromBucketOf(us)
		size := otlpconv.SpanSize(sp)
		m.st.Update(tsdb.Key{A: sp.Service, B: sp.Name, K: uint8(sp.Kind)}, minute, func(acc *tsdb.Acc, e *promState) {
			if acc != nil {
				acc.Count++
				if st == model.StatusError {
					acc.Errors++
				}
				acc.Sum[0] += us
				acc.H[0][b]++
			}
			e.calls[st]++
			e.sumUS[st] += us
			e.bytes[st] += size
			e.buckets[st][pb]++
			e.ex[st][pb] = exemplar{trace: sp.TraceID, us: us, ns: sp.EndUnixNano}
		})
	}
}

// SetRemote makes queries merge the records of the other nodes of a
// cluster, which record the spans of the traces they own. Call it before
// serving queries.
func (m *Metrics) SetRemote(r tsdb.Remote) { m.remote = r }

// Part is this node's share of a cluster-wide query (what SetRemote's
// function gets from the other nodes).
func (m *Metrics) Part(p tsdb.Part) (tsdb.Partial, error) { return m.st.Partial(p) }

// SeriesCount is the number of (service, operation, kind) series tracked.
func (m *Metrics) SeriesCount() int { return m.st.SeriesCount() }

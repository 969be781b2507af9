// Package engine is tracedx's embedded storage engine: a write-ahead log
// with group commit, an in-memory head of recent traces, and immutable
// Parquet blocks with in-memory trace indexes, compacted and expired in the
// background. See docs/architecture.md for the design.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tracedx/tracedx/internal/freelist"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Options configure an Engine. Zero values pick the defaults noted.
type Options struct {
	// Dir holds the WAL (Dir/wal) and, with the default storage, blocks
	// (Dir/blocks). Required.
	Dir string
	// Storage overrides where blocks live (default: LocalStorage under Dir/blocks).
	Storage BlockStorage

	// IdleTimeout: a trace with no new span for this long is complete
	// (default 10s).
	IdleTimeout time.Duration
	// MaxOpen: a trace still receiving spans this long after its first
	// one reached the head is complete all the same (default 3 ×
	// IdleTimeout). A message requeued forever, a long-lived stream or a
	// pool handing a finished request's context to later queries would
	// otherwise never go idle, and never be analysed. Its later spans are
	// stored as usual and complete it again, as late spans do.
	MaxOpen time.Duration
	// OnTraceComplete, when set, is called from a background goroutine
	// for each completed trace. Late spans of a completed trace complete
	// it again once idle again (or open for MaxOpen again).
	OnTraceComplete func(CompletedTrace)
	// SpanFlags, when set, classifies each written span; the bits are
	// ORed per trace and handed to WantSpans and OnTraceComplete.
	SpanFlags func(*model.Span) uint32
	// WantSpans, when set, says whether OnTraceComplete needs the spans of
	// a trace (nil: always). The traces it declines complete with their
	// summary only, so they are not kept in memory when memory pressure
	// cuts them early, nor decoded, nor read back from blocks. It is asked
	// when a trace is cut early and again when it completes, with the
	// flags of all its spans so far; a trace declined at an early cut and
	// wanted at completion is read back from blocks, which is correct but
	// slow, so answers should rarely change that way. It runs under the
	// engine's locks and must be cheap.
	WantSpans func(id model.TraceID, flags uint32) bool
	// TakeSpans, when set, reports whether OnTraceComplete can take a
	// decoded trace now (a consumer with a bounded queue says no while it
	// lacks the room, or has room only for traces that matter more). A
	// wanted trace completing while it says no is handed over with
	// Declined set and without spans, so the spans of a trace the consumer
	// would skip are neither decompressed, decoded nor read back from
	// blocks. It is asked just before that work. Asked by the completion
	// goroutine with time to spare (Completing.CanWait), it may wait a
	// little for room instead of saying no.
	TakeSpans func(Completing) bool

	// FlushInterval is how often the head is checked for complete traces
	// (default 1s, or IdleTimeout/4 when that is shorter).
	FlushInterval time.Duration
	// CutInterval, when longer than FlushInterval, is how often at most
	// the flusher cuts complete traces into a block while they take less
	// than HeadMaxBytes/16 and memory is not under pressure: a trace
	// then completes (and is analysed) up to CutInterval after it went
	// idle rather than FlushInterval, in fewer, larger blocks. Each block
	// costs a catalog, uploads and, on a shared storage, every other
	// engine's Refresh an opening; a cluster node's share of the spans
	// made three nodes cut three times the blocks of one. 0: every
	// FlushInterval.
	CutInterval time.Duration
	// HeadMaxBytes bounds the memory of spans not yet in blocks (head plus
	// the cut being written). Above a quarter of it, traces are cut to
	// blocks before they are idle (they wait for completion compressed, in
	// at most another quarter); above it, Write returns
	// store.ErrOverloaded (default 128 MiB).
	HeadMaxBytes int64
	// BlockMaxSpans is the target size of compacted blocks (default 2M).
	BlockMaxSpans int64
	// CompactInterval is how often compaction and retention run (default 30s).
	CompactInterval time.Duration
	// Retention deletes blocks whose newest span is older than this
	// (0: keep forever).
	Retention time.Duration
	// UnkeptRetention is how long the traces tail sampling dropped (Drop)
	// stay: compaction moves them to blocks of their own, deleted once
	// their newest span is older than this (or Retention, if shorter).
	// 0: compaction leaves them out.
	UnkeptRetention time.Duration
	// Now, when set, replaces the clock retention measures age by (tests).
	Now func() time.Time
	// OnExpire, when set, is handed the summaries of a block's traces
	// before retention (age or disk budget) deletes the block, so they
	// can outlive it (internal/summaryarchive). An error is logged and
	// the block deleted all the same: retention must make room.
	OnExpire func(ctx context.Context, traces []ExpiredTrace) error
	// MaxDiskBytes is the disk budget of blocks, WAL and ExtraDiskBytes
	// (0: no limit). Retention deletes the oldest blocks while blocks and
	// extra exceed it less a reserve for the WAL (an eighth); the WAL never
	// makes blocks go: while everything together reaches the budget, Write
	// refuses with store.ErrDiskBudget until flushes and retention make
	// room.
	MaxDiskBytes int64
	// ExtraDiskBytes, when set, reports other data kept under the same
	// budget (the findings).
	ExtraDiskBytes func() int64
	// WALSegmentBytes rotates WAL segments (default 64 MiB).
	WALSegmentBytes int64
	// WALGroupWait is how long a WAL record found alone waits for others
	// to share its sync while writes are concurrent, at most as long as
	// the last sync took (see wal.go). 0: 1 ms; negative: never.
	WALGroupWait time.Duration

	// OwnsBlock, when set, says which blocks this engine compacts and
	// expires; the others belong to other engines sharing the storage
	// (see shared.go). Nil: all.
	OwnsBlock func(id string) bool
	// RefreshInterval, when set, re-lists the storage that often to pick
	// up blocks of other engines sharing it (see Refresh).
	RefreshInterval time.Duration

	// YieldBackground, when set, is called by background work between
	// units (compaction every 128 traces, the head cut every 128 traces
	// and completions every 32, unless memory is under pressure) instead
	// of runtime.Gosched: the server's stands aside while queries run, so
	// a query does not share the CPU with block writes, conversion and
	// decompression. It must return soon whatever happens: it delays
	// compaction, which only the disk and the read paths wait on, and the
	// cut, which the head's memory waits on.
	YieldBackground func(ctx context.Context)
	// MemoryTight, when set, reports whether the live heap leaves no room
	// for a conversion of level-0 blocks to Parquet (its chunk, page and
	// index buffers, ~40-50 MB at 64 inputs). Conversions, which only the
	// disk and searches of level-0 data wait on, then wait, at most
	// IdleTimeout per compaction round or quiet conversion. At the end of
	// a burst at the maximum rate the head, the cold tier and the
	// completions of early-cut traces hold the heap at the admission
	// budget until the last traces go idle, and a conversion started
	// beside them kept the live heap at 200-233 MiB of the 256 MiB Go
	// memory limit for 5-8 s: the headroom whose end put RSS over
	// 300 MiB in some such runs.
	MemoryTight func() bool

	Logger *slog.Logger

	// walCreate replaces how WAL segment files are created (tests inject
	// write errors through it).
	walCreate func(path string) (segmentFile, error)
	// quietCheck is how often the store looks whether ingest stopped, to
	// convert level-0 blocks early (default CompactInterval/10; tests
	// shorten it).
	quietCheck time.Duration
}

func (o *Options) defaults() {
	if o.YieldBackground == nil {
		o.YieldBackground = func(context.Context) { runtime.Gosched() }
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Second
	}
	if o.MaxOpen <= 0 {
		o.MaxOpen = 3 * o.IdleTimeout
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
		if o.IdleTimeout/4 < o.FlushInterval {
			o.FlushInterval = max(o.IdleTimeout/4, 10*time.Millisecond)
		}
	}
	if o.HeadMaxBytes <= 0 {
		o.HeadMaxBytes = 128 << 20
	}
	if o.BlockMaxSpans <= 0 {
		o.BlockMaxSpans = 2_000_000
	}
	if o.CompactInterval <= 0 {
		o.CompactInterval = 30 * time.Second
	}
	if o.quietCheck <= 0 {
		o.quietCheck = max(o.CompactInterval/quietChecksPerInterval, time.Millisecond)
	}
	if o.WALSegmentBytes <= 0 {
		o.WALSegmentBytes = 64 << 20
	}
	if o.WALGroupWait == 0 {
		o.WALGroupWait = defaultGroupWait
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// OpenTraces is the number of traces not yet complete: in the head, or cut
// early and waiting to go idle. Cheap enough to poll.
func (e *Engine) OpenTraces() int64 { return e.head.traces.Load() + e.nPending.Load() }

// Stats are counters and gauges for monitoring (Prometheus-friendly: the
// *Total fields only grow).
type Stats struct {
	SpansWrittenTotal    uint64
	WriteBatchesTotal    uint64
	OverloadedTotal      uint64
	WALFsyncsTotal       uint64
	TracesCompletedTotal uint64
	// CompletionReadBacksTotal counts completed traces whose spans had to
	// be read back from blocks (cut early and not kept in memory).
	CompletionReadBacksTotal uint64
	// TracesCompletedOpenTotal counts the completed traces that were still
	// receiving spans: open for MaxOpen, not idle.
	TracesCompletedOpenTotal uint64
	// WriteStallsTotal counts writes that waited for a head cut because
	// the head was over half HeadMaxBytes; WriteStallSeconds is the time
	// they waited, summed.
	WriteStallsTotal      uint64
	WriteStallSeconds     float64
	BlocksFlushedTotal    uint64
	CompactionsTotal      uint64
	RetentionDeletedTotal uint64
	BackgroundErrorsTotal uint64
	// DroppedTracesTotal counts trace fragments Drop took out of kept
	// blocks at compaction (left out, or moved to the unkept tier);
	// DropsPending the traces waiting for their compaction.
	DroppedTracesTotal uint64
	DropsPending       int

	// DiskRefusedTotal counts writes and admissions refused because the
	// disk was full or the disk budget reached; WALFailuresTotal counts
	// failed WAL writes and fsyncs.
	DiskRefusedTotal uint64
	WALFailuresTotal uint64
	// DiskFull is set while writes fail for lack of space.
	DiskFull bool

	HeadTraces int64
	HeadSpans  int64
	HeadBytes  int64
	Blocks     int
	BlockSpans int64
	BlockBytes int64
	// UnkeptBlockSpans and UnkeptBlockBytes are the part of BlockSpans and
	// BlockBytes in blocks of dropped traces (Options.UnkeptRetention).
	UnkeptBlockSpans int64
	UnkeptBlockBytes int64
	WALBytes         int64

	// Trace reads from Parquet blocks look pages up in a cache shared by
	// the process (traceread.go): lookups that hit and missed, bytes held.
	TracePageHitsTotal   uint64
	TracePageMissesTotal uint64
	TracePageCacheBytes  int64

	// Searches with span filters: pages whose rows the pages' bounds
	// ruled out unread, and blocks scanned ahead of the walk (object
	// storage).
	SearchPagesPrunedTotal        uint64
	SearchBlocksScannedAheadTotal uint64
}

// Engine implements store.Store.
type Engine struct {
	opts    Options
	log     *slog.Logger
	storage BlockStorage
	wal     *wal
	head    *head
	cat     *catalog
	lock    *os.File
	sh      shared
	// scanCounters count what searches' span-filter scans saved (Stats).
	scanCounters scanCounters

	// ingestMu is held shared by each Write from its WAL append until its
	// head insert, and exclusively while deciding which WAL segments are
	// no longer needed, so no acknowledged span is ever only in a deleted
	// segment.
	ingestMu sync.RWMutex

	// mu guards the set of readable places: blocks and traces being
	// flushed. Moving traces head→flushing→block happens under it, so a
	// reader holding it shared sees every span exactly once.
	mu       sync.RWMutex
	blocks   []*block
	flushing []map[model.TraceID]*headTrace

	// pending holds traces cut before they were idle (memory pressure):
	// they complete later, from the cold tier (or read back from blocks).
	pendingMu sync.Mutex
	pending   map[model.TraceID]*pendingTrace
	// pendingQ lists pending traces in the order they go idle, so a
	// completion pass looks only at the idle ones: each cut takes the
	// traces idle longest, so later cuts append later lastSeen. Entries of
	// traces completed or cut again since are stale and skipped.
	pendingQ []pendingRef
	cold     coldTier
	nPending atomic.Int64
	// afterCutIDs (tests only; nil otherwise) runs in cutToBlock after the
	// picked traces left the head and before they are registered as
	// pending: where a concurrent Write can slip in.
	afterCutIDs func()
	// cutHeld (benchmarks only; nil otherwise) gets how long a cut held
	// the engine's lock while it took traces out of the head.
	cutHeld func(time.Duration)

	flushingBytes atomic.Int64

	cutMu   sync.Mutex
	cutDone chan struct{} // closed (and replaced) whenever a cut ends

	completions chan completion
	flushNow    chan struct{}
	completeNow chan struct{} // flush loop → pending loop: a cut ended
	flushMu     sync.Mutex    // one head cut at a time
	bgMu        sync.Mutex    // compaction and retention: they remove blocks, so never run together
	cancel      context.CancelFunc
	wg          sync.WaitGroup // flush, pending and maintenance loops
	cwg         sync.WaitGroup // completion loop
	closed      atomic.Bool

	spansWritten, batches, overloaded, completed, flushed, compactions, retained, bgErrors atomic.Uint64
	// readBacks counts early-cut traces completed by reading blocks back
	// because the cold tier did not hold them whole.
	readBacks atomic.Uint64
	// completedOpen counts traces completed while still written to
	// (open for MaxOpen, not idle).
	completedOpen atomic.Uint64
	// stalls and stallNanos count the writes that waited for a cut (the
	// head over half HeadMaxBytes) and the time they waited.
	stalls, stallNanos atomic.Uint64
	// drops are traces to leave out of the next compactions (Drop).
	drops dropSet
	// diskFullAt is when a write last failed for lack of space (unix ns,
	// 0: the last write succeeded).
	diskFullAt atomic.Int64
	// storedBytes is blocks plus ExtraDiskBytes as of the last flush or
	// retention pass (the WAL is counted live).
	storedBytes atomic.Int64
	diskRefused atomic.Uint64
}

// Completing is what TakeSpans is told of a trace before it is decoded.
type Completing struct {
	// Spans is about how many spans the trace has (with those of earlier
	// traces of the same batch), or 1 for a batch whose sizes are not
	// known yet.
	Spans int
	// Summary and Flags are what the head and the cold tier know of the
	// trace; Summary is nil when nothing is known (traces read back from
	// blocks are summarised only once decoded).
	Summary *model.TraceSummary
	Flags   uint32
	// CanWait says TakeSpans may wait for room rather than say no: it is
	// asked by the completion goroutine, with its own queue less than half
	// full and memory not under pressure, so no cut waits behind it. A
	// head cut completes its traces in one burst (a cluster node's every
	// 3 s), which a consumer keeping up on average takes by waiting for
	// room where it would otherwise skip the burst's end.
	CanWait bool
}

// CompletedTrace is what OnTraceComplete receives.
type CompletedTrace struct {
	ID model.TraceID
	// Summary, RootSpanID and Versions describe the spans the engine held
	// since the trace last completed (all of them, unless late spans
	// complete it again); when spans were read back from blocks they are
	// computed from Spans.
	Summary    model.TraceSummary
	RootSpanID model.SpanID
	// Versions is parallel to Summary.Services: the service.version
	// resource attribute of the service's first span ("" when unset).
	Versions []string
	// Flags ORs Options.SpanFlags over the spans.
	Flags uint32
	// Spans are every span of the trace, or nil when WantSpans declined.
	Spans []model.Span
	// Declined: the trace was wanted but TakeSpans said no when it
	// completed; Spans is nil, and Summary, RootSpanID, Versions and Flags
	// are set only when the engine knew them without decoding
	// (Summary.SpanCount > 0).
	Declined bool
}

type completion struct {
	id    model.TraceID
	meta  traceMeta
	want  bool
	buf   []byte // framed spans from the head, decoded by the completion goroutine
	n     int
	spans []model.Span // read back from blocks
	// declined: wanted, but TakeSpans said no (see Options.TakeSpans)
	declined bool
	// readBack: spans and buf were read back from the head and blocks in
	// no particular order; meta is recomputed from them.
	readBack bool
	// hinted: a read-back trace whose meta, until it is recomputed, is
	// that of the spans it had cut early, which describes it to TakeSpans.
	hinted bool
}

var _ store.Store = (*Engine)(nil)

// Open opens (creating if needed) the engine in opts.Dir, replays the WAL
// and starts background work.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Dir == "" {
		return nil, errors.New("engine: Options.Dir is required")
	}
	opts.defaults()
	walDir := filepath.Join(opts.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("create wal dir: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cold: coldTier{budget: opts.HeadMaxBytes / 4},
		// Level-0 blocks are converted about CompactInterval after their
		// cut; a few rounds of slack cover a busy compactor.
		drops:       dropSet{ttl: max(4*opts.CompactInterval, 2*time.Minute)},
		opts:        opts,
		log:         opts.Logger.With("component", "store"),
		head:        newHead(opts.SpanFlags, opts.OnTraceComplete != nil),
		cat:         newCatalog(),
		lock:        lock,
		pending:     map[model.TraceID]*pendingTrace{},
		completions: make(chan completion, 1024),
		cutDone:     make(chan struct{}),
		flushNow:    make(chan struct{}, 1),
		completeNow: make(chan struct{}, 1),
	}
	fail := func(err error) (*Engine, error) {
		for _, b := range e.blocks {
			b.release()
		}
		lock.Close()
		return nil, err
	}
	e.storage = opts.Storage
	if e.storage == nil {
		ls, err := NewLocalStorage(filepath.Join(opts.Dir, "blocks"))
		if err != nil {
			return fail(err)
		}
		e.storage = ls
	}
	e.sh.created = map[string]bool{}
	e.sh.lateCat = map[string]time.Time{}
	e.storage = createTracker{BlockStorage: e.storage, sh: &e.sh}
	ids, err := e.storage.List(ctx)
	if err != nil {
		return fail(err)
	}
	for _, id := range ids {
		b, err := openBlock(ctx, e.storage, id)
		if err != nil {
			return fail(err)
		}
		e.blocks = append(e.blocks, b)
	}
	// A crash between committing a compacted block and deleting its
	// sources leaves both; the sources go now.
	compacted := map[string]bool{}
	for _, b := range e.blocks {
		for _, src := range b.meta.Sources {
			compacted[src] = true
		}
	}
	keep := e.blocks[:0]
	for _, b := range e.blocks {
		if !compacted[b.id] {
			keep = append(keep, b)
			continue
		}
		b.release()
		if err := e.storage.Delete(ctx, b.id); err != nil {
			return fail(err)
		}
		e.log.Info("deleted block already compacted", "block", b.id)
	}
	clear(e.blocks[len(keep):])
	e.blocks = keep
	for _, b := range e.blocks {
		if b.meta.Catalog != nil {
			e.cat.merge(b.meta.Catalog)
			b.meta.Catalog = nil
		}
	}
	sortBlocks(e.blocks)

	now := time.Now().UnixNano()
	var replayed int
	segs, err := replayWAL(walDir, e.log, func(seq uint64, payload []byte) error {
		spans, err := decodeFramed(payload, nil)
		if err != nil {
			return err
		}
		offs := frameOffsets(payload, len(spans))
		e.head.insert(spans, payload, offs, seq, now)
		e.cat.addServices(spans)
		e.cat.addAttrs(spans)
		replayed += len(spans)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if err := e.dedupeReplayed(); err != nil {
		return fail(err)
	}
	if e.wal, err = openWAL(walDir, opts.WALSegmentBytes, segs, e.log, opts.walCreate, opts.WALGroupWait); err != nil {
		return fail(err)
	}
	e.refreshStoredBytes()
	e.log.Info("storage engine open", "dir", opts.Dir, "blocks", len(e.blocks), "replayed_spans", replayed)

	bg, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(3)
	go e.flushLoop(bg)
	go e.pendingLoop(bg)
	go e.maintenanceLoop(bg)
	if opts.RefreshInterval > 0 {
		e.wg.Add(1)
		go e.refreshLoop(bg)
	}
	e.cwg.Add(1)
	go e.completionLoop(bg)
	return e, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another process: %w", dir, err)
	}
	return f, nil
}

func frameOffsets(p []byte, n int) []int {
	offs := make([]int, 0, n+1)
	off := 0
	offs = append(offs, 0)
	_ = forEachFramed(p, func(b []byte) error {
		off += 4 + len(b)
		offs = append(offs, off)
		return nil
	})
	return offs
}

func sortBlocks(bs []*block) {
	sort.Slice(bs, func(i, j int) bool {
		if bs[i].meta.MinTime != bs[j].meta.MinTime {
			return bs[i].meta.MinTime < bs[j].meta.MinTime
		}
		return bs[i].id < bs[j].id
	})
}

// dedupeReplayed drops replayed spans that are already in a block: a crash
// between committing a block and deleting the WAL segments it covered
// leaves them in both places.
func (e *Engine) dedupeReplayed() error {
	if len(e.blocks) == 0 {
		return nil
	}
	var ids []model.TraceID
	e.head.each(func(t *headTrace) {
		for _, b := range e.blocks {
			if b.idx.find(t.sum.TraceID) >= 0 {
				ids = append(ids, t.sum.TraceID)
				return
			}
		}
	})
	set := make(map[model.TraceID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	cut := e.head.cut(func(t *headTrace) bool { return set[t.sum.TraceID] })
	for id, t := range cut {
		have := map[model.SpanID]bool{}
		for _, b := range e.blocks {
			if i := b.idx.find(id); i >= 0 {
				spans, err := b.readTraceOnce(i)
				if err != nil {
					return err
				}
				for _, s := range spans {
					have[s.SpanID] = true
				}
			}
		}
		spans, err := t.spans()
		if err != nil {
			return err
		}
		var keep []model.Span
		for _, s := range spans {
			if !have[s.SpanID] {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			continue
		}
		var buf []byte
		offs := []int{0}
		for i := range keep {
			buf = appendFramed(buf, &keep[i])
			offs = append(offs, len(buf))
		}
		e.head.insert(keep, buf, offs, t.minSeg, t.lastSeen)
	}
	return nil
}

// Frame buffers of Write: up to idleFrames of them (the usual request's,
// ~350 KB for 500 spans) are kept in a freelist, which outlives
// collections; a sync.Pool emptied at every other one, several times a
// second at the maximum rate, so most requests grew a new buffer (5 % of
// the bytes the server allocated). Larger ones, up to 8 MiB, go to the
// sync.Pool as before.
var (
	idleFrames = freelist.New[*frameBuf](8)
	framePool  = sync.Pool{New: func() any { return new(frameBuf) }}
)

const maxIdleFrameBytes = 2 << 20

func getFrameBuf() *frameBuf {
	if fb, ok := idleFrames.Get(); ok {
		return fb
	}
	return framePool.Get().(*frameBuf)
}

func putFrameBuf(fb *frameBuf) {
	switch {
	case cap(fb.b) <= maxIdleFrameBytes && idleFrames.Put(fb):
	case cap(fb.b) <= 8<<20:
		framePool.Put(fb)
	}
}

type frameBuf struct {
	b    []byte
	offs []int
	res  resEncCache
}

// encode frames spans into fb.b, span i ending at fb.offs[i+1].
func (fb *frameBuf) encode(spans []model.Span) {
	fb.b, fb.offs = fb.b[:0], append(fb.offs[:0], 0)
	fb.res.reset()
	var run resRun
	for i := range spans {
		// A run of spans of one trace is what the head appends to the
		// trace's buffer in one piece: references stay inside it.
		if i == 0 || spans[i].TraceID != spans[i-1].TraceID {
			run.reset()
		}
		fb.b = appendFramedRes(fb.b, &spans[i], fb.res.get(spans[i].Resource), &run)
		fb.offs = append(fb.offs, len(fb.b))
	}
	fb.res.reset() // drop references to the caller's resources
	clear(fb.res.keys[:cap(fb.res.keys)])
}

// Write makes spans durable (WAL + fsync, shared with concurrent writers)
// and adds them to the head.
func (e *Engine) Write(ctx context.Context, spans []model.Span) error {
	if len(spans) == 0 {
		return nil
	}
	if e.closed.Load() {
		return errors.New("store closed")
	}
	if err := e.checkDisk(); err != nil {
		return err
	}
	e.drops.revive(spans)
	// Traces being written to a block still occupy memory until the block
	// is published, so they count against the budget too.
	hb := e.head.bytes.Load() + e.flushingBytes.Load()
	if hb > e.softHeadBytes() {
		e.kickFlush()
		if hb > e.opts.HeadMaxBytes {
			e.overloaded.Add(1)
			return store.ErrOverloaded
		}
		if hb > e.opts.HeadMaxBytes/2 {
			// Write stall: past half the budget, ingest outruns the cuts.
			// Waiting for the running cut (briefly) paces writers to the
			// rate blocks are written and leaves the CPU to the cut, where
			// failing fast would let clients retry at once and spend it on
			// decoding requests that are then refused.
			stalled := time.Now()
			e.waitForCut(ctx, writeStallMax)
			e.stalls.Add(1)
			e.stallNanos.Add(uint64(time.Since(stalled)))
		}
	}
	fb := getFrameBuf()
	defer putFrameBuf(fb)
	fb.encode(spans)
	e.ingestMu.RLock()
	seg, err := e.wal.append(ctx, fb.b)
	if err != nil {
		e.ingestMu.RUnlock()
		if errors.Is(err, store.ErrDiskFull) {
			e.diskFullAt.Store(time.Now().UnixNano())
		}
		return fmt.Errorf("write-ahead log: %w", err)
	}
	e.diskFullAt.Store(0)
	e.head.insert(spans, fb.b, fb.offs, seg, time.Now().UnixNano())
	e.ingestMu.RUnlock()

	if e.nPending.Load() > 0 {
		e.pendingMu.Lock()
		for i := range spans {
			// Back in the head: it completes from there (merged with its
			// cold parts or blocks) when idle.
			if p := e.pending[spans[i].TraceID]; p != nil && !p.inHead {
				e.backInHead(spans[i].TraceID, p)
			}
		}
		e.pendingMu.Unlock()
	}
	e.cat.addServices(spans)
	e.spansWritten.Add(uint64(len(spans)))
	e.batches.Add(1)
	return nil
}

// diskFullProbe is how long after a write failed for lack of space
// Admit refuses requests outright; after it, the next write tries the
// disk again, so ingest resumes by itself once space is back.
const diskFullProbe = time.Second

// Admit reports whether a write would be refused now, before the caller
// spends memory decoding it: store.ErrDiskFull shortly after the disk was
// full, store.ErrDiskBudget at the disk budget, store.ErrOverloaded when
// the head is over HeadMaxBytes. It is cheap (atomic loads).
func (e *Engine) Admit() error {
	if err := e.checkDisk(); err != nil {
		return err
	}
	if e.head.bytes.Load()+e.flushingBytes.Load() > e.opts.HeadMaxBytes {
		e.kickFlush()
		return fmt.Errorf("head over storage.head_max_bytes: %w", store.ErrOverloaded)
	}
	return nil
}

func (e *Engine) checkDisk() error {
	if t := e.diskFullAt.Load(); t != 0 && time.Since(time.Unix(0, t)) < diskFullProbe {
		e.diskRefused.Add(1)
		return store.ErrDiskFull
	}
	if e.overDiskBudget() {
		e.diskRefused.Add(1)
		e.kickFlush()
		return store.ErrDiskBudget
	}
	return nil
}

// overDiskBudget reports whether blocks, WAL and extra data reach
// MaxDiskBytes.
func (e *Engine) overDiskBudget() bool {
	return e.opts.MaxDiskBytes > 0 && e.storedBytes.Load()+e.wal.bytes.Load() >= e.opts.MaxDiskBytes
}

// refreshStoredBytes recomputes the bytes of blocks and extra data.
func (e *Engine) refreshStoredBytes() {
	var n int64
	e.mu.RLock()
	for _, b := range e.blocks {
		n += b.diskBytes()
	}
	e.mu.RUnlock()
	if e.opts.ExtraDiskBytes != nil {
		n += e.opts.ExtraDiskBytes()
	}
	e.storedBytes.Store(n)
}

// walReserve is the part of the disk budget retention leaves free for the
// WAL: the spans not yet in blocks.
func (e *Engine) walReserve() int64 { return e.opts.MaxDiskBytes / 8 }

// writeStallMax bounds how long a Write waits for a cut under memory
// pressure before going ahead (it is still refused above HeadMaxBytes).
const writeStallMax = 250 * time.Millisecond

func (e *Engine) waitForCut(ctx context.Context, d time.Duration) {
	e.cutMu.Lock()
	ch := e.cutDone
	e.cutMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (e *Engine) signalCut() {
	e.cutMu.Lock()
	close(e.cutDone)
	e.cutDone = make(chan struct{})
	e.cutMu.Unlock()
}

func (e *Engine) kickFlush() {
	select {
	case e.flushNow <- struct{}{}:
	default:
	}
}

// Close stops background work and closes files. The head is not flushed:
// it is in the WAL and is replayed on the next Open.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	e.cancel()
	e.wg.Wait()
	close(e.completions)
	e.cwg.Wait()
	err := e.wal.close()
	e.mu.Lock()
	for _, b := range e.blocks {
		b.release()
	}
	e.blocks = nil
	e.mu.Unlock()
	if lerr := e.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// Stats returns current counters.
func (e *Engine) Stats() Stats {
	s := Stats{
		SpansWrittenTotal:        e.spansWritten.Load(),
		WriteBatchesTotal:        e.batches.Load(),
		OverloadedTotal:          e.overloaded.Load(),
		WALFsyncsTotal:           e.wal.fsyncs.Load(),
		TracesCompletedTotal:     e.completed.Load(),
		CompletionReadBacksTotal: e.readBacks.Load(),
		TracesCompletedOpenTotal: e.completedOpen.Load(),
		WriteStallsTotal:         e.stalls.Load(),
		WriteStallSeconds:        time.Duration(e.stallNanos.Load()).Seconds(),
		BlocksFlushedTotal:       e.flushed.Load(),
		CompactionsTotal:         e.compactions.Load(),
		RetentionDeletedTotal:    e.retained.Load(),
		BackgroundErrorsTotal:    e.bgErrors.Load(),
		DiskRefusedTotal:         e.diskRefused.Load(),
		WALFailuresTotal:         e.wal.failures.Load(),
		DiskFull:                 e.diskFullAt.Load() != 0,
		HeadTraces:               e.head.traces.Load(),
		HeadSpans:                e.head.spans.Load(),
		HeadBytes:                e.head.bytes.Load(),
		WALBytes:                 e.wal.bytes.Load(),
	}
	s.SearchPagesPrunedTotal = uint64(e.scanCounters.prunedPages.Load())
	s.SearchBlocksScannedAheadTotal = uint64(e.scanCounters.scansAhead.Load())
	s.DropsPending, s.DroppedTracesTotal = e.drops.stats()
	s.TracePageHitsTotal, s.TracePageMissesTotal, s.TracePageCacheBytes = tracePages.stats()
	e.mu.RLock()
	for _, b := range e.blocks {
		s.Blocks++
		s.BlockSpans += b.meta.Spans
		s.BlockBytes += b.diskBytes()
		if b.meta.Unkept {
			s.UnkeptBlockSpans += b.meta.Spans
			s.UnkeptBlockBytes += b.diskBytes()
		}
	}
	e.mu.RUnlock()
	return s
}

func (b *block) diskBytes() int64 { return b.meta.DataBytes + b.meta.IndexBytes }

func newBlockID() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + hex.EncodeToString(r[:])
}

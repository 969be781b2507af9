// Package findingstore keeps findings durably: the per-trace findings the
// server computes when a trace completes, and the systemic findings of the
// cross-trace detectors. Findings are far fewer than spans and are read by
// time, kind, service and trace, so the store is an append-only JSON-lines
// log in segment files. Only the segment being written is indexed in
// memory; each sealed segment has an index file beside it, of which the
// store keeps only a summary (time range, counts by kind, services, a
// Bloom filter of trace ids) and reads the rest when a query needs that
// segment. So opening takes time and memory per segment, not per finding
// (10M findings used to take 27 s and 275 MB before the server listened),
// and segments without an index (a crash, an older version) are indexed
// in the background while the store already answers from the others.
package findingstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Stored is a finding with the context needed to list it across traces.
// Finding's fields are inlined in JSON (kind, severity, title, trace_id, ...).
type Stored struct {
	analyze.Finding
	// Time is when the problem happened (trace start for per-trace
	// findings, detection time for systemic ones).
	Time      time.Time `json:"time"`
	Service   string    `json:"service,omitempty"`
	Operation string    `json:"operation,omitempty"`
	// ExampleTraceIDs are traces that show a systemic problem.
	ExampleTraceIDs []string `json:"example_trace_ids,omitempty"`
	// Key identifies a systemic finding ("latency_regression/checkout/GET
	// /cart") so detectors can deduplicate across restarts.
	Key      string `json:"key,omitempty"`
	Systemic bool   `json:"systemic,omitempty"`
	// Updated is the latest evaluation that still saw an open systemic
	// finding's condition, and Revision how many times the finding was
	// rewritten with newer figures since it opened (Store.Update): Time
	// stays when it opened, so the finding keeps its place and its ID.
	Updated  time.Time `json:"updated,omitzero"`
	Revision int       `json:"revision,omitempty"`
	// In a cluster's merged answers, a cross-trace finding seen by several
	// nodes (each in its share of the traces) is one finding (JoinSystemic):
	// Joined counts the nodes' findings it joins, Nodes names those nodes
	// when known, Culprits lists every culprit they named when not all the
	// same.
	Joined   int               `json:"joined,omitempty"`
	Nodes    []string          `json:"nodes,omitempty"`
	Culprits []analyze.Culprit `json:"culprits,omitempty"`
	// ID is assigned by the store, increasing in insertion order.
	ID uint64 `json:"id"`
	// TraceAvailable, in list answers when Options.TraceAvailable is set,
	// says whether the finding's trace is still stored; when not,
	// TraceNote says so and the finding's evidence is what remains.
	TraceAvailable *bool  `json:"trace_available,omitempty"`
	TraceNote      string `json:"trace_note,omitempty"`
	// TraceSummary, with a gone trace, is the search that lists the
	// trace's archived summary (kept as long as the finding).
	TraceSummary string `json:"trace_summary,omitempty"`
}

// Options configure a Store.
type Options struct {
	// Dir holds the log segments; created when missing.
	Dir string
	// Retention drops findings older than this (by Time). Default 7 days.
	Retention time.Duration
	// SegmentDuration starts a new log file after this long, so retention
	// can delete whole files. Default 1 h.
	SegmentDuration time.Duration
	// SegmentMaxFindings starts a new log file after this many findings,
	// which bounds what one query reads of an index. Default 100,000.
	SegmentMaxFindings int
	// SyncInterval: 0 fsyncs inside every Put (durable on return); > 0
	// fsyncs at most this often from Run, trading the last interval of
	// findings on power loss (they can be recomputed from the spans) for
	// one fsync per interval instead of one per trace.
	SyncInterval time.Duration
	// TraceAvailable, when set, tells whether a trace is still stored, so
	// list answers can mark findings whose trace retention or sampling
	// removed.
	TraceAvailable func(model.TraceID) bool
	// Bucket, when set, receives a copy of every sealed segment, and Open
	// restores the segments it holds that the local disk lacks (see
	// bucket.go). Each node needs a bucket (prefix) of its own.
	Bucket blockio.Storage
	// UploadInterval is how often Run copies sealed segments to Bucket
	// (default 15 s).
	UploadInterval time.Duration
	// TailInterval is how often Run copies what the open segment gained
	// to Bucket as a tail part (default 1 min): findings older than this
	// are in the bucket even when the node is killed or its disk lost.
	TailInterval time.Duration
	// Now is the clock (tests); default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Query selects findings. Zero fields do not constrain.
type Query struct {
	From, To time.Time // From inclusive, To exclusive
	// Kind may hold several kinds separated by commas.
	Kind    string
	Service string
	TraceID model.TraceID
	// Traces, when not empty, keeps the findings of these traces only; the
	// root-cause ranking asks for its sampled traces' findings, which
	// spares decoding the rest of a busy window's.
	Traces []model.TraceID
	// Systemic: nil both, else only systemic (true) or only per-trace.
	Systemic *bool
	Limit    int // default 100
}

// segment is one log file. The open segment (cur) has its index in memory
// (b); a sealed one has its metadata, and its records on disk.
type segment struct {
	name    string
	f       *os.File // plain JSON lines (the open segment, older sealed ones)
	z       *zFile   // compressed (sealed); then f is nil
	size    int64    // bytes of JSON lines
	created time.Time

	b *indexBuilder // the open segment only

	indexed  bool // sealed: meta, strs and recOff are valid
	packing  bool // being compressed in the background
	meta     segMeta
	strs     []string
	recOff   int64
	idxBytes int64
}

func (seg *segment) idxPath() string { return stem(seg.name) + idxSuffix }

// lines reads the segment's JSON lines, whichever way they are stored.
func (seg *segment) lines() io.ReaderAt {
	if seg.z != nil {
		return seg.z
	}
	return seg.f
}

// diskBytes is what the segment's data takes on disk.
func (seg *segment) diskBytes() int64 {
	if seg.z != nil {
		return seg.z.disk
	}
	return seg.size
}

func (seg *segment) close() {
	if seg.z != nil {
		seg.z.Close()
	} else if seg.f != nil {
		seg.f.Close()
	}
}

// timeRange is the span of finding times in the segment.
func (seg *segment) timeRange() (int64, int64) {
	if seg.b != nil {
		return seg.b.minT, seg.b.maxT
	}
	return seg.meta.minT, seg.meta.maxT
}

func (seg *segment) count() int {
	if seg.b != nil {
		return len(seg.b.entries)
	}
	return seg.meta.count
}

// Store is the findings store. It is safe for concurrent use.
type Store struct {
	opt Options
	log *slog.Logger

	mu     sync.RWMutex
	segs   []*segment // in creation order; cur, when set, is the last
	cur    *segment
	dirty  bool
	nextID uint64
	closed bool

	cache idxCache

	// Segments without an index are indexed by a background goroutine.
	unindexed atomic.Int64
	stopScan  chan struct{}
	scanWG    sync.WaitGroup
	// packWG counts sealed segments being compressed in the background.
	packWG sync.WaitGroup

	// inBucket holds the ids of the segments copied to Bucket; expired
	// those whose copy retention is to delete.
	inBucket map[string]bool
	expired  []string
	// readOnly: a Replica's store, which never writes to the bucket.
	readOnly bool
	// tails holds, by segment id, the ids of the segment's tail parts in
	// the bucket (bucket.go); they go once the segment's own copy is there.
	tails map[string][]string
	// tailMu serialises UploadTail; tailOff bytes of the open segment
	// tailSeg are in the bucket as tail parts.
	tailMu  sync.Mutex
	tailSeg string
	tailOff int64

	// peerSummaries, in a cluster, gives the other nodes' summaries.
	peerSummaries func(ctx context.Context, q SummaryQuery) []Summary
	// peerLists, in a cluster, gives the other nodes' List answers.
	peerLists func(ctx context.Context, q Query) [][]Stored
}

const segPrefix, segSuffix = "findings-", ".jsonl"

// Open opens (or creates) the store in opt.Dir. It reads only the
// metadata of indexed segments; the others are indexed in the background
// (Ready reports when every segment answers queries).
func Open(opt Options) (*Store, error) {
	if opt.Dir == "" {
		return nil, errors.New("findingstore: Dir is required")
	}
	if opt.Retention <= 0 {
		opt.Retention = 7 * 24 * time.Hour
	}
	if opt.SegmentDuration <= 0 {
		opt.SegmentDuration = time.Hour
	}
	if opt.SegmentMaxFindings <= 0 {
		opt.SegmentMaxFindings = 100_000
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.UploadInterval <= 0 {
		opt.UploadInterval = 15 * time.Second
	}
	if opt.TailInterval <= 0 {
		opt.TailInterval = time.Minute
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("findingstore: creating %s: %w", opt.Dir, err)
	}
	s := &Store{opt: opt, log: opt.Logger.With("component", "findingstore"), stopScan: make(chan struct{}),
		cache: idxCache{maxEntries: 1 << 20}, inBucket: map[string]bool{}, tails: map[string][]string{}}
	for _, pattern := range []string{segPrefix + "*" + idxSuffix + ".tmp", segPrefix + "*" + zSuffix + ".tmp", segPrefix + "*.download"} {
		tmps, _ := filepath.Glob(filepath.Join(opt.Dir, pattern))
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	if opt.Bucket != nil {
		ctx, cancel := context.WithTimeout(context.Background(), bucketTimeout)
		err := s.restore(ctx)
		cancel()
		if err != nil {
			// The local findings still answer; sealed segments are
			// copied once the bucket is back.
			s.log.Error("restoring findings from the bucket failed; answering from the local disk", "err", err)
		}
	}
	names, err := segmentFiles(opt.Dir)
	if err != nil {
		return nil, err
	}
	var scan []*segment
	for _, name := range names {
		seg, err := s.openSegment(name)
		if err != nil {
			s.closeFiles()
			return nil, err
		}
		s.segs = append(s.segs, seg)
		if !seg.indexed {
			scan = append(scan, seg)
		}
	}
	if len(scan) > 0 {
		s.unindexed.Store(int64(len(scan)))
		s.log.Info("indexing findings segments in the background", "segments", len(scan))
		s.scanWG.Add(1)
		go s.indexAll(scan)
	}
	return s, nil
}

// openSegment opens a sealed segment: its index metadata when there is a
// whole one, else only the id of its last finding (new ids continue after
// it) and it waits for indexing.
func (s *Store) openSegment(name string) (*segment, error) {
	if strings.HasSuffix(name, zSuffix) {
		return s.openZSegment(name)
	}
	f, err := os.OpenFile(name, os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("findingstore: opening %s: %w", name, err)
	}
	seg := &segment{name: name, f: f, created: time.Unix(0, parseSegTime(name))}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("findingstore: stat %s: %w", name, err)
	}
	seg.size = st.Size()
	m, strs, recOff, err := readMeta(seg.idxPath())
	if err == nil && m.covered <= seg.size {
		if seg.size > m.covered {
			// Segments are sealed before their index is written, so bytes
			// past it are a torn write that was never acknowledged.
			s.log.Warn("cutting bytes after the indexed findings", "file", name, "offset", m.covered, "bytes", seg.size-m.covered)
			if err := f.Truncate(m.covered); err != nil {
				f.Close()
				return nil, fmt.Errorf("findingstore: truncating %s: %w", name, err)
			}
			seg.size = m.covered
		}
		s.adoptIndex(seg, m, strs, recOff)
		return seg, nil
	}
	if err := s.withoutIndex(seg, f, err); err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

// adoptIndex takes a sealed segment's index as read from its file.
func (s *Store) adoptIndex(seg *segment, m segMeta, strs []string, recOff int64) {
	seg.indexed, seg.meta, seg.strs, seg.recOff = true, m, strs, recOff
	seg.idxBytes = idxFileBytes(seg.idxPath())
	s.nextID = max(s.nextID, m.maxID+1)
}

// withoutIndex prepares a segment whose index is missing or unreadable
// (idxErr) to be indexed in the background: its last finding's id keeps
// new ids increasing meanwhile.
func (s *Store) withoutIndex(seg *segment, lines io.ReaderAt, idxErr error) error {
	if idxErr != nil && !errors.Is(idxErr, os.ErrNotExist) {
		s.log.Warn("findings index unreadable, rebuilding it", "file", seg.idxPath(), "err", idxErr)
	}
	id, err := lastID(lines, seg.name, seg.size)
	if err != nil {
		return err
	}
	if id > 0 {
		s.nextID = max(s.nextID, id+1)
	}
	return nil
}

// lastID returns the id of the last whole finding of a segment (0: none),
// reading only its tail.
func lastID(f io.ReaderAt, name string, size int64) (uint64, error) {
	const window = 1 << 20
	start := max(0, size-window)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
		return 0, fmt.Errorf("findingstore: reading the tail of %s: %w", name, err)
	}
	// Drop a torn last line.
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i]
	} else {
		return 0, nil
	}
	for len(buf) > 0 {
		line := buf
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			line, buf = buf[i+1:], buf[:i]
		} else {
			buf = nil
		}
		var rec struct {
			ID uint64 `json:"id"`
		}
		if json.Unmarshal(line, &rec) == nil {
			return rec.ID, nil
		}
	}
	return 0, nil
}

// indexAll indexes segments that have no index, newest first (recent
// findings are asked for most).
func (s *Store) indexAll(segs []*segment) {
	defer s.scanWG.Done()
	for i := len(segs) - 1; i >= 0; i-- {
		select {
		case <-s.stopScan:
			return
		default:
		}
		if beforeIndex != nil {
			beforeIndex()
		}
		if err := s.indexSegment(segs[i]); err != nil {
			s.log.Error("indexing findings segment", "file", segs[i].name, "err", err)
		}
		s.unindexed.Add(-1)
	}
	s.log.Info("findings indexed")
}

// beforeIndex, when set (tests), runs before each segment is indexed in
// the background.
var beforeIndex func()

// indexSegment reads a segment's findings, cuts a torn last line, and
// writes its index.
func (s *Store) indexSegment(seg *segment) error {
	b := newIndexBuilder()
	r := bufio.NewReaderSize(io.NewSectionReader(seg.lines(), 0, seg.size), 256<<10)
	var off int64
	for {
		select {
		case <-s.stopScan:
			return nil
		default:
		}
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var st Stored
			if jerr := json.Unmarshal(line, (*indexFields)(&st)); jerr != nil {
				s.log.Warn("skipping unreadable finding", "file", seg.name, "offset", off, "err", jerr)
			} else {
				b.add(&st, off, int32(len(line)))
			}
			off += int64(len(line))
		} else if len(line) > 0 && seg.f != nil { // compressed segments are written whole
			s.log.Warn("cutting torn finding at end of log", "file", seg.name, "offset", off)
			if terr := seg.f.Truncate(off); terr != nil {
				return fmt.Errorf("findingstore: truncating %s: %w", seg.name, terr)
			}
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("findingstore: reading %s: %w", seg.name, err)
		}
	}
	x := b.view()
	m := x.meta(off)
	recOff, err := writeIndex(seg.idxPath(), x, &m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	seg.size, seg.indexed, seg.meta, seg.strs, seg.recOff = off, true, m, x.strs, recOff
	seg.idxBytes = idxFileBytes(seg.idxPath())
	s.mu.Unlock()
	return nil
}

// indexFields decodes only what the index needs: evidence and the rest
// are skipped.
type indexFields Stored

func (f *indexFields) UnmarshalJSON(b []byte) error {
	var rec struct {
		Kind      string           `json:"kind"`
		TraceID   string           `json:"trace_id"`
		Time      time.Time        `json:"time"`
		Service   string           `json:"service"`
		Operation string           `json:"operation"`
		Severity  analyze.Severity `json:"severity"`
		ImpactMS  float64          `json:"impact_ms"`
		Systemic  bool             `json:"systemic"`
		ID        uint64           `json:"id"`
		Revision  int              `json:"revision"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return err
	}
	f.Kind, f.TraceID, f.Time, f.Service, f.Systemic, f.ID = rec.Kind, rec.TraceID, rec.Time, rec.Service, rec.Systemic, rec.ID
	f.Revision = rec.Revision
	f.Operation, f.Severity, f.ImpactMS = rec.Operation, rec.Severity, rec.ImpactMS
	return nil
}

// Ready reports whether every segment is indexed, so queries see all
// findings; before, they answer from the indexed ones.
func (s *Store) Ready() bool { return s.unindexed.Load() == 0 }

// Unindexed is the number of segments still waiting to be indexed.
func (s *Store) Unindexed() int { return int(s.unindexed.Load()) }

// Put appends findings. IDs are assigned here and written back to fs, so
// a detector can later rewrite a finding it opened (Update); a zero Time
// becomes now.
func (s *Store) Put(ctx context.Context, fs []Stored) error {
	return s.append(ctx, fs, false)
}

// Update rewrites open systemic findings with newer figures: each of fs
// carries the ID and Time Put gave the finding it replaces, and its kind,
// service, operation and trace id (what queries select by) unchanged. The new
// version is appended (the log stays append-only) and from then on
// answers in place of the older ones, with the same ID and place in time
// order; counts still count the finding once.
func (s *Store) Update(ctx context.Context, fs []Stored) error {
	for i := range fs {
		if !fs[i].Systemic || fs[i].Time.IsZero() {
			return fmt.Errorf("findingstore: update of %s finding %d: only a stored systemic finding (ID and Time set) can be updated",
				fs[i].Kind, fs[i].ID)
		}
		fs[i].Revision = max(fs[i].Revision, 1)
	}
	return s.append(ctx, fs, true)
}

func (s *Store) append(ctx context.Context, fs []Stored, update bool) error {
	if len(fs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("findingstore: closed")
	}
	now := s.opt.Now()
	if err := s.rotate(now); err != nil {
		return err
	}
	var buf bytes.Buffer
	offs := make([]int64, len(fs))
	lens := make([]int32, len(fs))
	recs := make([]Stored, len(fs))
	next := s.nextID
	for i := range fs {
		st := fs[i]
		if update {
			if st.ID >= s.nextID {
				return fmt.Errorf("findingstore: update of %s finding %d: no such finding", st.Kind, st.ID)
			}
		} else {
			if st.Time.IsZero() {
				st.Time = now
			}
			st.ID, st.Revision = next, 0
			next++
		}
		if st.SpanIDs == nil {
			st.SpanIDs = []string{}
		}
		offs[i] = s.cur.size + int64(buf.Len())
		b, err := json.Marshal(&st)
		if err != nil {
			return fmt.Errorf("findingstore: encoding %s finding: %w", st.Kind, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
		lens[i] = int32(len(b) + 1)
		recs[i] = st
	}
	if _, err := s.cur.f.WriteAt(buf.Bytes(), s.cur.size); err != nil {
		// Cut what was written: whole lines of a failed Put must not be
		// found by a later indexing (their ids are given out again). If
		// even that fails, the next Put overwrites them.
		_ = s.cur.f.Truncate(s.cur.size)
		return fmt.Errorf("findingstore: writing %s: %w", s.cur.name, err)
	}
	if s.opt.SyncInterval <= 0 {
		if err := s.cur.f.Sync(); err != nil {
			return fmt.Errorf("findingstore: syncing %s: %w", s.cur.name, err)
		}
	} else {
		s.dirty = true
	}
	for i := range recs {
		s.cur.b.add(&recs[i], offs[i], lens[i])
		fs[i].ID, fs[i].Time = recs[i].ID, recs[i].Time
	}
	s.nextID = next
	s.cur.size += int64(buf.Len())
	return nil
}

// rotate seals the open segment when it is old or full, and starts one
// when there is none.
func (s *Store) rotate(now time.Time) error {
	if s.cur != nil && now.Sub(s.cur.created) < s.opt.SegmentDuration && len(s.cur.b.entries) < s.opt.SegmentMaxFindings {
		return nil
	}
	if err := s.seal(); err != nil {
		return err
	}
	name := filepath.Join(s.opt.Dir, fmt.Sprintf("%s%020d%s", segPrefix, now.UnixNano(), segSuffix))
	for _, seg := range s.segs {
		if seg.name >= name {
			// Clock went backwards: keep names sorted in creation order.
			name = filepath.Join(s.opt.Dir, fmt.Sprintf("%s%020d%s", segPrefix, parseSegTime(seg.name)+1, segSuffix))
		}
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("findingstore: creating segment: %w", err)
	}
	if d, err := os.Open(s.opt.Dir); err == nil {
		_ = d.Sync() // make the new file's directory entry durable
		d.Close()
	}
	seg := &segment{name: name, f: f, created: now, b: newIndexBuilder()}
	s.segs = append(s.segs, seg)
	s.cur = seg
	return nil
}

// seal syncs the open segment and writes its index; the caller holds mu.
func (s *Store) seal() error {
	seg := s.cur
	if seg == nil {
		return nil
	}
	if err := seg.f.Sync(); err != nil {
		return fmt.Errorf("findingstore: syncing %s: %w", seg.name, err)
	}
	s.dirty = false
	x := seg.b.view()
	m := x.meta(seg.size)
	recOff, err := writeIndex(seg.idxPath(), x, &m)
	if err != nil {
		return err
	}
	seg.indexed, seg.meta, seg.strs, seg.recOff, seg.b = true, m, x.strs, recOff, nil
	seg.idxBytes = idxFileBytes(seg.idxPath())
	s.cur = nil
	s.compress(seg)
	return nil
}

func parseSegTime(name string) int64 {
	b := strings.TrimPrefix(filepath.Base(stem(name)), segPrefix)
	var n int64
	fmt.Sscanf(b, "%d", &n)
	return n
}

// read decodes one record from its segment.
func (s *Store) read(seg *segment, e *idxEntry) (Stored, error) {
	buf := make([]byte, e.n)
	if _, err := seg.lines().ReadAt(buf, e.off); err != nil {
		return Stored{}, fmt.Errorf("findingstore: reading %s at %d: %w", seg.name, e.off, err)
	}
	return decode(buf)
}

// decode keeps evidence as raw JSON: it is only ever re-encoded.
func decode(line []byte) (Stored, error) {
	var rec struct {
		Stored
		Evidence json.RawMessage `json:"evidence"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return Stored{}, fmt.Errorf("findingstore: decoding finding: %w", err)
	}
	st := rec.Stored
	if len(rec.Evidence) > 0 && string(rec.Evidence) != "null" {
		st.Evidence = rec.Evidence
	}
	return st, nil
}

// entries returns a segment's index: in memory for the open segment
// (not necessarily sorted), else from the cache or its file. The caller
// holds mu for reading.
func (s *Store) entries(seg *segment) (*segIndex, error) {
	if seg.b != nil {
		return &seg.b.segIndex, nil
	}
	if x := s.cache.get(seg); x != nil {
		return x, nil
	}
	x, err := readIndex(seg.idxPath(), seg.strs, seg.recOff, seg.meta.count)
	if err != nil {
		return nil, err
	}
	s.cache.put(seg, x)
	return x, nil
}

// hit is a finding located by a query.
type hit struct {
	seg *segment
	e   idxEntry
}

// ForTrace returns the findings stored for one trace, oldest first.
func (s *Store) ForTrace(ctx context.Context, id model.TraceID) ([]Stored, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var hits []hit
	for _, seg := range s.segs {
		if seg.b == nil && (!seg.indexed || !seg.meta.bloom.mayHave(id)) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x, err := s.entries(seg)
		if err != nil {
			return nil, err
		}
		for i := range x.entries {
			if x.entries[i].trace == id {
				hits = append(hits, hit{seg, x.entries[i]})
			}
		}
	}
	hits = latestVersions(hits)
	sort.SliceStable(hits, func(i, j int) bool { return after(&hits[j].e, &hits[i].e) })
	return s.readHits(ctx, hits)
}

// latestVersions keeps, of each systemic finding that hits holds several
// versions of (Update), only the newest, in the place of the first.
func latestVersions(hits []hit) []hit {
	var at map[uint64]int
	out := hits[:0]
	for _, h := range hits {
		if !h.e.systemic {
			out = append(out, h)
			continue
		}
		if at == nil {
			at = map[uint64]int{}
		}
		if i, ok := at[h.e.id]; ok {
			if newerVersion(&h, &out[i]) {
				out[i] = h
			}
			continue
		}
		at[h.e.id] = len(out)
		out = append(out, h)
	}
	return out
}

// newerVersion reports whether a was written after b: segment names sort
// in creation order, and a segment is appended to.
func newerVersion(a, b *hit) bool {
	if a.seg != b.seg {
		return a.seg.name > b.seg.name
	}
	return a.e.off > b.e.off
}

func (s *Store) readHits(ctx context.Context, hits []hit) ([]Stored, error) {
	var out []Stored
	for i := range hits {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, err := s.read(hits[i].seg, &hits[i].e)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// kindSet parses a comma-separated list of kinds; nil: any kind.
func kindSet(list string) map[string]bool {
	if list == "" {
		return nil
	}
	kinds := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			kinds[k] = true
		}
	}
	return kinds
}

// nanoBounds turns [from, to) into unix nanoseconds; a zero time does not bound.
func nanoBounds(from, to time.Time) (int64, int64) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		lo = from.UnixNano()
	}
	if !to.IsZero() {
		hi = to.UnixNano()
	}
	return lo, hi
}

// List returns matching findings newest first.
func (s *Store) List(ctx context.Context, q Query) ([]Stored, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	kinds := kindSet(q.Kind)
	traces := traceSet(q.Traces)
	from, to := nanoBounds(q.From, q.To)
	s.mu.RLock()
	defer s.mu.RUnlock()
	var cands []*segment
	for _, seg := range s.segs {
		if seg.b == nil && !seg.indexed {
			continue
		}
		if lo, hi := seg.timeRange(); seg.count() == 0 || hi < from || lo >= to {
			continue
		}
		if seg.b == nil && (!seg.mayMatch(kinds, q.Service, q.TraceID) || !seg.mayHaveAny(q.Traces)) {
			continue
		}
		cands = append(cands, seg)
	}
	// Newest segments first; once limit findings are found, a segment
	// whose newest finding is older than all of them cannot contribute.
	sort.Slice(cands, func(i, j int) bool {
		_, a := cands[i].timeRange()
		_, b := cands[j].timeRange()
		return a > b
	})
	var top []hit
	for _, seg := range cands {
		if _, hi := seg.timeRange(); len(top) >= q.Limit && hi < top[q.Limit-1].e.t {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x, err := s.entries(seg)
		if err != nil {
			return nil, err
		}
		// A sealed index is sorted: read it newest first and stop at limit
		// matches. The open segment's is in arrival order.
		sorted, found := seg.b == nil, 0
		for i := len(x.entries) - 1; i >= 0 && !(sorted && found >= q.Limit); i-- {
			e := &x.entries[i]
			if sorted && e.t < from {
				break
			}
			if e.t < from || e.t >= to || kinds != nil && !kinds[x.str(int(e.kind))] ||
				q.Service != "" && (e.service == 0 || x.str(int(e.service)-1) != q.Service) ||
				!q.TraceID.IsZero() && e.trace != q.TraceID || traces != nil && !traces[e.trace] ||
				q.Systemic != nil && *q.Systemic != e.systemic {
				continue
			}
			top = append(top, hit{seg, *e})
			if !e.rev {
				found++
			}
		}
		top = latestVersions(top)
		sort.Slice(top, func(i, j int) bool { return after(&top[i].e, &top[j].e) })
		if len(top) > q.Limit {
			top = top[:q.Limit]
		}
	}
	return s.readHits(ctx, top)
}

// mayMatch uses a sealed segment's metadata to skip it.
func (seg *segment) mayMatch(kinds map[string]bool, service string, trace model.TraceID) bool {
	if kinds != nil {
		any := false
		for k := range kinds {
			if seg.meta.kinds[k] > 0 {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	if service != "" && !seg.meta.services[service] {
		return false
	}
	return trace.IsZero() || seg.meta.bloom.mayHave(trace)
}

// mayHaveAny tells whether a sealed segment may hold a finding of one of
// traces (true when traces is empty: no condition).
func (seg *segment) mayHaveAny(traces []model.TraceID) bool {
	if len(traces) == 0 {
		return true
	}
	for _, id := range traces {
		if seg.meta.bloom.mayHave(id) {
			return true
		}
	}
	return false
}

// traceSet is Query.Traces as a set; nil when empty.
func traceSet(ids []model.TraceID) map[model.TraceID]bool {
	if len(ids) == 0 {
		return nil
	}
	set := make(map[model.TraceID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set
}

// Counts returns the number of findings by kind in [from, to).
func (s *Store) Counts(from, to time.Time) map[string]int {
	lo, hi := nanoBounds(from, to)
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int{}
	for _, seg := range s.segs {
		if seg.b == nil && !seg.indexed {
			continue
		}
		minT, maxT := seg.timeRange()
		if seg.count() == 0 || maxT < lo || minT >= hi {
			continue
		}
		if seg.b == nil && minT >= lo && maxT < hi {
			// Wholly inside: the metadata has the counts.
			for k, n := range seg.meta.kinds {
				out[k] += n - seg.meta.revs[k]
			}
			continue
		}
		x, err := s.entries(seg)
		if err != nil {
			s.log.Warn("counting findings", "file", seg.name, "err", err)
			continue
		}
		for i := range x.entries {
			if e := &x.entries[i]; e.t >= lo && e.t < hi && !e.rev {
				out[x.str(int(e.kind))]++
			}
		}
	}
	return out
}

// Len returns the number of findings in indexed segments (a rewritten
// finding counts once).
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, seg := range s.segs {
		switch {
		case seg.b != nil:
			n += seg.count() - seg.b.revs
		case seg.indexed:
			n += seg.count()
			for _, r := range seg.meta.revs {
				n -= r
			}
		}
	}
	return n
}

// DiskBytes returns the bytes of the segments and their indexes (they
// count against the server's disk budget).
func (s *Store) DiskBytes() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var n int64
	for _, seg := range s.segs {
		n += seg.diskBytes() + seg.idxBytes
	}
	return n
}

// Prune applies retention now; Run calls it periodically. Retention drops
// whole sealed segments whose newest finding is older than the retention.
func (s *Store) Prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.opt.Now().Add(-s.opt.Retention).UnixNano()
	s.dropSegments(func(seg *segment) bool {
		if !seg.indexed || seg.meta.maxT >= cut {
			return false
		}
		id := segID(seg.name)
		if s.inBucket[id] {
			s.expired = append(s.expired, id)
		}
		s.expired = append(s.expired, s.tails[id]...)
		delete(s.tails, id)
		return true
	})
}

// dropSegments closes the sealed segments gone selects and removes them
// and their files. The caller holds mu.
func (s *Store) dropSegments(gone func(*segment) bool) {
	kept := s.segs[:0]
	for _, seg := range s.segs {
		if seg == s.cur || !gone(seg) {
			kept = append(kept, seg)
			continue
		}
		seg.close()
		s.cache.drop(seg)
		for _, p := range []string{seg.name, seg.idxPath()} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("removing findings segment", "file", p, "err", err)
			}
		}
	}
	clear(s.segs[len(kept):])
	s.segs = kept
}

// Sync flushes written findings to stable storage.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || !s.dirty {
		return nil
	}
	s.dirty = false
	if err := s.cur.f.Sync(); err != nil {
		return fmt.Errorf("findingstore: syncing %s: %w", s.cur.name, err)
	}
	return nil
}

// Run applies retention every minute and, with SyncInterval > 0, fsyncs
// on that interval, until ctx ends.
func (s *Store) Run(ctx context.Context) {
	syncEvery := s.opt.SyncInterval
	if syncEvery <= 0 {
		syncEvery = time.Minute
	}
	syncT := time.NewTicker(syncEvery)
	pruneT := time.NewTicker(time.Minute)
	uploadT := time.NewTicker(s.opt.UploadInterval)
	tailT := time.NewTicker(s.opt.TailInterval)
	defer syncT.Stop()
	defer pruneT.Stop()
	defer uploadT.Stop()
	defer tailT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-uploadT.C:
			if err := s.UploadSealed(ctx); err != nil {
				s.log.Warn("copying findings segments to the bucket; retrying later", "err", err)
			}
		case <-tailT.C:
			if err := s.UploadTail(ctx); err != nil {
				s.log.Warn("copying the open findings segment's tail to the bucket; retrying later", "err", err)
			}
		case <-syncT.C:
			if err := s.Sync(); err != nil {
				s.log.Warn("syncing findings", "err", err)
			}
		case <-pruneT.C:
			s.Prune()
		}
	}
}

// Close stops background indexing, seals the open segment (writing its
// index, so the next Open reads no findings) and closes the files.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stopScan)
	s.scanWG.Wait()
	s.packWG.Wait()
	s.mu.Lock()
	err := s.seal()
	s.mu.Unlock()
	// A planned stop copies the segment it just sealed.
	ctx, cancel := context.WithTimeout(context.Background(), bucketTimeout)
	if uerr := s.UploadSealed(ctx); uerr != nil {
		s.log.Warn("copying findings segments to the bucket at shutdown", "err", uerr)
	}
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFiles()
	return err
}

func (s *Store) closeFiles() {
	for _, seg := range s.segs {
		seg.close()
	}
}

// idxCache keeps recently read segment indexes, up to maxEntries records.
type idxCache struct {
	mu         sync.Mutex
	maxEntries int
	n          int
	order      []*segment // least recently used first
	m          map[*segment]*segIndex
}

func (c *idxCache) get(seg *segment) *segIndex {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.m[seg]
	if x != nil {
		c.touch(seg)
	}
	return x
}

func (c *idxCache) touch(seg *segment) {
	for i, o := range c.order {
		if o == seg {
			copy(c.order[i:], c.order[i+1:])
			c.order[len(c.order)-1] = seg
			return
		}
	}
	c.order = append(c.order, seg)
}

func (c *idxCache) put(seg *segment, x *segIndex) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[*segment]*segIndex{}
	}
	if _, ok := c.m[seg]; ok {
		return
	}
	c.m[seg] = x
	c.n += len(x.entries)
	c.touch(seg)
	for c.n > c.maxEntries && len(c.order) > 1 {
		c.dropLocked(c.order[0])
	}
}

func (c *idxCache) drop(seg *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(seg)
}

func (c *idxCache) dropLocked(seg *segment) {
	x, ok := c.m[seg]
	if !ok {
		return
	}
	delete(c.m, seg)
	c.n -= len(x.entries)
	for i, o := range c.order {
		if o == seg {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

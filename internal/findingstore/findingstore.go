// Package findingstore keeps findings durably: the per-trace findings the
// server computes when a trace completes, and the systemic findings of the
// cross-trace detectors. Findings are far fewer than spans and are read by
// time, kind, service and trace, so the store is an append-only JSON-lines
// log in segment files plus small in-memory indexes that point into it;
// the findings themselves are read back from disk on demand, which keeps
// memory at ~100 bytes per finding whatever the evidence weighs.
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
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/model"
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
	// ID is assigned by the store, increasing in insertion order.
	ID uint64 `json:"id"`
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
	// SyncInterval: 0 fsyncs inside every Put (durable on return); > 0
	// fsyncs at most this often from Run, trading the last interval of
	// findings on power loss (they can be recomputed from the spans) for
	// one fsync per interval instead of one per trace.
	SyncInterval time.Duration
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
	// Systemic: nil both, else only systemic (true) or only per-trace.
	Systemic *bool
	Limit    int // default 100
}

type segment struct {
	name    string
	f       *os.File
	size    int64
	created time.Time
	maxT    int64
	live    int // entries still indexed
}

type entry struct {
	t        int64
	id       uint64
	seg      *segment
	off      int64
	n        int32
	systemic bool
	kind     string
	service  string
	trace    model.TraceID
	// Held in memory so the summary ranks groups by impact without
	// reading a finding from disk.
	operation string
	severity  int8
	impactMS  float32
}

// Store is the findings store. It is safe for concurrent use.
type Store struct {
	opt Options
	log *slog.Logger

	mu      sync.RWMutex
	segs    []*segment
	cur     *segment
	dirty   bool
	nextID  uint64
	entries []*entry // by (t, id); so are the lists of byKind and byService
	// pending are indexed entries not yet merged into the sorted lists.
	// Findings carry their trace's start time and arrive when the trace
	// completes, seconds later and out of order: inserting each into a
	// sorted list moved a window of entries per finding (most of the
	// server's analysis CPU at 50k spans/s). Merging in batches moves each
	// entry of that window once per batch instead.
	pending   []*entry
	byKind    map[string][]*entry
	byService map[string][]*entry
	byTrace   map[model.TraceID][]*entry
	intern    map[string]string
	closed    bool
}

const segPrefix, segSuffix = "findings-", ".jsonl"

// Open opens (or creates) the store in opt.Dir and indexes what is there.
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
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("findingstore: creating %s: %w", opt.Dir, err)
	}
	s := &Store{opt: opt, log: opt.Logger.With("component", "findingstore"),
		byKind: map[string][]*entry{}, byService: map[string][]*entry{},
		byTrace: map[model.TraceID][]*entry{}, intern: map[string]string{}}
	names, err := filepath.Glob(filepath.Join(opt.Dir, segPrefix+"*"+segSuffix))
	if err != nil {
		return nil, fmt.Errorf("findingstore: listing %s: %w", opt.Dir, err)
	}
	sort.Strings(names)
	for i, name := range names {
		if err := s.load(name, i == len(names)-1); err != nil {
			s.closeFiles()
			return nil, err
		}
	}
	s.prune()
	return s, nil
}

// load indexes one segment. A torn last line (crash during a write) is cut
// off in the newest segment; elsewhere bad lines are skipped with a warning.
func (s *Store) load(name string, last bool) error {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("findingstore: opening %s: %w", name, err)
	}
	seg := &segment{name: name, f: f}
	if st, err := f.Stat(); err == nil {
		seg.created = st.ModTime()
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 64<<10)
	var off int64
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var st Stored
			if jerr := json.Unmarshal(line, &st); jerr != nil {
				s.log.Warn("skipping unreadable finding", "file", name, "offset", off, "err", jerr)
			} else {
				s.index(seg, &st, off, int32(len(line)))
			}
			off += int64(len(line))
		} else if len(line) > 0 {
			if last {
				s.log.Warn("cutting torn finding at end of log", "file", name, "offset", off)
				if terr := f.Truncate(off); terr != nil {
					return fmt.Errorf("findingstore: truncating %s: %w", name, terr)
				}
			}
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("findingstore: reading %s: %w", name, err)
		}
	}
	seg.size = off
	s.segs = append(s.segs, seg)
	if last {
		s.cur = seg
	}
	return nil
}

func (s *Store) str(v string) string {
	if x, ok := s.intern[v]; ok {
		return x
	}
	s.intern[v] = v
	return v
}

// index adds one record; the caller holds mu (or is Open).
func (s *Store) index(seg *segment, st *Stored, off int64, n int32) {
	e := &entry{t: st.Time.UnixNano(), id: st.ID, seg: seg, off: off, n: n, systemic: st.Systemic,
		kind: s.str(st.Kind), service: s.str(st.Service), operation: s.str(st.Operation),
		severity: int8(st.Severity.Rank()), impactMS: float32(st.ImpactMS)}
	if st.TraceID != "" {
		if id, err := model.ParseTraceID(st.TraceID); err == nil {
			e.trace = id
		}
	}
	if st.ID >= s.nextID {
		s.nextID = st.ID + 1
	}
	if e.t > seg.maxT {
		seg.maxT = e.t
	}
	seg.live++
	s.pending = append(s.pending, e)
	if len(s.pending) >= mergeEvery {
		s.mergeLocked()
	}
	if !e.trace.IsZero() {
		s.byTrace[e.trace] = append(s.byTrace[e.trace], e)
	}
}

// mergeEvery is the batch size of mergeLocked: large enough that merging
// a window of out-of-order entries is cheap per finding, small enough that
// a reader's merge is quick.
const mergeEvery = 4096

// mergeLocked moves pending into the sorted lists; the caller holds mu for
// writing.
func (s *Store) mergeLocked() {
	if len(s.pending) == 0 {
		return
	}
	p := s.pending
	sort.Slice(p, func(i, j int) bool { return after(p[j], p[i]) })
	s.entries = mergeByTime(s.entries, p)
	// Grouping the sorted batch keeps each group sorted.
	byKind, byService := map[string][]*entry{}, map[string][]*entry{}
	for _, e := range p {
		byKind[e.kind] = append(byKind[e.kind], e)
		if e.service != "" {
			byService[e.service] = append(byService[e.service], e)
		}
	}
	for k, list := range byKind {
		s.byKind[k] = mergeByTime(s.byKind[k], list)
	}
	for k, list := range byService {
		s.byService[k] = mergeByTime(s.byService[k], list)
	}
	clear(p)
	s.pending = p[:0]
}

// settle merges pending entries before a read, which then runs under the
// read lock. Entries put between the two locks may be missed, as if they
// had been put after the read.
func (s *Store) settle() {
	s.mu.RLock()
	n := len(s.pending)
	s.mu.RUnlock()
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.mergeLocked()
	s.mu.Unlock()
}

// mergeByTime merges sorted src into sorted dst, in place from the back:
// src is mostly newer than dst, so only dst's tail moves.
func mergeByTime(dst, src []*entry) []*entry {
	i, j := len(dst)-1, len(src)-1
	dst = append(dst, src...)
	for k := len(dst) - 1; j >= 0; k-- {
		if i >= 0 && after(dst[i], src[j]) {
			dst[k] = dst[i]
			i--
		} else {
			dst[k] = src[j]
			j--
		}
	}
	return dst
}

// after reports whether a sorts after e by (t, id).
func after(a, e *entry) bool { return a.t > e.t || (a.t == e.t && a.id > e.id) }

// Put appends findings. IDs are assigned here; a zero Time becomes now.
func (s *Store) Put(ctx context.Context, fs []Stored) error {
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
	for i := range fs {
		st := fs[i]
		if st.Time.IsZero() {
			st.Time = now
		}
		if st.SpanIDs == nil {
			st.SpanIDs = []string{}
		}
		st.ID = s.nextID + uint64(i)
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
	if _, err := s.cur.f.Write(buf.Bytes()); err != nil {
		// A partial write leaves a torn line that the next Open cuts; keep
		// the segment usable by resyncing our idea of its size.
		if st, serr := s.cur.f.Stat(); serr == nil {
			s.cur.size = st.Size()
		}
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
		s.index(s.cur, &recs[i], offs[i], lens[i])
	}
	s.cur.size += int64(buf.Len())
	return nil
}

// rotate starts a new segment when there is none or the current one is old.
func (s *Store) rotate(now time.Time) error {
	if s.cur != nil && now.Sub(s.cur.created) < s.opt.SegmentDuration {
		return nil
	}
	if s.cur != nil && s.dirty {
		if err := s.cur.f.Sync(); err != nil {
			return fmt.Errorf("findingstore: syncing %s: %w", s.cur.name, err)
		}
		s.dirty = false
	}
	name := filepath.Join(s.opt.Dir, fmt.Sprintf("%s%020d%s", segPrefix, now.UnixNano(), segSuffix))
	for _, seg := range s.segs {
		if seg.name >= name {
			// Clock went backwards: keep names sorted in creation order.
			name = filepath.Join(s.opt.Dir, fmt.Sprintf("%s%020d%s", segPrefix, parseSegTime(seg.name)+1, segSuffix))
		}
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_APPEND|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("findingstore: creating segment: %w", err)
	}
	if d, err := os.Open(s.opt.Dir); err == nil {
		_ = d.Sync() // make the new file's directory entry durable
		d.Close()
	}
	seg := &segment{name: name, f: f, created: now}
	s.segs = append(s.segs, seg)
	s.cur = seg
	return nil
}

func parseSegTime(name string) int64 {
	b := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(name), segPrefix), segSuffix)
	var n int64
	fmt.Sscanf(b, "%d", &n)
	return n
}

// read decodes one record from its segment.
func (s *Store) read(e *entry) (Stored, error) {
	buf := make([]byte, e.n)
	if _, err := e.seg.f.ReadAt(buf, e.off); err != nil {
		return Stored{}, fmt.Errorf("findingstore: reading %s at %d: %w", e.seg.name, e.off, err)
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

// ForTrace returns the findings stored for one trace, oldest first.
func (s *Store) ForTrace(ctx context.Context, id model.TraceID) ([]Stored, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Stored
	for _, e := range s.byTrace[id] {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, err := s.read(e)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// List returns matching findings newest first.
func (s *Store) List(ctx context.Context, q Query) ([]Stored, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var kinds map[string]bool
	if q.Kind != "" {
		kinds = map[string]bool{}
		for _, k := range strings.Split(q.Kind, ",") {
			if k = strings.TrimSpace(k); k != "" {
				kinds[k] = true
			}
		}
	}
	s.settle()
	s.mu.RLock()
	defer s.mu.RUnlock()
	cands := s.entries
	switch {
	case !q.TraceID.IsZero():
		cands = append([]*entry(nil), s.byTrace[q.TraceID]...)
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].t < cands[j].t })
	case q.Service != "":
		cands = s.byService[q.Service]
	case len(kinds) == 1:
		for k := range kinds {
			cands = s.byKind[k]
		}
	}
	var out []Stored
	for i := len(cands) - 1; i >= 0 && len(out) < q.Limit; i-- {
		e := cands[i]
		if !q.To.IsZero() && e.t >= q.To.UnixNano() {
			continue
		}
		if !q.From.IsZero() && e.t < q.From.UnixNano() {
			break
		}
		if kinds != nil && !kinds[e.kind] || q.Service != "" && e.service != q.Service ||
			!q.TraceID.IsZero() && e.trace != q.TraceID || q.Systemic != nil && *q.Systemic != e.systemic {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, err := s.read(e)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Counts returns the number of findings by kind in [from, to).
func (s *Store) Counts(from, to time.Time) map[string]int {
	s.settle()
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int{}
	lo := 0
	if !from.IsZero() {
		f := from.UnixNano()
		lo = sort.Search(len(s.entries), func(i int) bool { return s.entries[i].t >= f })
	}
	for _, e := range s.entries[lo:] {
		if !to.IsZero() && e.t >= to.UnixNano() {
			break
		}
		out[e.kind]++
	}
	return out
}

// Len returns the number of findings held.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.entries) + len(s.pending)
}

// Prune applies retention now; Run calls it periodically.
func (s *Store) Prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune()
}

func (s *Store) prune() {
	s.mergeLocked()
	cut := s.opt.Now().Add(-s.opt.Retention).UnixNano()
	n := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].t >= cut })
	if n > 0 {
		for _, e := range s.entries[:n] {
			e.seg.live--
			if !e.trace.IsZero() {
				list := s.byTrace[e.trace]
				kept := list[:0]
				for _, x := range list {
					if x != e {
						kept = append(kept, x)
					}
				}
				if len(kept) == 0 {
					delete(s.byTrace, e.trace)
				} else {
					s.byTrace[e.trace] = kept
				}
			}
		}
		s.entries = append([]*entry(nil), s.entries[n:]...)
		trim := func(m map[string][]*entry) {
			for k, list := range m {
				i := sort.Search(len(list), func(i int) bool { return list[i].t >= cut })
				if i == len(list) {
					delete(m, k)
				} else if i > 0 {
					m[k] = append([]*entry(nil), list[i:]...)
				}
			}
		}
		trim(s.byKind)
		trim(s.byService)
	}
	kept := s.segs[:0]
	for _, seg := range s.segs {
		if seg != s.cur && seg.live <= 0 && seg.maxT < cut {
			seg.f.Close()
			if err := os.Remove(seg.name); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("removing expired findings segment", "file", seg.name, "err", err)
			}
			continue
		}
		kept = append(kept, seg)
	}
	s.segs = kept
	if len(s.entries) == 0 {
		// Intern table only grows otherwise; reset it when empty.
		s.intern = map[string]string{}
	}
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
	defer syncT.Stop()
	defer pruneT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-syncT.C:
			if err := s.Sync(); err != nil {
				s.log.Warn("syncing findings", "err", err)
			}
		case <-pruneT.C:
			s.Prune()
		}
	}
}

// Close syncs and closes the log.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.cur != nil && s.dirty {
		err = s.cur.f.Sync()
	}
	s.closeFiles()
	return err
}

func (s *Store) closeFiles() {
	for _, seg := range s.segs {
		seg.f.Close()
	}
}

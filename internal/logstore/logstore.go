// Package logstore keeps OTLP log records: the logs a trace's spans emitted
// are shown beside the trace, and /api/v1/logs searches them by service,
// severity, text and time. Records are appended to one JSON-lines file per
// day of arrival (logs-YYYYMMDD.jsonl) and fsynced before the ingest
// request is acknowledged; whole days are deleted once older than the
// retention, which the server sets to the traces' retention. An in-memory
// index by trace id serves the per-trace lookup. Records without a trace id
// are counted and dropped unless KeepUncorrelated is set: correlation is
// the main reason tracedx stores logs.
package logstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/periodic"
)

// Record is a stored log record.
type Record struct {
	TraceID        string            `json:"trace_id"`
	SpanID         string            `json:"span_id,omitempty"`
	TimeUnixNano   uint64            `json:"time_unix_nano"`
	SeverityNumber int32             `json:"severity_number"`
	SeverityText   string            `json:"severity_text,omitempty"`
	Body           string            `json:"body"`
	Service        string            `json:"service"`
	Attributes     map[string]string `json:"attributes,omitempty"`
}

// Options configure the store.
type Options struct {
	Dir string
	// MaxTraces bounds the traces whose logs are indexed in memory (oldest
	// dropped first; the records stay on disk and searchable).
	MaxTraces int
	// Retention deletes days of logs older than this (0: keep forever).
	Retention time.Duration
	// KeepUncorrelated stores records without a trace id (searchable, not
	// attached to any trace) instead of dropping them.
	KeepUncorrelated bool
	// Now is the clock (tests pin it).
	Now func() time.Time
}

// Store is the log store.
type Store struct {
	opt     Options
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	day     string // day of the open file, YYYYMMDD
	byTrace map[model.TraceID][]Record
	order   []model.TraceID // insertion order, for the memory bound
	dropped int64
}

// legacyFile is the single file of earlier versions; it is read and kept
// until the retention passes its last modification.
const legacyFile = "logs.jsonl"

// Open opens (creating) the store in dir with a memory bound of maxTraces
// traces, no retention and uncorrelated records dropped.
func Open(dir string, maxTraces int) (*Store, error) {
	return OpenWith(Options{Dir: dir, MaxTraces: maxTraces})
}

// OpenWith opens the store and loads its index.
func OpenWith(opt Options) (*Store, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	s := &Store{opt: opt, byTrace: map[model.TraceID][]Record{}}
	if err := s.Prune(); err != nil {
		return nil, err
	}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	for i := len(files) - 1; i >= 0; i-- { // oldest first, so the bound keeps the newest
		err := scanFile(files[i], func(r *Record) bool {
			if id, err := model.ParseTraceID(r.TraceID); err == nil && !id.IsZero() {
				s.add(id, *r)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// files lists the day files, newest first, the legacy file last.
func (s *Store) files() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(s.opt.Dir, "logs-*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	if _, err := os.Stat(filepath.Join(s.opt.Dir, legacyFile)); err == nil {
		names = append(names, filepath.Join(s.opt.Dir, legacyFile))
	}
	return names, nil
}

// scanFile calls fn for each record; a torn last line (a crash during an
// unacknowledged write) is skipped. fn returns false to stop.
func scanFile(path string, fn func(*Record) bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // pruned meanwhile
	}
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if !fn(&r) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("logstore: read %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (s *Store) add(id model.TraceID, r Record) {
	if _, ok := s.byTrace[id]; !ok {
		s.order = append(s.order, id)
		if s.opt.MaxTraces > 0 && len(s.order) > s.opt.MaxTraces {
			delete(s.byTrace, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.byTrace[id] = append(s.byTrace[id], r)
}

// writer returns the buffered writer of today's file, rotating at midnight
// (UTC). Called with s.mu held.
func (s *Store) writer() (*bufio.Writer, error) {
	day := s.opt.Now().UTC().Format("20060102")
	if s.w != nil && day == s.day {
		return s.w, nil
	}
	if s.f != nil {
		if err := s.closeFile(); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(filepath.Join(s.opt.Dir, "logs-"+day+".jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	s.f, s.w, s.day = f, bufio.NewWriterSize(f, 64<<10), day
	return s.w, nil
}

func (s *Store) closeFile() error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("logstore: flush: %w", err)
	}
	err := s.f.Close()
	s.f, s.w = nil, nil
	return err
}

// WriteLogs implements ingest.LogSink: durable before it returns.
func (s *Store) WriteLogs(ctx context.Context, logs []ingest.LogRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w, err := s.writer()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	for _, l := range logs {
		if l.TraceID.IsZero() && !s.opt.KeepUncorrelated {
			s.dropped++
			continue
		}
		r := Record{TimeUnixNano: l.TimeUnixNano, SeverityNumber: l.SeverityNumber,
			SeverityText: l.SeverityText, Body: l.Body, Service: l.Service}
		if !l.TraceID.IsZero() {
			r.TraceID = l.TraceID.String()
		}
		if !l.SpanID.IsZero() {
			r.SpanID = l.SpanID.String()
		}
		if len(l.Attrs) > 0 {
			r.Attributes = make(map[string]string, len(l.Attrs))
			for _, a := range l.Attrs {
				r.Attributes[a.Key] = a.Value.AsString()
			}
		}
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("logstore: write: %w", err)
		}
		if !l.TraceID.IsZero() {
			s.add(l.TraceID, r)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("logstore: flush: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("logstore: sync: %w", err)
	}
	return nil
}

// Dropped counts the records refused for lacking a trace id.
func (s *Store) Dropped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// ForTrace returns the log records of a trace in arrival order.
func (s *Store) ForTrace(id model.TraceID) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.byTrace[id]...)
}

// Prune deletes the days that ended before now minus the retention, and
// forgets indexed records older than that.
func (s *Store) Prune() error {
	if s.opt.Retention <= 0 {
		return nil
	}
	cut := s.opt.Now().Add(-s.opt.Retention).UTC()
	files, err := s.files()
	if err != nil {
		return err
	}
	for _, f := range files {
		base := filepath.Base(f)
		var old bool
		if base == legacyFile {
			st, err := os.Stat(f)
			old = err == nil && st.ModTime().Before(cut)
		} else {
			day, err := time.Parse("20060102", strings.TrimSuffix(strings.TrimPrefix(base, "logs-"), ".jsonl"))
			old = err == nil && !day.Add(24*time.Hour).After(cut)
		}
		if old {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("logstore: prune: %w", err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cutNs := uint64(cut.UnixNano())
	kept := s.order[:0]
	for _, id := range s.order {
		recs := s.byTrace[id]
		n := 0
		for _, r := range recs {
			if r.TimeUnixNano >= cutNs {
				recs[n] = r
				n++
			}
		}
		if n == 0 {
			delete(s.byTrace, id)
			continue
		}
		s.byTrace[id] = recs[:n]
		kept = append(kept, id)
	}
	s.order = kept
	return nil
}

// RunPruning prunes every interval until ctx ends.
func (s *Store) RunPruning(ctx context.Context, interval time.Duration, onErr func(error)) {
	if onErr == nil {
		onErr = func(error) {}
	}
	periodic.Run(ctx, interval, func(context.Context) error { return s.Prune() }, onErr)
}

// Close flushes and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	return s.closeFile()
}

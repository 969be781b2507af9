// Package logstore keeps OTLP log records for trace correlation: the logs a
// trace's spans emitted are shown beside the trace. Records are appended to
// a JSON-lines file and fsynced before the ingest request is acknowledged;
// an in-memory index by trace id serves lookups. Records without a trace id
// are counted and not kept: correlation is the only reason tracedx stores
// logs.
package logstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tracedx/tracedx/internal/ingest"
	"github.com/tracedx/tracedx/internal/model"
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

// Store is the log store.
type Store struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	byTrace map[model.TraceID][]Record
	order   []model.TraceID // insertion order, for the memory bound
	max     int
	dropped int64
}

// Open opens (creating) dir/logs.jsonl and loads its index. maxTraces bounds
// the traces whose logs are kept in memory (oldest dropped first).
func Open(dir string, maxTraces int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	path := filepath.Join(dir, "logs.jsonl")
	s := &Store{byTrace: map[model.TraceID][]Record{}, max: maxTraces}
	if data, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(data)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var r Record
			// A torn last line after a crash was never acknowledged: skip it.
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				if id, err := model.ParseTraceID(r.TraceID); err == nil {
					s.add(id, r)
				}
			}
		}
		_ = data.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 64<<10)
	return s, nil
}

func (s *Store) add(id model.TraceID, r Record) {
	if _, ok := s.byTrace[id]; !ok {
		s.order = append(s.order, id)
		if s.max > 0 && len(s.order) > s.max {
			delete(s.byTrace, s.order[0])
			s.order = s.order[1:]
		}
	}
	s.byTrace[id] = append(s.byTrace[id], r)
}

// WriteLogs implements ingest.LogSink: durable before it returns.
func (s *Store) WriteLogs(ctx context.Context, logs []ingest.LogRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := json.NewEncoder(s.w)
	for _, l := range logs {
		if l.TraceID.IsZero() {
			s.dropped++
			continue
		}
		r := Record{TraceID: l.TraceID.String(), TimeUnixNano: l.TimeUnixNano, SeverityNumber: l.SeverityNumber,
			SeverityText: l.SeverityText, Body: l.Body, Service: l.Service}
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
		s.add(l.TraceID, r)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("logstore: flush: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("logstore: sync: %w", err)
	}
	return nil
}

// ForTrace returns the log records of a trace in arrival order.
func (s *Store) ForTrace(id model.TraceID) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.byTrace[id]...)
}

// Close flushes and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.w.Flush(); err != nil {
		return err
	}
	return s.f.Close()
}

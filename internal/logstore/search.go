package logstore

import (
	"container/heap"
	"fmt"
	"strconv"
	"strings"

	"github.com/tracedx/tracedx/internal/model"
)

// Query selects log records; zero fields do not filter.
type Query struct {
	Service string
	// MinSeverity keeps records at this OTLP severity number or above.
	MinSeverity int32
	// Text is a case-insensitive substring of the body.
	Text    string
	TraceID model.TraceID
	// Start and End bound the record time, unix ns, End exclusive.
	Start, End uint64
	Limit      int
}

// MaxScan bounds the records one search reads, so a search over months of
// logs answers (marked truncated) instead of reading them all.
const MaxScan = 5_000_000

// Result is a search answer: the newest matching records first.
type Result struct {
	Logs []Record `json:"logs"`
	// Truncated is set when more records matched than the limit, or the
	// scan stopped at MaxScan.
	Truncated bool `json:"truncated"`
}

// severityNames are the lowest OTLP severity number of each level.
var severityNames = map[string]int32{"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "fatal": 21}

// ParseSeverity reads a level name (info, warn, error…) or an OTLP
// severity number 1..24.
func ParseSeverity(s string) (int32, error) {
	if n, ok := severityNames[strings.ToLower(s)]; ok {
		return n, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 24 {
		return int32(n), nil
	}
	return 0, fmt.Errorf("severity: want trace, debug, info, warn, error, fatal or a number 1..24, got %q", s)
}

func (q *Query) match(r *Record) bool {
	switch {
	case q.Service != "" && r.Service != q.Service,
		q.MinSeverity > 0 && r.SeverityNumber < q.MinSeverity,
		q.Start > 0 && r.TimeUnixNano < q.Start,
		q.End > 0 && r.TimeUnixNano >= q.End,
		!q.TraceID.IsZero() && r.TraceID != q.TraceID.String():
		return false
	}
	return q.Text == "" || strings.Contains(strings.ToLower(r.Body), strings.ToLower(q.Text))
}

// Search scans the stored days, newest file first, and returns the newest
// q.Limit matching records.
func (s *Store) Search(q Query) (Result, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	files, err := s.files()
	if err != nil {
		return Result{}, err
	}
	h := &byTime{}
	scanned := 0
	res := Result{}
	for _, f := range files {
		err := scanFile(f, func(r *Record) bool {
			scanned++
			if scanned > MaxScan {
				res.Truncated = true
				return false
			}
			if !q.match(r) {
				return true
			}
			if h.Len() < q.Limit {
				heap.Push(h, *r)
			} else {
				res.Truncated = true
				if r.TimeUnixNano > (*h)[0].TimeUnixNano {
					(*h)[0] = *r
					heap.Fix(h, 0)
				}
			}
			return true
		})
		if err != nil {
			return Result{}, err
		}
		if scanned > MaxScan {
			break
		}
	}
	res.Logs = make([]Record, h.Len())
	for i := len(res.Logs) - 1; i >= 0; i-- {
		res.Logs[i] = heap.Pop(h).(Record)
	}
	return res, nil
}

// byTime is a min-heap of records by time: the oldest kept record is the
// first to give way to a newer match.
type byTime []Record

func (h byTime) Len() int           { return len(h) }
func (h byTime) Less(i, j int) bool { return h[i].TimeUnixNano < h[j].TimeUnixNano }
func (h byTime) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *byTime) Push(x any)        { *h = append(*h, x.(Record)) }
func (h *byTime) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

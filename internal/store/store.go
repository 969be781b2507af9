// Package store defines the storage seam of tracedx: everything that ingest,
// query and analysis need from a span store. The embedded engine lives in
// this package tree (see docs/architecture.md); other engines (object
// storage blocks, a scale-out database) implement the same interface.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/tracedx/tracedx/internal/model"
)

// ErrNotFound is returned by Trace when no span of the trace is stored.
var ErrNotFound = errors.New("trace not found")

// ErrOverloaded is returned by Write when the engine applies back-pressure;
// ingest maps it to a retryable status (gRPC UNAVAILABLE, HTTP 503).
var ErrOverloaded = errors.New("store overloaded, retry later")

// ErrDiskFull is returned by Write while the file system has no space (or
// quota) left. It wraps ErrOverloaded: space usually comes back
// (retention, an operator), and the store recovers without a restart, so
// clients should retry rather than drop the data.
var ErrDiskFull = fmt.Errorf("disk full: %w", ErrOverloaded)

// ErrDiskBudget is returned by Write while the data reaches its disk
// budget (storage.max_disk_bytes) and retention has not made room yet.
// Stored data is never deleted to make room for new writes faster than
// retention does; the client is asked to retry instead.
var ErrDiskBudget = fmt.Errorf("disk budget (storage.max_disk_bytes) reached: %w", ErrOverloaded)

// Store is a span store.
type Store interface {
	// Write stores spans. It returns only once the spans are durable
	// (survive kill -9); ingest acknowledges the client after that.
	Write(ctx context.Context, spans []model.Span) error

	// Trace returns every stored span of a trace. The time range is a hint
	// (zero means unknown) that lets the engine skip blocks.
	Trace(ctx context.Context, id model.TraceID, hint TimeRange) ([]model.Span, error)

	// Search returns summaries of traces matching q, newest first
	// (by trace start), at most q.Limit.
	Search(ctx context.Context, q Query) ([]model.TraceSummary, error)

	// ScanTraces calls fn with the full span list of each trace matching q,
	// newest first, stopping after q.Limit traces (0: no limit) or when fn
	// returns an error (which ScanTraces returns, except ErrStop).
	ScanTraces(ctx context.Context, q Query, fn func(spans []model.Span) error) error

	// Services lists service names seen in the range (zero range: all).
	Services(ctx context.Context, r TimeRange) ([]string, error)
	// Operations lists span names (with kind) of a service ("" for all).
	Operations(ctx context.Context, service string, r TimeRange) ([]Operation, error)
	// AttributeNames lists attribute keys by scope.
	AttributeNames(ctx context.Context, scope Scope, r TimeRange) ([]string, error)
	// AttributeValues lists distinct values of an attribute key, at most limit.
	AttributeValues(ctx context.Context, scope Scope, key string, r TimeRange, limit int) ([]model.Value, error)

	Close() error
}

// TracePage is one page of a trace's spans, in start order (ties by span
// id), with what describes the whole trace.
type TracePage struct {
	Spans []model.Span
	// Total is the trace's span count; StartUnixNano and EndUnixNano its
	// earliest start and latest end.
	Total                      int
	StartUnixNano, EndUnixNano uint64
}

// TracePager is implemented by stores that read a page of a trace holding
// only that page's spans decoded, whatever the trace weighs (the embedded
// engine). Spans [offset, offset+limit) of the start order are returned;
// ErrNotFound when no span of the trace is stored.
type TracePager interface {
	TracePage(ctx context.Context, id model.TraceID, hint TimeRange, offset, limit int) (TracePage, error)
}

// TraceRef names a trace to read and the time range hint for it (see
// Store.Trace).
type TraceRef struct {
	ID   model.TraceID
	Hint TimeRange
}

// TracesReader is implemented by stores that read several traces together
// more cheaply than one by one (the embedded engine shares page reads and
// dictionary decoding between the traces of a search). Traces returns the
// spans of refs[k] in out[k], ordered by start time, nil when no span of
// it is stored.
type TracesReader interface {
	Traces(ctx context.Context, refs []TraceRef) ([][]model.Span, error)
}

// ErrStop may be returned by a ScanTraces callback to end the scan early
// without error.
var ErrStop = errors.New("stop scan")

// TimeRange is a half-open [Start, End) range in unix nanoseconds.
// A zero Start or End means unbounded on that side.
type TimeRange struct {
	Start, End uint64
}

// Overlaps reports whether [start,end] intersects the range.
func (r TimeRange) Overlaps(start, end uint64) bool {
	if r.Start != 0 && end < r.Start {
		return false
	}
	if r.End != 0 && start >= r.End {
		return false
	}
	return true
}

// Operation is a span name with its kind.
type Operation struct {
	Name string
	Kind model.SpanKind
}

// Scope says where an attribute lives.
type Scope uint8

const (
	ScopeAny Scope = iota // span first, then resource
	ScopeSpan
	ScopeResource
)

// Op is a comparison operator for attribute and duration filters.
type Op uint8

const (
	OpEq Op = iota
	OpNeq
	OpGt
	OpGte
	OpLt
	OpLte
	OpRegex    // =~ (RE2, anchored like TraceQL: full match)
	OpNotRegex // !~
	OpExists   // attribute present, Value ignored
)

// AttrFilter compares one attribute. Value is compared numerically when both
// sides are numbers, else as strings.
type AttrFilter struct {
	Scope Scope
	Key   string
	Op    Op
	Value model.Value
}

// Query selects traces. A trace matches when at least one of its spans
// satisfies every span-level condition (Service, Operation, Kind, Status,
// span duration bounds, Attrs) at once, and the trace-level conditions hold.
// Empty fields do not constrain.
type Query struct {
	Range     TimeRange // span start within the range
	Service   string
	Operation string
	Kinds     []model.SpanKind
	Status    *model.StatusCode
	// Span duration bounds in nanoseconds (0: unbounded).
	MinDuration, MaxDuration uint64
	Attrs                    []AttrFilter

	// Trace-level conditions.
	MinTraceDuration, MaxTraceDuration uint64
	TraceIDs                           []model.TraceID

	Limit int
}

package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/priority"
)

// Sink receives converted spans. Write must return only once the spans are
// durable: ingest acknowledges the client after Write returns nil.
// store.Store satisfies it. Write may return store.ErrOverloaded to ask the
// client to retry later (the server is overloaded: HTTP 503, gRPC
// UNAVAILABLE), or an error wrapping ErrRateLimited when the client is
// over a limit of its own (HTTP 429, gRPC RESOURCE_EXHAUSTED); both with
// Retry-After (RetryInfo).
//
// The spans, and the slices they hold, belong to the receiver and are
// valid only until Write returns: the receiver decodes later requests
// into the same memory. A sink that keeps spans past Write copies them
// (strings may be kept as they are).
type Sink interface {
	Write(ctx context.Context, spans []model.Span) error
}

// RateSink is a Sink with a rate limit of its own (a tenant's). Ingest
// asks it to admit a request's spans once, on the node the sender
// reached: before any is written, together with those a SplitSink
// forwards to other nodes, and never for spans a peer forwarded
// (Config.Forwarded), which were admitted where they were received. A
// refusal wraps ErrRateLimited.
type RateSink interface {
	Sink
	Admit(ctx context.Context, spans int) error
}

// ErrRateLimited is wrapped by a Sink's error refusing spans over the
// sender's own rate limit (a tenant's); the error's text is the answer.
var ErrRateLimited = errors.New("rate limit exceeded")

// LogSink receives OTLP log records. The same durability and overload
// contract as Sink applies.
type LogSink interface {
	WriteLogs(ctx context.Context, logs []LogRecord) error
}

// LogRecord is an OTLP log record reduced to what trace correlation needs.
type LogRecord struct {
	TraceID        model.TraceID
	SpanID         model.SpanID
	TimeUnixNano   uint64 // observed time when the record has no timestamp
	SeverityNumber int32  // OTLP SeverityNumber (1..24, 0 unspecified)
	SeverityText   string
	Body           string // the body rendered as text (maps/arrays as JSON)
	Attrs          model.Attrs
	// Service and Resource describe the emitting process; Resource is shared
	// between the records of one resource and must be treated as immutable.
	Service   string
	Resource  model.Attrs
	ScopeName string
}

// Config configures the ingest servers. An empty address disables that
// listener. Zero limits take the defaults of DefaultConfig.
type Config struct {
	GRPCAddr   string // OTLP/gRPC, default 127.0.0.1:4317
	HTTPAddr   string // OTLP/HTTP, default 127.0.0.1:4318
	ZipkinAddr string // Zipkin v2 JSON, default 127.0.0.1:9411

	// MaxRequestBytes bounds a request body after decompression (and the
	// gRPC message size). Larger requests get 413 / RESOURCE_EXHAUSTED.
	MaxRequestBytes int64
	// MaxSpansPerRequest rejects requests with more spans (413 / INVALID_ARGUMENT).
	MaxSpansPerRequest int
	// MaxAttributesPerSpan bounds each attribute set (span, resource,
	// scope, event, link, log record); attributes beyond it are dropped and
	// counted in the span's dropped_attributes_count, as SDKs do.
	MaxAttributesPerSpan int
	// MaxEventsPerSpan and MaxLinksPerSpan drop events and links beyond
	// them (counted in the span's dropped counts).
	MaxEventsPerSpan int
	MaxLinksPerSpan  int
	// MaxAttributeDepth is the deepest nesting of arrays and maps kept in
	// one attribute value; deeper parts become a marker string. Requests
	// nested deeper than otlpconv.MaxNesting are refused before decoding.
	MaxAttributeDepth int
	// MaxAttributeValueBytes cuts longer string and bytes values (and the
	// JSON text of arrays and maps).
	MaxAttributeValueBytes int
	// MaxSpansPerTrace rejects spans of one trace beyond this count within
	// one request (partial success).
	MaxSpansPerTrace int
	// MaxSpanDuration rejects spans that last longer (partial success);
	// spans also need a start time between 2000 and a day from now.
	MaxSpanDuration time.Duration
	// DedupWindowSpans is how many recently accepted spans are remembered
	// (by ids and content) so that a retried request does not store them
	// twice; 0 takes the default, negative disables the window (duplicates
	// within one request are still dropped).
	DedupWindowSpans int
	// MaxConcurrentRequests bounds requests being decoded or written at
	// once, across all protocols. A request that cannot get a slot within
	// ConcurrencyWait gets 429 / RESOURCE_EXHAUSTED with a retry delay.
	MaxConcurrentRequests int
	ConcurrencyWait       time.Duration
	// MaxSpansPerSecond, when > 0, rate-limits accepted spans (429).
	MaxSpansPerSecond float64
	// RetryAfter is the delay suggested to clients on overload.
	RetryAfter time.Duration

	// WrapListener, when set, wraps every bound listener (TLS).
	WrapListener func(net.Listener) net.Listener
	// HTTPMiddleware, when set, wraps the OTLP/HTTP and Zipkin handlers
	// (authentication).
	HTTPMiddleware func(http.Handler) http.Handler
	// GRPCOptions are added to the OTLP/gRPC server's (interceptors).
	GRPCOptions []grpc.ServerOption
	// DedupScope, when set, names the scope of a request (its tenant):
	// identical spans are duplicates only within one scope, so one
	// tenant's spans never hide another's.
	DedupScope func(context.Context) string
	// Forwarded, when set, reports whether a request comes from a cluster
	// peer (authenticated by the peer token) that received the spans from
	// their sender and already ran every check on them: its spans skip the
	// per-request and per-span checks and the rate limit, which counted
	// them on that node, but not dedup (a retry may reach another node).
	// It must be false for anything a sender can forge.
	Forwarded func(context.Context) bool
	// ForwardsTrace, when set, reports whether the spans of a trace go on
	// to another node (a cluster node forwarding to the trace's owner).
	// Those are not deduplicated here: their owner does it when it stores
	// them (a retry sent to any node reaches it), so a span is hashed once
	// in the cluster. A peer's request is deduplicated whatever it says.
	ForwardsTrace func(model.TraceID) bool
	// Admit, when set, is asked before a request is read: an error refuses
	// it as overloaded (HTTP 503 with Retry-After, gRPC UNAVAILABLE with
	// RetryInfo) with the error's text, before its body costs memory.
	Admit func() error
}

// DefaultConfig returns the defaults: loopback listeners on the standard
// ports and limits suited to a single node.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:               "127.0.0.1:4317",
		HTTPAddr:               "127.0.0.1:4318",
		ZipkinAddr:             "127.0.0.1:9411",
		MaxRequestBytes:        16 << 20,
		MaxSpansPerRequest:     100_000,
		MaxAttributesPerSpan:   128,
		MaxEventsPerSpan:       128,
		MaxLinksPerSpan:        128,
		MaxAttributeDepth:      32,
		MaxAttributeValueBytes: 64 << 10,
		MaxSpansPerTrace:       100_000,
		MaxSpanDuration:        24 * time.Hour,
		DedupWindowSpans:       1 << 18,
		MaxConcurrentRequests:  64 * priority.CPUs(),
		ConcurrencyWait:        200 * time.Millisecond,
		RetryAfter:             time.Second,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.MaxSpansPerRequest == 0 {
		c.MaxSpansPerRequest = d.MaxSpansPerRequest
	}
	if c.MaxAttributesPerSpan == 0 {
		c.MaxAttributesPerSpan = d.MaxAttributesPerSpan
	}
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = d.MaxConcurrentRequests
	}
	if c.MaxEventsPerSpan == 0 {
		c.MaxEventsPerSpan = d.MaxEventsPerSpan
	}
	if c.MaxLinksPerSpan == 0 {
		c.MaxLinksPerSpan = d.MaxLinksPerSpan
	}
	if c.MaxAttributeDepth == 0 {
		c.MaxAttributeDepth = d.MaxAttributeDepth
	}
	if c.MaxAttributeValueBytes == 0 {
		c.MaxAttributeValueBytes = d.MaxAttributeValueBytes
	}
	if c.MaxSpansPerTrace == 0 {
		c.MaxSpansPerTrace = d.MaxSpansPerTrace
	}
	if c.MaxSpanDuration == 0 {
		c.MaxSpanDuration = d.MaxSpanDuration
	}
	if c.DedupWindowSpans == 0 {
		c.DedupWindowSpans = d.DedupWindowSpans
	}
	if c.ConcurrencyWait == 0 {
		c.ConcurrencyWait = d.ConcurrencyWait
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = d.RetryAfter
	}
	switch {
	case c.MaxRequestBytes < 0 || c.MaxRequestBytes > 1<<31-1:
		return c, fmt.Errorf("ingest: max request bytes %d out of range (1..2GiB)", c.MaxRequestBytes)
	case c.MaxSpansPerRequest < 0, c.MaxAttributesPerSpan < 0, c.MaxConcurrentRequests < 0:
		return c, fmt.Errorf("ingest: limits must not be negative")
	case c.MaxSpansPerSecond < 0:
		return c, fmt.Errorf("ingest: max spans per second must not be negative")
	case c.MaxSpansPerTrace < 0, c.MaxSpanDuration < 0:
		return c, fmt.Errorf("ingest: spans per trace and span duration limits must not be negative")
	}
	if err := c.limits().Validate(); err != nil {
		return c, fmt.Errorf("ingest: %w", err)
	}
	return c, nil
}

// limits are the conversion limits of the configuration.
func (c Config) limits() otlpconv.Limits {
	return otlpconv.Limits{MaxDepth: c.MaxAttributeDepth, MaxValueBytes: c.MaxAttributeValueBytes,
		MaxAttrs: c.MaxAttributesPerSpan, MaxEvents: c.MaxEventsPerSpan, MaxLinks: c.MaxLinksPerSpan}
}

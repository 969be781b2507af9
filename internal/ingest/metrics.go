package ingest

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Protocol label values.
const (
	protoGRPC   = "otlp_grpc"
	protoHTTP   = "otlp_http"
	protoZipkin = "zipkin"
)

// Reasons for bad requests and rejected spans (label "reason").
const (
	reasonDecode       = "decode"
	reasonContentType  = "content_type"
	reasonEncoding     = "content_encoding"
	reasonTooLarge     = "too_large"
	reasonTooManySpans = "too_many_spans"
	reasonTooManyAttrs = "too_many_attributes"
	reasonMethod       = "method"
	reasonInvalidID    = "invalid_id"
	reasonTooDeep      = "too_deep"
	// Spans rejected one by one.
	reasonInvalidTime   = "invalid_time"
	reasonTraceTooLarge = "too_many_spans_in_trace"
)

// Metrics are the Prometheus collectors of the ingest servers.
type Metrics struct {
	Requests      *prometheus.CounterVec // protocol, signal, outcome
	BadRequests   *prometheus.CounterVec // protocol, reason
	SpansAccepted *prometheus.CounterVec // protocol
	SpansRejected *prometheus.CounterVec // protocol, reason
	LogsAccepted  *prometheus.CounterVec // protocol
	LogsDropped   prometheus.Counter
	LogsRejected  *prometheus.CounterVec // protocol, reason
	// Limited counts values cut and attributes, events and links dropped
	// over the per-span limits (label "what").
	Limited           *prometheus.CounterVec
	SpansDeduplicated *prometheus.CounterVec // protocol
	// SplitRequests counts the trace requests a cluster node split by
	// owner before decoding them (SplitSink), the others being decoded
	// whole: how much of the traffic takes the cheaper path.
	SplitRequests *prometheus.CounterVec // protocol
	InFlight      prometheus.Gauge
	WriteSeconds  prometheus.Histogram
}

// NewMetrics creates unregistered collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_requests_total",
			Help: "Ingest requests by protocol, signal and outcome (ok, partial, bad_request, overloaded, limited, error).",
		}, []string{"protocol", "signal", "outcome"}),
		BadRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_bad_requests_total",
			Help: "Requests rejected as a whole for bad input, by protocol and reason.",
		}, []string{"protocol", "reason"}),
		SpansAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_spans_accepted_total",
			Help: "Spans durably written and acknowledged.",
		}, []string{"protocol"}),
		SpansRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_spans_rejected_total",
			Help: "Spans rejected individually (partial success), by reason.",
		}, []string{"protocol", "reason"}),
		LogsAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_logs_accepted_total",
			Help: "OTLP log records accepted.",
		}, []string{"protocol"}),
		LogsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tracedx_ingest_logs_dropped_total",
			Help: "OTLP log records accepted but dropped because no log sink is configured.",
		}),
		LogsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_logs_rejected_total",
			Help: "OTLP log records rejected individually (partial success), by reason.",
		}, []string{"protocol", "reason"}),
		Limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_limited_total",
			Help: "Attribute values truncated and attributes, events and links dropped over the per-span limits.",
		}, []string{"what"}),
		SpansDeduplicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_spans_deduplicated_total",
			Help: "Spans identical to one already accepted (a client's retry), acknowledged and not stored again.",
		}, []string{"protocol"}),
		SplitRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tracedx_ingest_split_requests_total",
			Help: "Trace requests a cluster node split by the owner of each trace before decoding them, forwarding the other nodes' parts as they came; the others were decoded whole.",
		}, []string{"protocol"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tracedx_ingest_inflight_requests",
			Help: "Ingest requests currently holding a concurrency slot.",
		}),
		WriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tracedx_ingest_sink_write_seconds",
			Help:    "Time spent in Sink.Write per request (durability wait included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
}

// Collectors returns every collector, for callers that register themselves.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Requests, m.BadRequests, m.SpansAccepted, m.SpansRejected,
		m.LogsAccepted, m.LogsDropped, m.LogsRejected, m.Limited, m.SpansDeduplicated, m.SplitRequests, m.InFlight, m.WriteSeconds}
}

// Register registers every collector with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range m.Collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("ingest metrics already registered: %w", err)
			}
			return fmt.Errorf("register ingest metrics: %w", err)
		}
	}
	return nil
}

package ingest

import (
	"context"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// exportResult is what an export request produced.
type exportResult struct {
	accepted, rejected int
	msg                string // partial-success message
}

// encodedResponse is an OTLP export response of either signal.
type encodedResponse interface {
	MarshalJSON() ([]byte, error)
	MarshalProto() ([]byte, error)
}

// otlpSignal is what the OTLP receivers need to know of a signal.
type otlpSignal struct {
	name     string // metric label and URL path element
	export   func(s *Server, ctx context.Context, proto string, format wireFormat, data []byte) (exportResult, error)
	response func(exportResult) encodedResponse
}

var (
	tracesSignal = otlpSignal{"traces", (*Server).exportTraces, func(r exportResult) encodedResponse { return traceResponse(r) }}
	logsSignal   = otlpSignal{"logs", (*Server).exportLogs, func(r exportResult) encodedResponse { return logsResponse(r) }}
)

// checkCount refuses a request with more items than MaxSpansPerRequest.
func (s *Server) checkCount(n int, items string) error {
	if n > s.cfg.MaxSpansPerRequest {
		return badInput(kindTooLarge, reasonTooManySpans,
			"request has %d %s, limit is %d per request: send smaller batches", n, items, s.cfg.MaxSpansPerRequest)
	}
	return nil
}

// consumeTraces is the protocol-independent part of a trace export; rep
// holds the spans decoding already removed.
func (s *Server) consumeTraces(ctx context.Context, proto string, td ptrace.Traces, rep repaired) (exportResult, error) {
	if err := s.checkCount(td.SpanCount(), "spans"); err != nil {
		return exportResult{}, err
	}
	spans, stats := otlpconv.FromTracesLimited(td, s.cfg.limits())
	s.observeLimits(stats)
	var rej rejections
	rej.addRepaired(rep)
	return s.consumeSpans(ctx, proto, spans, &rej)
}

// observeLimits counts what conversion cut.
func (s *Server) observeLimits(st otlpconv.Stats) {
	for what, n := range map[string]int{"truncated_value": st.TruncatedValues, "dropped_attribute": st.DroppedAttrs,
		"dropped_event": st.DroppedEvents, "dropped_link": st.DroppedLinks} {
		if n > 0 {
			s.metrics.Limited.WithLabelValues(what).Add(float64(n))
		}
	}
}

// consumeSpans checks converted spans and writes the valid ones; rej may
// already hold rejections of the decoder.
func (s *Server) consumeSpans(ctx context.Context, proto string, spans []model.Span, rej *rejections) (exportResult, error) {
	return s.consume(ctx, proto, spans, rej, 0, nil)
}

// consume is consumeSpans for a request of which others more spans, all
// checked, go to other nodes through forward (exportSplit): the rate
// limit counts them with the kept spans, forward runs while those are
// written, and the request succeeds when both do.
func (s *Server) consume(ctx context.Context, proto string, spans []model.Span, rej *rejections, others int, forward func() error) (exportResult, error) {
	kept, keys, dups, err := s.checkSpans(ctx, spans, rej)
	if err != nil {
		return exportResult{}, err
	}
	if forward == nil {
		err = s.write(ctx, proto, kept)
	} else if err = s.allow(ctx, proto, len(kept)+others); err == nil {
		done := make(chan error, 1)
		go func() { done <- forward() }()
		if len(kept) > 0 {
			err = s.store(ctx, proto, len(kept), func() error { return s.sink.Write(ctx, kept) })
		}
		if ferr := <-done; err == nil {
			err = ferr
		}
	}
	if err != nil {
		return exportResult{}, err
	}
	s.recent.remember(keys)
	if dups > 0 {
		s.metrics.SpansDeduplicated.WithLabelValues(proto).Add(float64(dups))
	}
	rej.observe(s.metrics.SpansRejected, proto)
	return exportResult{accepted: len(kept) + others, rejected: rej.n, msg: rej.message("span")}, nil
}

func traceResponse(r exportResult) ptraceotlp.ExportResponse {
	resp := ptraceotlp.NewExportResponse()
	if r.rejected > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(r.rejected))
		resp.PartialSuccess().SetErrorMessage(r.msg)
	}
	return resp
}

// logsFrom converts OTLP logs minimally for trace correlation.
func (s *Server) logsFrom(ld plog.Logs) []LogRecord {
	lim := s.cfg.limits()
	out := make([]LogRecord, 0, ld.LogRecordCount())
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		res := otlpconv.AttrsFromMapLimited(rl.Resource().Attributes(), lim)
		service := res.Str("service.name")
		if service == "" {
			service = model.UnknownService
		}
		sls := rl.ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			sl := sls.At(j)
			scope := sl.Scope().Name()
			lrs := sl.LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				t := lr.Timestamp()
				if t == 0 {
					t = lr.ObservedTimestamp()
				}
				out = append(out, LogRecord{
					TraceID:        model.TraceID(lr.TraceID()),
					SpanID:         model.SpanID(lr.SpanID()),
					TimeUnixNano:   uint64(t),
					SeverityNumber: int32(lr.SeverityNumber()),
					SeverityText:   lr.SeverityText(),
					Body:           otlpconv.ValueTextLimited(lr.Body(), lim),
					Attrs:          otlpconv.AttrsFromMapLimited(lr.Attributes(), lim),
					Service:        service,
					Resource:       res,
					ScopeName:      scope,
				})
			}
		}
	}
	return out
}

func (s *Server) consumeLogs(ctx context.Context, proto string, ld plog.Logs, rep repaired) (exportResult, error) {
	if err := s.checkCount(ld.LogRecordCount(), "log records"); err != nil {
		return exportResult{}, err
	}
	var rej rejections
	rej.addRepaired(rep)
	if err := s.writeLogs(ctx, proto, s.logsFrom(ld)); err != nil {
		return exportResult{}, err
	}
	rej.observe(s.metrics.LogsRejected, proto)
	return exportResult{rejected: rej.n, msg: rej.message("log record")}, nil
}

func logsResponse(r exportResult) plogotlp.ExportResponse {
	resp := plogotlp.NewExportResponse()
	if r.rejected > 0 {
		resp.PartialSuccess().SetRejectedLogRecords(int64(r.rejected))
		resp.PartialSuccess().SetErrorMessage(r.msg)
	}
	return resp
}

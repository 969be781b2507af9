package ingest

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// traceResult is what a trace export request produced.
type traceResult struct {
	accepted, rejected int
	msg                string
}

// precheckTraces enforces the request limits on the decoded pdata before
// conversion, so an oversized request costs no model allocations.
func (s *Server) precheckTraces(td ptrace.Traces) error {
	if n := td.SpanCount(); n > s.cfg.MaxSpansPerRequest {
		return badInput(kindTooLarge, reasonTooManySpans,
			"request has %d spans, limit is %d per request: send smaller batches", n, s.cfg.MaxSpansPerRequest)
	}
	max := s.cfg.MaxAttributesPerSpan
	tooMany := func(what string, n int) error {
		return badInput(kindBadRequest, reasonTooManyAttrs, "%s has %d attributes, limit is %d", what, n, max)
	}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		if n := rs.Resource().Attributes().Len(); n > max {
			return tooMany("a resource", n)
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			if n := ss.Scope().Attributes().Len(); n > max {
				return tooMany("an instrumentation scope", n)
			}
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				if n := sp.Attributes().Len(); n > max {
					return tooMany(fmt.Sprintf("span %q", truncate(sp.Name(), 64)), n)
				}
				evs := sp.Events()
				for e := 0; e < evs.Len(); e++ {
					if n := evs.At(e).Attributes().Len(); n > max {
						return tooMany(fmt.Sprintf("an event of span %q", truncate(sp.Name(), 64)), n)
					}
				}
				ls := sp.Links()
				for l := 0; l < ls.Len(); l++ {
					if n := ls.At(l).Attributes().Len(); n > max {
						return tooMany(fmt.Sprintf("a link of span %q", truncate(sp.Name(), 64)), n)
					}
				}
			}
		}
	}
	return nil
}

// consumeTraces is the protocol-independent part of a trace export.
func (s *Server) consumeTraces(ctx context.Context, proto string, td ptrace.Traces) (traceResult, error) {
	if err := s.precheckTraces(td); err != nil {
		return traceResult{}, err
	}
	return s.consumeSpans(ctx, proto, otlpconv.FromTraces(td))
}

// consumeSpans checks converted spans and writes the valid ones.
func (s *Server) consumeSpans(ctx context.Context, proto string, spans []model.Span) (traceResult, error) {
	kept, rejected, msg, err := s.checkSpans(proto, spans)
	if err != nil {
		return traceResult{}, err
	}
	if err := s.write(ctx, proto, kept); err != nil {
		return traceResult{}, err
	}
	return traceResult{accepted: len(kept), rejected: rejected, msg: msg}, nil
}

func traceResponse(r traceResult) ptraceotlp.ExportResponse {
	resp := ptraceotlp.NewExportResponse()
	if r.rejected > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(r.rejected))
		resp.PartialSuccess().SetErrorMessage(r.msg)
	}
	return resp
}

// logsFrom converts OTLP logs minimally for trace correlation.
func logsFrom(ld plog.Logs) []LogRecord {
	out := make([]LogRecord, 0, ld.LogRecordCount())
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		res := otlpconv.AttrsFromMap(rl.Resource().Attributes())
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
					Body:           bodyText(lr.Body()),
					Attrs:          otlpconv.AttrsFromMap(lr.Attributes()),
					Service:        service,
					Resource:       res,
					ScopeName:      scope,
				})
			}
		}
	}
	return out
}

func bodyText(v pcommon.Value) string {
	if v.Type() == pcommon.ValueTypeEmpty {
		return ""
	}
	return v.AsString()
}

func (s *Server) precheckLogs(ld plog.Logs) error {
	max := s.cfg.MaxAttributesPerSpan
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				if n := lrs.At(k).Attributes().Len(); n > max {
					return badInput(kindBadRequest, reasonTooManyAttrs, "a log record has %d attributes, limit is %d", n, max)
				}
			}
		}
	}
	return nil
}

func (s *Server) consumeLogs(ctx context.Context, proto string, ld plog.Logs) error {
	if n := ld.LogRecordCount(); n > s.cfg.MaxSpansPerRequest {
		return badInput(kindTooLarge, reasonTooManySpans,
			"request has %d log records, limit is %d per request", n, s.cfg.MaxSpansPerRequest)
	}
	if err := s.precheckLogs(ld); err != nil {
		return err
	}
	return s.writeLogs(ctx, proto, logsFrom(ld))
}

// --- gRPC services ---------------------------------------------------------

type grpcTraces struct {
	ptraceotlp.UnimplementedGRPCServer
	s *Server
}

func (g *grpcTraces) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s := g.s
	release, err := s.acquire(ctx)
	if err != nil {
		s.finish(protoGRPC, "traces", err, 0)
		return ptraceotlp.ExportResponse{}, s.grpcStatus(err)
	}
	defer release()
	res, err := s.consumeTraces(ctx, protoGRPC, req.Traces())
	s.finish(protoGRPC, "traces", err, res.rejected)
	if err != nil {
		return ptraceotlp.ExportResponse{}, s.grpcStatus(err)
	}
	return traceResponse(res), nil
}

type grpcLogs struct {
	plogotlp.UnimplementedGRPCServer
	s *Server
}

func (g *grpcLogs) Export(ctx context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	s := g.s
	release, err := s.acquire(ctx)
	if err != nil {
		s.finish(protoGRPC, "logs", err, 0)
		return plogotlp.ExportResponse{}, s.grpcStatus(err)
	}
	defer release()
	err = s.consumeLogs(ctx, protoGRPC, req.Logs())
	s.finish(protoGRPC, "logs", err, 0)
	if err != nil {
		return plogotlp.ExportResponse{}, s.grpcStatus(err)
	}
	return plogotlp.NewExportResponse(), nil
}

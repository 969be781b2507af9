package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
)

// SplitSink is a Sink that sends the spans of other nodes' traces on to
// those nodes (a cluster node forwarding to each trace's owner) and takes
// them as encoded requests: a protobuf trace request is then split by
// owner in the bytes it came in, and only this node's part is decoded in
// full. The owners decode theirs.
type SplitSink interface {
	Sink
	// Owners says how the spans of ctx's request are split: over n nodes,
	// this one being self, owner giving a trace's node. n < 2: they are
	// not (Write takes them).
	Owners(ctx context.Context) (n, self int, owner func(model.TraceID) int)
	// WriteEncoded stores req, an encoded ExportTraceServiceRequest of
	// spans spans of node's traces, on that node; as Write, it returns
	// once they are durable there.
	WriteEncoded(ctx context.Context, node int, req []byte, spans int) error
}

// splitters are reused from request to request: their parts grow to the
// size of a request once.
var splitters = sync.Pool{New: func() any { return new(otlpconv.TraceSplitter) }}

// exportSplit answers a protobuf trace request a SplitSink takes (split
// is true) or leaves it to the usual path (split is false): when the sink
// is no SplitSink, the request came from a peer or holds no spans, or any
// part of it would not be stored whole. A request whose spans all stay
// here is taken too: its part is decoded into pooled memory, where the
// usual path of a forwarding node records the spans' bytes in memory of
// their own. The other nodes' parts are checked before anything is
// written, as their owners will decode and check them (owners skip the
// limits of a request, counted here); a part an owner would refuse, or
// refuse spans of, takes the request to the usual path, which answers
// for it as a single node does.
func (s *Server) exportSplit(ctx context.Context, proto string, data []byte) (res exportResult, split bool, err error) {
	sink, ok := s.sink.(SplitSink)
	if !ok || s.forwarded(ctx) {
		return exportResult{}, false, nil
	}
	n, self, owner := sink.Owners(ctx)
	if n < 2 {
		return exportResult{}, false, nil
	}
	sp := splitters.Get().(*otlpconv.TraceSplitter)
	defer splitters.Put(sp)
	if sp.Split(data, n, owner, self) != nil {
		return exportResult{}, false, nil
	}
	total := 0
	for _, c := range sp.Counts {
		total += c
	}
	if total == 0 {
		return exportResult{}, false, nil
	}
	lim := s.cfg.limits()
	var perTrace map[model.TraceID]int
	if total > s.cfg.MaxSpansPerTrace {
		perTrace = map[model.TraceID]int{}
	}
	now := time.Now()
	for o, part := range sp.Parts {
		if o == self || sp.Counts[o] == 0 {
			continue
		}
		checked, err := otlpconv.CheckTracesProtoPooled(part, lim)
		if err != nil {
			return exportResult{}, false, nil
		}
		whole := s.storedWhole(checked.Spans, now, perTrace)
		checked.Release()
		if !whole {
			return exportResult{}, false, nil
		}
	}
	var local *otlpconv.Decoded
	if len(sp.Parts[self]) > 0 {
		if local, err = otlpconv.DecodeTracesProtoPooled(sp.Parts[self], lim); err != nil {
			return exportResult{}, false, nil
		}
		// The sink has encoded the spans when this returns.
		defer local.Release()
		for i := range local.Spans {
			if perTrace != nil && s.overTrace(perTrace, local.Spans[i].TraceID) {
				return exportResult{}, false, nil
			}
		}
	}
	if err := s.checkCount(total, "spans"); err != nil {
		return exportResult{}, true, err
	}
	s.metrics.SplitRequests.WithLabelValues(proto).Inc()
	var spans []model.Span
	if local != nil {
		// The owners count what the limits cut of theirs.
		s.observeLimits(local.Stats)
		spans = local.Spans
	}
	others := total - sp.Counts[self]
	res, err = s.consume(ctx, proto, spans, &rejections{}, others, func() error {
		// Each owner's part is forwarded on its own goroutine; the request
		// is acknowledged only when all are durable.
		var wg sync.WaitGroup
		errs := make([]error, n)
		for o, part := range sp.Parts {
			if o == self || sp.Counts[o] == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[o] = s.store(ctx, proto, sp.Counts[o], func() error { return sink.WriteEncoded(ctx, o, part, sp.Counts[o]) })
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	})
	return res, true, err
}

// storedWhole reports whether spans pass the checks of checkSpans that
// drop spans one by one (counting their traces in perTrace when it is
// not nil): a forwarded part must be stored whole, since its owner takes
// it as checked.
func (s *Server) storedWhole(spans []model.Span, now time.Time, perTrace map[model.TraceID]int) bool {
	for i := range spans {
		if reason, _ := s.spanFault(&spans[i], now, perTrace); reason != "" {
			return false
		}
	}
	return true
}

// overTrace counts a span of trace id and reports whether the trace has
// more spans in the request than MaxSpansPerTrace.
func (s *Server) overTrace(perTrace map[model.TraceID]int, id model.TraceID) bool {
	perTrace[id]++
	return perTrace[id] > s.cfg.MaxSpansPerTrace
}

package ingest

import (
	"context"

	"github.com/tracedx/tracedx/internal/otlpconv"
)

type rawSpansKey struct{}

// RawSpansFrom returns where the spans a Sink is writing were in their
// request, when the sink may forward them (Config.ForwardsTrace): a
// cluster node copies them as they came instead of encoding them again.
// The raw spans refer to the request, which is valid only until Write
// returns. Nil for requests not decoded by otlpconv.DecodeTracesProtoRaw.
func RawSpansFrom(ctx context.Context) *otlpconv.RawSpans {
	raws, _ := ctx.Value(rawSpansKey{}).(*otlpconv.RawSpans)
	return raws
}

// decodeTracesProto decodes a protobuf request with the direct decoder,
// recording the spans' bytes in the returned context when some may be
// forwarded to their owner. The spans' memory is reused once the
// returned batch is released.
func (s *Server) decodeTracesProto(ctx context.Context, data []byte) (context.Context, *otlpconv.Decoded, error) {
	if s.cfg.ForwardsTrace == nil || s.forwarded(ctx) {
		batch, err := otlpconv.DecodeTracesProtoPooled(data, s.cfg.limits())
		return ctx, batch, err
	}
	spans, raws, stats, err := otlpconv.DecodeTracesProtoRaw(data, s.cfg.limits())
	if err != nil {
		return ctx, nil, err
	}
	return context.WithValue(ctx, rawSpansKey{}, raws), &otlpconv.Decoded{Spans: spans, Stats: stats}, nil
}

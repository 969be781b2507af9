package jaeger

import (
	"slices"

	"github.com/tracedx/tracedx/internal/model"
)

// SampledTag is the root-span tag (an attribute in api_v3's OTLP) that
// carries tracedx's tail-sampling decision about the trace: why it was
// kept, or "dropped" (it then leaves storage after retention.traces).
// Jaeger's formats have no trace-level attributes, and the root span is
// what its UI shows first.
const SampledTag = "tracedx.sampled"

// markSampled tags the root span of one trace's spans with the sampling
// decision, when there is one. The spans' attribute lists may be shared
// with the store, so the root gets a new one.
func (h *handler) markSampled(spans []model.Span) {
	if h.opts.Sampled == nil || len(spans) == 0 {
		return
	}
	reason := h.opts.Sampled(spans[0].TraceID)
	if reason == "" {
		return
	}
	root := -1
	for i := range spans {
		if spans[i].ParentSpanID.IsZero() && (root < 0 || spans[i].StartUnixNano < spans[root].StartUnixNano) {
			root = i
		}
	}
	if root < 0 {
		// No root received (yet): the earliest span stands for it.
		root = 0
		for i := range spans {
			if spans[i].StartUnixNano < spans[root].StartUnixNano {
				root = i
			}
		}
	}
	s := &spans[root]
	s.Attrs = append(slices.Clip(s.Attrs), model.Attr{Key: SampledTag, Value: model.Str(reason)})
}

package model

// WithInferredKinds returns spans whose unspecified kinds are filled in
// from the shape of the trace, or spans itself when every span has a kind.
// Converters from Jaeger or CSV exports and some instrumentations drop the
// span kind; without it no call would be known as a call, and the time in
// front of a callee (a network delay) would be charged to the caller. A
// span without a kind is the entry of its service when it has no parent or
// its parent is another service's; else a call when a child belongs to
// another service; else internal work.
func WithInferredKinds(spans []Span) []Span {
	missing := false
	for i := range spans {
		if spans[i].Kind == KindUnspecified {
			missing = true
			break
		}
	}
	if !missing {
		return spans
	}
	service := make(map[SpanID]string, len(spans))
	for i := range spans {
		service[spans[i].SpanID] = spans[i].Service
	}
	callsOut := make(map[SpanID]bool)
	for i := range spans {
		s := &spans[i]
		if ps, ok := service[s.ParentSpanID]; ok && !s.ParentSpanID.IsZero() && s.Service != "" && ps != s.Service {
			callsOut[s.ParentSpanID] = true
		}
	}
	out := make([]Span, len(spans))
	copy(out, spans)
	for i := range out {
		s := &out[i]
		if s.Kind != KindUnspecified {
			continue
		}
		ps, hasParent := service[s.ParentSpanID]
		switch {
		case s.ParentSpanID.IsZero() || !hasParent || ps != s.Service:
			s.Kind = KindServer
		case callsOut[s.SpanID]:
			s.Kind = KindClient
		default:
			s.Kind = KindInternal
		}
	}
	return out
}

package otlpconv

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// RawSpan is where a decoded span was in its request: a cluster node
// forwards the bytes as they came rather than encoding the model span
// again, which the owner would then decode a second time.
type RawSpan struct {
	TraceID model.TraceID
	SpanID  model.SpanID
	// Span is the span's Span message; nil when the model span does not
	// encode back to what was sent (a limit cut something, it holds an
	// array or map value, kept as JSON text, or its resource has no
	// service.name, which the encoding adds), so that an owner stores the
	// same whichever way the span reaches it.
	Span []byte
	// Resource and Scope are the contents of its ResourceSpans' resource
	// and ScopeSpans' scope fields (nil when absent).
	Resource, Scope []byte
	// Group numbers the ScopeSpans the span came from, in its request.
	Group int32
}

// DecodeTracesProtoRaw is DecodeTracesProto that also returns, in the
// order of the spans, where each span was in data (the raw spans refer to
// data). Decoding data alone, with the same limits, gives back a span
// whose RawSpan.Span is set.
func DecodeTracesProtoRaw(data []byte, lim Limits) ([]model.Span, []RawSpan, Stats, error) {
	r := &rawRecorder{}
	spans, stats, err := decodeTraces(data, lim, r)
	if err != nil {
		return nil, nil, Stats{}, err
	}
	return spans, r.out, stats, nil
}

// rawRecorder follows the decoder through a request. A part is usable
// when decoding it cut nothing and rendered no composite value; a
// ResourceSpans with more than one resource (or ScopeSpans with more than
// one scope) field is not, since the decoder merges them.
type rawRecorder struct {
	out        []RawSpan
	mark       rawMark // at the start of the part being read
	res, scope []byte
	nRes, nSc  int
	resOK      bool
	scopeOK    bool
	group      int32
	span       []byte
}

// rawMark is what changes in the decoder when it alters what it decodes.
type rawMark struct {
	stats      Stats
	composites int
}

func markOf(d *wireDecoder) rawMark { return rawMark{d.stats, d.composites} }

func (r *rawRecorder) beginResource(d *wireDecoder) {
	r.res, r.nRes, r.mark = nil, 0, markOf(d)
}

func (r *rawRecorder) resourceField(b []byte) { r.res, r.nRes = b, r.nRes+1 }

// endResource also refuses a resource without service.name: a span's
// encoding adds the service the model gave it.
func (r *rawRecorder) endResource(d *wireDecoder, res model.Attrs) {
	r.resOK = r.nRes <= 1 && markOf(d) == r.mark && hasKey(res, serviceNameAttribute)
}

func (r *rawRecorder) beginScope(d *wireDecoder) {
	r.scope, r.nSc, r.mark = nil, 0, markOf(d)
	r.group++
}

func (r *rawRecorder) scopeField(b []byte) { r.scope, r.nSc = b, r.nSc+1 }

func (r *rawRecorder) endScope(d *wireDecoder) {
	r.scopeOK = r.nSc <= 1 && markOf(d) == r.mark
}

func (r *rawRecorder) beginSpan(d *wireDecoder, b []byte) {
	r.span, r.mark = b, markOf(d)
}

func (r *rawRecorder) endSpan(d *wireDecoder, sp *model.Span) {
	raw := RawSpan{TraceID: sp.TraceID, SpanID: sp.SpanID, Resource: r.res, Scope: r.scope, Group: r.group}
	if r.resOK && r.scopeOK && markOf(d) == r.mark {
		raw.Span = r.span
	}
	r.out = append(r.out, raw)
}

// RawIndex finds the raw span of a decoded span by its ids.
type RawIndex struct {
	raws []RawSpan
	at   map[model.SpanID]int32 // -1: the span id is not unique
}

// NewRawIndex indexes raws.
func NewRawIndex(raws []RawSpan) *RawIndex {
	x := &RawIndex{raws: raws, at: make(map[model.SpanID]int32, len(raws))}
	for i := range raws {
		if _, dup := x.at[raws[i].SpanID]; dup {
			x.at[raws[i].SpanID] = -1
			continue
		}
		x.at[raws[i].SpanID] = int32(i)
	}
	return x
}

// Lookup returns sp's raw span when it can be forwarded as it came: its
// ids are those of one span of the request only (two spans sharing them
// may differ, and only one of them may have been kept).
func (x *RawIndex) Lookup(sp *model.Span) (*RawSpan, bool) {
	i, ok := x.at[sp.SpanID]
	if !ok || i < 0 {
		return nil, false
	}
	raw := &x.raws[i]
	if raw.TraceID != sp.TraceID || raw.Span == nil {
		return nil, false
	}
	return raw, true
}

// AppendRawResourceSpans appends the request field resource_spans of an
// ExportTraceServiceRequest for raws, whose Span is set: one ResourceSpans
// for every run of raws from one ScopeSpans. Appended to an encoded
// request, it adds the spans to it.
func AppendRawResourceSpans(b []byte, raws []*RawSpan) []byte {
	for len(raws) > 0 {
		n := 1
		for n < len(raws) && raws[n].Group == raws[0].Group {
			n++
		}
		run := raws[:n]
		raws = raws[n:]
		scopeSpans := protowire.SizeBytes(len(run[0].Scope)) + 1
		for _, r := range run {
			scopeSpans += 1 + protowire.SizeBytes(len(r.Span))
		}
		resourceSpans := 1 + protowire.SizeBytes(len(run[0].Resource)) + 1 + protowire.SizeBytes(scopeSpans)
		b = protowire.AppendTag(b, fRequestResourceSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(resourceSpans))
		b = protowire.AppendTag(b, fResourceSpansResource, protowire.BytesType)
		b = protowire.AppendBytes(b, run[0].Resource)
		b = protowire.AppendTag(b, fResourceSpansScopeSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(scopeSpans))
		b = protowire.AppendTag(b, fScopeSpansScope, protowire.BytesType)
		b = protowire.AppendBytes(b, run[0].Scope)
		for _, r := range run {
			b = protowire.AppendTag(b, fScopeSpansSpans, protowire.BytesType)
			b = protowire.AppendBytes(b, r.Span)
		}
	}
	return b
}

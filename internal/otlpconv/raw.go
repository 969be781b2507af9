package otlpconv

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// RawSpans says where the spans decoded from a request were in it: a
// cluster node forwards the bytes as they came rather than encoding the
// model spans again. It refers to the request.
//
// A span is usable only when its model span encodes back to what was
// sent, so that an owner stores the same whichever way the span reaches
// it: not when a limit cut it, it holds an array or map value (kept as
// JSON text), or its resource has no service.name (the encoding adds the
// service the model gave it).
type RawSpans struct {
	data   []byte
	spans  []rawSpan // in the order of the decoded spans
	groups []rawGroup
}

// rawSpan is pointer free, as is rawGroup: the collector neither scans
// them nor pays write barriers for them. Ranges are offsets in data.
type rawSpan struct {
	traceID    model.TraceID
	spanID     model.SpanID
	start, end int32 // end 0: not usable
	group      int32 // its ScopeSpans in groups
}

// rawGroup is one ScopeSpans: the contents of its ResourceSpans' resource
// field and of its scope field.
type rawGroup struct {
	resStart, resEnd, scopeStart, scopeEnd int32
}

// DecodeTracesProtoRaw is DecodeTracesProto that also returns where each
// span was in data.
func DecodeTracesProtoRaw(data []byte, lim Limits) ([]model.Span, *RawSpans, Stats, error) {
	r := &rawRecorder{raws: RawSpans{data: data}}
	spans, stats, err := decodeTraces(data, lim, r)
	if err != nil {
		return nil, nil, Stats{}, err
	}
	return spans, &r.raws, stats, nil
}

// rawRecorder follows the decoder through a request. A ResourceSpans with
// more than one resource field (or ScopeSpans with more than one scope) is
// not usable, since the decoder merges them.
type rawRecorder struct {
	raws       RawSpans
	mark       rawMark // at the start of the part being read
	res, scope []byte
	nRes, nSc  int
	resOK      bool
	scopeOK    bool
	span       []byte
}

// rawMark is what changes in the decoder when it alters what it decodes.
type rawMark struct {
	stats      Stats
	composites int
}

func markOf(d *wireDecoder) rawMark { return rawMark{d.stats, d.composites} }

// offsets gives b's range in data, of which it is a part.
func (r *rawRecorder) offsets(b []byte) (int32, int32) {
	start := cap(r.raws.data) - cap(b)
	return int32(start), int32(start + len(b))
}

func (r *rawRecorder) beginResource(d *wireDecoder) {
	r.res, r.nRes, r.mark = nil, 0, markOf(d)
}

func (r *rawRecorder) resourceField(b []byte) { r.res, r.nRes = b, r.nRes+1 }

func (r *rawRecorder) endResource(d *wireDecoder, res model.Attrs) {
	r.resOK = r.nRes <= 1 && markOf(d) == r.mark && hasKey(res, serviceNameAttribute)
}

func (r *rawRecorder) beginScope(d *wireDecoder) {
	r.scope, r.nSc, r.mark = nil, 0, markOf(d)
}

func (r *rawRecorder) scopeField(b []byte) { r.scope, r.nSc = b, r.nSc+1 }

func (r *rawRecorder) endScope(d *wireDecoder) {
	r.scopeOK = r.nSc <= 1 && markOf(d) == r.mark
	var g rawGroup
	if r.res != nil {
		g.resStart, g.resEnd = r.offsets(r.res)
	}
	if r.scope != nil {
		g.scopeStart, g.scopeEnd = r.offsets(r.scope)
	}
	r.raws.groups = append(r.raws.groups, g)
}

func (r *rawRecorder) beginSpan(d *wireDecoder, b []byte) {
	r.span, r.mark = b, markOf(d)
}

func (r *rawRecorder) endSpan(d *wireDecoder, sp *model.Span) {
	raw := rawSpan{traceID: sp.TraceID, spanID: sp.SpanID, group: int32(len(r.raws.groups) - 1)}
	if r.resOK && r.scopeOK && markOf(d) == r.mark && len(r.span) > 0 {
		raw.start, raw.end = r.offsets(r.span)
	}
	r.raws.spans = append(r.raws.spans, raw)
}

// RawIndex finds the raw span of a decoded span by its ids.
type RawIndex struct {
	raws *RawSpans
	at   map[model.SpanID]int32 // -1: the span id is not unique
}

// NewRawIndex indexes raws.
func NewRawIndex(raws *RawSpans) *RawIndex {
	x := &RawIndex{raws: raws, at: make(map[model.SpanID]int32, len(raws.spans))}
	for i := range raws.spans {
		id := raws.spans[i].spanID
		if _, dup := x.at[id]; dup {
			x.at[id] = -1
			continue
		}
		x.at[id] = int32(i)
	}
	return x
}

// Lookup returns the number of sp's raw span when it can be forwarded as
// it came: it is usable and its ids are those of one span of the request
// only (two spans sharing them may differ, and only one may have been
// kept).
func (x *RawIndex) Lookup(sp *model.Span) (int32, bool) {
	i, ok := x.at[sp.SpanID]
	if !ok || i < 0 {
		return 0, false
	}
	raw := &x.raws.spans[i]
	if raw.traceID != sp.TraceID || raw.end == 0 {
		return 0, false
	}
	return i, true
}

// Group is the ScopeSpans raw span i came in; spans of one group share
// one ResourceSpans when they are appended together.
func (x *RawIndex) Group(i int32) int32 { return x.raws.spans[i].group }

// AppendResourceSpans appends the request field resource_spans of an
// ExportTraceServiceRequest holding the raw spans spans (numbers Lookup
// gave): one ResourceSpans for every run of spans of one group. Appended
// to an encoded request, it adds the spans to it.
func (x *RawIndex) AppendResourceSpans(b []byte, spans []int32) []byte {
	data := x.raws.data
	for len(spans) > 0 {
		g := x.raws.spans[spans[0]].group
		n := 1
		for n < len(spans) && x.raws.spans[spans[n]].group == g {
			n++
		}
		run := spans[:n]
		spans = spans[n:]
		grp := x.raws.groups[g]
		res, scope := data[grp.resStart:grp.resEnd], data[grp.scopeStart:grp.scopeEnd]
		scopeSpans := 1 + protowire.SizeBytes(len(scope))
		for _, i := range run {
			scopeSpans += 1 + protowire.SizeBytes(int(x.raws.spans[i].end-x.raws.spans[i].start))
		}
		resourceSpans := 1 + protowire.SizeBytes(len(res)) + 1 + protowire.SizeBytes(scopeSpans)
		b = protowire.AppendTag(b, fRequestResourceSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(resourceSpans))
		b = protowire.AppendTag(b, fResourceSpansResource, protowire.BytesType)
		b = protowire.AppendBytes(b, res)
		b = protowire.AppendTag(b, fResourceSpansScopeSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(scopeSpans))
		b = protowire.AppendTag(b, fScopeSpansScope, protowire.BytesType)
		b = protowire.AppendBytes(b, scope)
		for _, i := range run {
			b = protowire.AppendTag(b, fScopeSpansSpans, protowire.BytesType)
			b = protowire.AppendBytes(b, data[x.raws.spans[i].start:x.raws.spans[i].end])
		}
	}
	return b
}

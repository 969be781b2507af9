package otlpconv

import "github.com/tracedx/tracedx/internal/model"

// Decoded is a request's spans decoded into memory that later requests
// reuse once Release is called. The span slice and the spans' attribute
// arena were 9 % and 31 % of all the bytes the server allocated at full
// rate, and most of its garbage collection, for memory that is dead as
// soon as the sink has encoded the spans.
type Decoded struct {
	Spans []model.Span
	Stats Stats

	spans  []model.Span   // Spans' backing array, as decoded
	chunks [][]model.Attr // attribute chunks the spans point into
}

// DecodeTracesProtoPooled is DecodeTracesProto into reused memory: the
// spans and their attribute slices (Attrs) are valid until Release, which
// hands the memory to a later request; nothing may keep them, or a slice
// of them, after that. Resources, events, links, strings and byte values
// are not reused and may be kept.
func DecodeTracesProtoPooled(data []byte, lim Limits) (*Decoded, error) {
	b := &Decoded{}
	spans, stats, err := decodeTracesInto(data, lim, nil, b)
	if err != nil {
		// Spans were decoded into some of it: clear it all.
		b.spans = b.spans[:cap(b.spans)]
		b.Release()
		return nil, err
	}
	b.Spans, b.Stats, b.spans = spans, stats, spans
	return b, nil
}

// Pooled memory is kept in channels, not sync.Pools: those empty at
// every other collection, and the server collects several times a second
// under load. The bounds keep what the pools hold to a few MB: a
// request of the usual ~500 spans with ~10 attributes each uses ~5k
// attributes (~450 KB) and ~130 KB of spans.
const (
	pooledBatches  = 8
	maxPooledAttrs = 1 << 14 // 1.4 MB
	maxPooledSpans = 1 << 12 // 1.1 MB
	// minPooledAttrs keeps the small first chunk of a request (sized
	// before its first span was read) out of the pool, where it would make
	// a later large request start in it and move to a new chunk at once.
	minPooledAttrs = 1 << 10
)

var (
	idleAttrChunks = make(chan []model.Attr, pooledBatches)
	idleSpanSlices = make(chan []model.Span, pooledBatches)
)

// spanSlice returns an empty span slice with room for n spans; a pooled
// one too small for them is dropped.
func (b *Decoded) spanSlice(n int) []model.Span {
	select {
	case s := <-idleSpanSlices:
		if cap(s) >= n {
			b.spans = s[:0]
			return b.spans
		}
	default:
	}
	if n <= maxPooledSpans {
		n = min(n+n/2, maxPooledSpans) // as attrChunk
	}
	b.spans = make([]model.Span, 0, n)
	return b.spans
}

// attrChunk returns an empty attribute chunk with room for at least
// want attributes (need, if more). A pooled chunk too small for that is
// dropped: it is too small for requests like this one. An allocated one
// has room for half as much again, so that it serves requests somewhat
// larger than this one later.
func (b *Decoded) attrChunk(need, want int) []model.Attr {
	want = max(want, need)
	select {
	case c := <-idleAttrChunks:
		if cap(c) >= want {
			return c[:0]
		}
	default:
	}
	if want <= maxPooledAttrs {
		want = min(want+want/2, maxPooledAttrs)
	}
	return make([]model.Attr, 0, want)
}

// keep records a chunk (as filled) for Release.
func (b *Decoded) keep(chunk []model.Attr) {
	if cap(chunk) > 0 {
		b.chunks = append(b.chunks, chunk)
	}
}

// Release returns the memory of b's spans and their attributes for reuse,
// cleared so that the pools keep no strings or byte values alive.
func (b *Decoded) Release() {
	if b == nil {
		return
	}
	for i, c := range b.chunks {
		// Only the last chunk can be worth keeping: the ones before it
		// were too small for this request.
		if i < len(b.chunks)-1 || cap(c) > maxPooledAttrs || cap(c) < minPooledAttrs {
			continue
		}
		clear(c)
		select {
		case idleAttrChunks <- c[:0]:
		default:
		}
	}
	if s := b.spans; cap(s) > 0 && cap(s) <= maxPooledSpans {
		// The caller may have compacted Spans in place: everything up to
		// the decoded length may hold a span.
		clear(s)
		select {
		case idleSpanSlices <- s[:0]:
		default:
		}
	}
	*b = Decoded{}
}

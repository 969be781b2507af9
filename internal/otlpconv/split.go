package otlpconv

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tracedx/tracedx/internal/model"
)

// TraceSplitter splits encoded trace export requests by the node owning
// each span's trace, so that a cluster node forwards the spans of other
// nodes' traces in the bytes they came in, without decoding them first.
// It reuses its memory from request to request; one request at a time.
type TraceSplitter struct {
	// Parts[o] is the request of node o's spans after Split; Counts[o]
	// how many spans it holds.
	Parts  [][]byte
	Counts []int

	rsHead  []byte       // the ResourceSpans being read, but its scope spans
	ssHeads []byte       // its ScopeSpans, but their spans, one after another
	scopes  []splitScope // ranges in ssHeads
	spans   []splitSpan  // of the ResourceSpans being read
	sizes   []int        // per scope, for one owner
	present []bool       // per scope, for one owner
	// The last trace's owner, while one request is split.
	lastID    model.TraceID
	lastOwner int
	known     bool
}

type splitScope struct{ start, end int }

// splitSpan is one span field as it came (tag included) and where it goes.
type splitSpan struct {
	owner, scope int
	b            []byte // nil: an empty ScopeSpans, kept for its scope
}

// Split splits data, an ExportTraceServiceRequest, into one request per
// owner of n (owner gives a trace's owner, from 0 to n-1): each span goes
// in a copy of its ResourceSpans and ScopeSpans (every field but their
// scope spans and spans, as sent), so that the spans decoded from the
// parts are those decoded from data. ScopeSpans without spans (and
// ResourceSpans without scope spans) go to empty, so that every byte of
// the request is still decoded on some node. It reads the envelope and
// each span's top-level fields only; an error means data is not split
// (malformed, or a trace id of a length other than 16 bytes, which the
// decoder refuses and pdata repairs).
func (s *TraceSplitter) Split(data []byte, n int, owner func(model.TraceID) int, empty int) error {
	s.Parts = resize(s.Parts, n)
	s.Counts = resize(s.Counts, n)
	for o := range s.Parts {
		s.Parts[o], s.Counts[o] = s.Parts[o][:0], 0
	}
	s.known = false
	for b := data; len(b) > 0; {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return fmt.Errorf("splitting a trace request: %w", err)
		}
		b = rest
		if f.num != fRequestResourceSpans {
			continue
		}
		if f.typ != protowire.BytesType {
			return fmt.Errorf("splitting a trace request: %w", f.wrongType(protowire.BytesType))
		}
		if err := s.resourceSpans(f.b, owner, empty); err != nil {
			return fmt.Errorf("splitting a trace request: %w", err)
		}
	}
	return nil
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return append(s[:cap(s)], make([]T, n-cap(s))...)
	}
	return s[:n]
}

// resourceSpans reads one ResourceSpans and appends its spans to the
// parts of their owners.
func (s *TraceSplitter) resourceSpans(b []byte, owner func(model.TraceID) int, empty int) error {
	s.rsHead, s.ssHeads, s.scopes, s.spans = s.rsHead[:0], s.ssHeads[:0], s.scopes[:0], s.spans[:0]
	err := splitFields(b, fResourceSpansScopeSpans, &s.rsHead, func(ss, _ []byte) error {
		return s.scopeSpans(ss, owner, empty)
	})
	if err != nil {
		return err
	}
	if len(s.scopes) == 0 {
		s.Parts[empty] = appendMessage(s.Parts[empty], fRequestResourceSpans, len(s.rsHead))
		s.Parts[empty] = append(s.Parts[empty], s.rsHead...)
		return nil
	}
	s.sizes = resize(s.sizes, len(s.scopes))
	s.present = resize(s.present, len(s.scopes))
	for o := range s.Parts {
		clear(s.sizes)
		clear(s.present)
		spans := 0
		for _, sp := range s.spans {
			if sp.owner == o {
				s.sizes[sp.scope] += len(sp.b)
				s.present[sp.scope] = true
				if sp.b != nil {
					spans++
				}
			}
		}
		size := len(s.rsHead)
		for k, sc := range s.scopes {
			if s.present[k] {
				s.sizes[k] += sc.end - sc.start
				size += 1 + protowire.SizeBytes(s.sizes[k])
			}
		}
		if size == len(s.rsHead) {
			continue
		}
		p := appendMessage(s.Parts[o], fRequestResourceSpans, size)
		p = append(p, s.rsHead...)
		for k, sc := range s.scopes {
			if !s.present[k] {
				continue
			}
			p = appendMessage(p, fResourceSpansScopeSpans, s.sizes[k])
			p = append(p, s.ssHeads[sc.start:sc.end]...)
			for _, sp := range s.spans {
				if sp.owner == o && sp.scope == k {
					p = append(p, sp.b...)
				}
			}
		}
		s.Parts[o] = p
		s.Counts[o] += spans
	}
	return nil
}

// scopeSpans reads one ScopeSpans, copying its fields but its spans and
// noting each span's owner.
func (s *TraceSplitter) scopeSpans(b []byte, owner func(model.TraceID) int, empty int) error {
	k := len(s.scopes)
	sc := splitScope{start: len(s.ssHeads)}
	spans := len(s.spans)
	err := splitFields(b, fScopeSpansSpans, &s.ssHeads, func(span, whole []byte) error {
		id, err := spanTraceID(span)
		if err != nil {
			return err
		}
		// Spans of a trace usually come together: its owner is looked up
		// once.
		if !s.known || id != s.lastID {
			s.lastID, s.lastOwner, s.known = id, owner(id), true
		}
		s.spans = append(s.spans, splitSpan{owner: s.lastOwner, scope: k, b: whole})
		return nil
	})
	if err != nil {
		return err
	}
	sc.end = len(s.ssHeads)
	s.scopes = append(s.scopes, sc)
	if len(s.spans) == spans {
		s.spans = append(s.spans, splitSpan{owner: empty, scope: k})
	}
	return nil
}

// splitFields appends every field of b but those numbered num to head, as
// they came, and calls fn with the contents and the whole encoding of
// each of those, which must be length-delimited.
func splitFields(b []byte, num protowire.Number, head *[]byte, fn func(msg, whole []byte) error) error {
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return err
		}
		whole := b[:len(b)-len(rest)]
		b = rest
		if f.num != num {
			*head = append(*head, whole...)
			continue
		}
		if f.typ != protowire.BytesType {
			return f.wrongType(protowire.BytesType)
		}
		if err := fn(f.b, whole); err != nil {
			return err
		}
	}
	return nil
}

// spanTraceID reads an encoded Span's trace id; the last one counts, as
// in the decoder.
func spanTraceID(b []byte) (model.TraceID, error) {
	var id model.TraceID
	for len(b) > 0 {
		var f field
		rest, err := nextField(b, &f)
		if err != nil {
			return id, err
		}
		b = rest
		if f.num != fSpanTraceID {
			continue
		}
		if f.typ != protowire.BytesType {
			return id, f.wrongType(protowire.BytesType)
		}
		switch len(f.b) {
		case 0:
			id = model.TraceID{}
		case len(id):
			copy(id[:], f.b)
		default:
			return id, fmt.Errorf("trace id of %d bytes, want %d", len(f.b), len(id))
		}
	}
	return id, nil
}

// appendMessage appends the tag and length of a message field of size
// bytes.
func appendMessage(b []byte, num protowire.Number, size int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(size))
}

// CheckTracesProtoPooled reads spans a node forwards to their owner, which
// decodes them in full: every field is read and checked as
// DecodeTracesProtoPooled reads it (a request fails here exactly when it
// fails there), but attributes, events and links are checked, not kept,
// so the spans carry ids, times and names only, and the stats count
// everything as dropped.
func CheckTracesProtoPooled(data []byte, lim Limits) (*Decoded, error) {
	lim.MaxAttrs, lim.MaxEvents, lim.MaxLinks = 0, 0, 0
	return DecodeTracesProtoPooled(data, lim)
}

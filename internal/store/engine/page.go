package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

var _ store.TracePager = (*Engine)(nil)

// spanSource streams the spans of one place holding part of a trace; fn
// may keep the span it is given.
type spanSource func(fn func(s *model.Span) error) error

// pageKey orders a trace's spans: by start, then span id.
type pageKey struct {
	start uint64
	id    model.SpanID
}

func keyOf(s *model.Span) pageKey { return pageKey{s.StartUnixNano, s.SpanID} }

func (k pageKey) less(o pageKey) bool {
	return k.start < o.start || k.start == o.start && bytes.Compare(k.id[:], o.id[:]) < 0
}

// TracePage reads a trace twice, span by span: first only the keys of its
// spans (24 bytes each), to find the page's first and last, then keeping
// the spans between them. A 200k-span trace read whole took ~400 MB of
// decoded spans to answer a page of 10,000.
func (e *Engine) TracePage(ctx context.Context, id model.TraceID, hint store.TimeRange, offset, limit int) (store.TracePage, error) {
	if page, ok, err := e.wholeTracePage(ctx, id, hint, offset, limit); ok || err != nil {
		return page, err
	}
	var page store.TracePage
	sources, release := e.traceSources(id, hint)
	defer release()
	var keys []pageKey
	for _, src := range sources {
		if err := ctx.Err(); err != nil {
			return page, err
		}
		err := src(func(s *model.Span) error {
			keys = append(keys, keyOf(s))
			if page.StartUnixNano == 0 || s.StartUnixNano < page.StartUnixNano {
				page.StartUnixNano = s.StartUnixNano
			}
			page.EndUnixNano = max(page.EndUnixNano, s.EndUnixNano)
			return nil
		})
		if err != nil {
			return page, err
		}
	}
	if len(keys) == 0 {
		return page, store.ErrNotFound
	}
	page.Total = len(keys)
	if offset >= len(keys) || limit <= 0 {
		return page, nil
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	end := min(len(keys), offset+limit)
	lo, hi := keys[offset], keys[end-1]
	keys = nil
	page.Spans = make([]model.Span, 0, end-offset)
	for _, src := range sources {
		if err := ctx.Err(); err != nil {
			return page, err
		}
		err := src(func(s *model.Span) error {
			if k := keyOf(s); !k.less(lo) && !hi.less(k) {
				page.Spans = append(page.Spans, *s)
			}
			return nil
		})
		if err != nil {
			return page, err
		}
	}
	sortPage(page.Spans)
	// A span stored twice (replayed and in a block) shares its key.
	page.Spans = page.Spans[:min(len(page.Spans), end-offset)]
	return page, nil
}

// wholeTracePage answers a first page that holds the whole trace (nearly
// every trace: a page is thousands of spans) by reading the trace whole,
// through the blocks' page cache: paging span by span read a Parquet
// trace's rows twice without it, 4x the CPU and garbage of the other
// APIs' trace by id. ok is false when the trace needs paging.
func (e *Engine) wholeTracePage(ctx context.Context, id model.TraceID, hint store.TimeRange, offset, limit int) (page store.TracePage, ok bool, err error) {
	if offset != 0 || limit <= 0 {
		return page, false, nil
	}
	parts := e.traceParts(id, hint)
	defer releaseHits(parts.hits)
	if parts.spans == 0 || parts.spans > limit {
		return page, false, ctx.Err()
	}
	spans, err := parts.read(ctx)
	if err != nil {
		return page, false, err
	}
	sortPage(spans)
	page = store.TracePage{Spans: spans, Total: len(spans)}
	for i := range spans {
		if i == 0 || spans[i].StartUnixNano < page.StartUnixNano {
			page.StartUnixNano = spans[i].StartUnixNano
		}
		page.EndUnixNano = max(page.EndUnixNano, spans[i].EndUnixNano)
	}
	return page, true, nil
}

func sortPage(spans []model.Span) {
	sort.SliceStable(spans, func(i, j int) bool { return keyOf(&spans[i]).less(keyOf(&spans[j])) })
}

// traceSources lists where a trace's spans are; release lets go of the
// blocks.
func (e *Engine) traceSources(id model.TraceID, hint store.TimeRange) ([]spanSource, func()) {
	var sources []spanSource
	e.mu.RLock()
	// Head buffers grow under the lock; a copy of the bytes is read after.
	if t := e.head.get(id); t != nil {
		sources = append(sources, framedSource(bytes.Clone(t.buf)))
	}
	for _, m := range e.flushing {
		if t := m[id]; t != nil {
			sources = append(sources, framedSource(bytes.Clone(t.buf)))
		}
	}
	hits := e.blockHits(id, hint)
	e.mu.RUnlock()
	for _, h := range hits {
		sources = append(sources, h.b.traceSource(h.i))
	}
	return sources, func() { releaseHits(hits) }
}

func framedSource(buf []byte) spanSource {
	return func(fn func(s *model.Span) error) error {
		return forEachFramedAt(buf, func(off, n int) error {
			var s model.Span
			if err := decodeSpanAt(buf, off, n, &s, nil); err != nil {
				return err
			}
			return fn(&s)
		})
	}
}

// pageRows is how many rows of a block a page read converts at once.
const pageRows = 1024

// traceSource streams the spans of trace position i.
func (b *block) traceSource(i int) spanSource {
	if b.l0 != nil {
		return func(fn func(s *model.Span) error) error {
			raw, err := b.l0QueryChunk(b.l0.chunkOf(i))
			if err != nil {
				return err
			}
			if err := framedSource(b.l0Trace(raw, i))(fn); err != nil {
				return fmt.Errorf("block %s: %w", b.id, err)
			}
			return nil
		}
	}
	// Parents are stored as row indexes: the span ids of all rows are
	// read once, before the first conversion.
	var ids []model.SpanID
	return func(fn func(s *model.Span) error) error {
		n := int(b.idx.nspans[i])
		if ids == nil {
			ids = make([]model.SpanID, 0, n)
			err := b.readRows(i, func(rows []spanRow) error {
				for k := range rows {
					ids = append(ids, rows[k].SpanID)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return b.readRows(i, func(rows []spanRow) error {
			for k := range rows {
				var s model.Span
				if err := rowToSpan(&rows[k], &s, n, func(k int) model.SpanID { return ids[k] }); err != nil {
					return err
				}
				if err := fn(&s); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// readRows reads the rows of trace position i pageRows at a time.
func (b *block) readRows(i int, fn func(rows []spanRow) error) error {
	first, n := int64(b.idx.firstRow[i]), int(b.idx.nspans[i])
	r := b.reader()
	defer b.readers.Put(r)
	if err := r.SeekToRow(first); err != nil {
		return fmt.Errorf("block %s: seek: %w", b.id, err)
	}
	for got := 0; got < n; {
		// A fresh slice each time: converted spans may share a row's
		// buffers.
		rows := make([]spanRow, min(pageRows, n-got))
		k, err := r.Read(rows)
		if k > 0 {
			b.fillTrace(rows[:k], i)
			if ferr := fn(rows[:k]); ferr != nil {
				return ferr
			}
			got += k
		}
		if err != nil && !(errors.Is(err, io.EOF) && got == n) {
			if got < n {
				return fmt.Errorf("block %s: read rows: %w", b.id, err)
			}
		}
	}
	return nil
}

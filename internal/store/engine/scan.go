package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Column scans answer span-level queries (operation, kind, status, span
// duration, attributes) without materialising spans: only the columns a
// query touches are decoded, a partial span is assembled from them, and
// store.MatchSpan decides, so semantics stay those of every other engine.
// The result is the set of traces of the block with a matching span.

type scanPlan struct {
	q          *store.Query
	service    bool
	name       bool
	kind       bool
	status     bool
	times      bool
	attrs      bool // need span attributes
	blobAlways bool // a filter key is not dedicated: every row's blob is needed
	resource   bool
	dedCols    []int // dedicated columns used by filters
}

func newScanPlan(q *store.Query) *scanPlan {
	p := &scanPlan{q: q}
	p.service = q.Service != ""
	p.name = q.Operation != ""
	p.kind = len(q.Kinds) > 0
	p.status = q.Status != nil
	p.times = q.Range.Start != 0 || q.Range.End != 0 || q.MinDuration != 0 || q.MaxDuration != 0
	seen := map[int]bool{}
	for _, f := range q.Attrs {
		if f.Key == "service.name" && f.Scope != store.ScopeSpan {
			p.service = true
		}
		if f.Scope != store.ScopeSpan {
			p.resource = true
		}
		if f.Scope != store.ScopeResource {
			p.attrs = true
			if j, ok := dedicatedByKey[f.Key]; ok {
				if !seen[j] {
					seen[j] = true
					p.dedCols = append(p.dedCols, j)
				}
			} else {
				p.blobAlways = true
			}
		}
	}
	return p
}

// colValues reads every value of one column chunk (one per row: the schema
// is flat, and optional columns yield null values) into out, which is
// reused across row groups and queries.
func colValues(cc parquet.ColumnChunk, n int, out []parquet.Value) ([]parquet.Value, error) {
	if cap(out) < n {
		out = make([]parquet.Value, 0, n)
	}
	out = out[:0]
	pages := cc.Pages()
	defer pages.Close()
	for {
		pg, err := pages.ReadPage()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		vr := pg.Values()
		for {
			if len(out) == cap(out) {
				out = append(out, parquet.Value{})[:len(out)]
			}
			// Values point into the page buffers; pages are not released
			// back to parquet-go's pool, so the memory stays valid while the
			// values are in use.
			k, err := vr.ReadValues(out[len(out):cap(out)])
			out = out[:len(out)+k]
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, err
			}
			if k == 0 {
				break
			}
		}
	}
}

var valuesPool sync.Pool // *[]parquet.Value

func (b *block) colIndex(name string) (int, error) {
	leaf, ok := b.pf.Schema().Lookup(name)
	if !ok {
		return 0, fmt.Errorf("block %s: no column %q", b.id, name)
	}
	return leaf.ColumnIndex, nil
}

// scanMatches returns, per trace position of the block, whether one of its
// spans in this block satisfies every span-level condition of the plan.
func (b *block) scanMatches(ctx context.Context, p *scanPlan) ([]bool, error) {
	if b.l0 != nil {
		return b.l0ScanMatches(ctx, p)
	}
	match := make([]bool, len(b.idx.ids))
	type col struct {
		on   bool
		name string
		idx  int
		vals []parquet.Value
	}
	cols := map[string]*col{}
	use := func(name string, on bool) *col {
		c := &col{on: on, name: name}
		if on {
			i, err := b.colIndex(name)
			if err != nil {
				c.on = false
			} else {
				c.idx = i
			}
		}
		cols[name] = c
		return c
	}
	cSvc := use("service", p.service)
	cName := use("name", p.name)
	cKind := use("kind", p.kind)
	cStatus := use("status", p.status)
	cOff := use("start_off", p.times)
	cDur := use("duration", p.times)
	cBlob := use("attrs", p.blobAlways)
	cSpill := use("spill", p.attrs && !p.blobAlways)
	cRes := use("resource", p.resource)
	ded := make([]*col, len(p.dedCols))
	for i, j := range p.dedCols {
		ded[i] = use("a_"+columnName(dedicated[j].key), true)
	}
	defer func() {
		for _, c := range cols {
			if c.vals != nil {
				clear(c.vals[:cap(c.vals)]) // drop references to page buffers
				v := c.vals[:0]
				valuesPool.Put(&v)
			}
		}
	}()
	resCache := map[string]model.Attrs{}
	var row int64
	tpos := 0
	var sp model.Span
	for _, rg := range b.pf.RowGroups() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := int(rg.NumRows())
		ccs := rg.ColumnChunks()
		for _, c := range cols {
			if !c.on || (c == cBlob && !p.blobAlways) {
				continue
			}
			if c.vals == nil {
				if p, ok := valuesPool.Get().(*[]parquet.Value); ok {
					c.vals = *p
				}
			}
			var err error
			if c.vals, err = colValues(ccs[c.idx], n, c.vals); err != nil {
				return nil, fmt.Errorf("block %s: scan %s: %w", b.id, c.name, err)
			}
			if len(c.vals) != n {
				return nil, fmt.Errorf("block %s: column %s has %d values for %d rows: %w", b.id, c.name, len(c.vals), n, errCorrupt)
			}
		}
		if p.attrs && !p.blobAlways {
			// The blob is the biggest column: read it only for row groups
			// where some dedicated-key value spilled into it.
			cBlob.on = false
			for i := range cSpill.vals {
				if cSpill.vals[i].Boolean() {
					cBlob.on = true
					break
				}
			}
			if cBlob.on {
				ci, err := b.colIndex("attrs")
				if err != nil {
					return nil, err
				}
				if cBlob.vals, err = colValues(ccs[ci], n, cBlob.vals); err != nil {
					return nil, fmt.Errorf("block %s: scan attrs: %w", b.id, err)
				}
			}
		}
		for i := 0; i < n; i++ {
			r := row + int64(i)
			for tpos+1 < len(b.idx.ids) && int64(b.idx.firstRow[tpos+1]) <= r {
				tpos++
			}
			if match[tpos] {
				continue
			}
			sp = model.Span{}
			if cSvc.on {
				sp.Service = string(cSvc.vals[i].ByteArray())
			}
			if cName.on {
				sp.Name = string(cName.vals[i].ByteArray())
			}
			if cKind.on {
				sp.Kind = model.SpanKind(cKind.vals[i].Int32())
			}
			if cStatus.on {
				sp.StatusCode = model.StatusCode(cStatus.vals[i].Int32())
			}
			if cOff.on {
				sp.StartUnixNano = b.idx.start[tpos] + uint64(cOff.vals[i].Int64())
				sp.EndUnixNano = sp.StartUnixNano + uint64(cDur.vals[i].Int64())
			}
			if p.attrs {
				for k, j := range p.dedCols {
					v := ded[k].vals[i]
					if v.IsNull() {
						continue
					}
					if dedicated[j].str != nil {
						sp.Attrs = append(sp.Attrs, model.Attr{Key: dedicated[j].key, Value: model.Str(string(v.ByteArray()))})
					} else {
						sp.Attrs = append(sp.Attrs, model.Attr{Key: dedicated[j].key, Value: model.Int(v.Int64())})
					}
				}
				if cBlob.on && (p.blobAlways || cSpill.vals[i].Boolean()) {
					if bv := cBlob.vals[i]; !bv.IsNull() {
						sp.Attrs = appendGenericAttrs(sp.Attrs, bv.ByteArray())
					}
				}
			}
			if cRes.on {
				rb := cRes.vals[i].ByteArray()
				ra, ok := resCache[string(rb)]
				if !ok {
					d := dec{b: rb}
					ra = decAttrs(&d)
					resCache[string(rb)] = ra
				}
				sp.Resource = ra
			}
			if store.MatchSpan(p.q, &sp) {
				match[tpos] = true
			}
		}
		row += int64(n)
	}
	return match, nil
}

// appendGenericAttrs decodes the attributes stored in the blob itself
// (skipping placeholders of dedicated columns).
func appendGenericAttrs(out model.Attrs, blob []byte) model.Attrs {
	d := dec{b: blob}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		if d.byte1() != attrGeneric {
			continue
		}
		k := d.str()
		v := decValue(&d)
		if d.err == nil {
			out = append(out, model.Attr{Key: k, Value: v})
		}
	}
	return out
}

func columnName(key string) string {
	b := []byte(key)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

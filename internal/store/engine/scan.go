package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/priority"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
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
	dedCols    []int         // dedicated columns used by filters
	counters   *scanCounters // nil: not counted
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

// scanMatches returns, per trace position of the block, whether one of its
// spans in this block satisfies every span-level condition of the plan.
// Only traces that want accepts (nil: all) are looked at: the walk's
// prefilter (service from the trace index, time range) already rules the
// others out.
func (b *block) scanMatches(ctx context.Context, p *scanPlan, want func(i int) bool) ([]bool, error) {
	if b.l0 != nil {
		return b.l0ScanMatches(ctx, p)
	}
	cols, err := b.scanColumns(p)
	if err != nil {
		return nil, err
	}
	rgs := b.pf.RowGroups()
	scans := make([]*rgScan, len(rgs))
	var row0 int64
	for i, rg := range rgs {
		scans[i] = &rgScan{b: b, p: p, g: i, ccs: rg.ColumnChunks(), row0: row0, n: int(rg.NumRows())}
		row0 += rg.NumRows()
	}
	// Row groups are scanned in parallel: on object storage their reads
	// overlap, and a block holds up to 16 of them. Each keeps its own
	// verdicts for the traces it holds rows of (a trace may straddle two).
	err = inParallel(ctx, len(scans), b.rowGroupWorkers(maxScanWorkers), func(i int) error {
		s := scans[i]
		s.selectRows(want)
		if err := s.run(ctx, cols); err != nil {
			return fmt.Errorf("block %s: scan: %w", b.id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	match := make([]bool, len(b.idx.ids))
	for _, s := range scans {
		for i, m := range s.match {
			if m {
				match[int(s.t0)+i] = true
			}
		}
	}
	return match, nil
}

// mayHaveStatus reports whether trace position i can hold a span with
// status st (nil: any) of service svc (noStr: any service), from the
// error counts of the index.
func (x *blockIndex) mayHaveStatus(i int, svc uint32, st *model.StatusCode) bool {
	if st == nil {
		return true
	}
	spans, errs := x.nspans[i], x.errs[i]
	if svc != noStr {
		spans, errs = 0, 0
		for _, s := range x.svcs[x.svcOff[i]:x.svcOff[i+1]] {
			if s.name == svc {
				spans, errs = s.count, s.errs
			}
		}
	}
	if *st == model.StatusError {
		return errs > 0
	}
	return spans > errs
}

// rowGroupWorkers is how many row groups of the block one read works on at
// once: at most local on local disk (bound by the CPU), every one it can
// on object storage.
func (b *block) rowGroupWorkers(local int) int {
	if _, remote := b.file.(blockio.Prefetcher); remote {
		// Waiting on the network, not on a core: every row group's
		// requests in flight at once, so a block costs the round trips of
		// one row group, not of one per wave of workers.
		return maxRemoteScanWorkers
	}
	return min(priority.CPUs(), local)
}

// inParallel calls fn(0..n-1) on up to workers goroutines and returns the
// errors; a worker stops at its first error or when ctx is done.
func inParallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if n == 1 || workers == 1 {
		for i := range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int32
	errs := make([]error, min(n, workers))
	var wg sync.WaitGroup
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				if err := fn(i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// maxScanWorkers bounds the row groups one search scans at once on local
// disk, maxRemoteScanWorkers on object storage (a block has up to 16).
const (
	maxScanWorkers       = 4
	maxRemoteScanWorkers = 16
)

// scanCols are the column indexes a scan may read (-1: not in the file).
type scanCols struct {
	service, name, kind, status, startOff, duration, attrs, spill, resource int
	spillKeys                                                               int   // -1 in blocks written before it existed
	ded                                                                     []int // by dedicated position
	// bounded: the column's page bounds were written (pageBoundsKey)
	bounded map[int]bool
}

func (b *block) scanColumns(p *scanPlan) (*scanCols, error) {
	look := func(name string) int {
		if leaf, ok := b.pf.Schema().Lookup(name); ok {
			return leaf.ColumnIndex
		}
		return -1
	}
	c := &scanCols{
		service: look("service"), name: look("name"), kind: look("kind"), status: look("status"),
		startOff: look("start_off"), duration: look("duration"), attrs: look("attrs"), spill: look("spill"),
		resource: look("resource"), spillKeys: look("spill_keys"), ded: make([]int, len(dedicated)),
	}
	for i := range c.ded {
		c.ded[i] = -1
	}
	for _, j := range p.dedCols {
		c.ded[j] = look("a_" + columnName(dedicated[j].key))
	}
	if names, ok := b.pf.Lookup(pageBoundsKey); ok {
		c.bounded = map[int]bool{}
		for _, name := range strings.Split(names, ",") {
			if i := look(name); i >= 0 {
				c.bounded[i] = true
			}
		}
	}
	for _, i := range []int{c.service, c.name, c.kind, c.status, c.startOff, c.duration, c.attrs, c.spill, c.resource} {
		if i < 0 {
			return nil, fmt.Errorf("block %s: a span column is missing: %w", b.id, errCorrupt)
		}
	}
	return c, nil
}

// selectRows selects the rows of the row group that belong to traces want
// accepts (nil: all), as runs: the first condition narrows them to rows.
func (s *rgScan) selectRows(want func(i int) bool) {
	x := s.b.idx
	end := s.row0 + int64(s.n)
	t0 := max(sort.Search(len(x.firstRow), func(i int) bool { return int64(x.firstRow[i]) > s.row0 })-1, 0)
	t1 := sort.Search(len(x.firstRow), func(i int) bool { return int64(x.firstRow[i]) >= end })
	s.t0 = int32(t0)
	s.match = make([]bool, max(t1-t0, 0))
	s.runs = make([]rowRun, 0, max(t1-t0, 0))
	for t := t0; t < t1; t++ {
		if want != nil && !want(t) {
			continue
		}
		lo := max(int64(x.firstRow[t]), s.row0)
		hi := min(int64(x.firstRow[t])+int64(x.nspans[t]), end)
		if hi > lo {
			s.runs = append(s.runs, rowRun{lo: int32(lo - s.row0), hi: int32(hi - s.row0), t: int32(t)})
		}
	}
	s.sel, s.tr, s.conf = nil, nil, nil
}

// rowRun is a run of selected rows [lo, hi) (local indexes) of trace
// position t.
type rowRun struct{ lo, hi, t int32 }

// materialize turns the runs of selectRows into the selection of rows.
func (s *rgScan) materialize() {
	if s.runs == nil {
		return
	}
	total := 0
	for _, r := range s.runs {
		total += int(r.hi - r.lo)
	}
	s.sel, s.tr = make([]int32, 0, total), make([]int32, 0, total)
	for _, r := range s.runs {
		for row := r.lo; row < r.hi; row++ {
			s.sel = append(s.sel, row)
			s.tr = append(s.tr, r.t)
		}
	}
	s.conf = make([]bool, len(s.sel))
	s.runs = nil
}

// run narrows the selection condition by condition, cheapest and most
// selective first, then marks the traces of the rows left.
func (s *rgScan) run(ctx context.Context, c *scanCols) error {
	q := s.p.q
	s.ctx = ctx
	if scanTuning.prunePages {
		s.prunePages(c)
	}
	if scanTuning.lookahead {
		if err := s.lookahead(c); err != nil {
			return err
		}
	}
	if q.Service != "" {
		if err := s.selectService(c.service, []byte(q.Service)); err != nil {
			return err
		}
	}
	s.materialize()
	if len(q.Kinds) > 0 {
		if err := s.filterColumn(c.kind, func(v parquet.Value) verdict {
			return keepWhen(slices.Contains(q.Kinds, model.SpanKind(v.Int32())))
		}, vDrop); err != nil {
			return err
		}
	}
	if q.Status != nil {
		if err := s.filterColumn(c.status, func(v parquet.Value) verdict { return keepWhen(model.StatusCode(v.Int32()) == *q.Status) }, vDrop); err != nil {
			return err
		}
	}
	if q.Operation != "" {
		want := []byte(q.Operation)
		if err := s.filterColumn(c.name, func(v parquet.Value) verdict { return keepWhen(bytes.Equal(v.ByteArray(), want)) }, vDrop); err != nil {
			return err
		}
	}
	if err := s.filterTimes(c); err != nil {
		return err
	}
	for i := range q.Attrs {
		if err := s.filterAttr(c, &q.Attrs[i]); err != nil {
			return err
		}
	}
	for k, t := range s.tr {
		if !s.conf[k] {
			s.match[t-s.t0] = true
		}
	}
	var rows, trs []int32
	var ks []int
	for k, t := range s.tr {
		if s.conf[k] && !s.match[t-s.t0] {
			rows, trs, ks = append(rows, s.sel[k]), append(trs, t), append(ks, k)
		}
	}
	return s.confirm(c, rows, trs, ks)
}

// filterTimes applies the span duration bounds and the time range.
func (s *rgScan) filterTimes(c *scanCols) error {
	q := s.p.q
	x := s.b.idx
	if (q.MinDuration != 0 || q.MaxDuration != 0) && len(s.sel) > 0 {
		out := make([]verdict, len(s.sel))
		// A negative stored duration is an end before the start (duration
		// 0) or an overflow: MatchSpan decides those. Starts below 2^63
		// (until the year 2262) make every other duration exact.
		exact := s.b.meta.MaxTime < 1<<63
		err := s.visit(c.duration, s.sel, colVisitor{i64: func(k int, v int64) {
			switch d := uint64(v); {
			case v < 0 || !exact:
				out[k] = vConfirm
			case q.MinDuration != 0 && d < q.MinDuration, q.MaxDuration != 0 && d > q.MaxDuration:
				out[k] = vDrop
			default:
				out[k] = vKeep
			}
		}})
		if err != nil {
			return err
		}
		if slices.Contains(out, vConfirm) {
			s.residual.MinDuration, s.residual.MaxDuration = q.MinDuration, q.MaxDuration
		}
		s.keepIf(out)
	}
	if (q.Range.Start != 0 || q.Range.End != 0) && len(s.sel) > 0 {
		out := make([]verdict, len(s.sel))
		err := s.visit(c.startOff, s.sel, colVisitor{i64: func(k int, v int64) {
			st := x.start[s.tr[k]] + uint64(v)
			out[k] = keepWhen(!(q.Range.Start != 0 && st < q.Range.Start) && !(q.Range.End != 0 && st >= q.Range.End))
		}})
		if err != nil {
			return err
		}
		s.keepIf(out)
	}
	return nil
}

// filterAttr applies one attribute condition. A dedicated column decides
// it for rows holding a value there (the scan's partial spans list
// dedicated values first, so a duplicate in the blob never wins) and, with
// the resource, for rows without one whose blob holds no dedicated key.
// Keys without a column are left to the confirmation.
func (s *rgScan) filterAttr(c *scanCols, f *store.AttrFilter) error {
	if len(s.sel) == 0 {
		return nil
	}
	out := make([]verdict, len(s.sel))
	j, ded := dedicatedByKey[f.Key]
	switch {
	case f.Scope == store.ScopeResource:
		for k := range out {
			out[k] = vResource
		}
	case !ded || c.ded[j] < 0:
		for k := range s.conf {
			s.conf[k] = true
		}
		s.residual.Attrs = append(s.residual.Attrs, *f)
		return nil
	default:
		if err := s.readSpill(c.spill, c.spillKeys); err != nil {
			return err
		}
		col := dedicated[j]
		test := func(v parquet.Value) verdict {
			a := model.Attr{Key: col.key, Value: model.Int(v.Int64())}
			if col.str != nil {
				a.Value = model.Str(string(v.ByteArray()))
			}
			return keepWhen(store.MatchAttr(f, &model.Span{Attrs: model.Attrs{a}}))
		}
		absent := keepWhen(store.MatchAttr(f, &model.Span{}))
		if f.Scope != store.ScopeSpan {
			absent = vResource
		}
		null := func(k int) verdict {
			if s.spilled(k, j) {
				return vConfirm
			}
			return absent
		}
		dv := &dictVerdicts{eval: test}
		err := s.visit(c.ded[j], s.sel, colVisitor{
			dict: dv.reset,
			index: func(k int, di int32) {
				if di < 0 {
					out[k] = null(k)
				} else {
					out[k] = dv.of(di)
				}
			},
			value: func(k int, v parquet.Value) {
				if v.IsNull() {
					out[k] = null(k)
				} else {
					out[k] = test(v)
				}
			},
		})
		if err != nil {
			return err
		}
	}
	if err := s.resourceVerdicts(c.resource, f, out); err != nil {
		return err
	}
	if slices.Contains(out, vConfirm) {
		s.residual.Attrs = append(s.residual.Attrs, *f)
	}
	s.keepIf(out)
	return nil
}

// confirm assembles the partial spans of rows (ascending, with their trace
// positions trs and their positions ks in the selection) from the columns
// the residual conditions need and lets MatchSpan decide, skipping rows of
// traces matched meanwhile.
func (s *rgScan) confirm(c *scanCols, rows, trs []int32, ks []int) error {
	if len(rows) == 0 {
		return nil
	}
	p := newScanPlan(&s.residual)
	if scanTuning.lookahead {
		if err := s.confirmAhead(c, p, rows, ks); err != nil {
			return err
		}
	}
	// get reads column col at rows; at reads it at a subset of them (given
	// by their positions in rows) and leaves the other values null.
	at := func(col int, pos []int) ([]parquet.Value, error) {
		sub := make([]int32, len(pos))
		for i, k := range pos {
			sub[i] = rows[k]
		}
		out := make([]parquet.Value, len(rows))
		err := s.visit(col, sub, colVisitor{value: func(i int, v parquet.Value) { out[pos[i]] = v.Clone() }})
		return out, err
	}
	get := func(on bool, col int) ([]parquet.Value, error) {
		if !on || col < 0 {
			return nil, nil
		}
		out := make([]parquet.Value, len(rows))
		err := s.visit(col, rows, colVisitor{value: func(k int, v parquet.Value) { out[k] = v.Clone() }})
		return out, err
	}
	var err error
	var svc, name, kind, status, off, dur, blob, spill, res []parquet.Value
	for _, g := range []struct {
		dst *[]parquet.Value
		on  bool
		col int
	}{
		{&svc, p.service, c.service}, {&name, p.name, c.name}, {&kind, p.kind, c.kind},
		{&status, p.status, c.status}, {&off, p.times, c.startOff}, {&dur, p.times, c.duration},
		{&spill, p.attrs, c.spill}, {&res, p.resource, c.resource},
	} {
		if *g.dst, err = get(g.on, g.col); err != nil {
			return err
		}
	}
	if p.attrs {
		// The blob is the biggest column: read it only where it can hold a
		// condition's key.
		var pos []int
		for k := range rows {
			if p.blobAlways || spill[k].Boolean() {
				pos = append(pos, k)
			}
		}
		if blob, err = at(c.attrs, pos); err != nil {
			return err
		}
	}
	ded := make([][]parquet.Value, len(p.dedCols))
	for i, j := range p.dedCols {
		if ded[i], err = get(true, c.ded[j]); err != nil {
			return err
		}
	}
	resCache := map[string]model.Attrs{}
	for k := range rows {
		t := trs[k]
		if s.match[t-s.t0] {
			continue
		}
		var sp model.Span
		if svc != nil {
			sp.Service = string(svc[k].ByteArray())
		}
		if name != nil {
			sp.Name = string(name[k].ByteArray())
		}
		if kind != nil {
			sp.Kind = model.SpanKind(kind[k].Int32())
		}
		if status != nil {
			sp.StatusCode = model.StatusCode(status[k].Int32())
		}
		if off != nil {
			sp.StartUnixNano = s.b.idx.start[t] + uint64(off[k].Int64())
			sp.EndUnixNano = sp.StartUnixNano + uint64(dur[k].Int64())
		}
		if p.attrs {
			for i, j := range p.dedCols {
				if ded[i] == nil || ded[i][k].IsNull() {
					continue
				}
				v := ded[i][k]
				if dedicated[j].str != nil {
					sp.Attrs = append(sp.Attrs, model.Attr{Key: dedicated[j].key, Value: model.Str(string(v.ByteArray()))})
				} else {
					sp.Attrs = append(sp.Attrs, model.Attr{Key: dedicated[j].key, Value: model.Int(v.Int64())})
				}
			}
			if (p.blobAlways || spill[k].Boolean()) && !blob[k].IsNull() {
				sp.Attrs = appendGenericAttrs(sp.Attrs, blob[k].ByteArray())
			}
		}
		if res != nil {
			rb := res[k].ByteArray()
			ra, ok := resCache[string(rb)]
			if !ok {
				d := dec{b: rb}
				ra = decAttrs(&d)
				resCache[string(rb)] = ra
			}
			sp.Resource = ra
		}
		if store.MatchSpan(p.q, &sp) {
			s.match[t-s.t0] = true
		}
	}
	return nil
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

package engine

import (
	"bytes"
	"fmt"

	"github.com/parquet-go/parquet-go"

	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Before a row group's selection is narrowed column by column, two steps
// cut what a cold scan on object storage waits for: pages whose column
// index bounds rule out the service or the duration bounds drop their rows
// (their pages are never fetched), and the pages every condition's column
// will read for the rows left are fetched in one round of concurrent
// requests rather than a round trip per condition.

// scanTuning switches the two steps and the walk's scan of the next block
// ahead (scanAhead); tests turn them off to check that searches find the
// same traces without them.
var scanTuning = struct{ prunePages, lookahead, scanAhead bool }{true, true, true}

// prunePages drops the selected rows lying in pages that cannot hold the
// query's service or a duration inside its bounds.
func (s *rgScan) prunePages(c *scanCols) {
	q := s.p.q
	if q.Service != "" {
		want := []byte(q.Service)
		s.dropPages(c, c.service, func(lo, hi parquet.Value) bool {
			return bytes.Compare(want, lo.ByteArray()) < 0 || (exactMax(hi.ByteArray()) && bytes.Compare(want, hi.ByteArray()) > 0)
		})
	}
	// With every end before the year 2262 (see filterTimes) a negative
	// stored duration is an end before the start, a duration of 0 to
	// MatchSpan.
	if (q.MinDuration != 0 || q.MaxDuration != 0) && s.b.meta.MaxTime < 1<<63 {
		s.dropPages(c, c.duration, func(lo, hi parquet.Value) bool {
			l, h := uint64(max(lo.Int64(), 0)), uint64(max(hi.Int64(), 0))
			return (q.MinDuration != 0 && h < q.MinDuration) || (q.MaxDuration != 0 && l > q.MaxDuration)
		})
	}
}

// exactMax reports whether a byte-array page maximum bounds the page's
// values: Parquet truncates long maxima and increments the last byte, and
// a maximum of only 0xff bytes could not be incremented.
func exactMax(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return true
		}
	}
	return len(b) == 0
}

// dropPages drops the selected rows (still runs, see selectRows) of the
// pages of column col whose bounds out rules out; pages of a column
// without bounds (c.bounded), or holding only nulls, keep their rows.
func (s *rgScan) dropPages(c *scanCols, col int, out func(lo, hi parquet.Value) bool) {
	if len(s.runs) == 0 || !c.bounded[col] {
		return
	}
	cc := s.ccs[col]
	ci, err := cc.ColumnIndex()
	if err != nil || ci == nil {
		return
	}
	oi, err := cc.OffsetIndex()
	if err != nil || oi == nil || oi.NumPages() != ci.NumPages() {
		return
	}
	np := ci.NumPages()
	drops := make([]bool, np)
	some := false
	for p := range drops {
		drops[p] = !ci.NullPage(p) && out(ci.MinValue(p), ci.MaxValue(p))
		some = some || drops[p]
	}
	if !some {
		return // the common case: the runs stay as they are
	}
	var kept []rowRun
	dropped, ri := 0, 0
	for p := 0; p < np; p++ {
		first, end := oi.FirstRowIndex(p), int64(s.n)
		if p+1 < np {
			end = oi.FirstRowIndex(p + 1)
		}
		drop := drops[p]
		held := false
		for j := ri; j < len(s.runs) && int64(s.runs[j].lo) < end; j++ {
			r := s.runs[j]
			lo, hi := max(int64(r.lo), first), min(int64(r.hi), end)
			if lo >= hi {
				continue
			}
			held = true
			if drop {
				continue
			}
			// A run a kept page continues extends the piece before.
			if n := len(kept); n > 0 && kept[n-1].t == r.t && int64(kept[n-1].hi) == lo {
				kept[n-1].hi = int32(hi)
			} else {
				kept = append(kept, rowRun{lo: int32(lo), hi: int32(hi), t: r.t})
			}
		}
		if drop && held {
			dropped++
		}
		for ri < len(s.runs) && int64(s.runs[ri].hi) <= end {
			ri++
		}
	}
	if dropped > 0 {
		if c := s.p.counters; c != nil {
			c.prunedPages.Add(int64(dropped))
		}
		s.runs = kept
	}
}

// lookahead has a block file on object storage fetch, at once, the pages
// of every column a condition reads that hold a selected row. Fetched as
// each condition comes they cost a round trip each (service, duration,
// spill flags and keys, a dedicated attribute and the resource: six); the
// price is the pages a narrowing would have skipped, few, since selected
// rows are spread over the pages of a row group.
func (s *rgScan) lookahead(c *scanCols) error {
	pf, ok := s.b.file.(blockio.Prefetcher)
	if !ok || len(s.runs) == 0 && len(s.sel) == 0 {
		return nil
	}
	var ranges []blockio.Range
	for _, col := range conditionColumns(s.p.q, c) {
		oi, err := s.ccs[col].OffsetIndex()
		if err != nil || oi == nil {
			continue // visit reads without it
		}
		var pages []int
		if s.runs != nil {
			pages = pagesOverlapping(pageStarts(oi), s.runs)
		} else {
			pages = pagesHolding(pageStarts(oi), s.sel)
		}
		ranges = s.b.pageRanges(ranges, s.g, col, oi, pages)
	}
	return s.fetchAhead(pf, ranges)
}

func (s *rgScan) fetchAhead(pf blockio.Prefetcher, ranges []blockio.Range) error {
	if err := pf.Prefetch(s.context(), ranges); err != nil {
		return fmt.Errorf("block %s: fetch columns ahead: %w", s.b.id, err)
	}
	return nil
}

// confirmAhead is lookahead for confirm: the pages of rows (at positions
// ks of the selection) in every column the residual plan p reads, the
// attribute blob only where confirm reads it, fetched at once.
func (s *rgScan) confirmAhead(c *scanCols, p *scanPlan, rows []int32, ks []int) error {
	pf, ok := s.b.file.(blockio.Prefetcher)
	if !ok {
		return nil
	}
	var ranges []blockio.Range
	add := func(col int, rows []int32) {
		if col < 0 || len(rows) == 0 {
			return
		}
		if oi, err := s.ccs[col].OffsetIndex(); err == nil && oi != nil {
			ranges = s.b.pageRanges(ranges, s.g, col, oi, pagesHolding(pageStarts(oi), rows))
		}
	}
	for _, g := range confirmColumns(p, c) {
		add(g, rows)
	}
	if p.attrs {
		blobRows := rows
		if !p.blobAlways && s.spillRead {
			blobRows = nil
			for i, k := range ks {
				if s.spill[k] {
					blobRows = append(blobRows, rows[i])
				}
			}
		}
		add(c.attrs, blobRows)
	}
	return s.fetchAhead(pf, ranges)
}

// confirmColumns lists the columns confirm reads at every row it
// confirms under plan p (the blob, read at some, aside).
func confirmColumns(p *scanPlan, c *scanCols) []int {
	var cols []int
	for _, g := range []struct {
		on  bool
		col int
	}{
		{p.service, c.service}, {p.name, c.name}, {p.kind, c.kind}, {p.status, c.status},
		{p.times, c.startOff}, {p.times, c.duration}, {p.attrs, c.spill}, {p.resource, c.resource},
	} {
		if g.on {
			cols = append(cols, g.col)
		}
	}
	if p.attrs {
		for _, j := range p.dedCols {
			cols = append(cols, c.ded[j])
		}
	}
	return cols
}

// conditionColumns lists the columns run reads before confirmation: one
// per condition on a span field, and for a condition on a dedicated
// attribute its column, the spill flags and keys and (unless the
// condition is on the span alone) the resource.
func conditionColumns(q *store.Query, c *scanCols) []int {
	var cols []int
	add := func(on bool, col int) {
		if on && col >= 0 {
			cols = append(cols, col)
		}
	}
	add(q.Service != "", c.service)
	add(len(q.Kinds) > 0, c.kind)
	add(q.Status != nil, c.status)
	add(q.Operation != "", c.name)
	add(q.MinDuration != 0 || q.MaxDuration != 0, c.duration)
	add(q.Range.Start != 0 || q.Range.End != 0, c.startOff)
	spill := false
	resource := false
	for _, f := range q.Attrs {
		if f.Scope == store.ScopeResource {
			resource = true
			continue
		}
		// Other keys are left to the confirmation.
		if j, ok := dedicatedByKey[f.Key]; ok && c.ded[j] >= 0 {
			add(true, c.ded[j])
			spill = true
			resource = resource || f.Scope == store.ScopeAny
		}
	}
	add(spill, c.spill)
	add(spill, c.spillKeys)
	add(resource, c.resource)
	return cols
}

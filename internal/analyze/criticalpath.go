package analyze

import (
	"cmp"
	"slices"

	"github.com/tracedx/tracedx/internal/model"
)

// Segment is a stretch of the critical path spent in Node's own time
// (no child of Node on the path during [Start, End)).
type Segment struct {
	Node       *Node
	Start, End uint64
}

// CriticalPath is the chain of spans that decides the end-to-end duration
// of the main root (docs/patterns.md): from a span, go to the child that
// finished last before the span's end, then to the child that finished
// before that child started, and so on. Children are cut at their parent's
// end, and producer→consumer edges are not followed (the consumer runs
// asynchronously, its time is not the request's).
type CriticalPath struct {
	Segments []Segment // in time order
	// self is indexed by Node.Index: a slice, not a map, because the path
	// of a 10k-span trace touches thousands of nodes.
	self []uint64
}

// CriticalPath returns the trace's critical path, computed once.
func (t *Trace) CriticalPath() *CriticalPath {
	if t.cp != nil {
		return t.cp
	}
	// A span's own time is split into at most one segment more than it has
	// children on the path, so a path has fewer than 2N segments: one
	// allocation suffices.
	cp := &CriticalPath{self: make([]uint64, len(t.Nodes)), Segments: make([]Segment, 0, 2*len(t.Nodes)+1)}
	if root := t.Root(); root != nil {
		cp.walk(root, root.Start(), root.End())
		// walk appends segments latest first.
		for i, j := 0, len(cp.Segments)-1; i < j; i, j = i+1, j-1 {
			cp.Segments[i], cp.Segments[j] = cp.Segments[j], cp.Segments[i]
		}
	}
	t.cp = cp
	return cp
}

func followable(parent, child *Node) bool {
	if child.Span.Kind == model.KindConsumer && parent.Span.Kind == model.KindProducer {
		return false
	}
	return true
}

// walk covers [lo, hi] of node n. An explicit work stack keeps deep traces
// from exhausting the goroutine stack and keeps the cost linear after the
// per-node sort.
func (cp *CriticalPath) walk(n *Node, lo, hi uint64) {
	type frame struct {
		n      *Node
		lo     uint64
		cursor uint64
		kids   []*Node // by end, descending
		next   int
		from   int // where kids start in buf
	}
	// Frames are values and the sort is generic: on a 10,000-span trace
	// the pointer frames and sort.SliceStable's reflection were most of
	// the walk's allocations. The frames' children lists live on one
	// stack of their own, buf, popped with their frames: a frame's list
	// is never written once a later frame is pushed, so a list of an
	// array that buf outgrew stays as it was.
	var buf []*Node
	newFrame := func(n *Node, lo, hi uint64) frame {
		from := len(buf)
		for _, c := range n.Children {
			if followable(n, c) && c.Start() < hi && c.End() > lo {
				buf = append(buf, c)
			}
		}
		kids := buf[from:len(buf):len(buf)]
		sortByEndDesc(kids)
		return frame{n: n, lo: lo, cursor: hi, kids: kids, from: from}
	}
	stack := []frame{newFrame(n, lo, hi)}
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		// Next child: the one that ends last among those starting before
		// the cursor; a child still running at the cursor is cut there.
		var pick *Node
		for f.next < len(f.kids) {
			c := f.kids[f.next]
			f.next++
			if c.Start() < f.cursor {
				pick = c
				break
			}
		}
		if pick == nil {
			cp.add(f.n, f.lo, f.cursor)
			buf = buf[:f.from]
			stack = stack[:len(stack)-1]
			continue
		}
		end := pick.End()
		if end > f.cursor {
			end = f.cursor
		}
		cp.add(f.n, end, f.cursor)
		start := pick.Start()
		if start < f.lo {
			start = f.lo
		}
		f.cursor = start
		stack = append(stack, newFrame(pick, start, end))
	}
}

// sortByEndDesc sorts nodes by end, latest first, equal ends in their
// order. Children come by start, and calls made one after another end in
// that order too: reversing them is the stable sort's answer at a
// fraction of its cost on a parent of hundreds of calls.
func sortByEndDesc(ns []*Node) {
	strictlyRising := true
	for i := 1; i < len(ns); i++ {
		if ns[i].End() <= ns[i-1].End() {
			strictlyRising = false
			break
		}
	}
	if strictlyRising {
		slices.Reverse(ns)
		return
	}
	slices.SortStableFunc(ns, func(a, b *Node) int { return cmp.Compare(b.End(), a.End()) })
}

func (cp *CriticalPath) add(n *Node, start, end uint64) {
	if end <= start {
		return
	}
	cp.Segments = append(cp.Segments, Segment{Node: n, Start: start, End: end})
	if n.Index >= 0 && n.Index < len(cp.self) {
		cp.self[n.Index] += end - start
	}
}

// SelfTime is the critical-path time spent in n itself.
func (cp *CriticalPath) SelfTime(n *Node) uint64 {
	if n == nil || n.Index < 0 || n.Index >= len(cp.self) {
		return 0
	}
	return cp.self[n.Index]
}

// OnPath reports whether n contributes any time to the critical path.
func (cp *CriticalPath) OnPath(n *Node) bool { return cp.SelfTime(n) > 0 }

// TimeUnder is the critical-path time spent in any of the given nodes or
// their descendants; overlapping nodes are not counted twice.
func (cp *CriticalPath) TimeUnder(nodes ...*Node) uint64 {
	set := make(map[*Node]bool, len(nodes))
	for _, n := range nodes {
		set[n] = true
	}
	var total uint64
	for _, s := range cp.Segments {
		for p := s.Node; p != nil; p = p.Parent {
			if set[p] {
				total += s.End - s.Start
				break
			}
		}
	}
	return total
}

// Total is the length of the critical path (the main root's duration).
func (cp *CriticalPath) Total() uint64 {
	var total uint64
	for _, s := range cp.Segments {
		total += s.End - s.Start
	}
	return total
}

// PathStep is one span on the critical path with its critical self time.
// JSON names are part of the `tracedx analyze` contract.
type PathStep struct {
	SpanID    string  `json:"span_id"`
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	SelfMS    float64 `json:"self_ms"`
	// StartMS/EndMS are the span's offsets from the trace start, for drawing.
	StartMS float64 `json:"start_ms"`
	EndMS   float64 `json:"end_ms"`
	Depth   int     `json:"depth"`
}

// Steps lists each span on the path once, in order of first appearance.
func (cp *CriticalPath) Steps(t *Trace) []PathStep {
	var base uint64
	if r := t.Root(); r != nil {
		base = r.Start()
	}
	off := func(v uint64) float64 {
		if v < base {
			return 0
		}
		return NS(v - base)
	}
	seen := make([]bool, len(cp.self))
	distinct := 0
	for _, s := range cp.Segments {
		if !seen[s.Node.Index] {
			seen[s.Node.Index] = true
			distinct++
		}
	}
	clear(seen)
	out := make([]PathStep, 0, distinct)
	for _, s := range cp.Segments {
		if seen[s.Node.Index] {
			continue
		}
		seen[s.Node.Index] = true
		sp := s.Node.Span
		out = append(out, PathStep{
			SpanID: spanIDOf(t, s.Node), Service: sp.Service, Operation: sp.Name,
			SelfMS: NS(cp.self[s.Node.Index]), StartMS: off(sp.StartUnixNano), EndMS: off(sp.EndUnixNano), Depth: s.Node.Depth,
		})
	}
	return out
}

package analyze

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"

	"github.com/tracedx/tracedx/internal/model"
)

// memoTraces are the fixture traces of every detector plus a generated
// large one: the per-trace answers kept once must equal what reading each
// span again gives.
func memoTraces(t *testing.T) map[string][]model.Span {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*", "*.json"))
	if len(files) < 20 {
		t.Fatalf("only %d fixture traces found", len(files))
	}
	out := map[string][]model.Span{"bigTrace": bigTrace(2_000)}
	for _, f := range files {
		out[f] = model.WithInferredKinds(loadSpans(t, f))
	}
	return out
}

func TestMemoisedReadingsMatchSpans(t *testing.T) {
	answered := 0
	for name, spans := range memoTraces(t) {
		tr := NewTrace(spans)
		d := newSeqDeps(tr, NoHistory{})
		may := subtreesWith(tr, spanMayAnswer)
		ops := newCacheOps(tr)
		for _, n := range tr.Nodes {
			for range 2 { // read, then kept
				c1, k1, s1, ok1 := ops.of(n)
				c2, k2, s2, ok2 := cacheOp(n)
				if c1 != c2 || k1 != k2 || s1 != s2 || ok1 != ok2 {
					t.Fatalf("%s: span %s: cache op %q %q %q %v, span says %q %q %q %v", name, n.Span.Name, c1, k1, s1, ok1, c2, k2, s2, ok2)
				}
			}
			if got, want := IsCall(n), isCall(n.Span); got != want {
				t.Fatalf("%s: span %s: IsCall %v, span says %v", name, n.Span.Name, got, want)
			}
			if got, want := spanIDOf(tr, n), n.Span.SpanID.String(); got != want {
				t.Fatalf("%s: span %s: id %q, span says %q", name, n.Span.Name, got, want)
			}
			if got, want := proxyHop(n), isProxyHop(n.Span); got != want {
				t.Fatalf("%s: span %s: proxy hop %v, span says %v", name, n.Span.Name, got, want)
			}
			if got, want := nodeDBSystem(n), DBSystem(n.Span); got != want {
				t.Fatalf("%s: span %s: db system %q, span says %q", name, n.Span.Name, got, want)
			}
			if got, want := nodeWaits(tr, n), readWaits(tr, n); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: span %s: waits %+v, read again %+v", name, n.Span.Name, got, want)
			}
			// What the subtree answers is read only where some span may
			// hold an answer.
			if len(d.answer(n)) > 0 {
				answered++
				if !may[n.Index] {
					t.Fatalf("%s: span %s answers %v but is marked as answering nothing", name, n.Span.Name, sortedValues(d.answer(n)))
				}
			}
			var below bool
			subtree(n, seqValues{}, func(_ seqValues, s *model.Span) { below = below || spanMayAnswer(s) })
			if may[n.Index] != below {
				t.Fatalf("%s: span %s: subtree index says %v, walk says %v", name, n.Span.Name, may[n.Index], below)
			}
		}
	}
	if answered == 0 {
		t.Fatal("no fixture records an answer: the index is not exercised")
	}
}

// TestGroupChildrenManyTargets: past groupListMax targets the groups are
// found by map, and must come out as a map alone would give them.
func TestGroupChildrenManyTargets(t *testing.T) {
	for _, targets := range []int{1, groupListMax, groupListMax + 1, 3 * groupListMax} {
		p := &Node{}
		for i := range 5 * targets {
			p.Children = append(p.Children, &Node{Span: &model.Span{Name: fmt.Sprint((i * 7) % targets)}, Index: i})
		}
		key := func(n *Node) [2]string { return [2]string{"svc", n.Span.Name} }
		got := groupChildren(p, func(n *Node) bool { return n.Index%3 != 1 }, key)
		var want [][]*Node
		idx := map[[2]string]int{}
		for _, c := range p.Children {
			if c.Index%3 == 1 {
				continue
			}
			i, ok := idx[key(c)]
			if !ok {
				i = len(want)
				idx[key(c)] = i
				want = append(want, nil)
			}
			want[i] = append(want[i], c)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d targets: groups differ", targets)
		}
	}
}

// TestSortByEndDescIsStable: the reversal shortcut gives the stable sort's
// order, ties included.
func TestSortByEndDescIsStable(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		var ns []*Node
		end := uint64(100)
		for i := range r.IntN(30) {
			switch round % 3 {
			case 0: // calls one after another
				end += uint64(1 + r.IntN(5))
			case 1: // with ties
				end += uint64(r.IntN(2))
			default:
				end = uint64(r.IntN(10))
			}
			ns = append(ns, &Node{Span: &model.Span{EndUnixNano: end}, Index: i})
		}
		want := slices.Clone(ns)
		sort.SliceStable(want, func(i, j int) bool { return want[i].End() > want[j].End() })
		sortByEndDesc(ns)
		if !slices.Equal(ns, want) {
			t.Fatalf("round %d: order differs from the stable sort", round)
		}
	}
}

// TestUnitOfReadsTheLastSuffix: the unit is read from the tail after the
// key's last separator, as a suffix test of the whole key reads it.
func TestUnitOfReadsTheLastSuffix(t *testing.T) {
	for key, want := range map[string]float64{
		"pool.wait_ms": 1e6, "lock_wait_seconds": 1e9, "Queue.Wait_MS": 1e6, "db.wait.us": 1e3, "wait_nanos": 1,
		"x.milliseconds": 1e6, "wait_s": 1e9, "wait.s": 1e9, "wait_sec": 1e9, "wait_ms.": 0, "waitms": 0,
		"http.response.status_code": 0, "wait_ms_total": 0, "_ms": 1e6, "": 0, "wait_mſ": 0,
	} {
		if got := unitOf(key); got != want {
			t.Errorf("unitOf(%q) = %v, want %v", key, got, want)
		}
	}
}

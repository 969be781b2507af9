package findingstore

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

// Three nodes store the findings of disjoint sets of traces; their merged
// summary must be the summary of one store holding every finding.
func TestMergedSummariesEqualOneStore(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	open := func() *Store {
		fs, err := Open(Options{Dir: t.TempDir(), Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Close() })
		return fs
	}
	all, nodes := open(), []*Store{open(), open(), open()}
	r := rand.New(rand.NewPCG(4, 2))
	kinds := []string{"n_plus_one_query", "retry_storm", "slow_query", "timeout_cascade"}
	sevs := []analyze.Severity{analyze.SeverityInfo, analyze.SeverityWarning, analyze.SeverityCritical}
	base := c.Now().Add(-50 * time.Minute)
	parts := make([][]Stored, len(nodes))
	var every []Stored
	for i := 0; i < 600; i++ {
		// Some traces hold two findings: distinct traces are counted.
		for j := 0; j < 1+i%2; j++ {
			f := finding(kinds[r.IntN(len(kinds))], []string{"cart", "checkout", "shipping"}[r.IntN(3)], tid(i), base.Add(time.Duration(i)*time.Second))
			f.Operation = []string{"GET /a", "POST /b"}[r.IntN(2)]
			f.Severity = sevs[r.IntN(len(sevs))]
			// Exact in binary: sums do not depend on order. Equally
			// costly examples are told apart by time, as in one store.
			f.ImpactMS = float64((i*2+j)%9) / 4
			parts[i%len(nodes)] = append(parts[i%len(nodes)], f)
			every = append(every, f)
		}
	}
	if err := all.Put(ctx, every); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if err := n.Put(ctx, parts[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The list the root-cause ranking reads, newest first, cut.
	nodes[0].SetPeerLists(func(ctx context.Context, q Query) [][]Stored {
		var out [][]Stored
		for _, n := range nodes[1:] {
			l, err := n.List(ctx, q)
			if err != nil {
				t.Error(err)
			}
			out = append(out, l)
		}
		return out
	})
	lq := Query{From: base.Add(5 * time.Minute), To: c.Now(), Limit: 50}
	wantList, err := all.List(ctx, lq)
	if err != nil {
		t.Fatal(err)
	}
	gotList, err := nodes[0].ClusterList(ctx, lq)
	if err != nil || len(gotList) != 50 || len(wantList) != 50 {
		t.Fatalf("cluster list: %d findings (%v), want 50", len(gotList), err)
	}
	for i := range wantList {
		// Ids are per node; the finding is the same.
		if g, w := gotList[i], wantList[i]; g.TraceID != w.TraceID || g.Kind != w.Kind || !g.Time.Equal(w.Time) || g.ImpactMS != w.ImpactMS {
			t.Fatalf("cluster list [%d]: %s %s %v, want %s %s %v", i, g.TraceID, g.Kind, g.Time, w.TraceID, w.Kind, w.Time)
		}
	}

	q := SummaryQuery{From: base.Add(5 * time.Minute), To: c.Now()}
	for _, groups := range []int{3, 200} {
		q.Groups = groups
		want, err := all.Summarize(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		// The first node asks the other two, as in a cluster.
		nodes[0].SetPeerSummaries(func(ctx context.Context, q SummaryQuery) []Summary {
			var out []Summary
			for _, n := range nodes[1:] {
				s, err := n.Summarize(ctx, q)
				if err != nil {
					t.Error(err)
				}
				out = append(out, s)
			}
			return out
		})
		got, err := nodes[0].clusterSummary(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if string(wj) != string(gj) {
			t.Fatalf("groups=%d: merged summary differs from one store's\n got %s\nwant %s", groups, gj, wj)
		}
		if len(got.Groups) != min(groups, want.GroupsTotal) || got.Total != 450 {
			t.Fatalf("groups=%d: %d groups of %d, total %d", groups, len(got.Groups), got.GroupsTotal, got.Total)
		}
	}
}

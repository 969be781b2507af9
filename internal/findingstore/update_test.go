package findingstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/analyze"
)

func stampede(traces int, at time.Time) Stored {
	return Stored{Finding: analyze.Finding{Kind: "cache_stampede", Severity: analyze.SeverityWarning,
		Title:    fmt.Sprintf("cache stampede on user:42: %d requests missed it", traces),
		TraceID:  tid(traces).String(),
		Evidence: map[string]any{"traces": traces}, ImpactMS: float64(traces) * 10},
		Time: at, Service: "redis", Operation: "api GET /user", Key: "cache_stampede/api GET /user/user:42", Systemic: true}
}

// An open cross-trace finding rewritten with newer figures answers with
// them everywhere (list, trace, summary), keeps its ID and place, counts
// once, and stays so after a restart, also when its versions sit in
// different segments and when the index is rebuilt from the log.
func TestUpdateReplacesOpenSystemicFinding(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	fs, err := Open(Options{Dir: dir, Now: c.Now, SegmentDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	opened := c.Now()
	first := []Stored{stampede(5, opened), finding("slow_query", "orders", tid(1), opened.Add(time.Second))}
	if err := fs.Put(ctx, first); err != nil {
		t.Fatal(err)
	}
	if first[0].ID == first[1].ID {
		t.Fatal("Put did not hand back the ids it gave")
	}
	id := first[0].ID
	// The next version is written in another segment.
	c.Add(2 * time.Minute)
	up := stampede(20, opened)
	up.ID, up.Updated, up.Revision, up.TraceID = id, c.Now(), 1, first[0].TraceID
	if err := fs.Update(ctx, []Stored{up}); err != nil {
		t.Fatal(err)
	}
	up = stampede(12, opened) // a later, smaller version also replaces
	up.ID, up.Updated, up.Revision, up.TraceID = id, c.Now().Add(time.Second), 2, first[0].TraceID
	if err := fs.Update(ctx, []Stored{up}); err != nil {
		t.Fatal(err)
	}
	bad := stampede(3, opened)
	bad.ID = 999
	if err := fs.Update(ctx, []Stored{bad}); err == nil {
		t.Fatal("updating a finding never stored must fail")
	}

	check := func(fs *Store, when string) {
		t.Helper()
		yes := true
		for _, q := range []Query{{Limit: 100}, {Systemic: &yes, Limit: 1}, {Kind: "cache_stampede", Service: "redis", Limit: 100},
			{From: opened, To: opened.Add(time.Millisecond)}} {
			l, err := fs.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var got []Stored
			for _, f := range l {
				if f.Kind == "cache_stampede" {
					got = append(got, f)
				}
			}
			if len(got) != 1 || got[0].ID != id || !strings.Contains(got[0].Title, ": 12 requests") || got[0].Revision != 2 ||
				!got[0].Time.Equal(opened) || got[0].Updated.IsZero() {
				t.Fatalf("%s: List(%+v) = %d stampede findings, first %+v; want one, the newest version", when, q, len(got), got)
			}
		}
		tr, err := fs.ForTrace(ctx, tid(5))
		if err != nil || len(tr) != 1 || tr[0].Revision != 2 {
			t.Fatalf("%s: ForTrace = %+v, %v", when, tr, err)
		}
		if n := fs.Counts(opened.Add(-time.Hour), opened.Add(time.Hour))["cache_stampede"]; n != 1 {
			t.Errorf("%s: counted %d stampedes, want 1", when, n)
		}
		if n := fs.Len(); n != 2 {
			t.Errorf("%s: Len = %d, want 2", when, n)
		}
		sum, err := fs.Summarize(ctx, SummaryQuery{WithSystemic: true})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Total != 2 || len(sum.Systemic) != 1 || sum.Systemic[0].ImpactMS != 120 {
			t.Errorf("%s: summary total %d, systemic %+v; want 2 findings and the newest stampede (impact 120)", when, sum.Total, sum.Systemic)
		}
	}
	check(fs, "open")
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fs, err = Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	check(fs, "after restart")
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "*"+idxSuffix))
	for _, p := range idx {
		os.Remove(p)
	}
	fs, err = Open(Options{Dir: dir, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for !fs.Ready() {
		time.Sleep(time.Millisecond)
	}
	check(fs, "indexes rebuilt")
}

// Two nodes opened the same long condition an hour apart (a restart, a
// key that changed owner): the first one's updates keep its window open,
// so the merged answer is one finding, last seen at the latest update.
func TestJoinSystemicUsesLastUpdate(t *testing.T) {
	opened := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := stampede(5, opened)
	a.Nodes, a.Updated = []string{"a"}, opened.Add(58*time.Minute)
	b := stampede(7, opened.Add(time.Hour))
	b.Nodes = []string{"b"}
	got := JoinSystemic([]Stored{a, b})
	if len(got) != 1 || got[0].Joined != 2 || !got[0].Updated.Equal(a.Updated) {
		t.Fatalf("joined %d findings (%+v), want one joining both", len(got), got)
	}
	// The merged summary counts them once, as the list shows them.
	w := windowOf(&a).Seconds()
	refs := []SystemicRef{{Kind: a.Kind, Key: a.Key, Time: a.Time, Updated: a.Updated, WindowS: w},
		{Kind: b.Kind, Key: b.Key, Time: b.Time, WindowS: w}}
	if sets := joinedRefs(refs); len(sets) != 1 || len(sets[0]) != 2 {
		t.Fatalf("summary joins %v, want the two as one", sets)
	}
}

// BenchmarkListWithRevisions lists the newest findings of a store of
// 100,000 per-trace findings and 1,000 cross-trace ones, each rewritten
// revs times (REVS=0: as a store without rewrites).
func BenchmarkListWithRevisions(b *testing.B) {
	for _, revs := range []int{0, 5} {
		b.Run(fmt.Sprintf("revisions=%d", revs), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), SyncInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			base := time.Now().Add(-time.Hour)
			batch := make([]Stored, 0, 1000)
			for i := range 100_000 {
				batch = append(batch, finding("n_plus_one_query", "checkout", tid(i), base.Add(time.Duration(i)*30*time.Millisecond)))
				if len(batch) == cap(batch) {
					if err := s.Put(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			sys := make([]Stored, 1000)
			for i := range sys {
				sys[i] = stampede(5, base.Add(time.Duration(i)*3*time.Second))
				sys[i].Key += fmt.Sprint(i)
			}
			if err := s.Put(ctx, sys); err != nil {
				b.Fatal(err)
			}
			for r := 1; r <= revs; r++ {
				for i := range sys {
					sys[i].Revision, sys[i].Updated, sys[i].ImpactMS = r, base.Add(time.Hour), float64(r)
				}
				if err := s.Update(ctx, sys); err != nil {
					b.Fatal(err)
				}
			}
			yes := true
			b.ResetTimer()
			for range b.N {
				for _, q := range []Query{{Limit: 100}, {Systemic: &yes, Limit: 100}} {
					if l, err := s.List(ctx, q); err != nil || len(l) != 100 {
						b.Fatalf("%d findings, %v", len(l), err)
					}
				}
				if sum, err := s.Summarize(ctx, SummaryQuery{}); err != nil || sum.Total != 101_000 {
					b.Fatalf("summary of %d findings, %v", sum.Total, err)
				}
			}
		})
	}
}

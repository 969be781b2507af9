package tsdb

import (
	"context"
	"math/rand/v2"
	"testing"
)

// Records split over three stores (as spans over the nodes of a cluster)
// and read through Read with the others as the remote sum, per step, to
// what one store holding every record gives; the earliest first minute of
// any store is the coverage.
func TestReadMergesRemotePartials(t *testing.T) {
	newStore := func() *Store[struct{}] {
		s, err := New[struct{}](Options{NHist: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	all, nodes := newStore(), []*Store[struct{}]{newStore(), newStore(), newStore()}
	r := rand.New(rand.NewPCG(7, 7))
	const start = 29_000_000
	keys := []Key{{A: "api", B: "GET /", K: 2}, {A: "api", B: "SELECT", K: 3}, {A: "web", B: "GET /", K: 2}}
	for i := 0; i < 5000; i++ {
		k, minute, us := keys[r.IntN(len(keys))], int64(start+r.IntN(60)), uint64(r.IntN(2_000_000))
		failed := r.IntN(10) == 0
		add := func(s *Store[struct{}]) {
			s.Update(k, minute, func(acc *Acc, _ *struct{}) {
				acc.Count++
				if failed {
					acc.Errors++
				}
				acc.Sum[0] += us
				acc.H[0][BucketOf(us)]++
			})
		}
		add(all)
		add(nodes[r.IntN(len(nodes))])
	}
	remote := func(_ context.Context, p Part) []Partial {
		var out []Partial
		for _, n := range nodes[1:] {
			part, err := n.Partial(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, part)
		}
		return out
	}
	p := Part{StartMin: start + 5, EndMin: start + 50, StepMin: 10, A: []string{"api"}}
	sum := func(s *Store[struct{}], remote Remote) (map[Key][]Agg, Coverage) {
		out := map[Key][]Agg{}
		cov, err := s.Read(context.Background(), remote, p, func(k Key) bool { return k.K == 2 || k.B == "SELECT" }, func(k Key, r *Rec) {
			if out[k] == nil {
				out[k] = make([]Agg, 5)
			}
			out[k][(r.Minute-p.StartMin)/p.StepMin].AddRec(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		return out, cov
	}
	want, wantCov := sum(all, nil)
	got, gotCov := sum(nodes[0], remote)
	if len(want) != 2 || len(got) != len(want) {
		t.Fatalf("series: got %d, want %d (2: web is filtered out)", len(got), len(want))
	}
	for k, steps := range want {
		for i := range steps {
			if got[k][i] != steps[i] {
				t.Fatalf("%v step %d: got %d calls, %d errors, want %d, %d (or histograms differ)", k, i, got[k][i].Count, got[k][i].Errors, steps[i].Count, steps[i].Errors)
			}
		}
	}
	if gotCov != wantCov || !gotCov.Has {
		t.Fatalf("coverage %+v, want %+v", gotCov, wantCov)
	}
	for _, bad := range []Part{{StartMin: 5, EndMin: 5, StepMin: 1}, {StartMin: 0, EndMin: 10, StepMin: 0}, {StartMin: 0, EndMin: MaxPartSteps + 1, StepMin: 1}} {
		if _, err := nodes[0].Partial(bad); err == nil {
			t.Errorf("part %+v accepted", bad)
		}
	}
}

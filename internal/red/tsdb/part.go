package tsdb

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// In a cluster every node records the spans of the traces it owns, so a
// query answered for the whole cluster merges each node's records. A node
// sends the records themselves (counts and histogram buckets, summed per
// query step), never rendered rates or percentiles: percentiles of a sum
// cannot be computed from the parts' percentiles.

// Part selects the records a node sends for a query: the minutes
// [StartMin, EndMin) summed per series and per step of StepMin minutes,
// of the series matching the filter (empty fields do not constrain).
type Part struct {
	StartMin int64    `json:"start_min"`
	EndMin   int64    `json:"end_min"`
	StepMin  int64    `json:"step_min"`
	A        []string `json:"a,omitempty"`
	B        string   `json:"b,omitempty"`
	K        []uint8  `json:"k,omitempty"`
}

// MaxPartSteps bounds the steps of one part (a peer request is refused
// beyond it rather than answered with millions of records).
const MaxPartSteps = 11000

// Match says whether series k is selected.
func (p Part) Match(k Key) bool {
	return (len(p.A) == 0 || slices.Contains(p.A, k.A)) && (p.B == "" || k.B == p.B) &&
		(len(p.K) == 0 || slices.Contains(p.K, k.K))
}

func (p Part) check() error {
	if p.EndMin <= p.StartMin || p.StepMin < 1 {
		return fmt.Errorf("part: want start_min < end_min and step_min ≥ 1, got %d, %d, %d", p.StartMin, p.EndMin, p.StepMin)
	}
	if (p.EndMin-p.StartMin+p.StepMin-1)/p.StepMin > MaxPartSteps {
		return fmt.Errorf("part: more than %d steps", MaxPartSteps)
	}
	return nil
}

// Partial is one node's records for a Part. First is the earliest minute
// the node holds data for (HasFirst false when none): rates are averaged
// from the earliest of all nodes.
type Partial struct {
	Recs     []KeyedRec `json:"recs"`
	First    int64      `json:"first"`
	HasFirst bool       `json:"has_first"`
}

// Partial sums this store's records selected by p; a step's record
// carries the step's first minute.
func (s *Store[E]) Partial(p Part) (Partial, error) {
	if err := p.check(); err != nil {
		return Partial{}, err
	}
	type stepKey struct {
		k    Key
		step int64
	}
	sums := map[stepKey]*Rec{}
	err := s.Range(p.StartMin, p.EndMin, p.Match, func(k Key, r *Rec) {
		sk := stepKey{k, (r.Minute - p.StartMin) / p.StepMin}
		if cur := sums[sk]; cur != nil {
			*cur = mergeRec(*cur, *r)
			return
		}
		c := mergeRec(Rec{}, *r)
		c.Minute = p.StartMin + sk.step*p.StepMin
		sums[sk] = &c
	})
	out := Partial{Recs: make([]KeyedRec, 0, len(sums))}
	for sk, r := range sums {
		out.Recs = append(out.Recs, KeyedRec{Key: sk.k, Rec: *r})
	}
	out.First, out.HasFirst = s.FirstMinute()
	return out, err
}

// Remote returns the other nodes' Partials for p (nil on a single node).
// A node that does not answer is left out (and reported by the remote).
type Remote func(ctx context.Context, p Part) []Partial

// Coverage is the earliest minute any node holds data for.
type Coverage struct {
	First int64
	Has   bool
}

func (c *Coverage) add(first int64, has bool) {
	if has && (!c.Has || first < c.First) {
		c.First, c.Has = first, true
	}
}

// Seconds is CoveredSeconds with this coverage's first minute.
func (c Coverage) Seconds(startMin, endMin int64, now time.Time) float64 {
	first := startMin
	if c.Has {
		first = c.First
	}
	return Covered(startMin, endMin, first, now)
}

// Read calls fn for every record of s and of the remote's nodes selected
// by p and match (which may narrow p further): this node's records per
// minute, the others' summed per step. Callers aggregate per step:
// (r.Minute-p.StartMin)/p.StepMin is the step either way.
func (s *Store[E]) Read(ctx context.Context, remote Remote, p Part, match func(Key) bool, fn func(Key, *Rec)) (Coverage, error) {
	var cov Coverage
	cov.add(s.FirstMinute())
	both := func(k Key) bool { return p.Match(k) && match(k) }
	err := s.Range(p.StartMin, p.EndMin, both, fn)
	if remote == nil {
		return cov, err
	}
	for _, part := range remote(ctx, p) {
		cov.add(part.First, part.HasFirst)
		for i := range part.Recs {
			kr := &part.Recs[i]
			if kr.Rec.Minute >= p.StartMin && kr.Rec.Minute < p.EndMin && both(kr.Key) {
				fn(kr.Key, &kr.Rec)
			}
		}
	}
	return cov, err
}

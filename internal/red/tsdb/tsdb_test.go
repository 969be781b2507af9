package tsdb

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketBoundsContainValue(t *testing.T) {
	vals := []uint64{0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 999, 1000, 1023, 1024, 1025, 123456, 1 << 40, 1<<41 - 1}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		vals = append(vals, r.Uint64N(1<<38))
	}
	prev := -1
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, v := range vals {
		b := BucketOf(v)
		if b < prev {
			t.Fatalf("bucket of %d = %d is below bucket of a smaller value (%d)", v, b, prev)
		}
		prev = b
		if f := float64(v); f < BucketLower(b) || f >= BucketUpper(b) {
			t.Fatalf("value %d in bucket %d [%g,%g)", v, b, BucketLower(b), BucketUpper(b))
		}
	}
	if BucketOf(math.MaxUint64) != NumBuckets-1 {
		t.Fatalf("huge values must land in the last bucket")
	}
}

func TestPromBucketIsSmallestBoundAbove(t *testing.T) {
	for _, us := range []uint64{0, 1, 256, 257, 512, 513, 1000, 1 << 24, 1<<24 + 1, 1 << 30} {
		i := PromBucketOf(us)
		if i < NumProm-1 && float64(us)/1e6 > PromBoundSeconds(i) {
			t.Errorf("%d µs in bucket le=%g", us, PromBoundSeconds(i))
		}
		if i > 0 && float64(us)/1e6 <= PromBoundSeconds(i-1) {
			t.Errorf("%d µs should be in an earlier bucket than le=%g", us, PromBoundSeconds(i))
		}
	}
}

func TestQuantileAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h [NumBuckets]uint64
	vals := make([]float64, 0, 50000)
	for i := 0; i < 50000; i++ {
		v := math.Exp(r.NormFloat64()*1.0 + math.Log(20000)) // lognormal around 20 ms
		vals = append(vals, v)
		h[BucketOf(uint64(v))]++
	}
	sort.Float64s(vals)
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		want := vals[int(q*float64(len(vals)))]
		got, ok := Quantile(h[:], q)
		if !ok || math.Abs(got-want)/want > 0.13 {
			t.Errorf("q%.2f: got %.0f µs, exact %.0f µs", q, got, want)
		}
	}
	if _, ok := Quantile(make([]uint32, NumBuckets), 0.5); ok {
		t.Error("empty histogram must report !ok")
	}
}

type ext struct{ n int }

func TestStoreFlushReloadAndLateMerge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	m0 := UnixMinute(now) - 5
	s, err := New[ext](Options{Dir: dir, Name: "t", NHist: 2})
	if err != nil {
		t.Fatal(err)
	}
	k := Key{A: "svc", B: "op", K: 2}
	add := func(minute int64, us uint64, failed bool) {
		s.Update(k, minute, func(a *Acc, e *ext) {
			a.Count++
			if failed {
				a.Errors++
			}
			a.Sum[1] += us
			a.H[1][BucketOf(us)]++
			e.n++
		})
	}
	for i := 0; i < 10; i++ {
		add(m0, 1000, i%5 == 0)
	}
	if err := s.Flush(now, false); err != nil {
		t.Fatal(err)
	}
	add(m0, 3000, true) // late span for a flushed minute
	add(m0+1, 1000, false)
	if err := s.Flush(now, true); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store[ext]) {
		t.Helper()
		var a Agg
		var n int
		if err := s.Range(m0, m0+2, func(Key) bool { return true }, func(_ Key, r *Rec) { n++; a.AddRec(r) }); err != nil {
			t.Fatal(err)
		}
		if a.Count != 12 || a.Errors != 3 || a.Sum[1] != 14000 || a.HistCount(1) != 12 {
			t.Fatalf("got count %d errors %d sum %d hist %d, want 12/3/14000/12", a.Count, a.Errors, a.Sum[1], a.HistCount(1))
		}
		if n != 2 {
			t.Fatalf("late record must merge into its minute: %d records", n)
		}
	}
	check(s)
	s2, err := New[ext](Options{Dir: dir, Name: "t", NHist: 2})
	if err != nil {
		t.Fatal(err)
	}
	check(s2)
	// Days beyond the memory window are read from disk on demand.
	s3, err := New[ext](Options{Dir: dir, Name: "t", NHist: 2, MemDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	s3.mu.Lock()
	s3.days = map[int64]*day{}
	s3.mu.Unlock()
	check(s3)
}

func TestStoreOverflowBoundsSeries(t *testing.T) {
	s, err := New[ext](Options{MaxSeries: 10})
	if err != nil {
		t.Fatal(err)
	}
	m := UnixMinute(time.Now())
	for i := 0; i < 1000; i++ {
		s.Update(Key{A: "svc", B: string(rune('a'+i%26)) + time.Duration(i).String()}, m, func(a *Acc, _ *ext) { a.Count++ })
	}
	if n := s.SeriesCount(); n > 10+nShards {
		t.Fatalf("%d series, want at most %d", n, 10+nShards)
	}
	var total uint64
	_ = s.Range(m, m+1, func(Key) bool { return true }, func(_ Key, r *Rec) { total += r.Count })
	if total != 1000 {
		t.Fatalf("overflow lost spans: %d", total)
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"1735787045", "1735787045000", "1735787045000000", "1735787045000000000", "2025-01-02T03:04:05Z"} {
		got, err := ParseTime(s, time.Time{})
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	if _, err := ParseTime("yesterday", time.Time{}); err == nil {
		t.Error("want error")
	}
}

package tsdb

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Key identifies a series. RED uses (service, operation, span kind); the
// service graph uses (client, server, connection type).
type Key struct {
	A, B string
	K    uint8
}

// Acc is the dense accumulator of one open minute of one series. Sum and H
// hold up to two latency distributions (the service graph keeps client and
// server side); Sum is in µs.
type Acc struct {
	Count, Errors uint64
	Sum           [2]uint64
	H             [2][NumBuckets]uint32
}

// BC is one non-empty histogram bucket of a compacted record.
type BC struct {
	I uint16
	N uint32
}

// Rec is one compacted minute of one series.
type Rec struct {
	Minute        int64 // unix minute
	Count, Errors uint64
	Sum           [2]uint64
	H             [2][]BC
}

// DefaultRetention is the retention of a store whose Options set none.
const DefaultRetention = 30 * 24 * time.Hour

// Options configure a Store.
type Options struct {
	// Dir holds the day files; "" keeps everything in memory only.
	Dir string
	// Name prefixes the day files ("red", "edges").
	Name string
	// NHist is the number of latency distributions per record (1 or 2).
	NHist int
	// Retention of minute records (default 30 days).
	Retention time.Duration
	// MemDays is how many recent days stay decoded in memory when Dir is
	// set (default 2); older days are read from disk when queried.
	MemDays int
	// MaxSeries caps the number of series; beyond it, new keys are folded
	// into one overflow series per A (B = Overflow) so a cardinality
	// explosion (ids in span names) cannot exhaust memory.
	MaxSeries int
	Logger    *slog.Logger
}

// Overflow prefixes the B of the series that absorb keys beyond MaxSeries.
const Overflow = "__overflow__"

const nShards = 32

type hotMin struct {
	minute int64
	acc    *Acc
}

type series[E any] struct {
	key Key
	ext E
	hot []hotMin
}

type shard[E any] struct {
	mu       sync.Mutex
	m        map[Key]*series[E]
	overflow string
}

type day struct {
	recs map[Key][]Rec // sorted by minute
}

// Store is a set of series with per-series extension state E (the
// Prometheus cumulative counters of the owning package), updated under the
// same shard lock as the minute accumulators so one span costs one lock.
type Store[E any] struct {
	opt     Options
	log     *slog.Logger
	seed    maphash.Seed
	shards  [nShards]shard[E]
	nseries atomic.Int64
	pool    sync.Pool
	first   atomic.Int64 // earliest unix minute with data; noData if none

	mu   sync.RWMutex
	days map[int64]*day // by unix day

	flushMu sync.Mutex // serialises Flush (disk appends)
}

// New opens (or creates) a store, loading recent days from disk.
func New[E any](opt Options) (*Store[E], error) {
	if opt.NHist < 1 || opt.NHist > 2 {
		opt.NHist = 1
	}
	if opt.Retention <= 0 {
		opt.Retention = DefaultRetention
	}
	if opt.MemDays <= 0 {
		opt.MemDays = 2
	}
	if opt.MaxSeries <= 0 {
		opt.MaxSeries = 20000
	}
	if opt.Name == "" {
		opt.Name = "series"
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	s := &Store[E]{opt: opt, log: opt.Logger, seed: maphash.MakeSeed(), days: map[int64]*day{}}
	s.first.Store(noData)
	s.pool.New = func() any { return new(Acc) }
	for i := range s.shards {
		s.shards[i].m = map[Key]*series[E]{}
		s.shards[i].overflow = fmt.Sprintf("%s%d", Overflow, i)
	}
	if opt.Dir != "" {
		if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("tsdb %s: create dir: %w", opt.Name, err)
		}
		if err := s.loadRecent(time.Now()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// NHist returns the number of latency distributions per record.
func (s *Store[E]) NHist() int { return s.opt.NHist }

// Retention returns the configured retention.
func (s *Store[E]) Retention() time.Duration { return s.opt.Retention }

func (s *Store[E]) shardOf(k Key) *shard[E] {
	h := maphash.String(s.seed, k.B) ^ uint64(len(k.A))<<7 ^ uint64(k.K)
	return &s.shards[h%nShards]
}

// Update runs f under the series' shard lock with the accumulator of the
// given unix minute (nil when minute < 0: the caller only wants the
// extension state, e.g. for a span outside retention) and the series'
// extension state. f must be quick and must not call back into the store.
func (s *Store[E]) Update(k Key, minute int64, f func(acc *Acc, ext *E)) {
	sh := s.shardOf(k)
	sh.mu.Lock()
	ser := sh.m[k]
	if ser == nil {
		ser = s.newSeries(sh, k)
	}
	var acc *Acc
	if minute >= 0 {
		if minute < s.first.Load() {
			s.noteMinute(minute)
		}
		for i := range ser.hot {
			if ser.hot[i].minute == minute {
				acc = ser.hot[i].acc
				break
			}
		}
		if acc == nil {
			acc = s.pool.Get().(*Acc)
			ser.hot = append(ser.hot, hotMin{minute, acc})
		}
	}
	f(acc, &ser.ext)
	sh.mu.Unlock()
}

// newSeries is called with sh locked. Strings are cloned because span
// strings usually point into a decoded request buffer that must not be
// kept alive by a long-lived series. Beyond MaxSeries the key is folded
// into the shard's overflow series (B = Overflow + shard number, so that no
// two shards hold the same key and one update keeps one lock); unknown keys
// are not remembered, so an id-in-span-name explosion costs no memory.
func (s *Store[E]) newSeries(sh *shard[E], k Key) *series[E] {
	if s.nseries.Load() >= int64(s.opt.MaxSeries) {
		ok := Key{A: k.A, B: sh.overflow, K: k.K}
		if ser := sh.m[ok]; ser != nil {
			return ser
		}
		k = ok
	}
	ser := &series[E]{key: Key{A: strings.Clone(k.A), B: strings.Clone(k.B), K: k.K}}
	sh.m[ser.key] = ser
	s.nseries.Add(1)
	return ser
}

// SeriesCount returns the number of series (including overflow series).
func (s *Store[E]) SeriesCount() int { return int(s.nseries.Load()) }

// EachExt calls f for every series with a copy of its extension state,
// taken under the shard lock; f runs outside the lock.
func (s *Store[E]) EachExt(f func(k Key, ext *E)) {
	type item struct {
		k Key
		e E
	}
	var items []item
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, ser := range sh.m {
			items = append(items, item{ser.key, ser.ext})
		}
		sh.mu.Unlock()
	}
	for i := range items {
		f(items[i].k, &items[i].e)
	}
}

func (s *Store[E]) compact(minute int64, a *Acc) Rec {
	r := Rec{Minute: minute, Count: a.Count, Errors: a.Errors, Sum: a.Sum}
	for h := 0; h < s.opt.NHist; h++ {
		n := 0
		for _, c := range a.H[h] {
			if c != 0 {
				n++
			}
		}
		if n == 0 {
			continue
		}
		bc := make([]BC, 0, n)
		for i, c := range a.H[h] {
			if c != 0 {
				bc = append(bc, BC{uint16(i), c})
			}
		}
		r.H[h] = bc
	}
	return r
}

// KeyedRec is a record with its series key.
type KeyedRec struct {
	Key Key
	Rec Rec
}

// Flush compacts every open minute before now's minute (all open minutes
// when all is set, as on shutdown), merges them into the day records and
// appends them to the day files. Late spans for an already flushed minute
// open a new accumulator that a later flush merges additively, so records
// on disk are deltas and loading sums them.
func (s *Store[E]) Flush(now time.Time, all bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	cut := UnixMinute(now)
	if all {
		cut = math.MaxInt64
	}
	var out []KeyedRec
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, ser := range sh.m {
			keep := ser.hot[:0]
			for _, h := range ser.hot {
				if h.minute < cut {
					out = append(out, KeyedRec{ser.key, s.compact(h.minute, h.acc)})
					*h.acc = Acc{}
					s.pool.Put(h.acc)
				} else {
					keep = append(keep, h)
				}
			}
			for j := len(keep); j < len(ser.hot); j++ {
				ser.hot[j] = hotMin{}
			}
			ser.hot = keep
		}
		sh.mu.Unlock()
	}
	var errs []error
	if len(out) > 0 {
		byDay := map[int64][]KeyedRec{}
		for _, kr := range out {
			d := kr.Rec.Minute / 1440
			byDay[d] = append(byDay[d], kr)
		}
		s.mu.Lock()
		for d, recs := range byDay {
			dd := s.days[d]
			if dd == nil {
				if s.opt.Dir != "" && !s.inMemWindow(d, now) {
					// An old minute arrived late: the day lives on disk only.
					continue
				}
				dd = &day{recs: map[Key][]Rec{}}
				s.days[d] = dd
			}
			for _, kr := range recs {
				dd.add(kr.Key, kr.Rec)
			}
		}
		s.mu.Unlock()
		if s.opt.Dir != "" {
			for d, recs := range byDay {
				if err := s.appendDay(d, recs); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := s.applyRetention(now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Store[E]) inMemWindow(d int64, now time.Time) bool {
	return d > UnixDay(now)-int64(s.opt.MemDays)
}

func (d *day) add(k Key, r Rec) {
	rs := d.recs[k]
	n := len(rs)
	if n == 0 || rs[n-1].Minute < r.Minute {
		d.recs[k] = append(rs, r)
		return
	}
	i := sort.Search(n, func(i int) bool { return rs[i].Minute >= r.Minute })
	if i < n && rs[i].Minute == r.Minute {
		rs[i] = mergeRec(rs[i], r)
		return
	}
	rs = append(rs, Rec{})
	copy(rs[i+1:], rs[i:])
	rs[i] = r
	d.recs[k] = rs
}

func mergeRec(a, b Rec) Rec {
	a.Count += b.Count
	a.Errors += b.Errors
	for h := 0; h < 2; h++ {
		a.Sum[h] += b.Sum[h]
		if len(b.H[h]) == 0 {
			continue
		}
		var dense [NumBuckets]uint32
		for _, bc := range a.H[h] {
			dense[bc.I] += bc.N
		}
		for _, bc := range b.H[h] {
			dense[bc.I] += bc.N
		}
		out := make([]BC, 0, len(a.H[h])+len(b.H[h]))
		for i, c := range dense {
			if c != 0 {
				out = append(out, BC{uint16(i), c})
			}
		}
		a.H[h] = out
	}
	return a
}

func (s *Store[E]) applyRetention(now time.Time) error {
	oldest := UnixMinute(now.Add(-s.opt.Retention)) / 1440
	// Data older than retention is gone: rates must not count its time.
	for {
		cur := s.first.Load()
		if cur == noData || cur >= oldest*1440 || s.first.CompareAndSwap(cur, oldest*1440) {
			break
		}
	}
	s.mu.Lock()
	for d := range s.days {
		if d < oldest || (s.opt.Dir != "" && !s.inMemWindow(d, now)) {
			delete(s.days, d)
		}
	}
	s.mu.Unlock()
	if s.opt.Dir == "" {
		return nil
	}
	return s.deleteOldFiles(oldest)
}

// Range calls fn for every record of a series matching match with minute
// in [startMin, endMin), including minutes still open in memory. Records
// of one series may be reported more than once for the same minute (a
// flushed part and an open part); callers aggregate.
func (s *Store[E]) Range(startMin, endMin int64, match func(Key) bool, fn func(Key, *Rec)) error {
	if endMin <= startMin {
		return nil
	}
	var errs []error
	for d := startMin / 1440; d <= (endMin-1)/1440; d++ {
		s.mu.RLock()
		dd := s.days[d]
		if dd != nil {
			dd.each(startMin, endMin, match, fn)
			s.mu.RUnlock()
			continue
		}
		s.mu.RUnlock()
		if s.opt.Dir == "" {
			continue
		}
		od, err := s.readDay(d)
		if err != nil {
			errs = append(errs, err)
		}
		if od != nil {
			od.each(startMin, endMin, match, fn)
		}
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, ser := range sh.m {
			if !match(ser.key) {
				continue
			}
			for _, h := range ser.hot {
				if h.minute >= startMin && h.minute < endMin {
					r := s.compact(h.minute, h.acc)
					fn(ser.key, &r)
				}
			}
		}
		sh.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (d *day) each(startMin, endMin int64, match func(Key) bool, fn func(Key, *Rec)) {
	for k, rs := range d.recs {
		if !match(k) {
			continue
		}
		i := sort.Search(len(rs), func(i int) bool { return rs[i].Minute >= startMin })
		for ; i < len(rs) && rs[i].Minute < endMin; i++ {
			fn(k, &rs[i])
		}
	}
}

// UnixMinute returns the unix minute of t.
func UnixMinute(t time.Time) int64 { return floorDiv(t.Unix(), 60) }

// UnixDay returns the unix day of t (UTC).
func UnixDay(t time.Time) int64 { return floorDiv(t.Unix(), 86400) }

// MinuteOfNano returns the unix minute of a unix-nanosecond timestamp.
func MinuteOfNano(ns uint64) int64 { return int64(ns / 60e9) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

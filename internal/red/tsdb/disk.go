package tsdb

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Day files: <name>-YYYYMMDD.jsonl.gz, one gzip member appended per flush,
// each holding one JSON line per (series, minute) delta. Appending keeps a
// flush proportional to the new minutes rather than to the day; Go's gzip
// reader reads concatenated members as one stream. A kill -9 loses at most
// the minutes not yet flushed (the current minute plus one flush interval)
// and may leave a truncated last member, which loading tolerates.

type line struct {
	A string     `json:"a"`
	B string     `json:"b"`
	K uint8      `json:"k,omitempty"`
	M int64      `json:"m"`
	C uint64     `json:"c"`
	E uint64     `json:"e,omitempty"`
	S [2]uint64  `json:"s"`
	H [][]uint32 `json:"h,omitempty"` // per distribution: bucket, count, bucket, count…
}

const fileSuffix = ".jsonl.gz"

func (s *Store[E]) dayPath(d int64) string {
	t := time.Unix(d*86400, 0).UTC()
	return filepath.Join(s.opt.Dir, s.opt.Name+"-"+t.Format("20060102")+fileSuffix)
}

func (s *Store[E]) dayOfFile(name string) (int64, bool) {
	t, ok := FileDay(s.opt.Name, name)
	return UnixDay(t), ok
}

// FileDay is the UTC day of a day file of the store named store (Options.Name);
// false for a name that is not one.
func FileDay(store, name string) (time.Time, bool) {
	pre := store + "-"
	if !strings.HasPrefix(name, pre) || !strings.HasSuffix(name, fileSuffix) {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102", strings.TrimSuffix(strings.TrimPrefix(name, pre), fileSuffix))
	return t, err == nil
}

func (s *Store[E]) appendDay(d int64, recs []KeyedRec) error {
	p := s.dayPath(d)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("tsdb %s: open %s: %w", s.opt.Name, p, err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	zw, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	enc := json.NewEncoder(zw)
	var l line
	for i := range recs {
		kr := &recs[i]
		l = line{A: kr.Key.A, B: kr.Key.B, K: kr.Key.K, M: kr.Rec.Minute, C: kr.Rec.Count, E: kr.Rec.Errors, S: kr.Rec.Sum}
		for h := 0; h < s.opt.NHist; h++ {
			flat := make([]uint32, 0, 2*len(kr.Rec.H[h]))
			for _, bc := range kr.Rec.H[h] {
				flat = append(flat, uint32(bc.I), bc.N)
			}
			l.H = append(l.H, flat)
		}
		if err := enc.Encode(&l); err != nil {
			f.Close()
			return fmt.Errorf("tsdb %s: encode: %w", s.opt.Name, err)
		}
	}
	err = zw.Close()
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tsdb %s: write %s: %w", s.opt.Name, p, err)
	}
	return nil
}

// readDay decodes a day file. A truncated tail (crash mid-append) yields
// the records before it and a logged warning, not an error.
func (s *Store[E]) readDay(d int64) (*day, error) {
	p := s.dayPath(d)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tsdb %s: open %s: %w", s.opt.Name, p, err)
	}
	defer f.Close()
	dd := &day{recs: map[Key][]Rec{}}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return dd, nil
		}
		s.log.Warn("unreadable metrics day file", "path", p, "err", err)
		return dd, nil
	}
	dec := json.NewDecoder(zr)
	for {
		var l line
		if err := dec.Decode(&l); err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("metrics day file truncated; keeping records before the damage", "path", p, "err", err)
			}
			break
		}
		r := Rec{Minute: l.M, Count: l.C, Errors: l.E, Sum: l.S}
		for h := 0; h < len(l.H) && h < 2; h++ {
			flat := l.H[h]
			bc := make([]BC, 0, len(flat)/2)
			for i := 0; i+1 < len(flat); i += 2 {
				if flat[i] < NumBuckets {
					bc = append(bc, BC{uint16(flat[i]), flat[i+1]})
				}
			}
			if len(bc) > 0 {
				r.H[h] = bc
			}
		}
		dd.add(Key{A: l.A, B: l.B, K: l.K}, r)
	}
	return dd, nil
}

func (s *Store[E]) loadRecent(now time.Time) error {
	ents, err := os.ReadDir(s.opt.Dir)
	if err != nil {
		return fmt.Errorf("tsdb %s: list %s: %w", s.opt.Name, s.opt.Dir, err)
	}
	oldest := UnixMinute(now.Add(-s.opt.Retention)) / 1440
	var kept []int64
	for _, e := range ents {
		d, ok := s.dayOfFile(e.Name())
		if ok && d >= oldest {
			kept = append(kept, d)
		}
		if !ok || d < oldest || !s.inMemWindow(d, now) {
			continue
		}
		dd, err := s.readDay(d)
		if err != nil {
			return err
		}
		if dd != nil {
			s.days[d] = dd
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i] < kept[j] })
	s.loadFirst(kept)
	return s.deleteOldFiles(oldest)
}

func (s *Store[E]) deleteOldFiles(oldest int64) error {
	ents, err := os.ReadDir(s.opt.Dir)
	if err != nil {
		return fmt.Errorf("tsdb %s: list %s: %w", s.opt.Name, s.opt.Dir, err)
	}
	var errs []error
	for _, e := range ents {
		d, ok := s.dayOfFile(e.Name())
		if ok && d < oldest {
			if err := os.Remove(filepath.Join(s.opt.Dir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("tsdb %s: retention: %w", s.opt.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

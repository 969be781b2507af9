package statesync

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Days is a directory of append-only files, one per UTC day (the RED and
// service-graph history, the summary archive), whose day is in the file
// name and which retention deletes whole.
type Days struct {
	Dir string
	// Day is the UTC day a file named name holds; false for the files of
	// the directory that are not day files.
	Day func(name string) (time.Time, bool)
	// Retention: a file whose day ended longer than this ago is expired
	// (0: kept forever). It is the owner's rule, so the bucket forgets a
	// day when the local disk does.
	Retention time.Duration
}

// DayMirror keeps a copy of day files in a bucket. The files only grow,
// so a file's copy is a generation of parts, one block each: the whole
// file as it was when the generation began, then what it gained at each
// later upload. A changed file is uploaded at most once per MinInterval
// (today's history grows all day; older days change rarely). A new
// generation (the whole file again, the older one then deleted) starts
// when the parts would outweigh the first, when there are maxParts, when
// the file did not just grow (its copied bytes changed: a repair), and
// once a file with several parts stayed unchanged for quietAfter.
// What a file gained since its last upload is lost with the disk.
type DayMirror struct {
	st   blockio.Storage
	sets []Days
	// minInterval bounds how often a changing file is uploaded again.
	minInterval time.Duration
	now         func() time.Time
	log         *slog.Logger
	sent        map[string]*sentFile
}

// sentFile is what the bucket holds of a file, as this node knows it.
type sentFile struct {
	stamp // of the file when last uploaded; size is the bytes copied
	at    time.Time
	gen   string
	parts []string // ids of gen's blocks
	base  int64    // bytes of gen's first block
	crc   uint32   // CRC-32C of the file's first size bytes
}

// maxParts bounds the blocks a restore reads per file: a file that grows
// all day, uploaded every 5 minutes, costs about 3.6 times its size in
// uploads with 96 (5 times with 48).
const maxParts = 96

// quietAfter is how long a file stays unchanged before its parts are
// joined into one block.
const quietAfter = time.Hour

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewDayMirror mirrors the day files of sets in st. The sets' file names
// must not collide (they share the bucket's namespace) nor contain "~".
func NewDayMirror(st blockio.Storage, sets []Days, minInterval time.Duration, now func() time.Time, log *slog.Logger) *DayMirror {
	if now == nil {
		now = time.Now
	}
	return &DayMirror{st: st, sets: sets, minInterval: minInterval, now: now,
		log: log.With("component", "statesync"), sent: map[string]*sentFile{}}
}

// Block ids: <file name>~<generation>~<from>-<to>, zero-padded so that
// they sort by file, generation and offset.
const idSep = "~"

func partID(name, gen string, from, to int64) string {
	return fmt.Sprintf("%s%s%s%s%015d-%015d", name, idSep, gen, idSep, from, to)
}

type part struct {
	id       string
	from, to int64
}

// fileCopy is what the bucket holds of one file: the newest generation's
// parts, contiguous from byte 0, and the blocks to delete (older
// generations, parts after a gap).
type fileCopy struct {
	gen   string
	parts []part
	stale []string
}

func (c *fileCopy) size() int64 {
	if len(c.parts) == 0 {
		return 0
	}
	return c.parts[len(c.parts)-1].to
}

// copies lists the bucket's copies by file name.
func (m *DayMirror) copies(ctx context.Context) (map[string]*fileCopy, error) {
	ids, err := m.st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("statesync: listing the bucket: %w", err)
	}
	slices.Sort(ids)
	byGen := map[string]map[string][]part{} // name, generation
	for _, id := range ids {
		f := strings.Split(id, idSep)
		if len(f) != 3 {
			continue
		}
		from, to, ok := strings.Cut(f[2], "-")
		a, err1 := strconv.ParseInt(from, 10, 64)
		b, err2 := strconv.ParseInt(to, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		if byGen[f[0]] == nil {
			byGen[f[0]] = map[string][]part{}
		}
		byGen[f[0]][f[1]] = append(byGen[f[0]][f[1]], part{id, a, b})
	}
	out := map[string]*fileCopy{}
	for name, gens := range byGen {
		c := &fileCopy{}
		// The newest generation whose first part is whole wins; a newer
		// one without it is an upload cut short.
		for _, gen := range slices.Backward(slices.Sorted(maps.Keys(gens))) {
			ps := gens[gen]
			if c.gen != "" || ps[0].from != 0 {
				c.stale = append(c.stale, partIDs(ps)...)
				continue
			}
			c.gen = gen
			for i, p := range ps {
				if p.from != c.size() {
					c.stale = append(c.stale, partIDs(ps[i:])...)
					break
				}
				c.parts = append(c.parts, p)
			}
		}
		out[name] = c
	}
	return out, nil
}

func partIDs(ps []part) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.id
	}
	return out
}

// set finds the set a file name belongs to and whether its day expired.
func (m *DayMirror) set(name string) (set *Days, expired bool) {
	for i := range m.sets {
		d, ok := m.sets[i].Day(name)
		if !ok {
			continue
		}
		r := m.sets[i].Retention
		return &m.sets[i], r > 0 && !d.Add(24*time.Hour).After(m.now().Add(-r))
	}
	return nil, false
}

// Restore downloads every unexpired day file that the local disk lacks.
// A file present locally is kept: it is at least as long as the node's
// last upload of it.
func (m *DayMirror) Restore(ctx context.Context) error {
	byName, err := m.copies(ctx)
	if err != nil {
		return err
	}
	restored := 0
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		c := byName[name]
		set, expired := m.set(name)
		if set == nil || expired || c.gen == "" {
			continue
		}
		path := filepath.Join(set.Dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := m.download(ctx, name, path, c); err != nil {
			return err
		}
		restored++
	}
	if restored > 0 {
		m.log.Info("day files restored from the bucket", "files", restored)
	}
	return nil
}

// Pull makes the local day files that want accepts copies of the
// bucket's: a file whose copy has another length is downloaded again.
// It is for a directory that only the bucket fills (a replica of another
// node's files); local files the bucket lacks are left alone. It returns
// how many files it downloaded.
func (m *DayMirror) Pull(ctx context.Context, want func(name string) bool) (int, error) {
	byName, err := m.copies(ctx)
	if err != nil {
		return 0, err
	}
	pulled := 0
	for name, c := range byName {
		set, expired := m.set(name)
		if set == nil || expired || c.gen == "" || !want(name) {
			continue
		}
		path := filepath.Join(set.Dir, name)
		if fi, err := os.Stat(path); err == nil && fi.Size() == c.size() {
			continue
		}
		if err := m.download(ctx, name, path, c); err != nil {
			return pulled, err
		}
		pulled++
	}
	return pulled, nil
}

// download joins c's parts into path, and notes them as sent.
func (m *DayMirror) download(ctx context.Context, name, path string, c *fileCopy) error {
	sum := &crcWriter{}
	err := replaceFile(path, func(out io.Writer) error {
		w := io.MultiWriter(out, sum)
		for _, p := range c.parts {
			b, err := m.st.ReadAll(ctx, p.id, name)
			if err == nil && int64(len(b)) != p.to-p.from {
				err = fmt.Errorf("%d bytes, want %d", len(b), p.to-p.from)
			}
			if err != nil {
				return fmt.Errorf("reading %s from the bucket: %w", p.id, err)
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil {
		m.sent[name] = &sentFile{stamp: stamp{fi.Size(), fi.ModTime()}, at: m.now(), gen: c.gen,
			parts: partIDs(c.parts), base: c.parts[0].to, crc: sum.sum}
	}
	return nil
}

// Upload copies what the day files gained since their last upload (all
// of them when final, at shutdown; else those last uploaded MinInterval
// ago or more) and deletes the copies of expired days and the blocks a
// new generation replaced.
func (m *DayMirror) Upload(ctx context.Context, final bool) error {
	byName, err := m.copies(ctx)
	if err != nil {
		return err
	}
	var errs []error
	drop := func(ids []string) {
		for _, id := range ids {
			if err := m.st.Delete(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("statesync: deleting %s from the bucket: %w", id, err))
			}
		}
	}
	for name, c := range byName {
		set, expired := m.set(name)
		if set == nil {
			continue // not ours
		}
		if expired {
			drop(append(partIDs(c.parts), c.stale...))
			delete(m.sent, name)
			continue
		}
		drop(c.stale)
	}
	for _, set := range m.sets {
		des, err := os.ReadDir(set.Dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("statesync: %w", err))
			}
			continue
		}
		for _, de := range des {
			name := de.Name()
			if _, ok := set.Day(name); !ok || de.IsDir() {
				continue
			}
			if _, expired := m.set(name); expired {
				continue
			}
			replaced, err := m.uploadFile(ctx, name, filepath.Join(set.Dir, name), byName[name], final)
			if err != nil {
				errs = append(errs, err)
			}
			drop(replaced)
		}
	}
	return errors.Join(errs...)
}

// uploadFile uploads what the file at path gained, or the whole file as
// a new generation, when due. It returns the blocks a new generation
// replaced.
func (m *DayMirror) uploadFile(ctx context.Context, name, path string, c *fileCopy, final bool) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil // deleted meanwhile (retention)
	}
	now := stamp{fi.Size(), fi.ModTime()}
	sf := m.sent[name]
	if sf == nil && c != nil && c.gen != "" && c.size() <= now.size {
		// Copied before this process started, from this file: it only grew.
		sum, err := crcOf(path, c.size())
		if err != nil {
			return nil, err
		}
		sf = &sentFile{stamp: stamp{size: c.size()}, at: m.now(), gen: c.gen, parts: partIDs(c.parts), base: c.parts[0].to, crc: sum}
		if c.size() == now.size {
			sf.stamp = now
		}
		m.sent[name] = sf
	}
	changed := sf == nil || now != sf.stamp
	// A file that stopped growing (a past day) is left as one block, so
	// a restore reads one per file but for the few still growing.
	quiet := !changed && len(sf.parts) > 1 && m.now().Sub(sf.at) >= quietAfter
	if !changed && !quiet || changed && sf != nil && !final && m.now().Sub(sf.at) < m.minInterval {
		return nil, nil
	}
	whole := quiet || sf == nil || now.size < sf.size || len(sf.parts) >= maxParts || now.size-sf.base > sf.base
	if !whole {
		sum, err := crcOf(path, sf.size)
		if err != nil {
			return nil, err
		}
		whole = sum != sf.crc
	}
	f := File{Name: name, Path: path, Len: now.size}
	gen, crc := fmt.Sprintf("%020d", m.now().UnixNano()), uint32(0)
	if !whole {
		f.Off, f.Len, gen, crc = sf.size, now.size-sf.size, sf.gen, sf.crc
	}
	if f.Len == 0 {
		return nil, nil
	}
	sum := &crcWriter{sum: crc}
	f.Tee = sum
	id := partID(name, gen, f.Off, f.Off+f.Len)
	// A file appended to during the copy may have been copied with half
	// a record at its end: that copy is dropped, the next round retries.
	unchanged := func() error {
		if fi, err := os.Stat(path); err != nil || (stamp{fi.Size(), fi.ModTime()}) != now {
			return fmt.Errorf("statesync: %s changed while being copied; copying it again later", name)
		}
		return nil
	}
	if err := commitBlock(ctx, m.st, id, []File{f}, unchanged); err != nil {
		return nil, err
	}
	var replaced []string
	if whole {
		if sf != nil {
			replaced = sf.parts
		}
		sf = &sentFile{gen: gen, base: now.size}
		m.sent[name] = sf
	}
	sf.stamp, sf.at, sf.parts, sf.crc = now, m.now(), append(sf.parts, id), sum.sum
	return replaced, nil
}

// crcWriter continues a CRC-32C over what is written to it: the CRC of a
// file's prefix goes on over the part copied after it.
type crcWriter struct{ sum uint32 }

func (w *crcWriter) Write(p []byte) (int, error) {
	w.sum = crc32.Update(w.sum, castagnoli, p)
	return len(p), nil
}

// crcOf is the CRC-32C of the file's first n bytes.
func crcOf(path string, n int64) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("statesync: %w", err)
	}
	defer f.Close()
	var w crcWriter
	if _, err := io.Copy(&w, io.NewSectionReader(f, 0, n)); err != nil {
		return 0, fmt.Errorf("statesync: reading %s: %w", path, err)
	}
	return w.sum, nil
}

// Run uploads every interval until ctx ends.
func (m *DayMirror) Run(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func(ctx context.Context) error { return m.Upload(ctx, false) }, m.log, "copying day files to the bucket; retrying later")
}

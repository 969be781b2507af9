// Package summaryarchive keeps the summaries of traces whose spans
// retention deleted (trace id, root service and operation, times, span
// and error counts per service, sampling decision), for as long as
// findings are kept. Search then still lists last month's requests, and a
// finding whose trace aged out still links to what the trace was.
//
// The archive is append-only and partitioned by the UTC day of the
// traces' start: one file per day, expiry deletes whole files. A file is
// a header followed by frames, one per expired block: length, CRC-32C and
// the zstd-compressed records. Frames are written whole and fsynced
// before the engine deletes the block, so a crash leaves at most a torn
// last frame, which Open cuts off.
package summaryarchive

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// Entry is one archived trace summary with the sampling decision recorded
// for it ("" when none was). Its shape is engine.ExpiredTrace's, so the
// engine's expiry hook converts without copying field by field.
type Entry struct {
	Summary model.TraceSummary
	Sampled string
}

// Options configure an archive.
type Options struct {
	Dir string
	// Retention is how long summaries are kept, by their trace's start
	// (0: forever).
	Retention time.Duration
	// Now replaces the clock for tests.
	Now    func() time.Time
	Logger *slog.Logger
}

// Archive is the summary archive of one data directory. It is safe for
// concurrent use.
type Archive struct {
	opt Options
	// mu orders appends and expiry against searches, so a search never
	// reads a frame being written. Appends happen once per expired block.
	mu sync.RWMutex
}

const (
	fileExt     = ".tdsa"
	dayLayout   = "2006-01-02"
	frameHeader = 8 // payload length, CRC-32C
	// maxFrame bounds a frame's payload, so a corrupt length cannot make
	// a reader allocate gigabytes.
	maxFrame = 256 << 20
)

var (
	fileMagic = []byte("TDXSA\x01")
	crcTable  = crc32.MakeTable(crc32.Castagnoli)
	encoder   = mustEncoder()
	decoder   = mustDecoder()
)

func mustEncoder() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		panic(err)
	}
	return e
}

func mustDecoder() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))
	if err != nil {
		panic(err)
	}
	return d
}

// Open opens (creating) the archive in opt.Dir. It walks the frame
// headers of every file (a few bytes per expired block, not the data):
// a torn last frame is cut off, a file whose headers are damaged is set
// aside (see repair). Checksums are verified as searches read the frames.
// Only an unusable directory is an error.
func Open(opt Options) (*Archive, error) {
	if opt.Dir == "" {
		return nil, errors.New("summary archive: Options.Dir is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("summary archive: %w", err)
	}
	a := &Archive{opt: opt}
	days, err := a.days()
	if err != nil {
		return nil, err
	}
	for _, d := range days {
		if err := a.checkHeaders(d); err != nil {
			a.opt.Logger.Error("summary archive file unusable", "file", a.path(d), "err", err)
		}
	}
	if err := a.Expire(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Archive) now() time.Time {
	if a.opt.Now != nil {
		return a.opt.Now()
	}
	return time.Now()
}

func (a *Archive) path(day string) string { return filepath.Join(a.opt.Dir, day+fileExt) }

// FileDay is the UTC day of the traces a file of the archive's directory
// holds; false for a name that is not a day file.
func FileDay(name string) (time.Time, bool) {
	day, ok := strings.CutSuffix(name, fileExt)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(dayLayout, day)
	return t, err == nil
}

// days lists the archive's day partitions, oldest first.
func (a *Archive) days() ([]string, error) {
	des, err := os.ReadDir(a.opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("summary archive: %w", err)
	}
	var out []string
	for _, de := range des {
		if _, ok := FileDay(de.Name()); ok && !de.IsDir() {
			out = append(out, strings.TrimSuffix(de.Name(), fileExt))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Append archives entries (one expired block's traces) durably.
func (a *Archive) Append(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	byDay := map[string][]Entry{}
	for _, e := range entries {
		d := dayOf(e.Summary.StartUnixNano)
		byDay[d] = append(byDay[d], e)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, day := range slices.Sorted(maps.Keys(byDay)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := a.appendFrame(day, byDay[day]); err != nil {
			return err
		}
	}
	return a.expireLocked()
}

func dayOf(ns uint64) string { return time.Unix(0, int64(ns)).UTC().Format(dayLayout) }

func (a *Archive) appendFrame(day string, entries []Entry) (err error) {
	name := a.path(day)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("summary archive: %w", cerr)
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	var buf []byte
	if st.Size() == 0 {
		buf = append(buf, fileMagic...)
	}
	payload := encoder.EncodeAll(encodeEntries(entries), nil)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(payload)))
	buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(payload, crcTable))
	buf = append(buf, payload...)
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("summary archive %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("summary archive %s: %w", name, err)
	}
	return nil
}

// Expire deletes the day files wholly older than the retention.
func (a *Archive) Expire() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.expireLocked()
}

func (a *Archive) cutoff() uint64 {
	if a.opt.Retention <= 0 {
		return 0
	}
	return uint64(a.now().Add(-a.opt.Retention).UnixNano())
}

func (a *Archive) expireLocked() error {
	cut := a.cutoff()
	if cut == 0 {
		return nil
	}
	days, err := a.days()
	if err != nil {
		return err
	}
	for _, d := range days {
		t, _ := time.Parse(dayLayout, d)
		if uint64(t.Add(24*time.Hour).UnixNano()) > cut {
			break
		}
		if err := os.Remove(a.path(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("summary archive: expiring %s: %w", d, err)
		}
		_ = os.Remove(a.path(d) + ".corrupt")
	}
	return nil
}

// Bytes is the archive's size on disk.
func (a *Archive) Bytes() int64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	days, _ := a.days()
	var n int64
	for _, d := range days {
		if st, err := os.Stat(a.path(d)); err == nil {
			n += st.Size()
		}
	}
	return n
}

// CorruptError reports a damaged archive file: where, and why.
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("summary archive file %s corrupt at byte %d: %s", e.File, e.Offset, e.Reason)
}

// readFile calls fn with each frame's entries. A frame cut short at the
// end of the file (a crash while appending) ends the file silently; any
// other damage is a *CorruptError, after fn saw the frames before it.
// It returns the length of the valid prefix.
func readFile(name string, fn func([]Entry) error) (int64, error) {
	p, err := os.ReadFile(name)
	if err != nil {
		return 0, fmt.Errorf("summary archive: %w", err)
	}
	if len(p) < len(fileMagic) {
		// A crash right after creating the file.
		return 0, nil
	}
	if !bytes.Equal(p[:len(fileMagic)], fileMagic) {
		return 0, &CorruptError{File: name, Reason: "not a summary archive file (bad header)"}
	}
	off := len(fileMagic)
	var buf []byte
	for off < len(p) {
		if len(p)-off < frameHeader {
			return int64(off), nil
		}
		n := int(binary.LittleEndian.Uint32(p[off:]))
		sum := binary.LittleEndian.Uint32(p[off+4:])
		if n > maxFrame {
			return int64(off), &CorruptError{File: name, Offset: int64(off), Reason: fmt.Sprintf("frame length %d out of range", n)}
		}
		if len(p)-off-frameHeader < n {
			return int64(off), nil
		}
		payload := p[off+frameHeader : off+frameHeader+n]
		if crc32.Checksum(payload, crcTable) != sum {
			return int64(off), &CorruptError{File: name, Offset: int64(off), Reason: "checksum mismatch"}
		}
		buf, err = decoder.DecodeAll(payload, buf[:0])
		if err != nil {
			return int64(off), &CorruptError{File: name, Offset: int64(off), Reason: "decompressing: " + err.Error()}
		}
		entries, err := decodeEntries(buf)
		if err != nil {
			return int64(off), &CorruptError{File: name, Offset: int64(off), Reason: err.Error()}
		}
		if err := fn(entries); err != nil {
			return int64(off), err
		}
		off += frameHeader + n
	}
	return int64(off), nil
}

// checkHeaders walks a day file's frame headers: a torn last frame is cut
// off; damage hands the file to repair.
func (a *Archive) checkHeaders(day string) error {
	name := a.path(day)
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	size := st.Size()
	hdr := make([]byte, max(frameHeader, len(fileMagic)))
	if size < int64(len(fileMagic)) {
		return nil
	}
	if _, err := f.ReadAt(hdr[:len(fileMagic)], 0); err != nil {
		return fmt.Errorf("summary archive %s: %w", name, err)
	}
	if !bytes.Equal(hdr[:len(fileMagic)], fileMagic) {
		return a.repair(day)
	}
	off := int64(len(fileMagic))
	for size-off >= frameHeader {
		if _, err := f.ReadAt(hdr[:frameHeader], off); err != nil {
			return fmt.Errorf("summary archive %s: %w", name, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr))
		if n > maxFrame {
			return a.repair(day)
		}
		if size-off-frameHeader < n {
			break
		}
		off += frameHeader + n
	}
	if off == size {
		return nil
	}
	a.opt.Logger.Warn("summary archive: cutting off a torn last frame (crash while appending)", "file", name, "bytes", size-off)
	if err := os.Truncate(name, off); err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	return nil
}

// repair cuts a torn last frame off a day file, and sets a damaged file
// aside (as .corrupt) keeping its frames before the damage.
func (a *Archive) repair(day string) error {
	name := a.path(day)
	st, err := os.Stat(name)
	if err != nil {
		return fmt.Errorf("summary archive: %w", err)
	}
	valid, rerr := readFile(name, func([]Entry) error { return nil })
	var ce *CorruptError
	switch {
	case rerr == nil && valid == st.Size():
		return nil
	case rerr == nil:
		a.opt.Logger.Warn("summary archive: cutting off a torn last frame (crash while appending)", "file", name, "bytes", st.Size()-valid)
		if err := os.Truncate(name, valid); err != nil {
			return fmt.Errorf("summary archive: %w", err)
		}
		return nil
	case errors.As(rerr, &ce):
		a.opt.Logger.Error("summary archive: damaged file set aside; the summaries before the damage stay searchable",
			"file", name, "set_aside", name+".corrupt", "err", rerr)
		p, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("summary archive: %w", err)
		}
		if err := os.Rename(name, name+".corrupt"); err != nil {
			return fmt.Errorf("summary archive: %w", err)
		}
		if valid <= int64(len(fileMagic)) {
			return nil
		}
		return os.WriteFile(name, p[:valid], 0o644)
	default:
		return rerr
	}
}

// Searchable reports whether the archive can answer q: its conditions
// must be decidable from a summary. Span kinds, span attributes, span
// durations and a status other than error are not.
func Searchable(q *store.Query) bool {
	if len(q.Kinds) > 0 || len(q.Attrs) > 0 || q.MinDuration != 0 || q.MaxDuration != 0 {
		return false
	}
	return q.Status == nil || *q.Status == model.StatusError
}

// Search returns the archived summaries matching q, newest first, at most
// q.Limit (0: all), fragments of one trace archived apart joined. It
// returns nothing for a query Searchable refuses. An operation matches
// the trace's root operation (the archive keeps no other span names). A
// damaged file gives a *CorruptError (wrapped) and no results.
//
// A frame found damaged is logged, its file set aside (see repair) and
// the search run again over what remains: one bad file costs the
// summaries after the damage, not the archive.
func (a *Archive) Search(ctx context.Context, q store.Query) ([]Entry, error) {
	if !Searchable(&q) {
		return nil, nil
	}
	for tries := 0; ; tries++ {
		res, bad, err := a.search(ctx, q)
		if bad == "" || tries >= 3 {
			return res, err
		}
		a.mu.Lock()
		rerr := a.repair(bad)
		a.mu.Unlock()
		if rerr != nil {
			return nil, errors.Join(err, rerr)
		}
	}
}

// search is one pass of Search; bad names a day whose file is damaged.
func (a *Archive) search(ctx context.Context, q store.Query) (_ []Entry, bad string, _ error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	days, err := a.days()
	if err != nil {
		return nil, "", err
	}
	rng := q.Range
	rng.Start = max(rng.Start, a.cutoff())
	var res []Entry
	// Newest day first: a day's traces all start after the older days'
	// ones, so once limit results are in, older days cannot displace them.
	for i := len(days) - 1; i >= 0; i-- {
		from, _ := time.Parse(dayLayout, days[i])
		lo, hi := uint64(from.UnixNano()), uint64(from.Add(24*time.Hour).UnixNano())
		if (rng.End != 0 && lo >= rng.End) || (rng.Start != 0 && hi <= rng.Start) {
			continue
		}
		if q.Limit > 0 && len(res) >= q.Limit {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		day, err := readDay(a.path(days[i]))
		if err != nil {
			err = fmt.Errorf("searching the summary archive: %w", err)
			if ce := (*CorruptError)(nil); errors.As(err, &ce) {
				return nil, days[i], err
			}
			return nil, "", err
		}
		for _, e := range day {
			if rng.Overlaps(e.Summary.StartUnixNano, e.Summary.EndUnixNano) && match(&q, &e.Summary) {
				res = append(res, e)
			}
		}
	}
	sortNewestFirst(res)
	if q.Limit > 0 && len(res) > q.Limit {
		res = res[:q.Limit]
	}
	return res, "", nil
}

// Merge joins the answers of several archives (the nodes of a cluster
// each archive the blocks they expire, so one trace may be in several):
// fragments of one trace joined, newest first, at most limit (0: all).
func Merge(parts [][]Entry, limit int) []Entry {
	var j joiner
	for _, es := range parts {
		j.add(es)
	}
	out := j.out
	sortNewestFirst(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// joiner collects entries, fragments of one trace joined.
type joiner struct {
	byID map[model.TraceID]int
	out  []Entry
}

func (j *joiner) add(es []Entry) {
	if j.byID == nil {
		j.byID = map[model.TraceID]int{}
	}
	for _, e := range es {
		if i, ok := j.byID[e.Summary.TraceID]; ok {
			j.out[i] = join(j.out[i], e)
			continue
		}
		j.byID[e.Summary.TraceID] = len(j.out)
		j.out = append(j.out, e)
	}
}

func sortNewestFirst(es []Entry) {
	slices.SortFunc(es, func(x, y Entry) int {
		return cmp.Or(cmp.Compare(y.Summary.StartUnixNano, x.Summary.StartUnixNano),
			bytes.Compare(x.Summary.TraceID[:], y.Summary.TraceID[:]))
	})
}

// readDay reads a day file's entries, fragments of one trace joined.
func readDay(name string) ([]Entry, error) {
	var j joiner
	_, err := readFile(name, func(es []Entry) error {
		j.add(es)
		return nil
	})
	return j.out, err
}

// match decides q's summary-level conditions (see Searchable).
func match(q *store.Query, s *model.TraceSummary) bool {
	if len(q.TraceIDs) > 0 && !slices.Contains(q.TraceIDs, s.TraceID) {
		return false
	}
	d := s.DurationNano()
	if (q.MinTraceDuration != 0 && d < q.MinTraceDuration) || (q.MaxTraceDuration != 0 && d > q.MaxTraceDuration) {
		return false
	}
	if q.Operation != "" && (s.RootName != q.Operation || (q.Service != "" && s.RootService != q.Service)) {
		return false
	}
	wantErr := q.Status != nil
	if q.Service == "" {
		return !wantErr || s.ErrorCount > 0
	}
	for _, sv := range s.Services {
		if sv.Name == q.Service && (!wantErr || sv.ErrorCount > 0) {
			return true
		}
	}
	return false
}

// join merges two archived fragments of one trace (blocks expired apart).
func join(a, b Entry) Entry {
	s, t := a.Summary, b.Summary
	out := s
	out.Services = slices.Clone(s.Services)
	if t.RootName != "" && (s.RootName == "" || t.StartUnixNano < s.StartUnixNano) {
		out.RootService, out.RootName = t.RootService, t.RootName
	}
	out.StartUnixNano = min(s.StartUnixNano, t.StartUnixNano)
	out.EndUnixNano = max(s.EndUnixNano, t.EndUnixNano)
	out.SpanCount += t.SpanCount
	out.ErrorCount += t.ErrorCount
	for _, sv := range t.Services {
		if i := slices.IndexFunc(out.Services, func(x model.ServiceStats) bool { return x.Name == sv.Name }); i >= 0 {
			out.Services[i].SpanCount += sv.SpanCount
			out.Services[i].ErrorCount += sv.ErrorCount
		} else {
			out.Services = append(out.Services, sv)
		}
	}
	return Entry{Summary: out, Sampled: cmp.Or(a.Sampled, b.Sampled)}
}

// encodeEntries writes entries as varint records; zstd then folds the
// repeated service and operation names.
func encodeEntries(es []Entry) []byte {
	p := binary.AppendUvarint(nil, uint64(len(es)))
	str := func(s string) {
		p = binary.AppendUvarint(p, uint64(len(s)))
		p = append(p, s...)
	}
	for i := range es {
		s := &es[i].Summary
		p = append(p, s.TraceID[:]...)
		p = binary.AppendUvarint(p, s.StartUnixNano)
		p = binary.AppendUvarint(p, s.DurationNano())
		p = binary.AppendUvarint(p, uint64(s.SpanCount))
		p = binary.AppendUvarint(p, uint64(s.ErrorCount))
		str(s.RootService)
		str(s.RootName)
		str(es[i].Sampled)
		p = binary.AppendUvarint(p, uint64(len(s.Services)))
		for _, sv := range s.Services {
			str(sv.Name)
			p = binary.AppendUvarint(p, uint64(sv.SpanCount))
			p = binary.AppendUvarint(p, uint64(sv.ErrorCount))
		}
	}
	return p
}

type decodeBuf struct {
	p   []byte
	err error
}

func (d *decodeBuf) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err = io.ErrUnexpectedEOF
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decodeBuf) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.p)) {
		d.err = io.ErrUnexpectedEOF
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}

func (d *decodeBuf) str() string { return string(d.bytes(d.uvarint())) }

func decodeEntries(p []byte) ([]Entry, error) {
	d := &decodeBuf{p: p}
	n := d.uvarint()
	// Every record takes more than 16 bytes: a larger count is damage.
	if n > uint64(len(p))/16 {
		return nil, fmt.Errorf("record count %d out of range", n)
	}
	out := make([]Entry, 0, n)
	for range n {
		var e Entry
		s := &e.Summary
		copy(s.TraceID[:], d.bytes(16))
		s.StartUnixNano = d.uvarint()
		s.EndUnixNano = s.StartUnixNano + d.uvarint()
		s.SpanCount = int(d.uvarint())
		s.ErrorCount = int(d.uvarint())
		s.RootService, s.RootName, e.Sampled = d.str(), d.str(), d.str()
		nsv := d.uvarint()
		if nsv > uint64(len(d.p)) {
			return nil, fmt.Errorf("service count %d out of range", nsv)
		}
		for range nsv {
			s.Services = append(s.Services, model.ServiceStats{Name: d.str(), SpanCount: int(d.uvarint()), ErrorCount: int(d.uvarint())})
		}
		if d.err != nil {
			return nil, fmt.Errorf("decoding records: %w", d.err)
		}
		out = append(out, e)
	}
	return out, nil
}

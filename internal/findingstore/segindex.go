package findingstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"

	"github.com/tracedx/tracedx/internal/model"
)

// A sealed segment has an index file beside it (findings-<t>.idx) so the
// store opens without reading findings: the file starts with the
// segment's metadata (time range, counts by kind, services, a Bloom
// filter of trace ids), which is all the store keeps in memory, and ends
// with one fixed-size record per finding, sorted by time, which queries
// read when the metadata says the segment may hold matches. Records
// carry operation, severity and impact too, so the summary ranks every
// finding of a range by impact without reading the findings themselves.
//
//	magic "TDXFIX02" | u32 metadata length | metadata | records
//	metadata: i64 covered bytes | u32 count | i64 minT | i64 maxT | u64 maxID
//	          | u32 strings, each u16 length + bytes + u32 kind count + u8 is-service
//	          | u32 bloom bytes + bytes
//	record:   i64 t | u64 id | i64 offset | u32 length | u16 kind | u32 service+1 (0: none)
//	          | u8 systemic | [16] trace id | u32 operation+1 (0: none) | u8 severity rank
//	          | f32 impact ms
//
// Since "TDXFIX03" the records are stored transposed (byte j of every
// record, then byte j+1, ...) and zstd-compressed as one frame: times,
// ids and offsets grow slowly and kinds and services repeat, so the
// columns shrink to about a third, while a record's layout stays the
// same. "TDXFIX02" indexes (records as they are) are read as they are.
//
// The index is written to a temporary file, synced and renamed, so it is
// whole or absent; an absent one, or one of an older layout
// ("TDXFIX01", without operation, severity and impact), is rebuilt from
// the segment in the background.

const (
	idxMagic   = "TDXFIX03" // records transposed and compressed
	idxMagic02 = "TDXFIX02" // records as they are
	idxSuffix  = ".idx"
	recordSize = 8 + 8 + 8 + 4 + 2 + 4 + 1 + 16 + 4 + 1 + 4
)

// idxEntry locates one finding in its segment.
type idxEntry struct {
	t        int64
	id       uint64
	off      int64
	n        int32
	kind     uint16 // index into the segment's strings
	service  uint32 // index+1 into the segment's strings; 0: none
	systemic bool
	// rev marks a newer version of a systemic finding written by Update
	// (same id and t): the newest version of an id answers for it.
	rev   bool
	trace model.TraceID
	// For the summary.
	operation uint32 // index+1 into the segment's strings; 0: none
	severity  int8   // analyze.Severity.Rank
	impactMS  float32
}

// segMeta is what the store keeps in memory per sealed segment.
type segMeta struct {
	covered    int64 // bytes of the segment the index covers
	count      int
	minT, maxT int64
	maxID      uint64
	kinds      map[string]int
	services   map[string]bool
	bloom      bloom
	// revs counts, by kind, the records that rewrite a finding (counted
	// in kinds too, so a kind's rewrites are found; Counts leaves them out).
	revs map[string]int
}

// segIndex is the full index of a segment.
type segIndex struct {
	strs    []string
	entries []idxEntry // by (t, id)
}

func (x *segIndex) str(i int) string {
	if i < 0 || i >= len(x.strs) {
		return ""
	}
	return x.strs[i]
}

// indexBuilder collects the index of a segment as findings are appended.
type indexBuilder struct {
	segIndex
	strIdx     map[string]int
	sorted     bool
	minT, maxT int64
	revs       int // entries with rev set
}

func newIndexBuilder() *indexBuilder { return &indexBuilder{strIdx: map[string]int{}, sorted: true} }

func (b *indexBuilder) intern(s string) int {
	if i, ok := b.strIdx[s]; ok {
		return i
	}
	b.strs = append(b.strs, s)
	b.strIdx[s] = len(b.strs) - 1
	return len(b.strs) - 1
}

func (b *indexBuilder) add(st *Stored, off int64, n int32) {
	e := idxEntry{t: st.Time.UnixNano(), id: st.ID, off: off, n: n, systemic: st.Systemic, rev: st.Systemic && st.Revision > 0,
		kind: uint16(b.intern(st.Kind))}
	if st.Service != "" {
		e.service = uint32(b.intern(st.Service)) + 1
	}
	if st.Operation != "" {
		e.operation = uint32(b.intern(st.Operation)) + 1
	}
	e.severity, e.impactMS = int8(st.Severity.Rank()), float32(st.ImpactMS)
	if st.TraceID != "" {
		if id, err := model.ParseTraceID(st.TraceID); err == nil {
			e.trace = id
		}
	}
	if k := len(b.entries); k > 0 && after(&b.entries[k-1], &e) {
		b.sorted = false
	}
	if len(b.entries) == 0 || e.t < b.minT {
		b.minT = e.t
	}
	b.maxT = max(b.maxT, e.t)
	if e.rev {
		b.revs++
	}
	b.entries = append(b.entries, e)
}

// view returns the entries sorted by (t, id); findings arrive out of time
// order (they carry their trace's start), so the sort is lazy.
func (b *indexBuilder) view() *segIndex {
	if !b.sorted {
		sort.Slice(b.entries, func(i, j int) bool { return after(&b.entries[j], &b.entries[i]) })
		b.sorted = true
	}
	return &b.segIndex
}

// after reports whether a sorts after e by (t, id).
func after(a, e *idxEntry) bool { return a.t > e.t || (a.t == e.t && a.id > e.id) }

// meta summarises the index.
func (x *segIndex) meta(covered int64) segMeta {
	m := segMeta{covered: covered, count: len(x.entries), kinds: map[string]int{}, services: map[string]bool{}, bloom: newBloom(len(x.entries))}
	for i := range x.entries {
		e := &x.entries[i]
		if i == 0 || e.t < m.minT {
			m.minT = e.t
		}
		m.maxT = max(m.maxT, e.t)
		m.maxID = max(m.maxID, e.id)
		m.kinds[x.str(int(e.kind))]++
		if e.rev {
			if m.revs == nil {
				m.revs = map[string]int{}
			}
			m.revs[x.str(int(e.kind))]++
		}
		if e.service > 0 {
			m.services[x.str(int(e.service)-1)] = true
		}
		if !e.trace.IsZero() {
			m.bloom.add(e.trace)
		}
	}
	return m
}

// writeIndex writes the index of the segment at path atomically and
// returns where its records start.
func writeIndex(path string, x *segIndex, m *segMeta) (int64, error) {
	var meta []byte
	meta = binary.LittleEndian.AppendUint64(meta, uint64(m.covered))
	meta = binary.LittleEndian.AppendUint32(meta, uint32(m.count))
	meta = binary.LittleEndian.AppendUint64(meta, uint64(m.minT))
	meta = binary.LittleEndian.AppendUint64(meta, uint64(m.maxT))
	meta = binary.LittleEndian.AppendUint64(meta, m.maxID)
	meta = binary.LittleEndian.AppendUint32(meta, uint32(len(x.strs)))
	isService := map[string]bool{}
	for i := range x.entries {
		if s := x.entries[i].service; s > 0 {
			isService[x.str(int(s)-1)] = true
		}
	}
	for _, s := range x.strs {
		meta = binary.LittleEndian.AppendUint16(meta, uint16(len(s)))
		meta = append(meta, s...)
		meta = binary.LittleEndian.AppendUint32(meta, uint32(m.kinds[s]))
		if isService[s] {
			meta = append(meta, 1)
		} else {
			meta = append(meta, 0)
		}
	}
	meta = binary.LittleEndian.AppendUint32(meta, uint32(len(m.bloom)))
	meta = append(meta, m.bloom...)
	// Rewrites by kind come last: a reader that predates them stops at
	// the Bloom filter.
	meta = binary.LittleEndian.AppendUint32(meta, uint32(len(m.revs)))
	for _, k := range slices.Sorted(maps.Keys(m.revs)) {
		meta = binary.LittleEndian.AppendUint16(meta, uint16(len(k)))
		meta = append(meta, k...)
		meta = binary.LittleEndian.AppendUint32(meta, uint32(m.revs[k]))
	}

	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, fmt.Errorf("findingstore: creating index: %w", err)
	}
	w := bufio.NewWriterSize(f, 256<<10)
	_, _ = w.WriteString(idxMagic)
	_ = binary.Write(w, binary.LittleEndian, uint32(len(meta)))
	_, _ = w.Write(meta)
	n := len(x.entries)
	cols := make([]byte, n*recordSize)
	var rec [recordSize]byte
	for i := range x.entries {
		e := &x.entries[i]
		binary.LittleEndian.PutUint64(rec[0:], uint64(e.t))
		binary.LittleEndian.PutUint64(rec[8:], e.id)
		binary.LittleEndian.PutUint64(rec[16:], uint64(e.off))
		binary.LittleEndian.PutUint32(rec[24:], uint32(e.n))
		binary.LittleEndian.PutUint16(rec[28:], e.kind)
		binary.LittleEndian.PutUint32(rec[30:], e.service)
		rec[34] = 0
		if e.systemic {
			rec[34] = 1
		}
		if e.rev {
			rec[34] |= 2
		}
		copy(rec[35:51], e.trace[:])
		binary.LittleEndian.PutUint32(rec[51:], e.operation)
		rec[55] = byte(e.severity)
		binary.LittleEndian.PutUint32(rec[56:], math.Float32bits(e.impactMS))
		for j, b := range rec {
			cols[j*n+i] = b
		}
	}
	_, _ = w.Write(zEnc.EncodeAll(cols, nil))
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("findingstore: writing index %s: %w", path, err)
	}
	return int64(12 + len(meta)), nil
}

var errBadIndex = errors.New("findingstore: malformed index")

// readMeta reads only the metadata of an index file.
func readMeta(path string) (segMeta, []string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return segMeta{}, nil, 0, err
	}
	defer f.Close()
	var head [12]byte
	if _, err := io.ReadFull(f, head[:]); err != nil || (string(head[:8]) != idxMagic && string(head[:8]) != idxMagic02) {
		return segMeta{}, nil, 0, errBadIndex
	}
	n := binary.LittleEndian.Uint32(head[8:])
	if n > 1<<30 {
		return segMeta{}, nil, 0, errBadIndex
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		return segMeta{}, nil, 0, errBadIndex
	}
	m, strs, err := parseMeta(buf)
	return m, strs, int64(12 + n), err
}

func parseMeta(b []byte) (segMeta, []string, error) {
	r := &byteReader{b: b}
	m := segMeta{kinds: map[string]int{}, services: map[string]bool{}}
	m.covered = int64(r.u64())
	m.count = int(r.u32())
	m.minT, m.maxT = int64(r.u64()), int64(r.u64())
	m.maxID = r.u64()
	strs := make([]string, 0, min(int(r.u32()), len(b)))
	for k := cap(strs); k > 0 && r.err == nil; k-- {
		s := string(r.bytes(int(r.u16())))
		strs = append(strs, s)
		if c := r.u32(); c > 0 {
			m.kinds[s] = int(c)
		}
		if r.u8() == 1 {
			m.services[s] = true
		}
	}
	m.bloom = bloom(append([]byte(nil), r.bytes(int(r.u32()))...))
	if r.err == nil && len(r.b) > 0 {
		for k := int(r.u32()); k > 0 && r.err == nil; k-- {
			kind := string(r.bytes(int(r.u16())))
			if c := r.u32(); c > 0 {
				if m.revs == nil {
					m.revs = map[string]int{}
				}
				m.revs[kind] = int(c)
			}
		}
	}
	if r.err != nil {
		return segMeta{}, nil, errBadIndex
	}
	return m, strs, nil
}

// readIndex reads the records of an index whose metadata ends at off.
func readIndex(path string, strs []string, off int64, count int) (*segIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("findingstore: opening index: %w", err)
	}
	defer f.Close()
	var magic [8]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil {
		return nil, fmt.Errorf("findingstore: reading index %s: %w", path, err)
	}
	var buf []byte
	if string(magic[:]) == idxMagic02 {
		buf = make([]byte, count*recordSize)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("findingstore: reading index %s: %w", path, err)
		}
	} else if buf, err = readPackedRecords(f, off, count); err != nil {
		return nil, fmt.Errorf("findingstore: reading index %s: %w", path, err)
	}
	x := &segIndex{strs: strs, entries: make([]idxEntry, count)}
	for i := range x.entries {
		rec := buf[i*recordSize:]
		e := &x.entries[i]
		e.t = int64(binary.LittleEndian.Uint64(rec[0:]))
		e.id = binary.LittleEndian.Uint64(rec[8:])
		e.off = int64(binary.LittleEndian.Uint64(rec[16:]))
		e.n = int32(binary.LittleEndian.Uint32(rec[24:]))
		e.kind = binary.LittleEndian.Uint16(rec[28:])
		e.service = binary.LittleEndian.Uint32(rec[30:])
		e.systemic, e.rev = rec[34]&1 != 0, rec[34]&2 != 0
		copy(e.trace[:], rec[35:51])
		e.operation = binary.LittleEndian.Uint32(rec[51:])
		e.severity = int8(rec[55])
		e.impactMS = math.Float32frombits(binary.LittleEndian.Uint32(rec[56:]))
	}
	return x, nil
}

// readPackedRecords reads the compressed, transposed records from off to
// the end of the file and returns them as they are laid out one by one.
func readPackedRecords(f *os.File, off int64, count int) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < off {
		return nil, errBadIndex
	}
	z := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(z, off); err != nil {
		return nil, err
	}
	cols, err := zDec.DecodeAll(z, make([]byte, 0, count*recordSize))
	if err != nil {
		return nil, err
	}
	if len(cols) != count*recordSize {
		return nil, errBadIndex
	}
	buf := make([]byte, len(cols))
	for j := 0; j < recordSize; j++ {
		col := cols[j*count : (j+1)*count]
		for i, b := range col {
			buf[i*recordSize+j] = b
		}
	}
	return buf, nil
}

// idxFileBytes is the size of an index file (0 when it cannot be read).
func idxFileBytes(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errBadIndex
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *byteReader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *byteReader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *byteReader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *byteReader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// bloom is a Bloom filter of trace ids: ~10 bits per id and 7 probes, about
// 1 % false positives, so a trace's findings are looked for in the few
// segments that may hold them.
type bloom []byte

const bloomProbes = 7

func newBloom(n int) bloom { return make(bloom, max(8, (n*10+7)/8)) }

func (b bloom) probes(id model.TraceID, fn func(bit uint64) bool) bool {
	h1 := mix(binary.LittleEndian.Uint64(id[:8]) ^ mix(binary.LittleEndian.Uint64(id[8:])))
	h2 := mix(h1) | 1
	m := uint64(len(b)) * 8
	for i := range uint64(bloomProbes) {
		if !fn((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (b bloom) add(id model.TraceID) {
	b.probes(id, func(bit uint64) bool { b[bit/8] |= 1 << (bit % 8); return true })
}

func (b bloom) mayHave(id model.TraceID) bool {
	if len(b) == 0 {
		return false
	}
	return b.probes(id, func(bit uint64) bool { return b[bit/8]&(1<<(bit%8)) != 0 })
}

// mix is SplitMix64's finaliser: trace ids of tests and some SDKs are far
// from random.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

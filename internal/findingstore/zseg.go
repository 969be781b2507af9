package findingstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Sealed segments are compressed: findings repeat most of their text from
// one to the next (statements, services, operations, the fix of a kind),
// and as JSON lines they took a fifth of the bytes of the traces they
// describe. A compressed segment holds the same JSON lines in independent
// zstd frames of about zFrameBytes, each ending at a line end, so reading
// one finding decompresses one frame. Offsets in the index stay those of
// the uncompressed lines, so indexes and every answer are unchanged, and
// segments written before (plain JSON lines) are read as they are.
//
//	"TDXFZ\x01"
//	frame*        zstd frames of whole lines
//	footer        uvarint #frames; per frame uvarint compressed length,
//	              uvarint uncompressed length
//	u32 footer length | "TDXFZ\x01"

const (
	zSuffix     = ".jsonz"
	zFrameBytes = 32 << 10
)

var zMagic = []byte("TDXFZ\x01")

// compressSealed is off only in tests that need segments as earlier
// versions wrote them.
var compressSealed = true

var (
	zEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	zDec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
)

// stem is a segment file's name without its suffix.
func stem(name string) string {
	return strings.TrimSuffix(strings.TrimSuffix(name, segSuffix), zSuffix)
}

// segmentFiles lists the segment files of dir in creation order. A
// segment compressed just before a crash may still have its plain file
// beside it; the compressed one is whole (it is renamed into place only
// once written and synced), so the plain one goes.
func segmentFiles(dir string) ([]string, error) {
	plain, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		return nil, fmt.Errorf("findingstore: listing %s: %w", dir, err)
	}
	packed, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+zSuffix))
	if err != nil {
		return nil, fmt.Errorf("findingstore: listing %s: %w", dir, err)
	}
	isPacked := make(map[string]bool, len(packed))
	for _, name := range packed {
		isPacked[stem(name)] = true
	}
	names := packed
	for _, name := range plain {
		if isPacked[stem(name)] {
			os.Remove(name)
			continue
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return stem(names[i]) < stem(names[j]) })
	return names, nil
}

// openZSegment opens a compressed segment. Its index was written before
// it was compressed, so one is there unless removed by hand; without it,
// the segment is indexed in the background like a plain one.
func (s *Store) openZSegment(name string) (*segment, error) {
	z, err := openZFile(name)
	if err != nil {
		return nil, fmt.Errorf("findingstore: opening %s: %w", name, err)
	}
	seg := &segment{name: name, z: z, size: z.size(), created: time.Unix(0, parseSegTime(name))}
	m, strs, recOff, err := readMeta(seg.idxPath())
	if err == nil && m.covered == seg.size {
		s.adoptIndex(seg, m, strs, recOff)
		return seg, nil
	}
	if err := s.withoutIndex(seg, z, err); err != nil {
		z.Close()
		return nil, err
	}
	return seg, nil
}

// compress replaces a just sealed plain segment by its compressed form:
// at once while the store closes, else in the background (a full segment
// is ~100 MB of JSON, seconds of CPU that Put and queries must not wait
// for). The caller holds mu.
func (s *Store) compress(seg *segment) {
	if seg.f == nil || seg.size == 0 || !compressSealed {
		return
	}
	if s.closed {
		s.packed(seg, seg.f, s.pack(seg.name, seg.f, seg.size))
		return
	}
	s.packWG.Add(1)
	seg.packing = true
	go func(name string, f *os.File, size int64) {
		defer s.packWG.Done()
		z := s.pack(name, f, size)
		s.mu.Lock()
		defer s.mu.Unlock()
		seg.packing = false
		s.packed(seg, f, z)
	}(seg.name, seg.f, seg.size)
}

// pack writes the compressed form of a plain segment and opens it (nil on
// failure: the plain segment and its index are whole and stay in use).
func (s *Store) pack(name string, f *os.File, size int64) *zFile {
	dst := stem(name) + zSuffix
	err := compressSegment(f, size, dst)
	var z *zFile
	if err == nil {
		z, err = openZFile(dst)
	}
	if err == nil && z.size() != size {
		z.Close()
		err = fmt.Errorf("compressed %d bytes of findings, want %d: %w", z.size(), size, errZCorrupt)
	}
	if err != nil {
		os.Remove(dst)
		s.log.Warn("compressing findings segment", "file", name, "err", err)
		return nil
	}
	if d, err := os.Open(s.opt.Dir); err == nil {
		_ = d.Sync() // the rename is durable before the plain file goes
		d.Close()
	}
	return z
}

// packed switches seg from its plain file f to z and removes f's file,
// unless retention dropped the segment meanwhile. The caller holds mu.
func (s *Store) packed(seg *segment, f *os.File, z *zFile) {
	if z == nil {
		return
	}
	if seg.f != f || !slices.Contains(s.segs, seg) {
		z.Close()
		os.Remove(z.f.Name())
		return
	}
	plain := seg.name
	seg.f.Close()
	seg.f, seg.z, seg.name = nil, z, z.f.Name()
	if err := os.Remove(plain); err != nil {
		s.log.Warn("removing compressed findings segment's plain file", "file", plain, "err", err)
	}
}

// compressSegment writes the JSON lines of src (size bytes) as a
// compressed segment at dst, durably (temporary file, fsync, rename),
// reading and compressing one frame at a time.
func compressSegment(src io.ReaderAt, size int64, dst string) (err error) {
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 256<<10)
	if _, err := w.Write(zMagic); err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(src, 0, size), 256<<10)
	var frame, out, foot []byte
	frames := 0
	flush := func() error {
		out = zEnc.EncodeAll(frame, out[:0])
		foot = binary.AppendUvarint(foot, uint64(len(out)))
		foot = binary.AppendUvarint(foot, uint64(len(frame)))
		frames++
		frame = frame[:0]
		_, err := w.Write(out)
		return err
	}
	for {
		line, rerr := r.ReadSlice('\n')
		if rerr == bufio.ErrBufferFull {
			rerr = nil // a line longer than the buffer: the rest follows
		}
		frame = append(frame, line...)
		if len(frame) >= zFrameBytes && len(line) > 0 && line[len(line)-1] == '\n' {
			if err := flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading the segment: %w", rerr)
		}
	}
	if len(frame) > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	tail := binary.AppendUvarint(nil, uint64(frames))
	tail = append(tail, foot...)
	tail = binary.LittleEndian.AppendUint32(tail, uint32(len(tail)))
	tail = append(tail, zMagic...)
	if _, err := w.Write(tail); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// zFile reads a compressed segment at the offsets of its uncompressed
// lines.
type zFile struct {
	f       *os.File
	disk    int64
	zOff    []int64 // file offset of each frame, plus the end of the last
	rawOff  []int64 // uncompressed offset of each frame, plus the total
	mu      sync.Mutex
	last    int // frame held in buf (-1: none)
	buf     []byte
	scratch []byte
}

func openZFile(name string) (*zFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	z, err := readZFooter(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return z, nil
}

var errZCorrupt = errors.New("corrupt compressed findings segment")

func readZFooter(f *os.File) (*zFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	tail := int64(4 + len(zMagic))
	if size < int64(len(zMagic))+tail {
		return nil, errZCorrupt
	}
	t := make([]byte, tail)
	if _, err := f.ReadAt(t, size-tail); err != nil {
		return nil, err
	}
	if !bytes.Equal(t[4:], zMagic) {
		return nil, errZCorrupt
	}
	fl := int64(binary.LittleEndian.Uint32(t))
	if fl > size-tail-int64(len(zMagic)) {
		return nil, errZCorrupt
	}
	foot := make([]byte, fl)
	if _, err := f.ReadAt(foot, size-tail-fl); err != nil {
		return nil, err
	}
	next := func() int64 {
		v, k := binary.Uvarint(foot)
		if k <= 0 {
			foot = nil
			return -1
		}
		foot = foot[k:]
		return int64(v)
	}
	n := next()
	if n < 0 || n > fl {
		return nil, errZCorrupt
	}
	z := &zFile{f: f, disk: size, last: -1, zOff: []int64{int64(len(zMagic))}, rawOff: []int64{0}}
	for i := int64(0); i < n; i++ {
		zl, rl := next(), next()
		if zl < 0 || rl < 0 {
			return nil, errZCorrupt
		}
		z.zOff = append(z.zOff, z.zOff[len(z.zOff)-1]+zl)
		z.rawOff = append(z.rawOff, z.rawOff[len(z.rawOff)-1]+rl)
	}
	if z.zOff[len(z.zOff)-1] != size-tail-fl {
		return nil, errZCorrupt
	}
	return z, nil
}

// size is the length of the uncompressed lines.
func (z *zFile) size() int64 { return z.rawOff[len(z.rawOff)-1] }

// frame returns frame i decompressed; the caller holds mu.
func (z *zFile) frame(i int) ([]byte, error) {
	if i == z.last {
		return z.buf, nil
	}
	n := z.zOff[i+1] - z.zOff[i]
	if int64(cap(z.scratch)) < n {
		z.scratch = make([]byte, n)
	}
	zb := z.scratch[:n]
	if _, err := z.f.ReadAt(zb, z.zOff[i]); err != nil {
		return nil, err
	}
	raw, err := zDec.DecodeAll(zb, z.buf[:0])
	if err != nil {
		z.last = -1
		return nil, fmt.Errorf("frame %d: %w", i, err)
	}
	if int64(len(raw)) != z.rawOff[i+1]-z.rawOff[i] {
		z.last = -1
		return nil, fmt.Errorf("frame %d: %w", i, errZCorrupt)
	}
	z.buf, z.last = raw, i
	return raw, nil
}

// ReadAt reads uncompressed bytes, frame by frame.
func (z *zFile) ReadAt(p []byte, off int64) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	read := 0
	for read < len(p) {
		pos := off + int64(read)
		if pos >= z.size() {
			return read, io.EOF
		}
		i := sort.Search(len(z.rawOff)-1, func(i int) bool { return z.rawOff[i+1] > pos })
		raw, err := z.frame(i)
		if err != nil {
			return read, err
		}
		read += copy(p[read:], raw[pos-z.rawOff[i]:])
	}
	return read, nil
}

func (z *zFile) Close() error { return z.f.Close() }

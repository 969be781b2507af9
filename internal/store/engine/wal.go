package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tracedx/tracedx/internal/ratelog"
	"github.com/tracedx/tracedx/internal/store"
)

// WAL layout: dir/wal/<seq as 16 hex digits>.log. A segment is a sequence of
// records, each
//
//	u32 little-endian payload length | u32 CRC-32C of payload | payload
//
// and a payload is a batch of framed spans (one Write call). A single
// goroutine appends records: it takes every request queued while the
// previous fsync ran, writes them with one write(2) and makes them durable
// with one fdatasync(2) (group commit), then wakes all their writers.
//
// An fdatasync costs about 100 µs of CPU on ext4 whatever it carries, as
// much as ingesting 20 spans. A node of a cluster that receives a third
// of each batch got its requests one at a time and synced nearly every
// one alone (1.1-1.3 records per sync). So while writes are concurrent
// (a recent sync carried more than one record), a record that finds no
// other queued waits for more before its sync: as long as the last sync
// took, and at most Options.WALGroupWait (1 ms by default), so a request
// waits about one sync more at worst. A lone writer never waits: its
// syncs carry one record each.

const walRecordHeader = 8

// defaultGroupWait bounds how long a lone record waits for others.
const defaultGroupWait = time.Millisecond

// maxGroupBytes bounds the records one sync makes durable.
const maxGroupBytes = 16 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errWALClosed = errors.New("wal closed")

type walReq struct {
	p      []byte
	rotate bool // start a new segment after the records queued before this one
	seq    uint64
	done   chan error
}

// segmentFile is the WAL's seam to the file system: tests inject write
// and fsync errors (ENOSPC) through it without filling a disk.
type segmentFile interface {
	Write(p []byte) (int, error)
	Datasync() error
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
	Close() error
}

type osSegment struct{ *os.File }

func (f osSegment) Datasync() error { return fdatasync(f.File) }

func createSegment(path string) (segmentFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osSegment{f}, nil
}

type wal struct {
	dir      string
	segBytes int64
	log      *slog.Logger
	create   func(path string) (segmentFile, error)

	reqs chan *walReq
	stop chan struct{}
	wg   sync.WaitGroup

	// Loop only: lastSync is how long the last write and sync took;
	// shared has a bit per recent sync, set when it carried more than
	// one record (the newest in bit 0); groupWait caps the wait for
	// more records (≤ 0: no wait).
	lastSync  time.Duration
	shared    uint8
	groupWait time.Duration
	groupT    *time.Timer

	mu      sync.Mutex // guards segs, cur* fields seen by other goroutines
	segs    []uint64
	cur     segmentFile
	curSeq  uint64
	curSize int64
	// needNew (loop only): the current segment may end in a torn or
	// unsynced record, so the next write starts a new segment.
	needNew bool
	errLog  ratelog.Limiter

	bytes    atomic.Int64 // total bytes of all segments
	fsyncs   atomic.Uint64
	records  atomic.Uint64
	failures atomic.Uint64
}

func segName(seq uint64) string { return fmt.Sprintf("%016x.log", seq) }

func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal dir: %w", err)
	}
	var segs []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".log"), 16, 64)
		if err != nil {
			continue
		}
		segs = append(segs, seq)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	return segs, nil
}

// replayWAL reads every record of every segment in order. A record that is
// cut short or fails its checksum ends the segment: it is the tail of a
// write that was never acknowledged (the process died before fsync
// returned), so the segment is truncated there.
func replayWAL(dir string, log *slog.Logger, fn func(seq uint64, payload []byte) error) ([]uint64, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	for _, seq := range segs {
		path := filepath.Join(dir, segName(seq))
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read wal segment %s: %w", path, err)
		}
		off := 0
		for off < len(data) {
			if len(data)-off < walRecordHeader {
				break
			}
			n := int(binary.LittleEndian.Uint32(data[off:]))
			sum := binary.LittleEndian.Uint32(data[off+4:])
			if n > len(data)-off-walRecordHeader {
				break
			}
			payload := data[off+walRecordHeader : off+walRecordHeader+n]
			if crc32.Checksum(payload, crcTable) != sum {
				break
			}
			if err := fn(seq, payload); err != nil {
				return nil, fmt.Errorf("replay wal segment %s at offset %d: %w", path, off, err)
			}
			off += walRecordHeader + n
		}
		if off < len(data) {
			log.Warn("truncating torn wal tail", "segment", path, "offset", off, "dropped_bytes", len(data)-off)
			if err := os.Truncate(path, int64(off)); err != nil {
				return nil, fmt.Errorf("truncate torn wal segment %s: %w", path, err)
			}
		}
	}
	return segs, nil
}

// openWAL starts a fresh segment after the existing ones (which must have
// been replayed already).
func openWAL(dir string, segBytes int64, existing []uint64, log *slog.Logger, create func(string) (segmentFile, error), groupWait time.Duration) (*wal, error) {
	if create == nil {
		create = createSegment
	}
	w := &wal{
		dir:       dir,
		segBytes:  segBytes,
		log:       log,
		reqs:      make(chan *walReq, 4096),
		stop:      make(chan struct{}),
		segs:      append([]uint64(nil), existing...),
		create:    create,
		errLog:    ratelog.Limiter{Every: 10 * time.Second},
		groupWait: groupWait,
	}
	var total int64
	for _, s := range existing {
		if fi, err := os.Stat(filepath.Join(dir, segName(s))); err == nil {
			total += fi.Size()
		}
	}
	w.bytes.Store(total)
	next := uint64(1)
	if len(existing) > 0 {
		next = existing[len(existing)-1] + 1
	}
	if err := w.openSegment(next); err != nil {
		return nil, err
	}
	w.wg.Add(1)
	go w.loop()
	return w, nil
}

func (w *wal) openSegment(seq uint64) error {
	f, err := w.create(filepath.Join(w.dir, segName(seq)))
	if err != nil {
		return fmt.Errorf("create wal segment: %w", err)
	}
	// The new file name must itself be durable before records in it are
	// acknowledged.
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return err
	}
	w.mu.Lock()
	old := w.cur
	w.cur, w.curSeq, w.curSize = f, seq, 0
	w.segs = append(w.segs, seq)
	w.mu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil {
			w.log.Warn("close wal segment", "err", err)
		}
	}
	return nil
}

// append makes p durable and returns the segment it landed in.
func (w *wal) append(ctx context.Context, p []byte) (uint64, error) {
	r := &walReq{p: p, done: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-w.stop:
		return 0, errWALClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once queued the record may be written, so wait for the outcome even if
	// ctx ends: returning early could acknowledge nothing yet leave a record
	// that replays later, which is harmless, but the caller must not assume
	// it was not written.
	err := <-r.done
	return r.seq, err
}

func (w *wal) loop() {
	defer w.wg.Done()
	var batch []*walReq
	var buf []byte
	for {
		batch = batch[:0]
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
		case <-w.stop:
			// Fail whatever is still queued.
			for {
				select {
				case r := <-w.reqs:
					r.done <- errWALClosed
				default:
					return
				}
			}
		}
		batch = w.gather(batch)
		rotate := batch[len(batch)-1].rotate
		buf = buf[:0]
		nrec := 0
		for _, r := range batch {
			if r.rotate {
				continue
			}
			nrec++
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(r.p)))
			buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(r.p, crcTable))
			buf = append(buf, r.p...)
		}
		var err error
		if nrec > 0 {
			start := time.Now()
			err = w.writeSync(buf)
			w.lastSync = time.Since(start)
			w.shared <<= 1
			if nrec > 1 {
				w.shared |= 1
			}
		}
		seq := w.curSeq
		if err == nil {
			w.records.Add(uint64(nrec))
			if w.curSize >= w.segBytes || (rotate && w.curSize > 0) {
				if rerr := w.openSegment(seq + 1); rerr != nil {
					// Keep appending to the current segment; the next
					// rotation tries again.
					w.logFailure("rotate wal segment", rerr)
				}
			}
		}
		for _, r := range batch {
			if r.rotate {
				r.seq = w.curSeq
			} else {
				r.seq = seq
			}
			r.done <- err
		}
		if cap(buf) > 64<<20 {
			buf = nil
		}
	}
}

// gather adds to batch (one request) the requests queued behind it, up
// to a rotation or maxGroupBytes; when it is alone and writes are
// concurrent, those that arrive within the group wait too.
func (w *wal) gather(batch []*walReq) []*walReq {
	size := len(batch[0].p)
	full := func() bool { return size >= maxGroupBytes || batch[len(batch)-1].rotate }
	more := func(r *walReq) {
		batch = append(batch, r)
		size += len(r.p)
	}
	for !full() {
		select {
		case r := <-w.reqs:
			more(r)
			continue
		default:
		}
		break
	}
	wait := min(w.lastSync, w.groupWait)
	if len(batch) > 1 || full() || w.shared == 0 || wait <= 0 {
		return batch
	}
	if w.groupT == nil {
		w.groupT = time.NewTimer(wait)
	} else {
		w.groupT.Reset(wait)
	}
	defer w.groupT.Stop()
	for !full() {
		select {
		case r := <-w.reqs:
			more(r)
		case <-w.groupT.C:
			return batch
		case <-w.stop:
			return batch
		}
	}
	return batch
}

// writeSync appends buf and makes it durable. A failed write or fsync is
// cut off again, so the WAL keeps working once the cause (a full disk)
// is gone: there is no state that needs a restart.
func (w *wal) writeSync(buf []byte) error {
	if w.needNew {
		if err := w.openSegment(w.curSeq + 1); err != nil {
			return w.failure("wal: start segment", err)
		}
		w.needNew = false
	}
	if _, err := w.cur.Write(buf); err != nil {
		w.undo()
		return w.failure("wal write", err)
	}
	if err := w.cur.Datasync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages
		// and forgotten the error, so this file's unsynced tail is
		// unknowable: cut it and continue in a fresh segment. The records
		// acknowledged before were synced, and replay ends a segment at
		// its first bad record.
		w.undo()
		w.needNew = true
		return w.failure("wal fsync", err)
	}
	w.fsyncs.Add(1)
	w.curSize += int64(len(buf))
	w.bytes.Add(int64(len(buf)))
	return nil
}

// undo removes what a failed write may have left after the last
// acknowledged record; when it cannot, the next write starts a new
// segment.
func (w *wal) undo() {
	if err := w.cur.Truncate(w.curSize); err != nil {
		w.needNew = true
		return
	}
	if _, err := w.cur.Seek(w.curSize, io.SeekStart); err != nil {
		w.needNew = true
	}
}

// failure counts and logs (rate-limited: under load every request fails
// alike) a failed write and returns it, marked as store.ErrDiskFull when
// the file system is out of space or quota.
func (w *wal) failure(op string, err error) error {
	w.failures.Add(1)
	w.logFailure(op, err)
	if isDiskFull(err) {
		return fmt.Errorf("%s: %w: %w", op, store.ErrDiskFull, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (w *wal) logFailure(op string, err error) {
	if n, ok := w.errLog.Allow(time.Now()); ok {
		w.log.Error("wal write failed; writes are refused until one succeeds", "op", op, "err", err, "failures_since_last_log", n)
	}
}

// isDiskFull reports whether err means no space (ENOSPC) or no quota
// (EDQUOT) left: conditions that pass, unlike a failing device.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// rotateSeg closes the current segment (if it holds anything) so it can be
// deleted once its spans are in blocks, and returns the segment new records
// go to.
func (w *wal) rotateSeg(ctx context.Context) (uint64, error) {
	r := &walReq{rotate: true, done: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-w.stop:
		return 0, errWALClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	err := <-r.done
	return r.seq, err
}

// deleteBefore removes closed segments older than seq.
func (w *wal) deleteBefore(seq uint64) error {
	w.mu.Lock()
	var del []uint64
	keep := w.segs[:0]
	for _, s := range w.segs {
		if s < seq && s != w.curSeq {
			del = append(del, s)
		} else {
			keep = append(keep, s)
		}
	}
	w.segs = keep
	w.mu.Unlock()
	var firstErr error
	for _, s := range del {
		path := filepath.Join(w.dir, segName(s))
		fi, err := os.Stat(path)
		if err == nil {
			w.bytes.Add(-fi.Size())
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) && firstErr == nil {
			firstErr = fmt.Errorf("remove wal segment: %w", err)
		}
	}
	return firstErr
}

func (w *wal) close() error {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != nil {
		err := w.cur.Close()
		w.cur = nil
		return err
	}
	return nil
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

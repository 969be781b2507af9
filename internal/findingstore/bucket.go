package findingstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// With Options.Bucket set, every sealed segment is copied to object
// storage (one block per segment: its findings, its index and a small
// marker), so a node whose disk is lost gets its findings back on its next
// start. The open segment (up to SegmentDuration, an hour) goes there in
// tail parts: every TailInterval (a minute) the bytes it gained since the
// last part become a block "<segment>.tail-<offset>" of their own, with
// an index, which a replica (another node answering for this one while it
// is down) and a restore after a lost disk read like a sealed segment. So
// findings older than about TailInterval are in the bucket even after a
// kill -9. Each byte is uploaded twice (in its part, then in the sealed
// segment) and a segment has at most SegmentDuration/TailInterval parts,
// deleted once the sealed copy is there; sealing more often instead would
// multiply the segments every start and query opens. Retention deletes
// the bucket's copy with the local segment.
const (
	bucketFindings = "findings.jsonl" // a plain segment
	bucketPacked   = "findings.jsonz" // a compressed one (zseg.go)
	bucketIndex    = "index"
	bucketMarker   = "meta.json" // uploaded last: the segment is whole
	tailSep        = ".tail-"    // "<segment>.tail-<offset>": a part of an open segment
	// tailIndex is where a tail part's index is written before its upload
	// (one at a time: tailMu); a leftover is overwritten by the next.
	tailIndex = "tail" + idxSuffix
)

// tailOf returns the segment a tail part's id belongs to.
func tailOf(id string) (string, bool) {
	seg, _, ok := strings.Cut(id, tailSep)
	return seg, ok
}

// bucketMeta is the marker's content.
type bucketMeta struct {
	Count int   `json:"count"`
	MinT  int64 `json:"min_time_unix_nano"`
	MaxT  int64 `json:"max_time_unix_nano"`
	// Packed says the findings are the compressed form (bucketPacked).
	Packed bool `json:"packed,omitempty"`
}

func segID(name string) string { return filepath.Base(stem(name)) }

// bucketTimeout bounds the bucket work done without a caller's context
// (restoring segments in Open, the last upload in Close).
const bucketTimeout = 2 * time.Minute

// restore downloads the segments the bucket holds and the local disk does
// not (a lost disk, a new machine), skipping expired ones, and notes which
// segments the bucket already has.
func (s *Store) restore(ctx context.Context) error {
	ids, err := s.opt.Bucket.List(ctx)
	if err != nil {
		return fmt.Errorf("findingstore: listing segments in the bucket: %w", err)
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	cut := s.opt.Now().Add(-s.opt.Retention).UnixNano()
	restored := 0
	for _, id := range ids {
		if seg, ok := tailOf(id); ok && (listed[seg] || haveLocal(s.opt.Dir, seg)) {
			// The segment itself is here or in the bucket: its tail parts
			// are superseded, to delete (a node) or drop (a replica).
			if !slices.Contains(s.tails[seg], id) {
				s.tails[seg] = append(s.tails[seg], id)
			}
			continue
		}
		s.inBucket[id] = true
		if haveLocal(s.opt.Dir, id) {
			continue
		}
		b, err := s.opt.Bucket.ReadAll(ctx, id, bucketMarker)
		if err != nil {
			return fmt.Errorf("findingstore: reading segment %s from the bucket: %w", id, err)
		}
		var m bucketMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("findingstore: segment %s in the bucket: %w", id, err)
		}
		if m.MaxT < cut {
			s.expired = append(s.expired, id)
			continue
		}
		// The index first: a segment file without its index is indexed
		// again in the background, an index without its segment is junk.
		if err := download(ctx, s.opt.Bucket, id, bucketIndex, filepath.Join(s.opt.Dir, id+idxSuffix)); err != nil {
			return err
		}
		name, local := bucketFindings, filepath.Join(s.opt.Dir, id+segSuffix)
		if m.Packed {
			name, local = bucketPacked, filepath.Join(s.opt.Dir, id+zSuffix)
		}
		if err := download(ctx, s.opt.Bucket, id, name, local); err != nil {
			return err
		}
		restored++
	}
	if restored > 0 {
		s.log.Info("findings segments restored from the bucket", "segments", restored)
	}
	return nil
}

// haveLocal says whether the segment id is on the local disk, plain or
// compressed.
func haveLocal(dir, id string) bool {
	for _, suffix := range []string{segSuffix, zSuffix} {
		if _, err := os.Stat(filepath.Join(dir, id+suffix)); err == nil {
			return true
		}
	}
	return false
}

// UploadTail copies what the open segment gained since its last tail part
// to the bucket as a new part (see the top of this file); Run calls it
// every TailInterval. Without a bucket it does nothing.
func (s *Store) UploadTail(ctx context.Context) error {
	if s.opt.Bucket == nil || s.readOnly {
		return nil
	}
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	s.mu.RLock()
	seg := s.cur
	if seg == nil || s.closed {
		s.mu.RUnlock()
		return nil
	}
	id, name := segID(seg.name), seg.name
	if id != s.tailSeg {
		s.tailSeg, s.tailOff = id, 0
	}
	from, to := s.tailOff, seg.size
	// Strings are only appended, so the part's index shares them.
	x := &segIndex{strs: seg.b.strs[:len(seg.b.strs):len(seg.b.strs)]}
	for _, e := range seg.b.entries {
		if e.off >= from {
			e.off -= from
			x.entries = append(x.entries, e)
		}
	}
	s.mu.RUnlock()
	if to <= from {
		return nil
	}
	sort.Slice(x.entries, func(i, j int) bool { return after(&x.entries[j], &x.entries[i]) })
	m := x.meta(to - from)
	idx := filepath.Join(s.opt.Dir, tailIndex)
	if _, err := writeIndex(idx, x, &m); err != nil {
		return err
	}
	defer os.Remove(idx)
	// A file of its own: sealing may compress the segment and remove its
	// plain file meanwhile, which an open file outlives.
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil // sealed and compressed: UploadSealed copies it whole
	}
	if err != nil {
		return fmt.Errorf("findingstore: reading the open segment's tail: %w", err)
	}
	defer f.Close()
	part := fmt.Sprintf("%s%s%020d", id, tailSep, from)
	if err := upload(ctx, s.opt.Bucket, part, io.NewSectionReader(f, from, to-from), idx, bucketMeta{m.count, m.minT, m.maxT, false}); err != nil {
		return err
	}
	s.mu.Lock()
	s.tails[id] = append(s.tails[id], part)
	s.mu.Unlock()
	s.tailOff = to
	return nil
}

func download(ctx context.Context, st blockio.Storage, id, name, path string) error {
	f, err := st.Open(ctx, id, name)
	if err != nil {
		return fmt.Errorf("findingstore: opening %s/%s in the bucket: %w", id, name, err)
	}
	defer f.Close()
	tmp := path + ".download"
	out, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("findingstore: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(f, 0, f.Size()))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("findingstore: downloading %s/%s: %w", id, name, err)
	}
	return nil
}

// UploadSealed copies the sealed segments the bucket does not hold yet
// and deletes the bucket's copies of expired ones; Run calls it
// periodically. Without a bucket it does nothing.
func (s *Store) UploadSealed(ctx context.Context) error {
	if s.opt.Bucket == nil || s.readOnly {
		return nil
	}
	type todo struct {
		id, seg, idx string
		meta         bucketMeta
	}
	s.mu.RLock()
	var up []todo
	for _, seg := range s.segs {
		// A segment being compressed goes in its final form, next round.
		if id := segID(seg.name); seg != s.cur && seg.indexed && !seg.packing && !s.inBucket[id] {
			up = append(up, todo{id, seg.name, seg.idxPath(), bucketMeta{seg.meta.count, seg.meta.minT, seg.meta.maxT, seg.z != nil}})
		}
	}
	expired := s.expired
	s.mu.RUnlock()
	var errs []error
	for _, u := range up {
		if err := uploadFile(ctx, s.opt.Bucket, u.id, u.seg, u.idx, u.meta); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // expired or compressed meanwhile: next round
			}
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		s.inBucket[u.id] = true
		s.mu.Unlock()
	}
	errs = append(errs, s.deleteSupersededTails(ctx))
	var left []string
	for _, id := range expired {
		if err := s.opt.Bucket.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("findingstore: deleting expired segment %s from the bucket: %w", id, err))
			left = append(left, id)
		}
	}
	s.mu.Lock()
	s.expired = append(left, s.expired[len(expired):]...)
	for _, id := range expired {
		delete(s.inBucket, id)
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// deleteSupersededTails deletes the tail parts of segments whose sealed
// copy is in the bucket.
func (s *Store) deleteSupersededTails(ctx context.Context) error {
	s.mu.RLock()
	done := map[string][]string{}
	for seg, parts := range s.tails {
		if s.inBucket[seg] {
			done[seg] = parts
		}
	}
	s.mu.RUnlock()
	var errs []error
	for seg, parts := range done {
		var left []string
		for _, id := range parts {
			if err := s.opt.Bucket.Delete(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("findingstore: deleting tail part %s from the bucket: %w", id, err))
				left = append(left, id)
			}
		}
		s.mu.Lock()
		// Parts uploaded meanwhile (a tail read just before the seal)
		// stay for the next round.
		if now := s.tails[seg]; len(now) > len(parts) {
			left = append(left, now[len(parts):]...)
		}
		s.tails[seg] = left
		if len(s.tails[seg]) == 0 {
			delete(s.tails, seg)
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// uploadFile uploads a sealed segment's files.
func uploadFile(ctx context.Context, st blockio.Storage, id, segPath, idxPath string, m bucketMeta) error {
	in, err := os.Open(segPath)
	if err != nil {
		return fmt.Errorf("findingstore: uploading segment %s: %w", id, err)
	}
	defer in.Close()
	return upload(ctx, st, id, in, idxPath, m)
}

// upload writes a block of findings (read from findings), the index at
// idxPath and the marker m, which makes it whole.
func upload(ctx context.Context, st blockio.Storage, id string, findings io.Reader, idxPath string, m bucketMeta) error {
	w, err := st.Create(ctx, id)
	if err != nil {
		return fmt.Errorf("findingstore: uploading segment %s: %w", id, err)
	}
	copyTo := func(name string, in io.Reader) error {
		out, err := w.File(name)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	meta, _ := json.Marshal(m)
	name := bucketFindings
	if m.Packed {
		name = bucketPacked
	}
	err = copyTo(name, findings)
	if err == nil {
		var idx *os.File
		if idx, err = os.Open(idxPath); err == nil {
			err = copyTo(bucketIndex, idx)
			idx.Close()
		}
	}
	if err == nil {
		var out io.WriteCloser
		if out, err = w.File(bucketMarker); err == nil {
			_, err = out.Write(meta)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err == nil {
		err = w.Commit()
	}
	if err != nil {
		_ = w.Abort()
		return fmt.Errorf("findingstore: uploading segment %s: %w", id, err)
	}
	return nil
}

package findingstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// With Options.Bucket set, every sealed segment is copied to object
// storage (one block per segment: its findings, its index and a small
// marker), so a node whose disk is lost gets its findings back on its next
// start. The open segment stays local only, like a write-ahead log: what
// it holds is lost with the disk (a segment is sealed at least every
// SegmentDuration). Retention deletes the bucket's copy with the local
// segment.
const (
	bucketFindings = "findings.jsonl" // a plain segment
	bucketPacked   = "findings.jsonz" // a compressed one (zseg.go)
	bucketIndex    = "index"
	bucketMarker   = "meta.json" // uploaded last: the segment is whole
)

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
	cut := s.opt.Now().Add(-s.opt.Retention).UnixNano()
	restored := 0
	for _, id := range ids {
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
		if err := upload(ctx, s.opt.Bucket, u.id, u.seg, u.idx, u.meta); err != nil {
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

func upload(ctx context.Context, st blockio.Storage, id, segPath, idxPath string, m bucketMeta) error {
	w, err := st.Create(ctx, id)
	if err != nil {
		return fmt.Errorf("findingstore: uploading segment %s: %w", id, err)
	}
	copyFile := func(name, path string) error {
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
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
	err = copyFile(name, segPath)
	if err == nil {
		err = copyFile(bucketIndex, idxPath)
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

// Package statesync copies a node's snapshot files (the baselines, the
// cross-trace detectors' state) to object storage and back, so a node
// whose disk is lost starts with what it had learnt rather than from
// nothing. The files are written whole (a temporary file renamed over the
// old one), so a copy read at any time is a complete snapshot.
package statesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/store/blockio"
)

// File is one snapshot file: Name in the bucket, Path on local disk.
type File struct {
	Name, Path string
	// Len, when set, copies only Len bytes from Off: a part of an
	// append-only file, as long as it was when looked at.
	Off, Len int64
	// Tee, when set, is also written the bytes copied (a checksum).
	Tee io.Writer
}

// Mirror keeps the newest copy of a set of files in a bucket: one block
// per upload (blocks are written once), older blocks deleted.
type Mirror struct {
	st    blockio.Storage
	files []File
	log   *slog.Logger
	// sent is the size and modification time of each file at its last
	// upload: an unchanged set is not uploaded again.
	sent map[string]stamp
}

type stamp struct {
	size int64
	mod  time.Time
}

// New returns a mirror of files in st.
func New(st blockio.Storage, files []File, log *slog.Logger) *Mirror {
	return &Mirror{st: st, files: files, log: log.With("component", "statesync"), sent: map[string]stamp{}}
}

const (
	blockPrefix = "state-"
	// marker is the file that makes a block visible in object storage
	// (s3store's default marker name).
	marker = "meta.json"
)

func (m *Mirror) blocks(ctx context.Context) ([]string, error) {
	ids, err := m.st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("statesync: listing the bucket: %w", err)
	}
	slices.Sort(ids) // zero-padded times: oldest first
	return ids, nil
}

// Restore downloads, from the newest copy in the bucket, every file that
// is missing on local disk. Files present locally are kept: they are at
// least as new as the node's last upload.
func (m *Mirror) Restore(ctx context.Context) error {
	ids, err := m.blocks(ctx)
	if err != nil || len(ids) == 0 {
		return err
	}
	latest := ids[len(ids)-1]
	for _, f := range m.files {
		if _, err := os.Stat(f.Path); err == nil {
			continue
		}
		b, err := m.st.ReadAll(ctx, latest, f.Name)
		if err != nil {
			// Not every upload holds every file (a detector that had
			// not written its snapshot yet).
			m.log.Debug("no copy of a state file in the bucket", "file", f.Name, "err", err)
			continue
		}
		if err := writeWhole(f.Path, b); err != nil {
			return err
		}
		m.log.Info("state restored from the bucket", "file", f.Path, "copy", latest)
	}
	return nil
}

func writeWhole(path string, b []byte) error {
	return replaceFile(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// replaceFile writes path through a temporary file beside it, renamed
// over path only when write succeeded, so a failed restore never leaves
// a partial file where the state is read from.
func replaceFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("statesync: %w", err)
	}
	tmp := path + ".restore"
	out, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("statesync: %w", err)
	}
	err = write(out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("statesync: restoring %s: %w", path, err)
	}
	return nil
}

// Upload copies the files when any changed since the last upload, then
// deletes the older copies.
func (m *Mirror) Upload(ctx context.Context) error {
	now := map[string]stamp{}
	changed := false
	for _, f := range m.files {
		fi, err := os.Stat(f.Path)
		if err != nil {
			continue
		}
		now[f.Name] = stamp{fi.Size(), fi.ModTime()}
		changed = changed || m.sent[f.Name] != now[f.Name]
	}
	if !changed {
		return nil
	}
	id := fmt.Sprintf("%s%020d", blockPrefix, time.Now().UnixNano())
	var files []File
	for _, f := range m.files {
		if _, ok := now[f.Name]; ok {
			files = append(files, f)
		}
	}
	if err := commitBlock(ctx, m.st, id, files, nil); err != nil {
		return err
	}
	m.sent = now
	ids, err := m.blocks(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, old := range ids {
		if old < id {
			if err := m.st.Delete(ctx, old); err != nil {
				errs = append(errs, fmt.Errorf("statesync: deleting the older copy %s: %w", old, err))
			}
		}
	}
	return errors.Join(errs...)
}

// commitBlock uploads files as block id, the marker last (object storage
// lists a block once its marker exists). ready, when set, runs before the
// commit and an error from it aborts the block.
func commitBlock(ctx context.Context, st blockio.Storage, id string, files []File, ready func() error) error {
	w, err := st.Create(ctx, id)
	if err != nil {
		return fmt.Errorf("statesync: %w", err)
	}
	for _, f := range files {
		if err = copyInto(w, f, nil); err != nil {
			break
		}
	}
	if err == nil {
		err = copyInto(w, File{Name: marker}, []byte(`{"kind":"tracedx state"}`))
	}
	if err == nil && ready != nil {
		err = ready()
	}
	if err == nil {
		if err = w.Commit(); err != nil {
			err = fmt.Errorf("statesync: uploading %s: %w", id, err)
		}
	}
	if err != nil {
		_ = w.Abort()
	}
	return err
}

// copyInto writes f's file, or data when set, into the block.
func copyInto(w blockio.Writer, f File, data []byte) error {
	var in io.Reader = bytes.NewReader(data)
	if data == nil {
		file, err := os.Open(f.Path)
		if err != nil {
			return fmt.Errorf("statesync: %w", err)
		}
		defer file.Close()
		in = file
		if f.Len > 0 {
			in = io.NewSectionReader(file, f.Off, f.Len)
		}
		if f.Tee != nil {
			in = io.TeeReader(in, f.Tee)
		}
	}
	out, err := w.File(f.Name)
	if err != nil {
		return fmt.Errorf("statesync: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("statesync: copying %s: %w", f.Path, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("statesync: copying %s: %w", f.Path, err)
	}
	return nil
}

// Run uploads every interval until ctx ends.
func (m *Mirror) Run(ctx context.Context, interval time.Duration) {
	every(ctx, interval, m.Upload, m.log, "copying state to the bucket; retrying later")
}

// every runs upload every interval until ctx ends; a failure is logged
// as failed and tried again at the next tick.
func every(ctx context.Context, interval time.Duration, upload func(context.Context) error, log *slog.Logger, failed string) {
	periodic.Run(ctx, interval, upload, func(err error) { log.Warn(failed, "err", err) })
}

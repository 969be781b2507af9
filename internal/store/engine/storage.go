package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// BlockStorage is the seam between the engine and where immutable blocks
// live (see package blockio): LocalStorage below, or object storage
// (internal/store/s3store), without touching ingest or query.
type BlockStorage = blockio.Storage

// BlockWriter writes the files of one block.
type BlockWriter = blockio.Writer

// BlockFile is a random-access file of a block.
type BlockFile = blockio.File

// LocalStorage keeps blocks as directories under Dir. A block is written
// into ".tmp-<id>", every file is fsynced, and the directory is renamed to
// "<id>" (then the parent is fsynced): a crash leaves either no block or a
// complete one.
type LocalStorage struct {
	Dir string
}

// NewLocalStorage creates dir if needed and removes leftovers of
// interrupted writes and deletes.
func NewLocalStorage(dir string) (*LocalStorage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create block dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read block dir: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("remove leftover %s: %w", e.Name(), err)
			}
		}
	}
	return &LocalStorage{Dir: dir}, nil
}

func (l *LocalStorage) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func (l *LocalStorage) Create(ctx context.Context, id string) (BlockWriter, error) {
	tmp := filepath.Join(l.Dir, ".tmp-"+id)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("create block staging dir: %w", err)
	}
	return &localWriter{l: l, id: id, tmp: tmp}, nil
}

func (l *LocalStorage) Open(ctx context.Context, id, name string) (BlockFile, error) {
	f, err := os.Open(filepath.Join(l.Dir, id, name))
	if err != nil {
		return nil, fmt.Errorf("open block file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat block file: %w", err)
	}
	return &localFile{File: f, size: fi.Size()}, nil
}

func (l *LocalStorage) ReadAll(ctx context.Context, id, name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(l.Dir, id, name))
	if err != nil {
		return nil, fmt.Errorf("read block file: %w", err)
	}
	return b, nil
}

func (l *LocalStorage) Delete(ctx context.Context, id string) error {
	// Rename first so a crash mid-delete leaves a dot-dir that the next
	// open cleans up, never a half-deleted block that looks valid.
	src := filepath.Join(l.Dir, id)
	dst := filepath.Join(l.Dir, ".del-"+id)
	if err := os.Rename(src, dst); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete block %s: %w", id, err)
	}
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("delete block %s: %w", id, err)
	}
	return nil
}

func (l *LocalStorage) Size(ctx context.Context, id string) (int64, error) {
	ents, err := os.ReadDir(filepath.Join(l.Dir, id))
	if err != nil {
		return 0, fmt.Errorf("size of block %s: %w", id, err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n, nil
}

type localFile struct {
	*os.File
	size int64
}

func (f *localFile) Size() int64 { return f.size }

type localWriter struct {
	l   *LocalStorage
	id  string
	tmp string
}

type syncCloser struct{ f *os.File }

func (s syncCloser) Write(p []byte) (int, error) { return s.f.Write(p) }
func (s syncCloser) Close() error {
	if err := s.f.Sync(); err != nil {
		s.f.Close()
		return fmt.Errorf("sync block file: %w", err)
	}
	return s.f.Close()
}

func (w *localWriter) File(name string) (io.WriteCloser, error) {
	f, err := os.Create(filepath.Join(w.tmp, name))
	if err != nil {
		return nil, fmt.Errorf("create block file: %w", err)
	}
	return syncCloser{f}, nil
}

func (w *localWriter) Commit() error {
	if err := syncDir(w.tmp); err != nil {
		return err
	}
	if err := os.Rename(w.tmp, filepath.Join(w.l.Dir, w.id)); err != nil {
		return fmt.Errorf("commit block %s: %w", w.id, err)
	}
	return syncDir(w.l.Dir)
}

func (w *localWriter) Abort() error {
	return os.RemoveAll(w.tmp)
}

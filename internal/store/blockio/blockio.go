// Package blockio defines where the storage engine's immutable blocks live:
// a small interface that a local directory and object storage (S3 and
// compatible servers) both implement. It is its own package so that
// backends and the engine's tests can depend on it without depending on
// each other.
package blockio

import (
	"context"
	"io"
)

// Storage holds blocks. A block is a directory-like set of named files
// written once and never modified. Object storage maps it as: List =
// ListObjects under a prefix, Open = ranged GETs behind io.ReaderAt,
// Commit = upload the file that marks a block complete last.
type Storage interface {
	// List returns the ids of committed blocks.
	List(ctx context.Context) ([]string, error)
	// Create starts writing a new block; nothing is visible until Commit.
	Create(ctx context.Context, id string) (Writer, error)
	// Open opens one file of a committed block for random access.
	Open(ctx context.Context, id, name string) (File, error)
	// ReadAll reads one (small) file of a committed block.
	ReadAll(ctx context.Context, id, name string) ([]byte, error)
	// Delete removes a block; readers that already opened its files may
	// finish (local files stay readable while open).
	Delete(ctx context.Context, id string) error
	// Size returns the bytes a block occupies.
	Size(ctx context.Context, id string) (int64, error)
}

// Writer writes the files of one block.
type Writer interface {
	File(name string) (io.WriteCloser, error)
	// Commit makes the whole block durable and visible atomically.
	Commit() error
	// Abort discards a block that was not committed.
	Abort() error
}

// File is a random-access file of a block.
type File interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Range is a byte range of a file: Len bytes from Off.
type Range struct{ Off, Len int64 }

// RangeFetcher is a File on object storage, where every read is a round
// trip: a reader that knows the ranges it is about to read (the pages of a
// trace in each column) has them fetched at once rather than one after the
// other.
type RangeFetcher interface {
	// FetchRanges returns the bytes of each range, in order, fetching
	// those not held locally concurrently. Ranges must not overlap.
	FetchRanges(ctx context.Context, ranges []Range) ([][]byte, error)
}

// Prefetcher is a File on object storage with a cache: a scan about to
// read pages of a column has the file fetch them into its cache at once,
// concurrently, rather than one read-ahead after the other.
type Prefetcher interface {
	// Prefetch caches the ranges not cached yet.
	Prefetch(ctx context.Context, ranges []Range) error
}

// TailKeeper is a File on object storage that can keep its tail on local
// disk: opening a Parquet file reads its footer and page index, at its
// end, a few round trips a block that a restarted node need not pay again.
type TailKeeper interface {
	// KeepTail keeps the bytes from off to the end of the file.
	KeepTail(ctx context.Context, off int64) error
}

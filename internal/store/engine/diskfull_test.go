package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// faultyDisk makes WAL segment writes or fsyncs fail with ENOSPC while
// full is set; a failing write first writes half its bytes, as a disk that
// fills up mid-write does.
type faultyDisk struct {
	full      atomic.Bool
	onFsync   bool // fail the fsync instead of the write
	failCount atomic.Int64
}

type faultySegment struct {
	segmentFile
	d *faultyDisk
}

func (d *faultyDisk) create(path string) (segmentFile, error) {
	if d.full.Load() && !d.onFsync {
		d.failCount.Add(1)
		return nil, &pathError{path, syscall.ENOSPC}
	}
	f, err := createSegment(path)
	if err != nil {
		return nil, err
	}
	return &faultySegment{f, d}, nil
}

// countingHandler counts ERROR records.
type countingHandler struct{ errors atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.errors.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

func (f *faultySegment) Write(p []byte) (int, error) {
	if f.d.full.Load() && !f.d.onFsync {
		f.d.failCount.Add(1)
		n, _ := f.segmentFile.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return f.segmentFile.Write(p)
}

func (f *faultySegment) Datasync() error {
	if f.d.full.Load() && f.d.onFsync {
		f.d.failCount.Add(1)
		return syscall.ENOSPC
	}
	return f.segmentFile.Datasync()
}

// A full disk is a retryable condition, not a broken store: writes fail
// with store.ErrDiskFull (which ingest answers with UNAVAILABLE / 503)
// while it lasts, and succeed again once space is back, without a
// restart; nothing acknowledged is lost and nothing refused reappears.
func TestWALRecoversFromFullDisk(t *testing.T) {
	for _, onFsync := range []bool{false, true} {
		name := "write"
		if onFsync {
			name = "fsync"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			disk := &faultyDisk{onFsync: onFsync}
			o := testOpts(dir)
			o.walCreate = disk.create
			logs := &countingHandler{}
			o.Logger = slog.New(logs)
			e := openT(t, o)
			ctx := context.Background()
			now := uint64(time.Now().UnixNano())
			before := newGen(21).batch(200, now, 1e6)
			refused := newGen(22).batch(200, now, 1e6)
			after := newGen(23).batch(200, now, 1e6)
			if err := e.Write(ctx, before); err != nil {
				t.Fatal(err)
			}
			disk.full.Store(true)
			for range 3 {
				err := e.Write(ctx, refused)
				if !errors.Is(err, store.ErrDiskFull) || !errors.Is(err, store.ErrOverloaded) {
					t.Fatalf("write on a full disk: %v, want store.ErrDiskFull (retryable)", err)
				}
				if err := e.Admit(); !errors.Is(err, store.ErrDiskFull) {
					t.Fatalf("admission on a full disk: %v", err)
				}
				e.diskFullAt.Store(1) // let the next write probe the disk at once
			}
			if disk.failCount.Load() == 0 {
				t.Fatal("the fault was never hit")
			}
			if n := logs.errors.Load(); n != 1 {
				t.Fatalf("%d error lines for 3 failed writes, want 1 (rate-limited)", n)
			}
			disk.full.Store(false)
			if err := e.Write(ctx, after); err != nil {
				t.Fatalf("write after space came back: %v", err)
			}
			if err := e.Admit(); err != nil {
				t.Fatalf("admission after space came back: %v", err)
			}
			if st := e.Stats(); st.DiskFull || st.WALFailuresTotal < 3 {
				t.Fatalf("stats: %+v", st)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			e = openT(t, testOpts(dir))
			defer e.Close()
			checkAllTraces(t, e, append(append([]model.Span(nil), before...), after...))
			if _, err := e.Trace(ctx, refused[0].TraceID, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("a refused write was replayed: %v", err)
			}
		})
	}
}

// The disk budget never deletes blocks to make room for the WAL: with the
// WAL alone over the budget, retention keeps every block and writes are
// refused (retryably) until the WAL is flushed.
func TestDiskBudgetRefusesWritesBeforeDeletingForTheWAL(t *testing.T) {
	dir := t.TempDir()
	o := testOpts(dir)
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	stored := newGen(31).batch(2000, now-3600e9, 1e6)
	if err := e.Write(ctx, stored); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := e.Stats().BlockBytes
	// Head spans, only in the WAL: far more than the blocks.
	for i := range 10 {
		if err := e.Write(ctx, newGen(uint64(40+i)).batch(2000, now, 1e6)); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Stats()
	if st.WALBytes < 2*blocks {
		t.Fatalf("setup: wal %d bytes, blocks %d", st.WALBytes, blocks)
	}
	e.opts.MaxDiskBytes = blocks * 2
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(); got.Blocks != st.Blocks || got.RetentionDeletedTotal != 0 {
		t.Fatalf("blocks deleted to make room for the WAL: %+v", got)
	}
	checkAllTraces(t, e, stored)
	err := e.Write(ctx, newGen(60).batch(10, now, 1e6))
	if !errors.Is(err, store.ErrDiskBudget) || !errors.Is(err, store.ErrOverloaded) {
		t.Fatalf("write over the disk budget: %v, want store.ErrDiskBudget", err)
	}
	if err := e.Admit(); !errors.Is(err, store.ErrDiskBudget) {
		t.Fatalf("admission over the disk budget: %v", err)
	}
}

// Findings (ExtraDiskBytes) count against the budget: retention makes
// room for them by deleting the oldest blocks.
func TestDiskBudgetCountsExtraData(t *testing.T) {
	dir := t.TempDir()
	o := testOpts(dir)
	var extra atomic.Int64
	o.ExtraDiskBytes = extra.Load
	e := openT(t, o)
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	old := newGen(71).batch(2000, now-7200e9, 1e6)
	fresh := newGen(72).batch(2000, now-60e9, 1e6)
	for _, b := range [][]model.Span{old, fresh} {
		if err := e.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := e.Stats()
	e.opts.MaxDiskBytes = st.BlockBytes * 2
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(); got.Blocks != st.Blocks {
		t.Fatalf("within budget, blocks deleted: %+v", got)
	}
	extra.Store(st.BlockBytes)
	if err := e.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Trace(ctx, old[0].TraceID, store.TimeRange{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("oldest block kept although findings filled the budget: %v", err)
	}
	checkAllTraces(t, e, fresh)
}

func TestTraceSpanCount(t *testing.T) {
	e := openT(t, testOpts(t.TempDir()))
	defer e.Close()
	ctx := context.Background()
	now := uint64(time.Now().UnixNano())
	spans := newGen(81).batch(300, now, 1e6)
	id := spans[0].TraceID
	var first, second []model.Span
	for _, s := range spans {
		if s.TraceID == id && len(first) < 2 {
			first = append(first, s)
		} else if s.TraceID == id {
			second = append(second, s)
		}
	}
	if err := e.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Write(ctx, second); err != nil { // in the head, the rest in a block
		t.Fatal(err)
	}
	got, err := e.TraceSpanCount(ctx, id, store.TimeRange{})
	if err != nil || got != len(first)+len(second) {
		t.Fatalf("span count %d (%v), want %d", got, err, len(first)+len(second))
	}
	if n, _ := e.TraceSpanCount(ctx, model.TraceID{9}, store.TimeRange{}); n != 0 {
		t.Fatalf("unknown trace: %d spans", n)
	}
}

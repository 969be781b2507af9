package statesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Days is a directory of append-only files, one per UTC day (the RED and
// service-graph history, the summary archive), whose day is in the file
// name and which retention deletes whole.
type Days struct {
	Dir string
	// Day is the UTC day a file named name holds; false for the files of
	// the directory that are not day files.
	Day func(name string) (time.Time, bool)
	// Retention: a file whose day ended longer than this ago is expired
	// (0: kept forever). It is the owner's rule, so the bucket forgets a
	// day when the local disk does.
	Retention time.Duration
}

// DayMirror keeps a copy of day files in a bucket, one block per file
// (named <file name>~<upload time>). A file that changed is uploaded
// whole, at most once per MinInterval (a day's history file grows all
// day; older days change rarely, when late data arrives), and the older
// copies of it are deleted; expired days are deleted from the bucket.
// What a file gained since its last upload is lost with the disk.
type DayMirror struct {
	st   blockio.Storage
	sets []Days
	// minInterval bounds how often a changing file is uploaded again.
	minInterval time.Duration
	now         func() time.Time
	log         *slog.Logger
	sent        map[string]sentFile
}

type sentFile struct {
	stamp
	at time.Time
}

// NewDayMirror mirrors the day files of sets in st. The sets' file names
// must not collide (they share the bucket's namespace).
func NewDayMirror(st blockio.Storage, sets []Days, minInterval time.Duration, now func() time.Time, log *slog.Logger) *DayMirror {
	if now == nil {
		now = time.Now
	}
	return &DayMirror{st: st, sets: sets, minInterval: minInterval, now: now,
		log: log.With("component", "statesync"), sent: map[string]sentFile{}}
}

const versionSep = "~"

// copies lists the bucket's copies by file name, oldest first.
func (m *DayMirror) copies(ctx context.Context) (map[string][]string, error) {
	ids, err := m.st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("statesync: listing the bucket: %w", err)
	}
	slices.Sort(ids) // zero-padded times: oldest first
	out := map[string][]string{}
	for _, id := range ids {
		if name, _, ok := strings.Cut(id, versionSep); ok {
			out[name] = append(out[name], id)
		}
	}
	return out, nil
}

// set finds the set a file name belongs to and its day's state.
func (m *DayMirror) set(name string) (set *Days, expired bool) {
	for i := range m.sets {
		d, ok := m.sets[i].Day(name)
		if !ok {
			continue
		}
		r := m.sets[i].Retention
		return &m.sets[i], r > 0 && !d.Add(24*time.Hour).After(m.now().Add(-r))
	}
	return nil, false
}

// Restore downloads the newest copy of every unexpired day file that the
// local disk lacks. A file present locally is kept: it is at least as
// long as the node's last upload of it (the files only grow).
func (m *DayMirror) Restore(ctx context.Context) error {
	byName, err := m.copies(ctx)
	if err != nil {
		return err
	}
	restored := 0
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		set, expired := m.set(name)
		if set == nil || expired {
			continue
		}
		path := filepath.Join(set.Dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		ids := byName[name]
		b, err := m.st.ReadAll(ctx, ids[len(ids)-1], name)
		if err != nil {
			return fmt.Errorf("statesync: reading %s from the bucket: %w", name, err)
		}
		if err := writeWhole(path, b); err != nil {
			return err
		}
		if fi, err := os.Stat(path); err == nil {
			// Restored, so in the bucket already.
			m.sent[name] = sentFile{stamp{fi.Size(), fi.ModTime()}, m.now()}
		}
		restored++
	}
	if restored > 0 {
		m.log.Info("day files restored from the bucket", "files", restored)
	}
	return nil
}

// Upload copies the day files that changed since their last upload (all
// of them when final, at shutdown; else those last uploaded MinInterval
// ago or more), deletes the copies they replace, and deletes the copies
// of expired days.
func (m *DayMirror) Upload(ctx context.Context, final bool) error {
	byName, err := m.copies(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, set := range m.sets {
		des, err := os.ReadDir(set.Dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("statesync: %w", err))
			}
			continue
		}
		for _, de := range des {
			name := de.Name()
			if _, ok := set.Day(name); !ok || de.IsDir() {
				continue
			}
			if _, expired := m.set(name); expired {
				continue
			}
			id, err := m.uploadChanged(ctx, File{Name: name, Path: filepath.Join(set.Dir, name)}, final)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if id != "" {
				byName[name] = append(byName[name], id)
			}
		}
	}
	for name, ids := range byName {
		set, expired := m.set(name)
		if set == nil {
			continue // not ours
		}
		old := ids[:len(ids)-1]
		if expired {
			old = ids
		}
		for _, id := range old {
			if err := m.st.Delete(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("statesync: deleting %s from the bucket: %w", id, err))
			}
		}
		if expired {
			delete(m.sent, name)
		}
	}
	return errors.Join(errs...)
}

// uploadChanged uploads f when it is due, returning the new copy's id
// ("" when nothing was uploaded).
func (m *DayMirror) uploadChanged(ctx context.Context, f File, final bool) (string, error) {
	fi, err := os.Stat(f.Path)
	if err != nil {
		return "", nil // deleted meanwhile (retention)
	}
	now, last := stamp{fi.Size(), fi.ModTime()}, m.sent[f.Name]
	if now == last.stamp || (!final && !last.at.IsZero() && m.now().Sub(last.at) < m.minInterval) {
		return "", nil
	}
	at := m.now()
	id := fmt.Sprintf("%s%s%020d", f.Name, versionSep, at.UnixNano())
	f.Len = now.size
	// A file appended to during the copy may have been copied with half
	// a record at its end: that copy is dropped, the next round retries.
	unchanged := func() error {
		if fi, err := os.Stat(f.Path); err != nil || (stamp{fi.Size(), fi.ModTime()}) != now {
			return fmt.Errorf("statesync: %s changed while being copied; copying it again later", f.Name)
		}
		return nil
	}
	if err := commitBlock(ctx, m.st, id, []File{f}, unchanged); err != nil {
		return "", err
	}
	m.sent[f.Name] = sentFile{now, at}
	return id, nil
}

// Run uploads every interval until ctx ends.
func (m *DayMirror) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Upload(ctx, false); err != nil {
				m.log.Warn("copying day files to the bucket; retrying later", "err", err)
			}
		}
	}
}

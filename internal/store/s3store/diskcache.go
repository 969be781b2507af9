package s3store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// diskCache keeps small whole files of blocks (meta and trace index) on
// local disk, so a restarted node opens the bucket's blocks without
// downloading every index again. Blocks never change, so an entry is
// valid until its block is deleted. Bounded by bytes: the least recently
// used files go first.
type diskCache struct {
	dir string
	max int64

	mu    sync.Mutex
	bytes int64
	used  map[string]time.Time // relative path → last use
	sizes map[string]int64
}

func newDiskCache(dir string, max int64) (*diskCache, error) {
	c := &diskCache{dir: dir, max: max, used: map[string]time.Time{}, sizes: map[string]int64{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("s3 storage: create cache dir: %w", err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			return os.Remove(p)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		c.used[rel], c.sizes[rel] = fi.ModTime(), fi.Size()
		c.bytes += fi.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: read cache dir: %w", err)
	}
	return c, nil
}

func cacheRel(id, name string) string { return filepath.Join(id, name) }

// An entry is the file's bytes followed by a trailer: their CRC-32C and
// entryMagic. A disk that flips bits or a file cut short (full disk, an
// operator's edit) fails the check; the entry is then dropped and the file
// fetched again rather than a damaged index failing the block's open.
const entryMagic = "tdxc"

const trailerLen = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// get returns a cached file; ok is false when it is not cached, and bad
// when it was but failed its check (it is removed).
func (c *diskCache) get(id, name string) (b []byte, ok, bad bool) {
	rel := cacheRel(id, name)
	raw, err := os.ReadFile(filepath.Join(c.dir, rel))
	if err != nil {
		return nil, false, false
	}
	n := len(raw) - trailerLen
	if n < 0 || string(raw[len(raw)-4:]) != entryMagic || binary.LittleEndian.Uint32(raw[n:]) != crc32.Checksum(raw[:n], crcTable) {
		c.mu.Lock()
		c.removeLocked(rel)
		c.mu.Unlock()
		return nil, false, true
	}
	c.mu.Lock()
	c.used[rel] = time.Now()
	c.mu.Unlock()
	return raw[:n:n], true, false
}

// put stores a file (write to a temporary name, then rename: a crash
// never leaves a torn entry).
func (c *diskCache) put(id, name string, b []byte) {
	if int64(len(b)) > c.max/4 {
		return
	}
	rel := cacheRel(id, name)
	if err := os.MkdirAll(filepath.Join(c.dir, id), 0o755); err != nil {
		return
	}
	tmp := filepath.Join(c.dir, id, ".tmp-"+name)
	entry := make([]byte, len(b), len(b)+trailerLen)
	copy(entry, b)
	entry = binary.LittleEndian.AppendUint32(entry, crc32.Checksum(b, crcTable))
	entry = append(entry, entryMagic...)
	if err := os.WriteFile(tmp, entry, 0o644); err != nil {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, rel)); err != nil {
		os.Remove(tmp)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.sizes[rel]; ok {
		c.bytes -= old
	}
	c.used[rel], c.sizes[rel] = time.Now(), int64(len(entry))
	c.bytes += int64(len(entry))
	if c.bytes > c.max {
		c.evictLocked()
	}
}

func (c *diskCache) evictLocked() {
	rels := make([]string, 0, len(c.used))
	for r := range c.used {
		rels = append(rels, r)
	}
	sort.Slice(rels, func(i, j int) bool { return c.used[rels[i]].Before(c.used[rels[j]]) })
	for _, r := range rels {
		if c.bytes <= c.max*3/4 {
			break
		}
		c.removeLocked(r)
	}
}

func (c *diskCache) removeLocked(rel string) {
	if err := os.Remove(filepath.Join(c.dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	c.bytes -= c.sizes[rel]
	delete(c.used, rel)
	delete(c.sizes, rel)
	os.Remove(filepath.Dir(filepath.Join(c.dir, rel))) // the block's dir, once empty
}

// drop forgets a deleted block.
func (c *diskCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := id + string(filepath.Separator)
	for r := range c.used {
		if strings.HasPrefix(r, prefix) {
			c.removeLocked(r)
		}
	}
}

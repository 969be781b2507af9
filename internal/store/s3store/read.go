package s3store

import (
	"cmp"
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// readAheadBytes is how much a sequential miss fetches at once, and the
// most one GET of a Prefetch asks for.
const readAheadBytes = 4 << 20

// readAhead is readAheadBytes in chunks, at most a quarter of the range
// cache (a larger read-ahead would evict itself).
func (f *rangeFile) readAhead() int64 {
	return max(min(readAheadBytes, f.s.cfg.CacheBytes/4)/f.s.cfg.ChunkBytes, 1)
}

// rangeFile reads an object by byte ranges of whole chunks, through the
// storage's range cache: Parquet readers issue many small reads near each
// other (footer, page headers, pages), which one chunk GET serves.
type rangeFile struct {
	s        *Storage
	key      string
	id, name string // block and file, for the disk cache
	size     int64
	// tail, when the disk cache held it, is the file from tailOff on:
	// what opening it as Parquet reads (see KeepTail).
	tail    []byte
	tailOff int64
}

func (f *rangeFile) Size() int64  { return f.size }
func (f *rangeFile) Close() error { return nil }

func (f *rangeFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("s3 storage: read %s at negative offset", f.key)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := p
	if rest := f.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	if f.tail != nil && off >= f.tailOff {
		n := copy(want, f.tail[off-f.tailOff:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	cs := f.s.cfg.ChunkBytes
	first, last := off/cs, (off+int64(len(want))-1)/cs
	chunks := make([][]byte, last-first+1)
	// Fetch each run of missing chunks with one GET.
	for c := first; c <= last; {
		if b, ok := f.s.cache.get(f.key, c); ok {
			f.s.m.cacheHits.Inc()
			chunks[c-first] = b
			c++
			continue
		}
		end := c
		for end+1 <= last {
			if _, ok := f.s.cache.peek(f.key, end+1); ok {
				break
			}
			end++
		}
		// A miss right after two cached chunks is a sequential scan (a
		// column read page by page): fetch ahead in the same GET, so a
		// scan costs one round trip per readAhead chunks, not per chunk.
		// (One cached chunk before is not enough: a trace lookup reading
		// a page across a chunk boundary would fetch megabytes it does
		// not need.)
		if f.sequential(c) {
			maxChunk := (f.size - 1) / cs
			for end < c+f.readAhead()-1 && end < maxChunk {
				if _, ok := f.s.cache.peek(f.key, end+1); ok {
					break
				}
				end++
			}
		}
		f.s.m.cacheMisses.Add(float64(end - c + 1))
		got, err := f.fetch(c*cs, min((end+1)*cs, f.size))
		if err != nil {
			return 0, err
		}
		for k := c; k <= end; k++ {
			lo := (k - c) * cs
			b := got[lo:min(lo+cs, int64(len(got)))]
			f.s.cache.put(f.key, k, b)
			if k <= last {
				chunks[k-first] = b
			}
		}
		c = end + 1
	}
	n := 0
	pos := off
	for i, b := range chunks {
		start := pos - (first+int64(i))*cs
		n += copy(want[n:], b[start:])
		pos = off + int64(n)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var _ blockio.TailKeeper = (*rangeFile)(nil)

// KeepTail writes the file from off on, with its size, to the disk cache
// (when the storage has one), so that opening the file after a restart
// costs no request: neither the size's HEAD nor the footer's and page
// index's GETs.
func (f *rangeFile) KeepTail(ctx context.Context, off int64) error {
	if f.s.disk == nil || f.tail != nil || off < 0 || off >= f.size {
		return nil
	}
	e := make([]byte, 8+f.size-off)
	binary.LittleEndian.PutUint64(e, uint64(f.size))
	// Opening the file just read these bytes: they come from the range
	// cache.
	if _, err := f.ReadAt(e[8:], off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("s3 storage: keep tail of %s: %w", f.key, err)
	}
	f.s.disk.put(f.id, tailEntry(f.name), e)
	return ctx.Err()
}

// sequential reports whether the two chunks before c are cached.
func (f *rangeFile) sequential(c int64) bool {
	if c < 2 {
		return false
	}
	_, a := f.s.cache.peek(f.key, c-1)
	_, b := f.s.cache.peek(f.key, c-2)
	return a && b
}

// fetch downloads [start, end) of the object for ReadAt.
func (f *rangeFile) fetch(start, end int64) ([]byte, error) {
	// io.ReaderAt carries no context; requests are bounded by the client's
	// retries.
	return f.fetchCtx(context.Background(), start, end)
}

func (f *rangeFile) fetchCtx(ctx context.Context, start, end int64) ([]byte, error) {
	select {
	case f.s.gets <- struct{}{}:
		defer func() { <-f.s.gets }()
	case <-ctx.Done():
		return nil, fmt.Errorf("s3 storage: read %s: %w", f.key, ctx.Err())
	}
	buf := make([]byte, end-start)
	err := f.s.retry(ctx, "get_range", func() error {
		opts := minio.GetObjectOptions{}
		if err := opts.SetRange(start, end-1); err != nil {
			return err
		}
		obj, err := f.s.client.GetObject(ctx, f.s.cfg.Bucket, f.key, opts)
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = io.ReadFull(obj, buf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: read %s [%d,%d): %w", f.key, start, end, err)
	}
	f.s.m.downloaded.Add(float64(len(buf)))
	return buf, nil
}

// fetchConcurrency bounds the GETs one FetchRanges or Prefetch has in
// flight, maxGetsInFlight those of the whole storage: a search scans up to
// 16 row groups of two blocks at once, each prefetching.
const (
	fetchConcurrency = 16
	maxGetsInFlight  = 64
)

// fetchGap: ranges closer than this are fetched with one GET; sending the
// bytes between them costs less than another request. Measured on MinIO
// for a trace lookup at 1M spans: a gap of 16 KiB made 21 GETs (676 KiB)
// and took 50 ms, 128 KiB 5.6 GETs (1.2 MiB) and 11 ms, 512 KiB 1.5 GETs
// (2.4 MiB) and 8 ms; a chunk's worth keeps the bytes near the pages'.
const fetchGap = 256 << 10

// prefetchGap is fetchGap for Prefetch, whose callers (column scans) ask
// for the pages of a few columns of a row group, some hundred KiB apart.
// Measured with a span-filter search at 2M spans on MinIO (16 KiB
// chunks): 80 GETs and 10.3 MiB without merging, 61 GETs and 12.8 MiB
// with 160 KiB, 30 GETs and 20.4 MiB with 288 KiB. Fewer GETs cost the
// server less (MinIO spent ~1.4 ms of CPU per GET, as much as the
// search's own CPU in all), and a search's GETs past maxGetsInFlight
// wait for a round trip; the bytes of a gap cost the transfer.
const prefetchGap = 160 << 10

var _ blockio.RangeFetcher = (*rangeFile)(nil)

// FetchRanges returns the bytes of the ranges, from the range cache when
// its chunks hold a range, else fetched exactly, nearby ranges in one GET
// and the GETs concurrently: a trace lookup reads a page or two of each of
// ~60 columns, which read one by one through ReadAt cost a round trip
// each, or once two chunks in a row were cached a read-ahead of megabytes
// the lookup does not need. Fetched bytes are not cached: the chunk cache
// is for scans; the engine caches the decoded pages.
func (f *rangeFile) FetchRanges(ctx context.Context, ranges []blockio.Range) ([][]byte, error) {
	out := make([][]byte, len(ranges))
	var todo []int // indexes of ranges to fetch, by offset
	for i, r := range ranges {
		if r.Off < 0 || r.Len < 0 {
			return nil, fmt.Errorf("s3 storage: fetch %s: bad range [%d,+%d)", f.key, r.Off, r.Len)
		}
		end := min(r.Off+r.Len, f.size)
		if b, ok := f.cached(r.Off, end); ok {
			out[i] = b
			continue
		}
		todo = append(todo, i)
	}
	slices.SortFunc(todo, func(a, b int) int { return cmp.Compare(ranges[a].Off, ranges[b].Off) })
	type get struct {
		start, end int64
		parts      []int
	}
	var gets []get
	for _, i := range todo {
		r := ranges[i]
		end := min(r.Off+r.Len, f.size)
		if n := len(gets); n > 0 && r.Off-gets[n-1].end <= fetchGap {
			gets[n-1].end = max(gets[n-1].end, end)
			gets[n-1].parts = append(gets[n-1].parts, i)
			continue
		}
		gets = append(gets, get{r.Off, end, []int{i}})
	}
	err := f.concurrently(ctx, len(gets), func(ctx context.Context, k int) error {
		g := gets[k]
		if g.start >= g.end {
			return nil
		}
		got, err := f.fetchCtx(ctx, g.start, g.end)
		if err != nil {
			return err
		}
		for _, i := range g.parts {
			lo := ranges[i].Off - g.start
			out[i] = got[lo:min(lo+ranges[i].Len, int64(len(got)))]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var _ blockio.Prefetcher = (*rangeFile)(nil)

// Prefetch puts the chunks holding the ranges in the range cache: runs of
// missing chunks less than prefetchGap apart (up to readAhead chunks in
// all) with one GET, the GETs concurrently. The chunks in a gap are
// fetched but not cached: they are other columns' bytes, which would
// evict chunks a reader wants.
func (f *rangeFile) Prefetch(ctx context.Context, ranges []blockio.Range) error {
	cs := f.s.cfg.ChunkBytes
	var need []int64
	for _, r := range ranges {
		end := min(r.Off+r.Len, f.size)
		for c := max(r.Off, 0) / cs; c*cs < end; c++ {
			need = append(need, c)
		}
	}
	slices.Sort(need)
	need = slices.Compact(need)
	type get struct {
		first, n int64   // chunks [first, first+n)
		want     []int64 // the chunks to cache
	}
	var gets []get
	gap := max(prefetchGap/cs, 0)
	for _, c := range need {
		if _, ok := f.s.cache.peek(f.key, c); ok {
			continue
		}
		if n := len(gets); n > 0 {
			g := &gets[n-1]
			if end := g.first + g.n; c-end <= gap && c+1-g.first <= f.readAhead() {
				g.n, g.want = c+1-g.first, append(g.want, c)
				continue
			}
		}
		gets = append(gets, get{first: c, n: 1, want: []int64{c}})
	}
	return f.concurrently(ctx, len(gets), func(ctx context.Context, i int) error {
		g := gets[i]
		f.s.m.cacheMisses.Add(float64(len(g.want)))
		got, err := f.fetchCtx(ctx, g.first*cs, min((g.first+g.n)*cs, f.size))
		if err != nil {
			return err
		}
		for _, c := range g.want {
			lo := (c - g.first) * cs
			f.s.cache.put(f.key, c, got[lo:min(lo+cs, int64(len(got)))])
		}
		return nil
	})
}

// concurrently runs do(0..n-1), fetchConcurrency at a time, and returns
// the first error (cancelling the others' context).
func (f *rangeFile) concurrently(ctx context.Context, n int, do func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, fetchConcurrency)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := do(ctx, i); err != nil {
				cancel()
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// cached returns [start, end) when the range cache holds all its chunks.
func (f *rangeFile) cached(start, end int64) ([]byte, bool) {
	if start >= end {
		return nil, true
	}
	cs := f.s.cfg.ChunkBytes
	buf := make([]byte, 0, end-start)
	for c := start / cs; c <= (end-1)/cs; c++ {
		b, ok := f.s.cache.get(f.key, c)
		if !ok {
			return nil, false
		}
		lo, hi := max(start-c*cs, 0), min(end-c*cs, int64(len(b)))
		buf = append(buf, b[lo:hi]...)
	}
	f.s.m.cacheHits.Inc()
	return buf, true
}

// rangeCache is an LRU of object chunks bounded by bytes.
type rangeCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    *list.List
	m     map[chunkKey]*list.Element
}

type chunkKey struct {
	key string
	n   int64
}

type chunkEntry struct {
	k chunkKey
	b []byte
}

func newRangeCache(max int64) *rangeCache {
	return &rangeCache{max: max, ll: list.New(), m: map[chunkKey]*list.Element{}}
}

func (c *rangeCache) get(key string, n int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[chunkKey{key, n}]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*chunkEntry).b, true
}

// peek looks without refreshing recency.
func (c *rangeCache) peek(key string, n int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[chunkKey{key, n}]
	if !ok {
		return nil, false
	}
	return el.Value.(*chunkEntry).b, true
}

func (c *rangeCache) put(key string, n int64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := chunkKey{key, n}
	if el, ok := c.m[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.m[k] = c.ll.PushFront(&chunkEntry{k: k, b: b})
	c.bytes += int64(len(b))
	for c.bytes > c.max && c.ll.Len() > 1 {
		c.removeLocked(c.ll.Back())
	}
}

func (c *rangeCache) removeLocked(el *list.Element) {
	e := c.ll.Remove(el).(*chunkEntry)
	delete(c.m, e.k)
	c.bytes -= int64(len(e.b))
}

// dropPrefix forgets the chunks of objects under prefix (a deleted block).
func (c *rangeCache) dropPrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		if strings.HasPrefix(el.Value.(*chunkEntry).k.key, prefix) {
			c.removeLocked(el)
		}
		el = next
	}
}

// DropCache empties the range cache (for cold-cache benchmarks and
// operators measuring them).
func (s *Storage) DropCache() {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	s.cache.ll.Init()
	clear(s.cache.m)
	s.cache.bytes = 0
}

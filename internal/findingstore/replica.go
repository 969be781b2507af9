package findingstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tracedx/tracedx/internal/store/blockio"
)

// Replica is a read-only copy of another node's findings, taken from that
// node's area of the bucket (see bucket.go): while the node is down, the
// others answer its share of the findings from it. It holds the node's
// sealed segments and the tail parts of its open one, so after a kill -9
// only the findings of the node's last Options.TailInterval (a minute; none
// after a planned stop) are missing until the node is back; the replica
// sees the bucket's changes one refresh interval late.
type Replica struct {
	s *Store
	// mu serialises refreshes: they alone touch the store's record of
	// what the bucket holds.
	mu sync.Mutex
	// checked is when the last refresh started.
	checked time.Time
	every   time.Duration
}

// OpenReplica opens a replica of the findings in bucket, kept in opt.Dir
// (a cache: segments are downloaded on first use and dropped by
// opt.Retention). The bucket is read again at most every refresh; with 0,
// on every query, queries waiting together sharing one read.
func OpenReplica(opt Options, bucket blockio.Storage, refresh time.Duration) (*Replica, error) {
	if bucket == nil {
		return nil, errors.New("findingstore: a replica needs a bucket")
	}
	opt.Bucket = nil // Open would restore with its own deadline; Refresh does, with the caller's
	s, err := Open(opt)
	if err != nil {
		return nil, err
	}
	s.opt.Bucket, s.readOnly = bucket, true
	return &Replica{s: s, every: refresh}, nil
}

// Refresh downloads the segments the bucket gained since the last refresh
// (when that was longer ago than the refresh interval) and drops expired
// ones. A refresh that started while the caller waited for the one before
// it has read the bucket as of the caller's call, so the caller uses it.
func (r *Replica) Refresh(ctx context.Context) error {
	called := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.checked.IsZero() && (r.checked.After(called) || time.Since(r.checked) < r.every) {
		return nil
	}
	started := time.Now()
	s := r.s
	if err := s.restore(ctx); err != nil {
		return err
	}
	names, err := segmentFiles(s.opt.Dir)
	if err != nil {
		return err
	}
	var unindexed []*segment
	s.mu.Lock()
	for _, name := range names {
		if slices.ContainsFunc(s.segs, func(seg *segment) bool { return stem(seg.name) == stem(name) }) {
			continue
		}
		seg, err := s.openSegment(name)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.segs = append(s.segs, seg)
		if !seg.indexed {
			unindexed = append(unindexed, seg)
		}
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return strings.Compare(stem(a.name), stem(b.name)) })
	// Tail parts whose segment arrived whole would count twice (the node
	// deletes them from the bucket soon after); they go in the same step
	// as it comes, so no answer misses or doubles them.
	clear(s.tails)
	s.dropSegments(func(seg *segment) bool {
		whole, ok := tailOf(segID(seg.name))
		return ok && s.inBucket[whole]
	})
	s.mu.Unlock()
	for _, seg := range unindexed {
		// Segments are uploaded with their index; one whose index did not
		// arrive whole is indexed here, before it answers.
		if err := s.indexSegment(seg); err != nil {
			return err
		}
	}
	s.Prune()
	s.mu.Lock()
	s.expired = nil // the node's own retention deletes them from the bucket
	s.mu.Unlock()
	r.checked = started
	return nil
}

// List is Store.List over the node's sealed findings.
func (r *Replica) List(ctx context.Context, q Query) ([]Stored, error) {
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	return r.s.List(ctx, q)
}

// Summarize is Store.Summarize over the node's sealed findings.
func (r *Replica) Summarize(ctx context.Context, q SummaryQuery) (Summary, error) {
	if err := r.Refresh(ctx); err != nil {
		return Summary{}, err
	}
	return r.s.Summarize(ctx, q)
}

// Answer is the node's answer to GET /api/v1/findings (req), from its
// sealed findings.
func (r *Replica) Answer(req *http.Request) (*ListResponse, error) {
	if err := r.Refresh(req.Context()); err != nil {
		return nil, fmt.Errorf("reading the findings in the bucket: %w", err)
	}
	resp, err := r.s.listAnswer(req)
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// Close closes the replica's files; its cache stays on disk.
func (r *Replica) Close() error { return r.s.Close() }

package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/periodic"
	"github.com/tracedx/tracedx/internal/store"
)

// Several engines (the nodes of a cluster) may share one BlockStorage, an
// S3 bucket. Each keeps its own WAL and head; blocks are common:
//   - Refresh picks up blocks other nodes committed and drops those they
//     deleted (compacted or expired);
//   - Options.OwnsBlock splits compaction and retention between nodes, so
//     each block is compacted and expired by exactly one of them;
//   - PeerTrace and PeerSearch answer for what this node holds that the
//     others may not see yet: its head, and blocks it committed recently
//     (another node lists them at its next Refresh).

// shared is the engine's state for a shared storage.
type shared struct {
	mu      sync.Mutex
	created map[string]bool // blocks this engine wrote: it publishes them itself
	// lateCat lists the level-0 blocks of other engines whose catalog is
	// not in the engine's yet, with when Refresh opened them (see
	// deferCatalog).
	lateCat map[string]time.Time
	// drainMu makes one catalog query at a time read lateCat's catalogs.
	drainMu sync.Mutex
	// catalogsRead counts the blocks' catalogs Refresh and drainCatalogs
	// decoded.
	catalogsRead atomic.Int64
}

// createTracker records the ids of blocks the engine creates, so Refresh
// never opens a block this engine is about to publish.
type createTracker struct {
	BlockStorage
	sh *shared
}

func (c createTracker) Create(ctx context.Context, id string) (BlockWriter, error) {
	c.sh.mu.Lock()
	c.sh.created[id] = true
	c.sh.mu.Unlock()
	return c.BlockStorage.Create(ctx, id)
}

func (c createTracker) Delete(ctx context.Context, id string) error {
	c.sh.mu.Lock()
	delete(c.sh.created, id)
	c.sh.mu.Unlock()
	return c.BlockStorage.Delete(ctx, id)
}

func (e *Engine) createdHere(id string) bool {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	return e.sh.created[id]
}

// owns says whether this engine compacts and expires block b.
func (e *Engine) owns(b *block) bool {
	return e.opts.OwnsBlock == nil || e.opts.OwnsBlock(b.id)
}

func (e *Engine) refreshLoop(ctx context.Context) {
	defer e.wg.Done()
	periodic.Run(ctx, e.opts.RefreshInterval, e.Refresh, func(err error) {
		e.bgErrors.Add(1)
		e.log.Error("refreshing blocks from storage failed", "err", err)
	})
}

// Refresh lists the storage and brings the block set in line with it:
// blocks other engines committed are opened, blocks that disappeared
// (compacted or expired by their owner) are dropped, and so are the inputs
// of a compacted block as soon as it appears.
func (e *Engine) Refresh(ctx context.Context) error {
	start := time.Now()
	ids, err := e.storage.List(ctx)
	if err != nil {
		return err
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	e.mu.RLock()
	known := make(map[string]bool, len(e.blocks))
	for _, b := range e.blocks {
		known[b.id] = true
	}
	e.mu.RUnlock()
	var added []*block
	for _, id := range ids {
		if known[id] || e.createdHere(id) {
			continue
		}
		b, err := openPeerBlock(ctx, e.storage, id)
		if err != nil {
			// Deleted since the listing (compacted meanwhile): the next
			// refresh sees its successor.
			e.log.Warn("opening a block of another node failed", "block", id, "err", err)
			continue
		}
		added = append(added, b)
	}
	gone := map[string]bool{}
	for _, b := range added {
		for _, src := range b.meta.Sources {
			gone[src] = true
		}
	}
	e.mu.Lock()
	var drop []*block
	keep := make([]*block, 0, len(e.blocks)+len(added))
	present := map[string]bool{}
	for _, b := range e.blocks {
		// Only blocks of other owners are dropped: this engine's own
		// compaction and retention remove its blocks themselves (and hold
		// their list reference meanwhile, so dropping one here would
		// release it twice). A block opened after the listing began may be
		// missing from it only because it is newer.
		if !e.owns(b) && (gone[b.id] || (!listed[b.id] && b.opened.Before(start))) {
			drop = append(drop, b)
			continue
		}
		keep = append(keep, b)
		present[b.id] = true
	}
	var fresh []*block
	for _, b := range added {
		if present[b.id] || gone[b.id] {
			b.release()
			continue
		}
		keep = append(keep, b)
		fresh = append(fresh, b)
	}
	sortBlocks(keep)
	e.blocks = keep
	e.mu.Unlock()
	e.sh.mu.Lock()
	for _, b := range drop {
		// Compacted (its successor's catalog holds its own) or expired.
		delete(e.sh.lateCat, b.id)
	}
	for _, b := range fresh {
		if b.meta.Catalog == nil && deferCatalog(b) {
			e.sh.lateCat[b.id] = b.opened
		}
	}
	e.sh.mu.Unlock()
	for _, b := range drop {
		b.release()
	}
	for _, b := range fresh {
		if b.meta.Catalog != nil {
			e.sh.catalogsRead.Add(1)
			e.cat.merge(b.meta.Catalog)
			b.meta.Catalog = nil
		}
	}
	// A level-0 block nobody converts for long (its owner is busy or
	// short of memory) has its catalog read here rather than by the
	// catalog query that would otherwise wait for all of them.
	e.drainCatalogs(ctx, start.Add(-e.lateCatalogAge()))
	// Forget own blocks that another engine deleted (compacted); ids
	// younger than a minute may be blocks still being written.
	e.sh.mu.Lock()
	for id := range e.sh.created {
		if !listed[id] && time.Since(BlockTime(id)) > time.Minute {
			delete(e.sh.created, id)
		}
	}
	e.sh.mu.Unlock()
	if len(drop) > 0 || len(fresh) > 0 {
		e.log.Debug("refreshed blocks", "added", len(fresh), "dropped", len(drop))
	}
	return nil
}

// Catalogs of other engines' level-0 blocks are read late. Each node cuts
// a level-0 block about every FlushInterval, each with the catalog of its
// traces in meta.json (~100 KB at a few thousand spans per second), and
// every other node decoding them all at each Refresh was the largest part
// of what Refresh cost a three-node cluster. Level-0 blocks are converted
// within about CompactInterval, into a block whose catalog is the union of
// theirs: a Refresh opens a level-0 block without its catalog, forgets it
// once it is gone (converted or compacted), and merges the converted
// block's catalog instead. Catalog queries (Services, Operations,
// AttributeNames, AttributeValues) first read the catalogs still
// outstanding, and so do Refreshes for blocks outstanding longer than
// lateCatalogAge, so every answer covers every loaded block as before. A
// compaction this engine runs reads its inputs' catalogs anyway and
// merges those outstanding (mergeCatalogs).

// deferCatalog says whether Refresh leaves the catalog of block b, opened
// without it, to later.
func deferCatalog(b *block) bool { return b.meta.Format == formatL0 && len(b.meta.Sources) == 0 }

// lateCatalogAge is how long a level-0 block's catalog may stay unread
// while no catalog query asks for it: conversion normally takes it first.
func (e *Engine) lateCatalogAge() time.Duration { return max(4*e.opts.CompactInterval, 2*time.Minute) }

// openPeerBlock opens a block another engine committed; the catalog of a
// level-0 block is skipped (left in storage), other blocks' is decoded.
func openPeerBlock(ctx context.Context, st BlockStorage, id string) (*block, error) {
	return openBlockWith(ctx, st, id, func(mj []byte, m *blockMeta) error {
		rest, cat := cutCatalog(mj)
		if err := json.Unmarshal(rest, m); err != nil {
			return err
		}
		if cat != nil && !deferCatalog(&block{meta: *m}) {
			m.Catalog = new(catalogJSON)
			return json.Unmarshal(cat, m.Catalog)
		}
		return nil
	})
}

// cutCatalog splits meta.json as json.Marshal writes it (no spaces) into
// the rest, its catalog's value replaced by null, and that value (nil, with
// mj whole, when it has none). Finding the value's end takes a fraction of
// what encoding/json spends to skip it (it checks the whole input first,
// then skips the value token by token).
func cutCatalog(mj []byte) (rest, cat []byte) {
	const key = `"catalog":{`
	i := bytes.Index(mj, []byte(key))
	if i < 0 {
		return mj, nil
	}
	start := i + len(key) - 1
	depth, inStr := 0, false
	for j := start; j < len(mj); j++ {
		c := mj[j]
		switch {
		case inStr:
			if c == '\\' {
				j++
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth == 0 {
				rest = make([]byte, 0, len(mj)-(j+1-start)+4)
				rest = append(append(append(rest, mj[:start]...), "null"...), mj[j+1:]...)
				return rest, mj[start : j+1]
			}
		}
	}
	return mj, nil // unbalanced: encoding/json reports it
}

// drainCatalogs merges the catalogs outstanding (see deferCatalog) of
// blocks Refresh opened before openedBefore (zero: all) and still loaded.
// One that cannot be read is left for the next call, unless its block is
// gone meanwhile.
func (e *Engine) drainCatalogs(ctx context.Context, openedBefore time.Time) {
	e.sh.drainMu.Lock()
	defer e.sh.drainMu.Unlock()
	e.sh.mu.Lock()
	var ids []string
	for id, at := range e.sh.lateCat {
		if openedBefore.IsZero() || at.Before(openedBefore) {
			ids = append(ids, id)
		}
	}
	e.sh.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	e.mu.RLock()
	loaded := make(map[string]bool, len(e.blocks))
	for _, b := range e.blocks {
		loaded[b.id] = true
	}
	e.mu.RUnlock()
	for _, id := range ids {
		if loaded[id] {
			c, err := readCatalog(ctx, e.storage, id)
			if err != nil {
				e.log.Warn("reading the catalog of another node's block failed", "block", id, "err", err)
				continue
			}
			e.sh.catalogsRead.Add(1)
			if c != nil {
				e.cat.merge(c)
			}
		}
		e.sh.mu.Lock()
		delete(e.sh.lateCat, id)
		e.sh.mu.Unlock()
	}
}

// catalogReady merges every catalog outstanding, for a catalog query.
func (e *Engine) catalogReady(ctx context.Context) { e.drainCatalogs(ctx, time.Time{}) }

// takeLateCatalog reports whether block id's catalog is outstanding, and
// no longer counts it so.
func (e *Engine) takeLateCatalog(id string) bool {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	_, ok := e.sh.lateCat[id]
	delete(e.sh.lateCat, id)
	return ok
}

// readCatalog decodes the catalog in block id's meta.json (nil: none).
func readCatalog(ctx context.Context, st BlockStorage, id string) (*catalogJSON, error) {
	mj, err := st.ReadAll(ctx, id, fileMeta)
	if err != nil {
		return nil, err
	}
	var m struct {
		Catalog *catalogJSON `json:"catalog"`
	}
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, fmt.Errorf("block %s meta: %w", id, err)
	}
	return m.Catalog, nil
}

// peerWindow is how long a block this engine committed is also served to
// peers: longer than their refresh interval, with room for a slow listing.
func (e *Engine) peerWindow() time.Duration {
	return 3*e.opts.RefreshInterval + 10*time.Second
}

// BlockTime is when a block id was made (ids start with the creation time),
// zero for ids of another form.
func BlockTime(id string) time.Time {
	head, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(head, 36, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// RecentBlocks lists the loaded blocks made within d (by the time in their
// ids): what a peer asked for its recent blocks should leave out.
func (e *Engine) RecentBlocks(d time.Duration) []string {
	cut := time.Now().Add(-d)
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []string
	for _, b := range e.blocks {
		if BlockTime(b.id).After(cut) {
			out = append(out, b.id)
		}
	}
	return out
}

// PeerWindow is how far back a peer's blocks count as recent; callers of
// PeerTrace and PeerSearch pass RecentBlocks(PeerWindow()+skew).
func (e *Engine) PeerWindow() time.Duration { return e.peerWindow() }

// peerSnap is the head, the traces being cut, and the blocks this engine
// cut from its head within peerWindow, minus those the asking node has
// loaded. Compaction outputs are left out: their spans are in their
// inputs, which the asking node has loaded or is served as cut blocks
// (compaction picks blocks older than a refresh interval), so serving
// them too would count spans twice. q is the query it is walked for (nil:
// none).
func (e *Engine) peerSnap(exclude map[string]bool, q *store.Query) *snapshot {
	win := e.peerWindow()
	return e.snapWhere(func(b *block) bool {
		return !exclude[b.id] && len(b.meta.Sources) == 0 && time.Since(b.opened) < win && e.createdHere(b.id)
	}, q)
}

// PeerTrace returns the spans of a trace that only this node may hold:
// see peerSnap. ErrNotFound when there are none.
func (e *Engine) PeerTrace(ctx context.Context, id model.TraceID, exclude map[string]bool) ([]model.Span, error) {
	s := e.peerSnap(exclude, nil)
	defer s.release()
	spans, err := s.spans(id)
	if err != nil {
		return nil, fmt.Errorf("peer trace %s: %w", id, err)
	}
	if len(spans) == 0 {
		return nil, store.ErrNotFound
	}
	return spans, nil
}

// PeerSearch searches what only this node may hold (see peerSnap).
func (e *Engine) PeerSearch(ctx context.Context, q store.Query, exclude map[string]bool) ([]model.TraceSummary, error) {
	s := e.peerSnap(exclude, &q)
	defer s.release()
	return s.search(ctx, q)
}

// MergeSummaries combines the summaries of parts of one trace held in
// different places (nodes).
func MergeSummaries(parts []model.TraceSummary) model.TraceSummary { return mergeSummaries(parts) }

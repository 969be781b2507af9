package cluster

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/store"
)

// maxPeerScanTraces bounds the traces one peer names for an unlimited
// scan: its head and recent blocks (seconds to minutes of traffic).
const maxPeerScanTraces = 100_000

// scanAll is an unlimited scan (comparison groups, TraceQL metrics, the
// Jaeger metrics fallback) over the whole cluster, in the engine's order
// (newest trace first) so that a caller stopping after n traces stops at
// the same n as one node holding every trace. The local engine sees the
// blocks in the bucket; each peer names the traces of its head and of its
// recent blocks this node has not loaded. Those traces are read whole
// (merged from every node) and left out of the local scan, which would
// see only the part of them already in a block.
func (s *Store) scanAll(ctx context.Context, q store.Query, fn func(spans []model.Span) error) error {
	remote := s.peerTraces(ctx, q)
	held := make(map[model.TraceID]bool, len(remote))
	for _, r := range remote {
		held[r.TraceID] = true
	}
	next := 0
	stopped := false
	// emitRemote hands fn the peers' traces that start after start, read
	// a chunk at a time concurrently (each read asks every node).
	emitRemote := func(start uint64) error {
		for next < len(remote) && remote[next].StartUnixNano > start {
			end := next
			for end < len(remote) && end-next < scanChunk && remote[end].StartUnixNano > start {
				end++
			}
			traces, err := s.readTraces(ctx, remote[next:end])
			next = end
			if err != nil {
				return err
			}
			for _, spans := range traces {
				if spans == nil || !store.MatchTrace(&q, spans) {
					continue // expired since the peer named it, or no match whole
				}
				if err := fn(spans); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := s.Store.ScanTraces(ctx, q, func(spans []model.Span) error {
		if len(spans) == 0 || held[spans[0].TraceID] {
			return nil
		}
		if err := emitRemote(traceStart(spans)); err != nil {
			stopped = errors.Is(err, store.ErrStop)
			return err
		}
		err := fn(spans)
		stopped = errors.Is(err, store.ErrStop)
		return err
	})
	if err != nil || stopped {
		return err
	}
	if err := emitRemote(0); err != nil && !errors.Is(err, store.ErrStop) {
		return err
	}
	return nil
}

// scanChunk is how many of the peers' traces a scan reads at once.
const scanChunk = 16

// readTraces reads the traces of sums whole, concurrently, in their
// order; a trace gone since (expired) is nil.
func (s *Store) readTraces(ctx context.Context, sums []model.TraceSummary) ([][]model.Span, error) {
	out := make([][]model.Span, len(sums))
	errs := make([]error, len(sums))
	var wg sync.WaitGroup
	for i := range sums {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spans, err := s.Trace(ctx, sums[i].TraceID, store.TimeRange{})
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs[i] = err
				return
			}
			out[i] = spans
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// peerTraces asks every peer for the traces matching q that only it
// holds, newest first; a trace held by several peers is named once.
func (s *Store) peerTraces(ctx context.Context, q store.Query) []model.TraceSummary {
	q.Limit = maxPeerScanTraces
	ex := s.exclude()
	var mu sync.Mutex
	byID := map[model.TraceID]model.TraceSummary{}
	s.fanOut(ctx, "scan", func(ctx context.Context, p *peerClient) error {
		res, err := p.search(ctx, q, ex)
		mu.Lock()
		for _, r := range res {
			if have, ok := byID[r.TraceID]; !ok || r.StartUnixNano < have.StartUnixNano {
				byID[r.TraceID] = r
			}
		}
		mu.Unlock()
		return err
	})
	out := make([]model.TraceSummary, 0, len(byID))
	for _, r := range byID {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartUnixNano > out[j].StartUnixNano })
	return out
}

// traceStart is the earliest start of a trace's spans (the engine orders
// scans by it).
func traceStart(spans []model.Span) uint64 {
	start := spans[0].StartUnixNano
	for i := range spans[1:] {
		start = min(start, spans[i+1].StartUnixNano)
	}
	return start
}

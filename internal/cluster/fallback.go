package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"

	"github.com/tracedx/tracedx/internal/answered"
	"github.com/tracedx/tracedx/internal/findingstore"
)

// A node copies its findings to the bucket (findingstore's bucket copy:
// sealed segments, and the open one's tail every minute), so while it is
// down the others can still answer its share of the findings from there.
// The answers miss only what the node found in its last minute or so.

// Fallback answers for a peer that did not answer, from what it left in
// the bucket.
type Fallback[Req, Resp any] func(ctx context.Context, peer string, req Req) (Resp, error)

// AskPeersOr is AskPeers where a peer that fails is answered by fallback
// (nil: left out, as AskPeers does).
func AskPeersOr[Req, Resp any](ctx context.Context, s *Store, name string, req Req, fallback Fallback[Req, Resp]) []Resp {
	var mu sync.Mutex
	var out []Resp
	s.fanOut(ctx, "part "+name, func(ctx context.Context, p *peerClient) error {
		r, err := askPart[Req, Resp](ctx, p, name, req)
		if err != nil && fallback != nil && ctx.Err() == nil {
			r, err = answerFromBucket(ctx, s.log, s.failure.WithLabelValues(p.peer.ID).Inc, p.peer.ID, "part "+name, err,
				func(ctx context.Context) (Resp, error) { return fallback(ctx, p.peer.ID, req) })
			if err == nil {
				answered.FromBucket(ctx, p.peer.ID)
			}
		}
		if err != nil {
			return err
		}
		mu.Lock()
		out = append(out, r)
		mu.Unlock()
		return nil
	})
	return out
}

// answerFromBucket runs fallback for a peer whose query failed with
// failed; a fallback that answers is logged (and failed counted), one that
// does not joins its error to failed.
func answerFromBucket[Resp any](ctx context.Context, log *slog.Logger, count func(), peer, what string, failed error,
	fallback func(context.Context) (Resp, error)) (Resp, error) {
	r, err := fallback(ctx)
	if err != nil {
		return r, errors.Join(failed, fmt.Errorf("its findings in the bucket: %w", err))
	}
	count()
	log.Warn("peer query failed; answered from the peer's sealed findings in the bucket", "query", what, "peer", peer, "err", failed)
	return r, nil
}

// ListFallback answers a peer's GET /api/v1/findings (the request as
// the asking node got it) from the peer's findings in the bucket.
type ListFallback func(peer string, r *http.Request) (*findingstore.ListResponse, error)

// MergeFindingsOr is MergeFindings where a peer that does not answer is
// answered by fallback. The merged answer names the peers that did not
// answer (unanswered_nodes) and those of them answered from the bucket
// (from_bucket_nodes).
func MergeFindingsOr(next http.Handler, ring *Ring, sec Security, log *slog.Logger, fallback ListFallback) http.Handler {
	return mergeFindings(next, ring, sec, log, fallback)
}

// peerListFailed is the findings list's handling of a peer that did not
// answer: its findings from the bucket when fallback has them, and the
// answer marked either way. It holds mu while changing out.
func peerListFailed(r *http.Request, log *slog.Logger, p Peer, failed error, fallback ListFallback,
	mu *sync.Mutex, out *findingstore.ListResponse) {
	var res *findingstore.ListResponse
	err := failed
	if fallback != nil && r.Context().Err() == nil {
		res, err = answerFromBucket(r.Context(), log, func() {}, p.ID, "findings list", failed,
			func(context.Context) (*findingstore.ListResponse, error) { return fallback(p.ID, r) })
	}
	if err != nil {
		log.Warn("peer findings query failed; answering without them", "peer", p.ID, "err", err)
	}
	mu.Lock()
	defer mu.Unlock()
	out.Unanswered = append(out.Unanswered, p.ID)
	slices.Sort(out.Unanswered)
	answered.Unanswered(r.Context(), p.ID)
	if res != nil {
		answered.FromBucket(r.Context(), p.ID)
		out.Findings = append(out.Findings, fromNode(res.Findings, p.ID)...)
		out.Truncated = out.Truncated || res.Truncated
		out.FromBucket = append(out.FromBucket, p.ID)
		slices.Sort(out.FromBucket)
	}
}

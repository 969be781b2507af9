// Package cluster runs several tracedx nodes as one: a static list of
// peers, a consistent-hash ring that gives every trace one owner node,
// forwarding of spans to their owner, and queries answered from the shared
// bucket plus what each peer holds that the bucket does not show yet.
package cluster

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/tracedx/tracedx/internal/model"
)

// Peer is one node of the cluster.
type Peer struct {
	ID string `yaml:"id"`
	// OTLPGRPC is the node's OTLP/gRPC ingest address: spans of the
	// traces it owns are forwarded there.
	OTLPGRPC string `yaml:"otlp_grpc"`
	// HTTP is the node's HTTP address (the peer query API is there).
	HTTP string `yaml:"http"`
}

// ParsePeers reads the --peers flag: comma-separated
// id=otlp_grpc_addr/http_addr entries.
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addrs, ok := strings.Cut(part, "=")
		grpcAddr, httpAddr, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 || id == "" || grpcAddr == "" || httpAddr == "" {
			return nil, fmt.Errorf("peer %q: want id=otlp_grpc_host:port/http_host:port", part)
		}
		out = append(out, Peer{ID: id, OTLPGRPC: grpcAddr, HTTP: httpAddr})
	}
	return out, nil
}

// vnodes per peer: enough that each node's share of traces stays within a
// few percent of 1/N.
const vnodes = 128

// Ring maps keys to peers by consistent hashing, so adding or removing a
// node moves only about 1/N of the traces.
type Ring struct {
	peers  []Peer
	points []uint64
	owner  []int // parallel to points: index into peers
	self   int
	// first[b] is the index of the first point at or past the start of
	// the b-th of len(first) equal arcs of the hash space: a lookup starts
	// there instead of binary-searching every point. A forwarding node
	// looks up the owner of nearly every span it receives, and the search
	// over 128 points a node (its branches mispredicted on random hashes)
	// was 2-3 % of the cluster's CPU per span.
	first []int32
	shift uint
}

// NewRing builds the ring of peers; self is this node's id and must be
// one of them.
func NewRing(peers []Peer, self string) (*Ring, error) {
	if len(peers) == 0 {
		return nil, fmt.Errorf("cluster: no peers")
	}
	r := &Ring{peers: peers, self: -1}
	seen := map[string]bool{}
	type pt struct {
		h uint64
		i int
	}
	var pts []pt
	for i, p := range peers {
		if seen[p.ID] {
			return nil, fmt.Errorf("cluster: peer id %q listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.ID == self {
			r.self = i
		}
		for v := 0; v < vnodes; v++ {
			pts = append(pts, pt{xxhash.Sum64String(fmt.Sprintf("%s#%d", p.ID, v)), i})
		}
	}
	if r.self < 0 {
		return nil, fmt.Errorf("cluster: node id %q is not in the peer list", self)
	}
	sort.Slice(pts, func(a, b int) bool { return pts[a].h < pts[b].h })
	for _, p := range pts {
		r.points = append(r.points, p.h)
		r.owner = append(r.owner, p.i)
	}
	// Four to eight arcs a point, so a lookup scans less than one point
	// past its arc's first on average.
	arcBits := uint(bits.Len(uint(len(r.points)))) + 2
	r.shift = 64 - arcBits
	r.first = make([]int32, 1<<arcBits)
	i := 0
	for b := range r.first {
		for i < len(r.points) && r.points[i]>>r.shift < uint64(b) {
			i++
		}
		r.first[b] = int32(i)
	}
	return r, nil
}

// lookup is the owner of the first point at or after h, wrapping around.
func (r *Ring) lookup(h uint64) int {
	i := int(r.first[h>>r.shift])
	for i < len(r.points) && r.points[i] < h {
		i++
	}
	if i == len(r.points) {
		i = 0
	}
	return r.owner[i]
}

// Self is this node.
func (r *Ring) Self() Peer { return r.peers[r.self] }

// Others are the other nodes.
func (r *Ring) Others() []Peer {
	out := make([]Peer, 0, len(r.peers)-1)
	for i, p := range r.peers {
		if i != r.self {
			out = append(out, p)
		}
	}
	return out
}

// TraceOwner is the node that stores a trace's spans. The id is hashed:
// load generators and some SDKs make sequential or low-entropy ids, whose
// raw bits would all fall on one arc of the ring.
func (r *Ring) TraceOwner(id model.TraceID) Peer {
	return r.peers[r.lookup(xxhash.Sum64(id[:]))]
}

// ownerIndex is TraceOwner's index in the peer list.
func (r *Ring) ownerIndex(id model.TraceID) int { return r.lookup(xxhash.Sum64(id[:])) }

// OwnedElsewhere reports whether another node owns a trace (ingest's
// ForwardsTrace on a forwarding node).
func (r *Ring) OwnedElsewhere(id model.TraceID) bool {
	return r.lookup(xxhash.Sum64(id[:])) != r.self
}

// OwnsBlock says whether this node compacts and expires a block.
func (r *Ring) OwnsBlock(blockID string) bool {
	return r.lookup(xxhash.Sum64String(blockID)) == r.self
}

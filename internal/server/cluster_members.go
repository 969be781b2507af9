package server

import (
	"context"
	"net/http"
	"time"

	"github.com/tracedx/tracedx/internal/cluster"
)

// probeInterval is how often a node asks its peers whether they answer:
// a node that went away keeps its share of rate limits and alert rules
// for at most this long (and a probe timeout).
const probeInterval = 5 * time.Second

// clusterMembers tracks which nodes of ring answer, probing them in the
// background (nil for a single node).
func (s *Server) clusterMembers(ring *cluster.Ring, peer cluster.Security) *cluster.Members {
	if ring == nil {
		return nil
	}
	m := cluster.NewMembers(ring, peer, s.log)
	s.reg.MustRegister(m.Collectors()...)
	s.background = append(s.background, func(ctx context.Context) { m.Run(ctx, probeInterval) })
	return m
}

// memberRoutes answers the peers' liveness probes.
func memberRoutes(mux *http.ServeMux, ring *cluster.Ring, peer cluster.Security) {
	if ring != nil {
		cluster.RegisterMemberRoutes(mux, peer)
	}
}

// nodeCount is how many nodes share what is split by count (nil for a
// single node).
func nodeCount(m *cluster.Members) func() int {
	if m == nil {
		return nil
	}
	return m.Healthy
}

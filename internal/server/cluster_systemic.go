package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/store"
	"github.com/tracedx/tracedx/internal/systemic"
)

// partSystemic is the part with a node's share of the cross-trace
// patterns judged on the whole cluster's traffic.
const partSystemic = "systemic-share"

// systemicEvalInterval is how often the cross-trace detectors evaluate
// (0: their default); tests shorten it.
var systemicEvalInterval time.Duration

// clusterSystemic has the cross-trace detectors judge the patterns whose
// thresholds count traces or events on every answering node's share
// (internal/systemic merge.go), each finding reported by one node: the
// owner of its key among the nodes that answer, as for alert rules.
// tracedx_systemic_judged_nodes says how many nodes' shares the last
// evaluation judged.
func (s *Server) clusterSystemic(parts *cluster.Parts, st store.Store, sys *systemic.Detector, members *cluster.Members) {
	cs, ok := st.(*cluster.Store)
	if !ok || parts == nil || members == nil {
		return
	}
	var judged atomic.Int64
	judged.Store(1)
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tracedx_systemic_judged_nodes",
		Help: "Nodes whose shares the last evaluation of the cross-trace detectors judged together, this one included: the others' traffic was not counted."},
		func() float64 { return float64(judged.Load()) }))
	cluster.ServePart(parts, partSystemic, func(context.Context, noRequest) (systemic.Share, error) {
		return sys.Share(timeNow()), nil
	})
	sys.SetCluster(systemic.Cluster{
		Owns: members.Owns,
		Peers: func(ctx context.Context) []systemic.Share {
			shares := cluster.AskPeers[noRequest, systemic.Share](ctx, cs, partSystemic, noRequest{})
			judged.Store(int64(len(shares)) + 1)
			return shares
		},
	})
}

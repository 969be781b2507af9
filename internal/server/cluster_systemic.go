package server

import (
	"context"
	"time"

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
func clusterSystemic(parts *cluster.Parts, st store.Store, sys *systemic.Detector, members *cluster.Members) {
	cs, ok := st.(*cluster.Store)
	if !ok || parts == nil || members == nil {
		return
	}
	cluster.ServePart(parts, partSystemic, func(context.Context, noRequest) (systemic.Share, error) {
		return sys.Share(timeNow()), nil
	})
	sys.SetCluster(systemic.Cluster{
		Owns: members.Owns,
		Peers: func(ctx context.Context) []systemic.Share {
			return cluster.AskPeers[noRequest, systemic.Share](ctx, cs, partSystemic, noRequest{})
		},
	})
}

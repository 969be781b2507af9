package server

import (
	"context"
	"net/http"

	"github.com/tracedx/tracedx/internal/alerting"
	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/store"
)

// Names of the alerting parts nodes serve each other.
const (
	partAlerts        = "alerts"
	partAlertRules    = "alert-rules"
	partAlertFindings = "alert-findings"
	partAlertStates   = "alert-states"
)

// noRequest is the request of a part that takes no arguments.
type noRequest struct{}

// clusterAlerts splits the alert rules between the nodes that answer
// (each rule is evaluated, and notified, by one node), lets the node
// evaluating a findings rule count every node's findings (a down node's
// from its copy in the bucket, with down), and merges the
// alert lists (GET /api/v1/alerts, /api/v1/rules) of every node. It
// answers the peers' liveness probes too.
func clusterAlerts(mux *http.ServeMux, parts *cluster.Parts, st store.Store, m *alerting.Manager, members *cluster.Members, peer cluster.Security, down *peerReplicas) {
	cs, ok := st.(*cluster.Store)
	if !ok || members == nil {
		return
	}
	cluster.RegisterMemberRoutes(mux, peer)
	if m == nil || parts == nil {
		return
	}
	cluster.ServePart(parts, partAlerts, func(context.Context, noRequest) (alerting.AlertsView, error) { return m.Alerts(), nil })
	cluster.ServePart(parts, partAlertRules, func(context.Context, noRequest) (alerting.RuleGroups, error) { return m.Rules(), nil })
	cluster.ServePart(parts, partAlertFindings, func(context.Context, noRequest) (alerting.FindingCounts, error) { return m.FindingCounts(), nil })
	cluster.ServePart(parts, partAlertStates, func(context.Context, noRequest) (alerting.OwnerState, error) { return m.OwnerState(), nil })
	// A down node's findings are counted from its copy in the bucket.
	countsFallback := fallback(down, func(ctx context.Context, r *peerReplica, _ noRequest) (alerting.FindingCounts, error) {
		f, err := down.findingsOf(r)
		if err != nil {
			return alerting.FindingCounts{}, err
		}
		return m.CountStored(ctx, f)
	})
	m.SetCluster(alerting.Cluster{
		Owns: members.Owns,
		Alerts: func(ctx context.Context) []alerting.AlertsView {
			return cluster.AskPeers[noRequest, alerting.AlertsView](ctx, cs, partAlerts, noRequest{})
		},
		Rules: func(ctx context.Context) []alerting.RuleGroups {
			return cluster.AskPeers[noRequest, alerting.RuleGroups](ctx, cs, partAlertRules, noRequest{})
		},
		FindingCounts: func(ctx context.Context) []alerting.FindingCounts {
			return cluster.AskPeersOr(ctx, cs, partAlertFindings, noRequest{}, countsFallback)
		},
		States: func(ctx context.Context) []alerting.OwnerState {
			return cluster.AskPeers[noRequest, alerting.OwnerState](ctx, cs, partAlertStates, noRequest{})
		},
	})
}

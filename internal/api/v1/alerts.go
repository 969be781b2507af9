package v1

import (
	"context"
	"net/http"

	"github.com/tracedx/tracedx/internal/alerting"
)

// AlertsSource is the alert manager as the API sees it (in a cluster,
// the alerts of every node).
type AlertsSource interface {
	View(ctx context.Context) alerting.AlertsView
	RuleStates(ctx context.Context) alerting.RuleGroups
}

// rulesResponse is Prometheus' envelope of GET /api/v1/rules.
type rulesResponse struct {
	Status string              `json:"status"`
	Data   alerting.RuleGroups `json:"data"`
}

// AlertRoutes mounts
//
//	GET /api/v1/alerts  firing and pending alerts and the recent history
//	GET /api/v1/rules   the alert rules in Prometheus' rules API shape
func AlertRoutes(src AlertsSource) func(*http.ServeMux) {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("GET /api/v1/alerts", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, src.View(r.Context()))
		})
		mux.HandleFunc("GET /api/v1/rules", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, rulesResponse{Status: "success", Data: src.RuleStates(r.Context())})
		})
	}
}

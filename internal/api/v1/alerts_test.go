package v1

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/alerting"
)

type fixedAlerts struct{}

func (fixedAlerts) View(context.Context) alerting.AlertsView {
	return alerting.AlertsView{Firing: []alerting.Alert{{Rule: "CartErrors", State: alerting.StateFiring,
		Labels: map[string]string{"alertname": "CartErrors", "service": "cart"}}}, Pending: []alerting.Alert{}, History: []alerting.Alert{}}
}

func (fixedAlerts) RuleStates(context.Context) alerting.RuleGroups {
	return alerting.RuleGroups{Groups: []alerting.RuleGroup{{Name: "tracedx", Interval: 15, Rules: []alerting.RuleState{
		{Name: "CartErrors", State: "firing", Health: "ok", Type: "alerting", LastEvaluation: time.Unix(0, 0).UTC()}}}}}
}

// The alert routes answer in their documented shapes: our own for alerts,
// Prometheus' envelope for rules.
func TestAlertRoutes(t *testing.T) {
	srv := newServer(t, Deps{Routes: []func(*http.ServeMux){AlertRoutes(fixedAlerts{})}})
	get := func(path string, out any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	var alerts map[string][]map[string]any
	get("/api/v1/alerts", &alerts)
	if len(alerts["firing"]) != 1 || alerts["firing"][0]["rule"] != "CartErrors" || alerts["pending"] == nil || alerts["history"] == nil {
		t.Errorf("alerts: %v", alerts)
	}
	var rules struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Name     string           `json:"name"`
				Interval float64          `json:"interval"`
				Rules    []map[string]any `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	get("/api/v1/rules", &rules)
	if rules.Status != "success" || len(rules.Data.Groups) != 1 || rules.Data.Groups[0].Interval != 15 {
		t.Fatalf("rules: %+v", rules)
	}
	r := rules.Data.Groups[0].Rules[0]
	for _, k := range []string{"name", "query", "duration", "labels", "annotations", "alerts", "state", "health", "evaluationTime", "lastEvaluation", "type"} {
		if _, ok := r[k]; !ok {
			t.Errorf("rule lacks %q of Prometheus' shape: %v", k, r)
		}
	}
}

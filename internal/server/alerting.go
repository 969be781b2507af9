package server

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/tracedx/tracedx/internal/alerting"
	"github.com/tracedx/tracedx/internal/analyze"
	v1 "github.com/tracedx/tracedx/internal/api/v1"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/rootcause"
)

// alertRulesOf reads and validates the alert rules: the defaults, the
// config's alerting.rules and the rules file. A bad rule stops the server
// before anything is opened.
func alertRulesOf(c config.Alerting) ([]alerting.Rule, error) {
	if !c.Enabled {
		return nil, nil
	}
	var rules []alerting.Rule
	if c.DefaultRules {
		rules = alerting.DefaultRules()
	}
	own, err := alerting.ParseRules(&c.Rules)
	if err != nil {
		return nil, err
	}
	rules = append(rules, own...)
	if c.RulesFile != "" {
		more, err := alerting.LoadRuleFile(c.RulesFile)
		if err != nil {
			return nil, err
		}
		rules = append(rules, more...)
	}
	if err := alerting.Validate(rules); err != nil {
		return nil, fmt.Errorf("alerting: %w", err)
	}
	return rules, nil
}

// alertReceivers builds the Alertmanager and webhook receivers.
func alertReceivers(c config.Alerting) ([]alerting.Receiver, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var out []alerting.Receiver
	for _, u := range c.AlertmanagerURLs {
		am, err := alerting.NewAlertmanager(u, c.ResendInterval, client)
		if err != nil {
			return nil, fmt.Errorf("alerting.alertmanager_urls: %w", err)
		}
		out = append(out, am)
	}
	for i, w := range c.Webhooks {
		wh, err := alerting.NewWebhook(w.URL, w.Secret, client)
		if err != nil {
			return nil, fmt.Errorf("alerting.webhooks[%d]: %w", i, err)
		}
		out = append(out, wh)
	}
	return out, nil
}

// startAlerting builds the alert manager over the RED metrics and the
// findings store, runs it in the background and returns its API routes
// and itself (nil when alerting is off). New findings reach the rules
// through counter.
func (s *Server) startAlerting(rules []alerting.Rule, red alerting.REDReader, findings alerting.FindingsReader, counter *alerting.FindingsCounter,
	rootCause func(ctx context.Context, service, operation string, from, to time.Time) (analyze.Culprit, bool)) (func(*http.ServeMux), *alerting.Manager, error) {
	c := s.cfg.Alerting
	if !c.Enabled {
		return nil, nil, nil
	}
	receivers, err := alertReceivers(c)
	if err != nil {
		return nil, nil, err
	}
	m, err := alerting.New(alerting.Options{
		Rules: rules, Interval: c.Interval, ResendInterval: c.ResendInterval, QueueSize: c.QueueSize,
		Dir: filepath.Join(s.cfg.DataDir, "alerting"), ExternalURL: c.ExternalURL, Receivers: receivers,
		RED: red, Findings: findings, RootCause: rootCause, Registerer: s.reg, Logger: s.log.With("component", "alerting"),
	})
	if err != nil {
		return nil, nil, err
	}
	counter.OnStored(m.ObserveFindings)
	names := make([]string, len(receivers))
	for i, r := range receivers {
		names[i] = r.Name()
	}
	if len(receivers) == 0 {
		s.log.Warn("alerting: no receiver; alerts show in the UI and /api/v1/alerts but go nowhere (set --alertmanager-url or alerting.webhooks)", "rules", len(rules))
	} else {
		s.log.Info("alerting", "rules", len(rules), "receivers", names, "interval", c.Interval.String())
	}
	s.background = append(s.background, func(ctx context.Context) {
		if c.ExternalURL == "" {
			// Known once the listener is bound (port 0 in tests).
			m.SetExternalURL("http://" + s.Addr("http"))
		}
		m.Run(ctx)
	})
	return v1.AlertRoutes(m), m, nil
}

// culpritOfRanking turns the root-cause ranking into an alert's culprit:
// the top cause and its first piece of evidence as the reason.
func culpritOfRanking(rep rootcause.Report) (analyze.Culprit, bool) {
	if len(rep.Causes) == 0 {
		return analyze.Culprit{}, false
	}
	top := rep.Causes[0]
	reason := fmt.Sprintf("ranked first of the likely causes (score %.2f)", top.Score)
	if len(top.Evidence) > 0 && top.Evidence[0].Text != "" {
		reason = top.Evidence[0].Text
	}
	if !strings.HasSuffix(reason, ".") {
		reason += "."
	}
	return analyze.Culprit{Service: top.Service, Operation: top.Operation, Reason: reason}, true
}

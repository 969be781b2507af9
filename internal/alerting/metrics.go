package alerting

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/findingstore"
)

var alertsDesc = prometheus.NewDesc("tracedx_alerts",
	"Active alerts (1 per pending or firing alert), like Prometheus' ALERTS series.",
	[]string{"alertname", "alertstate", "severity", "service", "operation", "kind"}, nil)

// alertsCollector exports the pending and firing alerts.
type alertsCollector struct{ m *Manager }

func (c alertsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- alertsDesc }

func (c alertsCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for _, a := range c.m.alerts {
		if a.State == StateResolved {
			continue
		}
		l := a.Labels
		ch <- prometheus.MustNewConstMetric(alertsDesc, prometheus.GaugeValue, 1,
			a.Rule, string(a.State), l["severity"], l["service"], l["operation"], l["kind"])
	}
}

// Sink is where findings are stored (the findings store; systemic.Sink).
type Sink interface {
	Put(ctx context.Context, fs []findingstore.Stored) error
}

// FindingsCounter counts stored findings as tracedx_findings_total and
// hands them to the alert rules' window.
type FindingsCounter struct {
	vec *prometheus.CounterVec
	// observe is set once before the server starts (OnStored).
	observe func([]findingstore.Stored)
}

// OnStored makes every stored batch of findings go to fn too; call it
// before anything is stored.
func (c *FindingsCounter) OnStored(fn func([]findingstore.Stored)) { c.observe = fn }

// NewFindingsCounter registers tracedx_findings_total{kind,service,severity}.
func NewFindingsCounter(reg prometheus.Registerer) *FindingsCounter {
	c := &FindingsCounter{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tracedx_findings_total",
		Help: "Findings stored, per-trace and cross-trace, by kind, service and severity.",
	}, []string{"kind", "service", "severity"})}
	if reg != nil {
		reg.MustRegister(c.vec)
	}
	return c
}

// Wrap returns a Sink that stores into next and counts what was stored.
func (c *FindingsCounter) Wrap(next Sink) Sink { return countingSink{next: next, c: c} }

type countingSink struct {
	next Sink
	c    *FindingsCounter
}

// Update passes rewrites of open findings on, uncounted: they are
// findings already counted (and alerted on) when they opened.
func (s countingSink) Update(ctx context.Context, fs []findingstore.Stored) error {
	u, ok := s.next.(interface {
		Update(ctx context.Context, fs []findingstore.Stored) error
	})
	if !ok {
		return nil
	}
	return u.Update(ctx, fs)
}

func (s countingSink) Put(ctx context.Context, fs []findingstore.Stored) error {
	if err := s.next.Put(ctx, fs); err != nil {
		return err
	}
	for i := range fs {
		s.c.vec.WithLabelValues(fs[i].Kind, fs[i].Service, string(fs[i].Severity)).Inc()
	}
	if s.c.observe != nil {
		s.c.observe(fs)
	}
	return nil
}

package alerting

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracedx/tracedx/internal/analyze"
	"github.com/tracedx/tracedx/internal/findingstore"
	"github.com/tracedx/tracedx/internal/red"
)

// Options configure a Manager.
type Options struct {
	Rules []Rule
	// Interval between evaluations (default 15 s).
	Interval time.Duration
	// ResendInterval between sends of a firing alert to Alertmanager
	// (default 1 min).
	ResendInterval time.Duration
	// ResolvedRetention is how long a resolved alert is kept for delivery
	// of its resolve (default 15 min).
	ResolvedRetention time.Duration
	// QueueSize bounds the batches waiting per receiver (default 64).
	QueueSize int
	// Attempts and Backoff of one batch before it is offered again at the
	// next evaluation (default 5 attempts from 500 ms, doubling).
	Attempts int
	Backoff  time.Duration
	// Dir keeps the alert state ("" = memory only).
	Dir string
	// ExternalURL is the base of the UI links in alerts.
	ExternalURL string
	Receivers   []Receiver
	RED         REDReader
	// Findings is read once at start to count the findings of the rules'
	// windows; after that ObserveFindings brings new ones.
	Findings FindingsReader
	// RootCause, when set, ranks the causes of an endpoint's last minutes
	// against the window before them (the root-cause ranking); a RED or
	// SLO alert names its top cause as the culprit.
	RootCause  func(ctx context.Context, service, operation string, from, to time.Time) (analyze.Culprit, bool)
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// historySize bounds the resolved alerts the API lists.
const historySize = 200

// Manager evaluates the rules and keeps the alerts.
type Manager struct {
	opt    Options
	log    *slog.Logger
	queues []*queue

	mu       sync.Mutex
	alerts   map[string]*Alert
	history  []Alert // newest last
	health   map[string]ruleHealth
	inflight map[string]map[string]bool // receiver → alert key
	long     *longWindows
	// window counts the findings stored recently (ObserveFindings).
	window *findingsWindow
	// perTrace and crossTrace are how far back the rules count per-trace
	// and cross-trace findings.
	perTrace, crossTrace time.Duration
	// ranked caches the root-cause ranking's culprit per endpoint for
	// rankTTL: a firing alert is evaluated every interval, the ranking
	// reads hundreds of traces.
	rankedMu sync.Mutex
	ranked   map[[2]string]rankedCulprit
	saveMu   sync.Mutex
	// cluster, when set, splits the rules between the nodes (cluster.go).
	cluster Cluster
	// owned are the rules this node owned at its last evaluation;
	// handover the last state other nodes reported of theirs
	// (handover.go).
	owned    map[string]bool
	handover map[string]ruleHandover

	evalFailures *prometheus.CounterVec
	notifyTotal  *prometheus.CounterVec
	dropped      *prometheus.CounterVec
}

type ruleHealth struct {
	lastEval time.Time
	duration time.Duration
	err      string
}

// New validates the rules and restores the saved state.
func New(opt Options) (*Manager, error) {
	if err := Validate(opt.Rules); err != nil {
		return nil, err
	}
	if opt.Interval <= 0 {
		opt.Interval = 15 * time.Second
	}
	if opt.ResendInterval <= 0 {
		opt.ResendInterval = time.Minute
	}
	if opt.ResolvedRetention <= 0 {
		opt.ResolvedRetention = 15 * time.Minute
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = 64
	}
	if opt.Attempts <= 0 {
		opt.Attempts = 5
	}
	if opt.Backoff <= 0 {
		opt.Backoff = 500 * time.Millisecond
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	opt.ExternalURL = strings.TrimRight(opt.ExternalURL, "/")
	m := &Manager{opt: opt, log: opt.Logger, alerts: map[string]*Alert{}, health: map[string]ruleHealth{},
		inflight: map[string]map[string]bool{}, long: &longWindows{m: map[longKey]longCounts{}}, handover: map[string]ruleHandover{},
		evalFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_alert_rule_evaluation_failures_total",
			Help: "Evaluations of an alert rule that failed."}, []string{"rule"}),
		notifyTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_alert_notifications_total",
			Help: "Alert notification batches by receiver and result (sent, failed)."}, []string{"receiver", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tracedx_alert_notifications_dropped_total",
			Help: "Notification batches not queued because the receiver's queue was full; they are offered again."}, []string{"receiver"}),
	}
	// How far back the rules look, per-trace and cross-trace findings apart:
	// at start the window is filled with that much from the store, so a
	// restart changes no count.
	perTrace, crossTrace := blameWindow, blameWindow
	for _, r := range opt.Rules {
		switch {
		case r.Findings != nil:
			perTrace = max(perTrace, r.Findings.Window)
		case r.CrossTrace != nil:
			crossTrace = max(crossTrace, r.CrossTrace.Window)
		}
	}
	m.window = newFindingsWindow(max(perTrace, crossTrace))
	m.perTrace, m.crossTrace = perTrace, crossTrace
	if opt.Findings != nil {
		start := time.Now()
		n, err := m.window.seed(context.Background(), opt.Findings, opt.Now(), perTrace, false)
		if err == nil {
			var k int
			k, err = m.window.seed(context.Background(), opt.Findings, opt.Now(), crossTrace, true)
			n += k
		}
		if err != nil {
			return nil, fmt.Errorf("alerting: %w", err)
		}
		m.log.Info("alerting: counted the stored findings of the rules' windows", "findings", n, "took", time.Since(start).Round(time.Millisecond).String())
	}
	st, err := loadState(opt.Dir)
	if err != nil {
		return nil, err
	}
	rules := map[string]bool{}
	for _, r := range opt.Rules {
		rules[r.Name] = true
	}
	for i := range st.Alerts {
		a := st.Alerts[i]
		if !rules[a.Rule] {
			continue // the rule was removed; its alert goes with it
		}
		m.alerts[a.Key] = &a
	}
	m.history = st.History
	for _, r := range opt.Receivers {
		m.queues = append(m.queues, &queue{r: r, ch: make(chan batch, opt.QueueSize), log: m.log, now: opt.Now,
			attempts: opt.Attempts, backoff: opt.Backoff, done: m.delivered})
		m.inflight[r.Name()] = map[string]bool{}
	}
	if opt.Registerer != nil {
		opt.Registerer.MustRegister(m.evalFailures, m.notifyTotal, m.dropped, alertsCollector{m})
	}
	return m, nil
}

// Run evaluates every Interval and runs the receivers until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	wg := m.startReceivers(ctx)
	t := time.NewTicker(m.opt.Interval)
	defer t.Stop()
	for {
		m.Evaluate(ctx)
		select {
		case <-ctx.Done():
			wg.Wait()
			m.save()
			return
		case <-t.C:
		}
	}
}

// startReceivers runs one worker per receiver until ctx ends.
func (m *Manager) startReceivers(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, q := range m.queues {
		wg.Add(1)
		go func() { defer wg.Done(); q.run(ctx) }()
	}
	return &wg
}

// Evaluate runs every rule once, updates the alerts and queues the
// notifications due.
func (m *Manager) Evaluate(ctx context.Context) {
	now := m.opt.Now()
	m.window.prune(now)
	c := m.clusterOf()
	m.noteOwners(ctx, c)
	ev := &evaluator{red: m.opt.RED, window: m.withPeers(ctx, c), now: now, cache: map[redKey][]red.EntryCounts{}, long: m.long,
		rank: m.rankedCulprit(ctx, now)}
	results := make(map[string][]sample, len(m.opt.Rules))
	health := make(map[string]ruleHealth, len(m.opt.Rules))
	failed := map[string]bool{}
	elsewhere := map[string]bool{}
	owned := map[string]bool{}
	var takeOver []string
	m.mu.Lock()
	for i := range m.opt.Rules {
		r := &m.opt.Rules[i]
		if owned[r.Name] = c.owns(r); owned[r.Name] && !m.owned[r.Name] {
			takeOver = append(takeOver, r.Name)
		}
	}
	adopted := m.takeOver(takeOver)
	m.owned = owned
	m.mu.Unlock()
	for i := range m.opt.Rules {
		r := &m.opt.Rules[i]
		if !owned[r.Name] {
			elsewhere[r.Name] = true
			continue
		}
		start := time.Now()
		s, err := ev.eval(r)
		h := ruleHealth{lastEval: now, duration: time.Since(start)}
		if err != nil {
			h.err = err.Error()
			failed[r.Name] = true
			m.evalFailures.WithLabelValues(r.Name).Inc()
			m.log.Warn("alert rule evaluation failed", "rule", r.Name, "err", err)
		}
		health[r.Name] = h
		results[r.Name] = s
	}
	m.mu.Lock()
	m.health = health
	changed := m.transition(now, results, failed, elsewhere) || adopted
	due := m.due(now)
	m.mu.Unlock()
	if changed {
		m.save()
	}
	for _, q := range m.queues {
		b := due[q.r.Name()]
		if len(b.alerts) == 0 {
			continue
		}
		if !q.offer(b) {
			m.dropped.WithLabelValues(q.r.Name()).Inc()
			m.delivered(q.r, b, errQueueFull)
		}
	}
}

var errQueueFull = fmt.Errorf("queue full")

// transition moves every alert through its lifecycle; the caller holds mu.
// The alerts of rules evaluated elsewhere (another node of the cluster
// owns them now) are dropped without a word: their owner raises, notifies
// and resolves them.
func (m *Manager) transition(now time.Time, results map[string][]sample, failed, elsewhere map[string]bool) bool {
	changed := false
	seen := map[string]bool{}
	for key, a := range m.alerts {
		if elsewhere[a.Rule] {
			delete(m.alerts, key)
			changed = true
		}
	}
	for i := range m.opt.Rules {
		r := &m.opt.Rules[i]
		for _, s := range results[r.Name] {
			labels := map[string]string{"alertname": r.Name}
			for k, v := range s.labels {
				labels[k] = v
			}
			for k, v := range r.Labels {
				labels[k] = v
			}
			key := alertKey(labels)
			seen[key] = true
			a := m.alerts[key]
			if a == nil || a.State == StateResolved {
				delivered := map[string]Delivery(nil)
				if a != nil {
					delivered = a.Delivered
				}
				a = &Alert{Key: key, Rule: r.Name, Labels: labels, State: StatePending, ActiveAt: now, Delivered: delivered}
				m.alerts[key] = a
				changed = true
			}
			a.Value, a.LastSeenAt, a.Culprit = s.value, now, s.culprit
			a.Annotations = m.annotate(r, labels, s)
			a.GeneratorURL = m.opt.ExternalURL + "/alerts?rule=" + url.QueryEscape(r.Name)
			if a.State == StatePending && now.Sub(a.ActiveAt) >= r.For {
				a.State, a.FiredAt = StateFiring, now
				changed = true
				m.log.Info("alert firing", "alert", r.Name, "labels", labels, "culprit", s.culprit.Service+" "+s.culprit.Operation)
			}
		}
	}
	for key, a := range m.alerts {
		if seen[key] || failed[a.Rule] {
			continue // a failed evaluation proves nothing either way
		}
		switch a.State {
		case StatePending:
			delete(m.alerts, key)
			changed = true
		case StateFiring:
			a.State, a.ResolvedAt = StateResolved, now
			m.history = append(m.history, a.clone())
			if len(m.history) > historySize {
				m.history = m.history[len(m.history)-historySize:]
			}
			changed = true
			m.log.Info("alert resolved", "alert", a.Rule, "labels", a.Labels)
		case StateResolved:
			if m.resolveDone(a) || now.Sub(a.ResolvedAt) > m.opt.ResolvedRetention {
				delete(m.alerts, key)
				changed = true
			}
		}
	}
	return changed
}

// resolveDone: every receiver that saw the alert firing has its resolve.
func (m *Manager) resolveDone(a *Alert) bool {
	for _, q := range m.queues {
		if d := a.Delivered[q.r.Name()]; d.State == StateFiring {
			return false
		}
	}
	return true
}

// due collects per receiver the alerts to send now; the caller holds mu.
func (m *Manager) due(now time.Time) map[string]batch {
	out := map[string]batch{}
	for _, q := range m.queues {
		name := q.r.Name()
		var b batch
		for key, a := range m.alerts {
			if a.State == StatePending || m.inflight[name][key] {
				continue
			}
			d := a.Delivered[name]
			send := false
			switch {
			case a.State == StateFiring:
				send = d.State != StateFiring || q.r.Resends() && now.Sub(d.At) >= m.opt.ResendInterval
			case a.State == StateResolved:
				// A receiver that never saw it firing need not hear of it.
				send = d.State == StateFiring
			}
			if send {
				b.alerts = append(b.alerts, a.clone())
				m.inflight[name][key] = true
			}
		}
		sort.Slice(b.alerts, func(i, j int) bool { return b.alerts[i].Key < b.alerts[j].Key })
		out[name] = b
	}
	return out
}

// delivered records the outcome of a batch.
func (m *Manager) delivered(r Receiver, b batch, err error) {
	name := r.Name()
	now := m.opt.Now()
	m.mu.Lock()
	for _, sent := range b.alerts {
		delete(m.inflight[name], sent.Key)
		if err != nil {
			continue
		}
		if a := m.alerts[sent.Key]; a != nil {
			if a.Delivered == nil {
				a.Delivered = map[string]Delivery{}
			}
			a.Delivered[name] = Delivery{State: sent.State, At: now}
		}
	}
	m.mu.Unlock()
	if err != nil {
		if err != errQueueFull {
			m.notifyTotal.WithLabelValues(name, "failed").Inc()
			m.log.Warn("alert notification failed; it is offered again at the next evaluation", "receiver", name, "alerts", len(b.alerts), "err", err)
		}
		return
	}
	m.notifyTotal.WithLabelValues(name, "sent").Inc()
	m.save()
}

func (m *Manager) save() {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	st := stateFile{History: append([]Alert(nil), m.history...)}
	for _, a := range m.alerts {
		st.Alerts = append(st.Alerts, a.clone())
	}
	m.mu.Unlock()
	sort.Slice(st.Alerts, func(i, j int) bool { return st.Alerts[i].Key < st.Alerts[j].Key })
	if err := saveState(m.opt.Dir, st); err != nil {
		m.log.Error("saving alert state", "err", err)
	}
}

// templateData is what annotation templates see.
type templateData struct {
	Labels  map[string]string
	Value   float64
	Culprit struct{ Service, Operation, SpanID, Reason string }
	Impact  string
	Summary string
	// Links into the UI ("" when there is none).
	FindingURL, TraceURL, CompareURL string
}

// annotate builds the annotations: tracedx's own (summary, culprit,
// impact, links) and the rule's templates on top.
func (m *Manager) annotate(r *Rule, labels map[string]string, s sample) map[string]string {
	d := templateData{Labels: labels, Value: s.value, Impact: s.impact, Summary: s.summary}
	d.Culprit.Service, d.Culprit.Operation, d.Culprit.SpanID, d.Culprit.Reason = s.culprit.Service, s.culprit.Operation, s.culprit.SpanID, s.culprit.Reason
	base := m.opt.ExternalURL
	if kind := labels["kind"]; kind != "" {
		d.FindingURL = base + "/findings?" + url.Values{"kind": {kind}, "service": {labels["service"]}}.Encode()
	}
	if s.traceID != "" {
		d.TraceURL = base + "/trace/" + s.traceID
	}
	if s.compareService != "" {
		d.CompareURL = base + "/compare?" + url.Values{"service": {s.compareService}, "operation": {s.compareOperation},
			"selection": {s.compareSelection}}.Encode()
	}
	out := map[string]string{"summary": s.summary, "impact": s.impact}
	if c := s.culprit; c.Service != "" {
		out["culprit"] = strings.TrimSpace(c.Service + " " + c.Operation)
		out["culprit_reason"] = c.Reason
		if c.SpanID != "" {
			out["culprit_span_id"] = c.SpanID
		}
	}
	for k, v := range map[string]string{"finding_url": d.FindingURL, "trace_url": d.TraceURL, "compare_url": d.CompareURL} {
		if v != "" {
			out[k] = v
		}
	}
	for k, t := range r.annotations {
		var buf bytes.Buffer
		if err := t.Execute(&buf, d); err != nil {
			out[k] = fmt.Sprintf("template error: %v", err)
			continue
		}
		out[k] = buf.String()
	}
	return out
}

// ObserveFindings counts findings as they are stored (FindingsCounter
// calls it); findings older than the longest window are ignored.
func (m *Manager) ObserveFindings(fs []findingstore.Stored) { m.window.add(m.opt.Now(), fs) }

// SetExternalURL sets the base of the UI links (known only once the
// server's listener is bound).
func (m *Manager) SetExternalURL(u string) {
	m.mu.Lock()
	m.opt.ExternalURL = strings.TrimRight(u, "/")
	m.mu.Unlock()
}

// rankTTL is how long a ranked culprit is reused.
const rankTTL = time.Minute

type rankedCulprit struct {
	at      time.Time
	culprit analyze.Culprit
	ok      bool
}

// rankedCulprit returns the evaluation's view of Options.RootCause: the
// top cause of the endpoint over the blame window, cached per endpoint.
func (m *Manager) rankedCulprit(ctx context.Context, now time.Time) func(service, operation string) (analyze.Culprit, bool) {
	if m.opt.RootCause == nil {
		return nil
	}
	return func(service, operation string) (analyze.Culprit, bool) {
		k := [2]string{service, operation}
		m.rankedMu.Lock()
		if m.ranked == nil {
			m.ranked = map[[2]string]rankedCulprit{}
		}
		r, hit := m.ranked[k]
		m.rankedMu.Unlock()
		if hit && now.Sub(r.at) < rankTTL {
			return r.culprit, r.ok
		}
		c, ok := m.opt.RootCause(ctx, service, operation, now.Add(-blameWindow), now)
		m.rankedMu.Lock()
		m.ranked[k] = rankedCulprit{at: now, culprit: c, ok: ok}
		m.rankedMu.Unlock()
		return c, ok
	}
}

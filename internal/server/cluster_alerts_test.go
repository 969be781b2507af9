package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracedx/tracedx/internal/config"
)

// fakeAlertmanager records who sent each alert (the host of its
// generator URL, one per node).
type fakeAlertmanager struct {
	mu       sync.Mutex
	senders  map[string]map[string]int // alertname → sender host → posts
	resolved map[string]int            // alertname → posts of it resolved
}

func newFakeAlertmanager(t *testing.T) (*fakeAlertmanager, string) {
	am := &fakeAlertmanager{senders: map[string]map[string]int{}, resolved: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var alerts []struct {
			Labels       map[string]string `json:"labels"`
			GeneratorURL string            `json:"generatorURL"`
			EndsAt       time.Time         `json:"endsAt"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &alerts); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		am.mu.Lock()
		for _, a := range alerts {
			u, _ := url.Parse(a.GeneratorURL)
			name := a.Labels["alertname"]
			if am.senders[name] == nil {
				am.senders[name] = map[string]int{}
			}
			am.senders[name][u.Host]++
			if !a.EndsAt.IsZero() && a.EndsAt.Before(time.Now()) {
				am.resolved[name]++
			}
		}
		am.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return am, srv.URL
}

func (am *fakeAlertmanager) sent() map[string]map[string]int {
	am.mu.Lock()
	defer am.mu.Unlock()
	out := map[string]map[string]int{}
	for name, by := range am.senders {
		out[name] = map[string]int{}
		for h, n := range by {
			out[name][h] = n
		}
	}
	return out
}

// alertsOf reduces GET /api/v1/alerts or /api/v1/rules to what must not
// depend on the node asked: which alerts fire or wait, their labels,
// values, culprits and summaries (times and links name the node and the
// moment it evaluated).
func alertsOf(body string) string {
	var v struct {
		Firing, Pending []alertFacts
		Data            struct {
			Groups []struct {
				Rules []struct {
					Name, State, Health string
					Alerts              []struct {
						Labels map[string]string
						State  string
						Value  string
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return "undecodable: " + body
	}
	var lines []string
	for _, l := range [][]alertFacts{v.Firing, v.Pending} {
		for _, a := range l {
			culprit := a.Culprit.Service + "/" + a.Culprit.Operation
			if a.Labels["kind"] == "" {
				// A RED alert names the root-cause ranking's top cause,
				// kept for a minute from the first evaluation that fired:
				// it depends on how much traffic had arrived by then.
				culprit = "(ranked)"
			}
			lines = append(lines, fmt.Sprintf("%s %v value=%g culprit=%s summary=%q", a.State, a.Labels, a.Value,
				culprit, a.Annotations["summary"]))
		}
	}
	for _, g := range v.Data.Groups {
		for _, r := range g.Rules {
			lines = append(lines, fmt.Sprintf("rule %s %s %s", r.Name, r.State, r.Health))
			for _, a := range r.Alerts {
				lines = append(lines, fmt.Sprintf("  %s %v %s", a.State, a.Labels, a.Value))
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

type alertFacts struct {
	Labels      map[string]string
	Annotations map[string]string
	State       string
	Value       float64
	Culprit     struct{ Service, Operation string }
}

// quickAlerts configures a node to evaluate rules every 200 ms and notify
// the Alertmanager at am (resends an hour apart: a resend is no repeat).
func quickAlerts(t *testing.T, am, rules string) func(*config.Config) {
	return func(c *config.Config) {
		c.Storage.TraceIdleTimeout = 300 * time.Millisecond
		c.Alerting.Interval = 200 * time.Millisecond
		c.Alerting.ResendInterval = time.Hour
		c.Alerting.DefaultRules = false
		c.Alerting.AlertmanagerURLs = []string{am}
		c.Alerting.Rules = alertRules(t, rules)
	}
}

// A cluster raises each alert once: the rule's owner evaluates it on the
// merged RED metrics and on the findings of every node, notifies
// Alertmanager alone, and every node lists the alerts and rules one node
// that saw all the spans lists.
func TestClusterAlertsFireOnce(t *testing.T) {
	nodeAM, nodeURL := newFakeAlertmanager(t)
	_, refURL := newFakeAlertmanager(t)
	alerting := func(am string) func(*config.Config) {
		return quickAlerts(t, am, `
- alert: SlowFrontend
  red: {service: frontend, window: 25m, latency_above_ms: 5, percentile: 95, min_requests: 10}
- alert: SlowQueries
  findings: {kind: slow_query, window: 1h, more_than: 5}
`)
	}
	nodes := startClusterServers(t, 3, alerting(nodeURL))
	ref := oneNodeLike(t, alerting(refURL))
	spreadTraffic(t, nodes, ref, shopTraffic(300, time.Now()))

	paths := []string{"/api/v1/alerts", "/api/v1/rules"}
	deadline := time.Now().Add(40 * time.Second)
	for {
		body, err := getBody(ref.Addr("http"), paths[0])
		if err != nil {
			t.Fatal(err)
		}
		if got := alertsOf(body); strings.Count(got, "firing") == 2 {
			break
		}
		if time.Now().After(deadline) {
			rules, _ := getBody(ref.Addr("http"), paths[1])
			t.Fatalf("the reference raised %s\n%s", alertsOf(body), rules)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if diff := clusterDiffBy(t, nodes, ref, paths, deadline, alertsOf); diff != "" {
		t.Fatal(diff)
	}
	// A receiver's queue posts after the evaluation that listed the alert
	// firing, so the first post can come late on a loaded machine: wait
	// for it, then some evaluations more in which a second node could post.
	for sendDeadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sent := nodeAM.sent()
		if len(sent["SlowFrontend"]) > 0 && len(sent["SlowQueries"]) > 0 {
			break
		}
		if time.Now().After(sendDeadline) {
			t.Fatalf("Alertmanager got %v; want SlowFrontend and SlowQueries", sent)
		}
	}
	time.Sleep(time.Second)
	sent := nodeAM.sent()
	for _, name := range []string{"SlowFrontend", "SlowQueries"} {
		if len(sent[name]) != 1 {
			t.Errorf("%s was sent by %d nodes, want one: %v", name, len(sent[name]), sent[name])
		}
		for host, n := range sent[name] {
			if n != 1 {
				t.Errorf("%s was sent %d times by %s, want once", name, n, host)
			}
		}
	}
}

// alertOn is the alert named name as GET /api/v1/alerts of s lists it,
// with the node that evaluated it (its generator URL's host).
type listedAlert struct {
	State    string    `json:"state"`
	ActiveAt time.Time `json:"active_at"`
	FiredAt  time.Time `json:"fired_at"`
	URL      string    `json:"generator_url"`
}

func alertOn(t *testing.T, s *Server, name string) (listedAlert, string, bool) {
	t.Helper()
	var v struct {
		Firing, Pending []struct {
			listedAlert
			Labels map[string]string `json:"labels"`
		}
	}
	getJSON(t, s, "/api/v1/alerts", &v)
	for _, a := range append(v.Firing, v.Pending...) {
		if a.Labels["alertname"] == name {
			u, _ := url.Parse(a.URL)
			return a.listedAlert, u.Host, true
		}
	}
	return listedAlert{}, "", false
}

// When the node owning a rule stops, the node that takes the rule over
// fires its pending alert when the rule's for has elapsed since it began
// pending on the stopped node; when the node comes back and takes the
// rule back, the firing alert is neither sent again as new nor resolved.
func TestClusterAlertHandoverKeepsState(t *testing.T) {
	am, amURL := newFakeAlertmanager(t)
	const forDur = 30 * time.Second
	nodes, stops, cfgs := startClusterNodes(t, 2, quickAlerts(t, amURL, `
- alert: SlowFrontend
  for: 30s
  red: {service: frontend, window: 25m, latency_above_ms: 5, percentile: 95, min_requests: 10}
`))
	spans := shopTraffic(300, time.Now())
	postOTLP(t, nodes[0].Addr("otlp-http"), spans)

	var pending listedAlert
	var owner string
	for deadline := time.Now().Add(30 * time.Second); pending.State != "pending"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no node raised the alert")
		}
		pending, owner, _ = alertOn(t, nodes[0], "SlowFrontend")
	}
	a := slices.IndexFunc(cfgs, func(c config.Config) bool { return c.Listen.HTTP == owner })
	if a < 0 {
		t.Fatalf("the alert names %s, no node of %v", owner, cfgs)
	}
	b := 1 - a
	// b learns the owner's state at its own evaluations (every 200 ms);
	// under load one can come late, and a stop before b heard of the
	// pending alert leaves it nothing to take over.
	time.Sleep(2 * time.Second)
	stops[a]()
	if time.Since(pending.ActiveAt) > forDur/2 {
		t.Fatalf("the owner stopped %v after the alert began pending: too late to tell a kept timer from a new one", time.Since(pending.ActiveAt))
	}

	var fired listedAlert
	var by string
	for deadline := time.Now().Add(60 * time.Second); fired.State != "firing"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("n%d never fired the alert: %+v", b, fired)
		}
		fired, by, _ = alertOn(t, nodes[b], "SlowFrontend")
	}
	if by != cfgs[b].Listen.HTTP || !fired.ActiveAt.Equal(pending.ActiveAt) {
		t.Fatalf("fired by %s, pending since %v; want n%d, since %v (on n%d)", by, fired.ActiveAt, b, pending.ActiveAt, a)
	}
	// The takeover comes two missed probes (5 s apart) after the stop:
	// a timer started afresh would fire at least that much later.
	if late := fired.FiredAt.Sub(pending.ActiveAt); late > forDur+5*time.Second {
		t.Fatalf("fired %v after it began pending, want %v (plus an evaluation)", late, forDur)
	}
	// Posted by the receiver's queue after the evaluation that fired, which
	// a loaded machine can hold back for seconds.
	for deadline := time.Now().Add(30 * time.Second); am.sent()["SlowFrontend"][by] != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager got %v", am.sent())
		}
	}

	// a starts again and owns the rule again.
	again, _ := runServer(t, cfgs[a])
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, host, _ := alertOn(t, again, "SlowFrontend")
		if host == cfgs[a].Listen.HTTP {
			if got.State != "firing" || !got.FiredAt.Equal(fired.FiredAt) {
				t.Fatalf("n%d took the rule back with %+v; want it firing since %v", a, got, fired.FiredAt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n%d never took the rule back: %+v by %s", a, got, host)
		}
	}
	time.Sleep(2 * time.Second) // some evaluations on both nodes
	if sent := am.sent()["SlowFrontend"]; len(sent) != 1 || sent[by] != 1 || am.resolvedCount("SlowFrontend") != 0 {
		t.Fatalf("Alertmanager got %v (%d resolved) across the handovers; want one firing post by %s", sent, am.resolvedCount("SlowFrontend"), by)
	}
}

func (am *fakeAlertmanager) resolvedCount(name string) int {
	am.mu.Lock()
	defer am.mu.Unlock()
	return am.resolved[name]
}

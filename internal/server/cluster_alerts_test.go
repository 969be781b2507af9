package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	mu      sync.Mutex
	senders map[string]map[string]int // alertname → sender host → posts
}

func newFakeAlertmanager(t *testing.T) (*fakeAlertmanager, string) {
	am := &fakeAlertmanager{senders: map[string]map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var alerts []struct {
			Labels       map[string]string `json:"labels"`
			GeneratorURL string            `json:"generatorURL"`
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

// A cluster raises each alert once: the rule's owner evaluates it on the
// merged RED metrics and on the findings of every node, notifies
// Alertmanager alone, and every node lists the alerts and rules one node
// that saw all the spans lists.
func TestClusterAlertsFireOnce(t *testing.T) {
	nodeAM, nodeURL := newFakeAlertmanager(t)
	_, refURL := newFakeAlertmanager(t)
	alerting := func(am string) func(*config.Config) {
		return func(c *config.Config) {
			c.Storage.TraceIdleTimeout = 300 * time.Millisecond
			c.Alerting.Interval = 200 * time.Millisecond
			c.Alerting.ResendInterval = time.Hour
			c.Alerting.DefaultRules = false
			c.Alerting.AlertmanagerURLs = []string{am}
			c.Alerting.Rules = alertRules(t, `
- alert: SlowFrontend
  red: {service: frontend, window: 25m, latency_above_ms: 5, percentile: 95, min_requests: 10}
- alert: SlowQueries
  findings: {kind: slow_query, window: 1h, more_than: 5}
`)
		}
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
	// Some evaluations later, each alert was sent by one node only.
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

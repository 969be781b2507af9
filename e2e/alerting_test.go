//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/api/v2/models"

	"github.com/tracedx/tracedx/internal/alerting/alertingtest"
	"github.com/tracedx/tracedx/internal/demo"
	"github.com/tracedx/tracedx/internal/freeport"
)

// Keep in sync with ALERTMANAGER_VERSION in e2e/ci.sh.
const alertmanagerVersion = "v0.35.0"

// startAlertmanager runs a real Alertmanager on a port the kernel picks,
// routing every alert to hook with resolves, and returns its base URL.
func startAlertmanager(t *testing.T, bin, hook string) string {
	dir := t.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:0", "--cluster.listen-address=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting alertmanager: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	listening := regexp.MustCompile(`msg="Listening on" address=(\S+)`)
	addr := make(chan string, 1)
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		base := "http://" + a
		if err := eventually(15*time.Second, func() error {
			resp, err := http.Get(base + "/-/ready")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /-/ready: %s", resp.Status)
			}
			return nil
		}); err != nil {
			t.Fatalf("alertmanager never got ready: %v", err)
		}
		return base
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("alertmanager did not say where it listens within 30s:\n%s", log.String())
	}
	return ""
}

// amAlerts asks Alertmanager (GET /api/v2/alerts) for the active alerts
// named alertname, decoded with its own API types.
func amAlerts(base, alertname string) (models.GettableAlerts, error) {
	q := url.Values{"filter": {fmt.Sprintf("alertname=%q", alertname)}}
	resp, err := http.Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /api/v2/alerts: %s %s", resp.Status, b)
	}
	var out models.GettableAlerts
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

type apiAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	FiredAt     time.Time         `json:"fired_at"`
}

type apiAlerts struct {
	Firing  []apiAlert `json:"firing"`
	Pending []apiAlert `json:"pending"`
	History []apiAlert `json:"history"`
}

// TestAlertsReachAlertmanager injects an N+1 incident into the demo shop
// and follows the alert from the finding to a real Alertmanager and to
// webhooks, across a restart of tracedx, until it is resolved.
func TestAlertsReachAlertmanager(t *testing.T) {
	t.Parallel()
	amBin := requireTool(t, "alertmanager", "bash e2e/ci.sh builds Alertmanager "+alertmanagerVersion)
	amHook := alertingtest.New(t, "")
	direct := alertingtest.New(t, "e2e-secret")
	flaky := alertingtest.New(t, "")
	flaky.SetDown(true)
	amURL := startAlertmanager(t, amBin, amHook.URL())

	const alertname = "ShopNPlusOne"
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tracedx.yaml")
	cfg := fmt.Sprintf(`alerting:
  interval: 1s
  resend_interval: 3s
  default_rules: false
  webhooks:
    - {url: %q, secret: e2e-secret}
    - {url: %q}
  rules:
    - alert: %s
      for: 2s
      labels: {severity: page}
      annotations:
        description: "{{ .Value }} N+1 findings in {{ .Labels.service }}; fix {{ .Culprit.Service }} {{ .Culprit.Operation }}"
      findings: {kind: n_plus_one_query, window: 15s}
`, direct.URL(), flaky.URL(), alertname)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The OTLP port stays the same over the restart so the shop keeps
	// sending to it.
	otlp := freeport.Addr(t)
	args := []string{"--config", cfgFile, "--alertmanager-url", amURL, "--otlp-http-addr", otlp}
	srv, err := startTracedx(filepath.Join(dir, "data"), args...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.stop() }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shop, err := demo.Start(ctx, demo.Options{Endpoint: otlp, Rate: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer shop.Close(context.Background())
	go shop.Run(ctx)

	// The incident: a request with an N+1 every 300 ms until stopped.
	incCtx, stopIncident := context.WithCancel(ctx)
	defer stopIncident()
	incidentStart := time.Now()
	go func() {
		for incCtx.Err() == nil {
			_ = shop.Incident(incCtx, "n_plus_one_query")
			time.Sleep(300 * time.Millisecond)
		}
	}()

	// Firing in Alertmanager, with the culprit, within 90 s.
	var firing *models.GettableAlert
	if err := eventually(90*time.Second, func() error {
		list, err := amAlerts(amURL, alertname)
		if err != nil {
			return err
		}
		for _, a := range list {
			if a.Status != nil && a.Status.State != nil && *a.Status.State == "active" {
				firing = a
				return nil
			}
		}
		return fmt.Errorf("no active %s in Alertmanager (%d listed)", alertname, len(list))
	}); err != nil {
		t.Fatalf("%v\ntracedx log:\n%s", err, srv.logTail(30))
	}
	t.Logf("firing in Alertmanager %.1fs after the incident started; labels %v annotations %v",
		time.Since(incidentStart).Seconds(), firing.Labels, firing.Annotations)
	if culprit := firing.Annotations["culprit"]; !strings.Contains(culprit, "orders") {
		t.Errorf("the culprit annotation should name the orders service: %q (annotations %v)", culprit, firing.Annotations)
	}
	if d := firing.Annotations["description"]; !strings.Contains(d, "N+1 findings in orders; fix orders") {
		t.Errorf("templated description: %q", d)
	}
	for _, k := range []string{"summary", "impact", "trace_url", "finding_url", "compare_url"} {
		if firing.Annotations[k] == "" {
			t.Errorf("annotation %s missing: %v", k, firing.Annotations)
		}
	}
	if firing.Labels["severity"] != "page" || firing.Labels["kind"] != "n_plus_one_query" || !strings.HasPrefix(string(firing.GeneratorURL), "http://"+srv.HTTP+"/alerts") {
		t.Errorf("labels %v, generatorURL %s", firing.Labels, firing.GeneratorURL)
	}
	// Alertmanager's own notification, and tracedx's signed webhook.
	if err := eventually(15*time.Second, func() error {
		if got := amHook.Statuses(alertname); len(got) == 0 {
			return errors.New("alertmanager has not notified its receiver")
		}
		if got := direct.Statuses(alertname); len(got) == 0 {
			return errors.New("the webhook got nothing")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The receiver that was down gets the alert once it is back; it
	// delayed nothing above.
	flaky.SetDown(false)
	if err := eventually(30*time.Second, func() error {
		if got := flaky.Statuses(alertname); len(got) != 1 || got[0] != "firing" {
			return fmt.Errorf("the receiver that came back got %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Metrics and API while firing.
	metrics := getText(t, "http://"+srv.HTTP+"/metrics")
	for _, want := range []string{`tracedx_alerts{alertname="` + alertname + `",alertstate="firing"`, `tracedx_findings_total{kind="n_plus_one_query"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var before apiAlerts
	if err := srv.getJSON(ctx, "/api/v1/alerts", &before); err != nil || len(before.Firing) != 1 {
		t.Fatalf("GET /api/v1/alerts: %v %+v", err, before)
	}
	var rules struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Rules []struct {
					Name  string `json:"name"`
					State string `json:"state"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := srv.getJSON(ctx, "/api/v1/rules", &rules); err != nil || rules.Status != "success" ||
		len(rules.Data.Groups) != 1 || len(rules.Data.Groups[0].Rules) != 1 || rules.Data.Groups[0].Rules[0].State != "firing" {
		t.Errorf("GET /api/v1/rules: %v %+v", err, rules)
	}

	// Restart while firing: no duplicate, same alert.
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	srv, err = startTracedx(filepath.Join(dir, "data"), args...)
	if err != nil {
		t.Fatal(err)
	}
	var after apiAlerts
	if err := srv.getJSON(ctx, "/api/v1/alerts", &after); err != nil || len(after.Firing) != 1 || !after.Firing[0].FiredAt.Equal(before.Firing[0].FiredAt) {
		t.Fatalf("after the restart the firing alert must be the same one: %v before %+v after %+v", err, before, after)
	}
	time.Sleep(5 * time.Second) // evaluations and an Alertmanager resend after the restart
	for name, w := range map[string]*alertingtest.Receiver{"the webhook": direct, "the receiver that came back": flaky, "Alertmanager's receiver": amHook} {
		if got := w.Statuses(alertname); len(got) != 1 || got[0] != "firing" {
			t.Errorf("%s: %v, want exactly one firing notification over the restart", name, got)
		}
	}

	// The incident ends: resolved everywhere.
	stopIncident()
	if err := eventually(60*time.Second, func() error {
		for name, w := range map[string]*alertingtest.Receiver{"the webhook": direct, "Alertmanager's receiver": amHook} {
			if got := w.Statuses(alertname); len(got) < 2 || got[len(got)-1] != "resolved" {
				return fmt.Errorf("%s got %v, want the resolve", name, got)
			}
		}
		list, err := amAlerts(amURL, alertname)
		if err != nil {
			return err
		}
		if len(list) != 0 {
			return fmt.Errorf("alertmanager still lists %d %s alerts", len(list), alertname)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\ntracedx log:\n%s", err, srv.logTail(20))
	}
	if got := direct.Statuses(alertname); len(got) != 2 {
		t.Errorf("the webhook got %v, want firing then resolved", got)
	}
	if n := direct.BadSignatures(); n != 0 {
		t.Errorf("%d webhook calls without a valid X-Tracedx-Signature", n)
	}
	var done apiAlerts
	if err := srv.getJSON(ctx, "/api/v1/alerts", &done); err != nil || len(done.Firing) != 0 || len(done.History) == 0 || done.History[0].State != "resolved" {
		t.Errorf("GET /api/v1/alerts after the resolve: %v %+v", err, done)
	}
}

// TestBadAlertRuleStopsServer: a rule with a bad field stops serve at
// start with a sentence naming the rule and the field.
func TestBadAlertRuleStopsServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	_ = os.WriteFile(rules, []byte("rules:\n  - alert: CheckoutSlow\n    red: {service: checkout, window: 5m, latency_above_ms: 300, percentile: 90}\n"), 0o644)
	cmd := exec.Command(tracedxBin, "serve", "--data-dir", filepath.Join(dir, "data"), "--alert-rules", rules,
		"--http-addr", "127.0.0.1:0", "--otlp-grpc-addr", "", "--otlp-http-addr", "", "--zipkin-addr", "", "--tempo-addr", "")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("serve with a bad rule: %v, want a non-zero exit\n%s", err, out)
	}
	if !strings.Contains(string(out), `alert rule "CheckoutSlow": red.percentile`) {
		t.Errorf("the message should name the rule and the field: %s", out)
	}
}

func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

package alerting

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"

	"github.com/tracedx/tracedx/internal/analyze"
)

// Receiver delivers alerts somewhere.
type Receiver interface {
	// Name identifies the receiver in state, logs and metrics.
	Name() string
	// Resends says whether firing alerts are sent again every resend
	// interval (Alertmanager forgets an alert after its endsAt) or once
	// per state change (webhooks).
	Resends() bool
	Send(ctx context.Context, alerts []Alert, now time.Time) error
}

// statusError is a non-2xx answer; 4xx other than 429 is not retried.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.code, strings.TrimSpace(e.body))
}

func (e *statusError) permanent() bool {
	return e.code/100 == 4 && e.code != http.StatusTooManyRequests
}

func post(ctx context.Context, client *http.Client, u string, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, body: string(msg)}
	}
	return nil
}

// Alertmanager posts to the Alertmanager API v2 (POST /api/v2/alerts)
// with its own wire types, validated before they leave.
type Alertmanager struct {
	url    string
	client *http.Client
	// resend is the resend interval: a firing alert's endsAt lies four of
	// them ahead, so Alertmanager keeps it while resends arrive and
	// resolves it by itself if tracedx dies (as Prometheus does).
	resend time.Duration
	name   string // without a password
}

// NewAlertmanager returns a receiver for the Alertmanager at base (e.g.
// http://alertmanager:9093).
func NewAlertmanager(base string, resend time.Duration, client *http.Client) (*Alertmanager, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("alertmanager url %q: want http(s)://host:port", base)
	}
	return &Alertmanager{url: strings.TrimRight(base, "/") + "/api/v2/alerts", client: client, resend: resend,
		name: "alertmanager " + strings.TrimRight(u.Redacted(), "/")}, nil
}

func (a *Alertmanager) Name() string  { return a.name }
func (a *Alertmanager) Resends() bool { return true }

// Send posts the alerts in one request.
func (a *Alertmanager) Send(ctx context.Context, alerts []Alert, now time.Time) error {
	body := make(models.PostableAlerts, 0, len(alerts))
	for i := range alerts {
		al := &alerts[i]
		p := &models.PostableAlert{
			Annotations: models.LabelSet(al.Annotations),
			StartsAt:    strfmt.DateTime(al.FiredAt),
			Alert:       models.Alert{Labels: models.LabelSet(al.Labels), GeneratorURL: strfmt.URI(al.GeneratorURL)},
		}
		if al.State == StateResolved {
			p.EndsAt = strfmt.DateTime(al.ResolvedAt)
		} else {
			p.EndsAt = strfmt.DateTime(now.Add(4 * a.resend))
		}
		body = append(body, p)
	}
	if err := body.Validate(strfmt.Default); err != nil {
		return fmt.Errorf("alerts rejected before sending: %w", err)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return post(ctx, a.client, a.url, data, nil)
}

// SignatureHeader carries the HMAC-SHA256 of a webhook body:
// "sha256=<hex>" keyed with the webhook's secret.
const SignatureHeader = "X-Tracedx-Signature"

// Webhook posts JSON to a URL, once per state change of an alert.
type Webhook struct {
	url    string
	name   string
	secret []byte
	client *http.Client
}

// NewWebhook returns a webhook receiver; secret "" sends no signature.
func NewWebhook(rawURL, secret string, client *http.Client) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook url %q: want http(s)://host/path", rawURL)
	}
	// Webhook URLs often carry a token in the path or query: the name, which
	// goes to logs, metrics and the state file, shows the host and a hash.
	sum := sha256.Sum256([]byte(rawURL))
	return &Webhook{url: rawURL, secret: []byte(secret), client: client,
		name: "webhook " + u.Host + " " + hex.EncodeToString(sum[:4])}, nil
}

func (w *Webhook) Name() string  { return w.name }
func (w *Webhook) Resends() bool { return false }

// WebhookPayload is the body of a webhook call.
type WebhookPayload struct {
	Version string         `json:"version"`
	Sender  string         `json:"sender"`
	Alerts  []WebhookAlert `json:"alerts"`
}

// WebhookAlert is one alert of a webhook call.
type WebhookAlert struct {
	Status       State             `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
	Value        float64           `json:"value"`
	Culprit      analyze.Culprit   `json:"culprit"`
}

// Sign returns the signature header value of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send posts the alerts in one request.
func (w *Webhook) Send(ctx context.Context, alerts []Alert, _ time.Time) error {
	p := WebhookPayload{Version: "1", Sender: "tracedx", Alerts: make([]WebhookAlert, len(alerts))}
	for i, a := range alerts {
		p.Alerts[i] = WebhookAlert{Status: a.State, Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.FiredAt,
			EndsAt: a.ResolvedAt, GeneratorURL: a.GeneratorURL, Fingerprint: fingerprint(a.Key), Value: a.Value, Culprit: a.Culprit}
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	var h http.Header
	if len(w.secret) > 0 {
		h = http.Header{SignatureHeader: {Sign(w.secret, data)}}
	}
	return post(ctx, w.client, w.url, data, h)
}

func fingerprint(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:8])
}

// batch is one send of a queue, with what to record once it is delivered.
type batch struct {
	alerts []Alert
}

// queue runs one receiver: a bounded channel and one worker that retries
// with backoff, so a slow or dead receiver holds up nothing but itself.
type queue struct {
	r        Receiver
	ch       chan batch
	log      *slog.Logger
	now      func() time.Time
	attempts int
	backoff  time.Duration
	// done reports a batch: delivered or given up.
	done func(r Receiver, b batch, err error)
}

// offer enqueues without blocking; false when the queue is full.
func (q *queue) offer(b batch) bool {
	select {
	case q.ch <- b:
		return true
	default:
		return false
	}
}

func (q *queue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-q.ch:
			q.done(q.r, b, q.deliver(ctx, b))
		}
	}
}

func (q *queue) deliver(ctx context.Context, b batch) error {
	wait := q.backoff
	var err error
	for i := 0; i < q.attempts; i++ {
		sendCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = q.r.Send(sendCtx, b.alerts, q.now())
		cancel()
		if err == nil {
			return nil
		}
		var se *statusError
		if errors.As(err, &se) && se.permanent() {
			return err
		}
		if i == q.attempts-1 {
			break
		}
		q.log.Debug("alert notification failed; retrying", "receiver", q.r.Name(), "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
	return err
}

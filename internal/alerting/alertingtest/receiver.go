// Package alertingtest has a webhook receiver for tests of alert delivery:
// it records what tracedx (or Alertmanager) posts, checks tracedx's
// signature, and can be switched down.
package alertingtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// Receiver is a webhook endpoint on a loopback port.
type Receiver struct {
	srv    *httptest.Server
	secret string
	down   atomic.Bool
	hang   chan struct{}

	mu     sync.Mutex
	bodies []map[string]any
	badSig int
}

// New starts a receiver; with a secret it checks X-Tracedx-Signature.
func New(t testing.TB, secret string) *Receiver {
	r := &Receiver{secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// NewHanging starts a receiver that never answers until the test ends.
func NewHanging(t testing.TB) *Receiver {
	r := &Receiver{hang: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() { close(r.hang); r.srv.Close() })
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.hang != nil {
		<-r.hang
		return
	}
	if r.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secret != "" {
		mac := hmac.New(sha256.New, []byte(r.secret))
		mac.Write(body)
		if !hmac.Equal([]byte(req.Header.Get("X-Tracedx-Signature")), []byte("sha256="+hex.EncodeToString(mac.Sum(nil)))) {
			r.badSig++
		}
	}
	r.bodies = append(r.bodies, m)
}

// URL is where to post.
func (r *Receiver) URL() string { return r.srv.URL }

// Secret is the secret signatures are checked with.
func (r *Receiver) Secret() string { return r.secret }

// Client talks to the receiver.
func (r *Receiver) Client() *http.Client { return r.srv.Client() }

// SetDown makes it answer 503 (true) or accept again.
func (r *Receiver) SetDown(down bool) { r.down.Store(down) }

// Alerts lists, in arrival order, the alerts received whose alertname is
// name ("" for all); tracedx's webhook and Alertmanager's share the shape.
func (r *Receiver) Alerts(name string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, b := range r.bodies {
		alerts, _ := b["alerts"].([]any)
		for _, a := range alerts {
			am, _ := a.(map[string]any)
			labels, _ := am["labels"].(map[string]any)
			if name == "" || labels["alertname"] == name {
				out = append(out, am)
			}
		}
	}
	return out
}

// Statuses lists the status of each alert of Alerts(name).
func (r *Receiver) Statuses(name string) []string {
	var out []string
	for _, a := range r.Alerts(name) {
		s, _ := a["status"].(string)
		out = append(out, s)
	}
	return out
}

// BadSignatures counts requests without a valid signature.
func (r *Receiver) BadSignatures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.badSig
}

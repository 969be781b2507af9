package server

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/tracedx/tracedx/internal/config"
)

func TestGuardChecksHostAndSetsNosniff(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"ok":true}`)) })
	h := guard("127.0.0.1:16686", []string{"tracedx.internal"}, ok)
	host, _ := os.Hostname()
	for _, c := range []struct {
		host string
		code int
	}{
		{"127.0.0.1:16686", 200},
		{"localhost:16686", 200},
		{"[::1]:16686", 200},
		{"10.1.2.3:16686", 200}, // an IP literal cannot be a rebound name
		{"TRACEDX.internal:443", 200},
		{"app.localhost", 200},
		{host + ":16686", 200},
		{"evil.example:16686", 421}, // a rebinding page keeps its own name
		{"evil.example", 421},
		{"127.0.0.1.evil.example", 421},
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/services", nil)
		req.Host = c.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("Host %q: %d, want %d", c.host, rec.Code, c.code)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("Host %q: no nosniff", c.host)
		}
		if c.code == 421 && !strings.Contains(rec.Body.String(), "allowed_hosts") {
			t.Errorf("Host %q: refusal does not say what to do: %s", c.host, rec.Body.String())
		}
	}
	any := guard("0.0.0.0:16686", []string{"*"}, ok)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Host = "whatever.example"
	rec := httptest.NewRecorder()
	any.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("allowed_hosts [*]: %d", rec.Code)
	}
}

// The guard is on the real UI/API port of a whole server.
func TestServeRefusesForeignHost(t *testing.T) {
	s := startServer(t, func(*config.Config) {})
	get := func(host string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr("http")+"/api/v1/services", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	if resp := get("rebound.example"); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %s", resp.Status)
	}
	resp := get(s.Addr("http"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("own Host: %s nosniff=%q", resp.Status, resp.Header.Get("X-Content-Type-Options"))
	}
}

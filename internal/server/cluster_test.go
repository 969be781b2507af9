package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tracedx/tracedx/internal/cluster"
	"github.com/tracedx/tracedx/internal/config"
)

// Peers query each other by the names in the peer list; the Host check
// must let those through and still refuse other names.
func TestPeerHostsPassTheHostCheck(t *testing.T) {
	cfg := config.Default()
	cfg.Listen.HTTP = "0.0.0.0:16686"
	cfg.Cluster.Peers = []cluster.Peer{{ID: "a", OTLPGRPC: "tracedx-a:4317", HTTP: "tracedx-a:16686"}, {ID: "b", OTLPGRPC: "tracedx-b:4317", HTTP: "tracedx-b:16686"}}
	h := guard(cfg.Listen.HTTP, withPeerHosts(cfg), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for host, want := range map[string]int{"tracedx-b:16686": 200, "tracedx-a:16686": 200, "evil.example:16686": http.StatusMisdirectedRequest} {
		r := httptest.NewRequest("POST", "/internal/cluster/v1/trace", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
		}
	}
}

package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/model"
	"github.com/tracedx/tracedx/internal/otlpconv"
	"github.com/tracedx/tracedx/internal/tlsutil/tlstest"
)

// With a client CA, every listener completes a request only for a client
// presenting a certificate signed by that CA: none, or one of another CA,
// fails the TLS handshake.
func TestMTLSOnEveryListener(t *testing.T) {
	ca := tlstest.NewCA(t)
	_, cert, key := ca.Issue(t, "tracedx")
	s := startServer(t, func(c *config.Config) {
		c.Listen = config.Listen{OTLPGRPC: "127.0.0.1:0", OTLPHTTP: "127.0.0.1:0", Zipkin: "127.0.0.1:0", HTTP: "127.0.0.1:0", Tempo: "127.0.0.1:0"}
		c.TLS = config.TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.File}
	})
	good, _, _ := ca.Issue(t, "client")
	stranger, _, _ := tlstest.NewCA(t).Issue(t, "stranger")
	clients := map[string]*tls.Config{
		"no certificate":          {RootCAs: ca.Pool()},
		"another CA's":            {RootCAs: ca.Pool(), Certificates: []tls.Certificate{stranger}},
		"a certificate of the CA": {RootCAs: ca.Pool(), Certificates: []tls.Certificate{good}},
	}
	spans := otlpJSON(t, clientServerPair(model.TraceID{4, 2}))
	type target struct{ method, url, body string }
	targets := []target{
		{"POST", "https://" + s.Addr("otlp-http") + "/v1/traces", string(spans)},
		{"POST", "https://" + s.Addr("zipkin") + "/api/v2/spans", "[]"},
		{"GET", "https://" + s.Addr("http") + "/api/v1/services", ""},
		{"GET", "https://" + s.Addr("http") + "/", ""},
		{"GET", "https://" + s.Addr("tempo") + "/api/echo", ""},
	}
	for name, tc := range clients {
		accepted := name == "a certificate of the CA"
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
		for _, tg := range targets {
			req, _ := http.NewRequest(tg.method, tg.url, strings.NewReader(tg.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			switch {
			case accepted && (err != nil || resp.StatusCode/100 != 2):
				t.Errorf("%s, %s %s: %v %v, want a 2xx answer", name, tg.method, tg.url, err, resp)
			case !accepted && err == nil:
				t.Errorf("%s, %s %s: answered %d, want the handshake refused", name, tg.method, tg.url, resp.StatusCode)
			}
		}
		conn, err := grpc.NewClient(s.Addr("otlp-grpc"), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(otlpconv.ToTraces(clientServerPair(model.TraceID{4, 3}))))
		cancel()
		conn.Close()
		if accepted != (err == nil) {
			t.Errorf("%s, OTLP/gRPC export: %v", name, err)
		}
	}
}

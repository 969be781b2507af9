package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tracedx/tracedx/internal/api/tempo/tempopb"
	"github.com/tracedx/tracedx/internal/config"
	"github.com/tracedx/tracedx/internal/tlsutil/tlstest"
)

const (
	testWriteToken = "collector-0123456789"
	testReadToken  = "dashboard-0123456789"
)

// secureServer runs a server with TLS on every listener and a token file
// of one write and one read token; it returns a client trusting its CA.
func secureServer(t *testing.T) (*Server, *tls.Config) {
	t.Helper()
	ca := tlstest.NewCA(t)
	_, cert, key := ca.Issue(t, "tracedx")
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(testWriteToken+" - write\n"+testReadToken+" - read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *config.Config) {
		c.Listen = config.Listen{OTLPGRPC: "127.0.0.1:0", OTLPHTTP: "127.0.0.1:0", Zipkin: "127.0.0.1:0", HTTP: "127.0.0.1:0", Tempo: "127.0.0.1:0"}
		c.Storage.TraceIdleTimeout = 200 * time.Millisecond
		c.Auth.TokenFile = tokens
		c.TLS = config.TLS{CertFile: cert, KeyFile: key}
	})
	return s, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
}

// The OpenTelemetry Go SDK sends over TLS with a token, on both OTLP
// protocols, and the trace reads back over HTTPS with a read token.
func TestOTelSDKOverTLSWithToken(t *testing.T) {
	s, clientTLS := secureServer(t)
	auth := map[string]string{"Authorization": "Bearer " + testWriteToken}
	clients := map[string]otlptrace.Client{
		"grpc": otlptracegrpc.NewClient(otlptracegrpc.WithEndpoint(s.Addr("otlp-grpc")),
			otlptracegrpc.WithTLSCredentials(credentials.NewTLS(clientTLS)), otlptracegrpc.WithHeaders(auth)),
		"http": otlptracehttp.NewClient(otlptracehttp.WithEndpoint(s.Addr("otlp-http")),
			otlptracehttp.WithTLSClientConfig(clientTLS), otlptracehttp.WithHeaders(auth)),
	}
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	for proto, client := range clients {
		t.Run(proto, func(t *testing.T) {
			ctx := context.Background()
			exp, err := otlptrace.New(ctx, client)
			if err != nil {
				t.Fatal(err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
				sdktrace.WithResource(resource.NewWithAttributes("", attribute.String("service.name", "tls-"+proto))))
			_, span := tp.Tracer("test").Start(ctx, "GET /secure")
			span.End()
			if err := tp.Shutdown(ctx); err != nil {
				t.Fatalf("export over TLS: %v", err)
			}
			id := span.SpanContext().TraceID().String()
			var body struct {
				Spans []struct {
					Name string `json:"name"`
				} `json:"spans"`
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				code := httpsGet(t, httpsClient, "https://"+s.Addr("http")+"/api/v1/traces/"+id, testReadToken, &body)
				if code == http.StatusOK && len(body.Spans) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("trace %s not readable over HTTPS: status %d, %+v", id, code, body)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if body.Spans[0].Name != "GET /secure" {
				t.Errorf("read back %+v", body.Spans)
			}
		})
	}
}

func httpsGet(t *testing.T, c *http.Client, u, token string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
	}
	return resp.StatusCode
}

// Every listener refuses a missing or wrong token, and a token whose
// scope does not fit.
func TestEveryListenerRequiresAToken(t *testing.T) {
	s, clientTLS := secureServer(t)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	do := func(method, u, token string) int {
		req, _ := http.NewRequest(method, u, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	type target struct{ method, url, goodToken, wrongScope string }
	targets := []target{
		{"POST", "https://" + s.Addr("otlp-http") + "/v1/traces", testWriteToken, testReadToken},
		{"POST", "https://" + s.Addr("zipkin") + "/api/v2/spans", testWriteToken, testReadToken},
	}
	for _, p := range []string{"/api/v1/services", "/api/services", "/api/v3/services", "/metrics", "/api/v1/findings", "/"} {
		targets = append(targets, target{"GET", "https://" + s.Addr("http") + p, testReadToken, testWriteToken})
	}
	for _, p := range []string{"/api/search/tags", "/api/echo"} {
		targets = append(targets, target{"GET", "https://" + s.Addr("tempo") + p, testReadToken, testWriteToken})
	}
	for _, tg := range targets {
		name := tg.method + " " + tg.url
		if code := do(tg.method, tg.url, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", name, code)
		}
		if code := do(tg.method, tg.url, "not-a-valid-token-0000"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", name, code)
		}
		if code := do(tg.method, tg.url, tg.wrongScope); code != http.StatusForbidden {
			t.Errorf("%s with the other scope: %d, want 403", name, code)
		}
		if code := do(tg.method, tg.url, tg.goodToken); code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("%s with a good token: %d", name, code)
		}
	}
	if code := do("GET", "https://"+s.Addr("http")+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz must stay open for probes: %d", code)
	}
}

// The UI signs in with a form; the cookie then opens the APIs the UI calls.
func TestUILoginCookie(t *testing.T) {
	s, clientTLS := secureServer(t)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Jar: jar, Timeout: 10 * time.Second}
	base := "https://" + s.Addr("http")
	resp, err := c.PostForm(base+"/login", url.Values{"token": {testReadToken}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("after login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if code := httpsGet(t, c, base+"/api/v1/services", "", nil); code != http.StatusOK {
		t.Errorf("API with the login cookie: %d", code)
	}
	// The session says who is signed in; the UI shows "Sign out" from it.
	var sess struct {
		Auth   bool     `json:"auth"`
		Tenant string   `json:"tenant"`
		Scopes []string `json:"scopes"`
		Logout string   `json:"logout"`
	}
	if code := httpsGet(t, c, base+"/api/v1/session", "", &sess); code != http.StatusOK || !sess.Auth || sess.Logout != "/logout" || !slices.Contains(sess.Scopes, "read") {
		t.Errorf("session: %d %+v", code, sess)
	}
	// Signing out takes a POST: a GET (an <img src>) must not do it.
	resp, err = c.Get(base + "/logout")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /logout: %d, want 405", resp.StatusCode)
	}
	if code := httpsGet(t, c, base+"/api/v1/services", "", nil); code != http.StatusOK {
		t.Errorf("API after GET /logout: %d, want still signed in", code)
	}
	resp, err = c.PostForm(base+"/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if code := httpsGet(t, c, base+"/api/v1/services", "", nil); code != http.StatusUnauthorized {
		t.Errorf("API after logout: %d", code)
	}
	if code := httpsGet(t, c, base+"/api/v1/session", "", nil); code != http.StatusUnauthorized {
		t.Errorf("session after logout: %d, want 401", code)
	}
}

// Reaching beyond loopback without tokens needs an explicit flag.
func TestNonLoopbackNeedsAuthOrInsecureListen(t *testing.T) {
	_, err := config.Load([]string{"--http-addr", "0.0.0.0:16686"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"0.0.0.0:16686"`) || !strings.Contains(err.Error(), "--insecure-listen") {
		t.Fatalf("want a refusal naming the address and the way out, got %v", err)
	}
	for _, args := range [][]string{
		{"--http-addr", "0.0.0.0:16686", "--insecure-listen"},
		{"--http-addr", "localhost:16686"},
		{"--http-addr", "[::1]:16686"},
	} {
		if _, err := config.Load(args, nil); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	if _, err := config.Load([]string{"--otlp-grpc-addr", ":4317"}, nil); err == nil {
		t.Error(":4317 binds every interface and must be refused")
	}
}

// An OTLP/gRPC exporter without a token gets codes.Unauthenticated, with
// a read token PermissionDenied.
func TestGRPCIngestCodes(t *testing.T) {
	s, clientTLS := secureServer(t)
	for token, want := range map[string]codes.Code{"": codes.Unauthenticated, testReadToken: codes.PermissionDenied} {
		conn, err := grpc.NewClient(s.Addr("otlp-grpc"), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequest())
		_ = conn.Close()
		if status.Code(err) != want {
			t.Errorf("token %q: %v, want %s", token, err, want)
		}
	}
}

// Grafana streams Tempo searches over gRPC to the Tempo port: over TLS,
// without a token it gets codes.Unauthenticated, with a read token
// the search runs.
func TestTempoGRPCStreamingNeedsAToken(t *testing.T) {
	s, clientTLS := secureServer(t)
	search := func(token string) error {
		conn, err := grpc.NewClient(s.Addr("tempo"), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		stream, err := tempopb.NewStreamingQuerierClient(conn).Search(ctx, &tempopb.SearchRequest{Query: "{}", Start: uint32(time.Now().Add(-time.Hour).Unix()), End: uint32(time.Now().Unix())})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	if err := search(""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a token: %v", err)
	}
	if err := search(testWriteToken); status.Code(err) != codes.PermissionDenied {
		t.Errorf("with a write token: %v", err)
	}
	if err := search(testReadToken); err != nil {
		t.Errorf("with a read token: %v", err)
	}
}

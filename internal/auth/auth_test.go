package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	writer = "w-0123456789abcdef"
	reader = "r-0123456789abcdef"
	both   = "b-0123456789abcdef"
)

func tokenFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, content string) *Tokens {
	t.Helper()
	tk, err := Load(tokenFile(t, content), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestBothFileFormats(t *testing.T) {
	lines := "# collectors\n" + writer + " acme write\n" + reader + " acme read # dashboards\n\n" + both + "\n"
	yml := "tokens:\n  - token: " + writer + "\n    tenant: acme\n    scopes: [write]\n  - token: " + reader +
		"\n    tenant: acme\n    scopes: [read]\n  - token: " + both + "\n"
	for name, content := range map[string]string{"lines": lines, "yaml": yml} {
		t.Run(name, func(t *testing.T) {
			tk := load(t, content)
			w, ok := tk.Check(writer)
			if !ok || w.Tenant != "acme" || !w.Has(Write) || w.Has(Read) {
				t.Errorf("writer: %+v %v", w, ok)
			}
			r, ok := tk.Check(reader)
			if !ok || !r.Has(Read) || r.Has(Write) {
				t.Errorf("reader: %+v %v", r, ok)
			}
			b, ok := tk.Check(both)
			if !ok || b.Tenant != "" || !b.Has(Read) || !b.Has(Write) {
				t.Errorf("no scopes should grant both: %+v %v", b, ok)
			}
			for _, bad := range []string{"", writer[:len(writer)-1], writer + "x", "acme"} {
				if _, ok := tk.Check(bad); ok {
					t.Errorf("%q accepted", bad)
				}
			}
		})
	}
}

func TestBadFilesAreRefusedWithAReason(t *testing.T) {
	for content, want := range map[string]string{
		"":                                  "no tokens",
		"short acme read\n":                 "shorter than 16",
		writer + " acme admin\n":            `unknown scope "admin"`,
		writer + " - read,peer\n":           "cluster.token_file",
		writer + "\n" + writer + "\n":       "listed twice",
		writer + " a read extra\n":          "line 1",
		"tokens:\n  - token: x\n    y: 1\n": "yaml",
	} {
		_, err := Load(tokenFile(t, content), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error mentioning %q", content, err, want)
		}
	}
}

func TestReloadOnChangeKeepsOldSetOnError(t *testing.T) {
	path := tokenFile(t, writer+"\n")
	tk, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tk.Watch(ctx, 10*time.Millisecond)
	if err := os.WriteFile(path, []byte(reader+" t read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Same size as before is possible; the modification time changes too.
	waitFor(t, func() bool { _, ok := tk.Check(reader); return ok })
	if _, ok := tk.Check(writer); ok {
		t.Error("removed token still accepted")
	}
	if err := os.WriteFile(path, []byte("garbage that is not a token file at all here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, ok := tk.Check(reader); !ok {
		t.Error("a broken file must leave the previous tokens in force")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

func TestRequire(t *testing.T) {
	tk := load(t, writer+" acme write\n"+reader+" acme read\n")
	var seen Identity
	h := tk.Require(Read, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = FromContext(r.Context())
	}), "/healthz")
	do := func(path string, hdr map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := do("/api/v1/services", nil); rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d %v", rec.Code, rec.Header())
	}
	if rec := do("/api/v1/services", map[string]string{"Authorization": "Bearer wrong-wrong-wrong-wrong"}); rec.Code != 401 {
		t.Errorf("wrong token: %d", rec.Code)
	}
	if rec := do("/api/v1/services", map[string]string{"Authorization": "Bearer " + writer}); rec.Code != 403 {
		t.Errorf("write-only token on a read path: %d", rec.Code)
	}
	if rec := do("/api/v1/services", map[string]string{"Authorization": "Bearer " + reader}); rec.Code != 200 || seen.Tenant != "acme" {
		t.Errorf("reader: %d, identity %+v", rec.Code, seen)
	}
	if rec := do("/api/v1/services", map[string]string{"Cookie": CookieName + "=" + reader}); rec.Code != 200 {
		t.Errorf("cookie: %d", rec.Code)
	}
	if rec := do("/healthz", nil); rec.Code != 200 {
		t.Errorf("public path: %d", rec.Code)
	}
	rec := do("/", map[string]string{"Accept": "text/html"})
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), `action="/login"`) {
		t.Errorf("a browser without a token should get the login form with 401: %d %.80s", rec.Code, rec.Body.String())
	}
}

func TestLoginSetsAStrictHttpOnlyCookie(t *testing.T) {
	tk := load(t, writer+" acme write\n"+reader+" acme read\n")
	login := tk.LoginHandler()
	post := func(tok string, tls bool) *http.Response {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if !tls {
			req.TLS = nil
		}
		rec := httptest.NewRecorder()
		login.ServeHTTP(rec, req)
		return rec.Result()
	}
	if r := post("not-a-token-at-all", false); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Errorf("bad token: %d, cookies %v", r.StatusCode, r.Cookies())
	}
	if r := post(writer, false); r.StatusCode != 403 || len(r.Cookies()) != 0 {
		t.Errorf("write-only token: %d, cookies %v", r.StatusCode, r.Cookies())
	}
	r := post(reader, false)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("good token: %d, cookies %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if c.Name != CookieName || c.Value != reader || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure {
		t.Errorf("cookie over plain HTTP: %+v", c)
	}
	req := httptest.NewRequest("POST", "https://x/login", strings.NewReader("token="+reader))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	login.ServeHTTP(rec, req)
	if cs := rec.Result().Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Errorf("cookie over TLS must be Secure: %+v", cs)
	}
}

func TestGRPCInterceptorCodes(t *testing.T) {
	tk := load(t, writer+" acme write\n"+reader+" acme read\n")
	ic := tk.UnaryInterceptor(Write)
	call := func(md metadata.MD) (Identity, error) {
		ctx := metadata.NewIncomingContext(context.Background(), md)
		var id Identity
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
			id, _ = FromContext(ctx)
			return nil, nil
		})
		return id, err
	}
	if _, err := call(nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	if _, err := call(metadata.Pairs("authorization", "Bearer "+reader)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("read token on ingest: %v", err)
	}
	if id, err := call(metadata.Pairs("authorization", "Bearer "+writer)); err != nil || id.Tenant != "acme" {
		t.Errorf("write token: %v %+v", err, id)
	}
}

// SIGHUP reloads the file at once (the poll interval here is an hour).
func TestReloadOnSIGHUP(t *testing.T) {
	// Our own subscription keeps SIGHUP from ending the test process
	// before Watch subscribes.
	own := make(chan os.Signal, 16)
	signal.Notify(own, syscall.SIGHUP)
	defer signal.Stop(own)
	path := tokenFile(t, writer+"\n")
	tk, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tk.Watch(ctx, time.Hour)
	if err := os.WriteFile(path, []byte(reader+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, ok := tk.Check(reader); ok {
			break
		}
		if time.Now().After(end) {
			t.Fatal("SIGHUP did not reload the token file")
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	}
}

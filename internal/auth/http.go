package auth

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CookieName is the cookie the UI's login form sets.
const CookieName = "tracedx_token"

// tokenOf returns the bearer token of a request: the Authorization header,
// else the login cookie.
func tokenOf(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value
	}
	return ""
}

// Require wraps next so that only requests with a valid token holding
// scope get through, with their Identity in the context. Without a valid
// token the answer is 401 (a browser asking for a page gets the login
// form), with one lacking the scope 403. Paths in public pass unchecked.
func (t *Tokens) Require(scope Scope, next http.Handler, public ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range public {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		id, ok := t.Check(tokenOf(r))
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="tracedx"`)
			if isGRPC(r) {
				grpcRefuse(w, 16, "a valid bearer token is required") // codes.Unauthenticated
				return
			}
			if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				renderLogin(w, http.StatusUnauthorized, "")
				return
			}
			httpError(w, http.StatusUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
		case !id.Has(scope):
			if isGRPC(r) {
				grpcRefuse(w, 7, "the token lacks the "+string(scope)+" scope") // codes.PermissionDenied
				return
			}
			httpError(w, http.StatusForbidden, "the token lacks the "+string(scope)+" scope")
		default:
			next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
		}
	})
}

func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcRefuse answers a gRPC call carried over HTTP/2 (the Tempo port)
// with a trailers-only status, so gRPC clients see the code, not an HTTP
// error.
func grpcRefuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Grpc-Status", strconv.Itoa(code))
	w.Header().Set("Grpc-Message", msg)
	w.WriteHeader(http.StatusOK)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(`{"error":"` + template.JSEscapeString(msg) + `"}` + "\n"))
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tracedx: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;display:flex;justify-content:center;margin-top:15vh}
form{display:flex;flex-direction:column;gap:.6em;min-width:22em}input{padding:.4em}.err{color:#b00}</style></head>
<body><form method="post" action="/login">
<h1>tracedx</h1>
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
{{if .}}<p class="err">{{.}}</p>{{end}}
<button type="submit">Sign in</button>
</form></body></html>
`))

func renderLogin(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = loginPage.Execute(w, msg)
}

// LoginPath and LogoutPath are the UI's sign-in and sign-out endpoints;
// they must be public paths of Require. SessionPath tells the UI that
// authentication is on (it exists only then), so it offers to sign out.
const (
	LoginPath   = "/login"
	LogoutPath  = "/logout"
	SessionPath = "/api/v1/session"
)

// SessionHandler answers who the request authenticated as: {"auth": true,
// "tenant": ..., "scopes": [...], "logout": "/logout"}, or {"auth": false}
// when the server checks no tokens. Behind Require, a request without a
// valid token never reaches it.
func SessionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, on := FromContext(r.Context())
		scopes := make([]string, 0, len(id.Scopes))
		for _, s := range id.Scopes {
			scopes = append(scopes, string(s))
		}
		out := struct {
			Auth   bool     `json:"auth"`
			Tenant string   `json:"tenant,omitempty"`
			Scopes []string `json:"scopes,omitempty"`
			Logout string   `json:"logout,omitempty"`
		}{Auth: on, Tenant: id.Tenant, Scopes: scopes}
		if on {
			out.Logout = LogoutPath
		}
		body, err := json.Marshal(out)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "encoding the session: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})
}

// LoginHandler serves the login form (GET), checks a submitted token
// (POST) and keeps it in an HttpOnly, SameSite=Strict cookie (Secure when
// the connection is TLS), then sends the browser to the UI. A POST to
// LogoutPath clears the cookie.
func (t *Tokens) LoginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == LogoutPath {
			// POST only: a GET would let any page sign the user out with an
			// <img src=/logout>.
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", "POST")
				httpError(w, http.StatusMethodNotAllowed, "sign out with POST /logout")
				return
			}
			setCookie(w, r, "", -1)
			http.Redirect(w, r, LoginPath, http.StatusSeeOther)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			renderLogin(w, http.StatusOK, "")
		case http.MethodPost:
			r.Body = http.MaxBytesReader(w, r.Body, 4096)
			tok := r.PostFormValue("token")
			id, ok := t.Check(tok)
			if !ok {
				renderLogin(w, http.StatusUnauthorized, "This token is not valid.")
				return
			}
			if !id.Has(Read) {
				renderLogin(w, http.StatusForbidden, "This token may only send data; the UI needs the read scope.")
				return
			}
			setCookie(w, r, tok, int((30 * 24 * time.Hour).Seconds()))
			http.Redirect(w, r, "/", http.StatusSeeOther)
		default:
			w.Header().Set("Allow", "GET, POST")
			httpError(w, http.StatusMethodNotAllowed, "use GET or POST")
		}
	})
}

func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Without tokens the session says so, and offers no sign-out.
func TestSessionWithoutAuth(t *testing.T) {
	rec := httptest.NewRecorder()
	SessionHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SessionPath, nil))
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	if rec.Code != http.StatusOK || got["auth"] != false || got["logout"] != nil {
		t.Errorf("%d %v, want auth false without a logout path", rec.Code, got)
	}
}

// With an identity it names the tenant, the scopes and where to sign out.
func TestSessionWithIdentity(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, SessionPath, nil)
	req = req.WithContext(WithIdentity(req.Context(), Identity{Tenant: "acme", Scopes: []Scope{Read}}))
	SessionHandler().ServeHTTP(rec, req)
	var got struct {
		Auth   bool     `json:"auth"`
		Tenant string   `json:"tenant"`
		Scopes []string `json:"scopes"`
		Logout string   `json:"logout"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Auth || got.Tenant != "acme" || len(got.Scopes) != 1 || got.Scopes[0] != string(Read) || got.Logout != LogoutPath {
		t.Errorf("session %+v", got)
	}
}

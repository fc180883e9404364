package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/credential"
)

func TestAuthenticationFailures(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "1000"))
	appID, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	createUser(t, e, e.Bootstrap, "", "alice")
	revokedID, revoked := createToken(t, e, "gone", "")
	want(t, e.JSON(t, "DELETE", "/v1/admin/tokens/"+revokedID, e.Bootstrap, nil), http.StatusOK, "")
	rotatedApp, rotated := createApp(t, e, e.Bootstrap, map[string]any{"name": "rotated"})
	want(t, e.JSON(t, "POST", "/v1/admin/applications/"+rotatedApp+"/rotate-secret", e.Bootstrap, nil), http.StatusOK, "")
	deletedApp, deleted := createApp(t, e, e.Bootstrap, map[string]any{"name": "deleted"})
	want(t, e.JSON(t, "DELETE", "/v1/admin/applications/"+deletedApp, e.Bootstrap, nil), http.StatusNoContent, "")
	unknownApp, _ := credential.New(credential.AppSecret)
	unknownAdmin, _ := credential.New(credential.AdminToken)
	_ = appID

	headers := []struct{ name, header string }{
		{"missing", ""},
		{"empty bearer", "Bearer "},
		{"scheme only", "Bearer"},
		{"basic scheme", "Basic " + secret},
		{"device scheme", "Device " + secret},
		{"token without scheme", secret},
		{"malformed token", "Bearer pmfa_app_short"},
		{"unknown prefix", "Bearer sk_live_" + strings.Repeat("a", 43)},
		{"unknown app secret", "Bearer " + unknownApp.Reveal()},
		{"unknown admin token", "Bearer " + unknownAdmin.Reveal()},
		{"revoked admin token", "Bearer " + revoked},
		{"rotated app secret", "Bearer " + rotated},
		{"deleted app secret", "Bearer " + deleted},
		{"bootstrap token truncated", "Bearer " + e.Bootstrap[:len(e.Bootstrap)-1]},
		{"bootstrap token extended", "Bearer " + e.Bootstrap + "x"},
		{"huge token", "Bearer " + strings.Repeat("x", 4000)},
		{"two tokens", "Bearer " + secret + " " + secret},
	}
	endpoints := []struct{ method, path string }{
		{"GET", "/v1/users/alice/devices"},
		{"GET", "/v1/admin/tenants"},
		{"POST", "/v1/admin/applications"},
	}
	var messages []string
	for _, h := range headers {
		for _, ep := range endpoints {
			r := e.Do(t, apitest.Req{Method: ep.method, Path: ep.path, Header: map[string]string{"Authorization": h.header}})
			if r.Status != http.StatusUnauthorized || r.Code() != "unauthorized" {
				t.Errorf("%s on %s %s: %d %s", h.name, ep.method, ep.path, r.Status, r.Body)
			}
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: no WWW-Authenticate", h.name)
			}
			var er struct{ Error struct{ Message string } }
			r.Decode(t, &er)
			messages = append(messages, er.Error.Message)
		}
	}
	// The answer never says which part was wrong.
	for _, m := range messages {
		if m != messages[0] {
			t.Fatalf("failure messages differ: %q vs %q", m, messages[0])
		}
	}
	// Case-insensitive scheme (RFC 7235) is accepted.
	r := e.Do(t, apitest.Req{Method: "GET", Path: "/v1/users/alice/devices", Header: map[string]string{"Authorization": "bearer " + secret}})
	want(t, r, http.StatusOK, "")
}

func TestScopes(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	_, admin := createToken(t, e, "ops", "")
	createUser(t, e, e.Bootstrap, "", "alice")
	// An application secret is a valid credential, but not an admin's.
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", secret, nil), http.StatusForbidden, "forbidden")
	want(t, e.JSON(t, "POST", "/v1/admin/applications", secret, map[string]any{"name": "x"}), http.StatusForbidden, "forbidden")
	// An admin credential is not a relying party's.
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", admin, nil), http.StatusForbidden, "forbidden")
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", e.Bootstrap, nil), http.StatusForbidden, "forbidden")
}

func TestAuthFailureRateLimit(t *testing.T) {
	t.Parallel()
	const limit = 30 // the lowest limit DESIGN.md allows
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "30"))
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	createUser(t, e, e.Bootstrap, "", "alice")
	// Successful calls do not count.
	for range 2 * limit {
		want(t, e.JSON(t, "GET", "/v1/users/alice/devices", secret, nil), http.StatusOK, "")
	}
	for i := range limit {
		r := e.JSON(t, "GET", "/v1/users/alice/devices", "pmfa_app_wrong", nil)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d of %d: %d (limited too early)", i+1, limit, r.Status)
		}
	}
	r := e.JSON(t, "GET", "/v1/users/alice/devices", "pmfa_app_wrong", nil)
	want(t, r, http.StatusTooManyRequests, "rate_limited")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", "pmfa_adm_wrong", nil), http.StatusTooManyRequests, "rate_limited")
	// A valid credential from the same address is never refused: an attacker
	// sharing an address (or a proxy) with honest callers cannot lock them out.
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", secret, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", e.Bootstrap, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/healthz", "", nil), http.StatusOK, "")
	m := string(e.JSON(t, "GET", "/metrics", "", nil).Body)
	if !strings.Contains(m, `pushmfa_auth_failures_total{outcome="rate_limited",scheme="bearer"} 2`) {
		t.Fatal("rate-limited failures not counted")
	}
}

// TestTrustedProxies checks that the client address comes from
// X-Forwarded-For only when the peer is a trusted proxy.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	fail := func(e *apitest.Env, forwardedFor string) *apitest.Response {
		return e.Do(t, apitest.Req{Method: "GET", Path: "/v1/admin/tenants", Token: "pmfa_adm_wrong",
			Header: map[string]string{"X-Forwarded-For": forwardedFor}})
	}
	// Behind a trusted proxy, each client has its own budget.
	behind := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "30"), apitest.WithEnv("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"))
	for range 30 {
		want(t, fail(behind, "203.0.113.5, 10.1.1.1"), http.StatusUnauthorized, "unauthorized")
	}
	want(t, fail(behind, "203.0.113.5, 10.1.1.1"), http.StatusTooManyRequests, "rate_limited")
	want(t, fail(behind, "203.0.113.6"), http.StatusUnauthorized, "unauthorized")
	// A client cannot escape its budget by forging the left part of the chain.
	want(t, fail(behind, "198.51.100.1, 203.0.113.5"), http.StatusTooManyRequests, "rate_limited")

	// Without trusted proxies the header is ignored: every request here
	// comes from 127.0.0.1, whatever it claims.
	direct := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "30"))
	for i := range 30 {
		want(t, fail(direct, fmt.Sprintf("203.0.113.%d", i)), http.StatusUnauthorized, "unauthorized")
	}
	want(t, fail(direct, "198.51.100.99"), http.StatusTooManyRequests, "rate_limited")
}

func TestConfigRefusesLowAuthLimit(t *testing.T) {
	t.Parallel()
	// DESIGN.md: the limit is never lower than 30 failures a minute.
	_, err := loadConfig(map[string]string{"AUTH_FAILURE_LIMIT": "29"})
	if err == nil || !strings.Contains(err.Error(), "AUTH_FAILURE_LIMIT") {
		t.Fatalf("err = %v", err)
	}
}

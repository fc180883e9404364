package api_test

import (
	"net/http"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
)

// want fails the test unless the reply has the status (and, for errors, the
// code).
func want(t *testing.T, r *apitest.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Code() != code {
		t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.Code(), status, code, r.Body)
	}
}

func createTenant(t *testing.T, e *apitest.Env, slug string) {
	t.Helper()
	want(t, e.JSON(t, "POST", "/v1/admin/tenants", e.Bootstrap, map[string]any{"slug": slug}), http.StatusCreated, "")
}

// createApp makes an application and returns its id and secret.
func createApp(t *testing.T, e *apitest.Env, token string, body map[string]any) (id, secret string) {
	t.Helper()
	r := e.JSON(t, "POST", "/v1/admin/applications", token, body)
	want(t, r, http.StatusCreated, "")
	m := r.Map(t)
	return m["id"].(string), m["secret"].(string)
}

// createToken mints an admin token (tenant "" = global) with the bootstrap
// token and returns its id and secret.
func createToken(t *testing.T, e *apitest.Env, name, tenant string) (id, token string) {
	t.Helper()
	body := map[string]any{"name": name}
	if tenant != "" {
		body["tenant"] = tenant
	}
	r := e.JSON(t, "POST", "/v1/admin/tokens", e.Bootstrap, body)
	want(t, r, http.StatusCreated, "")
	m := r.Map(t)
	return m["id"].(string), m["token"].(string)
}

func createUser(t *testing.T, e *apitest.Env, token, tenant, user string) map[string]any {
	t.Helper()
	body := map[string]any{"user": user}
	if tenant != "" {
		body["tenant"] = tenant
	}
	r := e.JSON(t, "POST", "/v1/admin/users", token, body)
	want(t, r, http.StatusCreated, "")
	return r.Map(t)
}

package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
)

// TestSecretsNeverLogged drives calls that carry every kind of secret, good
// and bad, and checks that none of them, nor any Authorization header,
// reaches the log.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "VPN", "duo": true,
		"webhook_url": "https://rp.example/hook"})
	app := r.Map(t)
	secrets := []string{e.Bootstrap, app["secret"].(string), app["duo_skey"].(string), app["webhook_secret"].(string)}
	_, token := createToken(t, e, "ops", "")
	secrets = append(secrets, token)
	createUser(t, e, token, "", "alice")
	e.JSON(t, "GET", "/v1/users/alice/devices", app["secret"].(string), nil)
	r = e.JSON(t, "POST", "/v1/admin/applications/"+app["id"].(string)+"/rotate-secret", token, nil)
	secrets = append(secrets, r.Map(t)["secret"].(string))
	wrong := "pmfa_app_" + strings.Repeat("Z", 43)
	secrets = append(secrets, wrong)
	e.JSON(t, "GET", "/v1/users/alice/devices", wrong, nil)
	e.JSON(t, "GET", "/v1/admin/tenants", "not-a-token-but-secret-looking-value", nil)
	secrets = append(secrets, "not-a-token-but-secret-looking-value")
	e.Do(t, apitest.Req{Method: "POST", Path: "/v1/admin/users", Token: token, Body: `{"user": "` + e.Bootstrap + `"`,
		Header: map[string]string{"Content-Type": "application/json"}})

	logs := e.Logs.String()
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatal("no access log lines at all")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("secret %.12s... is in the log", s)
		}
	}
	if strings.Contains(strings.ToLower(logs), "authorization") || strings.Contains(logs, "Bearer") {
		t.Error("an Authorization header reached the log")
	}
	// Every log line carries a request id when it is about a request.
	for _, line := range e.Logs.Lines(t) {
		if line["msg"] == "request" && line["request_id"] == nil {
			t.Errorf("access log without request id: %v", line)
		}
	}
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	want(t, e.JSON(t, "GET", "/healthz", "", nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/readyz", "", nil), http.StatusOK, "")
	e.JSON(t, "GET", "/v1/admin/tenants", e.Bootstrap, nil)
	e.JSON(t, "GET", "/v1/admin/tenants", "bad", nil)
	r := e.JSON(t, "GET", "/metrics", "", nil)
	want(t, r, http.StatusOK, "")
	body := string(r.Body)
	for _, s := range []string{
		`pushmfa_http_requests_total{method="GET",route="/v1/admin/tenants",status="200"} 1`,
		`pushmfa_http_requests_total{method="GET",route="/v1/admin/tenants",status="401"} 1`,
		`pushmfa_http_request_duration_seconds_bucket{method="GET",route="/v1/admin/tenants"`,
		`pushmfa_auth_failures_total{outcome="unauthorized",scheme="bearer"} 1`,
		`pushmfa_db_pool_max_connections`,
		`pushmfa_db_pool_acquired_connections`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %s", s)
		}
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}
}

func TestMethodLabelsAreBounded(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	for i := range 20 {
		e.Do(t, apitest.Req{Method: fmt.Sprintf("X%d", i), Path: "/healthz"})
	}
	m := string(e.JSON(t, "GET", "/metrics", "", nil).Body)
	if strings.Contains(m, `method="X1"`) || !strings.Contains(m, `method="other"`) {
		t.Fatal("arbitrary methods became metric labels")
	}
}

func TestMetricsOnOwnListener(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("METRICS_ADDR", "127.0.0.1:0"))
	want(t, e.JSON(t, "GET", "/metrics", "", nil), http.StatusNotFound, "not_found")
}

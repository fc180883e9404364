package api_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/config"
)

func loadConfig(env map[string]string) (*config.Config, error) {
	return config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

// TestBadInput sends every kind of bad body to every endpoint that takes
// one. Each must get a 4xx with a stable code, never a 500 or a panic, and
// must leave nothing behind.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "100000"))
	appID, _ := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	createUser(t, e, e.Bootstrap, "", "alice")

	endpoints := []struct{ method, path string }{
		{"POST", "/v1/admin/tenants"},
		{"PATCH", "/v1/admin/tenants/default/policy"},
		{"POST", "/v1/admin/applications"},
		{"PATCH", "/v1/admin/applications/" + appID},
		{"POST", "/v1/admin/users"},
		{"POST", "/v1/admin/tokens"},
		{"POST", "/v1/admin/applications/" + appID + "/rotate-secret"},
		{"POST", "/v1/admin/users/alice/lock"},
		{"POST", "/v1/admin/users/alice/unlock"},
	}
	json := "application/json"
	bodies := []struct {
		name, body, contentType string
		codes                   []string // acceptable codes
		status                  int
	}{
		{"truncated", `{"name": "x"`, json, []string{"invalid_json"}, 400},
		{"truncated string", `{"name": "x`, json, []string{"invalid_json"}, 400},
		{"syntax", `{"name" "x"}`, json, []string{"invalid_json"}, 400},
		{"trailing garbage", `{} x`, json, []string{"invalid_json"}, 400},
		{"two objects", `{}{}`, json, []string{"invalid_json"}, 400},
		{"array", `[]`, json, []string{"invalid_request", "invalid_json"}, 400},
		{"string", `"x"`, json, []string{"invalid_request", "invalid_json"}, 400},
		{"number", `42`, json, []string{"invalid_request", "invalid_json"}, 400},
		{"null", `null`, json, []string{"invalid_request", "invalid_json", "invalid_policy"}, 400},
		{"unknown field", `{"zzz_unknown": 1}`, json, []string{"invalid_request"}, 400},
		{"wrong types", `{"name": 1, "slug": [], "user": {}, "tenant": 5, "duo": "yes", "challenge_ttl_seconds": "x"}`, json,
			[]string{"invalid_request", "invalid_policy"}, 400},
		{"invalid utf-8", "{\"name\": \"\xff\xfe\"}", json, []string{"invalid_json"}, 400},
		{"invalid utf-8 key", "{\"\xc3\x28\": 1}", json, []string{"invalid_json"}, 400},
		{"nul in string", `{"name": "a\u0000b", "user": "a\u0000b", "slug": "a\u0000b"}`, json,
			[]string{"invalid_request", "invalid_policy"}, 400},
		{"deep nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), json,
			[]string{"invalid_request", "invalid_json"}, 400},
		{"wrong content type", `{"name": "x"}`, "text/plain", []string{"unsupported_media_type"}, 415},
		{"form content type", `name=x`, "application/x-www-form-urlencoded", []string{"unsupported_media_type"}, 415},
		{"latin1 charset", `{"name": "x"}`, "application/json; charset=iso-8859-1", []string{"unsupported_media_type"}, 415},
		{"10 MB", `{"name": "` + strings.Repeat("a", 10<<20) + `"}`, json, []string{"request_too_large"}, 413},
	}
	for _, ep := range endpoints {
		for _, b := range bodies {
			t.Run(ep.method+" "+ep.path+" "+b.name, func(t *testing.T) {
				r := e.Do(t, apitest.Req{Method: ep.method, Path: ep.path, Token: e.Bootstrap, Body: b.body,
					Header: map[string]string{"Content-Type": b.contentType}})
				ok := false
				for _, c := range b.codes {
					ok = ok || r.Code() == c
				}
				if r.Status != b.status || !ok {
					t.Fatalf("%d %s (want %d %v)", r.Status, bytes.TrimSpace(r.Body[:min(len(r.Body), 300)]), b.status, b.codes)
				}
			})
		}
	}
	// Required bodies may not be empty; optional ones may.
	want(t, e.Do(t, apitest.Req{Method: "POST", Path: "/v1/admin/users", Token: e.Bootstrap}), http.StatusBadRequest, "invalid_json")
	want(t, e.Do(t, apitest.Req{Method: "POST", Path: "/v1/admin/users/alice/lock", Token: e.Bootstrap}), http.StatusOK, "")

	// Nothing was created by any refused request.
	r := e.JSON(t, "GET", "/v1/admin/users", e.Bootstrap, nil)
	if n := len(r.Map(t)["users"].([]any)); n != 1 {
		t.Fatalf("%d users after bad input, want 1", n)
	}
	r = e.JSON(t, "GET", "/v1/admin/tenants", e.Bootstrap, nil)
	if n := len(r.Map(t)["tenants"].([]any)); n != 1 {
		t.Fatalf("%d tenants after bad input, want 1", n)
	}
	if strings.Contains(e.Logs.String(), "panic") {
		t.Fatal("a request reached the panic handler")
	}
}

func TestBadQueryAndPath(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	cases := []struct {
		path, code string
		status     int
	}{
		{"/v1/admin/users?cursor=%zz", "invalid_request", 400},
		{"/v1/admin/users?tenant=%00", "not_found", 404},
		{"/v1/admin/users?limit=-1", "invalid_request", 400},
		{"/v1/admin/users?tenant=UPPER", "not_found", 404},
		{"/v1/admin/users/%FF%FE", "not_found", 404},
		{"/v1/admin/users/" + strings.Repeat("x", 300), "not_found", 404},
		{"/v1/admin/audit?since=yesterday", "invalid_request", 400},
		{"/v1/admin/audit?until=2026-13-01T00:00:00Z", "invalid_request", 400},
		{"/v1/admin/audit?cursor=YTox", "", 200},
		{"/v1/admin/audit?cursor=YTotMQ", "invalid_request", 400},
		{"/v1/admin/audit?type=" + strings.Repeat("a", 65), "invalid_request", 400},
		{"/v1/admin/audit?user=nobody", "not_found", 404},
		{"/v1/admin/audit?type=%00", "invalid_request", 400},
		{"/v1/admin/audit?type=%FF", "invalid_request", 400},
		{"/v1/admin/audit?type=user", "invalid_request", 400},
		{"/v1/admin/audit?user=%00", "not_found", 404},
		{"/v1/admin/audit?user=%FF", "not_found", 404},
		{"/v1/admin/users?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("u:\xff")), "invalid_request", 400},
		{"/v1/admin/users?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("u:a\x00b")), "invalid_request", 400},
		{"/v1/admin/users?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("u:zzz")), "", 200},
		{"/v1/admin/audit?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("a:\x00")), "invalid_request", 400},
		{"/v1/admin/applications?tenant=%FF", "not_found", 404},
		{"/v1/admin/tenants/%00/policy", "not_found", 404},
		{"/v1/admin/nothing-here", "not_found", 404},
		{"/v2/anything", "not_found", 404},
	}
	for _, tc := range cases {
		r := e.JSON(t, "GET", tc.path, e.Bootstrap, nil)
		want(t, r, tc.status, tc.code)
	}
	// Every query parameter of every GET endpoint, fed NUL and invalid
	// UTF-8: a 4xx or a 200, never a 500 (apitest fails the test on 5xx).
	for _, path := range []string{"/v1/admin/users", "/v1/admin/audit", "/v1/admin/applications", "/v1/admin/tokens",
		"/v1/admin/tenants", "/v1/admin/audit/verify", "/v1/admin/users/x", "/v1/admin/users/x/devices"} {
		for _, p := range []string{"tenant", "user", "type", "since", "until", "limit", "cursor"} {
			for _, v := range []string{"%00", "%FF%FE", "%C3%28", strings.Repeat("a", 5000)} {
				r := e.JSON(t, "GET", path+"?"+p+"="+v, e.Bootstrap, nil)
				if r.Status >= 500 {
					t.Errorf("%s?%s=%.10s: %d", path, p, v, r.Status)
				}
			}
		}
	}

	// Wrong method: 405 with Allow.
	r := e.JSON(t, "PUT", "/v1/admin/tenants", e.Bootstrap, nil)
	want(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if allow := r.Header.Values("Allow"); strings.Join(allow, ",") != "GET,POST" {
		t.Fatalf("Allow = %v", allow)
	}
}

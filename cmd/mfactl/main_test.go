package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// mfactl runs the CLI in-process against the env's server.
func mfactl(t *testing.T, e *apitest.Env, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"MFACTL_URL": e.URL, "MFACTL_TOKEN": token}
	code = Main(context.Background(), args, &out, &errb, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return code, out.String(), errb.String()
}

func must(t *testing.T, e *apitest.Env, token string, args ...string) string {
	t.Helper()
	code, out, errOut := mfactl(t, e, token, args...)
	if code != 0 {
		t.Fatalf("mfactl %v: exit %d: %s%s", args, code, out, errOut)
	}
	return out
}

// TestAdminFlow is the "done when": with a minted admin token,
// mfactl creates an application and lists users.
func TestAdminFlow(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	out := must(t, e, e.Bootstrap, "--json", "admin", "token", "create", "--name", "ops")
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || !strings.HasPrefix(tok.Token, "pmfa_adm_") {
		t.Fatalf("token create: %s", out)
	}
	admin := tok.Token

	out = must(t, e, admin, "apps", "create", "Contoso VPN", "--duo")
	for _, w := range []string{"secret:", "pmfa_app_", "duo ikey:", "duo skey:", "shown this once"} {
		if !strings.Contains(out, w) {
			t.Errorf("apps create output lacks %q:\n%s", w, out)
		}
	}
	must(t, e, admin, "users", "create", "alice")
	must(t, e, admin, "users", "create", "bob")
	out = must(t, e, admin, "users", "list")
	if !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Fatalf("users list:\n%s", out)
	}
	out = must(t, e, admin, "users", "list", "--limit", "1", "--all", "--json")
	var page struct{ Users []struct{ User string } }
	_ = json.Unmarshal([]byte(out), &page)
	if len(page.Users) != 2 {
		t.Fatalf("--all paged %d users: %s", len(page.Users), out)
	}
	must(t, e, admin, "users", "lock", "alice")
	out = must(t, e, admin, "users", "get", "alice")
	if !regexp.MustCompile(`(?m)^locked:\s+yes$`).MatchString(out) {
		t.Fatalf("users get:\n%s", out)
	}
	must(t, e, admin, "users", "devices", "alice")
	out = must(t, e, admin, "policy", "set", "challenge_ttl_seconds=90", "number_matching=false")
	if !strings.Contains(out, "challenge_ttl_seconds:") || !strings.Contains(out, "90") {
		t.Fatalf("policy set:\n%s", out)
	}
	must(t, e, admin, "apps", "list")
	must(t, e, admin, "tenants", "create", "acme")
	must(t, e, admin, "tenants", "list")
	must(t, e, admin, "admin", "token", "list")
	out = must(t, e, admin, "audit", "list", "--type", "user.locked")
	if !strings.Contains(out, "user.locked") {
		t.Fatalf("audit list:\n%s", out)
	}
	must(t, e, admin, "audit", "list", "--since", "1h")
	out = must(t, e, admin, "audit", "verify")
	if !strings.Contains(out, "valid:") {
		t.Fatalf("audit verify:\n%s", out)
	}
	must(t, e, admin, "status")
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	cases := []struct {
		name  string
		token string
		args  []string
		code  int
		want  string
	}{
		{"bad token", "pmfa_adm_nope", []string{"users", "list"}, 1, "unauthorized"},
		{"no token", "", []string{"users", "list"}, 1, "unauthorized"},
		{"not found", e.Bootstrap, []string{"users", "get", "nobody"}, 1, "not_found"},
		{"bad policy value", e.Bootstrap, []string{"policy", "set", "max_devices=0"}, 1, "invalid_policy"},
		{"bad policy syntax", e.Bootstrap, []string{"policy", "set", "max_devices"}, 2, "FIELD=VALUE"},
		{"not json value", e.Bootstrap, []string{"policy", "set", "max_devices=five"}, 2, "not a number"},
		{"unknown command", e.Bootstrap, []string{"frobnicate"}, 2, "unknown command"},
		{"missing argument", e.Bootstrap, []string{"apps", "create"}, 2, "arg"},
		{"missing flag", e.Bootstrap, []string{"admin", "token", "create"}, 2, "name"},
		{"bad since", e.Bootstrap, []string{"audit", "list", "--since", "last week"}, 2, "--since"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := mfactl(t, e, tc.token, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q does not contain %q (stdout %q)", code, tc.code, errOut, tc.want, out)
			}
		})
	}
	// A server that does not answer.
	var errb bytes.Buffer
	code := Main(context.Background(), []string{"--url", "http://127.0.0.1:1", "status"}, &bytes.Buffer{}, &errb,
		func(string) (string, bool) { return "", false })
	if code != 1 || !strings.Contains(errb.String(), "not ready") {
		t.Fatalf("status of a dead server: %d %s", code, errb.String())
	}
}

// TestDemoSetupIsIdempotent checks what `make run` relies on: the same
// working credentials every run, repaired when they stop working.
func TestDemoSetupIsIdempotent(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	state := filepath.Join(t.TempDir(), "sub", "demo.json")
	first := must(t, e, e.Bootstrap, "demo", "setup", "--state", state)
	st1 := readState(t, state)
	if !strings.Contains(first, st1.AdminToken) || !strings.Contains(first, st1.AppSecret) {
		t.Fatalf("setup did not print the credentials:\n%s", first)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
	// The printed commands work as printed.
	must(t, e, st1.AdminToken, "users", "list")
	must(t, e, st1.AdminToken, "users", "devices", "alice")
	enroll := regexp.MustCompile(`(?m)^  \./bin/mfactl device enroll '([^']+)' --push-provider apns --push-token (\S+) --state (\S+)$`).FindStringSubmatch(first)
	if enroll == nil || !strings.HasPrefix(enroll[3], filepath.Dir(state)) {
		t.Fatalf("no enroll command printed:\n%s", first)
	}
	must(t, e, "", "device", "enroll", enroll[1], "--push-provider", "apns", "--push-token", enroll[2], "--state", enroll[3])
	pushToken := enroll[2]
	enroll = []string{enroll[0], enroll[1], enroll[3]}
	// The printed sign-in: the curl call made in Go as printed, the
	// approval through mfactl, the printed long-poll.
	curl := regexp.MustCompile(`curl -s -H 'Authorization: Bearer (\S+)' -H 'Content-Type: application/json' -d '([^']+)' (\S+)/v1/challenges`).FindStringSubmatch(first)
	if curl == nil || curl[1] != st1.AppSecret {
		t.Fatalf("no sign-in command printed:\n%s", first)
	}
	created := e.Do(t, apitest.Req{Method: "POST", Path: "/v1/challenges", Token: curl[1], Body: curl[2],
		Header: map[string]string{"Content-Type": "application/json"}})
	if created.Status != 201 {
		t.Fatalf("printed create: %d %s", created.Status, created.Body)
	}
	ch := created.Map(t)
	// Without credentials the push goes to the logging provider: the
	// server's log shows it, without the token.
	e.Logs.Await(t, "push (logging provider", ch["id"].(string))
	if strings.Contains(e.Logs.String(), pushToken) {
		t.Fatal("the server's log carries the push token")
	}
	must(t, e, "", "device", "approve", ch["id"].(string), "--number", fmt.Sprint(ch["number"]), "--state", enroll[2])
	if !strings.Contains(first, "/v1/challenges/ID?wait=25s") {
		t.Fatalf("no long-poll printed:\n%s", first)
	}
	if got := e.JSON(t, "GET", "/v1/challenges/"+ch["id"].(string)+"?wait=25s", curl[1], nil).Map(t); got["state"] != "approved" {
		t.Fatalf("printed long-poll: %v", got)
	}
	id := strings.TrimSpace(must(t, e, "", "device", "id", "--state", enroll[2]))
	must(t, e, st1.AdminToken, "devices", "revoke", id, "--reason", "lost")
	if code, _, errOut := mfactl(t, e, "", "device", "info", "--state", enroll[2]); code != 1 || !strings.Contains(errOut, "device_revoked") {
		t.Fatalf("revoked demo device: %d %s", code, errOut)
	}

	second := must(t, e, e.Bootstrap, "demo", "setup", "--state", state)
	// A new URI, and a device file that does not exist yet.
	if again := regexp.MustCompile(`device enroll '([^']+)' --push-provider apns --push-token \S+ --state (\S+)`).FindStringSubmatch(second); again == nil ||
		again[1] == enroll[1] || again[2] == enroll[2] {
		t.Fatalf("second run printed %v, first %v", again, enroll[1:])
	}
	if st2 := readState(t, state); st2 != st1 {
		t.Fatalf("second run changed the credentials: %+v -> %+v", st1, st2)
	}
	var apps struct{ Applications []any }
	e.JSON(t, "GET", "/v1/admin/applications", e.Bootstrap, nil).Decode(t, &apps)
	if len(apps.Applications) != 1 {
		t.Fatalf("%d applications after two runs", len(apps.Applications))
	}

	// The state file lost: the same application, a fresh secret, one live
	// demo token.
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	must(t, e, e.Bootstrap, "demo", "setup", "--state", state)
	st3 := readState(t, state)
	if st3.AppID != st1.AppID || st3.AppSecret == st1.AppSecret || st3.AdminToken == st1.AdminToken {
		t.Fatalf("after losing the state: %+v (was %+v)", st3, st1)
	}
	if code, _, _ := mfactl(t, e, st1.AdminToken, "users", "list"); code != 1 {
		t.Fatal("the replaced demo token still works")
	}
	must(t, e, st3.AdminToken, "users", "list")

	// Not the bootstrap token: a clear failure.
	if code, _, errOut := mfactl(t, e, "", "demo", "setup", "--state", state+".x"); code != 1 || !strings.Contains(errOut, "unauthorized") {
		t.Fatalf("setup without a token: %d %s", code, errOut)
	}
}

func readState(t *testing.T, path string) demoState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st demoState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

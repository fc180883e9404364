package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
)

// TestLostPhoneFlow is issue 4's "done when", through mfactl alone: an
// enrollment URI, a device enrolled from it, listed by the admin, revoked
// as lost, and the revoked device's next call refused with device_revoked.
func TestLostPhoneFlow(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	state := filepath.Join(t.TempDir(), "phone.json")

	out := must(t, e, e.Bootstrap, "--json", "users", "enroll", "alice", "--qr", filepath.Join(t.TempDir(), "qr.png"))
	var en struct{ URI, Code string }
	if err := json.Unmarshal([]byte(out), &en); err != nil || !strings.HasPrefix(en.URI, "pushmfa://enroll?") {
		t.Fatalf("users enroll: %s", out)
	}

	out = must(t, e, "", "device", "enroll", en.URI, "--state", state, "--name", "alice's phone")
	id := regexp.MustCompile(`(?m)^device:\s+(\S+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("device enroll:\n%s", out)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	// Enrolling again into the same file is refused; the code is spent anyway.
	if code, _, errOut := mfactl(t, e, "", "device", "enroll", en.URI, "--state", state); code != 2 || !strings.Contains(errOut, "already holds") {
		t.Fatalf("second enroll: %d %s", code, errOut)
	}
	if code, _, errOut := mfactl(t, e, "", "device", "enroll", en.URI, "--state", state+"2"); code != 1 || !strings.Contains(errOut, "enrollment_used") {
		t.Fatalf("spent code: %d %s", code, errOut)
	}

	out = must(t, e, "", "device", "info", "--state", state)
	if !strings.Contains(out, "active") || !strings.Contains(out, "alice's phone") {
		t.Fatalf("device info:\n%s", out)
	}
	out = must(t, e, "", "device", "code", "--state", state)
	if !regexp.MustCompile(`^\d{6}\n$`).MatchString(out) {
		t.Fatalf("device code: %q", out)
	}
	must(t, e, "", "device", "push-token", "apns", "tok-123", "--state", state)

	out = must(t, e, e.Bootstrap, "users", "devices", "alice")
	if !strings.Contains(out, id[1]) || !strings.Contains(out, "apns") {
		t.Fatalf("users devices:\n%s", out)
	}
	out = must(t, e, e.Bootstrap, "devices", "revoke", id[1], "--reason", "lost")
	if !strings.Contains(out, "revoked") || !strings.Contains(out, "lost") {
		t.Fatalf("devices revoke:\n%s", out)
	}
	code, _, errOut := mfactl(t, e, "", "device", "info", "--state", state)
	if code != 1 || !strings.Contains(errOut, "device_revoked") {
		t.Fatalf("revoked device's call: exit %d: %s", code, errOut)
	}
	if code, _, errOut := mfactl(t, e, e.Bootstrap, "devices", "revoke", id[1], "--reason", "stolen"); code != 1 || !strings.Contains(errOut, "invalid_request") {
		t.Fatalf("bad reason: %d %s", code, errOut)
	}
}

func TestDeviceRemove(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	state := filepath.Join(t.TempDir(), "d.json")
	var en struct{ URI string }
	_ = json.Unmarshal([]byte(must(t, e, e.Bootstrap, "--json", "users", "enroll", "bob")), &en)
	must(t, e, "", "device", "enroll", en.URI, "--state", state)
	must(t, e, "", "device", "remove", "--state", state)
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatal("key file left after remove")
	}
	if code, _, errOut := mfactl(t, e, "", "device", "info", "--state", state); code != 2 || !strings.Contains(errOut, "no device") {
		t.Fatalf("after remove: %d %s", code, errOut)
	}
	// A key file others can read is refused.
	if err := os.WriteFile(state, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := mfactl(t, e, "", "device", "code", "--state", state); code != 2 || !strings.Contains(errOut, "readable by others") {
		t.Fatalf("world-readable key: %d %s", code, errOut)
	}
}

// TestSignInThroughMfactl is issue 5's "done when" with the reference
// authenticator: a challenge, its number, `device approve ID --number N`,
// and the long-poll returns approved.
func TestSignInThroughMfactl(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	state := filepath.Join(t.TempDir(), "phone.json")
	r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "VPN"})
	secret := r.Map(t)["secret"].(string)
	var en struct{ URI string }
	_ = json.Unmarshal([]byte(must(t, e, e.Bootstrap, "--json", "users", "enroll", "alice")), &en)
	must(t, e, "", "device", "enroll", en.URI, "--state", state)

	create := func() (id string, number int) {
		r := e.JSON(t, "POST", "/v1/challenges", secret, map[string]any{"user": "alice", "message": "VPN sign-in",
			"context": map[string]any{"ip": "203.0.113.9", "location": "Oslo"}})
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		m := r.Map(t)
		return m["id"].(string), int(m["number"].(float64))
	}
	id, n := create()
	out := must(t, e, "", "device", "pending", "--state", state)
	if !strings.Contains(out, id) || !strings.Contains(out, "203.0.113.9 (Oslo)") || !strings.Contains(out, "required") ||
		strings.Contains(out, fmt.Sprint(n)+" ") {
		t.Fatalf("pending:\n%s", out)
	}
	polled := make(chan map[string]any, 1)
	go func() { polled <- e.JSON(t, "GET", "/v1/challenges/"+id+"?wait=25s", secret, nil).Map(t) }()
	out = must(t, e, "", "device", "approve", id, "--number", fmt.Sprint(n), "--state", state)
	if !regexp.MustCompile(`(?m)^state:\s+approved$`).MatchString(out) {
		t.Fatalf("approve:\n%s", out)
	}
	if got := <-polled; got["state"] != "approved" {
		t.Fatalf("long-poll: %v", got)
	}

	// A wrong number denies; deny and fraud answer as named.
	id, n = create()
	wrong := (n-10+1)%90 + 10 // another number in 10..99
	out = must(t, e, "", "device", "approve", id, "--number", fmt.Sprint(wrong), "--state", state)
	if !strings.Contains(out, "number_mismatch") || !strings.Contains(out, "denied") {
		t.Fatalf("wrong number:\n%s", out)
	}
	id, _ = create()
	if out := must(t, e, "", "device", "deny", id, "--state", state); !strings.Contains(out, "denied") {
		t.Fatalf("deny:\n%s", out)
	}
	if out := must(t, e, "", "device", "pending", "--state", state); !strings.Contains(out, "no pending") {
		t.Fatalf("pending after answers:\n%s", out)
	}
	id, _ = create()
	if out := must(t, e, "", "device", "fraud", id, "--state", state); !strings.Contains(out, "fraud") {
		t.Fatalf("fraud:\n%s", out)
	}
	// Approving an answered request is refused with its code.
	if code, _, errOut := mfactl(t, e, "", "device", "approve", id, "--state", state); code != 1 || !strings.Contains(errOut, "challenge_resolved") {
		t.Fatalf("second answer: %d %s", code, errOut)
	}
}

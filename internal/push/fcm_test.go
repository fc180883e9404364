package push

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/pushtest"
)

const testProject = "pushmfa-test"

// fcmFake is one FCM fake shared by the tests of the package: each makes a
// service account key, which takes a while under -race.
var fcmFake = sync.OnceValues(func() (*pushtest.FCM, error) {
	return pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: testProject})
})

func sharedFCM(t testing.TB) *pushtest.FCM {
	t.Helper()
	f, err := fcmFake()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// newFCMProvider is our provider configured as the server configures it: a
// service-account file, a project id and an endpoint.
func newFCMProvider(t testing.TB, f *pushtest.FCM, project string, creds []byte) *FCM {
	t.Helper()
	p, err := NewFCM(t.Context(), FCMConfig{CredentialsFile: writeFile(t, "service-account.json", creds),
		ProjectID: project, Endpoint: f.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fcmToken(t testing.TB) string { return "fcm:" + hexToken(t)[:48] }

func TestFCMChallengeIsAHighPriorityDataMessage(t *testing.T) {
	t.Parallel()
	f := sharedFCM(t)
	p := newFCMProvider(t, f, testProject, f.CredentialsJSON())
	tok := fcmToken(t)
	m := challengeMessage("fcm", tok)

	name, err := sendWithin(t, p, m, 10*time.Second)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	got := f.ReceivedFor(tok)
	if len(got) != 1 {
		t.Fatalf("the fake received %d sends, want 1", len(got))
	}
	if got[0].Status != 200 || name != got[0].Name || !strings.HasPrefix(name, "projects/"+testProject+"/messages/") {
		t.Errorf("answered %d %q; Send returned %q", got[0].Status, got[0].Name, name)
	}
	leaf := leaves(t, got[0].Message)
	ttl, _ := leaf["android.ttl"].(string)
	delete(leaf, "android.ttl")
	// The SDK writes the TTL in seconds: the challenge's remaining lifetime.
	if secs, err := time.ParseDuration(ttl); err != nil || secs < 85*time.Second || secs > 90*time.Second {
		t.Errorf("android.ttl %q, want the 90 s the challenge has left", ttl)
	}
	want := map[string]any{
		"token":                m.Token,
		"data.type":            KindChallenge,
		"data.challenge_id":    m.ChallengeID,
		"android.priority":     "high",
		"android.collapse_key": m.ChallengeID,
	}
	if len(leaf) != len(want) {
		t.Errorf("message keys %v, want exactly %v and android.ttl (a data message: no notification block)", keys(leaf), keys(want))
	}
	for k, v := range want {
		if leaf[k] != v {
			t.Errorf("message %s = %v, want %v", k, leaf[k], v)
		}
	}
	data, _ := json.Marshal(map[string]any{"data": leaf["data.type"], "id": leaf["data.challenge_id"]})
	assertNothingSecret(t, string(data), tok, m.DeviceID, m.DeliveryID)
}

func TestFCMNotificationIsANormalPriorityDataMessage(t *testing.T) {
	t.Parallel()
	f := sharedFCM(t)
	p := newFCMProvider(t, f, testProject, f.CredentialsJSON())
	tok := fcmToken(t)
	m := notificationMessage("fcm", tok)

	if _, err := sendWithin(t, p, m, 10*time.Second); err != nil {
		t.Fatalf("send: %v", err)
	}
	leaf := leaves(t, f.ReceivedFor(tok)[0].Message)
	delete(leaf, "android.ttl")
	want := map[string]any{
		"token":             m.Token,
		"data.type":         KindNotification,
		"data.event":        "challenge_resolved",
		"data.challenge_id": m.ChallengeID,
		"android.priority":  "normal",
	}
	if len(leaf) != len(want) {
		t.Errorf("message keys %v, want exactly %v and android.ttl", keys(leaf), keys(want))
	}
	for k, v := range want {
		if leaf[k] != v {
			t.Errorf("message %s = %v, want %v", k, leaf[k], v)
		}
	}
}

// TestFCMReplies holds every answer FCM gives to what it means for the
// delivery. Each send reaches FCM once: retrying is the worker's (durable,
// bounded by the push's expiry), never the SDK's inside a send.
func TestFCMReplies(t *testing.T) {
	t.Parallel()
	f := sharedFCM(t)
	p := newFCMProvider(t, f, testProject, f.CredentialsJSON())
	tests := []struct {
		name       string
		reply      pushtest.Reply
		class      Class
		status     int
		reason     string
		retryAfter time.Duration
	}{
		{"unregistered", pushtest.Reply{Reason: "UNREGISTERED"}, TokenInvalid, 404, "UNREGISTERED", 0},
		{"invalid argument: the token", pushtest.Reply{Reason: "INVALID_ARGUMENT"}, TokenInvalid, 400, "INVALID_ARGUMENT", 0},
		{"invalid argument: the message", pushtest.Reply{Reason: "INVALID_ARGUMENT",
			Message: `Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), "-1s"`},
			ProviderFault, 400, "INVALID_ARGUMENT (message)", 0},
		{"quota exceeded", pushtest.Reply{Reason: "QUOTA_EXCEEDED"}, Retry, 429, "QUOTA_EXCEEDED", 0},
		{"quota exceeded, retry after", pushtest.Reply{Reason: "QUOTA_EXCEEDED", RetryAfter: "5"}, Retry, 429, "QUOTA_EXCEEDED", 5 * time.Second},
		{"unavailable", pushtest.Reply{Reason: "UNAVAILABLE"}, Retry, 503, "UNAVAILABLE", 0},
		{"unavailable, retry after", pushtest.Reply{Reason: "UNAVAILABLE", RetryAfter: "30"}, Retry, 503, "UNAVAILABLE", 30 * time.Second},
		{"internal", pushtest.Reply{Reason: "INTERNAL"}, Retry, 500, "INTERNAL", 0},
		{"permission denied", pushtest.Reply{Status: 403}, ProviderFault, 403, "PERMISSION_DENIED", 0},
		{"sender id mismatch", pushtest.Reply{Reason: "SENDER_ID_MISMATCH"}, ProviderFault, 403, "SENDER_ID_MISMATCH", 0},
		{"third-party auth error", pushtest.Reply{Reason: "THIRD_PARTY_AUTH_ERROR"}, ProviderFault, 401, "THIRD_PARTY_AUTH_ERROR", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := fcmToken(t)
			f.Script(tok, tt.reply)
			name, err := sendWithin(t, p, challengeMessage("fcm", tok), 10*time.Second)
			e := sendError(t, name, err)
			if e.Provider != "fcm" || e.Class != tt.class || e.Status != tt.status || e.Reason != tt.reason {
				t.Errorf("got %+v (%s), want %s %d %s", e, e.Class, tt.class, tt.status, tt.reason)
			}
			if e.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, tt.retryAfter)
			}
			assertNothingSecret(t, e.Error(), tok)
			if got := f.ReceivedFor(tok); len(got) != 1 {
				t.Errorf("FCM received %d sends, want 1 (no retry inside the send)", len(got))
			}
			if _, err := sendWithin(t, p, challengeMessage("fcm", tok), 10*time.Second); err != nil {
				t.Errorf("after the scripted answer: %v", err)
			}
		})
	}
}

// TestFCMRefusals are answers the fake gives on its own checks, as Google
// would, when our configuration is wrong.
func TestFCMRefusals(t *testing.T) {
	t.Parallel()
	f := sharedFCM(t)

	t.Run("another project", func(t *testing.T) {
		t.Parallel()
		p := newFCMProvider(t, f, "someone-elses-project", f.CredentialsJSON())
		tok := fcmToken(t)
		_, err := sendWithin(t, p, challengeMessage("fcm", tok), 10*time.Second)
		if e := sendError(t, "", err); e.Class != ProviderFault || e.Status != 403 || e.Reason != "PERMISSION_DENIED" {
			t.Errorf("got %+v, want PERMISSION_DENIED as a provider fault", e)
		}
	})
	t.Run("a service account key Google does not know", func(t *testing.T) {
		t.Parallel()
		p := newFCMProvider(t, f, testProject, withOtherKey(t, f.CredentialsJSON()))
		tok := fcmToken(t)
		_, err := sendWithin(t, p, challengeMessage("fcm", tok), 10*time.Second)
		e := sendError(t, "", err)
		if e.Class != ProviderFault || e.Status != 400 || e.Reason != "the token endpoint refused the service account: invalid_grant" {
			t.Errorf("got %+v, want the token endpoint's refusal as a provider fault", e)
		}
		if got := f.ReceivedFor(tok); len(got) != 0 {
			t.Errorf("FCM received %d sends without an access token", len(got))
		}
	})
}

func TestFCMNoAnswer(t *testing.T) {
	t.Parallel()

	t.Run("slower than the deadline", func(t *testing.T) {
		t.Parallel()
		f := sharedFCM(t)
		p := newFCMProvider(t, f, testProject, f.CredentialsJSON())
		tok := fcmToken(t)
		// An access token first, so the deadline falls on the send.
		if _, err := sendWithin(t, p, challengeMessage("fcm", fcmToken(t)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		f.Script(tok, pushtest.Reply{Delay: 5 * time.Second})
		start := time.Now()
		_, err := sendWithin(t, p, challengeMessage("fcm", tok), 300*time.Millisecond)
		if e := sendError(t, "", err); e.Class != Retry || e.Status != 0 || e.Reason != "no answer before the deadline" {
			t.Errorf("got %+v, want a retry for want of an answer", e)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("the send took %v: the deadline did not end it", time.Since(start))
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		t.Parallel()
		f, err := pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: testProject})
		if err != nil {
			t.Fatal(err)
		}
		p := newFCMProvider(t, f, testProject, f.CredentialsJSON())
		f.Close()
		tok := fcmToken(t)
		_, err = sendWithin(t, p, challengeMessage("fcm", tok), 2*time.Second)
		e := sendError(t, "", err)
		if e.Class != Retry || e.Status != 0 || !strings.HasPrefix(e.Reason, "access token: no answer") {
			t.Errorf("got %+v, want a retry for want of an access token", e)
		}
		assertNothingSecret(t, e.Error(), tok)
	})
}

func TestNewFCMErrors(t *testing.T) {
	t.Parallel()
	for name, file := range map[string]string{
		"missing":  "/nonexistent/service-account.json",
		"not JSON": writeFile(t, "junk.json", []byte("not json")),
		"a user credential, not a service account": writeFile(t, "user.json",
			[]byte(`{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFCM(t.Context(), FCMConfig{CredentialsFile: file, ProjectID: testProject})
			if err == nil || !strings.Contains(err.Error(), "FCM_CREDENTIALS_FILE") {
				t.Errorf("NewFCM = %v, want an error naming FCM_CREDENTIALS_FILE", err)
			}
		})
	}
}

// withOtherKey returns the service account with a private key of its own.
func withOtherKey(t testing.TB, creds []byte) []byte {
	t.Helper()
	var sa map[string]any
	if err := json.Unmarshal(creds, &sa); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sa["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	out, err := json.Marshal(sa)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

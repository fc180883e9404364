package push

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/pushtest"
)

const (
	testKeyID  = "ABC123DEFG"
	testTeamID = "TEAM123456"
	testTopic  = "com.example.pushmfa"
)

// apnsSetup is an APNs fake and our provider pointed at it, as the server
// configures it: a .p8 file, key id, team id, topic and endpoint.
type apnsSetup struct {
	fake     *pushtest.APNs
	provider *APNs
	key      *ecdsa.PrivateKey
	keyFile  string
}

func newAPNsSetup(t testing.TB, fakeCfg ...func(*pushtest.APNsConfig)) *apnsSetup {
	t.Helper()
	p8, key, err := pushtest.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	cfg := pushtest.APNsConfig{CA: ca, KeyID: testKeyID, TeamID: testTeamID, Key: &key.PublicKey, Topic: testTopic}
	for _, f := range fakeCfg {
		f(&cfg)
	}
	fake, err := pushtest.NewAPNs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	keyFile := writeFile(t, "AuthKey.p8", p8)
	provider, err := NewAPNs(APNsConfig{KeyFile: keyFile, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic, Endpoint: fake.URL()})
	if err != nil {
		t.Fatal(err)
	}
	return &apnsSetup{fake: fake, provider: provider, key: key, keyFile: keyFile}
}

func challengeMessage(provider, token string) Message {
	return Message{DeliveryID: "0199a0b2-0000-7000-8000-00000000d001", DeviceID: "0199a0b2-0000-7000-8000-00000000de01",
		Provider: provider, Token: token, Kind: KindChallenge, ChallengeID: "0199a0b2-0000-7000-8000-0000000c0001",
		Expires: time.Now().Add(90 * time.Second).Truncate(time.Second)}
}

func notificationMessage(provider, token string) Message {
	return Message{DeliveryID: "0199a0b2-0000-7000-8000-00000000d002", DeviceID: "0199a0b2-0000-7000-8000-00000000de01",
		Provider: provider, Token: token, Kind: KindNotification, Event: "challenge_resolved",
		ChallengeID: "0199a0b2-0000-7000-8000-0000000c0001", Expires: time.Now().Add(NotificationLifetime).Truncate(time.Second)}
}

func sendWithin(t testing.TB, p Provider, m Message, d time.Duration) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	return p.Send(ctx, m)
}

func TestAPNsChallengeIsAnAlertThatSaysNothing(t *testing.T) {
	t.Parallel()
	s := newAPNsSetup(t)
	tok := hexToken(t)
	m := challengeMessage("apns", tok)

	id, err := sendWithin(t, s.provider, m, 10*time.Second)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	got := s.fake.Received()
	if len(got) != 1 {
		t.Fatalf("the fake received %d requests, want 1", len(got))
	}
	p := got[0]
	if p.Status != http.StatusOK || !p.Answered || id != p.ApnsID || id == "" {
		t.Errorf("answer %d (answered %v) with apns-id %q; Send returned %q", p.Status, p.Answered, p.ApnsID, id)
	}
	if p.Token != tok {
		t.Errorf("pushed to %q, want the device's token", p.Token)
	}
	wantHeader := map[string]string{
		"apns-push-type":   "alert",
		"apns-priority":    "10",
		"apns-topic":       testTopic,
		"apns-expiration":  strconv.FormatInt(m.Expires.Unix(), 10),
		"apns-collapse-id": m.ChallengeID,
	}
	for k, v := range wantHeader {
		if g := p.Header.Get(k); g != v {
			t.Errorf("%s: %q, want %q", k, g, v)
		}
	}
	if !strings.HasPrefix(p.Header.Get("authorization"), "bearer ") {
		t.Errorf("authorization %q, want a bearer token", p.Header.Get("authorization"))
	}

	// The payload is exactly this: the kind, the challenge id and a
	// localisable alert whose text lives in the app.
	want := map[string]any{
		"aps.alert.title-loc-key": APNsTitleKey,
		"aps.alert.loc-key":       APNsBodyKey,
		"aps.category":            APNsCategory,
		"aps.mutable-content":     float64(1),
		"aps.sound":               "default",
		"type":                    KindChallenge,
		"challenge_id":            m.ChallengeID,
	}
	leaf := leaves(t, p.Payload)
	if len(leaf) != len(want) {
		t.Errorf("payload keys %v, want exactly %v", keys(leaf), keys(want))
	}
	for k, v := range want {
		if leaf[k] != v {
			t.Errorf("payload %s = %v, want %v", k, leaf[k], v)
		}
	}
	assertNothingSecret(t, string(p.Payload), tok, m.DeviceID, m.DeliveryID)
}

func TestAPNsNotificationIsABackgroundPush(t *testing.T) {
	t.Parallel()
	s := newAPNsSetup(t)
	tok := hexToken(t)
	m := notificationMessage("apns", tok)

	if _, err := sendWithin(t, s.provider, m, 10*time.Second); err != nil {
		t.Fatalf("send: %v", err)
	}
	p := s.fake.Received()[0]
	for k, v := range map[string]string{
		"apns-push-type":   "background",
		"apns-priority":    "5",
		"apns-expiration":  strconv.FormatInt(m.Expires.Unix(), 10),
		"apns-collapse-id": "",
	} {
		if g := p.Header.Get(k); g != v {
			t.Errorf("%s: %q, want %q", k, g, v)
		}
	}
	want := map[string]any{
		"aps.content-available": float64(1),
		"type":                  KindNotification,
		"event":                 "challenge_resolved",
		"challenge_id":          m.ChallengeID,
	}
	leaf := leaves(t, p.Payload)
	if len(leaf) != len(want) {
		t.Errorf("payload keys %v, want exactly %v (no alert, no sound: Apple throttles background pushes that carry them)", keys(leaf), keys(want))
	}
	for k, v := range want {
		if leaf[k] != v {
			t.Errorf("payload %s = %v, want %v", k, leaf[k], v)
		}
	}
	assertNothingSecret(t, string(p.Payload), tok, m.DeviceID)
}

// TestAPNsReplies holds every answer Apple gives to what it means for the
// delivery: retry (after Retry-After when given), the token is dead, our
// configuration is at fault, or this message is refused.
func TestAPNsReplies(t *testing.T) {
	t.Parallel()
	s := newAPNsSetup(t)
	date := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		reply      pushtest.Reply
		class      Class
		status     int
		reason     string
		retryAfter time.Duration // at least this, and at most 2 s more
	}{
		{"bad device token", pushtest.Reply{Reason: "BadDeviceToken"}, TokenInvalid, 400, "BadDeviceToken", 0},
		{"unregistered", pushtest.Reply{Reason: "Unregistered"}, TokenInvalid, 410, "Unregistered", 0},
		{"410 expired token", pushtest.Reply{Reason: "ExpiredToken"}, TokenInvalid, 410, "ExpiredToken", 0},
		{"too many requests", pushtest.Reply{Status: 429}, Retry, 429, "TooManyRequests", 0},
		{"too many requests, retry after seconds", pushtest.Reply{Status: 429, RetryAfter: "7"}, Retry, 429, "TooManyRequests", 7 * time.Second},
		{"internal server error", pushtest.Reply{Status: 500}, Retry, 500, "InternalServerError", 0},
		{"service unavailable", pushtest.Reply{Status: 503}, Retry, 503, "ServiceUnavailable", 0},
		{"service unavailable, retry after a date", pushtest.Reply{Status: 503, RetryAfter: date}, Retry, 503, "ServiceUnavailable", 118 * time.Second},
		{"shutdown", pushtest.Reply{Reason: "Shutdown"}, Retry, 503, "Shutdown", 0},
		{"too many provider token updates", pushtest.Reply{Reason: "TooManyProviderTokenUpdates"}, Retry, 429, "TooManyProviderTokenUpdates", 0},
		{"invalid provider token", pushtest.Reply{Reason: "InvalidProviderToken"}, ProviderFault, 403, "InvalidProviderToken", 0},
		{"expired provider token", pushtest.Reply{Reason: "ExpiredProviderToken"}, ProviderFault, 403, "ExpiredProviderToken", 0},
		{"topic disallowed", pushtest.Reply{Reason: "TopicDisallowed"}, ProviderFault, 400, "TopicDisallowed", 0},
		{"device token not for topic", pushtest.Reply{Reason: "DeviceTokenNotForTopic"}, ProviderFault, 400, "DeviceTokenNotForTopic", 0},
		{"forbidden", pushtest.Reply{Status: 403}, ProviderFault, 403, "Forbidden", 0},
		{"payload too large", pushtest.Reply{Reason: "PayloadTooLarge"}, Rejected, 413, "PayloadTooLarge", 0},
		{"bad collapse id", pushtest.Reply{Reason: "BadCollapseId"}, Rejected, 400, "BadCollapseId", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := hexToken(t)
			s.fake.Script(tok, tt.reply)
			id, err := sendWithin(t, s.provider, challengeMessage("apns", tok), 10*time.Second)
			e := sendError(t, id, err)
			if e.Provider != "apns" || e.Class != tt.class || e.Status != tt.status || e.Reason != tt.reason {
				t.Errorf("got %+v (%s), want %s %d %s", e, e.Class, tt.class, tt.status, tt.reason)
			}
			if e.RetryAfter < tt.retryAfter || e.RetryAfter > tt.retryAfter+2*time.Second {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, tt.retryAfter)
			}
			assertNothingSecret(t, e.Error(), tok)

			// The next push to the token goes through: nothing sticks.
			if _, err := sendWithin(t, s.provider, challengeMessage("apns", tok), 10*time.Second); err != nil {
				t.Errorf("after the scripted answer: %v", err)
			}
		})
	}
}

// TestAPNsRefusals are answers the fake gives on its own checks, as Apple
// would: our requests reach them only when our configuration or the
// device's token is wrong.
func TestAPNsRefusals(t *testing.T) {
	t.Parallel()

	t.Run("a token that is not hex", func(t *testing.T) {
		t.Parallel()
		s := newAPNsSetup(t)
		_, err := sendWithin(t, s.provider, challengeMessage("apns", "demo-apns-token"), 10*time.Second)
		if e := sendError(t, "", err); e.Class != TokenInvalid || e.Reason != "BadDeviceToken" {
			t.Errorf("got %+v, want BadDeviceToken as token invalid", e)
		}
	})
	t.Run("a key Apple does not know", func(t *testing.T) {
		t.Parallel()
		_, other, err := pushtest.NewP8Key()
		if err != nil {
			t.Fatal(err)
		}
		s := newAPNsSetup(t, func(c *pushtest.APNsConfig) { c.Key = &other.PublicKey })
		_, err = sendWithin(t, s.provider, challengeMessage("apns", hexToken(t)), 10*time.Second)
		if e := sendError(t, "", err); e.Class != ProviderFault || e.Status != 403 || e.Reason != "InvalidProviderToken" {
			t.Errorf("got %+v, want InvalidProviderToken as a provider fault", e)
		}
	})
	t.Run("another team", func(t *testing.T) {
		t.Parallel()
		s := newAPNsSetup(t, func(c *pushtest.APNsConfig) { c.TeamID = "OTHERTEAM1" })
		_, err := sendWithin(t, s.provider, challengeMessage("apns", hexToken(t)), 10*time.Second)
		if e := sendError(t, "", err); e.Class != ProviderFault || e.Reason != "InvalidProviderToken" {
			t.Errorf("got %+v, want InvalidProviderToken as a provider fault", e)
		}
	})
	t.Run("the wrong app's topic", func(t *testing.T) {
		t.Parallel()
		s := newAPNsSetup(t, func(c *pushtest.APNsConfig) { c.Topic = "com.example.other" })
		_, err := sendWithin(t, s.provider, challengeMessage("apns", hexToken(t)), 10*time.Second)
		if e := sendError(t, "", err); e.Class != ProviderFault || e.Reason != "DeviceTokenNotForTopic" {
			t.Errorf("got %+v, want DeviceTokenNotForTopic as a provider fault (no device may lose its token to a configuration slip)", e)
		}
	})
}

func TestAPNsNoAnswer(t *testing.T) {
	t.Parallel()

	t.Run("slower than the deadline", func(t *testing.T) {
		t.Parallel()
		s := newAPNsSetup(t, func(c *pushtest.APNsConfig) { c.Delay = 5 * time.Second })
		tok := hexToken(t)
		start := time.Now()
		_, err := sendWithin(t, s.provider, challengeMessage("apns", tok), 200*time.Millisecond)
		e := sendError(t, "", err)
		if e.Class != Retry || e.Status != 0 || e.Reason != "no answer before the deadline" {
			t.Errorf("got %+v, want a retry for want of an answer", e)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("the send took %v: the deadline did not end it", time.Since(start))
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		t.Parallel()
		s := newAPNsSetup(t)
		s.fake.Close()
		tok := hexToken(t)
		_, err := sendWithin(t, s.provider, challengeMessage("apns", tok), 5*time.Second)
		e := sendError(t, "", err)
		if e.Class != Retry || e.Status != 0 || !strings.HasPrefix(e.Reason, "no answer") {
			t.Errorf("got %+v, want a retry for want of an answer", e)
		}
		// The library's error names the URL, which holds the token.
		assertNothingSecret(t, e.Error(), tok)
	})
}

func TestNewAPNsErrors(t *testing.T) {
	t.Parallel()
	for name, file := range map[string]string{
		"missing":    "/nonexistent/AuthKey.p8",
		"not a key":  writeFile(t, "junk.p8", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
		"not a file": t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewAPNs(APNsConfig{KeyFile: file, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic})
			if err == nil || !strings.Contains(err.Error(), "APNS_KEY_FILE") {
				t.Errorf("NewAPNs = %v, want an error naming APNS_KEY_FILE", err)
			}
		})
	}
}

// sendError fails unless err is a *Error with no id returned.
func sendError(t testing.TB, id string, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Send = %q, %v; want a *push.Error", id, err)
	}
	if id != "" {
		t.Errorf("Send returned id %q with an error", id)
	}
	return e
}

package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/pushtest"
	"github.com/pushmfa/pushmfa/internal/wire"
)

const (
	fakeKeyID   = "KEY4567890"
	fakeTeamID  = "TEAM456789"
	fakeTopic   = "com.example.pushmfa"
	fakeProject = "pushmfa-api-test"
)

// pushEnv is a server whose APNs and FCM are fakes in this process, set up
// with the server's ordinary configuration.
type pushEnv struct {
	*apitest.Env
	apns *pushtest.APNs
	fcm  *pushtest.FCM
}

// sharedFCM is one FCM fake for the package's tests: each makes an RSA
// service-account key, which is slow under -race. Tests tell their pushes
// apart by token.
var sharedFCM = sync.OnceValues(func() (*pushtest.FCM, error) {
	return pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: fakeProject})
})

func startWithFakes(t *testing.T, opts ...apitest.Option) *pushEnv {
	t.Helper()
	p8, key, err := pushtest.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	apns, err := pushtest.NewAPNs(pushtest.APNsConfig{CA: ca, KeyID: fakeKeyID, TeamID: fakeTeamID, Key: &key.PublicKey, Topic: fakeTopic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apns.Close)
	fcm, err := sharedFCM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, credsFile, err := pushtest.WriteCredentials(dir, p8, fcm)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]apitest.Option{
		apitest.WithEnv("APNS_ENDPOINT", apns.URL()),
		apitest.WithEnv("APNS_KEY_FILE", keyFile),
		apitest.WithEnv("APNS_KEY_ID", fakeKeyID),
		apitest.WithEnv("APNS_TEAM_ID", fakeTeamID),
		apitest.WithEnv("APNS_TOPIC", fakeTopic),
		apitest.WithEnv("FCM_ENDPOINT", fcm.Endpoint()),
		apitest.WithEnv("FCM_CREDENTIALS_FILE", credsFile),
		apitest.WithEnv("FCM_PROJECT_ID", fakeProject),
	}, opts...)
	return &pushEnv{Env: apitest.Start(t, opts...), apns: apns, fcm: fcm}
}

// scriptedDevice enrolls a device of user that pushes through provider with
// a fresh token, whose next answers from the provider are replies.
func (p *pushEnv) scriptedDevice(t *testing.T, secret, user, provider string, replies ...pushtest.Reply) (*authenticator.Device, string) {
	t.Helper()
	tok, platform := apnsToken(t), "ios"
	if provider == "fcm" {
		tok, platform = fcmToken(t), "android"
		p.fcm.Script(tok, replies...)
	} else {
		p.apns.Script(tok, replies...)
	}
	d := enrollDevice(t, p.Env, secret, user, authenticator.EnrollOptions{Platform: platform, PushProvider: provider, PushToken: tok})
	return d, tok
}

// requests are the arrival times of every request to token, either provider.
func (p *pushEnv) requests(token string) []time.Time {
	var at []time.Time
	for _, r := range p.apns.ReceivedFor(token) {
		at = append(at, r.At)
	}
	for _, r := range p.fcm.ReceivedFor(token) {
		at = append(at, r.At)
	}
	return at
}

// pushState is what a device row says of its push service.
func pushState(t *testing.T, e *apitest.Env, deviceID string) (provider string, hasToken, invalid bool) {
	t.Helper()
	if err := e.DB.Pool.QueryRow(context.Background(), `SELECT push_provider, push_token IS NOT NULL,
		push_token_invalid_at IS NOT NULL FROM devices WHERE id = $1`, deviceID).Scan(&provider, &hasToken, &invalid); err != nil {
		t.Fatal(err)
	}
	return provider, hasToken, invalid
}

func apnsToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func fcmToken(t *testing.T) string { return "fcm:" + apnsToken(t)[:40] }

// fcmData is the data of an FCM message.
func fcmData(t *testing.T, p pushtest.FCMPush) map[string]string {
	t.Helper()
	var m struct {
		Data    map[string]string `json:"data"`
		Android struct {
			Priority string `json:"priority"`
		} `json:"android"`
	}
	if err := json.Unmarshal(p.Message, &m); err != nil {
		t.Fatal(err)
	}
	m.Data["android.priority"] = m.Android.Priority
	return m.Data
}

func apnsPayload(t *testing.T, p pushtest.APNsPush) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p.Payload, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// delivery is a deliveries row.
type delivery struct {
	Provider, Outcome, MessageID, Reason string
	Attempts                             int
}

func deliveryOf(t *testing.T, e *apitest.Env, challengeID, deviceID string) delivery {
	t.Helper()
	var d delivery
	err := e.DB.Pool.QueryRow(context.Background(), `SELECT provider, outcome, coalesce(provider_message_id, ''),
		coalesce(reason, ''), attempts FROM deliveries WHERE challenge_id = $1 AND device_id = $2 AND kind = 'challenge'`,
		challengeID, deviceID).Scan(&d.Provider, &d.Outcome, &d.MessageID, &d.Reason, &d.Attempts)
	if err != nil {
		t.Fatalf("delivery of %s to %s: %v", challengeID, deviceID, err)
	}
	return d
}

// settled waits until the challenge's push to the device has an outcome
// other than pending and retrying, and returns it.
func settled(t *testing.T, e *apitest.Env, challengeID, deviceID string) delivery {
	t.Helper()
	var d delivery
	waitFor(t, func() bool {
		d = deliveryOf(t, e, challengeID, deviceID)
		return d.Outcome != "pending" && d.Outcome != "retrying"
	})
	return d
}

func timeline(t *testing.T, e *apitest.Env, token, challengeID string) wire.Timeline {
	t.Helper()
	r := e.JSON(t, "GET", "/v1/admin/challenges/"+challengeID+"/timeline", token, nil)
	want(t, r, http.StatusOK, "")
	var tl wire.Timeline
	r.Decode(t, &tl)
	return tl
}

// TestPushesReachTheProviders follows a challenge to both providers: an
// alert to the iPhone, a high-priority data message to the Android phone,
// saying nothing of the sign-in; the timeline names each provider's id for
// it; once answered, the other device hears it is over through a
// background push.
func TestPushesReachTheProviders(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	iosTok, androidTok := apnsToken(t), fcmToken(t)
	iphone := enrollDevice(t, p.Env, secret, "zoe", authenticator.EnrollOptions{Name: "iPhone", PushProvider: "apns", PushToken: iosTok})
	pixel := enrollDevice(t, p.Env, secret, "zoe", authenticator.EnrollOptions{Name: "Pixel", Platform: "android", PushProvider: "fcm", PushToken: androidTok})

	c := newChallenge(t, p.Env, secret, "zoe")
	apnsSent := settled(t, p.Env, c.ID, iphone.DeviceID)
	fcmSent := settled(t, p.Env, c.ID, pixel.DeviceID)

	var alert pushtest.APNsPush
	for _, r := range p.apns.ReceivedFor(iosTok) {
		if r.Header.Get("apns-push-type") == "alert" {
			alert = r
		}
	}
	if apnsSent.Outcome != "sent" || apnsSent.Provider != "apns" || apnsSent.MessageID != alert.ApnsID || apnsSent.Attempts != 1 {
		t.Errorf("APNs delivery %+v; the fake answered apns-id %q", apnsSent, alert.ApnsID)
	}
	if got := apnsPayload(t, alert); got["challenge_id"] != c.ID || got["type"] != "challenge" ||
		alert.Header.Get("apns-collapse-id") != c.ID || alert.Header.Get("apns-priority") != "10" {
		t.Errorf("APNs alert %v %v", alert.Header, got)
	}
	// The fake records the expiry Apple was given: the challenge's own.
	if exp := alert.Header.Get("apns-expiration"); exp != strconv.FormatInt(c.ExpiresAt.Unix(), 10) {
		t.Errorf("apns-expiration %s, want the challenge's expiry %d", exp, c.ExpiresAt.Unix())
	}
	var message pushtest.FCMPush
	for _, r := range p.fcm.ReceivedFor(androidTok) {
		if fcmData(t, r)["type"] == "challenge" {
			message = r
		}
	}
	if fcmSent.Outcome != "sent" || fcmSent.Provider != "fcm" || fcmSent.MessageID != message.Name || message.Name == "" {
		t.Errorf("FCM delivery %+v; the fake answered %q", fcmSent, message.Name)
	}
	if d := fcmData(t, message); d["challenge_id"] != c.ID || d["android.priority"] != "high" {
		t.Errorf("FCM message %s", message.Message)
	}

	// Nothing of the sign-in is in either push: not the message, the
	// context, the user or a credential; and no field but the kind and the
	// challenge id (so not the number to match either).
	if got := slices.Sorted(maps.Keys(apnsPayload(t, alert))); !slices.Equal(got, []string{"aps", "challenge_id", "type"}) {
		t.Errorf("APNs payload fields %v", got)
	}
	if got := slices.Sorted(maps.Keys(fcmData(t, message))); !slices.Equal(got, []string{"android.priority", "challenge_id", "type"}) {
		t.Errorf("FCM data fields %v", got)
	}
	secrets := []string{"Sign in to VPN", "203.0.113.7", "Lyon", "Firefox", "zoe", secret}
	for _, r := range p.apns.Received() {
		assertAbsent(t, string(r.Payload), secrets)
	}
	for _, r := range p.fcm.ReceivedFor(androidTok) {
		assertAbsent(t, string(r.Message), secrets)
	}

	// The device finds the challenge and approves it; the other device is
	// told it is over, in the background.
	if _, err := iphone.Challenge(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := iphone.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); err != nil {
		t.Fatal(err)
	}
	var over pushtest.FCMPush
	waitFor(t, func() bool {
		for _, r := range p.fcm.ReceivedFor(androidTok) {
			if d := fcmData(t, r); d["event"] == "challenge_resolved" && d["challenge_id"] == c.ID && r.Answered {
				over = r
				return true
			}
		}
		return false
	})
	if d := fcmData(t, over); d["type"] != "notification" || d["android.priority"] != "normal" {
		t.Errorf("'it is over' to the Pixel: %s", over.Message)
	}
	for _, r := range p.apns.ReceivedFor(iosTok) {
		if apnsPayload(t, r)["event"] == "challenge_resolved" {
			t.Errorf("the answering device was told of its own answer: %s", r.Payload)
		}
	}

	// The timeline answers "why didn't my push arrive?" with each
	// provider's own id for the push.
	var tl wire.Timeline
	seen := map[string]wire.TimelineEvent{}
	var order []string
	// The fake has answered; the worker records the answer a moment later.
	waitFor(t, func() bool {
		tl = timeline(t, p.Env, p.Bootstrap, c.ID)
		return strings.Contains(string(mustJSON(t, tl)), `"push_sent","device_id":"`+pixel.DeviceID+`","delivery_id":"`) &&
			strings.Count(string(mustJSON(t, tl)), `"push_sent"`) == 3
	})
	for _, ev := range tl.Events {
		key := ev.Event
		if ev.DeviceID != "" {
			key += ":" + map[string]string{iphone.DeviceID: "iphone", pixel.DeviceID: "pixel"}[ev.DeviceID]
		}
		if ev.Push == "challenge_resolved" {
			key += ":over"
		}
		seen[key] = ev
		order = append(order, key)
	}
	for _, k := range []string{"created", "push_queued:iphone", "push_sent:iphone", "push_queued:pixel", "push_sent:pixel",
		"fetched:iphone", "resolved:iphone", "push_queued:pixel:over", "push_sent:pixel:over"} {
		if _, ok := seen[k]; !ok {
			t.Errorf("timeline lacks %s: %v", k, order)
		}
	}
	if ev := seen["push_sent:iphone"]; ev.Provider != "apns" || ev.ProviderMessageID != alert.ApnsID {
		t.Errorf("APNs push in the timeline: %+v, want apns-id %s", ev, alert.ApnsID)
	}
	if ev := seen["push_sent:pixel"]; ev.Provider != "fcm" || ev.ProviderMessageID != message.Name {
		t.Errorf("FCM push in the timeline: %+v, want %s", ev, message.Name)
	}
	if ev := seen["resolved:iphone"]; ev.State != "approved" || ev.Resolution != "approve" {
		t.Errorf("resolution in the timeline: %+v", ev)
	}
	if tl.Challenge.ID != c.ID {
		t.Errorf("timeline of %s", tl.Challenge.ID)
	}

	// The metrics count the pushes by provider and outcome and time them.
	metrics := string(p.JSON(t, "GET", "/metrics", "", nil).Body)
	for _, re := range []string{
		`pushmfa_push_deliveries_total\{outcome="sent",provider="apns"\} [1-9]`,
		`pushmfa_push_deliveries_total\{outcome="sent",provider="fcm"\} [2-9]`,
		`pushmfa_push_commit_to_provider_seconds_count\{provider="apns"\} [1-9]`,
		`pushmfa_push_commit_to_provider_seconds_count\{provider="fcm"\} [1-9]`,
		`pushmfa_push_to_answer_seconds_count [1-9]`,
		`pushmfa_push_queue_jobs\{state="available"\} \d`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("/metrics lacks %s", re)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func assertAbsent(t *testing.T, s string, secrets []string) {
	t.Helper()
	for _, x := range secrets {
		if strings.Contains(s, x) {
			t.Errorf("a push carries %q: %s", x, s)
		}
	}
}

// TestFanOutIsConcurrent: a challenge's pushes to a user's devices go out
// together, not one after another: with each provider holding its answer
// for a while, every device's push arrives before the first is answered.
func TestFanOutIsConcurrent(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	tokens := []string{apnsToken(t), apnsToken(t), fcmToken(t)}
	for i, tok := range tokens {
		provider, platform := "apns", "ios"
		if i == 2 {
			provider, platform = "fcm", "android"
		}
		enrollDevice(t, p.Env, secret, "fan", authenticator.EnrollOptions{Platform: platform, PushProvider: provider,
			PushToken: tok, Name: "device " + strconv.Itoa(i)})
	}
	// The enrollments' news to the earlier devices first, so that the
	// held answers below go to the challenge's pushes.
	waitFor(t, func() bool {
		var busy int
		err := p.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM deliveries x JOIN devices d ON d.id = x.device_id
			JOIN users u ON u.id = d.user_id WHERE u.name = 'fan' AND x.outcome IN ('pending', 'retrying')`).Scan(&busy)
		return err == nil && busy == 0
	})
	const hold = 3 * time.Second
	before := make([]int, len(tokens))
	for i, tok := range tokens {
		before[i] = len(p.requests(tok))
		if i < 2 {
			p.apns.Script(tok, pushtest.Reply{Delay: hold})
		} else {
			p.fcm.Script(tok, pushtest.Reply{Delay: hold})
		}
	}
	newChallenge(t, p.Env, secret, "fan")
	var first, last time.Time
	waitFor(t, func() bool {
		for i, tok := range tokens {
			if len(p.requests(tok)) == before[i] {
				return false
			}
		}
		return true
	})
	for i, tok := range tokens {
		at := p.requests(tok)[before[i]]
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	if spread := last.Sub(first); spread >= hold {
		t.Fatalf("the pushes arrived %s apart, one after another's answer (held %s)", spread, hold)
	}
}

// TestRefusedTokenMakesTheDevicePollOnly: a token the provider calls dead
// is erased and the device polls, is told to register a new token on its
// next call, and is never deleted; a new token restores its pushes.
func TestRefusedTokenMakesTheDevicePollOnly(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	tests := []struct {
		name, provider, reason string
	}{
		{"APNs 410 Unregistered", "apns", "Unregistered"},
		{"APNs 400 BadDeviceToken", "apns", "BadDeviceToken"},
		{"FCM UNREGISTERED", "fcm", "UNREGISTERED"},
		{"FCM INVALID_ARGUMENT", "fcm", "INVALID_ARGUMENT"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := "user" + strconv.Itoa(i)
			d, _ := p.scriptedDevice(t, secret, user, tt.provider, pushtest.Reply{Reason: tt.reason})

			c := newChallenge(t, p.Env, secret, user)
			got := settled(t, p.Env, c.ID, d.DeviceID)
			if got.Outcome != "token_invalid" || !strings.Contains(got.Reason, tt.reason) {
				t.Fatalf("delivery %+v", got)
			}

			// Poll-only: provider none, token erased, the time recorded; an
			// audit event says why.
			provider, hasToken, marked := pushState(t, p.Env, d.DeviceID)
			if provider != "none" || hasToken || !marked {
				t.Errorf("device: provider %q, token kept %v, marked %v", provider, hasToken, marked)
			}
			var audits int
			if err := p.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE type = 'device.push_token_invalid'
				AND data->>'device_id' = $1`, d.DeviceID).Scan(&audits); err != nil {
				t.Fatal(err)
			}
			if audits != 1 {
				t.Errorf("%d audit events device.push_token_invalid", audits)
			}

			// The device still works by polling, and every answer tells it
			// to register a new token.
			r := deviceCall(t, p.Env, "GET", "/v1/device", deviceToken(t, d, "GET", "/v1/device", time.Now()))
			want(t, r, http.StatusOK, "")
			if r.Header.Get("Push-Token-Invalid") != "true" || r.Map(t)["push_token_invalid"] != true {
				t.Errorf("GET /v1/device: header %q, body %s", r.Header.Get("Push-Token-Invalid"), r.Body)
			}
			r = deviceCall(t, p.Env, "GET", "/v1/device/challenges", deviceToken(t, d, "GET", "/v1/device/challenges", time.Now()))
			want(t, r, http.StatusOK, "")
			if r.Header.Get("Push-Token-Invalid") != "true" || !strings.Contains(string(r.Body), c.ID) {
				t.Errorf("pending challenges: header %q, body %s", r.Header.Get("Push-Token-Invalid"), r.Body)
			}
			if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); err != nil {
				t.Fatalf("a poll-only device answers: %v", err)
			}
			r = p.JSON(t, "GET", "/v1/users/"+user+"/devices", secret, nil)
			want(t, r, http.StatusOK, "")
			if !strings.Contains(string(r.Body), d.DeviceID) {
				t.Errorf("the device is gone from its user's list: %s", r.Body)
			}

			// A new token: the flag is cleared and pushes resume.
			fresh := apnsToken(t)
			if tt.provider == "fcm" {
				fresh = fcmToken(t)
			}
			if err := d.SetPushToken(ctx, tt.provider, fresh); err != nil {
				t.Fatal(err)
			}
			r = deviceCall(t, p.Env, "GET", "/v1/device", deviceToken(t, d, "GET", "/v1/device", time.Now()))
			if r.Header.Get("Push-Token-Invalid") != "" || r.Map(t)["push_token_invalid"] != nil {
				t.Errorf("after a new token: header %q, body %s", r.Header.Get("Push-Token-Invalid"), r.Body)
			}
			c = newChallenge(t, p.Env, secret, user)
			if got := settled(t, p.Env, c.ID, d.DeviceID); got.Outcome != "sent" {
				t.Errorf("after a new token: %+v", got)
			}
		})
	}
}

// TestProviderFaultChangesNoDevice: when the provider refuses us (our key,
// our topic, our project), no device is to blame: tokens stay, a metric and
// an error line say it, the push is not retried.
func TestProviderFaultChangesNoDevice(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	tests := []struct {
		name, provider string
		reply          pushtest.Reply
		reason         string
	}{
		{"APNs TopicDisallowed", "apns", pushtest.Reply{Reason: "TopicDisallowed"}, "TopicDisallowed"},
		{"APNs InvalidProviderToken", "apns", pushtest.Reply{Reason: "InvalidProviderToken"}, "InvalidProviderToken"},
		{"FCM 403", "fcm", pushtest.Reply{Status: 403}, "PERMISSION_DENIED"},
		// An invalid argument that is not the token is a fault in our
		// message: erasing tokens for it would erase every device's.
		{"FCM INVALID_ARGUMENT about the message", "fcm", pushtest.Reply{Reason: "INVALID_ARGUMENT",
			Message: `Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), "-1s"`},
			"INVALID_ARGUMENT (message)"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := "fault" + strconv.Itoa(i)
			d, tok := p.scriptedDevice(t, secret, user, tt.provider, tt.reply)
			c := newChallenge(t, p.Env, secret, user)
			got := settled(t, p.Env, c.ID, d.DeviceID)
			if got.Outcome != "failed" || got.Attempts != 1 || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("delivery %+v", got)
			}
			if provider, hasToken, marked := pushState(t, p.Env, d.DeviceID); provider != tt.provider || !hasToken || marked {
				t.Errorf("device changed: provider %q, token kept %v, marked %v", provider, hasToken, marked)
			}
			metric := `pushmfa_push_provider_faults_total{provider="` + tt.provider + `",reason="` + tt.reason + `"} 1`
			if m := string(p.JSON(t, "GET", "/metrics", "", nil).Body); !strings.Contains(m, metric) {
				t.Errorf("/metrics lacks %s", metric)
			}
			p.Logs.Await(t, `"level":"ERROR"`, "no device is at fault", d.DeviceID, tt.reason)
			if n := len(p.requests(tok)); n != 1 {
				t.Errorf("the provider got %d requests, want 1 (a fault of ours is not retried)", n)
			}
		})
	}
}

// TestTransientFailuresAreRetried: 429 and 5xx are retried with backoff or
// after the provider's Retry-After, until the push goes through.
func TestTransientFailuresAreRetried(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	tests := []struct {
		name, provider string
		replies        []pushtest.Reply
		gap            time.Duration // at least this between the tries
	}{
		{"APNs 503 with Retry-After", "apns", []pushtest.Reply{{Status: 503, RetryAfter: "2"}}, 2 * time.Second},
		{"APNs 429 then 500", "apns", []pushtest.Reply{{Status: 429}, {Status: 500}}, 500 * time.Millisecond},
		{"FCM QUOTA_EXCEEDED with Retry-After", "fcm", []pushtest.Reply{{Reason: "QUOTA_EXCEEDED", RetryAfter: "2"}}, 2 * time.Second},
		{"FCM UNAVAILABLE then INTERNAL", "fcm", []pushtest.Reply{{Reason: "UNAVAILABLE"}, {Reason: "INTERNAL"}}, 500 * time.Millisecond},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := "retry" + strconv.Itoa(i)
			d, tok := p.scriptedDevice(t, secret, user, tt.provider, tt.replies...)
			c := newChallenge(t, p.Env, secret, user)
			got := settled(t, p.Env, c.ID, d.DeviceID)
			if got.Outcome != "sent" || got.Attempts != len(tt.replies)+1 {
				t.Errorf("delivery %+v, want sent at attempt %d", got, len(tt.replies)+1)
			}
			at := p.requests(tok)
			if len(at) != len(tt.replies)+1 {
				t.Fatalf("the provider got %d requests, want %d", len(at), len(tt.replies)+1)
			}
			if gap := at[1].Sub(at[0]); gap < tt.gap {
				t.Errorf("retried after %v, want at least %v", gap, tt.gap)
			}
		})
	}
}

// TestNoPushOnceItIsOver: a push waiting for its retry is dropped, not
// sent, once its challenge is answered or expired, and a Retry-After
// beyond the challenge's life ends the push at once.
func TestNoPushOnceItIsOver(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})

	t.Run("answered meanwhile", func(t *testing.T) {
		t.Parallel()
		d, tok := p.scriptedDevice(t, secret, "answered", "apns", pushtest.Reply{Status: 503, RetryAfter: "2"})
		c := newChallenge(t, p.Env, secret, "answered")
		waitFor(t, func() bool { return deliveryOf(t, p.Env, c.ID, d.DeviceID).Outcome == "retrying" })
		if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "deny", UV: true}); err != nil {
			t.Fatal(err)
		}
		if got := settled(t, p.Env, c.ID, d.DeviceID); got.Outcome != "skipped" {
			t.Errorf("delivery %+v, want skipped", got)
		}
		if n := len(p.apns.ReceivedFor(tok)); n != 1 {
			t.Errorf("APNs got %d requests, want only the first", n)
		}
	})
	t.Run("expired meanwhile", func(t *testing.T) {
		t.Parallel()
		d, tok := p.scriptedDevice(t, secret, "expired", "fcm", pushtest.Reply{Reason: "UNAVAILABLE", RetryAfter: "2"})
		c := newChallenge(t, p.Env, secret, "expired")
		waitFor(t, func() bool { return deliveryOf(t, p.Env, c.ID, d.DeviceID).Outcome == "retrying" })
		expireNow(t, p.Env, c.ID)
		if got := settled(t, p.Env, c.ID, d.DeviceID); got.Outcome != "skipped" {
			t.Errorf("delivery %+v, want skipped", got)
		}
		if n := len(p.fcm.ReceivedFor(tok)); n != 1 {
			t.Errorf("FCM got %d requests, want only the first", n)
		}
	})
	t.Run("Retry-After beyond the challenge's life", func(t *testing.T) {
		t.Parallel()
		d, _ := p.scriptedDevice(t, secret, "later", "apns", pushtest.Reply{Status: 429, RetryAfter: "3600"})
		c := newChallenge(t, p.Env, secret, "later")
		got := settled(t, p.Env, c.ID, d.DeviceID)
		if got.Outcome != "failed" || got.Attempts != 1 || !strings.Contains(got.Reason, "gave up") {
			t.Errorf("delivery %+v, want given up after one attempt", got)
		}
	})
}

// TestDeviceNewsIsABackgroundPush: enrolling and removing a device tells the
// user's other devices, as background pushes.
func TestDeviceNewsIsABackgroundPush(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	tok := apnsToken(t)
	enrollDevice(t, p.Env, secret, "nina", authenticator.EnrollOptions{PushProvider: "apns", PushToken: tok})
	tablet := enrollDevice(t, p.Env, secret, "nina", authenticator.EnrollOptions{Name: "tablet"})
	if err := tablet.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	events := func() []string {
		var out []string
		for _, r := range p.apns.ReceivedFor(tok) {
			if r.Answered {
				out = append(out, r.Header.Get("apns-push-type")+"/"+r.Header.Get("apns-priority")+"/"+
					strconv.Itoa(int(apnsPayload(t, r)["aps"].(map[string]any)["content-available"].(float64)))+"/"+
					apnsPayload(t, r)["event"].(string))
			}
		}
		return out
	}
	waitFor(t, func() bool { return len(events()) == 2 })
	got := strings.Join(events(), " ")
	if got != "background/5/1/device_added background/5/1/device_removed" && got != "background/5/1/device_removed background/5/1/device_added" {
		t.Errorf("pushes to the phone: %s", got)
	}
}

// TestTimelineAccess: the timeline is for admins of the challenge's tenant.
func TestTimelineAccess(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, _ := signedIn(t, e, "ivan")
	c := newChallenge(t, e, secret, "ivan")
	createTenant(t, e, "other")
	_, otherAdmin := createToken(t, e, "other admin", "other")
	_, defaultAdmin := createToken(t, e, "default admin", "default")

	tl := timeline(t, e, defaultAdmin, c.ID)
	if tl.Challenge.ID != c.ID || len(tl.Events) == 0 || tl.Events[0].Event != "created" {
		t.Errorf("timeline %+v", tl)
	}
	path := "/v1/admin/challenges/" + c.ID + "/timeline"
	want(t, e.JSON(t, "GET", path, otherAdmin, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "GET", path, secret, nil), http.StatusForbidden, "forbidden")
	want(t, e.JSON(t, "GET", path, "", nil), http.StatusUnauthorized, "unauthorized")
	want(t, e.JSON(t, "GET", "/v1/admin/challenges/not-an-id/timeline", e.Bootstrap, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "GET", "/v1/admin/challenges/0199a0b2-0000-7000-8000-000000000000/timeline", e.Bootstrap, nil), http.StatusNotFound, "not_found")
}

// TestPushesOfADeadWorkerAreRescued: a deliver job left running by a
// process that died (here: made to look so) is stood in for by one new job
// within the two-second sweep once it is older than any live worker's
// job, not after River's own rescuer (a minute, on a 30-second round); and
// only once.
func TestPushesOfADeadWorkerAreRescued(t *testing.T) {
	t.Parallel()
	p := startWithFakes(t)
	ctx := context.Background()
	_, secret := createApp(t, p.Env, p.Bootstrap, map[string]any{"name": "VPN"})
	d, tok := p.scriptedDevice(t, secret, "lazarus", "apns", pushtest.Reply{Status: 503, RetryAfter: "30"})
	c := newChallenge(t, p.Env, secret, "lazarus")
	waitFor(t, func() bool { return deliveryOf(t, p.Env, c.ID, d.DeviceID).Outcome == "retrying" })

	// Once the job snoozes (30 s), make it look taken by a worker that
	// died 25 s ago: past any live worker's time (17 s), not yet River's
	// own rescuer's (a minute).
	var job int64
	waitFor(t, func() bool {
		err := p.DB.Pool.QueryRow(ctx, `UPDATE river_job SET state = 'running', attempted_at = now() - interval '25 seconds',
			attempted_by = '{dead-process}' WHERE kind = 'deliver' AND state = 'scheduled' AND args->>'delivery_id' =
			(SELECT id::text FROM deliveries WHERE challenge_id = $1 AND device_id = $2) RETURNING id`, c.ID, d.DeviceID).Scan(&job)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return err == nil
	})
	got := settled(t, p.Env, c.ID, d.DeviceID)
	if got.Outcome != "sent" || got.Attempts != 2 {
		t.Errorf("delivery %+v, want sent at the second attempt", got)
	}
	if n := len(p.requests(tok)); n != 2 {
		t.Errorf("APNs got %d requests, want 2", n)
	}
	// Later sweeps find the stuck job again and queue nothing more.
	time.Sleep(2500 * time.Millisecond)
	var rescues int
	if err := p.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'deliver'
		AND (args->>'rescue_of')::bigint = $1`, job).Scan(&rescues); err != nil {
		t.Fatal(err)
	}
	if rescues != 1 {
		t.Errorf("%d rescue jobs for job %d, want 1", rescues, job)
	}
	p.Logs.Await(t, "pushes left running by a process that stopped are queued again")
}

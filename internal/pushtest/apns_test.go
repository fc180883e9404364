package pushtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
)

const (
	testKeyID  = "ABC123DEFG"
	testTeamID = "DEF123GHIJ"
	testTopic  = "com.example.pushmfa"
)

// apnsBundle is one test's APNs fake with a real apns2 client aimed at it.
type apnsBundle struct {
	ca     *CA
	fake   *APNs
	key    *ecdsa.PrivateKey // the .p8 the client signs with
	client *apns2.Client
}

// setupAPNs starts a fake with its own CA (so only the explicit root pool
// can make the client trust it) and a token client loaded from a .p8.
func setupAPNs(t testing.TB, opts ...func(*APNsConfig)) *apnsBundle {
	t.Helper()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	p8, _, err := NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	key, err := token.AuthKeyFromBytes(p8)
	if err != nil {
		t.Fatalf("apns2 refuses the .p8: %v", err)
	}
	cfg := APNsConfig{CA: ca, KeyID: testKeyID, TeamID: testTeamID, Key: &key.PublicKey, Topic: testTopic}
	for _, o := range opts {
		o(&cfg)
	}
	fake, err := NewAPNs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	b := &apnsBundle{ca: ca, fake: fake, key: key}
	b.client = b.newClient(t, &token.Token{AuthKey: key, KeyID: testKeyID, TeamID: testTeamID})
	return b
}

// newClient is an apns2 token client for tok, trusting the fake's CA.
func (b *apnsBundle) newClient(t testing.TB, tok *token.Token) *apns2.Client {
	t.Helper()
	client := apns2.NewTokenClient(tok)
	client.Host = b.fake.URL()
	client.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: b.ca.Pool()}
	t.Cleanup(client.CloseIdleConnections)
	return client
}

func push(t testing.TB, client *apns2.Client, n *apns2.Notification) *apns2.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := client.PushWithContext(ctx, n)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return res
}

func alert(deviceToken string) *apns2.Notification {
	return &apns2.Notification{
		DeviceToken: deviceToken,
		Topic:       testTopic,
		Payload:     []byte(`{"aps":{"alert":"Approve sign-in?"},"challenge_id":"c1"}`),
	}
}

func TestAPNsSuccess(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	dev := newDeviceToken(t)

	res := push(t, b.client, alert(dev))
	if res.StatusCode != http.StatusOK || res.Reason != "" {
		t.Fatalf("push = %d %q, want 200", res.StatusCode, res.Reason)
	}
	if !canonicalUUID(res.ApnsID) || res.ApnsUniqueID == "" {
		t.Errorf("apns-id %q, apns-unique-id %q: want a UUID and an id", res.ApnsID, res.ApnsUniqueID)
	}

	n := alert(dev)
	n.ApnsID = "3A2B1C0D-1111-2222-3333-444455556666"
	if res := push(t, b.client, n); res.ApnsID != n.ApnsID {
		t.Errorf("apns-id = %q, want the request's %q echoed", res.ApnsID, n.ApnsID)
	}

	got := b.fake.Received()
	if len(got) != 2 {
		t.Fatalf("received %d requests, want 2", len(got))
	}
	p := got[0]
	if p.Token != dev || p.Status != http.StatusOK || p.Reason != "" || p.ApnsID != res.ApnsID || !p.Answered {
		t.Errorf("record = %+v, want token, 200, the apns-id answered, answered", p)
	}
	if !strings.HasPrefix(p.Header.Get("Authorization"), "bearer ") ||
		p.Header.Get("apns-topic") != testTopic || p.Header.Get("apns-push-type") != "alert" {
		t.Errorf("headers = %v", p.Header)
	}
	if !bytes.Equal(p.Payload, alert(dev).Payload.([]byte)) {
		t.Errorf("payload = %s", p.Payload)
	}
	if time.Since(p.At) > time.Minute || got[1].At.Before(p.At) {
		t.Errorf("arrival times %v, %v", p.At, got[1].At)
	}
}

// TestAPNsScriptedReplies checks that each scripted answer reaches apns2's
// Response as Apple's would, then that the script runs out into success.
func TestAPNsScriptedReplies(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	tests := []struct {
		name       string
		reply      Reply
		wantStatus int
		wantReason string
	}{
		{"bad device token", Reply{Reason: apns2.ReasonBadDeviceToken}, 400, "BadDeviceToken"},
		{"unregistered", Reply{Reason: apns2.ReasonUnregistered}, 410, "Unregistered"},
		{"expired token", Reply{Reason: apns2.ReasonExpiredToken}, 410, "ExpiredToken"},
		{"too many requests", Reply{Status: 429, Reason: apns2.ReasonTooManyRequests, RetryAfter: "60"}, 429, "TooManyRequests"},
		{"internal error by status", Reply{Status: 500}, 500, "InternalServerError"},
		{"unavailable by status", Reply{Status: 503}, 503, "ServiceUnavailable"},
		{"shutdown", Reply{Reason: apns2.ReasonShutdown}, 503, "Shutdown"},
		{"provider token by reason", Reply{Reason: apns2.ReasonInvalidProviderToken}, 403, "InvalidProviderToken"},
		{"topic disallowed", Reply{Reason: apns2.ReasonTopicDisallowed}, 400, "TopicDisallowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dev := newDeviceToken(t)
			b.fake.Script(dev, tt.reply)

			res := push(t, b.client, alert(dev))
			if res.StatusCode != tt.wantStatus || res.Reason != tt.wantReason {
				t.Fatalf("push = %d %q, want %d %q", res.StatusCode, res.Reason, tt.wantStatus, tt.wantReason)
			}
			if !canonicalUUID(res.ApnsID) {
				t.Errorf("apns-id %q on an error, want a UUID", res.ApnsID)
			}
			if tt.wantStatus == http.StatusGone {
				if d := time.Since(res.Timestamp.Time); d < -time.Second || d > time.Minute {
					t.Errorf("410 timestamp %v, want about now", res.Timestamp.Time)
				}
			} else if !res.Timestamp.IsZero() {
				t.Errorf("timestamp %v on a %d", res.Timestamp.Time, res.StatusCode)
			}

			if res := push(t, b.client, alert(dev)); res.StatusCode != http.StatusOK {
				t.Errorf("after the script: %d %q, want 200", res.StatusCode, res.Reason)
			}
			got := b.fake.ReceivedFor(dev)
			if len(got) != 2 || got[0].Status != tt.wantStatus || got[0].Reason != tt.wantReason || got[1].Status != 200 {
				t.Errorf("received %+v", got)
			}
		})
	}
}

func TestAPNsScriptOrder(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	dev := newDeviceToken(t)
	b.fake.Script(dev, Reply{Status: 503}, Reply{Reason: "TooManyRequests"})
	b.fake.Script(dev, Reply{Reason: "Unregistered"})
	var got []string
	for range 4 {
		res := push(t, b.client, alert(dev))
		got = append(got, res.Reason)
	}
	want := []string{"ServiceUnavailable", "TooManyRequests", "Unregistered", ""}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("reasons %q, want %q", got, want)
	}
	// Another token was never scripted.
	if res := push(t, b.client, alert(newDeviceToken(t))); res.StatusCode != 200 {
		t.Errorf("unscripted token: %d %q", res.StatusCode, res.Reason)
	}
}

// TestAPNsProviderToken covers each way the bearer JWT can be refused, with
// tokens apns2 itself signs wherever it can make them.
func TestAPNsProviderToken(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// signed makes a token apns2 sends as is (IssuedAt now: not due for
	// regeneration) though its JWT says otherwise.
	signed := func(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) *token.Token {
		j := jwt.NewWithClaims(method, claims)
		j.Header["kid"] = kid
		s, err := j.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return &token.Token{AuthKey: b.key, KeyID: testKeyID, TeamID: testTeamID, IssuedAt: time.Now().Unix(), Bearer: s}
	}
	now := time.Now()
	tests := []struct {
		name   string
		tok    *token.Token
		status int
		reason string
	}{
		{"valid", &token.Token{AuthKey: b.key, KeyID: testKeyID, TeamID: testTeamID}, 200, ""},
		{"wrong key", &token.Token{AuthKey: otherKey, KeyID: testKeyID, TeamID: testTeamID}, 403, "InvalidProviderToken"},
		{"wrong key id", &token.Token{AuthKey: b.key, KeyID: "ZZZ999ZZZZ", TeamID: testTeamID}, 403, "InvalidProviderToken"},
		{"wrong team", &token.Token{AuthKey: b.key, KeyID: testKeyID, TeamID: "ZZZ999ZZZZ"}, 403, "InvalidProviderToken"},
		{"issued over an hour ago", signed(jwt.SigningMethodES256, b.key, testKeyID,
			jwt.MapClaims{"iss": testTeamID, "iat": now.Add(-61 * time.Minute).Unix()}), 403, "ExpiredProviderToken"},
		{"issued 59 minutes ago", signed(jwt.SigningMethodES256, b.key, testKeyID,
			jwt.MapClaims{"iss": testTeamID, "iat": now.Add(-59 * time.Minute).Unix()}), 200, ""},
		{"issued in the future", signed(jwt.SigningMethodES256, b.key, testKeyID,
			jwt.MapClaims{"iss": testTeamID, "iat": now.Add(5 * time.Minute).Unix()}), 403, "InvalidProviderToken"},
		{"no iat", signed(jwt.SigningMethodES256, b.key, testKeyID,
			jwt.MapClaims{"iss": testTeamID}), 403, "InvalidProviderToken"},
		{"HMAC with the public key", signed(jwt.SigningMethodHS256, []byte("secret"), testKeyID,
			jwt.MapClaims{"iss": testTeamID, "iat": now.Unix()}), 403, "InvalidProviderToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := push(t, b.newClient(t, tt.tok), alert(newDeviceToken(t)))
			if res.StatusCode != tt.status || res.Reason != tt.reason {
				t.Errorf("push = %d %q, want %d %q", res.StatusCode, res.Reason, tt.status, tt.reason)
			}
		})
	}
}

// TestAPNsRequestChecks sends requests Apple refuses through apns2, and one
// each that passes, and checks a refusal consumes no scripted answer.
func TestAPNsRequestChecks(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	big := `{"aps":{"alert":"` + strings.Repeat("x", 4096) + `"}}`
	tests := []struct {
		name   string
		edit   func(n *apns2.Notification)
		status int
		reason string
	}{
		{"wrong topic", func(n *apns2.Notification) { n.Topic = "com.example.other" }, 400, "DeviceTokenNotForTopic"},
		{"no topic", func(n *apns2.Notification) { n.Topic = "" }, 400, "MissingTopic"},
		{"unknown push type", func(n *apns2.Notification) { n.PushType = "bogus" }, 400, "InvalidPushType"},
		{"background at priority 10", func(n *apns2.Notification) {
			n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityHigh
			n.Payload = []byte(`{"aps":{"content-available":1}}`)
		}, 400, "BadPriority"},
		{"background at priority 5", func(n *apns2.Notification) {
			n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
			n.Payload = []byte(`{"aps":{"content-available":1}}`)
		}, 200, ""},
		{"alert at priority 10", func(n *apns2.Notification) { n.Priority = apns2.PriorityHigh }, 200, ""},
		{"priority 7", func(n *apns2.Notification) { n.Priority = 7 }, 400, "BadPriority"},
		{"voip on the app topic", func(n *apns2.Notification) { n.PushType = apns2.PushTypeVOIP }, 400, "DeviceTokenNotForTopic"},
		{"voip on the .voip topic", func(n *apns2.Notification) {
			n.PushType, n.Topic = apns2.PushTypeVOIP, testTopic+".voip"
		}, 200, ""},
		{"collapse id of 65 bytes", func(n *apns2.Notification) { n.CollapseID = strings.Repeat("c", 65) }, 400, "BadCollapseId"},
		{"collapse id of 64 bytes", func(n *apns2.Notification) { n.CollapseID = strings.Repeat("c", 64) }, 200, ""},
		{"expiration", func(n *apns2.Notification) { n.Expiration = time.Now().Add(time.Minute) }, 200, ""},
		{"apns-id not a UUID", func(n *apns2.Notification) { n.ApnsID = "not-a-uuid" }, 400, "BadMessageId"},
		{"device token not hex", func(n *apns2.Notification) { n.DeviceToken = "device-1" }, 400, "BadDeviceToken"},
		{"no device token", func(n *apns2.Notification) { n.DeviceToken = "" }, 400, "MissingDeviceToken"},
		{"payload over 4 KB", func(n *apns2.Notification) { n.Payload = []byte(big) }, 413, "PayloadTooLarge"},
		{"voip payload over 4 KB", func(n *apns2.Notification) {
			n.PushType, n.Topic, n.Payload = apns2.PushTypeVOIP, testTopic+".voip", []byte(big)
		}, 200, ""},
		{"payload without aps", func(n *apns2.Notification) { n.Payload = []byte(`{"challenge_id":"c1"}`) }, 400, "PayloadEmpty"},
		{"payload not an object", func(n *apns2.Notification) { n.Payload = []byte(`["aps"]`) }, 400, "PayloadEmpty"},
		{"aps not a dictionary", func(n *apns2.Notification) { n.Payload = []byte(`{"aps":"alert"}`) }, 400, "PayloadEmpty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := alert(newDeviceToken(t))
			tt.edit(n)
			res := push(t, b.client, n)
			if res.StatusCode != tt.status || res.Reason != tt.reason {
				t.Errorf("push = %d %q, want %d %q", res.StatusCode, res.Reason, tt.status, tt.reason)
			}
		})
	}

	t.Run("a refused request consumes no script", func(t *testing.T) {
		t.Parallel()
		dev := newDeviceToken(t)
		b.fake.Script(dev, Reply{Reason: "BadDeviceToken"})
		n := alert(dev)
		n.Topic = "com.example.other"
		want := []string{"DeviceTokenNotForTopic", "BadDeviceToken", ""}
		for i, n := range []*apns2.Notification{n, alert(dev), alert(dev)} {
			if res := push(t, b.client, n); res.Reason != want[i] {
				t.Errorf("push %d = %q, want %q", i, res.Reason, want[i])
			}
		}
		if got := b.fake.ReceivedFor(dev); len(got) != 3 || got[0].Reason != "DeviceTokenNotForTopic" || got[0].Header.Get("apns-topic") != "com.example.other" {
			t.Errorf("received %+v, want every request recorded", got)
		}
	})
}

// TestAPNsProtocol sends what apns2 never would, over a plain HTTP/2
// client, and checks the raw answers: statuses, JSON bodies, headers.
func TestAPNsProtocol(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	h2 := &http.Client{Transport: &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: b.ca.Pool()}}}
	t.Cleanup(h2.CloseIdleConnections)
	bearer := (&token.Token{AuthKey: b.key, KeyID: testKeyID, TeamID: testTeamID}).GenerateIfExpired()
	dev := newDeviceToken(t)
	b.fake.Script(dev, Reply{Reason: "TooManyRequests", RetryAfter: "120"})

	tests := []struct {
		name       string
		method     string
		path       string
		header     map[string][]string
		body       string
		emptyBody  bool
		status     int
		reason     string
		retryAfter string
	}{
		{name: "GET", method: "GET", path: "/3/device/" + dev, status: 405, reason: "MethodNotAllowed"},
		{name: "other path", path: "/3/devices/" + dev, status: 404, reason: "BadPath"},
		{name: "path below a token", path: "/3/device/" + dev + "/x", status: 404, reason: "BadPath"},
		{name: "no authorization", header: map[string][]string{"authorization": nil}, status: 403, reason: "MissingProviderToken"},
		{name: "basic authorization", header: map[string][]string{"authorization": {"Basic dXNlcjpwdw=="}}, status: 403, reason: "MissingProviderToken"},
		{name: "garbage bearer", header: map[string][]string{"authorization": {"bearer x.y.z"}}, status: 403, reason: "InvalidProviderToken"},
		{name: "expiration not a number", header: map[string][]string{"apns-expiration": {"tomorrow"}}, status: 400, reason: "BadExpirationDate"},
		{name: "expiration negative", header: map[string][]string{"apns-expiration": {"-1"}}, status: 400, reason: "BadExpirationDate"},
		{name: "expiration zero", header: map[string][]string{"apns-expiration": {"0"}}, status: 200},
		{name: "repeated topic", header: map[string][]string{"apns-topic": {testTopic, testTopic}}, status: 400, reason: "DuplicateHeaders"},
		{name: "no push type", header: map[string][]string{"apns-push-type": nil}, status: 200},
		{name: "empty body", emptyBody: true, status: 400, reason: "PayloadEmpty"},
		{name: "scripted retry-after", path: "/3/device/" + dev, status: 429, reason: "TooManyRequests", retryAfter: "120"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			method, path, body := cmp.Or(tt.method, "POST"), cmp.Or(tt.path, "/3/device/"+newDeviceToken(t)), cmp.Or(tt.body, `{"aps":{}}`)
			if tt.emptyBody {
				body = ""
			}
			req, err := http.NewRequestWithContext(t.Context(), method, b.fake.URL()+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("authorization", "bearer "+bearer)
			req.Header.Set("apns-topic", testTopic)
			req.Header.Set("apns-push-type", "alert")
			for k, v := range tt.header {
				req.Header.Del(k)
				for _, v := range v {
					req.Header.Add(k, v)
				}
			}
			res, err := h2.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			raw, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.ProtoMajor != 2 || res.StatusCode != tt.status {
				t.Fatalf("%s: %d, want HTTP/2 %d (body %s)", res.Proto, res.StatusCode, tt.status, raw)
			}
			if !canonicalUUID(res.Header.Get("apns-id")) {
				t.Errorf("apns-id %q", res.Header.Get("apns-id"))
			}
			if got := res.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if tt.status == http.StatusOK {
				if len(raw) != 0 {
					t.Errorf("success body %q, want empty", raw)
				}
				return
			}
			var answer map[string]any
			if err := json.Unmarshal(raw, &answer); err != nil || answer["reason"] != tt.reason || len(answer) != 1 {
				t.Errorf("body %s, want {\"reason\":%q}", raw, tt.reason)
			}
		})
	}

	t.Run("HTTP/1.1 refused", func(t *testing.T) {
		t.Parallel()
		h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.ca.Pool()}}}
		defer h1.CloseIdleConnections()
		res, err := h1.Post(b.fake.URL()+"/3/device/"+newDeviceToken(t), "application/json", strings.NewReader(`{"aps":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.ProtoMajor != 1 || res.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Errorf("%s %d, want HTTP/1.1 505", res.Proto, res.StatusCode)
		}
	})
}

func TestAPNsDefaultAndReset(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	dev := newDeviceToken(t)
	b.fake.SetDefault(Reply{Status: 503})
	b.fake.Script(dev, Reply{})
	if res := push(t, b.client, alert(dev)); res.StatusCode != 200 {
		t.Errorf("scripted success: %d %q", res.StatusCode, res.Reason)
	}
	if res := push(t, b.client, alert(dev)); res.StatusCode != 503 || res.Reason != "ServiceUnavailable" {
		t.Errorf("default: %d %q, want 503 ServiceUnavailable", res.StatusCode, res.Reason)
	}
	b.fake.Script(dev, Reply{Reason: "Unregistered"})

	b.fake.Reset()
	if got := b.fake.Received(); len(got) != 0 {
		t.Errorf("received after Reset: %d", len(got))
	}
	if res := push(t, b.client, alert(dev)); res.StatusCode != 200 {
		t.Errorf("after Reset: %d %q, want 200 (script and default forgotten)", res.StatusCode, res.Reason)
	}
	if got := b.fake.Received(); len(got) != 1 {
		t.Errorf("received %d, want 1", len(got))
	}
}

func TestAPNsReceivedIsACopy(t *testing.T) {
	t.Parallel()
	b := setupAPNs(t)
	push(t, b.client, alert(newDeviceToken(t)))
	got := b.fake.Received()
	got[0].Header.Set("apns-topic", "changed")
	got[0].Payload[0] = 'X'
	again := b.fake.Received()[0]
	if again.Header.Get("apns-topic") != testTopic || again.Payload[0] != '{' {
		t.Errorf("the record changed with the copy: %+v", again)
	}
}

func TestAPNsDelay(t *testing.T) {
	t.Parallel()

	t.Run("slow provider", func(t *testing.T) {
		t.Parallel()
		const delay = 150 * time.Millisecond
		b := setupAPNs(t, func(c *APNsConfig) { c.Delay = delay })
		start := time.Now()
		res := push(t, b.client, alert(newDeviceToken(t)))
		if took := time.Since(start); res.StatusCode != 200 || took < delay {
			t.Errorf("push = %d after %v, want 200 after at least %v", res.StatusCode, took, delay)
		}
		if got := b.fake.Received(); len(got) != 1 || !got[0].Answered {
			t.Errorf("received %+v, want one answered", got)
		}
	})

	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		b := setupAPNs(t)
		dev := newDeviceToken(t)
		b.fake.Script(dev, Reply{Reason: "Unregistered", Delay: time.Minute})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := b.client.PushWithContext(ctx, alert(dev))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("push = %v, want the deadline", err)
		}
		start := time.Now()
		b.fake.Close() // waits for the handler: the record is final
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("Close took %v with an answer pending", took)
		}
		got := b.fake.Received()
		if len(got) != 1 || got[0].Answered || got[0].Status != 410 {
			t.Errorf("received %+v, want one unanswered 410", got)
		}
	})

	t.Run("unanswered while delayed", func(t *testing.T) {
		t.Parallel()
		b := setupAPNs(t)
		dev := newDeviceToken(t)
		b.fake.Script(dev, Reply{Delay: time.Minute})
		done := make(chan error, 1)
		go func() {
			_, err := b.client.PushWithContext(t.Context(), alert(dev))
			done <- err
		}()
		// Closing the fake cuts the delayed answer off.
		for len(b.fake.Received()) == 0 {
			select {
			case err := <-done:
				t.Fatalf("push returned early: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		if got := b.fake.Received(); got[0].Answered {
			t.Errorf("answered while delayed: %+v", got[0])
		}
		b.fake.Close()
		if err := <-done; err == nil {
			t.Error("push succeeded though the fake closed before answering")
		}
		if got := b.fake.Received(); got[0].Answered {
			t.Errorf("answered after Close: %+v", got[0])
		}
	})
}

// TestAPNsInstalledCA pushes with apns2's default transport, untouched: the
// fake's CA is trusted through SSL_CERT_FILE, set by InstallCA in TestMain.
func TestAPNsInstalledCA(t *testing.T) {
	t.Parallel()
	p8, key, err := NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	fake, err := NewAPNs(APNsConfig{CA: installedCA, KeyID: testKeyID, TeamID: testTeamID, Key: &key.PublicKey, Topic: testTopic})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	authKey, err := token.AuthKeyFromBytes(p8)
	if err != nil {
		t.Fatal(err)
	}
	client := apns2.NewTokenClient(&token.Token{AuthKey: authKey, KeyID: testKeyID, TeamID: testTeamID})
	client.Host = fake.URL()
	defer client.CloseIdleConnections()
	if res := push(t, client, alert(newDeviceToken(t))); res.StatusCode != 200 {
		t.Errorf("push = %d %q", res.StatusCode, res.Reason)
	}
}

func TestNewAPNsConfig(t *testing.T) {
	t.Parallel()
	_, key, err := NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	good := APNsConfig{CA: installedCA, KeyID: testKeyID, TeamID: testTeamID, Key: &key.PublicKey, Topic: testTopic}
	tests := map[string]func(*APNsConfig){
		"no CA":     func(c *APNsConfig) { c.CA = nil },
		"no key id": func(c *APNsConfig) { c.KeyID = "" },
		"no team":   func(c *APNsConfig) { c.TeamID = "" },
		"no key":    func(c *APNsConfig) { c.Key = nil },
		"no topic":  func(c *APNsConfig) { c.Topic = "" },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			edit(&cfg)
			if f, err := NewAPNs(cfg); err == nil {
				f.Close()
				t.Error("NewAPNs accepted it")
			}
		})
	}
}

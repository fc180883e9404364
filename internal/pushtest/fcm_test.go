package pushtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

const testProject = "pushmfa-test"

// newFCMFake starts an FCM fake on the installed CA: the Firebase SDK takes
// no root pool, it trusts the fake through SSL_CERT_FILE.
func newFCMFake(t testing.TB, opts ...func(*FCMConfig)) *FCM {
	t.Helper()
	cfg := FCMConfig{CA: installedCA, ProjectID: testProject}
	for _, o := range opts {
		o(&cfg)
	}
	f, err := NewFCM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// messagingClient is the SDK's client with the given service account,
// aimed at the fake: the real credential flow and the real send.
func messagingClient(t testing.TB, f *FCM, projectID string, creds []byte) *messaging.Client {
	t.Helper()
	app, err := firebase.NewApp(t.Context(), &firebase.Config{ProjectID: projectID},
		option.WithAuthCredentialsJSON(option.ServiceAccount, creds),
		option.WithEndpoint(f.Endpoint()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := app.Messaging(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func fcmMessage(deviceToken string) *messaging.Message {
	return &messaging.Message{
		Token:   deviceToken,
		Data:    map[string]string{"type": "challenge", "challenge_id": "c1"},
		Android: &messaging.AndroidConfig{Priority: "high", TTL: new(time.Minute)},
	}
}

func send(t testing.TB, c *messaging.Client, m *messaging.Message) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return c.Send(ctx, m)
}

func newFCMToken(t testing.TB) string { return "fcm-" + newDeviceToken(t)[:40] }

func TestFCMSend(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, f.CredentialsJSON())
	dev := newFCMToken(t)

	name, err := send(t, c, fcmMessage(dev))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if !strings.HasPrefix(name, "projects/"+testProject+"/messages/0:") {
		t.Errorf("name %q", name)
	}
	name2, err := send(t, c, fcmMessage(dev))
	if err != nil || name2 == name {
		t.Errorf("second send: %q, %v; want a new name", name2, err)
	}
	// The SDK fetched one access token from the fake and reused it.
	if n := f.TokenRequests(); n != 1 {
		t.Errorf("token requests %d, want 1", n)
	}

	got := f.Received()
	if len(got) != 2 {
		t.Fatalf("received %d, want 2", len(got))
	}
	p := got[0]
	if p.Token != dev || p.Status != 200 || p.Reason != "" || p.Name != name || !p.Answered {
		t.Errorf("record %+v", p)
	}
	if !strings.HasPrefix(p.Header.Get("Authorization"), "Bearer ya29.fake-") {
		t.Errorf("authorization %q", p.Header.Get("Authorization"))
	}
	var msg struct {
		Token   string            `json:"token"`
		Data    map[string]string `json:"data"`
		Android struct {
			Priority string `json:"priority"`
			TTL      string `json:"ttl"`
		} `json:"android"`
	}
	if err := json.Unmarshal(p.Message, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Token != dev || msg.Data["challenge_id"] != "c1" || msg.Android.Priority != "high" || msg.Android.TTL != "60s" {
		t.Errorf("message %s", p.Message)
	}
}

// TestFCMScriptedErrors checks that each scripted error reaches the SDK's
// classifiers as FCM's would, then that the script runs out into success.
func TestFCMScriptedErrors(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, f.CredentialsJSON())
	tests := []struct {
		name   string
		reply  Reply
		status int
		is     func(error) bool
	}{
		{"unregistered", Reply{Reason: "UNREGISTERED"}, 404, func(err error) bool {
			return messaging.IsUnregistered(err) && errorutils.IsNotFound(err)
		}},
		{"invalid argument", Reply{Reason: "INVALID_ARGUMENT"}, 400, messaging.IsInvalidArgument},
		{"quota exceeded", Reply{Reason: "QUOTA_EXCEEDED", RetryAfter: "30"}, 429, func(err error) bool {
			return messaging.IsQuotaExceeded(err) && errorutils.IsResourceExhausted(err)
		}},
		{"internal", Reply{Reason: "INTERNAL"}, 500, messaging.IsInternal},
		{"sender id mismatch", Reply{Reason: "SENDER_ID_MISMATCH"}, 403, func(err error) bool {
			return messaging.IsSenderIDMismatch(err) && errorutils.IsPermissionDenied(err)
		}},
		{"third-party auth", Reply{Reason: "THIRD_PARTY_AUTH_ERROR"}, 401, func(err error) bool {
			return messaging.IsThirdPartyAuthError(err) && errorutils.IsUnauthenticated(err)
		}},
		{"permission denied without details", Reply{Status: 403}, 403, func(err error) bool {
			return errorutils.IsPermissionDenied(err) && !messaging.IsSenderIDMismatch(err)
		}},
		// The SDK retries 503 unless Retry-After asks for more than its
		// two-minute cap: then the error comes back at once.
		{"unavailable beyond the retry cap", Reply{Reason: "UNAVAILABLE", RetryAfter: "600"}, 503, messaging.IsUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dev := newFCMToken(t)
			f.Script(dev, tt.reply)

			_, err := send(t, c, fcmMessage(dev))
			if err == nil || !tt.is(err) {
				t.Fatalf("send = %v, not classified as %s", err, tt.name)
			}
			res := errorutils.HTTPResponse(err)
			if res == nil || res.StatusCode != tt.status {
				t.Fatalf("HTTP response %+v, want status %d", res, tt.status)
			}
			if got := res.Header.Get("Retry-After"); got != tt.reply.RetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.reply.RetryAfter)
			}

			if _, err := send(t, c, fcmMessage(dev)); err != nil {
				t.Errorf("after the script: %v", err)
			}
			// One request per send: the SDK retried none of these.
			got := f.ReceivedFor(dev)
			if len(got) != 2 || got[0].Status != tt.status || got[0].Reason != tt.reply.Reason || got[0].Name != "" || got[1].Status != 200 {
				t.Errorf("received %+v", got)
			}
		})
	}
}

// TestFCMUnavailable shows what the SDK does with 503 on its own: it
// retries at once, then after 1 s, 2 s, 4 s, or after Retry-After.
func TestFCMUnavailable(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, f.CredentialsJSON())

	t.Run("retried at once", func(t *testing.T) {
		t.Parallel()
		dev := newFCMToken(t)
		f.Script(dev, Reply{Reason: "UNAVAILABLE"})
		if _, err := send(t, c, fcmMessage(dev)); err != nil {
			t.Fatalf("send: %v", err)
		}
		got := f.ReceivedFor(dev)
		if len(got) != 2 || got[0].Status != 503 || got[0].Reason != "UNAVAILABLE" || got[1].Status != 200 {
			t.Errorf("received %+v, want 503 then 200", got)
		}
	})

	t.Run("retry-after honoured", func(t *testing.T) {
		t.Parallel()
		dev := newFCMToken(t)
		f.Script(dev, Reply{Reason: "UNAVAILABLE", RetryAfter: "1"})
		if _, err := send(t, c, fcmMessage(dev)); err != nil {
			t.Fatalf("send: %v", err)
		}
		got := f.ReceivedFor(dev)
		if len(got) != 2 || got[1].At.Sub(got[0].At) < time.Second {
			t.Errorf("received %+v, want a retry a second later", got)
		}
	})

	t.Run("a deadline ends the retries", func(t *testing.T) {
		t.Parallel()
		dev := newFCMToken(t)
		f.Script(dev, Reply{Reason: "UNAVAILABLE"}, Reply{Reason: "UNAVAILABLE"}, Reply{Reason: "UNAVAILABLE"})
		ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
		defer cancel()
		_, err := c.Send(ctx, fcmMessage(dev))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("send = %v, want the deadline (the SDK waits 1 s before its second retry)", err)
		}
		if got := f.ReceivedFor(dev); len(got) != 2 {
			t.Errorf("received %d, want 2 (the send and the immediate retry)", len(got))
		}
	})
}

func TestFCMWrongProject(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, "someone-elses", f.CredentialsJSON())
	_, err := send(t, c, fcmMessage(newFCMToken(t)))
	if !errorutils.IsPermissionDenied(err) || messaging.IsSenderIDMismatch(err) {
		t.Fatalf("send = %v, want PERMISSION_DENIED without an FcmError", err)
	}
	if got := f.Received(); len(got) != 1 || got[0].Status != 403 || got[0].Reason != "" {
		t.Errorf("received %+v", got)
	}
}

// otherKeyCreds returns the fake's service account signed by another key:
// its assertions must be refused.
func otherKeyCreds(t testing.TB, f *FCM) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var sa map[string]string
	if err := json.Unmarshal(f.CredentialsJSON(), &sa); err != nil {
		t.Fatal(err)
	}
	sa["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	b, err := json.Marshal(sa)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFCMBadCredentials: the SDK's token request is refused, so no send
// reaches FCM. The SDK treats the refusal as a network error and retries it
// like a 503 (about 7 s in all), so the send ends on its deadline.
func TestFCMBadCredentials(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, otherKeyCreds(t, f))
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.Send(ctx, fcmMessage(newFCMToken(t))); err == nil {
		t.Fatal("send succeeded with a foreign key")
	}
	if f.TokenRequests() == 0 || f.TokensIssued() != 0 {
		t.Errorf("token requests %d, issued %d: want refused requests", f.TokenRequests(), f.TokensIssued())
	}
	if got := f.Received(); len(got) != 0 {
		t.Errorf("received %d sends without a token", len(got))
	}
}

// rawFCM is a plain client for the fake, with the oauth2 library's JWT flow
// (the one golang.org/x/oauth2/google runs for the SDK's older path).
type rawFCM struct {
	fake   *FCM
	client *http.Client
	ctx    context.Context // carries client for the oauth2 library
}

func newRawFCM(t testing.TB, f *FCM) *rawFCM {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: installedCA.Pool()}}}
	t.Cleanup(client.CloseIdleConnections)
	return &rawFCM{fake: f, client: client, ctx: context.WithValue(t.Context(), oauth2.HTTPClient, client)}
}

func (r *rawFCM) token(t testing.TB, creds []byte, scopes ...string) (*oauth2.Token, error) {
	t.Helper()
	conf, err := google.JWTConfigFromJSON(creds, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return conf.TokenSource(r.ctx).Token()
}

func (r *rawFCM) do(t testing.TB, method, path string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(r.ctx, method, r.fake.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, raw
}

func TestFCMTokenEndpoint(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	r := newRawFCM(t, f)

	t.Run("oauth2 library", func(t *testing.T) {
		t.Parallel()
		tok, err := r.token(t, f.CredentialsJSON(), fcmScope)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok.AccessToken, "ya29.fake-") || tok.Type() != "Bearer" || time.Until(tok.Expiry) < 59*time.Minute {
			t.Errorf("token %+v", tok)
		}
		_, err = r.token(t, otherKeyCreds(t, f), fcmScope)
		// The library's JWT flow leaves RetrieveError.ErrorCode unparsed.
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != 400 || !strings.Contains(string(re.Body), `"error":"invalid_grant"`) {
			t.Errorf("foreign key: %v, want a 400 invalid_grant", err)
		}
	})

	assertion := func(t testing.TB, method jwt.SigningMethod, key any, kid string, edit func(jwt.MapClaims)) string {
		now := time.Now()
		claims := jwt.MapClaims{"iss": f.email, "aud": f.tokenURL, "scope": fcmScope, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if edit != nil {
			edit(claims)
		}
		j := jwt.NewWithClaims(method, claims)
		j.Header["kid"] = kid
		s, err := j.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := func(edit func(jwt.MapClaims)) func(t testing.TB) string {
		return func(t testing.TB) string { return assertion(t, jwt.SigningMethodRS256, f.key, f.keyID, edit) }
	}
	tests := []struct {
		name      string
		grant     string
		assertion func(t testing.TB) string
		wantError string
	}{
		{name: "valid", assertion: good(nil)},
		{name: "cloud-platform scope", assertion: good(func(c jwt.MapClaims) { c["scope"] = cloudPlatformScope + " openid" })},
		{name: "other scope", assertion: good(func(c jwt.MapClaims) { c["scope"] = "https://www.googleapis.com/auth/datastore" }), wantError: "invalid_scope"},
		{name: "no scope", assertion: good(func(c jwt.MapClaims) { delete(c, "scope") }), wantError: "invalid_scope"},
		{name: "wrong audience", assertion: good(func(c jwt.MapClaims) { c["aud"] = "https://oauth2.googleapis.com/token" }), wantError: "invalid_grant"},
		{name: "wrong issuer", assertion: good(func(c jwt.MapClaims) { c["iss"] = "someone@example.iam.gserviceaccount.com" }), wantError: "invalid_grant"},
		{name: "expired", assertion: good(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}), wantError: "invalid_grant"},
		{name: "longer than an hour", assertion: good(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Hour).Unix() }), wantError: "invalid_grant"},
		{name: "no exp", assertion: good(func(c jwt.MapClaims) { delete(c, "exp") }), wantError: "invalid_grant"},
		{name: "unknown key id", assertion: func(t testing.TB) string {
			return assertion(t, jwt.SigningMethodRS256, f.key, "0123", nil)
		}, wantError: "invalid_grant"},
		{name: "HMAC", assertion: func(t testing.TB) string {
			return assertion(t, jwt.SigningMethodHS256, []byte("secret"), f.keyID, nil)
		}, wantError: "invalid_grant"},
		{name: "wrong grant type", grant: "client_credentials", assertion: good(nil), wantError: "unsupported_grant_type"},
		{name: "no assertion", assertion: func(testing.TB) string { return "" }, wantError: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			form := url.Values{"grant_type": {jwtBearerGrant}, "assertion": {tt.assertion(t)}}
			if tt.grant != "" {
				form.Set("grant_type", tt.grant)
			}
			res, raw := r.do(t, "POST", "/token", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, form.Encode())
			var body struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   int    `json:"expires_in"`
				TokenType   string `json:"token_type"`
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("body %s: %v", raw, err)
			}
			if tt.wantError != "" {
				if res.StatusCode != 400 || body.Error != tt.wantError || body.Description == "" {
					t.Errorf("%d %s, want 400 %s", res.StatusCode, raw, tt.wantError)
				}
				return
			}
			if res.StatusCode != 200 || body.AccessToken == "" || body.ExpiresIn != 3600 || body.TokenType != "Bearer" {
				t.Errorf("%d %s, want a token", res.StatusCode, raw)
			}
		})
	}
}

// TestFCMProtocol sends what the SDK never would and checks the raw
// answers against FCM's error shape.
func TestFCMProtocol(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	r := newRawFCM(t, f)
	tok, err := r.token(t, f.CredentialsJSON(), fcmScope)
	if err != nil {
		t.Fatal(err)
	}
	scripted := newFCMToken(t)
	f.Script(scripted, Reply{Reason: "UNREGISTERED"})

	const sendPath = "/v1/projects/" + testProject + "/messages:send"
	tests := []struct {
		name      string
		method    string
		path      string
		auth      string
		body      string
		status    int
		rpc       string
		errorCode string // the FcmError detail expected, if any
		name200   string // suffix of the name answered
	}{
		{name: "valid", body: `{"message":{"token":"t1","data":{"a":"b"}}}`, status: 200, name200: "/messages/0:"},
		{name: "topic", body: `{"message":{"topic":"news"}}`, status: 200, name200: "/messages/0:"},
		{name: "validate_only", body: `{"message":{"token":"t1"},"validate_only":true}`, status: 200, name200: "/messages/fake_message_id"},
		{name: "validateOnly", body: `{"message":{"token":"t1"},"validateOnly":true}`, status: 200, name200: "/messages/fake_message_id"},
		{name: "scripted", body: `{"message":{"token":"` + scripted + `"}}`, status: 404, rpc: "NOT_FOUND", errorCode: "UNREGISTERED"},
		{name: "no credentials", auth: "-", status: 401, rpc: "UNAUTHENTICATED"},
		{name: "unknown token", auth: "Bearer ya29.made-up", status: 401, rpc: "UNAUTHENTICATED"},
		{name: "wrong project", path: "/v1/projects/other/messages:send", status: 403, rpc: "PERMISSION_DENIED"},
		{name: "GET", method: "GET", status: 404, rpc: "NOT_FOUND"},
		{name: "other method", path: "/v1/projects/" + testProject + "/messages:batchSend", status: 404, rpc: "NOT_FOUND"},
		{name: "not JSON", body: `{"message":`, status: 400, rpc: "INVALID_ARGUMENT"},
		{name: "unknown field", body: `{"message":{"token":"t1"},"dry_run":true}`, status: 400, rpc: "INVALID_ARGUMENT"},
		{name: "unknown message field", body: `{"message":{"token":"t1","priority":"high"}}`, status: 400, rpc: "INVALID_ARGUMENT"},
		{name: "data not strings", body: `{"message":{"token":"t1","data":{"n":1}}}`, status: 400, rpc: "INVALID_ARGUMENT"},
		{name: "no message", body: `{}`, status: 400, rpc: "INVALID_ARGUMENT", errorCode: "INVALID_ARGUMENT"},
		{name: "no target", body: `{"message":{"data":{"a":"b"}}}`, status: 400, rpc: "INVALID_ARGUMENT", errorCode: "INVALID_ARGUMENT"},
		{name: "two targets", body: `{"message":{"token":"t1","topic":"news"}}`, status: 400, rpc: "INVALID_ARGUMENT", errorCode: "INVALID_ARGUMENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + tok.AccessToken}}
			switch tt.auth {
			case "":
			case "-":
				delete(h, "Authorization")
			default:
				h.Set("Authorization", tt.auth)
			}
			path := sendPath
			if tt.path != "" {
				path = tt.path
			}
			method := "POST"
			if tt.method != "" {
				method = tt.method
			}
			res, raw := r.do(t, method, path, h, tt.body)
			if res.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", res.StatusCode, raw, tt.status)
			}
			if tt.status == 200 {
				var ok struct{ Name string }
				if err := json.Unmarshal(raw, &ok); err != nil || !strings.HasPrefix(ok.Name, "projects/"+testProject+tt.name200) {
					t.Errorf("body %s, want a name ending in %s", raw, tt.name200)
				}
				return
			}
			var e struct {
				Error struct {
					Code    int
					Message string
					Status  string
					Details []map[string]any
				}
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("body %s: %v", raw, err)
			}
			if e.Error.Code != tt.status || e.Error.Status != tt.rpc || e.Error.Message == "" {
				t.Errorf("error %+v, want code %d status %s", e.Error, tt.status, tt.rpc)
			}
			var errorCode string
			for _, d := range e.Error.Details {
				if d["@type"] == fcmErrorType {
					errorCode, _ = d["errorCode"].(string)
				}
			}
			if errorCode != tt.errorCode {
				t.Errorf("FcmError %q, want %q (body %s)", errorCode, tt.errorCode, raw)
			}
			if tt.status == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: %v", res.Header)
			}
		})
	}
}

func TestFCMDryRunAndTopic(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, f.CredentialsJSON())
	ctx := t.Context()
	name, err := c.SendDryRun(ctx, fcmMessage(newFCMToken(t)))
	if err != nil || name != "projects/"+testProject+"/messages/fake_message_id" {
		t.Errorf("dry run = %q, %v", name, err)
	}
	if _, err := c.Send(ctx, &messaging.Message{Topic: "news", Data: map[string]string{"a": "b"}}); err != nil {
		t.Errorf("topic send: %v", err)
	}
	got := f.Received()
	if len(got) != 2 || got[1].Token != "" || !strings.Contains(string(got[1].Message), `"topic":"news"`) {
		t.Errorf("received %+v", got)
	}
}

func TestFCMDefaultAndReset(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	c := messagingClient(t, f, testProject, f.CredentialsJSON())
	dev := newFCMToken(t)
	f.SetDefault(Reply{Reason: "INTERNAL"})
	f.Script(dev, Reply{})
	if _, err := send(t, c, fcmMessage(dev)); err != nil {
		t.Errorf("scripted success: %v", err)
	}
	if _, err := send(t, c, fcmMessage(dev)); !messaging.IsInternal(err) {
		t.Errorf("default: %v, want INTERNAL", err)
	}
	f.Script(dev, Reply{Reason: "UNREGISTERED"})

	f.Reset()
	if len(f.Received()) != 0 || f.TokenRequests() != 0 {
		t.Errorf("after Reset: %d received, %d token requests", len(f.Received()), f.TokenRequests())
	}
	// Access tokens survive a Reset: the SDK's cached one still works.
	if _, err := send(t, c, fcmMessage(dev)); err != nil {
		t.Errorf("after Reset: %v, want success", err)
	}
}

func TestFCMDelay(t *testing.T) {
	t.Parallel()

	t.Run("slow provider", func(t *testing.T) {
		t.Parallel()
		const delay = 150 * time.Millisecond
		f := newFCMFake(t, func(c *FCMConfig) { c.Delay = delay })
		c := messagingClient(t, f, testProject, f.CredentialsJSON())
		start := time.Now()
		if _, err := send(t, c, fcmMessage(newFCMToken(t))); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("send took %v, want at least %v", took, delay)
		}
		if got := f.Received(); len(got) != 1 || !got[0].Answered {
			t.Errorf("received %+v, want one answered", got)
		}
	})

	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		f := newFCMFake(t)
		c := messagingClient(t, f, testProject, f.CredentialsJSON())
		dev := newFCMToken(t)
		f.Script(dev, Reply{Delay: time.Minute})
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if _, err := c.Send(ctx, fcmMessage(dev)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("send = %v, want the deadline", err)
		}
		f.Close() // waits for the handler: the record is final
		got := f.Received()
		if len(got) != 1 || got[0].Answered || got[0].Status != 200 {
			t.Errorf("received %+v, want one unanswered", got)
		}
	})
}

func TestNewFCMConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]FCMConfig{
		"no CA":         {ProjectID: testProject},
		"no project":    {CA: installedCA},
		"project path":  {CA: installedCA, ProjectID: "a/b"},
		"project space": {CA: installedCA, ProjectID: "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if f, err := NewFCM(cfg); err == nil {
				f.Close()
				t.Error("NewFCM accepted it")
			}
		})
	}
}

func TestFCMCredentialsJSON(t *testing.T) {
	t.Parallel()
	f := newFCMFake(t)
	var sa map[string]string
	if err := json.Unmarshal(f.CredentialsJSON(), &sa); err != nil {
		t.Fatal(err)
	}
	if sa["type"] != "service_account" || sa["project_id"] != testProject || sa["token_uri"] != f.URL()+"/token" ||
		sa["client_email"] == "" || sa["private_key_id"] == "" || !strings.HasPrefix(sa["private_key"], "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("service account %v", sa)
	}
	if f.Endpoint() != f.URL()+"/v1" || !strings.HasPrefix(f.URL(), "https://127.0.0.1:") {
		t.Errorf("URL %s, endpoint %s", f.URL(), f.Endpoint())
	}
}

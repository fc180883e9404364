package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
)

// newEnrollment creates an enrollment for user with an app secret and
// returns the reply.
func newEnrollment(t *testing.T, e *apitest.Env, secret, user string) map[string]any {
	t.Helper()
	r := e.JSON(t, "POST", "/v1/enrollments", secret, map[string]any{"user": user})
	want(t, r, http.StatusCreated, "")
	return r.Map(t)
}

// enrollDevice enrolls a real reference device for user.
func enrollDevice(t *testing.T, e *apitest.Env, secret, user string, o authenticator.EnrollOptions) *authenticator.Device {
	t.Helper()
	en := newEnrollment(t, e, secret, user)
	if o.Name == "" {
		o.Name = "phone"
	}
	if o.Platform == "" {
		o.Platform = "ios"
	}
	o.HTTP = e.HTTPClient(t)
	d, err := authenticator.Enroll(context.Background(), en["uri"].(string), o)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return d
}

// postJOSE sends a raw JWS to the enrollment endpoint.
func postJOSE(t *testing.T, e *apitest.Env, body string) *apitest.Response {
	t.Helper()
	return e.Do(t, apitest.Req{Method: "POST", Path: "/v1/device/enroll", Body: body,
		Header: map[string]string{"Content-Type": "application/jose"}})
}

// deviceCall makes a device call with a given Authorization header.
func deviceCall(t *testing.T, e *apitest.Env, method, path, authorization string) *apitest.Response {
	t.Helper()
	return e.Do(t, apitest.Req{Method: method, Path: path, Header: map[string]string{"Authorization": authorization}})
}

func deviceToken(t *testing.T, d *authenticator.Device, method, path string, at time.Time) string {
	t.Helper()
	tok, err := authenticator.DeviceToken(d.Key, d.DeviceID, method, path, at)
	if err != nil {
		t.Fatal(err)
	}
	return "Device " + tok
}

func TestEnrollmentFlow(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("PUBLIC_URL", "https://mfa.example.com"))
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})

	en := newEnrollment(t, e, secret, "alice")
	uri, _ := en["uri"].(string)
	if uri != "pushmfa://enroll?url=https%3A%2F%2Fmfa.example.com&code="+en["code"].(string) || en["state"] != "pending" || en["user"] != "alice" {
		t.Fatalf("enrollment %v", en)
	}
	id := en["id"].(string)
	// The user was created on the way, and audited.
	want(t, e.JSON(t, "GET", "/v1/admin/users/alice", e.Bootstrap, nil), http.StatusOK, "")

	// QR codes, with the same credentials, while pending.
	r := e.JSON(t, "GET", en["qr_png"].(string), secret, nil)
	want(t, r, http.StatusOK, "")
	if _, err := png.Decode(bytes.NewReader(r.Body)); err != nil || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("qr.png: %v %v", err, r.Header)
	}
	r = e.JSON(t, "GET", en["qr_svg"].(string), secret, nil)
	if r.Status != 200 || !strings.HasPrefix(string(r.Body), "<svg") || r.Header.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("qr.svg: %d %.40s", r.Status, r.Body)
	}
	r = e.JSON(t, "GET", "/v1/enrollments/"+id, secret, nil)
	if m := r.Map(t); m["state"] != "pending" || m["code"] != nil {
		t.Fatalf("enrollment read back: %v", m)
	}

	// The device enrolls (the URI names https://mfa.example.com, so point
	// the reference device at the test server instead).
	d, err := authenticator.Enroll(context.Background(), strings.Replace(uri, "https%3A%2F%2Fmfa.example.com",
		strings.ReplaceAll(e.URL, ":", "%3A"), 1), authenticator.EnrollOptions{Name: "Alice's iPhone", Platform: "ios",
		PushProvider: "apns", PushToken: "apns-token-0123456789abcdef", AppVersion: "1.2.3", OSVersion: "18.1",
		HTTP: e.HTTPClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	if d.TOTP == nil || d.TOTP.Digits != 6 || d.TOTP.Period != 30 || len(d.TOTP.Secret) != 32 ||
		!strings.HasPrefix(d.TOTP.URI, "otpauth://totp/Default:alice?") {
		t.Fatalf("totp %+v", d.TOTP)
	}
	if code, err := d.Code(); err != nil || len(code) != 6 {
		t.Fatalf("code %q %v", code, err)
	}

	r = e.JSON(t, "GET", "/v1/enrollments/"+id, secret, nil)
	if m := r.Map(t); m["state"] != "completed" || m["device_id"] != d.DeviceID {
		t.Fatalf("completed enrollment: %v", m)
	}
	want(t, e.JSON(t, "GET", en["qr_png"].(string), secret, nil), http.StatusConflict, "enrollment_used")

	// The device is listed, with what it said about itself.
	var list struct{ Devices []map[string]any }
	e.JSON(t, "GET", "/v1/users/alice/devices", secret, nil).Decode(t, &list)
	if len(list.Devices) != 1 || list.Devices[0]["name"] != "Alice's iPhone" || list.Devices[0]["push_provider"] != "apns" ||
		list.Devices[0]["state"] != "active" || list.Devices[0]["totp"] != true || list.Devices[0]["app_version"] != "1.2.3" {
		t.Fatalf("devices %v", list)
	}
	// Its own call works.
	var self map[string]any
	if err := d.Call(context.Background(), "GET", "/v1/device", nil, &self); err != nil || self["id"] != d.DeviceID {
		t.Fatalf("GET /v1/device: %v %v", self, err)
	}

	// Secrets at rest are sealed: neither the push token nor the TOTP seed
	// nor the code is in the database in clear.
	ctx := context.Background()
	var token, seed []byte
	if err := e.DB.Pool.QueryRow(ctx, `SELECT push_token, totp_secret FROM devices WHERE id = $1`, d.DeviceID).Scan(&token, &seed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(token, []byte("apns-token")) || bytes.Contains(seed, []byte(d.TOTP.Secret)) || len(token) < 28 {
		t.Fatal("a secret is stored in clear")
	}
	var code []byte
	_ = e.DB.Pool.QueryRow(ctx, `SELECT code FROM enrollments WHERE id = $1`, id).Scan(&code)
	if code != nil {
		t.Fatal("the sealed code was not erased when used")
	}
	// And nothing secret reached the log.
	for _, s := range []string{"apns-token-0123456789abcdef", d.TOTP.Secret, en["code"].(string)} {
		if strings.Contains(e.Logs.String(), s) {
			t.Errorf("%.8s... is in the log", s)
		}
	}

	// Audit: the user's creation, the enrollment, the device.
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?user=alice", e.Bootstrap, nil).Decode(t, &page)
	var types []string
	for _, ev := range page.Events {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "device.enrolled,enrollment.created,user.created" {
		t.Fatalf("audit %v", types)
	}
}

func TestPolicyWithoutOfflineCodes(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"totp_enabled": false}), 200, "")
	d := enrollDevice(t, e, secret, "bob", authenticator.EnrollOptions{})
	if d.TOTP != nil {
		t.Fatal("a TOTP seed was issued with totp_enabled false")
	}
	if _, err := d.Code(); err == nil {
		t.Fatal("code without a seed")
	}
}

// TestEnrollRefusals gives every refusal of POST /v1/device/enroll a named
// case with its stable code.
func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "1000"))
	ctx := context.Background()
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	code := func() string { return newEnrollment(t, e, secret, "carol")["code"].(string) }
	key, _ := authenticator.NewKey()
	now := time.Now()
	req := func(c string) authenticator.EnrollRequest {
		return authenticator.EnrollRequest{Code: c, Platform: "android", PushProvider: "fcm", PushToken: "fcm-token", Name: "pixel"}
	}
	signed := func(r authenticator.EnrollRequest, at time.Time) string {
		tok, err := authenticator.EnrollToken(key, r, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	claims := func(c string) jwt.MapClaims {
		return jwt.MapClaims{"code": c, "platform": "android", "push_provider": "none", "name": "x", "iat": now.Unix(), "jti": fmt.Sprint(time.Now().UnixNano())}
	}
	jwk := authenticator.JWK(key)
	forge := func(method jwt.SigningMethod, signKey any, header map[string]any, c jwt.MapClaims) string {
		s, err := authenticator.Sign(method, signKey, header, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pub, _ := key.PublicKey.Bytes()
	otherKey, _ := authenticator.NewKey()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	private := map[string]string{"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "d": base64.RawURLEncoding.EncodeToString(key.D.Bytes())}
	offCurve := map[string]string{"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["x"]}
	enrollHdr := map[string]any{"typ": "enroll+jwt", "jwk": jwk}

	expired := newEnrollment(t, e, secret, "carol")
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE enrollments SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second' WHERE id = $1`, expired["id"]); err != nil {
		t.Fatal(err)
	}
	used := code()
	if _, err := authenticator.Enroll(ctx, "pushmfa://enroll?url="+e.URL+"&code="+used, authenticator.EnrollOptions{Name: "first", Platform: "ios", HTTP: e.HTTPClient(t)}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, body, code string
		status           int
	}{
		{"alg none", forge(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, enrollHdr, claims(code())), "invalid_jws", 400},
		{"HS256 keyed with the public key", forge(jwt.SigningMethodHS256, pub, enrollHdr, claims(code())), "invalid_jws", 400},
		{"ES384", forge(jwt.SigningMethodES384, p384, enrollHdr, claims(code())), "invalid_jws", 400},
		{"RS256", forge(jwt.SigningMethodRS256, rsaKey, enrollHdr, claims(code())), "invalid_jws", 400},
		{"typ missing", forge(jwt.SigningMethodES256, key, map[string]any{"jwk": jwk}, claims(code())), "invalid_jws", 400},
		{"typ device+jwt", forge(jwt.SigningMethodES256, key, map[string]any{"typ": "device+jwt", "jwk": jwk}, claims(code())), "invalid_jws", 400},
		{"jwk with private parts", forge(jwt.SigningMethodES256, key, map[string]any{"typ": "enroll+jwt", "jwk": private}, claims(code())), "invalid_jws", 400},
		{"point not on the curve", forge(jwt.SigningMethodES256, key, map[string]any{"typ": "enroll+jwt", "jwk": offCurve}, claims(code())), "invalid_jws", 400},
		{"not signed by the jwk", forge(jwt.SigningMethodES256, otherKey, enrollHdr, claims(code())), "invalid_jws", 400},
		{"iat 2 minutes old", signed(req(code()), now.Add(-2*time.Minute)), "invalid_jws", 400},
		{"not a JWS", "hello", "invalid_jws", 400},
		{"unknown code", signed(req("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), now), "enrollment_not_found", 404},
		{"malformed code", signed(req("short"), now), "invalid_request", 400},
		{"used code", signed(req(used), now), "enrollment_used", 409},
		{"expired code", signed(req(expired["code"].(string)), now), "enrollment_expired", 410},
		{"push provider sms", signed(authenticator.EnrollRequest{Code: code(), Platform: "ios", PushProvider: "sms", Name: "x"}, now), "invalid_request", 400},
		{"apns without token", signed(authenticator.EnrollRequest{Code: code(), Platform: "ios", PushProvider: "apns", Name: "x"}, now), "invalid_request", 400},
		{"fcm with blank token", signed(authenticator.EnrollRequest{Code: code(), Platform: "android", PushProvider: "fcm", PushToken: "  ", Name: "x"}, now), "invalid_request", 400},
		{"none with a token", signed(authenticator.EnrollRequest{Code: code(), Platform: "ios", PushProvider: "none", PushToken: "t", Name: "x"}, now), "invalid_request", 400},
		{"no name", signed(authenticator.EnrollRequest{Code: code(), Platform: "ios", PushProvider: "none"}, now), "invalid_request", 400},
		{"bad platform", signed(authenticator.EnrollRequest{Code: code(), Platform: "iOS 18", PushProvider: "none", Name: "x"}, now), "invalid_request", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want(t, postJOSE(t, e, tc.body), tc.status, tc.code)
		})
	}
	// Wrong media type.
	r := e.Do(t, apitest.Req{Method: "POST", Path: "/v1/device/enroll", Body: signed(req(code()), now),
		Header: map[string]string{"Content-Type": "application/json"}})
	want(t, r, http.StatusUnsupportedMediaType, "unsupported_media_type")

	// A replayed token: the same key and jti with another code.
	tok1 := signed(req(code()), now)
	want(t, postJOSE(t, e, tok1), http.StatusCreated, "")
	var c1 map[string]any
	_ = json.Unmarshal([]byte(mustClaims(t, tok1)), &c1)
	c1["code"] = code()
	want(t, postJOSE(t, e, forge(jwt.SigningMethodES256, key, enrollHdr, jwt.MapClaims(c1))), http.StatusBadRequest, "invalid_jws")

	// The same key enrolled twice: refused, it is one device.
	want(t, postJOSE(t, e, signed(req(code()), now)), http.StatusConflict, "conflict")

	// The refusals left no device and no half-used code behind: carol has
	// exactly the two devices that enrolled.
	var list struct{ Devices []any }
	e.JSON(t, "GET", "/v1/users/carol/devices", secret, nil).Decode(t, &list)
	if len(list.Devices) != 2 {
		t.Fatalf("carol has %d devices", len(list.Devices))
	}
}

func mustClaims(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDeviceLimit(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"max_devices": 2}), 200, "")
	a := enrollDevice(t, e, secret, "dave", authenticator.EnrollOptions{})
	enrollDevice(t, e, secret, "dave", authenticator.EnrollOptions{})
	en := newEnrollment(t, e, secret, "dave")
	_, err := authenticator.Enroll(context.Background(), en["uri"].(string), authenticator.EnrollOptions{Name: "third", Platform: "ios", HTTP: e.HTTPClient(t)})
	if !client.IsCode(err, "device_limit_reached") {
		t.Fatalf("third device: %v", err)
	}
	// The refused enrollment is still pending: after removing a device the
	// same code works. Adding a phone never removes an old one.
	if r := e.JSON(t, "GET", "/v1/enrollments/"+en["id"].(string), secret, nil); r.Map(t)["state"] != "pending" {
		t.Fatalf("refused enrollment: %s", r.Body)
	}
	if err := a.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := authenticator.Enroll(context.Background(), en["uri"].(string), authenticator.EnrollOptions{Name: "third", Platform: "ios", HTTP: e.HTTPClient(t)}); err != nil {
		t.Fatalf("after removing one: %v", err)
	}
}

// TestConcurrentEnrollment races ten devices for one code: exactly one wins.
func TestConcurrentEnrollment(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	uri := newEnrollment(t, e, secret, "erin")["uri"].(string)
	const racers = 10
	var wg sync.WaitGroup
	errs := make([]error, racers)
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = authenticator.Enroll(context.Background(), uri, authenticator.EnrollOptions{Name: fmt.Sprint("racer ", i), Platform: "ios", HTTP: e.HTTPClient(t)})
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case client.IsCode(err, "enrollment_used"):
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d devices won one code", won)
	}
	var list struct{ Devices []any }
	e.JSON(t, "GET", "/v1/users/erin/devices", secret, nil).Decode(t, &list)
	if len(list.Devices) != 1 {
		t.Fatalf("erin has %d devices", len(list.Devices))
	}
}

// TestDeviceAuthRefusals gives every refusal of a device call a named case:
// each is 401 unauthorized with one body, except a valid signature by a
// revoked device.
func TestDeviceAuthRefusals(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "1000"))
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	d := enrollDevice(t, e, secret, "frank", authenticator.EnrollOptions{})
	other := enrollDevice(t, e, secret, "grace", authenticator.EnrollOptions{})
	now := time.Now()
	const path = "/v1/device"
	replayed := deviceToken(t, d, "GET", path, now)
	want(t, deviceCall(t, e, "GET", path, replayed), http.StatusOK, "")
	stolenKid := "Device " + func() string {
		tok, _ := authenticator.DeviceToken(other.Key, d.DeviceID, "GET", path, now)
		return tok
	}()
	enrollTok, _ := authenticator.EnrollToken(d.Key, authenticator.EnrollRequest{Code: "X"}, now)
	unknown, _ := authenticator.DeviceToken(d.Key, "00000000-0000-4000-8000-000000000000", "GET", path, now)
	noneTok, _ := authenticator.Sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"typ": "device+jwt", "kid": d.DeviceID},
		jwt.MapClaims{"htm": "GET", "htu": path, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "n"})
	cases := []struct{ name, auth string }{
		{"no header", ""},
		{"bearer scheme", "Bearer " + strings.TrimPrefix(deviceToken(t, d, "GET", path, now), "Device ")},
		{"garbage", "Device abc"},
		{"replayed token", replayed},
		{"token for another path", deviceToken(t, d, "GET", "/v1/device/challenges", now)},
		{"token for another method", deviceToken(t, d, "DELETE", path, now)},
		{"another device's key", stolenKid},
		{"unknown device", "Device " + unknown},
		{"enroll token", "Device " + enrollTok},
		{"alg none", "Device " + noneTok},
		// Well past the 60 s skew (the exact limit is tested in internal/jose
		// with a fixed clock; here wall time passes between signing and use).
		{"clock 75 s fast", deviceToken(t, d, "GET", path, now.Add(75*time.Second))},
		{"clock 75 s slow", deviceToken(t, d, "GET", path, now.Add(-75*time.Second))},
		{"NUL in jti", "Device " + func() string {
			tok, _ := authenticator.Sign(jwt.SigningMethodES256, d.Key, map[string]any{"typ": "device+jwt", "kid": d.DeviceID},
				jwt.MapClaims{"htm": "GET", "htu": path, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "a\x00b"})
			return tok
		}()},
		{"control character in app_version", "Device " + func() string {
			tok, _ := authenticator.Sign(jwt.SigningMethodES256, d.Key, map[string]any{"typ": "device+jwt", "kid": d.DeviceID},
				jwt.MapClaims{"htm": "GET", "htu": path, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "v1", "app_version": "1\x00"})
			return tok
		}()},
	}
	var bodies []string
	for _, tc := range cases {
		r := deviceCall(t, e, "GET", path, tc.auth)
		if r.Status != http.StatusUnauthorized || r.Code() != "unauthorized" {
			t.Errorf("%s: %d %s", tc.name, r.Status, r.Body)
		}
		bodies = append(bodies, string(r.Body))
	}
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("refusal bodies differ: %s / %s", b, bodies[0])
		}
	}
	// Within the skew is fine, and a long but valid version string is kept
	// whole (64 characters of three bytes each).
	for _, at := range []time.Time{now.Add(45 * time.Second), now.Add(-45 * time.Second)} {
		want(t, deviceCall(t, e, "GET", path, deviceToken(t, d, "GET", path, at)), http.StatusOK, "")
	}
	euro, _ := authenticator.Sign(jwt.SigningMethodES256, d.Key, map[string]any{"typ": "device+jwt", "kid": d.DeviceID},
		jwt.MapClaims{"htm": "GET", "htu": path, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": "euro",
			"app_version": strings.Repeat("€", 64)})
	r := deviceCall(t, e, "GET", path, "Device "+euro)
	want(t, r, http.StatusOK, "")
	if r.Map(t)["app_version"] != strings.Repeat("€", 64) {
		t.Fatalf("app_version %v", r.Map(t)["app_version"])
	}
	// The stolen-id attempt left an audit trace.
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?type=device.signature_failed", e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 1 || page.Events[0].Data["device_id"] != d.DeviceID {
		t.Fatalf("signature failure audit: %+v", page.Events)
	}

	// Revoked: a valid signature gets device_revoked, a bad one still only
	// unauthorized (so revocation says nothing to someone without the key).
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+d.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "lost"}), 200, "")
	want(t, deviceCall(t, e, "GET", path, deviceToken(t, d, "GET", path, time.Now())), http.StatusUnauthorized, "device_revoked")
	want(t, deviceCall(t, e, "GET", path, "Device "+func() string {
		tok, _ := authenticator.DeviceToken(other.Key, d.DeviceID, "GET", path, time.Now())
		return tok
	}()), http.StatusUnauthorized, "unauthorized")
}

// TestReplayAcrossInstances uses a token on one server and replays it on
// another sharing the database.
func TestReplayAcrossInstances(t *testing.T) {
	t.Parallel()
	a, b := apitest.Replicas(t)
	_, secret := createApp(t, a, a.Bootstrap, map[string]any{"name": "VPN"})
	d := enrollDevice(t, a, secret, "heidi", authenticator.EnrollOptions{})
	tok := deviceToken(t, d, "GET", "/v1/device", time.Now())
	want(t, deviceCall(t, a, "GET", "/v1/device", tok), http.StatusOK, "")
	want(t, deviceCall(t, b, "GET", "/v1/device", tok), http.StatusUnauthorized, "unauthorized")
	// A fresh token works on b.
	want(t, deviceCall(t, b, "GET", "/v1/device", deviceToken(t, d, "GET", "/v1/device", time.Now())), http.StatusOK, "")
}

func TestDeregistration(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	phone := enrollDevice(t, e, secret, "ivan", authenticator.EnrollOptions{Name: "old phone", PushProvider: "apns", PushToken: "apns-old"})
	tablet := enrollDevice(t, e, secret, "ivan", authenticator.EnrollOptions{Name: "tablet", PushProvider: "fcm", PushToken: "fcm-tab"})
	watch := enrollDevice(t, e, secret, "ivan", authenticator.EnrollOptions{Name: "watch", PushProvider: "none"})

	// The admin revokes the lost phone.
	r := e.JSON(t, "POST", "/v1/admin/devices/"+phone.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "lost"})
	want(t, r, http.StatusOK, "")
	if m := r.Map(t); m["state"] != "revoked" || m["revoke_reason"] != "lost" || m["revoked_by"] != "admin:bootstrap" || m["revoked_at"] == nil {
		t.Fatalf("revoked: %v", m)
	}
	// Its next call is refused, its token erased, and the change audited.
	if err := phone.Call(ctx, "GET", "/v1/device", nil, nil); !client.IsCode(err, "device_revoked") {
		t.Fatalf("revoked phone's call: %v", err)
	}
	var token []byte
	if err := e.DB.Pool.QueryRow(ctx, `SELECT push_token FROM devices WHERE id = $1`, phone.DeviceID).Scan(&token); err != nil || token != nil {
		t.Fatalf("push token not erased: %v", err)
	}
	// Idempotent; other reasons and bad input.
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+phone.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "replaced"}), 200, "")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+tablet.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "stolen"}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+tablet.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "removed_by_user"}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+tablet.DeviceID+"/revoke", e.Bootstrap, map[string]any{}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/00000000-0000-4000-8000-000000000000/revoke", e.Bootstrap, map[string]any{"reason": "lost"}), 404, "not_found")

	// The other devices were told: the tablet (a push device) got a
	// device_removed notification through the pipeline; the poll-only watch
	// gets none.
	waitDelivered(t, e, tablet.DeviceID, 2) // device_added (watch) and device_removed (phone)
	var removed int
	_ = e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE device_id = $1 AND notification = 'device_removed'`, tablet.DeviceID).Scan(&removed)
	if removed != 1 {
		t.Fatalf("tablet got %d device_removed notifications for one lost phone revoked twice", removed)
	}
	var n int
	_ = e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE device_id = $1`, watch.DeviceID).Scan(&n)
	if n != 0 {
		t.Fatalf("poll-only watch got %d deliveries", n)
	}

	// The relying party removes the tablet on the user's behalf.
	want(t, e.JSON(t, "DELETE", "/v1/users/ivan/devices/"+watch.DeviceID+"x", secret, nil), 404, "not_found")
	r = e.JSON(t, "DELETE", "/v1/users/ivan/devices/"+tablet.DeviceID, secret, nil)
	want(t, r, http.StatusOK, "")
	if m := r.Map(t); m["revoke_reason"] != "removed_by_user" || !strings.HasPrefix(m["revoked_by"].(string), "application:") {
		t.Fatalf("rp removal: %v", m)
	}
	// Another user's device through this user: not found.
	other := enrollDevice(t, e, secret, "judy", authenticator.EnrollOptions{})
	want(t, e.JSON(t, "DELETE", "/v1/users/ivan/devices/"+other.DeviceID, secret, nil), 404, "not_found")

	// The watch removes itself.
	if err := watch.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := watch.Call(ctx, "GET", "/v1/device", nil, nil); !client.IsCode(err, "device_revoked") {
		t.Fatalf("after self-removal: %v", err)
	}
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?type=device.revoked", e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 3 {
		t.Fatalf("%d device.revoked events, want 3", len(page.Events))
	}
	reasons := map[string]string{}
	for _, ev := range page.Events {
		reasons[ev.Data["device_id"].(string)] = ev.Data["reason"].(string) + " by " + ev.Actor.Type
	}
	if reasons[phone.DeviceID] != "lost by admin" || reasons[tablet.DeviceID] != "removed_by_user by application" ||
		reasons[watch.DeviceID] != "removed_by_user by device" {
		t.Fatalf("reasons %v", reasons)
	}
	// Adding a new phone never removed the old ones: all three are listed.
	var list struct{ Devices []any }
	e.JSON(t, "GET", "/v1/admin/users/ivan/devices", e.Bootstrap, nil).Decode(t, &list)
	if len(list.Devices) != 3 {
		t.Fatalf("%d devices listed", len(list.Devices))
	}
}

// waitDelivered waits until the device has n deliveries sent by the logging
// provider.
func waitDelivered(t *testing.T, e *apitest.Env, deviceID string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var sent int
		if err := e.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FROM deliveries
			WHERE device_id = $1 AND outcome = 'sent' AND provider = 'log'`, deviceID).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		if sent >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %d of %d deliveries sent after 20 s", deviceID, sent, n)
		}
		time.Sleep(20 * time.Millisecond) // waiting on the River worker
	}
}

// TestFailedCallSpendsItsToken replays the token of a refused call with
// another body: refused, since the token does not cover the body.
func TestFailedCallSpendsItsToken(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	d := enrollDevice(t, e, secret, "mia", authenticator.EnrollOptions{})
	auth := deviceToken(t, d, "PUT", "/v1/device/push-token", time.Now())
	put := func(body string) *apitest.Response {
		return e.Do(t, apitest.Req{Method: "PUT", Path: "/v1/device/push-token", Body: body,
			Header: map[string]string{"Authorization": auth, "Content-Type": "application/json"}})
	}
	want(t, put(`{"push_provider":"sms"}`), http.StatusBadRequest, "invalid_request")
	want(t, put(`{"push_provider":"fcm","push_token":"attacker"}`), http.StatusUnauthorized, "unauthorized")
}

func TestPushTokenRotation(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	d := enrollDevice(t, e, secret, "kim", authenticator.EnrollOptions{PushProvider: "apns", PushToken: "one"})
	if err := d.SetPushToken(ctx, "fcm", "two"); err != nil {
		t.Fatal(err)
	}
	var self map[string]any
	_ = d.Call(ctx, "GET", "/v1/device", nil, &self)
	if self["push_provider"] != "fcm" {
		t.Fatalf("after rotation: %v", self)
	}
	if err := d.SetPushToken(ctx, "none", ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ provider, token string }{{"apns", ""}, {"sms", "x"}, {"none", "x"}, {"fcm", strings.Repeat("x", 4097)}} {
		if err := d.SetPushToken(ctx, tc.provider, tc.token); !client.IsCode(err, "invalid_request") {
			t.Errorf("%v: %v", tc, err)
		}
	}
	for _, body := range []string{`{"push_provider": 1}`, `{"x": 1}`, `not json`} {
		if err := d.Send(ctx, "PUT", "/v1/device/push-token", "application/json", body, nil); err == nil {
			t.Errorf("%s accepted", body)
		}
	}
}

// TestEnrollmentIsolation: one tenant's application never reaches another
// tenant's enrollments.
func TestEnrollmentIsolation(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	createTenant(t, e, "acme")
	_, acme := createApp(t, e, e.Bootstrap, map[string]any{"name": "Acme", "tenant": "acme"})
	_, def := createApp(t, e, e.Bootstrap, map[string]any{"name": "Default"})
	en := newEnrollment(t, e, acme, "zoe")
	id := en["id"].(string)
	for _, p := range []string{"/v1/enrollments/" + id, "/v1/enrollments/" + id + "/qr.png", "/v1/enrollments/" + id + "/qr.svg"} {
		want(t, e.JSON(t, "GET", p, def, nil), http.StatusNotFound, "not_found")
	}
	// An enrollment made by an admin of the default tenant for a user of
	// that name lands in the default tenant, not acme's.
	r := e.JSON(t, "POST", "/v1/admin/users/zoe/enrollments", e.Bootstrap, nil)
	want(t, r, http.StatusCreated, "")
	d, err := authenticator.Enroll(context.Background(), r.Map(t)["uri"].(string), authenticator.EnrollOptions{Name: "x", Platform: "ios", HTTP: e.HTTPClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Devices []map[string]any }
	e.JSON(t, "GET", "/v1/users/zoe/devices", def, nil).Decode(t, &list)
	if len(list.Devices) != 1 || list.Devices[0]["id"] != d.DeviceID {
		t.Fatalf("default tenant's zoe: %v", list)
	}
	e.JSON(t, "GET", "/v1/users/zoe/devices", acme, nil).Decode(t, &list)
	if len(list.Devices) != 0 {
		t.Fatalf("acme's zoe: %v", list)
	}
	// An admin's enrollment in another tenant: its QR paths work as returned.
	r = e.JSON(t, "POST", "/v1/admin/users/yan/enrollments?tenant=acme", e.Bootstrap, nil)
	want(t, r, http.StatusCreated, "")
	want(t, e.JSON(t, "GET", r.Map(t)["qr_png"].(string), e.Bootstrap, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/admin/enrollments/"+r.Map(t)["id"].(string), e.Bootstrap, nil), http.StatusOK, "")
	// A tenant admin cannot revoke another tenant's device.
	_, acmeAdmin := createToken(t, e, "acme", "acme")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+d.DeviceID+"/revoke", acmeAdmin, map[string]any{"reason": "lost"}), 404, "not_found")
	// Bad ttl.
	want(t, e.JSON(t, "POST", "/v1/enrollments", acme, map[string]any{"user": "x", "ttl_seconds": 59}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/enrollments", acme, map[string]any{"user": "x", "ttl_seconds": 604801}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/enrollments", acme, map[string]any{"user": ""}), 400, "invalid_request")
}

func TestEnrollmentExpiry(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	_, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	en := newEnrollment(t, e, secret, "lee")
	id := en["id"].(string)
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE enrollments SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	// It reads as expired at once, before any sweep, and has no QR.
	if m := e.JSON(t, "GET", "/v1/enrollments/"+id, secret, nil).Map(t); m["state"] != "expired" {
		t.Fatalf("state %v", m["state"])
	}
	want(t, e.JSON(t, "GET", "/v1/enrollments/"+id+"/qr.png", secret, nil), http.StatusGone, "enrollment_expired")
	// The sweeper erases the sealed code.
	n, err := e.Server.DB().ExpireEnrollments(ctx)
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v", n, err)
	}
	var state string
	var code []byte
	_ = e.DB.Pool.QueryRow(ctx, `SELECT state, code FROM enrollments WHERE id = $1`, id).Scan(&state, &code)
	if state != "expired" || code != nil {
		t.Fatalf("after sweep: %s %v", state, code)
	}
}

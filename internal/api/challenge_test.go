package api_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// signIn creates a challenge for user and returns the reply.
func signIn(t *testing.T, e *apitest.Env, secret string, body map[string]any) *apitest.Response {
	t.Helper()
	return e.JSON(t, "POST", "/v1/challenges", secret, body)
}

func newChallenge(t *testing.T, e *apitest.Env, secret, user string) wire.Challenge {
	t.Helper()
	r := signIn(t, e, secret, map[string]any{"user": user, "message": "Sign in to VPN",
		"context": map[string]any{"ip": "203.0.113.7", "location": "Lyon, FR", "browser": "Firefox"}})
	want(t, r, http.StatusCreated, "")
	var c wire.Challenge
	r.Decode(t, &c)
	return c
}

func number(c wire.Challenge) int {
	if c.Number == nil {
		return 0
	}
	return *c.Number
}

func getChallenge(t *testing.T, e *apitest.Env, secret, id, query string) wire.Challenge {
	t.Helper()
	r := e.JSON(t, "GET", "/v1/challenges/"+id+query, secret, nil)
	want(t, r, http.StatusOK, "")
	var c wire.Challenge
	r.Decode(t, &c)
	return c
}

// signedIn sets up an application and a user with one enrolled device.
func signedIn(t *testing.T, e *apitest.Env, user string) (secret string, d *authenticator.Device) {
	t.Helper()
	_, secret = createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN " + user})
	return secret, enrollDevice(t, e, secret, user, authenticator.EnrollOptions{})
}

func TestChallengeFlow(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	secret, d := signedIn(t, e, "alice")

	c := newChallenge(t, e, secret, "alice")
	if c.State != "pending" || number(c) < 10 || number(c) > 99 || c.User != "alice" || !c.ExpiresAt.After(c.CreatedAt) ||
		c.ExpiresAt.Sub(c.CreatedAt) != time.Minute {
		t.Fatalf("created %+v", c)
	}
	// The device sees it without the number.
	pending, err := d.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].ID != c.ID || !pending[0].NumberRequired || pending[0].Nonce != "" {
		t.Fatalf("pending %+v %v", pending, err)
	}
	full, err := d.Challenge(ctx, c.ID)
	if err != nil || full.Context.App != "VPN alice" || full.Context.IP != "203.0.113.7" || full.Context.Message != "Sign in to VPN" ||
		full.Nonce == "" || full.ContextDigest == "" {
		t.Fatalf("device view %+v %v", full, err)
	}
	raw := e.Do(t, apitest.Req{Method: "GET", Path: "/v1/device/challenges/" + c.ID,
		Header: map[string]string{"Authorization": deviceToken(t, d, "GET", "/v1/device/challenges/"+c.ID, time.Now())}})
	if strings.Contains(string(raw.Body), `"number":`) || strings.Contains(string(raw.Body), strconv.Itoa(number(c))+",") {
		t.Fatalf("the number reached the device: %s", raw.Body)
	}

	// A long-poll started before the answer returns the instant it lands.
	polled := make(chan wire.Challenge, 1)
	go func() { polled <- getChallenge(t, e, secret, c.ID, "?wait=30s") }()
	time.Sleep(100 * time.Millisecond) // let the poll start waiting (it is correct either way)
	start := time.Now()
	res, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true})
	if err != nil || res.State != "approved" || res.Resolution != "approve" {
		t.Fatalf("approve: %+v %v", res, err)
	}
	select {
	case got := <-polled:
		if got.State != "approved" || got.Resolution != "approve" || got.ResolvedAt == nil {
			t.Fatalf("long-poll returned %+v", got)
		}
		t.Logf("long-poll woke %s after the approval was sent", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not wake")
	}
	if got := getChallenge(t, e, secret, c.ID, ""); got.State != "approved" {
		t.Fatalf("read back %+v", got)
	}
	// Terminal states never change: a second answer is refused.
	if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "deny", UV: true}); !client.IsCode(err, "challenge_resolved") {
		t.Fatalf("second answer: %v", err)
	}
	// The fetch is on the record, and the acts audited.
	var fetched int
	_ = e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM challenge_fetches WHERE challenge_id = $1 AND device_id = $2`, c.ID, d.DeviceID).Scan(&fetched)
	if fetched != 1 {
		t.Fatalf("%d fetch records", fetched)
	}
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?type=challenge.resolved", e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 1 || page.Events[0].Data["state"] != "approved" || page.Events[0].Actor.ID != d.DeviceID {
		t.Fatalf("audit %+v", page.Events)
	}
	// Nothing of the sign-in context reached the log.
	for _, s := range []string{"203.0.113.7", "Lyon, FR", "Sign in to VPN"} {
		if strings.Contains(e.Logs.String(), s) {
			t.Errorf("%q is in the log", s)
		}
	}
}

func TestLongPollAcrossInstances(t *testing.T) {
	t.Parallel()
	a, b := apitest.Replicas(t)
	secret, onA := signedIn(t, a, "bob")
	onB := *onA
	onB.Server = b.URL
	ctx := context.Background()

	// Every routing of create, long-poll and answer: an instance wakes its
	// own waiters itself and NOTIFYs only when another may wait, so each
	// path must still wake every waiter.
	approve := func(d *authenticator.Device) func(wire.Challenge) error {
		return func(c wire.Challenge) error {
			_, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true})
			return err
		}
	}
	cancelOn := func(e *apitest.Env) func(wire.Challenge) error {
		return func(c wire.Challenge) error {
			r := e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", secret, nil)
			if r.Status != http.StatusOK {
				return fmt.Errorf("cancel: %d %s", r.Status, r.Body)
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name     string
		create   *apitest.Env
		pollers  []*apitest.Env
		resolve  func(wire.Challenge) error
		resolved string
	}{
		{"created on a, polled on b, answered on a", a, []*apitest.Env{b}, approve(onA), "approved"},
		{"created on a, polled on a, answered on b", a, []*apitest.Env{a}, approve(&onB), "approved"},
		{"created on a, polled on both, answered on a", a, []*apitest.Env{a, b}, approve(onA), "approved"},
		{"created on b, polled on a, answered on b", b, []*apitest.Env{a}, approve(&onB), "approved"},
		{"created on a, polled on a, cancelled on b", a, []*apitest.Env{a}, cancelOn(b), "cancelled"},
		{"created on a, polled on b, cancelled on a", a, []*apitest.Env{b}, cancelOn(a), "cancelled"},
		{"created on a, polled on a, answered on a", a, []*apitest.Env{a}, approve(onA), "approved"},
		{"created on a, polled on a, cancelled on a", a, []*apitest.Env{a}, cancelOn(a), "cancelled"},
	} {
		c := newChallenge(t, tc.create, secret, "bob")
		polled := make(chan wire.Challenge, len(tc.pollers))
		for _, e := range tc.pollers {
			go func() { polled <- getChallenge(t, e, secret, c.ID, "?wait=30s") }()
		}
		waitFor(t, func() bool {
			n := 0
			for _, e := range tc.pollers {
				n += e.Server.Hub().Waiting()
			}
			return n == len(tc.pollers)
		})
		if err := tc.resolve(c); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for range tc.pollers {
			select {
			case got := <-polled:
				if got.State != tc.resolved {
					t.Fatalf("%s: poll returned %+v", tc.name, got)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: a long-poll did not wake", tc.name)
			}
		}
	}

	// A wait that runs out returns the current state.
	c2 := newChallenge(t, a, secret, "bob")
	start := time.Now()
	if got := getChallenge(t, b, secret, c2.ID, "?wait=1s"); got.State != "pending" || time.Since(start) < time.Second {
		t.Fatalf("timed-out poll: %+v after %s", got, time.Since(start))
	}
}

// TestWaitersHoldNoConnection: long-polls wait on the process's one
// LISTEN connection, not on a database connection each, so many more of
// them wait at once than the pool has connections, on the instance that
// created the challenge and on another, and one answer wakes them all.
func TestWaitersHoldNoConnection(t *testing.T) {
	t.Parallel()
	a, b := apitest.Replicas(t)
	secret, d := signedIn(t, a, "nora")
	c := newChallenge(t, a, secret, "nora")
	pool := int(a.Server.DB().Pool().Config().MaxConns)
	perInstance := 4 * pool
	polled := make(chan wire.Challenge, 2*perInstance)
	for _, e := range []*apitest.Env{a, b} {
		for range perInstance {
			go func() { polled <- getChallenge(t, e, secret, c.ID, "?wait=60s") }()
		}
	}
	// A waiter watches before it reads the challenge, so it counts as
	// waiting a moment before its read gives the connection back: wait
	// for both. Waiters that held a connection each would hold them all.
	waitFor(t, func() bool {
		for _, e := range []*apitest.Env{a, b} {
			if e.Server.Hub().Waiting() != perInstance || e.Server.DB().Pool().Stat().AcquiredConns() >= int32(pool) {
				return false
			}
		}
		return true
	})
	if _, err := d.Respond(context.Background(), c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); err != nil {
		t.Fatal(err)
	}
	for range 2 * perInstance {
		select {
		case got := <-polled:
			if got.State != "approved" {
				t.Fatalf("a waiter got %+v", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not every waiter woke")
		}
	}
}

// TestResolvesAtMostOnce sends 50 concurrent answers: exactly one wins.
func TestResolvesAtMostOnce(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, d := signedIn(t, e, "carl")
	d2 := enrollDevice(t, e, secret, "carl", authenticator.EnrollOptions{Name: "tablet"})
	c := newChallenge(t, e, secret, "carl")
	ctx := context.Background()
	view, err := d.Challenge(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	view2, err := d2.Challenge(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	const answers = 50
	var wins, resolved atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range answers {
		dev, v := d, view
		if i%2 == 1 {
			dev, v = d2, view2
		}
		decision := []string{"approve", "deny", "fraud"}[i%3]
		tok, err := authenticator.ResponseToken(dev.Key, dev.DeviceID, v, authenticator.Answer{Decision: decision, Number: number(c), UV: true}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var res wire.ResponseResult
			err := dev.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose", tok, &res)
			switch {
			case err == nil:
				wins.Add(1)
			case client.IsCode(err, "challenge_resolved"):
				resolved.Add(1)
			default:
				t.Errorf("answer: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || resolved.Load() != answers-1 {
		t.Fatalf("%d wins, %d refused as resolved", wins.Load(), resolved.Load())
	}
	var n int
	_ = e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE type = 'challenge.resolved'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d resolutions audited", n)
	}
}

// TestResponseRefusals: every refused answer has a named case and a stable
// code, and leaves the challenge pending.
func TestResponseRefusals(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "1000"))
	ctx := context.Background()
	secret, d := signedIn(t, e, "dora")
	other := enrollDevice(t, e, secret, "eve", authenticator.EnrollOptions{})
	c := newChallenge(t, e, secret, "dora")
	view, err := d.Challenge(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		tok, _ := authenticator.ResponseToken(d.Key, d.DeviceID, view, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}, now)
		var claims jwt.MapClaims
		_ = json.Unmarshal([]byte(mustClaims(t, tok)), &claims)
		claims["jti"] = fmt.Sprint("j", time.Now().UnixNano())
		if mut != nil {
			mut(claims)
		}
		return claims
	}
	hdr := map[string]any{"typ": "response+jwt", "kid": d.DeviceID}
	sign := func(method jwt.SigningMethod, key any, h map[string]any, claims jwt.MapClaims) string {
		tok, err := authenticator.Sign(method, key, h, claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pub, _ := d.Key.PublicKey.Bytes()
	replayed := sign(jwt.SigningMethodES256, d.Key, hdr, good(nil))
	c2 := newChallenge(t, e, secret, "dora")
	// Use the replayed token's jti once, on another challenge.
	view2, _ := d.Challenge(ctx, c2.ID)
	var claims2 jwt.MapClaims
	_ = json.Unmarshal([]byte(mustClaims(t, replayed)), &claims2)
	claims2["chl"], claims2["nonce"], claims2["decision"] = c2.ID, view2.Nonce, "deny"
	claims2["ctx"] = view2.ContextDigest
	if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c2.ID+"/response", "application/jose", sign(jwt.SigningMethodES256, d.Key, hdr, claims2), nil); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, token, code string
		device            *authenticator.Device
	}{
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, hdr, good(nil)), "invalid_jws", d},
		{"HS256 keyed with the public key", sign(jwt.SigningMethodHS256, pub, hdr, good(nil)), "invalid_jws", d},
		{"typ device+jwt", sign(jwt.SigningMethodES256, d.Key, map[string]any{"typ": "device+jwt", "kid": d.DeviceID}, good(nil)), "invalid_jws", d},
		{"signed by another key", sign(jwt.SigningMethodES256, other.Key, hdr, good(nil)), "invalid_jws", d},
		{"kid of another device", sign(jwt.SigningMethodES256, d.Key, map[string]any{"typ": "response+jwt", "kid": other.DeviceID}, good(nil)), "invalid_jws", d},
		{"no uv", sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { delete(c, "uv") })), "invalid_jws", d},
		{"wrong nonce", sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { c["nonce"] = "AAAAAAAAAAAAAAAAAAAAAA" })), "invalid_response", d},
		{"wrong context digest", sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { c["ctx"] = strings.Repeat("A", 43) })), "invalid_response", d},
		{"another challenge's id", sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { c["chl"] = c2.ID })), "invalid_response", d},
		{"approve without the number", sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { delete(c, "number") })), "invalid_response", d},
		{"replayed jti", replayed, "invalid_response", d},
		{"other user's device", sign(jwt.SigningMethodES256, other.Key, map[string]any{"typ": "response+jwt", "kid": other.DeviceID}, good(nil)), "not_found", other},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.device.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose", tc.token, nil)
			if !client.IsCode(err, tc.code) {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
		})
	}
	if got := getChallenge(t, e, secret, c.ID, ""); got.State != "pending" {
		t.Fatalf("refusals changed the challenge: %+v", got)
	}
	// Wrong media type.
	if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/json", sign(jwt.SigningMethodES256, d.Key, hdr, good(nil)), nil); !client.IsCode(err, "unsupported_media_type") {
		t.Fatalf("json media type: %v", err)
	}

	// The policy demands user verification: uv false is refused.
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"require_user_verification": true}), 200, "")
	if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose",
		sign(jwt.SigningMethodES256, d.Key, hdr, good(func(c jwt.MapClaims) { c["uv"] = false })), nil); !client.IsCode(err, "invalid_response") {
		t.Fatalf("uv false: %v", err)
	}
	// A wrong number is a deny, never a retry.
	res, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: (number(c)-10+1)%90 + 10, UV: true})
	if err != nil || res.State != "denied" || res.Resolution != "number_mismatch" {
		t.Fatalf("wrong number: %+v %v", res, err)
	}
	if got := getChallenge(t, e, secret, c.ID, ""); got.State != "denied" || got.Resolution != "number_mismatch" {
		t.Fatalf("after a wrong number: %+v", got)
	}
}

func TestCancelExpireAndRevokedInFlight(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	secret, d := signedIn(t, e, "fred")

	// Cancelled cannot be approved; cancelling twice is refused.
	c := newChallenge(t, e, secret, "fred")
	r := e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", secret, nil)
	want(t, r, http.StatusOK, "")
	if r.Map(t)["state"] != "cancelled" {
		t.Fatalf("cancel: %s", r.Body)
	}
	want(t, e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", secret, nil), http.StatusConflict, "challenge_resolved")
	if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); !client.IsCode(err, "challenge_resolved") {
		t.Fatalf("approve cancelled: %v", err)
	}

	// Expired reads as expired at once and cannot be approved.
	c = newChallenge(t, e, secret, "fred")
	view, _ := d.Challenge(ctx, c.ID)
	expireNow(t, e, c.ID)
	if got := getChallenge(t, e, secret, c.ID, "?wait=5s"); got.State != "expired" || got.Resolution != "expired" {
		t.Fatalf("expired read: %+v", got)
	}
	tok, _ := authenticator.ResponseToken(d.Key, d.DeviceID, view, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}, time.Now())
	if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose", tok, nil); !client.IsCode(err, "challenge_expired") {
		t.Fatalf("approve expired: %v", err)
	}
	want(t, e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", secret, nil), http.StatusGone, "challenge_expired")
	// The sweep records it (the server's own sweeper may have been first).
	if _, err := e.Server.DB().ExpireChallenges(ctx); err != nil {
		t.Fatal(err)
	}
	var state string
	_ = e.DB.Pool.QueryRow(ctx, `SELECT state FROM challenges WHERE id = $1`, c.ID).Scan(&state)
	if state != "expired" {
		t.Fatalf("after sweep: %s", state)
	}

	// A device deregistered while its answer was in flight: refused.
	c = newChallenge(t, e, secret, "fred")
	view, _ = d.Challenge(ctx, c.ID)
	tok, _ = authenticator.ResponseToken(d.Key, d.DeviceID, view, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}, time.Now())
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+d.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "lost"}), 200, "")
	if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose", tok, nil); !client.IsCode(err, "device_revoked") {
		t.Fatalf("answer of a revoked device: %v", err)
	}
	if got := getChallenge(t, e, secret, c.ID, ""); got.State != "pending" {
		t.Fatalf("a revoked device's answer resolved it: %+v", got)
	}
}

func TestNumberMatchingRules(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	appID, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})
	enrollDevice(t, e, secret, "gus", authenticator.EnrollOptions{})
	if c := newChallenge(t, e, secret, "gus"); c.Number == nil {
		t.Fatal("default policy and app: no number")
	}
	want(t, e.JSON(t, "PATCH", "/v1/admin/applications/"+appID, e.Bootstrap, map[string]any{"number_matching": "off"}), 200, "")
	if c := newChallenge(t, e, secret, "gus"); c.Number != nil {
		t.Fatal("app off: a number")
	}
	r := signIn(t, e, secret, map[string]any{"user": "gus", "number_matching": true})
	want(t, r, http.StatusCreated, "")
	if r.Map(t)["number"] == nil {
		t.Fatal("a request must be able to turn matching on")
	}
	want(t, signIn(t, e, secret, map[string]any{"user": "gus", "number_matching": false}), http.StatusBadRequest, "invalid_request")
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, _ := signedIn(t, e, "hana")
	send := func(key, body string) *apitest.Response {
		return e.Do(t, apitest.Req{Method: "POST", Path: "/v1/challenges", Token: secret, Body: body,
			Header: map[string]string{"Content-Type": "application/json", "Idempotency-Key": key}})
	}
	r1 := send("k1", `{"user":"hana","message":"m"}`)
	want(t, r1, http.StatusCreated, "")
	r2 := send("k1", `{ "message": "m",  "user": "hana" }`)
	want(t, r2, http.StatusCreated, "")
	if r1.Map(t)["id"] != r2.Map(t)["id"] || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %s / %s", r1.Body, r2.Body)
	}
	want(t, send("k1", `{"user":"hana","message":"other"}`), http.StatusConflict, "idempotency_mismatch")
	// Another body is a mismatch even when it names nobody enrolled.
	want(t, send("k1", `{"user":"nobody-here"}`), http.StatusConflict, "idempotency_mismatch")
	want(t, send(strings.Repeat("k", 256), `{"user":"hana"}`), http.StatusBadRequest, "invalid_request")
	want(t, send("bad\tkey", `{"user":"hana"}`), http.StatusBadRequest, "invalid_request")
	// Another application may use the same key.
	_, other := createApp(t, e, e.Bootstrap, map[string]any{"name": "Other"})
	r3 := e.Do(t, apitest.Req{Method: "POST", Path: "/v1/challenges", Token: other, Body: `{"user":"hana","message":"m"}`,
		Header: map[string]string{"Content-Type": "application/json", "Idempotency-Key": "k1"}})
	want(t, r3, http.StatusCreated, "")
	if r3.Map(t)["id"] == r1.Map(t)["id"] {
		t.Fatal("keys are not scoped to the application")
	}
}

func TestPushBombingGuard(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	secret, d := signedIn(t, e, "ivy")
	retryAfter := func(r *apitest.Response) int {
		n, _ := strconv.Atoi(r.Header.Get("Retry-After"))
		return n
	}

	// Pending cap: 2.
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap,
		map[string]any{"max_pending_challenges": 2, "challenges_per_window": 4, "denial_backoff_after": 2}), 200, "")
	c1 := newChallenge(t, e, secret, "ivy")
	c2 := newChallenge(t, e, secret, "ivy")
	r := signIn(t, e, secret, map[string]any{"user": "ivy"})
	want(t, r, http.StatusTooManyRequests, "too_many_challenges")
	if n := retryAfter(r); n < 1 || n > 60 {
		t.Fatalf("pending cap Retry-After %d", n)
	}
	// Offline codes keep working while pushes are held back.
	code, _ := d.Code()
	cr := e.JSON(t, "POST", "/v1/users/ivy/verify-code", secret, map[string]any{"code": code})
	want(t, cr, http.StatusOK, "")
	if cr.Map(t)["valid"] != true {
		t.Fatalf("offline code during the guard: %s", cr.Body)
	}

	// Two denials in a row start the backoff (30 s).
	for _, c := range []wire.Challenge{c1, c2} {
		if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "deny", UV: true}); err != nil {
			t.Fatal(err)
		}
	}
	r = signIn(t, e, secret, map[string]any{"user": "ivy"})
	want(t, r, http.StatusTooManyRequests, "too_many_challenges")
	if n := retryAfter(r); n < 25 || n > 31 {
		t.Fatalf("backoff Retry-After %d, want about 30", n)
	}
	// An approval resets it (the backoff is lifted by hand here, as if it
	// had run out, then one approval clears the denial count).
	if _, err := e.DB.Pool.Exec(ctx, `UPDATE users SET push_blocked_until = now() - interval '1 second' WHERE name = 'ivy'`); err != nil {
		t.Fatal(err)
	}
	c3 := newChallenge(t, e, secret, "ivy")
	if _, err := d.Respond(ctx, c3.ID, authenticator.Answer{Decision: "approve", Number: number(c3), UV: true}); err != nil {
		t.Fatal(err)
	}
	var denials int
	_ = e.DB.Pool.QueryRow(ctx, `SELECT consecutive_denials FROM users WHERE name = 'ivy'`).Scan(&denials)
	if denials != 0 {
		t.Fatalf("an approval left %d denials", denials)
	}
	// Window: 4 per 300 s; 3 made already.
	newChallenge(t, e, secret, "ivy")
	r = signIn(t, e, secret, map[string]any{"user": "ivy"})
	want(t, r, http.StatusTooManyRequests, "too_many_challenges")
	if n := retryAfter(r); n < 200 || n > 300 {
		t.Fatalf("window Retry-After %d", n)
	}
	// Every refusal is audited.
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?type=challenge.refused", e.Bootstrap, nil).Decode(t, &page)
	reasons := map[string]int{}
	for _, ev := range page.Events {
		reasons[ev.Data["reason"].(string)]++
	}
	if reasons["pending"] != 1 || reasons["denial_backoff"] != 1 || reasons["window"] != 1 {
		t.Fatalf("refusals audited: %v", reasons)
	}
}

// TestGuardUnderConcurrency: twenty simultaneous creates against a window
// of five make exactly five challenges.
func TestGuardUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, _ := signedIn(t, e, "jack")
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap,
		map[string]any{"challenges_per_window": 5, "max_pending_challenges": 100}), 200, "")
	var created, refused atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := signIn(t, e, secret, map[string]any{"user": "jack"})
			switch r.Status {
			case http.StatusCreated:
				created.Add(1)
			case http.StatusTooManyRequests:
				refused.Add(1)
			default:
				t.Errorf("%d %s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 5 || refused.Load() != 15 {
		t.Fatalf("%d created, %d refused", created.Load(), refused.Load())
	}
}

func TestFraudLocksPushes(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	secret, d := signedIn(t, e, "kate")
	c := newChallenge(t, e, secret, "kate")
	res, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "fraud", UV: true})
	if err != nil || res.State != "denied" || res.Resolution != "fraud" {
		t.Fatalf("fraud: %+v %v", res, err)
	}
	if got := getChallenge(t, e, secret, c.ID, ""); !got.Fraud || got.State != "denied" {
		t.Fatalf("fraud flag: %+v", got)
	}
	// The default policy locks after one report.
	want(t, signIn(t, e, secret, map[string]any{"user": "kate"}), http.StatusLocked, "user_locked")
	u := e.JSON(t, "GET", "/v1/admin/users/kate", e.Bootstrap, nil).Map(t)
	if u["locked"] != true || u["lock_reason"] != "fraud" {
		t.Fatalf("user %v", u)
	}
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit?user=kate", e.Bootstrap, nil).Decode(t, &page)
	var types []string
	for _, ev := range page.Events {
		types = append(types, ev.Type)
	}
	if !strings.Contains(strings.Join(types, ","), "user.locked,challenge.fraud_reported") {
		t.Fatalf("audit %v", types)
	}
	// Offline codes still work; an admin unlock restores pushes.
	code, _ := d.Code()
	if r := e.JSON(t, "POST", "/v1/users/kate/verify-code", secret, map[string]any{"code": code}); r.Map(t)["valid"] != true {
		t.Fatalf("offline code while locked: %s", r.Body)
	}
	want(t, e.JSON(t, "POST", "/v1/admin/users/kate/unlock", e.Bootstrap, nil), 200, "")
	want(t, signIn(t, e, secret, map[string]any{"user": "kate"}), http.StatusCreated, "")
}

func TestChallengeRefusalsAndIsolation(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, _ := signedIn(t, e, "liam")
	_, other := createApp(t, e, e.Bootstrap, map[string]any{"name": "Other app"})
	createUser(t, e, e.Bootstrap, "", "nodevice")
	want(t, signIn(t, e, secret, map[string]any{"user": "nodevice"}), http.StatusConflict, "no_active_device")
	want(t, signIn(t, e, secret, map[string]any{"user": "nobody"}), http.StatusConflict, "no_active_device")
	want(t, e.JSON(t, "POST", "/v1/admin/users/liam/lock", e.Bootstrap, nil), 200, "")
	want(t, signIn(t, e, secret, map[string]any{"user": "liam"}), http.StatusLocked, "user_locked")
	want(t, e.JSON(t, "POST", "/v1/admin/users/liam/unlock", e.Bootstrap, nil), 200, "")
	for _, body := range []map[string]any{
		{"user": ""}, {"user": "liam", "context": map[string]any{"ip": "not-an-ip"}},
		{"user": "liam", "message": strings.Repeat("m", 201)}, {"user": "liam", "extra": 1},
		{"user": "liam", "context": map[string]any{"browser": "a\u0000b"}}, {"user": "liam", "number_matching": "yes"},
	} {
		if r := signIn(t, e, secret, body); r.Status != http.StatusBadRequest {
			t.Errorf("%v: %d %s", body, r.Status, r.Body)
		}
	}
	c := newChallenge(t, e, secret, "liam")
	for _, q := range []string{"?wait=61s", "?wait=-1s", "?wait=soon"} {
		want(t, e.JSON(t, "GET", "/v1/challenges/"+c.ID+q, secret, nil), http.StatusBadRequest, "invalid_request")
	}
	// Another application, even of the same tenant, does not see it.
	want(t, e.JSON(t, "GET", "/v1/challenges/"+c.ID, other, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", other, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "GET", "/v1/challenges/00000000-0000-4000-8000-000000000000", secret, nil), http.StatusNotFound, "not_found")
	// Another tenant's admin neither.
	createTenant(t, e, "acme")
	_, acmeAdmin := createToken(t, e, "acme", "acme")
	want(t, e.JSON(t, "GET", "/v1/admin/challenges/"+c.ID, acmeAdmin, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "GET", "/v1/admin/challenges/"+c.ID, e.Bootstrap, nil), http.StatusOK, "")
	// A device of another user cannot fetch it.
	stranger := enrollDevice(t, e, secret, "mona", authenticator.EnrollOptions{})
	if _, err := stranger.Challenge(context.Background(), c.ID); !client.IsCode(err, "not_found") {
		t.Fatalf("stranger fetch: %v", err)
	}
}

func TestOfflineCodes(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, d := signedIn(t, e, "nina")
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"totp_max_attempts": 8}), 200, "")
	attempts := 0
	verify := func(code string) *apitest.Response {
		attempts++
		return e.JSON(t, "POST", "/v1/users/nina/verify-code", secret, map[string]any{"code": code})
	}
	code, _ := d.Code()
	if r := verify(code); r.Map(t)["valid"] != true {
		t.Fatalf("valid code: %s", r.Body)
	}
	if r := verify(code); r.Map(t)["valid"] != false {
		t.Fatal("a code was accepted twice")
	}
	// One step of skew.
	old := *d
	old.Now = func() time.Time { return time.Now().Add(-30 * time.Second) }
	if c, _ := old.Code(); c != code {
		// (the previous step's code, unless it equals the current one, which was used)
		if r := verify(c); r.Map(t)["valid"] != false {
			t.Fatal("a code older than the last accepted one was accepted")
		}
	}
	for _, bad := range []string{"000000", "abcdef", "1"} {
		if r := verify(bad); r.Map(t)["valid"] != false {
			t.Fatalf("%q accepted", bad)
		}
	}
	// 8 attempts per 300 s (every attempt counts, right or wrong).
	for attempts < 8 {
		want(t, verify("123456"), http.StatusOK, "")
	}
	r := verify("123456")
	want(t, r, http.StatusTooManyRequests, "rate_limited")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	want(t, e.JSON(t, "POST", "/v1/users/nina/verify-code", secret, map[string]any{"code": strings.Repeat("1", 17)}), 400, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/users/nina/verify-code", secret, map[string]any{}), 400, "invalid_request")
	// Off by policy.
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"totp_enabled": false}), 200, "")
	want(t, e.JSON(t, "POST", "/v1/users/nina/verify-code", secret, map[string]any{"code": "123456"}), http.StatusConflict, "totp_disabled")
	// An unknown user's code is simply not valid.
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap, map[string]any{"totp_enabled": true}), 200, "")
	if r := e.JSON(t, "POST", "/v1/users/nobody/verify-code", secret, map[string]any{"code": "123456"}); r.Map(t)["valid"] != false {
		t.Fatal("unknown user")
	}
}

func TestRevokedDeviceCodeIsRefused(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	secret, d := signedIn(t, e, "olga")
	want(t, e.JSON(t, "POST", "/v1/admin/devices/"+d.DeviceID+"/revoke", e.Bootstrap, map[string]any{"reason": "lost"}), 200, "")
	code, _ := d.Code()
	if r := e.JSON(t, "POST", "/v1/users/olga/verify-code", secret, map[string]any{"code": code}); r.Map(t)["valid"] != false {
		t.Fatal("a revoked device's code was accepted")
	}
}

// TestWebhook checks the signature with an independent HMAC, a retry after
// a 500, the attempts admins see, and the refusal of private addresses.
func TestWebhook(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	type received struct{ sig, body string }
	got := make(chan received, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		got <- received{r.Header.Get("X-Signature"), string(b)}
	}))
	defer receiver.Close()
	e := apitest.Start(t, apitest.WithEnv("WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"))
	r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "Hooked", "webhook_url": receiver.URL + "/hook"})
	want(t, r, http.StatusCreated, "")
	app := r.Map(t)
	secret, hookSecret := app["secret"].(string), app["webhook_secret"].(string)
	d := enrollDevice(t, e, secret, "pia", authenticator.EnrollOptions{})
	c := newChallenge(t, e, secret, "pia")
	if _, err := d.Respond(context.Background(), c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); err != nil {
		t.Fatal(err)
	}
	var rec received
	select {
	case rec = <-got:
	case <-time.After(45 * time.Second):
		t.Fatalf("webhook not delivered (%d calls)", calls.Load())
	}
	// Verify as a receiver would, with nothing from our code.
	parts := strings.Split(rec.sig, ",")
	if len(parts) != 2 || !strings.HasPrefix(parts[0], "t=") || !strings.HasPrefix(parts[1], "v1=") {
		t.Fatalf("signature header %q", rec.sig)
	}
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write([]byte(strings.TrimPrefix(parts[0], "t=") + "." + rec.body))
	if !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(strings.TrimPrefix(parts[1], "v1="))) {
		t.Fatal("signature does not verify")
	}
	ts, _ := strconv.ParseInt(strings.TrimPrefix(parts[0], "t="), 10, 64)
	if time.Since(time.Unix(ts, 0)) > time.Minute {
		t.Fatal("stale timestamp")
	}
	var event wire.WebhookEvent
	if err := json.Unmarshal([]byte(rec.body), &event); err != nil || event.Challenge.ID != c.ID || event.Challenge.State != "approved" ||
		event.Type != "challenge.resolved" || event.Challenge.User != "pia" {
		t.Fatalf("body %s", rec.body)
	}
	// Admins see the attempts: one failed (500), then delivered.
	var hooks struct{ Webhooks []wire.WebhookDelivery }
	for deadline := time.Now().Add(10 * time.Second); ; {
		e.JSON(t, "GET", "/v1/admin/challenges/"+c.ID+"/webhooks", e.Bootstrap, nil).Decode(t, &hooks)
		if len(hooks.Webhooks) == 1 && hooks.Webhooks[0].Outcome == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %+v", hooks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := hooks.Webhooks[0]; h.Attempts != 2 || h.LastStatus == nil || *h.LastStatus != 200 {
		t.Fatalf("delivery %+v", h)
	}

	// An expiry, which the sweep records, is called back too.
	c2 := newChallenge(t, e, secret, "pia")
	expireNow(t, e, c2.ID)
	select {
	case rec = <-got:
	case <-time.After(45 * time.Second):
		t.Fatalf("no webhook for the expiry (%d calls)", calls.Load())
	}
	event = wire.WebhookEvent{}
	if err := json.Unmarshal([]byte(rec.body), &event); err != nil || event.Challenge.ID != c2.ID || event.Challenge.State != "expired" ||
		event.Challenge.Resolution != "expired" {
		t.Fatalf("body %s", rec.body)
	}
}

// TestWebhookRefusesPrivateAddresses: without the loopback flag, a webhook
// pointing at a private address is never called.
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	var called atomic.Bool
	receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }))
	defer receiver.Close()
	e := apitest.Start(t)
	// https with a name that resolves to loopback: accepted as a URL, refused
	// at delivery.
	url := strings.Replace(receiver.URL, "http://127.0.0.1", "https://localhost", 1)
	r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "Sneaky", "webhook_url": url})
	want(t, r, http.StatusCreated, "")
	secret := r.Map(t)["secret"].(string)
	d := enrollDevice(t, e, secret, "quin", authenticator.EnrollOptions{})
	c := newChallenge(t, e, secret, "quin")
	if _, err := d.Respond(context.Background(), c.ID, authenticator.Answer{Decision: "deny", UV: true}); err != nil {
		t.Fatal(err)
	}
	var hooks struct{ Webhooks []wire.WebhookDelivery }
	for deadline := time.Now().Add(15 * time.Second); ; {
		e.JSON(t, "GET", "/v1/admin/challenges/"+c.ID+"/webhooks", e.Bootstrap, nil).Decode(t, &hooks)
		if len(hooks.Webhooks) == 1 && hooks.Webhooks[0].Outcome == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %+v", hooks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(hooks.Webhooks[0].LastError, "not a public address") || called.Load() {
		t.Fatalf("delivery %+v, called %v", hooks.Webhooks[0], called.Load())
	}
}

// expireNow moves a challenge's lifetime into the past, as time passing
// would (bypassing the trigger that keeps a challenge's identity fixed).
func expireNow(t *testing.T, e *apitest.Env, id string) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.DB.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE challenges SET created_at = now() - interval '2 minutes',
		expires_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The creating instance trusts the expiry it knows, which never changes
	// outside tests.
	e.Server.Hub().Forget(id)
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
	}
}

// TestResolutionTellsOtherDevices checks the pushes a challenge owes: to
// each push device when it is created, and "it is over" to the user's other
// push devices when it resolves, each with its durable job, never to the
// answering device or a revoked one.
func TestResolutionTellsOtherDevices(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	ctx := context.Background()
	secret, phone := signedIn(t, e, "olga") // poll-only, answers
	tablet := enrollDevice(t, e, secret, "olga", authenticator.EnrollOptions{Name: "tablet", PushProvider: "apns", PushToken: "apns-tablet"})
	watch := enrollDevice(t, e, secret, "olga", authenticator.EnrollOptions{Name: "watch", Platform: "android", PushProvider: "fcm", PushToken: "fcm-watch"})
	old := enrollDevice(t, e, secret, "olga", authenticator.EnrollOptions{Name: "old", PushProvider: "apns", PushToken: "apns-old"})
	want(t, e.JSON(t, "DELETE", "/v1/users/olga/devices/"+old.DeviceID, secret, nil), http.StatusOK, "")

	// deliveries lists, per device, the deliveries of a challenge of one
	// kind ("challenge" or the notification), each checked to have its job.
	deliveries := func(challengeID, kind string) map[string]int {
		t.Helper()
		rows, err := e.DB.Pool.Query(ctx, `SELECT d.device_id::text, d.id::text FROM deliveries d
			WHERE d.challenge_id = $1 AND coalesce(d.notification, d.kind) = $2`, challengeID, kind)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int{}
		for rows.Next() {
			var device, id string
			if err := rows.Scan(&device, &id); err != nil {
				t.Fatal(err)
			}
			// A challenge's push sent by the dispatcher has had its job
			// deleted once recorded (internal/postgres/handoff.go).
			var jobs int
			var outcome string
			if err := e.DB.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM river_job WHERE kind = 'deliver' AND args->>'delivery_id' = $1),
				(SELECT outcome FROM deliveries WHERE id = $1::uuid)`, id).Scan(&jobs, &outcome); err != nil {
				t.Fatal(err)
			}
			if jobs != 1 && (kind != "challenge" || jobs != 0 || outcome != "sent") {
				t.Fatalf("delivery %s (%s) has %d jobs", id, outcome, jobs)
			}
			out[device]++
		}
		return out
	}
	pushDevices := map[string]int{tablet.DeviceID: 1, watch.DeviceID: 1}

	c := newChallenge(t, e, secret, "olga")
	if got := deliveries(c.ID, "challenge"); !maps.Equal(got, pushDevices) {
		t.Fatalf("pushes of a new challenge: %v, want %v", got, pushDevices)
	}
	if _, err := phone.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: number(c), UV: true}); err != nil {
		t.Fatal(err)
	}
	if got := deliveries(c.ID, "challenge_resolved"); !maps.Equal(got, pushDevices) {
		t.Fatalf("told after an answer: %v, want %v", got, pushDevices)
	}

	// Answered by a push device: the others are told, not itself.
	c = newChallenge(t, e, secret, "olga")
	if _, err := tablet.Respond(ctx, c.ID, authenticator.Answer{Decision: "deny", UV: true}); err != nil {
		t.Fatal(err)
	}
	if got := deliveries(c.ID, "challenge_resolved"); !maps.Equal(got, map[string]int{watch.DeviceID: 1}) {
		t.Fatalf("told after the tablet's answer: %v", got)
	}

	// Cancelled by the relying party: every push device is told.
	c = newChallenge(t, e, secret, "olga")
	want(t, e.JSON(t, "POST", "/v1/challenges/"+c.ID+"/cancel", secret, nil), http.StatusOK, "")
	if got := deliveries(c.ID, "challenge_resolved"); !maps.Equal(got, pushDevices) {
		t.Fatalf("told after a cancel: %v, want %v", got, pushDevices)
	}

	// Expired unanswered: the devices its push reached are told, once
	// the sweep records the expiry.
	c = newChallenge(t, e, secret, "olga")
	waitFor(t, func() bool {
		var sent int
		err := e.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE challenge_id = $1 AND kind = 'challenge'
			AND outcome = 'sent'`, c.ID).Scan(&sent)
		return err == nil && sent == len(pushDevices)
	})
	expireNow(t, e, c.ID)
	waitFor(t, func() bool { return len(deliveries(c.ID, "challenge_resolved")) > 0 })
	if got := deliveries(c.ID, "challenge_resolved"); !maps.Equal(got, pushDevices) {
		t.Fatalf("told after the expiry: %v, want %v", got, pushDevices)
	}
}

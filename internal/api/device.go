package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// deviceAuth verifies device tokens (Authorization: Device <jwt>).
type deviceAuth struct {
	db   *postgres.DB
	auth *authenticator
	now  func() time.Time
	// keys caches device public keys: a device's key never changes, so a
	// cached key is always right, and a hit saves a query per call.
	keys *lru.Cache[string, postgres.DeviceKey]
}

func newDeviceAuth(db *postgres.DB, auth *authenticator, now func() time.Time) *deviceAuth {
	keys, _ := lru.New[string, postgres.DeviceKey](100_000) // only errs for a size <= 0
	return &deviceAuth{db: db, auth: auth, now: now, keys: keys}
}

var errDeviceUnauthorized = errs.E(errs.Unauthorized, "missing or invalid device credentials")

// verify checks the Device token of a request statelessly (everything but
// the jti and the device's state, which the call's transaction checks).
func (a *deviceAuth) verify(r *http.Request) (jose.Device, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Device") {
		return jose.Device{}, errs.ErrUnauthorized
	}
	h, err := jose.ReadHeader(strings.TrimSpace(token), jose.TypeDevice)
	if err != nil {
		return jose.Device{}, errs.ErrUnauthorized
	}
	id, err := parseID(h.Kid, "device")
	if err != nil {
		return jose.Device{}, errs.ErrUnauthorized
	}
	key, err := a.key(r.Context(), id)
	if err != nil {
		return jose.Device{}, err
	}
	tok, err := h.VerifyDevice(strings.TrimSpace(token), key.Key, r.Method, r.URL.EscapedPath(), a.now())
	if err != nil {
		var je *jose.Error
		if errors.As(err, &je) && strings.Contains(je.Reason, "signature") {
			// Someone holds this device's id but not its key.
			a.db.AuditSignatureFailure(r.Context(), key, je.Reason)
		}
		loggerFrom(r.Context()).Info("device token refused", "device_id", id, "reason", err.Error())
		return jose.Device{}, errs.ErrUnauthorized
	}
	tok.DeviceID = id
	return tok, nil
}

// key returns a device's public key, from the cache when it can.
func (a *deviceAuth) key(ctx context.Context, id string) (postgres.DeviceKey, error) {
	if k, ok := a.keys.Get(id); ok {
		return k, nil
	}
	k, err := a.db.DeviceKey(ctx, id)
	if err != nil {
		return k, err
	}
	a.keys.Add(id, k)
	return k, nil
}

// deviceHandler is a device endpoint's work, done in the call's transaction.
type deviceHandler func(w http.ResponseWriter, r *http.Request, tx pgx.Tx, d devices.Device) (status int, body any, err error)

// device wraps a device endpoint: verify the token, then authenticate
// (jti, state) and do the work in one transaction, and answer. A revoked
// device gets device_revoked, and only after its signature verified.
func (a *deviceAuth) device(fn deviceHandler) http.HandlerFunc {
	return a.direct(func(w http.ResponseWriter, r *http.Request, tok jose.Device) (status int, body any, err error) {
		err = a.db.DeviceCall(r.Context(), tok, func(tx pgx.Tx, d devices.Device) error {
			tellDevice(w, d)
			var err error
			status, body, err = fn(w, r, tx, d)
			return err
		})
		return status, body, err
	})
}

// directHandler is a device endpoint on a hot path, which authenticates the
// call in its own transaction, in its first round trip (see
// postgres.FetchChallenge and postgres.Respond).
type directHandler func(w http.ResponseWriter, r *http.Request, tok jose.Device) (status int, body any, err error)

// direct wraps a device endpoint that completes the authentication itself:
// verify the token's signature, run the endpoint, and answer.
func (a *deviceAuth) direct(fn directHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, err := a.verify(r)
		if errors.Is(err, errs.ErrUnauthorized) {
			writeError(w, r, a.failed(r, errDeviceUnauthorized))
			return
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		ctx := context.WithValue(r.Context(), keyLogger, loggerFrom(r.Context()).With("device_id", tok.DeviceID))
		status, body, err := fn(w, r.WithContext(ctx), tok)
		switch {
		case errors.Is(err, errs.ErrUnauthorized):
			writeError(w, r, a.failed(r, errDeviceUnauthorized))
		case err != nil:
			writeError(w, r, err)
		case body == nil:
			w.WriteHeader(status)
		default:
			writeJSON(w, status, body)
		}
	}
}

// PushTokenInvalidHeader is on every answer to a device whose push service
// refused its token: the app should register a new one (PUT
// /v1/device/push-token). Until it does, it gets no pushes and polls.
const PushTokenInvalidHeader = "Push-Token-Invalid"

// tellDevice adds what the device should know to its call's answer.
func tellDevice(w http.ResponseWriter, d devices.Device) {
	if d.PushTokenInvalid {
		w.Header().Set(PushTokenInvalidHeader, "true")
	}
}

// refuse answers a device call with err once the call is authenticated, so
// that the token is spent (and a revoked device learns it) as for any call.
func (a *deviceAuth) refuse(ctx context.Context, tok jose.Device, err error) error {
	return a.db.DeviceCall(ctx, tok, func(pgx.Tx, devices.Device) error { return err })
}

// failed counts a failed device authentication against the address.
func (a *deviceAuth) failed(r *http.Request, err error) error {
	if limited := a.auth.failed(r, "device"); errs.CodeOf(limited) == errs.RateLimited {
		return limited
	}
	return err
}

// ---- enrollment by a new device ----

// enroll is POST /v1/device/enroll: the body is an enroll+jwt signed by the
// new key it carries.
func (h *handlers) enroll(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err == nil {
		err = checkMediaType(r, "application/jose")
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	tok, err := jose.VerifyEnroll(strings.TrimSpace(string(body)), h.now())
	if err != nil {
		var je *jose.Error
		if errors.As(err, &je) {
			writeError(w, r, errs.E(errs.InvalidJWS, "%s", je.Reason))
			return
		}
		writeError(w, r, err)
		return
	}
	c := tok.Claims
	if err := validateEnrollClaims(c); err != nil {
		writeError(w, r, err)
		return
	}
	out, err := h.db.CompleteEnrollment(r.Context(), postgres.NewDevice{Token: tok, Platform: c.Platform,
		PushProvider: c.PushProvider, PushToken: c.PushToken, Name: c.Name, AppVersion: c.AppVersion, OSVersion: c.OSVersion})
	if code := errs.CodeOf(err); code == errs.EnrollmentNotFound {
		// Guessing codes is like guessing credentials: count it.
		if limited := h.auth.failed(r, "enrollment"); errs.CodeOf(limited) == errs.RateLimited {
			err = limited
		}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	reply := wire.EnrollReply{DeviceID: out.Device.ID}
	if out.TOTPSecret != "" {
		reply.TOTP = &wire.TOTPSeed{Secret: out.TOTPSecret, Digits: out.TOTP.Digits, Period: out.TOTP.Period,
			Algorithm: "SHA1", URI: out.TOTP.URI(out.TOTPSecret, out.TenantName, out.UserName)}
	}
	writeJSON(w, http.StatusCreated, reply)
}

// validateEnrollClaims checks what a device says about itself.
func validateEnrollClaims(c jose.EnrollClaims) error {
	if !enrollCodeShape(c.Code) {
		return errs.Invalid("code", "code is not an activation code")
	}
	if err := validatePlatform(c.Platform); err != nil {
		return err
	}
	if err := validatePush(c.PushProvider, c.PushToken); err != nil {
		return err
	}
	if err := validateText("name", c.Name, 1, 100); err != nil {
		return err
	}
	for field, v := range map[string]string{"app_version": c.AppVersion, "os_version": c.OSVersion} {
		if v != "" {
			if err := validateText(field, v, 1, 64); err != nil {
				return err
			}
		}
	}
	return nil
}

func enrollCodeShape(code string) bool {
	if len(code) != 32 {
		return false
	}
	for _, r := range code {
		if !(r >= 'A' && r <= 'Z') && !(r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

func validatePlatform(p string) error {
	if len(p) == 0 || len(p) > 32 {
		return errs.Invalid("platform", "platform must be 1 to 32 characters such as ios or android")
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z') && !(r >= '0' && r <= '9') && !strings.ContainsRune("_.-", r) {
			return errs.Invalid("platform", "platform must be lower case letters, digits, '.', '_' or '-'")
		}
	}
	return nil
}

// validatePush checks a push provider and token: apns and fcm need a
// token, none (poll only) must not have one.
func validatePush(provider, token string) error {
	switch provider {
	case devices.ProviderAPNs, devices.ProviderFCM:
		if strings.TrimSpace(token) == "" {
			return errs.Invalid("push_token", "push_token is required for %s", provider)
		}
		return validateText("push_token", token, 1, 4096)
	case devices.ProviderNone:
		if token != "" {
			return errs.Invalid("push_token", "a poll-only device (push_provider none) has no push_token")
		}
		return nil
	}
	return errs.Invalid("push_provider", "push_provider must be apns, fcm or none")
}

func validateText(field, s string, lo, hi int) error {
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s):
		return errs.Invalid(field, "%s must be valid UTF-8", field)
	case n < lo || n > hi:
		return errs.Invalid(field, "%s must be %d to %d characters", field, lo, hi)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errs.Invalid(field, "%s must not contain control characters", field)
	}
	return nil
}

// ---- calls of an enrolled device ----

func (h *handlers) setPushToken(w http.ResponseWriter, r *http.Request, tx pgx.Tx, d devices.Device) (int, any, error) {
	var in struct {
		PushProvider string `json:"push_provider"`
		PushToken    string `json:"push_token"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		return 0, nil, err
	}
	if err := validatePush(in.PushProvider, in.PushToken); err != nil {
		return 0, nil, err
	}
	if err := h.db.SetPushToken(r.Context(), tx, d, in.PushProvider, in.PushToken); err != nil {
		return 0, nil, err
	}
	w.Header().Del(PushTokenInvalidHeader) // registered anew
	return http.StatusNoContent, nil, nil
}

func (h *handlers) removeSelf(w http.ResponseWriter, r *http.Request, tx pgx.Tx, d devices.Device) (int, any, error) {
	_, err := h.db.RevokeDeviceTx(r.Context(), tx, postgres.Revocation{DeviceID: d.ID, Reason: devices.ReasonRemovedByUser,
		By: audit.Actor{Type: audit.ActorDevice, ID: d.ID}})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

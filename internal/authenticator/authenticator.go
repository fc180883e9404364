// Package authenticator is a reference authenticator: a device as an app
// would be. It makes a P-256 key that never leaves it (kept in a 0600 file),
// enrolls with a scanned pushmfa:// URI, signs every call with a short-lived
// device+jwt bound to the request, and computes offline TOTP codes.
//
// `mfactl device` is built on it, and every test that needs a device uses
// it, so every signature the server sees in tests is a real ES256 signature
// by a real key.
package authenticator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/enroll"
	"github.com/pushmfa/pushmfa/internal/totp"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// TokenLifetime is how long each device token is valid (exp - iat): the
// most the server allows, so a device whose clock runs behind (by up to the
// server's one-minute skew) still has time to use each token.
const TokenLifetime = 120 * time.Second

// Device is an enrolled authenticator and everything it keeps.
type Device struct {
	Server     string            `json:"server"`
	DeviceID   string            `json:"device_id"`
	Name       string            `json:"name"`
	Platform   string            `json:"platform"`
	EnrolledAt time.Time         `json:"enrolled_at"`
	TOTP       *TOTP             `json:"totp,omitempty"`
	Key        *ecdsa.PrivateKey `json:"-"`
	// Now is the device's clock (time.Now when nil), so tests can skew it.
	Now func() time.Time `json:"-"`
	// HTTP is the client it calls the server with (a default when nil).
	HTTP *http.Client `json:"-"`
}

// TOTP is the offline-code seed the server gave at enrollment.
type TOTP struct {
	Secret    string `json:"secret"`
	Digits    int    `json:"digits"`
	Period    int    `json:"period"`
	Algorithm string `json:"algorithm"`
	URI       string `json:"uri"`
}

// NewKey makes a P-256 key pair (an app keeps it in the Secure Enclave or
// Android Keystore).
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// JWK is the public half of key as a JWK (RFC 7518 §6.2.1).
func JWK(key *ecdsa.PrivateKey) map[string]string {
	raw, _ := key.PublicKey.Bytes() // 0x04 || X || Y for a P-256 key
	return map[string]string{
		"kty": "EC", "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(raw[1:33]),
		"y": base64.RawURLEncoding.EncodeToString(raw[33:65]),
	}
}

// EnrollRequest is what a device says about itself when enrolling.
type EnrollRequest struct {
	Code         string `json:"code"`
	Platform     string `json:"platform"`
	PushProvider string `json:"push_provider"`
	PushToken    string `json:"push_token,omitempty"`
	Name         string `json:"name"`
	AppVersion   string `json:"app_version,omitempty"`
	OSVersion    string `json:"os_version,omitempty"`
}

// Sign makes a compact JWS of claims with the given extra header fields
// (typ always among them). A real device signs with ES256 and its P-256
// key; tests also forge tokens with other methods and keys through it.
func Sign(method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	return tok.SignedString(key)
}

func newJTI() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// EnrollToken signs an enroll+jwt: the new public key rides in the jwk
// header and the token is signed by it, proving possession.
func EnrollToken(key *ecdsa.PrivateKey, req EnrollRequest, now time.Time) (string, error) {
	claims := jwt.MapClaims{"iat": now.Unix(), "jti": newJTI()}
	b, _ := json.Marshal(req)
	_ = json.Unmarshal(b, &claims)
	return Sign(jwt.SigningMethodES256, key, map[string]any{"typ": "enroll+jwt", "jwk": JWK(key)}, claims)
}

// DeviceToken signs a device+jwt for one request: method and path (no
// scheme, host or query).
func DeviceToken(key *ecdsa.PrivateKey, deviceID, method, path string, now time.Time) (string, error) {
	return Sign(jwt.SigningMethodES256, key, map[string]any{"typ": "device+jwt", "kid": deviceID}, jwt.MapClaims{
		"htm": method, "htu": path, "iat": now.Unix(), "exp": now.Add(TokenLifetime).Unix(), "jti": newJTI(),
	})
}

// EnrollOptions describe the device being enrolled.
type EnrollOptions struct {
	Name         string
	Platform     string
	PushProvider string
	PushToken    string
	AppVersion   string
	OSVersion    string
	Now          func() time.Time
	HTTP         *http.Client
}

type enrollReply struct {
	DeviceID string `json:"device_id"`
	TOTP     *TOTP  `json:"totp"`
}

// Enroll joins a user with a scanned enrollment URI: it makes a new key and
// sends the signed enrollment to the server the URI names.
func Enroll(ctx context.Context, uri string, o EnrollOptions) (*Device, error) {
	server, code, err := enroll.ParseURI(uri)
	if err != nil {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	d := &Device{Server: server, Name: o.Name, Platform: o.Platform, Key: key, Now: o.Now, HTTP: o.HTTP}
	if o.PushProvider == "" {
		o.PushProvider = "none"
	}
	tok, err := EnrollToken(key, EnrollRequest{Code: code, Platform: o.Platform, PushProvider: o.PushProvider,
		PushToken: o.PushToken, Name: o.Name, AppVersion: o.AppVersion, OSVersion: o.OSVersion}, d.now())
	if err != nil {
		return nil, err
	}
	var reply enrollReply
	if err := d.client().Send(ctx, client.Request{Method: http.MethodPost, Path: "/v1/device/enroll",
		ContentType: "application/jose", Body: []byte(tok)}, &reply); err != nil {
		return nil, err
	}
	d.DeviceID, d.TOTP, d.EnrolledAt = reply.DeviceID, reply.TOTP, d.now().UTC()
	return d, nil
}

func (d *Device) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Device) client() *client.Client {
	c := client.New(d.Server, "")
	if d.HTTP != nil {
		c.HTTP = d.HTTP
	}
	return c
}

// Call makes an authenticated device call: a fresh device+jwt bound to
// method and path, a JSON body when in is not nil, a JSON reply into out.
func (d *Device) Call(ctx context.Context, method, path string, in, out any) error {
	return d.Send(ctx, method, path, "application/json", in, out)
}

// Send is Call with another content type; a string body is sent as is.
func (d *Device) Send(ctx context.Context, method, path, contentType string, in, out any) error {
	tok, err := DeviceToken(d.Key, d.DeviceID, method, path, d.now())
	if err != nil {
		return err
	}
	req := client.Request{Method: method, Path: path, Authorization: "Device " + tok}
	switch b := in.(type) {
	case nil:
	case string:
		req.Body, req.ContentType = []byte(b), contentType
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return err
		}
		req.Body, req.ContentType = raw, contentType
	}
	return d.client().Send(ctx, req, out)
}

// SetPushToken registers a new push token (or poll-only with provider none).
func (d *Device) SetPushToken(ctx context.Context, provider, token string) error {
	return d.Call(ctx, http.MethodPut, "/v1/device/push-token",
		map[string]string{"push_provider": provider, "push_token": token}, nil)
}

// Remove deregisters the device itself.
func (d *Device) Remove(ctx context.Context) error {
	return d.Call(ctx, http.MethodDelete, "/v1/device", nil, nil)
}

// Code is the current offline code.
func (d *Device) Code() (string, error) {
	if d.TOTP == nil {
		return "", errors.New("this device has no offline-code seed (the tenant's policy turned them off)")
	}
	return totp.Params{Digits: d.TOTP.Digits, Period: d.TOTP.Period}.Code(d.TOTP.Secret, d.now())
}

// stored is the file form of a Device: the key as PKCS#8 PEM.
type stored struct {
	Device
	PrivateKey string `json:"private_key"`
}

// Save writes the device to path with mode 0600 (the key is in it), via a
// temporary file so a crash never leaves half a key.
func (d *Device) Save(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(d.Key)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(stored{Device: *d, PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads a device saved by Save, refusing a key file others can read.
func Load(path string) (*Device, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s holds a private key but is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s stored
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	block, _ := pem.Decode([]byte(s.PrivateKey))
	if block == nil {
		return nil, fmt.Errorf("%s: no private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not a P-256 key", path)
	}
	d := s.Device
	d.Key = key
	return &d, nil
}

// Pending lists the pending challenges of this device's user.
func (d *Device) Pending(ctx context.Context) ([]wire.DeviceChallenge, error) {
	var out wire.DeviceChallenges
	err := d.Call(ctx, http.MethodGet, "/v1/device/challenges", nil, &out)
	return out.Challenges, err
}

// Challenge fetches what the app shows for one challenge.
func (d *Device) Challenge(ctx context.Context, id string) (wire.DeviceChallenge, error) {
	var c wire.DeviceChallenge
	err := d.Call(ctx, http.MethodGet, "/v1/device/challenges/"+id, nil, &c)
	return c, err
}

// Answer is a user's answer to a challenge.
type Answer struct {
	Decision string // approve, deny or fraud
	// Number is the number the user picked (0 for none).
	Number int
	// UV says user verification (biometrics, PIN) happened.
	UV bool
}

// ResponseToken signs a response+jwt answering c. The context digest is
// computed here, from the context the app displays (RFC 8785), never taken
// from the server: the answer is bound to what the user saw.
func ResponseToken(key *ecdsa.PrivateKey, deviceID string, c wire.DeviceChallenge, a Answer, now time.Time) (string, error) {
	shown, err := json.Marshal(c.Context)
	if err != nil {
		return "", err
	}
	digest, err := challenge.DigestJSON(shown)
	if err != nil {
		return "", err
	}
	claims := jwt.MapClaims{"chl": c.ID, "nonce": c.Nonce, "ctx": challenge.EncodeDigest(digest), "decision": a.Decision,
		"uv": a.UV, "iat": now.Unix(), "exp": now.Add(TokenLifetime).Unix(), "jti": newJTI()}
	if a.Number != 0 {
		claims["number"] = a.Number
	}
	return Sign(jwt.SigningMethodES256, key, map[string]any{"typ": "response+jwt", "kid": deviceID}, claims)
}

// Respond fetches a challenge, as the app does when the user opens it, and
// sends the signed answer.
func (d *Device) Respond(ctx context.Context, id string, a Answer) (wire.ResponseResult, error) {
	var res wire.ResponseResult
	c, err := d.Challenge(ctx, id)
	if err != nil {
		return res, err
	}
	tok, err := ResponseToken(d.Key, d.DeviceID, c, a, d.now())
	if err != nil {
		return res, err
	}
	err = d.Send(ctx, http.MethodPost, "/v1/device/challenges/"+id+"/response", "application/jose", tok, &res)
	return res, err
}

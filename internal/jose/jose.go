// Package jose verifies the compact JWS tokens devices send, with
// github.com/golang-jwt/jwt/v5 and ES256 pinned.
//
// Every token is explicitly typed (RFC 8725 §3.11), and a token of one type
// is never accepted as another. The checks, per RFC 7515/7518/8725:
//   - alg must be ES256 exactly: none, HS256 (with the public key as secret),
//     ES384, RS256 and everything else are refused before any verification;
//   - typ must be the expected type exactly;
//   - crit, jku, x5u, x5c and b64 are refused: no header may fetch a key,
//     change how the payload is read, or demand extensions we do not know;
//   - an enroll+jwt carries its key as a jwk header: P-256 only, public
//     parts only, a point on the curve; other types must not carry one;
//   - iat (and exp where required) must be whole numbers within the skew.
package jose

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Token types.
const (
	TypeEnroll   = "enroll+jwt"
	TypeDevice   = "device+jwt"
	TypeResponse = "response+jwt"
)

// Limits.
const (
	// MaxSkew is how far iat may be from the server's clock either way.
	MaxSkew = 60 * time.Second
	// ExpLeeway is how long after exp a token is still accepted. It is much
	// smaller than MaxSkew so that exp means something; a device whose clock
	// is behind still gets (exp - iat) - skew of use out of each token.
	ExpLeeway = 10 * time.Second
	// MaxLifetime bounds exp - iat.
	MaxLifetime = 120 * time.Second
	// MaxTokenSize bounds a compact token.
	MaxTokenSize = 8 << 10
)

// Error is a refused token; Reason is safe to show the sender.
type Error struct{ Reason string }

func (e *Error) Error() string { return "jws: " + e.Reason }

func refuse(format string, args ...any) error { return &Error{Reason: fmt.Sprintf(format, args...)} }

// Header is the part of a token's header we read.
type Header struct {
	Alg string
	Typ string
	Kid string
	JWK *ecdsa.PublicKey
	// Thumbprint is the RFC 7638 thumbprint of JWK, when present.
	Thumbprint string
}

// forbiddenHeaders may never appear (see the package comment).
var forbiddenHeaders = []string{"crit", "jku", "x5u", "x5c", "b64", "zip", "enc"}

// ReadHeader parses a token's header without verifying anything else: it is
// what lets a server find the key to verify with (by kid). The type must be
// want, and the algorithm ES256.
func ReadHeader(compact, want string) (Header, error) {
	var h Header
	if len(compact) > MaxTokenSize {
		return h, refuse("token is larger than %d bytes", MaxTokenSize)
	}
	if strings.Count(compact, ".") != 2 {
		return h, refuse("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(compact[:strings.IndexByte(compact, '.')])
	if err != nil {
		return h, refuse("header is not base64url")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return h, refuse("header is not a JSON object")
	}
	for _, name := range forbiddenHeaders {
		if _, ok := fields[name]; ok {
			return h, refuse("header parameter %q is not allowed", name)
		}
	}
	str := func(name string) (string, error) {
		v, ok := fields[name]
		if !ok {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", refuse("header %q must be a string", name)
		}
		return s, nil
	}
	if h.Alg, err = str("alg"); err != nil {
		return h, err
	}
	if h.Typ, err = str("typ"); err != nil {
		return h, err
	}
	if h.Kid, err = str("kid"); err != nil {
		return h, err
	}
	if h.Alg != "ES256" {
		return h, refuse("alg must be ES256, not %q", h.Alg)
	}
	if h.Typ != want {
		return h, refuse("typ must be %q", want)
	}
	if jwk, ok := fields["jwk"]; ok {
		if want != TypeEnroll {
			return h, refuse("a %s must not carry a jwk", want)
		}
		if h.JWK, h.Thumbprint, err = ParseJWK(jwk); err != nil {
			return h, err
		}
	}
	return h, nil
}

// ParseJWK reads a P-256 public JWK (RFC 7517/7518): kty EC, crv P-256, x
// and y of 32 bytes each forming a point on the curve, and no private "d".
// It returns the key and its RFC 7638 thumbprint.
func ParseJWK(raw json.RawMessage) (*ecdsa.PublicKey, string, error) {
	var jwk map[string]any
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return nil, "", refuse("jwk is not a JSON object")
	}
	if _, ok := jwk["d"]; ok {
		return nil, "", refuse("jwk must not contain the private key")
	}
	kty, _ := jwk["kty"].(string)
	crv, _ := jwk["crv"].(string)
	if kty != "EC" || crv != "P-256" {
		return nil, "", refuse("jwk must be an EC key on P-256")
	}
	coord := func(name string) ([]byte, error) {
		s, _ := jwk[name].(string)
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			return nil, refuse("jwk %s must be 32 bytes of base64url", name)
		}
		return b, nil
	}
	x, err := coord("x")
	if err != nil {
		return nil, "", err
	}
	y, err := coord("y")
	if err != nil {
		return nil, "", err
	}
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, "", refuse("jwk is not a point on P-256")
	}
	return key, Thumbprint(key), nil
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of a P-256 key, base64url.
func Thumbprint(key *ecdsa.PublicKey) string {
	raw := Uncompressed(key)
	x := base64.RawURLEncoding.EncodeToString(raw[1:33])
	y := base64.RawURLEncoding.EncodeToString(raw[33:])
	// Members in lexicographic order, no whitespace (RFC 7638 §3).
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Uncompressed is a P-256 key as 0x04 || X || Y (65 bytes).
func Uncompressed(key *ecdsa.PublicKey) []byte {
	b, err := key.Bytes()
	if err != nil {
		return nil // only for keys not on a NIST curve, which never get here
	}
	return b
}

// ParseUncompressed reads a key stored as 0x04 || X || Y.
func ParseUncompressed(b []byte) (*ecdsa.PublicKey, error) {
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
}

// parser verifies signatures only: the claims are checked below with an
// explicit clock, so that the limits are exact.
var parser = jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())

// verify checks the signature of compact with key and decodes its claims
// into dst.
func verify(compact string, key *ecdsa.PublicKey, dst jwt.Claims) error {
	_, err := parser.ParseWithClaims(compact, dst, func(*jwt.Token) (any, error) { return key, nil })
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return refuse("signature does not verify")
		}
		return refuse("malformed token")
	}
	return nil
}

// times are the time claims every token has.
type times struct {
	IssuedAt  json.Number `json:"iat"`
	ExpiresAt json.Number `json:"exp"`
	ID        string      `json:"jti"`
}

// unix reads a NumericDate that must be a whole number of seconds.
func unix(n json.Number, name string) (time.Time, error) {
	if n == "" {
		return time.Time{}, refuse("%s is required", name)
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f < 0 || f > 1e11 {
		return time.Time{}, refuse("%s must be a whole number of seconds", name)
	}
	return time.Unix(int64(f), 0), nil
}

// check validates iat, exp (when needExp) and jti against now.
func (t times) check(now time.Time, needExp bool) (iat, exp time.Time, err error) {
	if iat, err = unix(t.IssuedAt, "iat"); err != nil {
		return
	}
	if d := iat.Sub(now); d > MaxSkew || d < -MaxSkew {
		return iat, exp, refuse("iat is %s from the server's clock (at most %s allowed)", d.Round(time.Second), MaxSkew)
	}
	if !printableASCII(t.ID, 128) {
		return iat, exp, refuse("jti must be 1 to 128 printable ASCII characters")
	}
	if !needExp {
		return iat, iat.Add(MaxSkew), nil
	}
	if exp, err = unix(t.ExpiresAt, "exp"); err != nil {
		return
	}
	if !exp.After(iat) || exp.Sub(iat) > MaxLifetime {
		return iat, exp, refuse("exp must be after iat and at most %s after it", MaxLifetime)
	}
	if !now.Before(exp.Add(ExpLeeway)) {
		return iat, exp, refuse("token expired")
	}
	return iat, exp, nil
}

// printableASCII reports whether s is 1 to max characters from '!' to '~'.
func printableASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}

// optionalText checks a free-text claim: empty, or valid UTF-8 of at most
// max characters without control characters.
func optionalText(name, s string, max int) error {
	if s == "" {
		return nil
	}
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > max || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return refuse("%s must be at most %d printable characters", name, max)
	}
	return nil
}

// jtiLifetime is how long a jti must be remembered: until the token can no
// longer pass either the iat window or exp.
func jtiLifetime(iat, exp time.Time) time.Time {
	return later(iat.Add(MaxSkew), exp.Add(ExpLeeway))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// jwt.Claims, unused: we validate ourselves.
func (times) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (times) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (times) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (times) GetIssuer() (string, error)                   { return "", nil }
func (times) GetSubject() (string, error)                  { return "", nil }
func (times) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// EnrollClaims are the claims of an enroll+jwt.
type EnrollClaims struct {
	times
	Code         string `json:"code"`
	Platform     string `json:"platform"`
	PushProvider string `json:"push_provider"`
	PushToken    string `json:"push_token"`
	Name         string `json:"name"`
	AppVersion   string `json:"app_version"`
	OSVersion    string `json:"os_version"`
}

// Enroll is a verified enroll+jwt.
type Enroll struct {
	Claims EnrollClaims
	// Key is the new device's public key, from the jwk header.
	Key *ecdsa.PublicKey
	// Thumbprint identifies the key (the issuer of its jti).
	Thumbprint string
	// JTIExpires is how long the jti must be remembered.
	JTIExpires time.Time
}

// VerifyEnroll checks an enroll+jwt: signed by the key in its own jwk
// header (proof of possession), iat within the skew, a jti.
func VerifyEnroll(compact string, now time.Time) (Enroll, error) {
	var out Enroll
	h, err := ReadHeader(compact, TypeEnroll)
	if err != nil {
		return out, err
	}
	if h.JWK == nil {
		return out, refuse("an enroll+jwt must carry the new key as a jwk header")
	}
	if err := verify(compact, h.JWK, &out.Claims); err != nil {
		return out, err
	}
	iat, _, err := out.Claims.check(now, false)
	if err != nil {
		return out, err
	}
	out.Key, out.Thumbprint = h.JWK, h.Thumbprint
	// An enroll token has no exp: it is acceptable while iat is within the
	// skew, so its jti is kept that long.
	out.JTIExpires = iat.Add(MaxSkew)
	return out, nil
}

// DeviceClaims are the claims of a device+jwt.
type DeviceClaims struct {
	times
	Method     string `json:"htm"`
	Path       string `json:"htu"`
	AppVersion string `json:"app_version"`
	OSVersion  string `json:"os_version"`
}

// Device is a verified device+jwt.
type Device struct {
	Claims     DeviceClaims
	DeviceID   string
	JTIExpires time.Time
}

// VerifyDevice checks a device+jwt against the device's registered key and
// binds it to this request: htm must be its method and htu its path (no
// scheme, host or query), as in DPoP (RFC 9449).
func VerifyDevice(compact string, key *ecdsa.PublicKey, method, path string, now time.Time) (Device, error) {
	h, err := ReadHeader(compact, TypeDevice)
	if err != nil {
		return Device{}, err
	}
	return h.VerifyDevice(compact, key, method, path, now)
}

// VerifyDevice is VerifyDevice for a token whose header the caller has
// already read (with ReadHeader and TypeDevice), to find the key by kid.
func (h Header) VerifyDevice(compact string, key *ecdsa.PublicKey, method, path string, now time.Time) (Device, error) {
	var out Device
	if h.Typ != TypeDevice {
		return out, refuse("typ must be %q", TypeDevice)
	}
	if err := verify(compact, key, &out.Claims); err != nil {
		return out, err
	}
	iat, exp, err := out.Claims.check(now, true)
	if err != nil {
		return out, err
	}
	if out.Claims.Method != method || out.Claims.Path != path {
		return out, refuse("token is bound to another request (htm/htu)")
	}
	if err := optionalText("app_version", out.Claims.AppVersion, 64); err != nil {
		return out, err
	}
	if err := optionalText("os_version", out.Claims.OSVersion, 64); err != nil {
		return out, err
	}
	out.DeviceID = h.Kid
	out.JTIExpires = jtiLifetime(iat, exp)
	return out, nil
}

// ResponseClaims are the claims of a response+jwt: a device's answer to one
// challenge.
type ResponseClaims struct {
	times
	Challenge string `json:"chl"`
	Nonce     string `json:"nonce"`
	Context   string `json:"ctx"`
	Decision  string `json:"decision"`
	// Number is the matched number, raw; absent when empty.
	Number json.RawMessage `json:"number"`
	// UV says whether user verification (biometrics or PIN) happened; nil
	// when absent, which is refused.
	UV *bool `json:"uv"`
}

// Response is a verified response+jwt.
type Response struct {
	Claims     ResponseClaims
	DeviceID   string
	NumberSet  bool
	Number     int
	JTIExpires time.Time
}

// VerifyResponse checks a response+jwt against the answering device's key:
// its type, signature, times and the shape of its claims. Whether the
// answer fits the challenge (nonce, context digest, number) is the store's
// to decide, in the transaction that resolves it.
func VerifyResponse(compact string, key *ecdsa.PublicKey, now time.Time) (Response, error) {
	var out Response
	h, err := ReadHeader(compact, TypeResponse)
	if err != nil {
		return out, err
	}
	if err := verify(compact, key, &out.Claims); err != nil {
		return out, err
	}
	iat, exp, err := out.Claims.check(now, true)
	if err != nil {
		return out, err
	}
	c := out.Claims
	switch {
	case c.Challenge == "" || len(c.Challenge) > 64:
		return out, refuse("chl must name the challenge")
	case c.Nonce == "" || len(c.Nonce) > 128:
		return out, refuse("nonce is required")
	case c.Context == "" || len(c.Context) > 128:
		return out, refuse("ctx must be the context digest")
	case c.Decision != "approve" && c.Decision != "deny" && c.Decision != "fraud":
		return out, refuse("decision must be approve, deny or fraud")
	case c.UV == nil:
		return out, refuse("uv (whether user verification happened) is required")
	}
	if len(c.Number) > 0 && string(c.Number) != "null" {
		// A bare whole number: json.Number would also take "42" quoted.
		n, err := strconv.Atoi(string(c.Number))
		if err != nil || n < 0 || n > 1000 {
			return out, refuse("number must be an integer")
		}
		out.NumberSet, out.Number = true, n
	}
	out.DeviceID = h.Kid
	out.JTIExpires = jtiLifetime(iat, exp)
	return out, nil
}

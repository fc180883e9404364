// Package totp makes and checks the offline codes of RFC 6238 (TOTP) with
// github.com/pquerna/otp, and finds which time step a code belongs to, so
// that each code is accepted once.
package totp

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Params are a device's TOTP settings. The algorithm is always SHA-1, the
// one every authenticator app supports.
type Params struct {
	Digits int
	Period int
}

// DefaultPeriod is the time step in seconds.
const DefaultPeriod = 30

// secretBytes is the seed size: 160 bits, as RFC 4226 recommends for SHA-1.
const secretBytes = 20

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSecret makes a random seed, as RFC 4648 base32 without padding.
func NewSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("totp: %w", err)
	}
	return b32.EncodeToString(b), nil
}

func (p Params) opts() totp.ValidateOpts {
	return totp.ValidateOpts{Period: uint(p.Period), Digits: otp.Digits(p.Digits), Algorithm: otp.AlgorithmSHA1}
}

// Step is the time step containing t.
func (p Params) Step(t time.Time) int64 { return t.Unix() / int64(p.Period) }

// Code returns the code of the step containing t.
func (p Params) Code(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, p.opts())
}

// Match checks code against the steps from one before t to one after it
// (at most one step of clock skew) and returns the step it matches. Codes
// are compared in constant time.
func (p Params) Match(secret, code string, t time.Time) (step int64, ok bool, err error) {
	if len(code) != p.Digits {
		return 0, false, nil
	}
	now := p.Step(t)
	for _, s := range []int64{now - 1, now, now + 1} {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*int64(p.Period), 0), p.opts())
		if err != nil {
			return 0, false, fmt.Errorf("totp: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			step, ok = s, true
		}
	}
	return step, ok, nil
}

// URI is the otpauth:// URI standard authenticator apps accept (the Key
// URI Format of Google Authenticator).
func (p Params) URI(secret, issuer, account string) string {
	q := url.Values{}
	q.Set("secret", secret)
	q.Set("issuer", issuer)
	q.Set("algorithm", "SHA1")
	q.Set("digits", strconv.Itoa(p.Digits))
	q.Set("period", strconv.Itoa(p.Period))
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + issuer + ":" + account, RawQuery: q.Encode()}
	return u.String()
}

// Package credential makes and checks the bearer secrets the service hands
// out: application secrets, admin tokens and webhook signing secrets.
//
// Each is 256 random bits behind a prefix naming its kind (so secret scanners
// and humans can tell them apart). The service stores only the SHA-256 digest
// of application secrets and admin tokens; a database dump reveals none.
package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
)

// Kind is the prefix of a credential, which tells its purpose.
type Kind string

// The kinds of credential.
const (
	AppSecret     Kind = "pmfa_app_"
	AdminToken    Kind = "pmfa_adm_"
	WebhookSecret Kind = "pmfa_whs_"
)

// secretLen is the length of the base64url text of 32 bytes.
const secretLen = 43

// Secret is a credential's full text. It redacts itself in logs and %v, so a
// careless log line cannot leak it; Reveal returns the text when it must be
// shown (once, at creation) or sent.
type Secret struct{ text string }

// New makes a fresh credential of the kind.
func New(kind Kind) (Secret, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Secret{}, fmt.Errorf("credential: %w", err)
	}
	return Secret{text: string(kind) + base64.RawURLEncoding.EncodeToString(b)}, nil
}

// FromText wraps a credential received from a client.
func FromText(s string) Secret { return Secret{text: s} }

// Reveal returns the credential's text.
func (s Secret) Reveal() string { return s.text }

// String redacts.
func (s Secret) String() string { return "[redacted]" }

// LogValue redacts.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// GoString redacts, so %#v does not leak either.
func (s Secret) GoString() string { return "credential.Secret{[redacted]}" }

// Digest is the SHA-256 of the credential's text, the only form stored.
func (s Secret) Digest() []byte {
	d := sha256.Sum256([]byte(s.text))
	return d[:]
}

// Kind returns the kind the text claims by its prefix, and whether it is well
// formed for that kind (prefix plus 43 base64url characters).
func (s Secret) Kind() (Kind, bool) {
	for _, k := range []Kind{AppSecret, AdminToken, WebhookSecret} {
		if rest, ok := strings.CutPrefix(s.text, string(k)); ok {
			if len(rest) != secretLen {
				return k, false
			}
			if _, err := base64.RawURLEncoding.DecodeString(rest); err != nil {
				return k, false
			}
			return k, true
		}
	}
	return "", false
}

// Equal compares two digests in constant time.
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// NewDuoKeys makes a Duo integration key (ikey, "DI" and 18 characters, as
// Duo's own look) and secret key (skey, 40 characters) for an application
// that speaks the Duo dialect.
func NewDuoKeys() (ikey, skey string, err error) {
	const upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	const mixed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	i, err := randomString(upper, 18)
	if err != nil {
		return "", "", err
	}
	s, err := randomString(mixed, 40)
	if err != nil {
		return "", "", err
	}
	return "DI" + i, s, nil
}

// randomString draws n characters uniformly from alphabet (rejection
// sampling, so no character is more likely than another).
func randomString(alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("credential: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// Package challenge defines sign-in challenges: what a relying party asks,
// what the user sees, how an answer resolves one, and the push-bombing guard
// that limits how often a user can be asked.
package challenge

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gowebpki/jcs"

	"github.com/pushmfa/pushmfa/internal/errs"
)

// States. Terminal states never change again.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
)

// Decisions a device can send.
const (
	DecisionApprove = "approve"
	DecisionDeny    = "deny"
	DecisionFraud   = "fraud"
)

// Resolutions: how a challenge ended.
const (
	ResolutionApprove        = "approve"
	ResolutionDeny           = "deny"
	ResolutionFraud          = "fraud"
	ResolutionNumberMismatch = "number_mismatch"
	ResolutionExpired        = "expired"
	ResolutionCancelled      = "cancelled"
)

// Error codes of challenges.
const (
	NoActiveDevice      errs.Code = "no_active_device"
	IdempotencyMismatch errs.Code = "idempotency_mismatch"
	UserLocked          errs.Code = "user_locked"
	TooManyChallenges   errs.Code = "too_many_challenges"
	Resolved            errs.Code = "challenge_resolved"
	Expired             errs.Code = "challenge_expired"
	InvalidResponse     errs.Code = "invalid_response"
	TOTPDisabled        errs.Code = "totp_disabled"
)

// Context is exactly what the app displays for a challenge. Its canonical
// JSON (RFC 8785) is what the device's answer is bound to.
type Context struct {
	App       string `json:"app"`
	Message   string `json:"message,omitempty"`
	IP        string `json:"ip,omitempty"`
	Location  string `json:"location,omitempty"`
	Browser   string `json:"browser,omitempty"`
	CreatedAt string `json:"created_at"`
}

// Digest is SHA-256 over the RFC 8785 canonical JSON of c.
func (c Context) Digest() ([]byte, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return DigestJSON(raw)
}

// DigestJSON is SHA-256 over the RFC 8785 canonical form of a JSON object,
// as a device computes it from the context it displays.
func DigestJSON(raw []byte) ([]byte, error) {
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("challenge: canonical JSON: %w", err)
	}
	sum := sha256.Sum256(canon)
	return sum[:], nil
}

// EncodeDigest is a digest as it travels: base64url without padding.
func EncodeDigest(d []byte) string { return base64.RawURLEncoding.EncodeToString(d) }

// TimeFormat is how created_at appears in a context: whole seconds, UTC.
const TimeFormat = time.RFC3339

// Limits of the context a relying party supplies.
const (
	maxMessage  = 200
	maxLocation = 100
	maxBrowser  = 200
)

// Request is a relying party's ask, before defaults.
type Request struct {
	User     string
	Message  string
	IP       string
	Location string
	Browser  string
	// NumberMatching can turn matching on, never off.
	NumberMatching bool
}

// Validate checks the context a relying party supplies: lengths, printable
// text, and an IP address that parses.
func (r Request) Validate() error {
	for _, f := range []struct {
		name, value string
		max         int
	}{{"message", r.Message, maxMessage}, {"context.location", r.Location, maxLocation}, {"context.browser", r.Browser, maxBrowser}} {
		if err := text(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	if r.IP != "" {
		if _, err := netip.ParseAddr(r.IP); err != nil {
			return errs.Invalid("context.ip", "context.ip must be an IPv4 or IPv6 address")
		}
	}
	return nil
}

func text(field, v string, max int) error {
	switch {
	case v == "":
		return nil
	case !utf8.ValidString(v):
		return errs.Invalid(field, "%s must be valid UTF-8", field)
	case utf8.RuneCountInString(v) > max:
		return errs.Invalid(field, "%s must be at most %d characters", field, max)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return errs.Invalid(field, "%s must not contain control characters", field)
	}
	return nil
}

// NumberMatching decides whether a challenge needs a number: the tenant's
// policy and the application's setting decide, and the request may only
// turn it on.
func NumberMatching(policyOn bool, appSetting string, requested bool) bool {
	return requested || (policyOn && appSetting != "off")
}

// NewNumber draws the number to match, uniformly from 10 to 99.
func NewNumber() (int, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(90))
	if err != nil {
		return 0, fmt.Errorf("challenge: %w", err)
	}
	return 10 + int(n.Int64()), nil
}

// NewNonce draws the server nonce a device's answer must repeat.
func NewNonce() ([]byte, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	return b, nil
}

// Challenge is one sign-in request.
type Challenge struct {
	ID               string
	TenantID         string
	ApplicationID    string
	UserID           string
	UserName         string
	State            string
	Resolution       string
	Fraud            bool
	CreatedAt        time.Time
	ExpiresAt        time.Time
	ResolvedAt       *time.Time
	Context          Context
	ContextDigest    []byte
	Nonce            []byte
	Number           int // 0 when no number is required
	ResolvedByDevice string
	UserVerified     *bool
}

// EffectiveState is the state as of now: pending past its time reads as
// expired at once, before the sweeper gets to it.
func (c Challenge) EffectiveState(now time.Time) string {
	if c.State == StatePending && !now.Before(c.ExpiresAt) {
		return StateExpired
	}
	return c.State
}

// Answerable reports, as an error, why a challenge cannot take an answer.
func (c Challenge) Answerable(now time.Time) error {
	switch c.EffectiveState(now) {
	case StatePending:
		return nil
	case StateExpired:
		return errs.E(Expired, "the challenge expired")
	default:
		return errs.E(Resolved, "the challenge is already %s", c.State)
	}
}

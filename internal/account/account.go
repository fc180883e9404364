// Package account defines who uses the service: tenants, their applications
// (relying parties) and users, admin tokens, and the authenticated principal
// of a request.
package account

import (
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/errs"
)

// DefaultTenant is the slug of the tenant a fresh install has.
const DefaultTenant = "default"

// Tenant is an organisation.
type Tenant struct {
	ID        string
	Slug      string
	Name      string
	CreatedAt time.Time
}

// Number matching settings of an application.
const (
	MatchingRequired      = "required"
	MatchingWhenSupported = "when_supported"
	MatchingOff           = "off"
)

// Application is a relying party of a tenant.
type Application struct {
	ID              string
	TenantID        string
	TenantSlug      string
	Name            string
	NumberMatching  string
	WebhookURL      string
	DuoIKey         string
	CreatedAt       time.Time
	SecretRotatedAt *time.Time
}

// NewApplication is what an admin asks for when creating an application.
type NewApplication struct {
	Name       string
	WebhookURL string
	Duo        bool
	// NumberMatching is empty for the default: required, or when_supported
	// for Duo applications, whose clients cannot show a number.
	NumberMatching string
}

// ApplicationPatch changes an application's settings; nil fields stay.
type ApplicationPatch struct {
	Name           *string
	NumberMatching *string
	// WebhookURL set to "" removes the webhook.
	WebhookURL *string
}

// User is a tenant's user, named by the relying party.
type User struct {
	ID         string
	TenantID   string
	Name       string
	CreatedAt  time.Time
	LockedAt   *time.Time
	LockReason string
}

// Locked reports whether pushes to the user are refused.
func (u User) Locked() bool { return u.LockedAt != nil }

// AdminToken is a minted admin credential (its secret is never stored).
type AdminToken struct {
	ID         string
	Name       string
	TenantID   string // "" for a global admin
	TenantSlug string
	CreatedAt  time.Time
	CreatedBy  string
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// Kind of principal.
type Kind int

// Principal kinds.
const (
	KindAdmin Kind = iota + 1
	KindApplication
)

// BootstrapID is the principal id of the bootstrap admin token.
const BootstrapID = "bootstrap"

// Principal is the authenticated caller of a request.
type Principal struct {
	Kind Kind
	// ID is the admin token's or application's id ("bootstrap" for the
	// bootstrap token).
	ID string
	// TenantID and TenantSlug are empty for a global admin.
	TenantID   string
	TenantSlug string
	// AppName and AppMatching are an application's name and number
	// matching setting.
	AppName     string
	AppMatching string
}

// Global reports a global admin, who may act on every tenant.
func (p Principal) Global() bool { return p.Kind == KindAdmin && p.TenantID == "" }

// Actor is the principal as an audit actor.
func (p Principal) Actor() audit.Actor {
	if p.Kind == KindApplication {
		return audit.Actor{Type: audit.ActorApplication, ID: p.ID}
	}
	return audit.Actor{Type: audit.ActorAdmin, ID: p.ID}
}

var slugRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateSlug checks a tenant slug: lowercase letters, digits and inner
// hyphens, at most 63 characters (it appears in paths and query strings).
func ValidateSlug(field, s string) error {
	if !slugRE.MatchString(s) {
		return errs.Invalid(field, "%s must be 1 to 63 lowercase letters, digits or inner hyphens", field)
	}
	return nil
}

// ValidateUserName checks a relying party's user name: 1 to 256 bytes of
// UTF-8 without control characters or surrounding spaces.
func ValidateUserName(field, s string) error {
	switch {
	case s == "":
		return errs.Invalid(field, "%s is required", field)
	case len(s) > 256:
		return errs.Invalid(field, "%s must be at most 256 bytes", field)
	case !utf8.ValidString(s):
		return errs.Invalid(field, "%s must be valid UTF-8", field)
	case strings.TrimSpace(s) != s:
		return errs.Invalid(field, "%s must not start or end with spaces", field)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errs.Invalid(field, "%s must not contain control characters", field)
	}
	return nil
}

// ValidateName checks a display name (of a tenant, application or token).
func ValidateName(field, s string, maxChars int) error {
	n := utf8.RuneCountInString(s)
	switch {
	case strings.TrimSpace(s) == "":
		return errs.Invalid(field, "%s is required", field)
	case n > maxChars:
		return errs.Invalid(field, "%s must be at most %d characters", field, maxChars)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errs.Invalid(field, "%s must not contain control characters", field)
	}
	return nil
}

// ValidateNumberMatching checks an application's number matching setting.
func ValidateNumberMatching(field, s string) error {
	switch s {
	case MatchingRequired, MatchingWhenSupported, MatchingOff:
		return nil
	}
	return errs.Invalid(field, "%s must be one of required, when_supported, off", field)
}

// ValidateWebhookURL checks a webhook URL: absolute https, no credentials or
// fragment, at most 2048 bytes. Plain http is allowed only for loopback
// hosts and only when allowHTTPLoopback is set (local development). Where the
// host resolves is checked again at delivery, when it is connected to.
func ValidateWebhookURL(field, raw string, allowHTTPLoopback bool) error {
	if len(raw) > 2048 {
		return errs.Invalid(field, "%s must be at most 2048 bytes", field)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return errs.Invalid(field, "%s must be an absolute https URL", field)
	}
	if u.User != nil || u.Fragment != "" {
		return errs.Invalid(field, "%s must not carry credentials or a fragment", field)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if allowHTTPLoopback && (host == "localhost" || (ip != nil && ip.IsLoopback())) {
			return nil
		}
	}
	return errs.Invalid(field, "%s must use https", field)
}

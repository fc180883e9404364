// Package devices defines authenticator devices: a user's phones, watches and
// tablets, each holding an ES256 key that never leaves it.
package devices

import "time"

// Push providers.
const (
	ProviderAPNs = "apns"
	ProviderFCM  = "fcm"
	ProviderNone = "none"
)

// States of a device.
const (
	StateActive  = "active"
	StateRevoked = "revoked"
)

// Reasons a device was revoked.
const (
	ReasonLost           = "lost"
	ReasonReplaced       = "replaced"
	ReasonRemovedByUser  = "removed_by_user"
	ReasonRemovedByAdmin = "removed_by_admin"
)

// Device is an authenticator of a user. Its push token and TOTP seed are
// never part of it: they stay sealed in the store.
type Device struct {
	ID           string
	TenantID     string
	UserID       string
	Name         string
	Platform     string
	PushProvider string
	AppVersion   string
	OSVersion    string
	State        string
	CreatedAt    time.Time
	LastSeenAt   *time.Time
	RevokedAt    *time.Time
	RevokedBy    string
	RevokeReason string
	HasTOTP      bool
	// PushTokenInvalid is set when the push service refused the token: the
	// app is told to register a new one on its next call.
	PushTokenInvalid bool
}

// ValidReason reports whether r is a revocation reason.
func ValidReason(r string) bool {
	switch r {
	case ReasonLost, ReasonReplaced, ReasonRemovedByUser, ReasonRemovedByAdmin:
		return true
	}
	return false
}

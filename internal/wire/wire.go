// Package wire defines the JSON shapes of the HTTP API, shared by the server
// (internal/api) and its Go client (internal/client), so the two cannot
// drift apart. The OpenAPI document is the contract; tests check the
// server's replies against it. Times are RFC 3339 in UTC.
package wire

import (
	"encoding/json"
	"time"
)

// Tenant is an organisation.
type Tenant struct {
	ID        string    `json:"id"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Application is a relying party. The secret fields are set only in the
// replies that reveal them, once: creation (secret, webhook_secret,
// duo_skey), rotation (secret) and adding a webhook (webhook_secret).
type Application struct {
	ID              string     `json:"id"`
	Tenant          string     `json:"tenant"`
	Name            string     `json:"name"`
	NumberMatching  string     `json:"number_matching"`
	WebhookURL      string     `json:"webhook_url,omitempty"`
	Duo             bool       `json:"duo"`
	DuoIKey         string     `json:"duo_ikey,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	SecretRotatedAt *time.Time `json:"secret_rotated_at,omitempty"`
	Secret          string     `json:"secret,omitempty"`
	WebhookSecret   string     `json:"webhook_secret,omitempty"`
	DuoSKey         string     `json:"duo_skey,omitempty"`
}

// User is a tenant's user.
type User struct {
	ID         string     `json:"id"`
	User       string     `json:"user"`
	Tenant     string     `json:"tenant"`
	CreatedAt  time.Time  `json:"created_at"`
	Locked     bool       `json:"locked"`
	LockedAt   *time.Time `json:"locked_at,omitempty"`
	LockReason string     `json:"lock_reason,omitempty"`
}

// UsersPage is one page of users; NextCursor is set when more follow.
type UsersPage struct {
	Users      []User `json:"users"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Device is an authenticator of a user.
type Device struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Platform     string     `json:"platform"`
	PushProvider string     `json:"push_provider"`
	State        string     `json:"state"`
	AppVersion   string     `json:"app_version,omitempty"`
	OSVersion    string     `json:"os_version,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	LastSeenAt   *time.Time `json:"last_seen_at,omitempty"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokedBy    string     `json:"revoked_by,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	TOTP         bool       `json:"totp"`
	// PushTokenInvalid tells the app its push service refused the token
	// and it must register a new one (PUT /v1/device/push-token).
	PushTokenInvalid bool `json:"push_token_invalid,omitempty"`
}

// AdminToken is an admin credential; Token is set only at creation.
type AdminToken struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Tenant     string     `json:"tenant,omitempty"`
	Global     bool       `json:"global"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	Token      string     `json:"token,omitempty"`
}

// Actor is who did an audited act.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// AuditEvent is one audit record; Seq and the hashes are set once sealed.
type AuditEvent struct {
	ID         int64           `json:"id"`
	Seq        *int64          `json:"seq,omitempty"`
	OccurredAt time.Time       `json:"occurred_at"`
	Type       string          `json:"type"`
	Actor      Actor           `json:"actor"`
	UserID     string          `json:"user_id,omitempty"`
	Data       json.RawMessage `json:"data"`
	Sealed     bool            `json:"sealed"`
	PrevHash   string          `json:"prev_hash,omitempty"`
	Hash       string          `json:"hash,omitempty"`
}

// AuditPage is one page of audit events, newest first.
type AuditPage struct {
	Events     []AuditEvent `json:"events"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// AuditBreak names the first broken link of a chain.
type AuditBreak struct {
	Seq     int64  `json:"seq"`
	EventID int64  `json:"event_id"`
	Reason  string `json:"reason"`
}

// AuditVerification is the outcome of a chain check.
type AuditVerification struct {
	Tenant      string      `json:"tenant"`
	Valid       bool        `json:"valid"`
	Events      int64       `json:"events"`
	Unsealed    int64       `json:"unsealed"`
	HeadSeq     int64       `json:"head_seq"`
	HeadHash    string      `json:"head_hash"`
	FirstBroken *AuditBreak `json:"first_broken,omitempty"`
}

// Error is the body of every error reply.
type Error struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a stable code, a message and the field at fault.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// Enrollment is a one-time activation. Code, URI and the QR paths are in
// the reply that creates it only.
type Enrollment struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires_at"`
	DeviceID  string    `json:"device_id,omitempty"`
	Code      string    `json:"code,omitempty"`
	URI       string    `json:"uri,omitempty"`
	QRPNG     string    `json:"qr_png,omitempty"`
	QRSVG     string    `json:"qr_svg,omitempty"`
}

// EnrollReply answers a device's enrollment: its id and, when the policy
// allows offline codes, its TOTP seed (shown this once).
type EnrollReply struct {
	DeviceID string    `json:"device_id"`
	TOTP     *TOTPSeed `json:"totp,omitempty"`
}

// TOTPSeed is an offline-code seed: base32 secret (RFC 4648, no padding)
// and an otpauth:// URI for standard authenticator apps.
type TOTPSeed struct {
	Secret    string `json:"secret"`
	Digits    int    `json:"digits"`
	Period    int    `json:"period"`
	Algorithm string `json:"algorithm"`
	URI       string `json:"uri"`
}

// Revoke is the body of an admin's revocation.
type Revoke struct {
	Reason string `json:"reason"`
}

// ChallengeContext is what the device displays for a challenge.
type ChallengeContext struct {
	App       string `json:"app"`
	Message   string `json:"message,omitempty"`
	IP        string `json:"ip,omitempty"`
	Location  string `json:"location,omitempty"`
	Browser   string `json:"browser,omitempty"`
	CreatedAt string `json:"created_at"`
}

// Challenge is a challenge as the relying party sees it; Number only for a
// challenge that needs one.
type Challenge struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	User       string     `json:"user"`
	Number     *int       `json:"number,omitempty"`
	Resolution string     `json:"resolution,omitempty"`
	Fraud      bool       `json:"fraud,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
}

// CreateChallenge is the body of POST /v1/challenges.
type CreateChallenge struct {
	User           string          `json:"user"`
	Message        string          `json:"message,omitempty"`
	Context        *RequestContext `json:"context,omitempty"`
	NumberMatching *bool           `json:"number_matching,omitempty"`
}

// RequestContext is the sign-in context a relying party supplies.
type RequestContext struct {
	IP       string `json:"ip,omitempty"`
	Location string `json:"location,omitempty"`
	Browser  string `json:"browser,omitempty"`
}

// DeviceChallenge is a challenge as a device sees it: never the number.
type DeviceChallenge struct {
	ID             string           `json:"id"`
	State          string           `json:"state"`
	Nonce          string           `json:"nonce,omitempty"`
	Context        ChallengeContext `json:"context"`
	ContextDigest  string           `json:"context_digest,omitempty"`
	NumberRequired bool             `json:"number_required"`
	ExpiresAt      time.Time        `json:"expires_at"`
}

// DeviceChallenges is a device's pending list.
type DeviceChallenges struct {
	Challenges []DeviceChallenge `json:"challenges"`
}

// ResponseResult answers a device's response.
type ResponseResult struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Resolution string `json:"resolution"`
}

// VerifyCode is the body of POST /v1/users/{user}/verify-code, and Valid its
// answer.
type VerifyCode struct {
	Code string `json:"code"`
}

// CodeResult answers an offline code check.
type CodeResult struct {
	Valid bool `json:"valid"`
}

// WebhookEvent is the body of a webhook call.
type WebhookEvent struct {
	Type      string           `json:"type"`
	Challenge WebhookChallenge `json:"challenge"`
}

// WebhookChallenge is a resolved challenge as its application's webhook
// receives it.
type WebhookChallenge struct {
	ID            string     `json:"id"`
	ApplicationID string     `json:"application_id"`
	User          string     `json:"user"`
	State         string     `json:"state"`
	Resolution    string     `json:"resolution"`
	Fraud         bool       `json:"fraud"`
	CreatedAt     time.Time  `json:"created_at"`
	ResolvedAt    *time.Time `json:"resolved_at"`
}

// WebhookDelivery is a webhook call's record, for admins.
type WebhookDelivery struct {
	ID          string     `json:"id"`
	Outcome     string     `json:"outcome"`
	Attempts    int        `json:"attempts"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// Timeline is what happened to a challenge, for admins.
type Timeline struct {
	Challenge Challenge       `json:"challenge"`
	Events    []TimelineEvent `json:"events"`
}

// TimelineEvent is one moment of a challenge's timeline.
type TimelineEvent struct {
	At                time.Time `json:"at"`
	Event             string    `json:"event"`
	DeviceID          string    `json:"device_id,omitempty"`
	DeliveryID        string    `json:"delivery_id,omitempty"`
	Push              string    `json:"push,omitempty"`
	Provider          string    `json:"provider,omitempty"`
	ProviderMessageID string    `json:"provider_message_id,omitempty"`
	Reason            string    `json:"reason,omitempty"`
	Attempts          int       `json:"attempts,omitempty"`
	State             string    `json:"state,omitempty"`
	Resolution        string    `json:"resolution,omitempty"`
}

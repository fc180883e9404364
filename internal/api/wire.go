package api

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
)

// The JSON shapes of the wire contract. Times are RFC 3339 in UTC.

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func tsp(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := ts(*t)
	return &s
}

type tenantJSON struct {
	ID        string `json:"id"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

func tenantOut(t account.Tenant) tenantJSON {
	return tenantJSON{ID: t.ID, Slug: t.Slug, Name: t.Name, CreatedAt: ts(t.CreatedAt)}
}

type applicationJSON struct {
	ID              string  `json:"id"`
	Tenant          string  `json:"tenant"`
	Name            string  `json:"name"`
	NumberMatching  string  `json:"number_matching"`
	WebhookURL      string  `json:"webhook_url,omitempty"`
	Duo             bool    `json:"duo"`
	DuoIKey         string  `json:"duo_ikey,omitempty"`
	CreatedAt       string  `json:"created_at"`
	SecretRotatedAt *string `json:"secret_rotated_at,omitempty"`
}

func applicationOut(a account.Application) applicationJSON {
	return applicationJSON{ID: a.ID, Tenant: a.TenantSlug, Name: a.Name, NumberMatching: a.NumberMatching,
		WebhookURL: a.WebhookURL, Duo: a.DuoIKey != "", DuoIKey: a.DuoIKey, CreatedAt: ts(a.CreatedAt),
		SecretRotatedAt: tsp(a.SecretRotatedAt)}
}

type userJSON struct {
	ID         string  `json:"id"`
	User       string  `json:"user"`
	Tenant     string  `json:"tenant"`
	CreatedAt  string  `json:"created_at"`
	Locked     bool    `json:"locked"`
	LockedAt   *string `json:"locked_at,omitempty"`
	LockReason string  `json:"lock_reason,omitempty"`
}

func userOut(u account.User, tenant string) userJSON {
	return userJSON{ID: u.ID, User: u.Name, Tenant: tenant, CreatedAt: ts(u.CreatedAt), Locked: u.Locked(),
		LockedAt: tsp(u.LockedAt), LockReason: u.LockReason}
}

type tokenJSON struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Tenant     string  `json:"tenant,omitempty"`
	Global     bool    `json:"global"`
	CreatedAt  string  `json:"created_at"`
	CreatedBy  string  `json:"created_by"`
	LastUsedAt *string `json:"last_used_at,omitempty"`
	RevokedAt  *string `json:"revoked_at,omitempty"`
}

func tokenOut(k account.AdminToken) tokenJSON {
	return tokenJSON{ID: k.ID, Name: k.Name, Tenant: k.TenantSlug, Global: k.TenantID == "", CreatedAt: ts(k.CreatedAt),
		CreatedBy: k.CreatedBy, LastUsedAt: tsp(k.LastUsedAt), RevokedAt: tsp(k.RevokedAt)}
}

type auditEventJSON struct {
	ID         int64           `json:"id"`
	Seq        *int64          `json:"seq,omitempty"`
	OccurredAt string          `json:"occurred_at"`
	Type       string          `json:"type"`
	Actor      audit.Actor     `json:"actor"`
	UserID     string          `json:"user_id,omitempty"`
	Data       json.RawMessage `json:"data"`
	Sealed     bool            `json:"sealed"`
	PrevHash   string          `json:"prev_hash,omitempty"`
	Hash       string          `json:"hash,omitempty"`
}

func auditOut(e audit.Event) auditEventJSON {
	out := auditEventJSON{ID: e.ID, OccurredAt: ts(e.OccurredAt), Type: e.Type, Actor: e.Actor, UserID: e.UserID,
		Data: e.Data, Sealed: e.Sealed()}
	if e.Sealed() {
		seq := e.Seq
		out.Seq, out.PrevHash, out.Hash = &seq, audit.Hex(e.PrevHash), audit.Hex(e.Hash)
	}
	return out
}

type deviceJSON struct {
	ID           string  `json:"id"`
	Name         string  `json:"name"`
	Platform     string  `json:"platform"`
	PushProvider string  `json:"push_provider"`
	State        string  `json:"state"`
	AppVersion   string  `json:"app_version,omitempty"`
	OSVersion    string  `json:"os_version,omitempty"`
	CreatedAt    string  `json:"created_at"`
	LastSeenAt   *string `json:"last_seen_at,omitempty"`
	RevokedAt    *string `json:"revoked_at,omitempty"`
	RevokedBy    string  `json:"revoked_by,omitempty"`
	RevokeReason string  `json:"revoke_reason,omitempty"`
	TOTP         bool    `json:"totp"`
}

func deviceOut(d devices.Device) deviceJSON {
	return deviceJSON{ID: d.ID, Name: d.Name, Platform: d.Platform, PushProvider: d.PushProvider, State: d.State,
		AppVersion: d.AppVersion, OSVersion: d.OSVersion, CreatedAt: ts(d.CreatedAt), LastSeenAt: tsp(d.LastSeenAt),
		RevokedAt: tsp(d.RevokedAt), RevokedBy: d.RevokedBy, RevokeReason: d.RevokeReason, TOTP: d.HasTOTP}
}

// Cursors are opaque to clients: base64url of a tagged position.

func encodeCursor(tag, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(tag + ":" + pos))
}

func decodeCursor(tag, cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	pos, ok := strings.CutPrefix(string(raw), tag+":")
	// Positions are user names or ids: valid UTF-8 without control
	// characters, which PostgreSQL would refuse.
	if err != nil || !ok || !utf8.ValidString(pos) || strings.IndexFunc(pos, unicode.IsControl) >= 0 {
		return "", errs.Invalid("cursor", "cursor is not one this endpoint returned")
	}
	return pos, nil
}

func decodeIDCursor(tag, cursor string) (int64, error) {
	pos, err := decodeCursor(tag, cursor)
	if err != nil || pos == "" {
		return 0, err
	}
	n, err := strconv.ParseInt(pos, 10, 64)
	if err != nil || n <= 0 {
		return 0, errs.Invalid("cursor", "cursor is not one this endpoint returned")
	}
	return n, nil
}

// parseID checks a resource id from a path. An id that is not a UUID cannot
// exist, so it is simply not found.
func parseID(raw, what string) (string, error) {
	id, err := uuid.Parse(raw)
	if err != nil || strings.ContainsAny(raw, "{}") || len(raw) != 36 {
		return "", errs.NotFoundf("%s not found", what)
	}
	return id.String(), nil
}

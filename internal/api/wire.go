package api

import (
	"encoding/base64"
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
	"github.com/pushmfa/pushmfa/internal/wire"
)

// Conversions from domain types to the JSON shapes of internal/wire. Times
// leave in UTC.

func utc(t time.Time) time.Time { return t.UTC() }

func utcp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func tenantOut(t account.Tenant) wire.Tenant {
	return wire.Tenant{ID: t.ID, Slug: t.Slug, Name: t.Name, CreatedAt: utc(t.CreatedAt)}
}

func applicationOut(a account.Application) wire.Application {
	return wire.Application{ID: a.ID, Tenant: a.TenantSlug, Name: a.Name, NumberMatching: a.NumberMatching,
		WebhookURL: a.WebhookURL, Duo: a.DuoIKey != "", DuoIKey: a.DuoIKey, CreatedAt: utc(a.CreatedAt),
		SecretRotatedAt: utcp(a.SecretRotatedAt)}
}

func userOut(u account.User, tenant string) wire.User {
	return wire.User{ID: u.ID, User: u.Name, Tenant: tenant, CreatedAt: utc(u.CreatedAt), Locked: u.Locked(),
		LockedAt: utcp(u.LockedAt), LockReason: u.LockReason}
}

func tokenOut(k account.AdminToken) wire.AdminToken {
	return wire.AdminToken{ID: k.ID, Name: k.Name, Tenant: k.TenantSlug, Global: k.TenantID == "", CreatedAt: utc(k.CreatedAt),
		CreatedBy: k.CreatedBy, LastUsedAt: utcp(k.LastUsedAt), RevokedAt: utcp(k.RevokedAt)}
}

func auditOut(e audit.Event) wire.AuditEvent {
	out := wire.AuditEvent{ID: e.ID, OccurredAt: utc(e.OccurredAt), Type: e.Type,
		Actor: wire.Actor{Type: e.Actor.Type, ID: e.Actor.ID}, UserID: e.UserID, Data: e.Data, Sealed: e.Sealed()}
	if e.Sealed() {
		seq := e.Seq
		out.Seq, out.PrevHash, out.Hash = &seq, audit.Hex(e.PrevHash), audit.Hex(e.Hash)
	}
	return out
}

func deviceOut(d devices.Device) wire.Device {
	return wire.Device{ID: d.ID, Name: d.Name, Platform: d.Platform, PushProvider: d.PushProvider, State: d.State,
		AppVersion: d.AppVersion, OSVersion: d.OSVersion, CreatedAt: utc(d.CreatedAt), LastSeenAt: utcp(d.LastSeenAt),
		RevokedAt: utcp(d.RevokedAt), RevokedBy: d.RevokedBy, RevokeReason: d.RevokeReason, TOTP: d.HasTOTP,
		PushTokenInvalid: d.PushTokenInvalid}
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

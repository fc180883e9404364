package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/devices"
)

const deviceColumns = `id, tenant_id, user_id, name, platform, push_provider, coalesce(app_version, ''),
	coalesce(os_version, ''), state, created_at, last_seen_at, revoked_at, coalesce(revoked_by, ''),
	coalesce(revoke_reason, ''), totp_secret IS NOT NULL`

func scanDevice(r pgx.Row) (devices.Device, error) {
	var d devices.Device
	err := r.Scan(&d.ID, &d.TenantID, &d.UserID, &d.Name, &d.Platform, &d.PushProvider, &d.AppVersion,
		&d.OSVersion, &d.State, &d.CreatedAt, &d.LastSeenAt, &d.RevokedAt, &d.RevokedBy, &d.RevokeReason, &d.HasTOTP)
	return d, err
}

// DevicesOfUser lists a user's devices, active and revoked, oldest first.
func (db *DB) DevicesOfUser(ctx context.Context, tenantID, userID string) ([]devices.Device, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices
		WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id`, tenantID, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (devices.Device, error) { return scanDevice(r) })
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// PruneJTIs deletes JWT ids whose tokens can no longer be accepted.
func (db *DB) PruneJTIs(ctx context.Context) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM used_jtis WHERE expires_at < now()`)
	if err != nil {
		return 0, fmt.Errorf("prune used JWT ids: %w", err)
	}
	return tag.RowsAffected(), nil
}

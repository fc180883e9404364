package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/seal"
	"github.com/pushmfa/pushmfa/internal/totp"
)

// Audit event types of offline codes.
const (
	auditCodeAccepted = "offline_code.accepted"
	auditCodeRejected = "offline_code.rejected"
)

// VerifyCode checks an offline code against the user's active devices. It
// works while pushes are held back (guard, lock), so flooding a user cannot
// lock them out. Attempts are limited per user (the policy's
// totp_max_attempts per totp_attempt_window_seconds, counted in PostgreSQL);
// each code is accepted once per device: the step it matched must be later
// than the last one accepted.
func (db *DB) VerifyCode(ctx context.Context, tenantID, userName, code string, by audit.Actor, now time.Time) (bool, error) {
	valid := false
	var refusal error
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		valid, refusal = false, nil
		var userID string
		err := tx.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = $1 AND name = $2 FOR UPDATE`, tenantID, userName).Scan(&userID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // no user, no devices: not valid
		}
		if err != nil {
			return err
		}
		p, err := readPolicy(ctx, tx, tenantID, false)
		if err != nil {
			return err
		}
		if !p.TOTPEnabled {
			refusal = errs.E(challenge.TOTPDisabled, "offline codes are turned off by the tenant's policy")
			return nil
		}
		var attempts int
		var oldest *time.Time
		if err := tx.QueryRow(ctx, `SELECT count(*), min(at) FROM totp_attempts
			WHERE user_id = $1 AND at > now() - make_interval(secs => $2)`, userID, p.TOTPAttemptWindowSeconds).Scan(&attempts, &oldest); err != nil {
			return err
		}
		if attempts >= p.TOTPMaxAttempts {
			wait := time.Second
			if oldest != nil {
				wait = max(time.Until(oldest.Add(time.Duration(p.TOTPAttemptWindowSeconds)*time.Second)), time.Second)
			}
			refusal = &errs.Error{Code: errs.RateLimited, RetryAfter: wait,
				Message: "too many offline code attempts for this user; try again later"}
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT id, totp_secret, totp_key_id, totp_digits, totp_period, coalesce(totp_last_step, -1)
			FROM devices WHERE user_id = $1 AND state = 'active' AND totp_secret IS NOT NULL`, userID)
		if err != nil {
			return err
		}
		type seed struct {
			id, keyID      string
			box            []byte
			digits, period int
			last           int64
		}
		seeds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seed, error) {
			var s seed
			return s, r.Scan(&s.id, &s.box, &s.keyID, &s.digits, &s.period, &s.last)
		})
		if err != nil {
			return err
		}
		deviceID := ""
		for _, s := range seeds {
			secret, err := db.keys.Open(seal.Box{KeyID: s.keyID, Data: s.box}, seal.Place{Table: "devices", Column: "totp_secret", Row: s.id})
			if err != nil {
				return err
			}
			params := totp.Params{Digits: s.digits, Period: s.period}
			step, ok, err := params.Match(string(secret), code, now)
			if err != nil {
				return err
			}
			if !ok || step <= s.last {
				continue
			}
			tag, err := tx.Exec(ctx, `UPDATE devices SET totp_last_step = $2 WHERE id = $1
				AND (totp_last_step IS NULL OR totp_last_step < $2)`, s.id, step)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				valid, deviceID = true, s.id
				break
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO totp_attempts (tenant_id, user_id, success) VALUES ($1, $2, $3)`,
			tenantID, userID, valid); err != nil {
			return err
		}
		typ, data := auditCodeRejected, map[string]any{}
		if valid {
			typ, data = auditCodeAccepted, map[string]any{"device_id": deviceID}
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: typ, Actor: by, UserID: userID, Data: jsonOf(data)})
	})
	if err != nil {
		return false, fmt.Errorf("verify offline code: %w", err)
	}
	return valid, refusal
}

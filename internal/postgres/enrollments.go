package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/enroll"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/seal"
	"github.com/pushmfa/pushmfa/internal/totp"
)

// Audit event types of enrollment and devices.
const (
	auditEnrollmentCreated = "enrollment.created"
	auditDeviceEnrolled    = "device.enrolled"
	auditDeviceRevoked     = "device.revoked"
	auditDevicePushToken   = "device.push_token_updated"
	// The push service refused the token; the device went poll-only.
	auditDevicePushTokenInvalid = "device.push_token_invalid"
	auditSignatureFailed        = "device.signature_failed"
)

// NewEnrollment asks for an activation.
type NewEnrollment struct {
	TenantID string
	UserName string
	// TTL is the code's lifetime; zero means the tenant's policy.
	TTL time.Duration
	By  audit.Actor
}

const enrollmentColumns = `e.id, e.tenant_id, e.user_id, u.name, e.state, e.created_at, e.expires_at, e.completed_at,
	coalesce(e.device_id::text, '')`

func scanEnrollment(r pgx.Row) (enroll.Enrollment, error) {
	var e enroll.Enrollment
	err := r.Scan(&e.ID, &e.TenantID, &e.UserID, &e.UserName, &e.State, &e.CreatedAt, &e.ExpiresAt, &e.CompletedAt, &e.DeviceID)
	return e, err
}

// CreateEnrollment makes a one-time activation for a user of the tenant,
// creating the user when new. It returns the code, shown this once (a sealed
// copy stays only to draw the QR code until the code is used or expires).
func (db *DB) CreateEnrollment(ctx context.Context, in NewEnrollment) (enroll.Enrollment, string, error) {
	code, err := enroll.NewCode()
	if err != nil {
		return enroll.Enrollment{}, "", err
	}
	id := uuid.NewString()
	box, err := db.keys.Seal([]byte(code), seal.Place{Table: "enrollments", Column: "code", Row: id})
	if err != nil {
		return enroll.Enrollment{}, "", err
	}
	var e enroll.Enrollment
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		userID, err := ensureUser(ctx, tx, in.By, in.TenantID, in.UserName)
		if err != nil {
			return err
		}
		ttl := in.TTL
		if ttl == 0 {
			p, err := readPolicy(ctx, tx, in.TenantID, false)
			if err != nil {
				return err
			}
			ttl = p.EnrollmentTTL()
		}
		if _, err := tx.Exec(ctx, `INSERT INTO enrollments (id, tenant_id, user_id, code_digest, code, code_key_id,
				expires_at, created_by_type, created_by_id)
			VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8, $9)`,
			id, in.TenantID, userID, enroll.Digest(code), box.Data, box.KeyID, ttl.Seconds(), in.By.Type, in.By.ID); err != nil {
			return err
		}
		if e, err = enrollmentByID(ctx, tx, in.TenantID, id); err != nil {
			return err
		}
		return insertAudit(ctx, tx, in.TenantID, audit.Event{Type: auditEnrollmentCreated, Actor: in.By, UserID: userID,
			Data: jsonOf(map[string]any{"enrollment_id": id, "expires_at": e.ExpiresAt.UTC()})})
	})
	if err != nil {
		return e, "", fmt.Errorf("create enrollment: %w", err)
	}
	return e, code, nil
}

// ensureUser returns the id of the named user, creating (and auditing) the
// user when new.
func ensureUser(ctx context.Context, q querier, by audit.Actor, tenantID, name string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `INSERT INTO users (id, tenant_id, name) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id`, uuid.NewString(), tenantID, name).Scan(&id)
	if err == nil {
		return id, insertAudit(ctx, q, tenantID, audit.Event{Type: audit.UserCreated, Actor: by, UserID: id,
			Data: jsonOf(map[string]any{"user": name})})
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	err = q.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = $1 AND name = $2`, tenantID, name).Scan(&id)
	return id, err
}

func enrollmentByID(ctx context.Context, q querier, tenantID, id string) (enroll.Enrollment, error) {
	e, err := scanEnrollment(q.QueryRow(ctx, `SELECT `+enrollmentColumns+` FROM enrollments e
		JOIN users u ON u.id = e.user_id WHERE e.id = $1 AND ($2 = '' OR e.tenant_id::text = $2)`, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, errs.NotFoundf("enrollment not found")
	}
	return e, err
}

// Enrollment returns an enrollment of the tenant ("" = any).
func (db *DB) Enrollment(ctx context.Context, tenantID, id string) (enroll.Enrollment, error) {
	e, err := enrollmentByID(ctx, db.pool, tenantID, id)
	if err != nil {
		return e, fmt.Errorf("read enrollment: %w", err)
	}
	return e, nil
}

// EnrollmentCode opens the sealed code of a pending enrollment (to draw its
// QR code). A used or expired enrollment has none.
func (db *DB) EnrollmentCode(ctx context.Context, tenantID, id string) (enroll.Enrollment, string, error) {
	var e enroll.Enrollment
	var data []byte
	var keyID *string
	err := db.pool.QueryRow(ctx, `SELECT `+enrollmentColumns+`, e.code, e.code_key_id FROM enrollments e
		JOIN users u ON u.id = e.user_id WHERE e.id = $1 AND ($2 = '' OR e.tenant_id::text = $2)`, id, tenantID).
		Scan(&e.ID, &e.TenantID, &e.UserID, &e.UserName, &e.State, &e.CreatedAt, &e.ExpiresAt, &e.CompletedAt,
			&e.DeviceID, &data, &keyID)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, "", errs.NotFoundf("enrollment not found")
	}
	if err != nil {
		return e, "", fmt.Errorf("read enrollment: %w", err)
	}
	switch e.EffectiveState(time.Now()) {
	case enroll.StateCompleted:
		return e, "", errs.E(errs.EnrollmentUsed, "this enrollment was used; create a new one")
	case enroll.StateExpired:
		return e, "", errs.E(errs.EnrollmentExpired, "this enrollment expired; create a new one")
	}
	if keyID == nil {
		return e, "", errs.E(errs.EnrollmentExpired, "this enrollment has no code any more; create a new one")
	}
	code, err := db.keys.Open(seal.Box{KeyID: *keyID, Data: data}, seal.Place{Table: "enrollments", Column: "code", Row: e.ID})
	if err != nil {
		return e, "", fmt.Errorf("open enrollment code: %w", err)
	}
	return e, string(code), nil
}

// NewDevice is a verified enrollment request.
type NewDevice struct {
	Token        jose.Enroll
	Platform     string
	PushProvider string
	PushToken    string
	Name         string
	AppVersion   string
	OSVersion    string
}

// EnrolledDevice is the outcome of an enrollment: the device and, when the
// policy allows offline codes, its TOTP seed (shown to the device once).
type EnrolledDevice struct {
	Device     devices.Device
	TOTPSecret string
	TOTP       totp.Params
	TenantName string
	UserName   string
}

// CompleteEnrollment consumes an activation code and registers the device,
// all in one transaction: the code is claimed by one conditional UPDATE, so
// of two devices racing for it exactly one wins and the other gets
// enrollment_used; a refusal after that (device limit, replayed token)
// rolls everything back and leaves the code pending.
func (db *DB) CompleteEnrollment(ctx context.Context, in NewDevice) (EnrolledDevice, error) {
	var out EnrolledDevice
	deviceID := uuid.NewString()
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		var enrollmentID, tenantID, userID string
		err := tx.QueryRow(ctx, `UPDATE enrollments SET state = 'completed', completed_at = now(), device_id = $2,
				code = NULL, code_key_id = NULL
			WHERE code_digest = $1 AND state = 'pending' AND expires_at > now()
			RETURNING id, tenant_id, user_id`, enroll.Digest(in.Token.Claims.Code), deviceID).Scan(&enrollmentID, &tenantID, &userID)
		if errors.Is(err, pgx.ErrNoRows) {
			return enrollmentRefusal(ctx, tx, in.Token.Claims.Code)
		}
		if err != nil {
			return err
		}
		var maxDevices, active, digits int
		var totpOn bool
		// Lock the user first, then count in a statement of its own: under
		// READ COMMITTED a statement sees what committed before it began, so
		// counting in the locking statement would miss a device another
		// enrollment of this user committed while we waited for the lock.
		if err := tx.QueryRow(ctx, `SELECT u.name, t.name, p.max_devices, p.totp_enabled, p.totp_digits
			FROM users u JOIN tenants t ON t.id = u.tenant_id JOIN policies p ON p.tenant_id = u.tenant_id
			WHERE u.id = $1 FOR UPDATE OF u`, userID).Scan(&out.UserName, &out.TenantName, &maxDevices, &totpOn, &digits); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM devices WHERE user_id = $1 AND state = 'active'`, userID).Scan(&active); err != nil {
			return err
		}
		if active >= maxDevices {
			return errs.E(errs.DeviceLimit, "the user already has %d active devices, the most the policy allows; remove one first", active)
		}
		if err := useJTI(ctx, tx, in.Token.Thumbprint, in.Token.Claims.ID, in.Token.JTIExpires); err != nil {
			return errs.E(errs.InvalidJWS, "this token was already used (jti)")
		}
		var pushBox, totpBox *seal.Box
		if in.PushToken != "" {
			b, err := db.keys.Seal([]byte(in.PushToken), seal.Place{Table: "devices", Column: "push_token", Row: deviceID})
			if err != nil {
				return err
			}
			pushBox = &b
		}
		var period *int
		var digitsCol *int
		if totpOn {
			secret, err := totp.NewSecret()
			if err != nil {
				return err
			}
			b, err := db.keys.Seal([]byte(secret), seal.Place{Table: "devices", Column: "totp_secret", Row: deviceID})
			if err != nil {
				return err
			}
			totpBox = &b
			out.TOTPSecret, out.TOTP = secret, totp.Params{Digits: digits, Period: totp.DefaultPeriod}
			p := totp.DefaultPeriod
			period, digitsCol = &p, &digits
		}
		_, err = tx.Exec(ctx, `INSERT INTO devices (id, tenant_id, user_id, platform, push_provider, push_token, push_token_key_id,
				public_key, name, app_version, os_version, totp_secret, totp_key_id, totp_digits, totp_period, last_seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''), nullif($11, ''), $12, $13, $14, $15, now())`,
			deviceID, tenantID, userID, in.Platform, in.PushProvider, boxData(pushBox), boxKey(pushBox),
			jose.Uncompressed(in.Token.Key), in.Name, in.AppVersion, in.OSVersion, boxData(totpBox), boxKey(totpBox), digitsCol, period)
		if code, constraint := pgCode(err); code == uniqueViolation && constraint == "devices_public_key_key" {
			return errs.E(errs.Conflict, "this key is already registered to a device")
		}
		if err != nil {
			return err
		}
		if out.Device, err = deviceByID(ctx, tx, tenantID, deviceID); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, tenantID, audit.Event{Type: auditDeviceEnrolled,
			Actor: audit.Actor{Type: audit.ActorDevice, ID: deviceID}, UserID: userID,
			Data: jsonOf(map[string]any{"device_id": deviceID, "enrollment_id": enrollmentID, "platform": in.Platform,
				"push_provider": in.PushProvider, "name": in.Name, "totp": totpOn})}); err != nil {
			return err
		}
		return db.notify(ctx, tx, tenantID, userID, deviceID, "device_added")
	})
	if err != nil {
		return out, fmt.Errorf("complete enrollment: %w", err)
	}
	return out, nil
}

// enrollmentRefusal says why a code could not be claimed.
func enrollmentRefusal(ctx context.Context, q querier, code string) error {
	var state string
	var expired bool
	err := q.QueryRow(ctx, `SELECT state, expires_at <= now() FROM enrollments WHERE code_digest = $1`,
		enroll.Digest(code)).Scan(&state, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errs.E(errs.EnrollmentNotFound, "no enrollment has this code")
	case err != nil:
		return err
	case state == enroll.StateCompleted:
		return errs.E(errs.EnrollmentUsed, "this enrollment code was already used")
	default:
		return errs.E(errs.EnrollmentExpired, "this enrollment code expired; ask for a new one")
	}
}

// useJTI records a JWT id for its issuer; an id seen before is an error.
func useJTI(ctx context.Context, q querier, issuer, jti string, expires time.Time) error {
	tag, err := q.Exec(ctx, `INSERT INTO used_jtis (issuer, jti, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, issuer, jti, expires)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errors.New("jti replayed")
	}
	return nil
}

// ExpireEnrollments marks pending enrollments past their time as expired
// and erases their sealed codes.
func (db *DB) ExpireEnrollments(ctx context.Context) (int64, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE enrollments SET state = 'expired', code = NULL, code_key_id = NULL
		WHERE state = 'pending' AND expires_at <= now()`)
	if err != nil {
		return 0, fmt.Errorf("expire enrollments: %w", err)
	}
	return tag.RowsAffected(), nil
}

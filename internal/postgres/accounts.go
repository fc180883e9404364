package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/credential"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/policy"
	"github.com/pushmfa/pushmfa/internal/seal"
)

// ---- tenants ----

// TenantBySlug finds a tenant.
func (db *DB) TenantBySlug(ctx context.Context, slug string) (account.Tenant, error) {
	var t account.Tenant
	err := db.pool.QueryRow(ctx, `SELECT id, slug, name, created_at FROM tenants WHERE slug = $1`, slug).
		Scan(&t.ID, &t.Slug, &t.Name, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errs.NotFoundf("tenant %q not found", slug)
	}
	if err != nil {
		return t, fmt.Errorf("find tenant %q: %w", slug, err)
	}
	return t, nil
}

// Tenants lists every tenant, by slug.
func (db *DB) Tenants(ctx context.Context) ([]account.Tenant, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, slug, name, created_at FROM tenants ORDER BY slug`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (account.Tenant, error) {
		var t account.Tenant
		return t, r.Scan(&t.ID, &t.Slug, &t.Name, &t.CreatedAt)
	})
}

// CreateTenant creates a tenant with the default policy.
func (db *DB) CreateTenant(ctx context.Context, by audit.Actor, slug, name string) (account.Tenant, error) {
	t := account.Tenant{ID: uuid.NewString(), Slug: slug, Name: name}
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO tenants (id, slug, name) VALUES ($1, $2, $3) RETURNING created_at`,
			t.ID, slug, name).Scan(&t.CreatedAt)
		if code, _ := pgCode(err); code == uniqueViolation {
			return errs.Field(errs.Conflict, "slug", "tenant %q already exists", slug)
		}
		if err != nil {
			return err
		}
		if err := insertPolicy(ctx, tx, t.ID, policy.Default()); err != nil {
			return err
		}
		return insertAudit(ctx, tx, t.ID, audit.Event{Type: audit.TenantCreated, Actor: by,
			Data: jsonOf(map[string]any{"slug": slug, "name": name})})
	})
	if err != nil {
		return t, fmt.Errorf("create tenant %q: %w", slug, err)
	}
	return t, nil
}

// ---- policy ----

const policyColumns = `challenge_ttl_seconds, enrollment_ttl_seconds, number_matching, push_enabled,
	require_user_verification, challenges_per_window, challenge_window_seconds, max_pending_challenges,
	denial_backoff_after, fraud_lockout_after, totp_enabled, totp_digits, totp_max_attempts,
	totp_attempt_window_seconds, max_devices`

func policyFields(p *policy.Policy) []any {
	return []any{&p.ChallengeTTLSeconds, &p.EnrollmentTTLSeconds, &p.NumberMatching, &p.PushEnabled,
		&p.RequireUserVerification, &p.ChallengesPerWindow, &p.ChallengeWindowSeconds, &p.MaxPendingChallenges,
		&p.DenialBackoffAfter, &p.FraudLockoutAfter, &p.TOTPEnabled, &p.TOTPDigits, &p.TOTPMaxAttempts,
		&p.TOTPAttemptWindowSeconds, &p.MaxDevices}
}

func insertPolicy(ctx context.Context, q querier, tenantID string, p policy.Policy) error {
	args := append([]any{tenantID}, policyFields(&p)...)
	_, err := q.Exec(ctx, `INSERT INTO policies (tenant_id, `+policyColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`, args...)
	return err
}

func readPolicy(ctx context.Context, q querier, tenantID string, lock bool) (policy.Policy, error) {
	var p policy.Policy
	sql := `SELECT ` + policyColumns + ` FROM policies WHERE tenant_id = $1`
	if lock {
		sql += ` FOR UPDATE`
	}
	err := q.QueryRow(ctx, sql, tenantID).Scan(policyFields(&p)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, errs.NotFoundf("tenant not found")
	}
	return p, err
}

// Policy returns a tenant's policy.
func (db *DB) Policy(ctx context.Context, tenantID string) (policy.Policy, error) {
	p, err := readPolicy(ctx, db.pool, tenantID, false)
	if err != nil {
		return p, fmt.Errorf("read policy: %w", err)
	}
	return p, nil
}

// UpdatePolicy applies a partial update to a tenant's policy and records the
// changed fields in the audit log.
func (db *DB) UpdatePolicy(ctx context.Context, by audit.Actor, tenantID string, patch policy.Patch) (policy.Policy, error) {
	var out policy.Policy
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		cur, err := readPolicy(ctx, tx, tenantID, true)
		if err != nil {
			return err
		}
		next, err := cur.Apply(patch)
		if err != nil {
			return err
		}
		out = next
		args := append([]any{tenantID}, policyFields(&next)...)
		if _, err := tx.Exec(ctx, `UPDATE policies SET (`+policyColumns+`, updated_at) =
			($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now()) WHERE tenant_id = $1`, args...); err != nil {
			return err
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: audit.PolicyUpdated, Actor: by,
			Data: jsonOf(map[string]any{"changes": policyDiff(cur, next)})})
	})
	if err != nil {
		return out, fmt.Errorf("update policy: %w", err)
	}
	return out, nil
}

func policyDiff(a, b policy.Policy) map[string]any {
	var am, bm map[string]any
	_ = json.Unmarshal(jsonOf(a), &am)
	_ = json.Unmarshal(jsonOf(b), &bm)
	out := map[string]any{}
	for k, v := range bm {
		if fmt.Sprint(am[k]) != fmt.Sprint(v) {
			out[k] = map[string]any{"from": am[k], "to": v}
		}
	}
	return out
}

// ---- applications ----

// ApplicationSecrets are the secrets made when an application is created;
// they are shown to the admin once and never again.
type ApplicationSecrets struct {
	Secret        credential.Secret
	WebhookSecret *credential.Secret
	DuoSKey       string
}

const appColumns = `a.id, a.tenant_id, t.slug, a.name, a.number_matching, coalesce(a.webhook_url, ''),
	coalesce(a.duo_ikey, ''), a.created_at, a.secret_rotated_at`

func scanApp(r pgx.Row) (account.Application, error) {
	var a account.Application
	err := r.Scan(&a.ID, &a.TenantID, &a.TenantSlug, &a.Name, &a.NumberMatching, &a.WebhookURL,
		&a.DuoIKey, &a.CreatedAt, &a.SecretRotatedAt)
	return a, err
}

// CreateApplication creates an application of a tenant with a fresh secret,
// and a webhook secret and Duo keys when asked.
func (db *DB) CreateApplication(ctx context.Context, by audit.Actor, tenantID string, in account.NewApplication) (account.Application, ApplicationSecrets, error) {
	var sec ApplicationSecrets
	id := uuid.NewString()
	secret, err := credential.New(credential.AppSecret)
	if err != nil {
		return account.Application{}, sec, err
	}
	sec.Secret = secret
	matching := in.NumberMatching
	if matching == "" {
		matching = account.MatchingRequired
		if in.Duo {
			matching = account.MatchingWhenSupported
		}
	}
	var webhookURL, duoIKey *string
	var webhookBox, skeyBox *seal.Box
	if in.WebhookURL != "" {
		ws, err := credential.New(credential.WebhookSecret)
		if err != nil {
			return account.Application{}, sec, err
		}
		sec.WebhookSecret = &ws
		box, err := db.keys.Seal([]byte(ws.Reveal()), seal.Place{Table: "applications", Column: "webhook_secret", Row: id})
		if err != nil {
			return account.Application{}, sec, err
		}
		webhookURL, webhookBox = &in.WebhookURL, &box
	}
	if in.Duo {
		ikey, skey, err := credential.NewDuoKeys()
		if err != nil {
			return account.Application{}, sec, err
		}
		box, err := db.keys.Seal([]byte(skey), seal.Place{Table: "applications", Column: "duo_skey", Row: id})
		if err != nil {
			return account.Application{}, sec, err
		}
		duoIKey, skeyBox, sec.DuoSKey = &ikey, &box, skey
	}
	var app account.Application
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO applications (id, tenant_id, name, secret_digest, number_matching,
				webhook_url, webhook_secret, webhook_secret_key_id, duo_ikey, duo_skey, duo_skey_key_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			id, tenantID, in.Name, secret.Digest(), matching, webhookURL, boxData(webhookBox), boxKey(webhookBox),
			duoIKey, boxData(skeyBox), boxKey(skeyBox))
		if code, constraint := pgCode(err); code == uniqueViolation && constraint == "applications_live_name" {
			return errs.Field(errs.Conflict, "name", "an application named %q already exists", in.Name)
		}
		if err != nil {
			return err
		}
		app, err = scanApp(tx.QueryRow(ctx, `SELECT `+appColumns+` FROM applications a JOIN tenants t ON t.id = a.tenant_id
			WHERE a.id = $1`, id))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: audit.ApplicationCreated, Actor: by,
			Data: jsonOf(map[string]any{"application_id": id, "name": in.Name, "webhook": in.WebhookURL != "",
				"duo": in.Duo, "number_matching": matching})})
	})
	if err != nil {
		return app, ApplicationSecrets{}, fmt.Errorf("create application: %w", err)
	}
	return app, sec, nil
}

func boxData(b *seal.Box) []byte {
	if b == nil {
		return nil
	}
	return b.Data
}

func boxKey(b *seal.Box) *string {
	if b == nil {
		return nil
	}
	return &b.KeyID
}

// Applications lists a tenant's live applications ("" = every tenant).
func (db *DB) Applications(ctx context.Context, tenantID string) ([]account.Application, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+appColumns+` FROM applications a JOIN tenants t ON t.id = a.tenant_id
		WHERE a.deleted_at IS NULL AND ($1 = '' OR a.tenant_id::text = $1) ORDER BY t.slug, a.created_at, a.id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list applications: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (account.Application, error) { return scanApp(r) })
}

// Application finds a live application by id, within a tenant ("" = any).
func (db *DB) Application(ctx context.Context, tenantID, id string) (account.Application, error) {
	return application(ctx, db.pool, tenantID, id, false)
}

func application(ctx context.Context, q querier, tenantID, id string, lock bool) (account.Application, error) {
	sql := `SELECT ` + appColumns + ` FROM applications a JOIN tenants t ON t.id = a.tenant_id
		WHERE a.id = $1 AND a.deleted_at IS NULL AND ($2 = '' OR a.tenant_id::text = $2)`
	if lock {
		sql += ` FOR UPDATE OF a`
	}
	a, err := scanApp(q.QueryRow(ctx, sql, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, errs.NotFoundf("application not found")
	}
	if err != nil {
		return a, fmt.Errorf("find application: %w", err)
	}
	return a, nil
}

// RotateApplicationSecret replaces an application's secret; the old one stops
// working at once.
func (db *DB) RotateApplicationSecret(ctx context.Context, by audit.Actor, tenantID, id string) (account.Application, credential.Secret, error) {
	secret, err := credential.New(credential.AppSecret)
	if err != nil {
		return account.Application{}, secret, err
	}
	var app account.Application
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		app, err = application(ctx, tx, tenantID, id, true)
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE applications SET secret_digest = $2, secret_rotated_at = now()
			WHERE id = $1 RETURNING secret_rotated_at`, id, secret.Digest()).Scan(&app.SecretRotatedAt); err != nil {
			return err
		}
		if err := notifyCredentials(ctx, tx, id); err != nil {
			return err
		}
		return insertAudit(ctx, tx, app.TenantID, audit.Event{Type: audit.ApplicationSecretRotated, Actor: by,
			Data: jsonOf(map[string]any{"application_id": id})})
	})
	if err != nil {
		return app, credential.Secret{}, fmt.Errorf("rotate application secret: %w", err)
	}
	return app, secret, nil
}

// UpdateApplication changes an application's name, number matching setting or
// webhook URL. A new webhook URL on an application without one gets a fresh
// webhook secret, returned once.
func (db *DB) UpdateApplication(ctx context.Context, by audit.Actor, tenantID, id string, p account.ApplicationPatch) (account.Application, *credential.Secret, error) {
	var app account.Application
	var newSecret *credential.Secret
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		cur, err := application(ctx, tx, tenantID, id, true)
		if err != nil {
			return err
		}
		changes := map[string]any{}
		if p.Name != nil && *p.Name != cur.Name {
			changes["name"] = *p.Name
			if _, err := tx.Exec(ctx, `UPDATE applications SET name = $2 WHERE id = $1`, id, *p.Name); err != nil {
				if code, c := pgCode(err); code == uniqueViolation && c == "applications_live_name" {
					return errs.Field(errs.Conflict, "name", "an application named %q already exists", *p.Name)
				}
				return err
			}
		}
		if p.NumberMatching != nil && *p.NumberMatching != cur.NumberMatching {
			changes["number_matching"] = *p.NumberMatching
			if _, err := tx.Exec(ctx, `UPDATE applications SET number_matching = $2 WHERE id = $1`, id, *p.NumberMatching); err != nil {
				return err
			}
		}
		if p.WebhookURL != nil && *p.WebhookURL != cur.WebhookURL {
			changes["webhook"] = *p.WebhookURL != ""
			switch {
			case *p.WebhookURL == "":
				_, err = tx.Exec(ctx, `UPDATE applications SET webhook_url = NULL, webhook_secret = NULL,
					webhook_secret_key_id = NULL WHERE id = $1`, id)
			case cur.WebhookURL == "":
				ws, err2 := credential.New(credential.WebhookSecret)
				if err2 != nil {
					return err2
				}
				box, err2 := db.keys.Seal([]byte(ws.Reveal()), seal.Place{Table: "applications", Column: "webhook_secret", Row: id})
				if err2 != nil {
					return err2
				}
				newSecret = &ws
				_, err = tx.Exec(ctx, `UPDATE applications SET webhook_url = $2, webhook_secret = $3,
					webhook_secret_key_id = $4 WHERE id = $1`, id, *p.WebhookURL, box.Data, box.KeyID)
			default:
				_, err = tx.Exec(ctx, `UPDATE applications SET webhook_url = $2 WHERE id = $1`, id, *p.WebhookURL)
			}
			if err != nil {
				return err
			}
		}
		app, err = application(ctx, tx, tenantID, id, false)
		if err != nil || len(changes) == 0 {
			return err
		}
		if err := notifyCredentials(ctx, tx, id); err != nil {
			return err
		}
		changes["application_id"] = id
		return insertAudit(ctx, tx, cur.TenantID, audit.Event{Type: audit.ApplicationUpdated, Actor: by, Data: jsonOf(changes)})
	})
	if err != nil {
		return app, nil, fmt.Errorf("update application: %w", err)
	}
	return app, newSecret, nil
}

// DeleteApplication retires an application: its secret stops working and its
// recoverable secrets are erased. Its past challenges stay for the record.
func (db *DB) DeleteApplication(ctx context.Context, by audit.Actor, tenantID, id string) error {
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		app, err := application(ctx, tx, tenantID, id, true)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE applications SET deleted_at = now(), secret_digest = NULL,
			webhook_secret = NULL, webhook_secret_key_id = NULL, duo_skey = NULL, duo_skey_key_id = NULL
			WHERE id = $1`, id); err != nil {
			return err
		}
		if err := notifyCredentials(ctx, tx, id); err != nil {
			return err
		}
		return insertAudit(ctx, tx, app.TenantID, audit.Event{Type: audit.ApplicationDeleted, Actor: by,
			Data: jsonOf(map[string]any{"application_id": id, "name": app.Name})})
	})
	if err != nil {
		return fmt.Errorf("delete application: %w", err)
	}
	return nil
}

// AuthenticateApplication finds the live application whose secret has this
// digest.
func (db *DB) AuthenticateApplication(ctx context.Context, digest []byte) (account.Principal, error) {
	var p account.Principal
	var stored []byte
	err := db.pool.QueryRow(ctx, `SELECT a.id, a.tenant_id, t.slug, a.name, a.number_matching, a.secret_digest FROM applications a
		JOIN tenants t ON t.id = a.tenant_id WHERE a.secret_digest = $1 AND a.deleted_at IS NULL`, digest).
		Scan(&p.ID, &p.TenantID, &p.TenantSlug, &p.AppName, &p.AppMatching, &stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, errs.ErrUnauthorized
	}
	if err != nil {
		return p, fmt.Errorf("authenticate application: %w", err)
	}
	// The index lookup found it by digest; compare again in constant time so
	// the decision itself never depends on a byte-wise comparison.
	if !credential.Equal(stored, digest) {
		return p, errs.ErrUnauthorized
	}
	p.Kind = account.KindApplication
	return p, nil
}

// ---- users ----

const userColumns = `id, tenant_id, name, created_at, locked_at, coalesce(lock_reason, '')`

func scanUser(r pgx.Row) (account.User, error) {
	var u account.User
	err := r.Scan(&u.ID, &u.TenantID, &u.Name, &u.CreatedAt, &u.LockedAt, &u.LockReason)
	return u, err
}

// CreateUser creates a user of a tenant.
func (db *DB) CreateUser(ctx context.Context, by audit.Actor, tenantID, name string) (account.User, error) {
	var u account.User
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `INSERT INTO users (id, tenant_id, name) VALUES ($1, $2, $3)
			RETURNING `+userColumns, uuid.NewString(), tenantID, name))
		if code, _ := pgCode(err); code == uniqueViolation {
			return errs.Field(errs.Conflict, "user", "user %q already exists", name)
		}
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: audit.UserCreated, Actor: by, UserID: u.ID,
			Data: jsonOf(map[string]any{"user": name})})
	})
	if err != nil {
		return u, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// UserByName finds a user of a tenant.
func (db *DB) UserByName(ctx context.Context, tenantID, name string) (account.User, error) {
	return userByName(ctx, db.pool, tenantID, name, false)
}

func userByName(ctx context.Context, q querier, tenantID, name string, lock bool) (account.User, error) {
	sql := `SELECT ` + userColumns + ` FROM users WHERE tenant_id = $1 AND name = $2`
	if lock {
		sql += ` FOR UPDATE`
	}
	u, err := scanUser(q.QueryRow(ctx, sql, tenantID, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return u, errs.NotFoundf("user not found")
	}
	if err != nil {
		return u, fmt.Errorf("find user: %w", err)
	}
	return u, nil
}

// Users lists a tenant's users by name (byte order, whatever the database's
// collation), starting after the name `after`.
// It returns at most limit users and whether there are more.
func (db *DB) Users(ctx context.Context, tenantID, after string, limit int) ([]account.User, bool, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+userColumns+` FROM users
		WHERE tenant_id = $1 AND name COLLATE "C" > $2 ORDER BY name COLLATE "C" LIMIT $3`, tenantID, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (account.User, error) { return scanUser(r) })
	if err != nil {
		return nil, false, fmt.Errorf("list users: %w", err)
	}
	if len(users) > limit {
		return users[:limit], true, nil
	}
	return users, false, nil
}

// SetUserLock locks (lock=true) or unlocks a user's push challenges.
// Locking an already locked user, or unlocking an unlocked one, changes
// nothing and writes no audit event.
func (db *DB) SetUserLock(ctx context.Context, by audit.Actor, tenantID, name string, lock bool) (account.User, error) {
	var u account.User
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		cur, err := userByName(ctx, tx, tenantID, name, true)
		if err != nil {
			return err
		}
		u = cur
		if cur.Locked() == lock {
			return nil
		}
		typ := audit.UserUnlocked
		sql := `UPDATE users SET locked_at = NULL, lock_reason = NULL, locked_by = NULL, fraud_reports = 0
			WHERE id = $1 RETURNING ` + userColumns
		args := []any{cur.ID}
		if lock {
			typ = audit.UserLocked
			sql = `UPDATE users SET locked_at = now(), lock_reason = 'admin', locked_by = $2
				WHERE id = $1 RETURNING ` + userColumns
			args = append(args, by.Type+":"+by.ID)
		}
		if u, err = scanUser(tx.QueryRow(ctx, sql, args...)); err != nil {
			return err
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: typ, Actor: by, UserID: u.ID,
			Data: jsonOf(map[string]any{"user": name})})
	})
	if err != nil {
		return u, fmt.Errorf("lock user: %w", err)
	}
	return u, nil
}

// ---- admin tokens ----

const tokenColumns = `k.id, k.name, coalesce(k.tenant_id::text, ''), coalesce(t.slug, ''), k.created_at,
	k.created_by, k.last_used_at, k.revoked_at`

func scanToken(r pgx.Row) (account.AdminToken, error) {
	var k account.AdminToken
	err := r.Scan(&k.ID, &k.Name, &k.TenantID, &k.TenantSlug, &k.CreatedAt, &k.CreatedBy, &k.LastUsedAt, &k.RevokedAt)
	return k, err
}

// CreateAdminToken mints an admin token, global when tenantID is "".
func (db *DB) CreateAdminToken(ctx context.Context, by audit.Actor, name, tenantID string) (account.AdminToken, credential.Secret, error) {
	secret, err := credential.New(credential.AdminToken)
	if err != nil {
		return account.AdminToken{}, secret, err
	}
	var k account.AdminToken
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		id := uuid.NewString()
		if _, err := tx.Exec(ctx, `INSERT INTO admin_tokens (id, name, tenant_id, token_digest, created_by)
			VALUES ($1, $2, nullif($3, '')::uuid, $4, $5)`, id, name, tenantID, secret.Digest(), by.Type+":"+by.ID); err != nil {
			return err
		}
		if k, err = scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM admin_tokens k
			LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1`, id)); err != nil {
			return err
		}
		return auditAdminToken(ctx, tx, by, k, audit.AdminTokenCreated)
	})
	if err != nil {
		return k, credential.Secret{}, fmt.Errorf("create admin token: %w", err)
	}
	return k, secret, nil
}

// auditAdminToken records an act on a token in its tenant's log; a global
// token's acts go to the default tenant's log, the installation's own.
func auditAdminToken(ctx context.Context, q querier, by audit.Actor, k account.AdminToken, typ string) error {
	tenantID := k.TenantID
	if tenantID == "" {
		if err := q.QueryRow(ctx, `SELECT id FROM tenants WHERE slug = $1`, account.DefaultTenant).Scan(&tenantID); err != nil {
			return fmt.Errorf("find the default tenant: %w", err)
		}
	}
	return insertAudit(ctx, q, tenantID, audit.Event{Type: typ, Actor: by,
		Data: jsonOf(map[string]any{"token_id": k.ID, "name": k.Name, "global": k.TenantID == ""})})
}

// AdminTokens lists admin tokens: every one ("" scope) or a tenant's.
func (db *DB) AdminTokens(ctx context.Context, tenantID string) ([]account.AdminToken, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+tokenColumns+` FROM admin_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id
		WHERE $1 = '' OR k.tenant_id::text = $1 ORDER BY k.created_at, k.id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (account.AdminToken, error) { return scanToken(r) })
}

// RevokeAdminToken revokes a token within a scope ("" = any). Revoking a
// revoked token changes nothing.
func (db *DB) RevokeAdminToken(ctx context.Context, by audit.Actor, tenantID, id string) (account.AdminToken, error) {
	var k account.AdminToken
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		var err error
		k, err = scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM admin_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id
			WHERE k.id = $1 AND ($2 = '' OR k.tenant_id::text = $2) FOR UPDATE OF k`, id, tenantID))
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.NotFoundf("admin token not found")
		}
		if err != nil || k.RevokedAt != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE admin_tokens SET revoked_at = now() WHERE id = $1 RETURNING revoked_at`, id).
			Scan(&k.RevokedAt); err != nil {
			return err
		}
		return auditAdminToken(ctx, tx, by, k, audit.AdminTokenRevoked)
	})
	if err != nil {
		return k, fmt.Errorf("revoke admin token: %w", err)
	}
	return k, nil
}

// AuthenticateAdminToken finds the unrevoked admin token with this digest and
// notes its use (at most once a minute, to keep writes off the hot path).
func (db *DB) AuthenticateAdminToken(ctx context.Context, digest []byte) (account.Principal, error) {
	var p account.Principal
	var stored []byte
	var lastUsed *time.Time
	err := db.pool.QueryRow(ctx, `SELECT k.id, coalesce(k.tenant_id::text, ''), coalesce(t.slug, ''), k.token_digest, k.last_used_at
		FROM admin_tokens k LEFT JOIN tenants t ON t.id = k.tenant_id
		WHERE k.token_digest = $1 AND k.revoked_at IS NULL`, digest).
		Scan(&p.ID, &p.TenantID, &p.TenantSlug, &stored, &lastUsed)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, errs.ErrUnauthorized
	}
	if err != nil {
		return p, fmt.Errorf("authenticate admin token: %w", err)
	}
	if !credential.Equal(stored, digest) {
		return p, errs.ErrUnauthorized
	}
	if lastUsed == nil || time.Since(*lastUsed) > time.Minute {
		if _, err := db.pool.Exec(ctx, `UPDATE admin_tokens SET last_used_at = now() WHERE id = $1`, p.ID); err != nil {
			db.logger.Warn("note admin token use", "token_id", p.ID, "error", err)
		}
	}
	p.Kind = account.KindAdmin
	return p, nil
}

// jsonOf marshals audit data. Callers pass maps of strings, numbers and
// booleans, which always marshal; an empty object stands in should one not.
func jsonOf(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

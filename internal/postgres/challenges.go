package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/policy"
	"github.com/pushmfa/pushmfa/internal/queue"
)

// Audit event types of challenges.
const (
	auditChallengeCreated  = "challenge.created"
	auditChallengeRefused  = "challenge.refused"
	auditChallengeResolved = "challenge.resolved"
	auditFraudReported     = "challenge.fraud_reported"
)

const challengeColumns = `c.id, c.tenant_id, c.application_id, c.user_id, u.name, c.state, coalesce(c.resolution, ''), c.fraud,
	c.created_at, c.expires_at, c.resolved_at, c.context::text, c.context_digest, c.nonce, coalesce(c.number, 0),
	coalesce(c.resolved_by_device::text, ''), c.user_verified`

func scanChallenge(r pgx.Row) (challenge.Challenge, error) {
	var c challenge.Challenge
	err := r.Scan(challengeDest(&c)...)
	return c, err
}

// NewChallenge is a relying party's sign-in request.
type NewChallenge struct {
	TenantID       string
	ApplicationID  string
	AppName        string
	AppMatching    string
	Request        challenge.Request
	IdempotencyKey string
	RequestDigest  []byte
	By             audit.Actor
	Now            time.Time
}

// CreateChallenge makes a push challenge for a user, in one transaction with
// its push deliveries (queued durably) and audit event. It serialises on the
// user's row, so the push-bombing guard's counting holds across replicas and
// concurrent requests. A guard refusal is too_many_challenges and is audited.
// With an idempotency key, the same key and body return the challenge made
// the first time (replayed true); the same key with another body is
// idempotency_mismatch.
func (db *DB) CreateChallenge(ctx context.Context, in NewChallenge) (c challenge.Challenge, replayed bool, err error) {
	var refusal error
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		refusal, replayed = nil, false
		var userID string
		var locked bool
		var blocked *time.Time
		err := tx.QueryRow(ctx, `SELECT id, locked_at IS NOT NULL, push_blocked_until FROM users
			WHERE tenant_id = $1 AND name = $2 FOR UPDATE`, in.TenantID, in.Request.User).Scan(&userID, &locked, &blocked)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(challenge.NoActiveDevice, "the user has no active device; enroll one, or use an offline code")
		}
		if err != nil {
			return err
		}
		if in.IdempotencyKey != "" {
			prior, digest, err := challengeByKey(ctx, tx, in.ApplicationID, in.IdempotencyKey)
			if err == nil {
				if !bytes.Equal(digest, in.RequestDigest) {
					return errs.E(challenge.IdempotencyMismatch, "this Idempotency-Key was used with another request")
				}
				c, replayed = prior, true
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		if locked {
			return errs.E(challenge.UserLocked, "the user's push sign-ins are locked; an admin can unlock them, and offline codes still work")
		}
		p, err := readPolicy(ctx, tx, in.TenantID, false)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id, push_provider FROM devices WHERE user_id = $1 AND state = 'active'`, userID)
		if err != nil {
			return err
		}
		type dev struct{ id, provider string }
		devs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dev, error) {
			var d dev
			return d, r.Scan(&d.id, &d.provider)
		})
		if err != nil {
			return err
		}
		if len(devs) == 0 {
			return errs.E(challenge.NoActiveDevice, "the user has no active device; enroll one, or use an offline code")
		}
		u, err := usage(ctx, tx, userID, p, blocked)
		if err != nil {
			return err
		}
		if reason, gerr := challenge.Guard(p, u, in.Now); gerr != nil {
			refusal = gerr
			return insertAudit(ctx, tx, in.TenantID, audit.Event{Type: auditChallengeRefused, Actor: in.By, UserID: userID,
				Data: jsonOf(map[string]any{"reason": reason, "application_id": in.ApplicationID})})
		}

		c = challenge.Challenge{ID: uuid.NewString(), TenantID: in.TenantID, ApplicationID: in.ApplicationID, UserID: userID,
			UserName: in.Request.User, State: challenge.StatePending, CreatedAt: in.Now, ExpiresAt: in.Now.Add(p.ChallengeTTL())}
		c.Context = challenge.Context{App: in.AppName, Message: in.Request.Message, IP: in.Request.IP,
			Location: in.Request.Location, Browser: in.Request.Browser, CreatedAt: in.Now.UTC().Format(challenge.TimeFormat)}
		if c.ContextDigest, err = c.Context.Digest(); err != nil {
			return err
		}
		if c.Nonce, err = challenge.NewNonce(); err != nil {
			return err
		}
		var number *int
		if challenge.NumberMatching(p.NumberMatching, in.AppMatching, in.Request.NumberMatching) {
			if c.Number, err = challenge.NewNumber(); err != nil {
				return err
			}
			number = &c.Number
		}
		ctxJSON, err := json.Marshal(c.Context)
		if err != nil {
			return err
		}
		var key *string
		var digest []byte
		if in.IdempotencyKey != "" {
			key, digest = &in.IdempotencyKey, in.RequestDigest
		}
		_, err = tx.Exec(ctx, `INSERT INTO challenges (id, tenant_id, application_id, user_id, created_at, expires_at,
				context, context_digest, nonce, number, idempotency_key, request_digest, created_by_instance)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			c.ID, c.TenantID, c.ApplicationID, c.UserID, c.CreatedAt, c.ExpiresAt, string(ctxJSON), c.ContextDigest,
			c.Nonce, number, key, digest, db.instance)
		if code, constraint := pgCode(err); code == uniqueViolation && constraint == "challenges_application_id_idempotency_key_key" {
			// The same key, used at the same instant for another user.
			return errs.E(challenge.IdempotencyMismatch, "this Idempotency-Key was used with another request")
		}
		if err != nil {
			return err
		}
		if p.PushEnabled {
			var ids []string
			for _, d := range devs {
				if d.provider != devices.ProviderNone {
					ids = append(ids, d.id)
				}
			}
			if err := db.queueDeliveries(ctx, tx, c, ids); err != nil {
				return err
			}
		}
		return insertAudit(ctx, tx, c.TenantID, audit.Event{Type: auditChallengeCreated, Actor: in.By, UserID: c.UserID,
			Data: jsonOf(map[string]any{"challenge_id": c.ID, "application_id": c.ApplicationID, "number_matching": number != nil,
				"expires_at": c.ExpiresAt.UTC()})})
	})
	if err != nil {
		return c, false, fmt.Errorf("create challenge: %w", err)
	}
	if refusal != nil {
		return c, false, refusal
	}
	return c, replayed, nil
}

// usage counts a user's recent challenges for the guard.
func usage(ctx context.Context, q querier, userID string, p policy.Policy, blocked *time.Time) (challenge.Usage, error) {
	u := challenge.Usage{BlockedUntil: blocked}
	var oldest, next *time.Time
	err := q.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE created_at > now() - make_interval(secs => $2)),
			min(created_at) FILTER (WHERE created_at > now() - make_interval(secs => $2)),
			count(*) FILTER (WHERE state = 'pending' AND expires_at > now()),
			min(expires_at) FILTER (WHERE state = 'pending' AND expires_at > now())
		FROM challenges WHERE user_id = $1 AND created_at > now() - make_interval(secs => greatest($2, 600))`,
		userID, p.ChallengeWindowSeconds).Scan(&u.InWindow, &oldest, &u.Pending, &next)
	if oldest != nil {
		u.OldestInWindow = *oldest
	}
	if next != nil {
		u.NextExpiry = *next
	}
	return u, err
}

func challengeByKey(ctx context.Context, q querier, appID, key string) (challenge.Challenge, []byte, error) {
	var c challenge.Challenge
	var digest []byte
	err := q.QueryRow(ctx, `SELECT `+challengeColumns+`, c.request_digest FROM challenges c
		JOIN users u ON u.id = c.user_id WHERE c.application_id = $1 AND c.idempotency_key = $2`, appID, key).
		Scan(append(challengeDest(&c), &digest)...)
	return c, digest, err
}

// queueDeliveries queues the push of a challenge to each device: a
// deliveries row and a deliver job each, in the challenge's transaction.
func (db *DB) queueDeliveries(ctx context.Context, tx pgx.Tx, c challenge.Challenge, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, provider)
		SELECT gen_random_uuid(), d.tenant_id, d.id, $2, 'challenge', d.push_provider FROM devices d
		WHERE d.id = ANY($1::uuid[]) RETURNING id`, deviceIDs, c.ID)
	if err != nil {
		return fmt.Errorf("queue pushes: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	return db.enqueueDeliveries(ctx, tx, ids)
}

func (db *DB) enqueueDeliveries(ctx context.Context, tx pgx.Tx, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if db.queue == nil {
		return errors.New("queue deliveries: no job queue configured")
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: queue.DeliverArgs{DeliveryID: id}}
	}
	_, err := db.queue.InsertManyTx(ctx, tx, params)
	return err
}

// Challenge returns a challenge within a tenant and, when appID is set, of
// that application only.
func (db *DB) Challenge(ctx context.Context, tenantID, appID, id string) (challenge.Challenge, error) {
	c, err := scanChallenge(db.pool.QueryRow(ctx, `SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
		WHERE c.id = $1 AND ($2 = '' OR c.tenant_id::text = $2) AND ($3 = '' OR c.application_id::text = $3)`, id, tenantID, appID))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, errs.NotFoundf("challenge not found")
	}
	if err != nil {
		return c, fmt.Errorf("read challenge: %w", err)
	}
	return c, nil
}

// WaitOnChallenge reads a challenge an instance is about to long-poll
// although it did not create it: while pending, it marks that a remote
// instance waits, so that its resolution is NOTIFYed. The caller watches
// before calling, so every order is safe: the marking UPDATE takes the row
// lock, so it either returns the row still pending (and any later
// resolution sees the mark) or finds it resolved or already marked, and
// then a fresh statement reads the current state.
func (db *DB) WaitOnChallenge(ctx context.Context, tenantID, appID, id string) (challenge.Challenge, error) {
	c, err := scanChallenge(db.pool.QueryRow(ctx, `UPDATE challenges c SET remote_waiters = true FROM users u
		WHERE c.id = $1 AND c.tenant_id::text = $2 AND c.application_id::text = $3 AND u.id = c.user_id
			AND c.state = 'pending' AND NOT c.remote_waiters
		RETURNING `+challengeColumns, id, tenantID, appID))
	if errors.Is(err, pgx.ErrNoRows) {
		return db.Challenge(ctx, tenantID, appID, id)
	}
	if err != nil {
		return c, fmt.Errorf("read challenge: %w", err)
	}
	return c, nil
}

// deviceUser is the user of the device $1 while it is active: statements
// queued after deviceAuthSQL read and write on the device's behalf through
// it, so nothing happens for a device that did not authenticate.
const deviceUser = `(SELECT user_id FROM devices WHERE id = $1::uuid AND state = 'active')`

// DeviceChallenges authenticates a device call and lists the pending,
// unexpired challenges of the device's user, newest first: one round trip,
// one transaction.
func (db *DB) DeviceChallenges(ctx context.Context, tok jose.Device) (devices.Device, []challenge.Challenge, error) {
	var d devices.Device
	var ok bool
	var cs []challenge.Challenge
	b := &pgx.Batch{}
	queueDeviceAuth(b, tok, &d, &ok)
	b.Queue(`SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
		WHERE c.user_id = `+deviceUser+` AND c.state = 'pending' AND c.expires_at > now()
		ORDER BY c.created_at DESC LIMIT 100`, tok.DeviceID).Query(func(rows pgx.Rows) error {
		var err error
		cs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Challenge, error) { return scanChallenge(r) })
		return err
	})
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return d, nil, deviceAuthError(err)
	}
	if !ok {
		return d, nil, db.refusedDevice(ctx, tok.DeviceID)
	}
	return d, cs, nil
}

// FetchChallenge authenticates a device call, returns a challenge of the
// device's user and records that this device fetched it (the first time),
// for the timeline: one round trip, one transaction.
func (db *DB) FetchChallenge(ctx context.Context, tok jose.Device, id string) (devices.Device, challenge.Challenge, error) {
	var d devices.Device
	var ok, found bool
	var c challenge.Challenge
	b := &pgx.Batch{}
	queueDeviceAuth(b, tok, &d, &ok)
	b.Queue(`WITH f AS (SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
			WHERE c.id = $2 AND c.user_id = `+deviceUser+`),
		r AS (INSERT INTO challenge_fetches (challenge_id, device_id, tenant_id) SELECT f.id, $1::uuid, f.tenant_id FROM f
			ON CONFLICT DO NOTHING)
		SELECT * FROM f`, tok.DeviceID, id).QueryRow(func(row pgx.Row) error {
		var err error
		c, err = scanChallenge(row)
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return d, c, deviceAuthError(err)
	}
	switch {
	case !ok:
		return d, c, db.refusedDevice(ctx, tok.DeviceID)
	case !found:
		return d, c, errs.NotFoundf("challenge not found")
	}
	return d, c, nil
}

// challengeDest lists the scan targets of challengeColumns (the context is
// decoded from its JSON text as it is scanned).
func challengeDest(c *challenge.Challenge) []any {
	return []any{&c.ID, &c.TenantID, &c.ApplicationID, &c.UserID, &c.UserName, &c.State, &c.Resolution, &c.Fraud,
		&c.CreatedAt, &c.ExpiresAt, &c.ResolvedAt, contextScanner{&c.Context}, &c.ContextDigest, &c.Nonce, &c.Number,
		&c.ResolvedByDevice, &c.UserVerified}
}

// contextScanner decodes a context's JSON text straight from a row.
type contextScanner struct{ c *challenge.Context }

func (s contextScanner) Scan(src any) error {
	switch v := src.(type) {
	case string:
		return json.Unmarshal([]byte(v), s.c)
	case []byte:
		return json.Unmarshal(v, s.c)
	}
	return fmt.Errorf("challenge context: unexpected %T", src)
}

// prefixed qualifies each column of a column list with a table alias.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// ExpireChallenges sweeps pending challenges past their time to expired,
// firing their webhooks.
func (db *DB) ExpireChallenges(ctx context.Context) (int, error) {
	n := 0
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `WITH x AS (
				UPDATE challenges SET state = 'expired', resolution = 'expired', resolved_at = expires_at
				WHERE id IN (SELECT id FROM challenges WHERE state = 'pending' AND expires_at <= now()
					ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
				RETURNING *)
			SELECT `+challengeColumns+` FROM x c JOIN users u ON u.id = c.user_id`)
		if err != nil {
			return err
		}
		expired, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Challenge, error) { return scanChallenge(r) })
		if err != nil {
			return err
		}
		// No NOTIFY: waiters stop at expires_at by themselves and then read
		// the challenge as expired.
		for _, c := range expired {
			if err := db.queueWebhook(ctx, tx, c); err != nil {
				return err
			}
			if err := insertAudit(ctx, tx, c.TenantID, audit.Event{Type: auditChallengeResolved,
				Actor: audit.Actor{Type: audit.ActorSystem, ID: "expiry"}, UserID: c.UserID,
				Data: jsonOf(map[string]any{"challenge_id": c.ID, "state": c.State, "resolution": c.Resolution,
					"application_id": c.ApplicationID})}); err != nil {
				return err
			}
		}
		n = len(expired)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire challenges: %w", err)
	}
	return n, nil
}

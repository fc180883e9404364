package postgres

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
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
	"github.com/pushmfa/pushmfa/internal/notify"
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

// DeviceChallenges lists the pending, unexpired challenges of a device's
// user, newest first.
func DeviceChallenges(ctx context.Context, q querier, d devices.Device) ([]challenge.Challenge, error) {
	rows, err := q.Query(ctx, `SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
		WHERE c.user_id = $1 AND c.state = 'pending' AND c.expires_at > now() ORDER BY c.created_at DESC LIMIT 100`, d.UserID)
	if err != nil {
		return nil, fmt.Errorf("list pending challenges: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Challenge, error) { return scanChallenge(r) })
}

// FetchChallenge returns a challenge of the device's user and records that
// this device fetched it (the first time), for the timeline.
func FetchChallenge(ctx context.Context, q querier, d devices.Device, id string) (challenge.Challenge, error) {
	c, err := scanChallenge(q.QueryRow(ctx, `SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
		WHERE c.id = $1 AND c.user_id = $2`, id, d.UserID))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, errs.NotFoundf("challenge not found")
	}
	if err != nil {
		return c, fmt.Errorf("read challenge: %w", err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO challenge_fetches (challenge_id, device_id, tenant_id) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, c.ID, d.ID, c.TenantID); err != nil {
		return c, fmt.Errorf("record fetch: %w", err)
	}
	return c, nil
}

// Respond resolves a challenge with a device's verified answer, in the
// device call's transaction. Every check must hold (the challenge is the
// device's user's, the nonce and context digest are the challenge's, user
// verification happened when the policy demands it, a number accompanies an
// approval that needs one, the jti is new) or the answer is refused and the
// challenge stays pending. The transition is one conditional UPDATE, so of
// concurrent answers exactly one wins; the others get challenge_resolved.
// A wrong number is a deny (number_mismatch), never a retry.
func (db *DB) Respond(ctx context.Context, tx pgx.Tx, d devices.Device, r jose.Response) (challenge.Challenge, error) {
	var c challenge.Challenge
	var p policy.Policy
	err := tx.QueryRow(ctx, `SELECT `+challengeColumns+`, `+prefixed("p.", policyColumns)+`
		FROM challenges c JOIN users u ON u.id = c.user_id JOIN policies p ON p.tenant_id = c.tenant_id
		WHERE c.id = $1 AND c.user_id = $2`, r.Claims.Challenge, d.UserID).Scan(append(challengeDest(&c), policyFields(&p)...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, errs.NotFoundf("challenge not found")
	}
	if err != nil {
		return c, fmt.Errorf("read challenge: %w", err)
	}
	if err := c.Answerable(time.Now()); err != nil {
		return c, err
	}
	bad := func(format string, args ...any) (challenge.Challenge, error) {
		return c, errs.E(challenge.InvalidResponse, format, args...)
	}
	nonce, err := base64.RawURLEncoding.DecodeString(r.Claims.Nonce)
	if err != nil || subtle.ConstantTimeCompare(nonce, c.Nonce) != 1 {
		return bad("nonce is not this challenge's")
	}
	if r.Claims.Context != challenge.EncodeDigest(c.ContextDigest) {
		return bad("ctx does not match the challenge's context: the answer must be bound to what the user saw")
	}
	if p.RequireUserVerification && !*r.Claims.UV {
		return bad("the policy requires user verification (uv: true)")
	}
	if r.Claims.Decision == challenge.DecisionApprove && c.Number != 0 && !r.NumberSet {
		return bad("this challenge needs the number the user picked")
	}
	if err := useJTI(ctx, tx, d.ID, r.Claims.ID, r.JTIExpires); err != nil {
		return bad("this response was already sent (jti)")
	}

	state, resolution := challenge.StateDenied, r.Claims.Decision
	switch {
	case r.Claims.Decision == challenge.DecisionApprove && c.Number != 0 && r.Number != c.Number:
		resolution = challenge.ResolutionNumberMismatch
	case r.Claims.Decision == challenge.DecisionApprove:
		state = challenge.StateApproved
	}
	fraud := resolution == challenge.ResolutionFraud
	var w waiters
	err = tx.QueryRow(ctx, `UPDATE challenges SET state = $2, resolution = $3, fraud = $4, resolved_at = now(),
			resolved_by_device = $5, user_verified = $6
		WHERE id = $1 AND state = 'pending' AND expires_at > now()
		RETURNING resolved_at, coalesce(created_by_instance::text, ''), remote_waiters`,
		c.ID, state, resolution, fraud, d.ID, *r.Claims.UV).Scan(&c.ResolvedAt, &w.creator, &w.remote)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another answer (or the expiry, or a cancel) won.
		return c, resolvedRefusal(ctx, tx, c.ID)
	}
	if err != nil {
		return c, fmt.Errorf("resolve challenge: %w", err)
	}
	c.State, c.Resolution, c.Fraud, c.ResolvedByDevice, c.UserVerified = state, resolution, fraud, d.ID, r.Claims.UV
	if err := guardAfterAnswer(ctx, tx, c, p); err != nil {
		return c, err
	}
	actor := audit.Actor{Type: audit.ActorDevice, ID: d.ID}
	if err := db.afterResolution(ctx, tx, c, w, actor, d.ID); err != nil {
		return c, err
	}
	return c, nil
}

// waiters says who may be long-polling a challenge besides this instance.
type waiters struct {
	creator string
	remote  bool
}

// Change is a resolved challenge's broadcast form.
func Change(c challenge.Challenge) notify.Change {
	return notify.Change{ID: c.ID, State: c.State, Resolution: c.Resolution, Fraud: c.Fraud, ResolvedAt: *c.ResolvedAt}
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

// resolvedRefusal says why a pending-only update found nothing to update.
func resolvedRefusal(ctx context.Context, q querier, id string) error {
	var state string
	var expired bool
	if err := q.QueryRow(ctx, `SELECT state, expires_at <= now() FROM challenges WHERE id = $1`, id).Scan(&state, &expired); err != nil {
		return err
	}
	if state == challenge.StateExpired || (state == challenge.StatePending && expired) {
		return errs.E(challenge.Expired, "the challenge expired")
	}
	return errs.E(challenge.Resolved, "the challenge is already %s", state)
}

// guardAfterAnswer updates the push-bombing guard's state of the user: an
// approval resets the denial count, a denial raises it and may start a
// backoff, and a fraud report may lock the user's pushes.
func guardAfterAnswer(ctx context.Context, tx pgx.Tx, c challenge.Challenge, p policy.Policy) error {
	if c.State == challenge.StateApproved {
		_, err := tx.Exec(ctx, `UPDATE users SET consecutive_denials = 0, push_blocked_until = NULL WHERE id = $1`, c.UserID)
		return err
	}
	var denials, frauds int
	var lockedNow bool
	err := tx.QueryRow(ctx, `UPDATE users SET consecutive_denials = consecutive_denials + 1,
			fraud_reports = fraud_reports + CASE WHEN $2 THEN 1 ELSE 0 END
		WHERE id = $1 RETURNING consecutive_denials, fraud_reports, locked_at IS NULL`, c.UserID, c.Fraud).Scan(&denials, &frauds, &lockedNow)
	if err != nil {
		return err
	}
	if wait := challenge.DenialBackoff(p, denials); wait > 0 {
		if _, err := tx.Exec(ctx, `UPDATE users SET push_blocked_until = now() + make_interval(secs => $2) WHERE id = $1`,
			c.UserID, wait.Seconds()); err != nil {
			return err
		}
	}
	if !c.Fraud {
		return nil
	}
	if err := insertAudit(ctx, tx, c.TenantID, audit.Event{Type: auditFraudReported,
		Actor: audit.Actor{Type: audit.ActorDevice, ID: c.ResolvedByDevice}, UserID: c.UserID,
		Data: jsonOf(map[string]any{"challenge_id": c.ID, "application_id": c.ApplicationID, "ip": c.Context.IP,
			"reports": frauds})}); err != nil {
		return err
	}
	if frauds >= p.FraudLockoutAfter && lockedNow {
		if _, err := tx.Exec(ctx, `UPDATE users SET locked_at = now(), lock_reason = 'fraud', locked_by = 'system:fraud_reports'
			WHERE id = $1 AND locked_at IS NULL`, c.UserID); err != nil {
			return err
		}
		return insertAudit(ctx, tx, c.TenantID, audit.Event{Type: audit.UserLocked, Actor: audit.Actor{Type: audit.ActorSystem, ID: "fraud_reports"},
			UserID: c.UserID, Data: jsonOf(map[string]any{"reason": "fraud", "reports": frauds})})
	}
	return nil
}

// afterResolution does what every resolution owes, in its transaction: a
// NOTIFY when another instance may be long-polling (this instance wakes its
// own waiters itself, after commit: each NOTIFY costs every listening
// instance a transaction), the webhook, the "it is over" notification to
// the user's other devices, and the audit event.
func (db *DB) afterResolution(ctx context.Context, tx pgx.Tx, c challenge.Challenge, w waiters, by audit.Actor, exceptDevice string) error {
	if w.remote || w.creator != db.instance {
		if err := notifyChange(ctx, tx, Change(c)); err != nil {
			return err
		}
	}
	if err := db.queueWebhook(ctx, tx, c); err != nil {
		return err
	}
	if exceptDevice == "" {
		exceptDevice = uuid.Nil.String()
	}
	if err := db.notify(ctx, tx, c.TenantID, c.UserID, exceptDevice, "challenge_resolved"); err != nil {
		return err
	}
	return insertAudit(ctx, tx, c.TenantID, audit.Event{Type: auditChallengeResolved, Actor: by, UserID: c.UserID,
		Data: jsonOf(map[string]any{"challenge_id": c.ID, "state": c.State, "resolution": c.Resolution,
			"application_id": c.ApplicationID})})
}

// Cancel moves a pending challenge of the application to cancelled.
func (db *DB) Cancel(ctx context.Context, tenantID, appID, id string, by audit.Actor) (challenge.Challenge, error) {
	var c challenge.Challenge
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanChallenge(tx.QueryRow(ctx, `SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
			WHERE c.id = $1 AND c.tenant_id = $2 AND c.application_id = $3`, id, tenantID, appID))
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.NotFoundf("challenge not found")
		}
		if err != nil {
			return err
		}
		var w waiters
		err = tx.QueryRow(ctx, `UPDATE challenges SET state = 'cancelled', resolution = 'cancelled', resolved_at = now()
			WHERE id = $1 AND state = 'pending' AND expires_at > now()
			RETURNING resolved_at, coalesce(created_by_instance::text, ''), remote_waiters`, id).Scan(&c.ResolvedAt, &w.creator, &w.remote)
		if errors.Is(err, pgx.ErrNoRows) {
			return resolvedRefusal(ctx, tx, id)
		}
		if err != nil {
			return err
		}
		c.State, c.Resolution = challenge.StateCancelled, challenge.ResolutionCancelled
		return db.afterResolution(ctx, tx, c, w, by, "")
	})
	if err != nil {
		return c, fmt.Errorf("cancel challenge: %w", err)
	}
	return c, nil
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

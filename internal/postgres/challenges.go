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
// idempotency_mismatch. Two round trips: BEGIN, the user's lock and what the
// guard reads travel together; the challenge's rows, its push jobs and
// COMMIT follow.
func (db *DB) CreateChallenge(ctx context.Context, in NewChallenge) (c challenge.Challenge, replayed bool, err error) {
	var refusal error
	err = db.piped(ctx, func(p *pipe) error {
		refusal, replayed = nil, false
		var r creationRead
		r.queue(p, in)
		if err := p.Send(ctx); err != nil {
			return err
		}
		// A key already used answers first, whatever the user: another
		// body is a mismatch even when it names a user who does not exist.
		if r.prior != nil {
			if !bytes.Equal(r.priorDigest, in.RequestDigest) {
				return errs.E(challenge.IdempotencyMismatch, "this Idempotency-Key was used with another request")
			}
			c, replayed = *r.prior, true
			return nil
		}
		if !r.found {
			return errs.E(challenge.NoActiveDevice, "the user has no active device; enroll one, or use an offline code")
		}
		if r.locked {
			return errs.E(challenge.UserLocked, "the user's push sign-ins are locked; an admin can unlock them, and offline codes still work")
		}
		if r.active == 0 {
			return errs.E(challenge.NoActiveDevice, "the user has no active device; enroll one, or use an offline code")
		}
		if reason, gerr := challenge.Guard(r.policy, r.usage, in.Now); gerr != nil {
			refusal = gerr
			if err := insertAudit(ctx, p.tx, in.TenantID, audit.Event{Type: auditChallengeRefused, Actor: in.By,
				UserID: r.userID, Data: jsonOf(map[string]any{"reason": reason, "application_id": in.ApplicationID})}); err != nil {
				return err
			}
			return p.Commit(ctx)
		}
		var err error
		if c, err = newChallenge(in, r.userID, r.policy); err != nil {
			return err
		}
		w := &challengeWrite{challenge: c}
		if r.policy.PushEnabled {
			w.devices = r.push
		}
		w.deliveries = make([]string, len(w.devices))
		for i := range w.devices {
			w.deliveries[i] = uuid.NewString()
		}
		if err := db.queueInsertChallenge(p, in, w); err != nil {
			return err
		}
		switch {
		case len(w.deliveries) == 0:
		case db.dispatcher != nil:
			p.afterCommit(func() {
				hs, unopened := db.handoffs(w)
				db.dispatcher.Dispatch(hs)
				db.handOver(unopened)
			})
		default:
			wake := wakeups(deliverJobs(w.deliveries))
			p.afterCommit(func() { db.waker.wake(wake) })
		}
		return p.Commit(ctx)
	})
	if code, constraint := pgCode(err); code == uniqueViolation && constraint == "challenges_application_id_idempotency_key_key" {
		// The same key, used at the same instant for another user.
		return c, false, errs.E(challenge.IdempotencyMismatch, "this Idempotency-Key was used with another request")
	}
	if err != nil {
		return c, false, fmt.Errorf("create challenge: %w", err)
	}
	if refusal != nil {
		return c, false, refusal
	}
	return c, replayed, nil
}

// creationRead is what creating a challenge reads first: the user (locked),
// the challenge an idempotency key already made, the tenant's policy, the
// user's devices and the guard's counts.
type creationRead struct {
	found, locked bool
	userID        string
	prior         *challenge.Challenge
	priorDigest   []byte
	policy        policy.Policy
	active        int
	push          []pushDevice // active devices with a push provider
	usage         challenge.Usage
}

func (r *creationRead) queue(p *pipe, in NewChallenge) {
	p.Queue(`SELECT id, locked_at IS NOT NULL, push_blocked_until FROM users WHERE tenant_id = $1 AND name = $2 FOR UPDATE`,
		in.TenantID, in.Request.User).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&r.userID, &r.locked, &r.usage.BlockedUntil)
		r.found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if in.IdempotencyKey != "" {
		p.Queue(`SELECT `+challengeColumns+`, c.request_digest FROM challenges c JOIN users u ON u.id = c.user_id
			WHERE c.application_id = $1 AND c.idempotency_key = $2`, in.ApplicationID, in.IdempotencyKey).
			QueryRow(func(row pgx.Row) error {
				var c challenge.Challenge
				err := row.Scan(append(challengeDest(&c), &r.priorDigest)...)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				r.prior = &c
				return err
			})
	}
	// After the lock, in a statement of its own: its snapshot then sees
	// every challenge committed before the lock was granted.
	p.Queue(`WITH u AS (SELECT id FROM users WHERE tenant_id = $1 AND name = $2)
		SELECT `+prefixed("p.", policyColumns)+`,
			(SELECT count(*) FROM devices d WHERE d.user_id = (SELECT id FROM u) AND d.state = 'active'),
			pd.ids, pd.providers, pd.tokens, pd.keys,
			s.in_window, s.oldest, s.pending, s.next_expiry
		FROM policies p, LATERAL (SELECT coalesce(array_agg(d.id::text ORDER BY d.id), '{}') AS ids,
				coalesce(array_agg(d.push_provider ORDER BY d.id), '{}') AS providers,
				coalesce(array_agg(d.push_token ORDER BY d.id), '{}') AS tokens,
				coalesce(array_agg(coalesce(d.push_token_key_id, '') ORDER BY d.id), '{}') AS keys
			FROM devices d WHERE d.user_id = (SELECT id FROM u) AND d.state = 'active' AND d.push_provider <> 'none') pd,
			LATERAL (SELECT
				count(*) FILTER (WHERE created_at > now() - make_interval(secs => p.challenge_window_seconds)) AS in_window,
				min(created_at) FILTER (WHERE created_at > now() - make_interval(secs => p.challenge_window_seconds)) AS oldest,
				count(*) FILTER (WHERE state = 'pending' AND expires_at > now()) AS pending,
				min(expires_at) FILTER (WHERE state = 'pending' AND expires_at > now()) AS next_expiry
			FROM challenges WHERE user_id = (SELECT id FROM u)
				AND created_at > now() - make_interval(secs => greatest(p.challenge_window_seconds, 600))) s
		WHERE p.tenant_id = $1`, in.TenantID, in.Request.User).QueryRow(func(row pgx.Row) error {
		var oldest, next *time.Time
		var ids, providers, keys []string
		var tokens [][]byte
		err := row.Scan(append(policyFields(&r.policy), &r.active, &ids, &providers, &tokens, &keys, &r.usage.InWindow, &oldest,
			&r.usage.Pending, &next)...)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.NotFoundf("tenant not found")
		}
		for i := range ids {
			r.push = append(r.push, pushDevice{id: ids[i], provider: providers[i], token: tokens[i], keyID: keys[i]})
		}
		if oldest != nil {
			r.usage.OldestInWindow = *oldest
		}
		if next != nil {
			r.usage.NextExpiry = *next
		}
		return err
	})
}

// newChallenge draws a new challenge's id, nonce and number.
func newChallenge(in NewChallenge, userID string, p policy.Policy) (challenge.Challenge, error) {
	c := challenge.Challenge{ID: uuid.NewString(), TenantID: in.TenantID, ApplicationID: in.ApplicationID, UserID: userID,
		UserName: in.Request.User, State: challenge.StatePending, CreatedAt: in.Now, ExpiresAt: in.Now.Add(p.ChallengeTTL())}
	c.Context = challenge.Context{App: in.AppName, Message: in.Request.Message, IP: in.Request.IP,
		Location: in.Request.Location, Browser: in.Request.Browser, CreatedAt: in.Now.UTC().Format(challenge.TimeFormat)}
	var err error
	if c.ContextDigest, err = c.Context.Digest(); err != nil {
		return c, err
	}
	if c.Nonce, err = challenge.NewNonce(); err != nil {
		return c, err
	}
	if challenge.NumberMatching(p.NumberMatching, in.AppMatching, in.Request.NumberMatching) {
		if c.Number, err = challenge.NewNumber(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// pushDevice is an active device a challenge is pushed to, with its token
// as stored.
type pushDevice struct {
	id, provider string
	token        []byte
	keyID        string
}

// challengeWrite is a new challenge's rows: the challenge, the devices it
// is pushed to and their deliveries' ids, and what the statement returns,
// each delivery's River job and when the delivery was written.
type challengeWrite struct {
	challenge  challenge.Challenge
	devices    []pushDevice
	deliveries []string
	jobs       []int64
	queued     []time.Time
}

// queueInsertChallenge queues, as one statement, the challenge's row, a
// deliveries row for each push device (with the given ids), each
// delivery's River job, and the audit event. With a dispatcher, the jobs
// fall due only after its grace (handoff.go), and the statement returns
// their ids.
//
// The jobs are written by SQL, as rows of River's table, not through
// River's client: that would be a round trip of its own in the middle of
// the transaction, and about a seventh of the server's CPU in a burst. A
// job row is River's documented contract (its Python and Ruby clients
// insert by SQL alike), and TestChallengeJobsAreRiverRows holds these rows
// to those River's own insert writes.
func (db *DB) queueInsertChallenge(p *pipe, in NewChallenge, w *challengeWrite) error {
	c := w.challenge
	ctxJSON, err := json.Marshal(c.Context)
	if err != nil {
		return err
	}
	var number *int
	if c.Number != 0 {
		number = &c.Number
	}
	var key *string
	var digest []byte
	if in.IdempotencyKey != "" {
		key, digest = &in.IdempotencyKey, in.RequestDigest
	}
	devs := make([]string, len(w.devices))
	for i, d := range w.devices {
		devs[i] = d.id
	}
	var grace time.Duration
	if db.dispatcher != nil {
		grace = db.grace
	}
	// PostgreSQL would plan this statement afresh at every call: its
	// generic plan, reckoning ten devices for the unnest rather than the
	// call's two, always looks dearer than a plan for the call. Planning
	// it took a sixth of PostgreSQL's CPU in a burst; the generic plan is
	// the same plan, by keys.
	p.Queue(`SET LOCAL plan_cache_mode = force_generic_plan`)
	p.Queue(`WITH ch AS (
			INSERT INTO challenges (id, tenant_id, application_id, user_id, created_at, expires_at,
				context, context_digest, nonce, number, idempotency_key, request_digest, created_by_instance)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id, tenant_id, user_id
		), dl AS (
			INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, provider, created_at)
			SELECT x.id, d.tenant_id, d.id, ch.id, 'challenge', d.push_provider, clock_timestamp()
			FROM ch, unnest($14::uuid[], $15::uuid[]) AS x(id, device) JOIN devices d ON d.id = x.device
			RETURNING id, created_at
		), jobs AS (
			INSERT INTO river_job (args, kind, queue, max_attempts, scheduled_at)
			SELECT jsonb_build_object('delivery_id', x.id::text), $20::text, $21::text, $22::smallint,
				now() + make_interval(secs => $23)
			FROM dl AS x
			RETURNING id, (args->>'delivery_id')::uuid AS delivery
		), au AS (
			INSERT INTO audit_events (tenant_id, type, actor_type, actor_id, user_id, data)
			SELECT ch.tenant_id, $16, $17, $18, ch.user_id, $19::jsonb FROM ch
		)
		SELECT jobs.id, dl.id::text, dl.created_at FROM jobs JOIN dl ON dl.id = jobs.delivery`,
		c.ID, c.TenantID, c.ApplicationID, c.UserID, c.CreatedAt, c.ExpiresAt, string(ctxJSON), c.ContextDigest,
		c.Nonce, number, key, digest, db.instance, w.deliveries, devs,
		auditChallengeCreated, in.By.Type, in.By.ID, string(jsonOf(map[string]any{"challenge_id": c.ID,
			"application_id": c.ApplicationID, "number_matching": number != nil, "expires_at": c.ExpiresAt.UTC()})),
		deliverJob.Kind(), deliverOpts.Queue, deliverOpts.MaxAttempts, grace.Seconds()).
		Query(func(rows pgx.Rows) error {
			at := make(map[string]int, len(w.deliveries))
			for i, id := range w.deliveries {
				at[id] = i
			}
			w.jobs, w.queued = make([]int64, len(w.deliveries)), make([]time.Time, len(w.deliveries))
			var job int64
			var delivery string
			var queued time.Time
			_, err := pgx.ForEachRow(rows, []any{&job, &delivery, &queued}, func() error {
				if i, ok := at[delivery]; ok {
					w.jobs[i], w.queued[i] = job, queued
				}
				return nil
			})
			return err
		})
	return nil
}

// The deliver job a challenge's statement writes for each delivery.
var (
	deliverJob  queue.DeliverArgs
	deliverOpts = deliverJob.InsertOpts()
)

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
// firing their webhooks and telling the devices their pushes reached that
// they are over.
func (db *DB) ExpireChallenges(ctx context.Context) (int, error) {
	n := 0
	err := db.Transact(ctx, func(tx pgx.Tx) (err error) {
		n, err = db.expireChallenges(ctx, tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("expire challenges: %w", err)
	}
	return n, nil
}

// Sweep is the periodic sweep in one transaction: ExpireChallenges, then
// RescuePushes with stuckAfter. It returns how many challenges expired and
// how many pushes were queued again.
func (db *DB) Sweep(ctx context.Context, stuckAfter time.Duration) (expired, rescued int, err error) {
	err = db.Transact(ctx, func(tx pgx.Tx) (err error) {
		if expired, err = db.expireChallenges(ctx, tx); err != nil {
			return fmt.Errorf("expire challenges: %w", err)
		}
		if rescued, err = db.rescuePushes(ctx, tx, stuckAfter); err != nil {
			return fmt.Errorf("rescue pushes: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return expired, rescued, nil
}

func (db *DB) expireChallenges(ctx context.Context, tx pgx.Tx) (int, error) {
	rows, err := tx.Query(ctx, `WITH x AS (
			UPDATE challenges SET state = 'expired', resolution = 'expired', resolved_at = expires_at
			WHERE id IN (SELECT id FROM challenges WHERE state = 'pending' AND expires_at <= now()
				ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
			RETURNING *)
		SELECT `+challengeColumns+` FROM x c JOIN users u ON u.id = c.user_id`)
	if err != nil {
		return 0, err
	}
	expired, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Challenge, error) { return scanChallenge(r) })
	if err != nil {
		return 0, err
	}
	// No NOTIFY to long-polls: they stop at expires_at by themselves and
	// then read the challenge as expired.
	var hooks []river.InsertManyParams
	for _, c := range expired {
		job, err := db.webhookJob(ctx, tx, c)
		if err != nil {
			return 0, err
		}
		if job != nil {
			hooks = append(hooks, *job)
		}
		if err := insertAudit(ctx, tx, c.TenantID, audit.Event{Type: auditChallengeResolved,
			Actor: audit.Actor{Type: audit.ActorSystem, ID: "expiry"}, UserID: c.UserID,
			Data: jsonOf(map[string]any{"challenge_id": c.ID, "state": c.State, "resolution": c.Resolution,
				"application_id": c.ApplicationID})}); err != nil {
			return 0, err
		}
	}
	// The devices its push reached still show it: tell them it is over,
	// as an answer or a cancel does.
	ids := make([]string, len(expired))
	for i, c := range expired {
		ids[i] = c.ID
	}
	rows, err = tx.Query(ctx, `INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, notification, provider)
		SELECT gen_random_uuid(), d.tenant_id, d.id, x.challenge_id, 'notification', 'challenge_resolved', d.push_provider
		FROM deliveries x JOIN devices d ON d.id = x.device_id
		WHERE x.challenge_id = ANY($1::uuid[]) AND x.kind = 'challenge' AND x.outcome = 'sent'
			AND d.state = 'active' AND d.push_provider <> 'none'
		RETURNING id::text`, ids)
	if err != nil {
		return 0, fmt.Errorf("tell devices: %w", err)
	}
	told, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("tell devices: %w", err)
	}
	if jobs := append(deliverJobs(told), hooks...); len(jobs) > 0 {
		if _, err := db.enqueue(ctx, tx, jobs); err != nil {
			return 0, fmt.Errorf("queue webhooks and notifications: %w", err)
		}
	}
	return len(expired), nil
}

// ChallengeTimeline reads a challenge (within a tenant, "" = any) with the
// records of its pushes and of the devices that fetched it, in one round
// trip.
func (db *DB) ChallengeTimeline(ctx context.Context, tenantID, id string) (challenge.Challenge, []challenge.Push, []challenge.Fetch, error) {
	var c challenge.Challenge
	var found bool
	var pushes []challenge.Push
	var fetches []challenge.Fetch
	b := &pgx.Batch{}
	b.Queue(`SELECT `+challengeColumns+` FROM challenges c JOIN users u ON u.id = c.user_id
		WHERE c.id = $1 AND ($2 = '' OR c.tenant_id::text = $2)`, id, tenantID).QueryRow(func(row pgx.Row) error {
		var err error
		c, err = scanChallenge(row)
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	b.Queue(`SELECT x.id::text, x.device_id::text, coalesce(x.notification, x.kind), x.provider, x.outcome,
			coalesce(x.provider_message_id, ''), coalesce(x.reason, ''), x.attempts, x.created_at, x.updated_at, x.sent_at
		FROM deliveries x JOIN challenges c ON c.id = x.challenge_id
		WHERE x.challenge_id = $1 AND ($2 = '' OR c.tenant_id::text = $2) ORDER BY x.created_at, x.id`, id, tenantID).
		Query(func(rows pgx.Rows) error {
			var err error
			pushes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Push, error) {
				var p challenge.Push
				return p, r.Scan(&p.DeliveryID, &p.DeviceID, &p.What, &p.Provider, &p.Outcome, &p.ProviderMessageID,
					&p.Reason, &p.Attempts, &p.Queued, &p.Updated, &p.Sent)
			})
			return err
		})
	b.Queue(`SELECT f.device_id::text, f.fetched_at FROM challenge_fetches f
		WHERE f.challenge_id = $1 AND ($2 = '' OR f.tenant_id::text = $2) ORDER BY f.fetched_at`, id, tenantID).
		Query(func(rows pgx.Rows) error {
			var err error
			fetches, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (challenge.Fetch, error) {
				var f challenge.Fetch
				return f, r.Scan(&f.DeviceID, &f.At)
			})
			return err
		})
	if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
		return c, nil, nil, fmt.Errorf("read challenge timeline: %w", err)
	}
	if !found {
		return c, nil, nil, errs.NotFoundf("challenge not found")
	}
	return c, pushes, fetches, nil
}

package postgres

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

const deviceColumns = `id, tenant_id, user_id, name, platform, push_provider, coalesce(app_version, ''),
	coalesce(os_version, ''), state, created_at, last_seen_at, revoked_at, coalesce(revoked_by, ''),
	coalesce(revoke_reason, ''), totp_secret IS NOT NULL, push_token_invalid_at IS NOT NULL`

func scanDevice(r pgx.Row) (devices.Device, error) {
	var d devices.Device
	err := r.Scan(&d.ID, &d.TenantID, &d.UserID, &d.Name, &d.Platform, &d.PushProvider, &d.AppVersion,
		&d.OSVersion, &d.State, &d.CreatedAt, &d.LastSeenAt, &d.RevokedAt, &d.RevokedBy, &d.RevokeReason, &d.HasTOTP,
		&d.PushTokenInvalid)
	return d, err
}

func deviceByID(ctx context.Context, q querier, tenantID, id string) (devices.Device, error) {
	d, err := scanDevice(q.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices
		WHERE id = $1 AND ($2 = '' OR tenant_id::text = $2)`, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, errs.NotFoundf("device not found")
	}
	return d, err
}

// Device returns a device within a tenant ("" = any).
func (db *DB) Device(ctx context.Context, tenantID, id string) (devices.Device, error) {
	d, err := deviceByID(ctx, db.pool, tenantID, id)
	if err != nil {
		return d, fmt.Errorf("read device: %w", err)
	}
	return d, nil
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

// DeviceKey is what verifying a device's tokens needs. It never changes for
// a device id, so callers may cache it.
type DeviceKey struct {
	DeviceID string
	TenantID string
	UserID   string
	Key      *ecdsa.PublicKey
}

// DeviceKey returns a device's registered public key (of any state).
func (db *DB) DeviceKey(ctx context.Context, id string) (DeviceKey, error) {
	k := DeviceKey{DeviceID: id}
	var raw []byte
	err := db.pool.QueryRow(ctx, `SELECT tenant_id, user_id, public_key FROM devices WHERE id = $1`, id).
		Scan(&k.TenantID, &k.UserID, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, errs.ErrUnauthorized
	}
	if err != nil {
		return k, fmt.Errorf("read device key: %w", err)
	}
	if k.Key, err = jose.ParseUncompressed(raw); err != nil {
		return k, fmt.Errorf("device %s has a bad stored key: %w", id, err)
	}
	return k, nil
}

// deviceAuthSQL completes a device call's authentication inside the call's
// transaction, in one statement: it records the token's jti with a plain
// INSERT, so a replay (on this or any other server instance) fails with a
// unique violation, and with it everything queued after it; and it notes
// the active device's last use and versions and returns its row. The UPDATE
// locks the row until the transaction ends, so a revocation either commits
// before (the UPDATE, re-checking the row, finds it revoked and returns
// nothing) or waits until the call is done. Statements queued after it
// that write on the device's behalf check that the device is active: after
// this statement, that cannot change before the transaction ends.
const deviceAuthSQL = `WITH j AS (INSERT INTO used_jtis (issuer, jti, expires_at) VALUES ($1, $2, $3) RETURNING 1)
	UPDATE devices SET last_seen_at = now(),
		app_version = coalesce(nullif($4, ''), app_version), os_version = coalesce(nullif($5, ''), os_version)
	WHERE id = $1::uuid AND state = 'active' AND EXISTS (SELECT 1 FROM j) RETURNING ` + deviceColumns

// queueDeviceAuth queues the authentication of tok on b. After the batch,
// *ok says whether the device is active (d then holds it); a replay fails
// the batch (see deviceAuthError).
func queueDeviceAuth(b *pgx.Batch, tok jose.Device, d *devices.Device, ok *bool) {
	b.Queue(deviceAuthSQL, tok.DeviceID, tok.Claims.ID, tok.JTIExpires, tok.Claims.AppVersion, tok.Claims.OSVersion).
		QueryRow(func(row pgx.Row) error {
			var err error
			*d, err = scanDevice(row)
			*ok = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		})
}

// deviceAuthError reads the failure of a batch that began with a device's
// authentication: a taken jti is a replay.
func deviceAuthError(err error) error {
	if code, constraint := pgCode(err); code == uniqueViolation && constraint == "used_jtis_pkey" {
		return errs.ErrUnauthorized
	}
	return fmt.Errorf("device call: %w", err)
}

// refusedDevice says why a device did not authenticate although its token
// was fresh: unknown, or revoked (possibly by a transaction that committed
// while the authentication waited for the row).
func (db *DB) refusedDevice(ctx context.Context, id string) error {
	var state string
	err := db.pool.QueryRow(ctx, `SELECT state FROM devices WHERE id = $1::uuid`, id).Scan(&state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errs.ErrUnauthorized
	case err != nil:
		return fmt.Errorf("device call: %w", err)
	case state == devices.StateRevoked:
		return errs.E(errs.DeviceRevoked, "this device was deregistered; enroll it again")
	}
	return errs.ErrUnauthorized
}

// truncate cuts s to at most n bytes on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// DeviceCall runs fn in one transaction after authenticating the device's
// token in it, so a device call costs one transaction: BEGIN, the
// authentication and a savepoint travel together, and COMMIT after fn. fn
// runs under the savepoint: when it fails, its work is undone but the
// authentication is still committed, so the token's jti is spent either way
// and a token seen on a failed call cannot be replayed with another body.
// It returns errs.ErrUnauthorized for a replay and device_revoked for a
// revoked device.
func (db *DB) DeviceCall(ctx context.Context, tok jose.Device, fn func(tx pgx.Tx, d devices.Device) error) error {
	p, err := db.openPipe(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	var d devices.Device
	var ok bool
	queueDeviceAuth(p.batch, tok, &d, &ok)
	p.Queue("savepoint device_call")
	if err := p.Send(ctx); err != nil {
		return deviceAuthError(err)
	}
	if !ok {
		p.Close()
		return db.refusedDevice(ctx, tok.DeviceID)
	}
	callErr := fn(p.tx, d)
	if callErr != nil {
		p.Queue("rollback to savepoint device_call")
	}
	if err := p.Commit(ctx); err != nil {
		return fmt.Errorf("device call: %w", err)
	}
	return callErr
}

// AuditSignatureFailure records a device token that named a device but whose
// signature did not verify: someone holds a device id without its key.
func (db *DB) AuditSignatureFailure(ctx context.Context, k DeviceKey, reason string) {
	if err := insertAudit(ctx, db.pool, k.TenantID, audit.Event{Type: auditSignatureFailed,
		Actor: audit.Actor{Type: audit.ActorDevice, ID: k.DeviceID}, UserID: k.UserID,
		Data: jsonOf(map[string]any{"device_id": k.DeviceID, "reason": reason})}); err != nil {
		db.logger.Warn("audit signature failure", "device_id", k.DeviceID, "error", err)
	}
}

// SetPushToken replaces a device's push provider and token (sealed).
func (db *DB) SetPushToken(ctx context.Context, tx pgx.Tx, d devices.Device, provider, token string) error {
	var box *seal.Box
	if token != "" {
		b, err := db.keys.Seal([]byte(token), seal.Place{Table: "devices", Column: "push_token", Row: d.ID})
		if err != nil {
			return err
		}
		box = &b
	}
	if _, err := tx.Exec(ctx, `UPDATE devices SET push_provider = $2, push_token = $3, push_token_key_id = $4,
		push_token_invalid_at = NULL WHERE id = $1`, d.ID, provider, boxData(box), boxKey(box)); err != nil {
		return fmt.Errorf("set push token: %w", err)
	}
	return insertAudit(ctx, tx, d.TenantID, audit.Event{Type: auditDevicePushToken,
		Actor: audit.Actor{Type: audit.ActorDevice, ID: d.ID}, UserID: d.UserID,
		Data: jsonOf(map[string]any{"device_id": d.ID, "push_provider": provider})})
}

// Revocation says who revokes a device and why.
type Revocation struct {
	TenantID string // "" = any tenant (a global admin)
	UserID   string // when set, the device must be this user's
	DeviceID string
	Reason   string
	By       audit.Actor
}

// RevokeDevice deregisters a device: from this instant it can neither
// approve nor receive (state revoked, push token erased), an audit event
// records who and why, and the user's other devices are told. Revoking a
// revoked device changes nothing.
func (db *DB) RevokeDevice(ctx context.Context, r Revocation) (devices.Device, error) {
	var d devices.Device
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		var err error
		d, err = db.RevokeDeviceTx(ctx, tx, r)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("revoke device: %w", err)
	}
	return d, nil
}

// RevokeDeviceTx is RevokeDevice within a device call's transaction (a
// device removing itself).
func (db *DB) RevokeDeviceTx(ctx context.Context, tx pgx.Tx, r Revocation) (devices.Device, error) {
	d, changed, err := revoke(ctx, tx, r)
	if err != nil || !changed {
		return d, err
	}
	return d, db.notify(ctx, tx, d.TenantID, d.UserID, d.ID, "device_removed")
}

// revoke revokes the device and reports whether it changed anything (a
// revoked device stays as it was: no second audit event or notification).
func revoke(ctx context.Context, tx pgx.Tx, r Revocation) (devices.Device, bool, error) {
	cur, err := scanDevice(tx.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices
		WHERE id = $1 AND ($2 = '' OR tenant_id::text = $2) AND ($3 = '' OR user_id::text = $3) FOR UPDATE`,
		r.DeviceID, r.TenantID, r.UserID))
	if errors.Is(err, pgx.ErrNoRows) {
		return cur, false, errs.NotFoundf("device not found")
	}
	if err != nil || cur.State == devices.StateRevoked {
		return cur, false, err
	}
	d, err := scanDevice(tx.QueryRow(ctx, `UPDATE devices SET state = 'revoked', revoked_at = now(), revoked_by = $2,
			revoke_reason = $3, push_token = NULL, push_token_key_id = NULL
		WHERE id = $1 RETURNING `+deviceColumns, r.DeviceID, r.By.Type+":"+r.By.ID, r.Reason))
	if err != nil {
		return d, false, err
	}
	return d, true, insertAudit(ctx, tx, d.TenantID, audit.Event{Type: auditDeviceRevoked, Actor: r.By, UserID: d.UserID,
		Data: jsonOf(map[string]any{"device_id": d.ID, "reason": r.Reason, "name": d.Name})})
}

// notify queues an activity notification to the user's other active
// devices that can receive pushes: a deliveries row and a deliver job each,
// in the caller's transaction, so a committed act never loses its news.
func (db *DB) notify(ctx context.Context, tx pgx.Tx, tenantID, userID, exceptDeviceID, event string) error {
	rows, err := tx.Query(ctx, `INSERT INTO deliveries (id, tenant_id, device_id, kind, notification, provider)
		SELECT gen_random_uuid(), tenant_id, id, 'notification', $4, push_provider FROM devices
		WHERE tenant_id = $1 AND user_id = $2 AND id <> $3::uuid AND state = 'active' AND push_provider <> 'none'
		RETURNING id`, tenantID, userID, exceptDeviceID, event)
	if err != nil {
		return fmt.Errorf("queue notifications: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return err
	}
	if _, err := db.enqueue(ctx, tx, deliverJobs(ids)); err != nil {
		return fmt.Errorf("queue notifications: %w", err)
	}
	return nil
}

// PendingDelivery is a delivery to attempt, with what the provider needs.
type PendingDelivery struct {
	Message push.Message
	// Queued is when the delivery was written: for a challenge's push, the
	// statement that wrote it, which COMMIT follows in the same round trip.
	Queued time.Time
	// Committed is when PostgreSQL acknowledged the commit, for a push
	// handed over by the process that wrote it; zero for one River works.
	Committed time.Time
	// Done reports a delivery already settled (sent, failed or skipped): a
	// retried job must not send it again.
	Done bool
	// Gone reports that the device was revoked or lost its token meanwhile.
	Gone bool
	// Stale reports a push no longer worth sending: its challenge resolved
	// or expired, or the notification outlived push.NotificationLifetime.
	Stale bool
	// sealedToken is the token as stored, so that invalidating it cannot
	// erase a newer one the app registered meanwhile.
	sealedToken []byte
}

// Delivery loads a delivery and opens its device's push token.
func (db *DB) Delivery(ctx context.Context, id string) (PendingDelivery, error) {
	var p PendingDelivery
	var m = &p.Message
	var outcome, state string
	var event, challenge *string
	var keyID *string
	var live bool
	err := db.pool.QueryRow(ctx, `SELECT x.id, x.device_id, d.push_provider, x.kind, x.notification, x.challenge_id::text,
			x.outcome, x.created_at, d.state, d.push_token, d.push_token_key_id,
			CASE WHEN x.kind = 'challenge' THEN c.expires_at ELSE x.created_at + make_interval(secs => $2) END,
			CASE WHEN x.kind = 'challenge' THEN c.state = 'pending' AND c.expires_at > now()
				ELSE x.created_at + make_interval(secs => $2) > now() END
		FROM deliveries x JOIN devices d ON d.id = x.device_id LEFT JOIN challenges c ON c.id = x.challenge_id
		WHERE x.id = $1`, id, push.NotificationLifetime.Seconds()).
		Scan(&m.DeliveryID, &m.DeviceID, &m.Provider, &m.Kind, &event, &challenge, &outcome, &p.Queued, &state,
			&p.sealedToken, &keyID, &m.Expires, &live)
	if err != nil {
		return p, fmt.Errorf("read delivery %s: %w", id, err)
	}
	if event != nil {
		m.Event = *event
	}
	if challenge != nil {
		m.ChallengeID = *challenge
	}
	p.Done = outcome != "pending" && outcome != "retrying"
	p.Stale = !live
	if state != devices.StateActive || keyID == nil {
		p.Gone = true
		return p, nil
	}
	t, err := db.keys.Open(seal.Box{KeyID: *keyID, Data: p.sealedToken}, seal.Place{Table: "devices", Column: "push_token", Row: m.DeviceID})
	if err != nil {
		return p, fmt.Errorf("open push token of device %s: %w", m.DeviceID, err)
	}
	m.Token = string(t)
	return p, nil
}

// Delivery outcomes.
const (
	OutcomeSent         = "sent"
	OutcomeRetrying     = "retrying"
	OutcomeFailed       = "failed"
	OutcomeTokenInvalid = "token_invalid"
	OutcomeSkipped      = "skipped"
)

// DeliveryOutcome records an attempt.
type DeliveryOutcome struct {
	ID                string
	Provider          string
	Outcome           string // sent, retrying, failed, token_invalid, skipped
	ProviderMessageID string
	Reason            string
	// Attempted says a send was tried (a skipped delivery was not).
	Attempted bool
}

// RecordDelivery stores the outcome of an attempt.
func (db *DB) RecordDelivery(ctx context.Context, o DeliveryOutcome) error {
	return recordDelivery(ctx, db.pool, o)
}

func recordDelivery(ctx context.Context, q querier, o DeliveryOutcome) error {
	_, err := q.Exec(ctx, `UPDATE deliveries SET provider = $2, outcome = $3,
			provider_message_id = coalesce(nullif($4, ''), provider_message_id), reason = nullif($5, ''),
			attempts = attempts + CASE WHEN $6 THEN 1 ELSE 0 END, updated_at = now(),
			sent_at = CASE WHEN $3 = 'sent' THEN now() END
		WHERE id = $1`, o.ID, o.Provider, o.Outcome, truncate(o.ProviderMessageID, 256), truncate(o.Reason, 512), o.Attempted)
	if err != nil {
		return fmt.Errorf("record delivery %s: %w", o.ID, err)
	}
	return nil
}

// InvalidatePushToken records that the push service refused a device's
// token and switches the device to poll-only: provider none, token erased,
// flagged so the app is told on its next call to register a new one, and
// audited. A device that registered another token since, or was revoked,
// is left alone. It is never deleted.
func (db *DB) InvalidatePushToken(ctx context.Context, p PendingDelivery, o DeliveryOutcome) error {
	err := db.Transact(ctx, func(tx pgx.Tx) error {
		if err := recordDelivery(ctx, tx, o); err != nil {
			return err
		}
		var tenantID, userID, provider string
		err := tx.QueryRow(ctx, `UPDATE devices d SET push_provider = 'none', push_token = NULL, push_token_key_id = NULL,
				push_token_invalid_at = now()
			FROM (SELECT id, push_provider FROM devices WHERE id = $1 FOR UPDATE) old
			WHERE d.id = old.id AND d.state = 'active' AND d.push_token = $2
			RETURNING d.tenant_id, d.user_id, old.push_provider`, p.Message.DeviceID, p.sealedToken).Scan(&tenantID, &userID, &provider)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, tenantID, audit.Event{Type: auditDevicePushTokenInvalid,
			Actor: audit.Actor{Type: audit.ActorSystem, ID: "push:" + provider}, UserID: userID,
			Data: jsonOf(map[string]any{"device_id": p.Message.DeviceID, "push_provider": provider, "reason": o.Reason,
				"delivery_id": o.ID})})
	})
	if err != nil {
		return fmt.Errorf("invalidate push token of device %s: %w", p.Message.DeviceID, err)
	}
	return nil
}

// rescuePushes stands in for deliver jobs that a dead process left running:
// those attempted more than stuckAfter ago (longer than a live worker may
// run one), whose delivery is still to settle, each get a new job (once).
// River's own rescuer retries them too, but later (internal/jobs gives it
// a minute, and it runs on a fixed 30 s round), when a challenge lives a
// minute. It returns how many it queued.
//
// It reads the running jobs of the push queue through River's (state,
// queue, ...) index, never the day of completed jobs River keeps.
func (db *DB) rescuePushes(ctx context.Context, tx pgx.Tx, stuckAfter time.Duration) (int, error) {
	rows, err := tx.Query(ctx, `SELECT j.id, d.id::text FROM river_job j
		JOIN deliveries d ON d.id = (j.args->>'delivery_id')::uuid
		WHERE j.state = 'running' AND j.queue = $2 AND j.kind = 'deliver'
			AND j.attempted_at < now() - make_interval(secs => $1)
			AND d.outcome IN ('pending', 'retrying')
		ORDER BY j.id LIMIT 1000`, stuckAfter.Seconds(), queue.QueuePush)
	if err != nil {
		return 0, err
	}
	var params []river.InsertManyParams
	var job int64
	var delivery string
	if _, err := pgx.ForEachRow(rows, []any{&job, &delivery}, func() error {
		params = append(params, river.InsertManyParams{Args: queue.DeliverArgs{DeliveryID: delivery, RescueOf: job},
			InsertOpts: queue.RescueOpts()})
		return nil
	}); err != nil || len(params) == 0 {
		return 0, err
	}
	res, err := db.enqueue(ctx, tx, params)
	n := 0
	for _, r := range res {
		if !r.UniqueSkippedAsDuplicate {
			n++
		}
	}
	return n, err
}

// QueueDepth counts a River queue's unfinished jobs by state: available
// (due), scheduled (waiting for a time), retryable, running.
func (db *DB) QueueDepth(ctx context.Context, queue string) (map[string]int64, error) {
	// A job waiting out a time (a handed-off push's grace, a retry due
	// soon) is written 'available' but is not ready: it counts as
	// scheduled, so that 'available' is the backlog of due work.
	rows, err := db.pool.Query(ctx, `SELECT CASE WHEN state = 'available' AND scheduled_at > now() THEN 'scheduled' ELSE state::text END,
			count(*) FROM river_job
		WHERE queue = $1 AND state IN ('available', 'scheduled', 'retryable', 'running') GROUP BY 1`, queue)
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	out := map[string]int64{}
	var state string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error { out[state] = n; return nil })
	return out, err
}

// DeliveriesOfDevice lists a device's deliveries, newest first (for tests
// and the timeline).
func (db *DB) DeliveriesOfDevice(ctx context.Context, deviceID string) ([]DeliveryOutcome, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, provider, outcome, coalesce(provider_message_id, ''), coalesce(reason, '')
		FROM deliveries WHERE device_id = $1 ORDER BY created_at DESC`, deviceID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeliveryOutcome, error) {
		var o DeliveryOutcome
		return o, r.Scan(&o.ID, &o.Provider, &o.Outcome, &o.ProviderMessageID, &o.Reason)
	})
}

// PruneJTIs deletes JWT ids whose tokens can no longer be accepted.
func (db *DB) PruneJTIs(ctx context.Context) (int64, error) {
	// A margin past expiry, so a server whose clock runs behind the
	// database's still finds the ids of tokens it could accept.
	tag, err := db.pool.Exec(ctx, `DELETE FROM used_jtis WHERE expires_at < now() - interval '5 minutes'`)
	if err != nil {
		return 0, fmt.Errorf("prune used JWT ids: %w", err)
	}
	return tag.RowsAffected(), nil
}

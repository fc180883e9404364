package postgres

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
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

// A resolution moves a pending challenge to a terminal state and does, in
// the same statement, everything a resolution owes: the answer's jti is
// spent, the push-bombing guard learns the answer, the audit trail records
// it, the user's other devices are told it is over, the webhook is queued,
// and a NOTIFY goes out when another instance may be long-polling (this
// instance wakes its own waiters itself after commit: each NOTIFY costs
// every listening instance a transaction). The UPDATE is conditional on the
// challenge being pending and unexpired, so of concurrent resolutions
// exactly one wins, and the rest of the statement happens only for the
// winner.
type resolution struct {
	c          challenge.Challenge // as read, pending
	state      string
	resolution string
	device     *string // the answering device; nil for the relying party
	uv         *bool
	jti        *jtiUse
	guard      *guardChange
	audits     []audit.Event
	notify     []string // the user's other devices with a push provider
	hook       bool     // the application has a webhook
}

// jtiUse is a JWT id to spend.
type jtiUse struct {
	issuer, id string
	expires    time.Time
}

// guardChange is what an answer does to the user's push-bombing guard
// state, computed from the state read under the user's row lock: the
// consecutive denials after it (0 for an approval, which also lifts the
// backoff), whether it adds a fraud report, the backoff it starts, and
// whether it locks the user's pushes (fraud reports reaching the policy's
// limit), with the fraud reports after it.
type guardChange struct {
	denials int
	fraud   bool
	frauds  int
	backoff time.Duration
	lock    bool
}

const resolveSQL = `WITH j AS (
		INSERT INTO used_jtis (issuer, jti, expires_at) SELECT $7, $8, $9 WHERE $7::text IS NOT NULL
		ON CONFLICT DO NOTHING RETURNING 1
	), r AS (
		UPDATE challenges SET state = $2, resolution = $3, fraud = $4, resolved_at = now(),
			resolved_by_device = $5::uuid, user_verified = $6
		WHERE id = $1 AND state = 'pending' AND expires_at > now() AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM j))
		RETURNING id, tenant_id, application_id, user_id, resolved_at,
			remote_waiters OR created_by_instance IS DISTINCT FROM $10::uuid AS announce
	), g AS (
		UPDATE users SET consecutive_denials = $12, fraud_reports = fraud_reports + CASE WHEN $13 THEN 1 ELSE 0 END,
			push_blocked_until = CASE WHEN $12 = 0 THEN NULL
				WHEN $14::float8 > 0 THEN now() + make_interval(secs => $14::float8) ELSE push_blocked_until END,
			locked_at = CASE WHEN $15 THEN now() ELSE locked_at END,
			lock_reason = CASE WHEN $15 THEN 'fraud' ELSE lock_reason END,
			locked_by = CASE WHEN $15 THEN 'system:fraud_reports' ELSE locked_by END
		FROM r WHERE $11 AND users.id = r.user_id
	), a AS (
		INSERT INTO audit_events (tenant_id, type, actor_type, actor_id, user_id, data)
		SELECT r.tenant_id, e.type, e.actor_type, e.actor_id, r.user_id, e.data::jsonb
		FROM r, unnest($16::text[], $17::text[], $18::text[], $19::text[]) WITH ORDINALITY AS e(type, actor_type, actor_id, data, n)
		ORDER BY e.n
	), n AS (
		INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, notification, provider)
		SELECT x.id, d.tenant_id, d.id, r.id, 'notification', 'challenge_resolved', d.push_provider
		FROM r, unnest($20::uuid[], $21::uuid[]) AS x(id, device) JOIN devices d ON d.id = x.device
		WHERE d.user_id = r.user_id AND d.state = 'active' AND d.push_provider <> 'none'
		RETURNING id
	), w AS (
		INSERT INTO webhook_deliveries (id, tenant_id, application_id, challenge_id)
		SELECT $22::uuid, r.tenant_id, r.application_id, r.id FROM r WHERE $22::uuid IS NOT NULL
		RETURNING id
	), nt AS (
		SELECT pg_notify('` + ChallengeChannel + `', json_build_object('id', r.id, 'state', $2::text, 'resolution', $3::text,
			'fraud', $4::bool, 'resolved_at', r.resolved_at)::text) FROM r WHERE r.announce
	)
	SELECT r.resolved_at, array(SELECT id::text FROM n), (SELECT id::text FROM w), (SELECT count(*) FROM nt),
		EXISTS (SELECT 1 FROM j), s.state, s.expires_at <= now()
	FROM challenges s LEFT JOIN r ON r.id = s.id WHERE s.id = $1`

// resolved is what a resolution statement reports.
type resolved struct {
	at         *time.Time // nil: another resolution (or the expiry) won
	deliveries []string
	webhook    *string
	jtiFresh   bool
	state      string // as the statement found it
	expired    bool
}

// queueResolve queues the resolution on p.
func (db *DB) queueResolve(p *pipe, rs *resolution, out *resolved) {
	var jIss, jID *string
	var jExp *time.Time
	if rs.jti != nil {
		jIss, jID, jExp = &rs.jti.issuer, &rs.jti.id, &rs.jti.expires
	}
	g := guardChange{}
	if rs.guard != nil {
		g = *rs.guard
	}
	types := make([]string, len(rs.audits))
	actorTypes := make([]string, len(rs.audits))
	actorIDs := make([]string, len(rs.audits))
	data := make([]string, len(rs.audits))
	for i, e := range rs.audits {
		types[i], actorTypes[i], actorIDs[i], data[i] = e.Type, e.Actor.Type, e.Actor.ID, string(e.Data)
		if len(e.Data) == 0 {
			data[i] = "{}"
		}
	}
	deliveryIDs := make([]string, len(rs.notify))
	for i := range rs.notify {
		deliveryIDs[i] = uuid.NewString()
	}
	var hook *string
	if rs.hook {
		id := uuid.NewString()
		hook = &id
	}
	p.Queue(resolveSQL, rs.c.ID, rs.state, rs.resolution, rs.resolution == challenge.ResolutionFraud, rs.device, rs.uv,
		jIss, jID, jExp, db.instance,
		rs.guard != nil, g.denials, g.fraud, g.backoff.Seconds(), g.lock,
		types, actorTypes, actorIDs, data, deliveryIDs, rs.notify, hook).
		QueryRow(func(row pgx.Row) error {
			return row.Scan(&out.at, &out.deliveries, &out.webhook, new(int64), &out.jtiFresh, &out.state, &out.expired)
		})
}

// finishResolve queues the jobs a won resolution owes (pushes to the other
// devices, the webhook) in its transaction and commits. The caller sends
// the resolution first when jobs may follow; otherwise the resolution and
// COMMIT travel together.
func (db *DB) finishResolve(ctx context.Context, p *pipe, out *resolved) error {
	if out.at != nil && (len(out.deliveries) > 0 || out.webhook != nil) {
		params := deliverJobs(out.deliveries)
		if out.webhook != nil {
			params = append(params, river.InsertManyParams{Args: queue.WebhookArgs{DeliveryID: *out.webhook}})
		}
		if err := db.enqueuePiped(ctx, p, params); err != nil {
			return err
		}
	}
	return p.Commit(ctx)
}

// resolveRefusal says why a resolution found nothing to resolve.
func (out *resolved) refusal() error {
	if out.state == challenge.StateExpired || (out.state == challenge.StatePending && out.expired) {
		return errs.E(challenge.Expired, "the challenge expired")
	}
	if out.state == challenge.StatePending {
		// Resolved by a transaction that committed while this one waited.
		return errs.E(challenge.Resolved, "the challenge is already resolved")
	}
	return errs.E(challenge.Resolved, "the challenge is already %s", out.state)
}

// applied returns the challenge as the resolution left it.
func (rs *resolution) applied(at time.Time) challenge.Challenge {
	c := rs.c
	c.State, c.Resolution, c.Fraud, c.ResolvedAt = rs.state, rs.resolution, rs.resolution == challenge.ResolutionFraud, &at
	if rs.device != nil {
		c.ResolvedByDevice, c.UserVerified = *rs.device, rs.uv
	}
	return c
}

// Change is a resolved challenge's broadcast form.
func Change(c challenge.Challenge) notify.Change {
	return notify.Change{ID: c.ID, State: c.State, Resolution: c.Resolution, Fraud: c.Fraud, ResolvedAt: *c.ResolvedAt}
}

// respondReadSQL reads, for a device's answer, the challenge (only if it is
// the device's user's and the device authenticated), its tenant's policy,
// whether its application has a webhook, the user's guard state, and the
// user's other devices that can be told it is over.
const respondReadSQL = `SELECT ` + challengeColumns + `, p.require_user_verification, p.denial_backoff_after,
		p.fraud_lockout_after, a.webhook_url IS NOT NULL, u.consecutive_denials, u.fraud_reports, u.locked_at IS NULL,
		array(SELECT o.id::text FROM devices o WHERE o.user_id = c.user_id AND o.id <> $1::uuid AND o.state = 'active'
			AND o.push_provider <> 'none'),
		(SELECT x.sent_at FROM deliveries x WHERE x.challenge_id = c.id AND x.device_id = $1::uuid AND x.kind = 'challenge')
	FROM challenges c JOIN users u ON u.id = c.user_id JOIN policies p ON p.tenant_id = c.tenant_id
		JOIN applications a ON a.id = c.application_id
	WHERE c.id = $2 AND c.user_id = ` + deviceUser

// Respond authenticates a device call and resolves a challenge with the
// device's verified answer. Every check must hold (the challenge is the
// device's user's, the nonce and context digest are the challenge's, user
// verification happened when the policy demands it, a number accompanies an
// approval that needs one, the answer's jti is new) or the answer is
// refused and the challenge stays pending; the call's authentication is
// committed either way. A wrong number is a deny (number_mismatch), never a
// retry. It returns the device whenever the call authenticated. Two round trips: BEGIN, the authentication and the reading travel
// together; the resolution and COMMIT follow (with the jobs it owes between
// them, when there are any).
func (db *DB) Respond(ctx context.Context, tok jose.Device, r jose.Response) (Answer, error) {
	var a Answer
	p, err := db.openPipe(ctx)
	if err != nil {
		return a, err
	}
	defer p.Close()
	var d devices.Device
	var authed, found bool
	queueDeviceAuth(p.batch, tok, &d, &authed)
	var c challenge.Challenge
	var pol policy.Policy
	var hook, unlocked bool
	var denials, frauds int
	var others []string
	// The guard arithmetic of a denial (also a wrong number) starts from
	// the user's counts: hold them until the answer is in.
	p.Queue(respondReadSQL+` FOR NO KEY UPDATE OF u`, tok.DeviceID, r.Claims.Challenge).QueryRow(func(row pgx.Row) error {
		err := row.Scan(append(challengeDest(&c), &pol.RequireUserVerification, &pol.DenialBackoffAfter,
			&pol.FraudLockoutAfter, &hook, &denials, &frauds, &unlocked, &others, &a.PushSentAt)...)
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err := p.Send(ctx); err != nil {
		return a, deviceAuthError(err)
	}
	if !authed {
		p.Close()
		return a, db.refusedDevice(ctx, tok.DeviceID)
	}
	a.Device = d
	rs, refusal := answer(c, found, d, r, pol)
	if refusal != nil {
		if err := p.Commit(ctx); err != nil {
			return a, fmt.Errorf("respond: %w", err)
		}
		return a, refusal
	}
	rs.hook, rs.notify = hook, others
	g := guardChange{frauds: frauds}
	if rs.state != challenge.StateApproved {
		g.denials = denials + 1
		g.backoff = challenge.DenialBackoff(pol, g.denials)
	}
	if rs.resolution == challenge.ResolutionFraud {
		g.fraud, g.frauds = true, frauds+1
		g.lock = g.frauds >= pol.FraudLockoutAfter && unlocked
	}
	rs.guard = &g
	rs.audits = answerAudits(rs)
	var out resolved
	db.queueResolve(p, rs, &out)
	if len(rs.notify) > 0 || rs.hook {
		if err := p.Send(ctx); err != nil {
			return a, fmt.Errorf("respond: %w", err)
		}
	}
	if err := db.finishResolve(ctx, p, &out); err != nil {
		return a, fmt.Errorf("respond: %w", err)
	}
	switch {
	case !out.jtiFresh:
		return a, errs.E(challenge.InvalidResponse, "this response was already sent (jti)")
	case out.at == nil:
		return a, out.refusal()
	}
	a.Challenge = rs.applied(*out.at)
	return a, nil
}

// Answer is what a device's accepted answer did.
type Answer struct {
	Challenge challenge.Challenge
	Device    devices.Device
	// PushSentAt is when the challenge's push to this device was accepted
	// by its provider, if it was.
	PushSentAt *time.Time
}

// answer checks a device's answer against the challenge it names and says
// how it resolves the challenge, or why it is refused.
func answer(c challenge.Challenge, found bool, d devices.Device, r jose.Response, p policy.Policy) (*resolution, error) {
	if !found {
		return nil, errs.NotFoundf("challenge not found")
	}
	if err := c.Answerable(time.Now()); err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) (*resolution, error) {
		return nil, errs.E(challenge.InvalidResponse, format, args...)
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
	rs := &resolution{c: c, state: challenge.StateDenied, resolution: r.Claims.Decision, device: &d.ID, uv: r.Claims.UV,
		jti: &jtiUse{issuer: d.ID, id: r.Claims.ID, expires: r.JTIExpires}}
	switch {
	case r.Claims.Decision == challenge.DecisionApprove && c.Number != 0 && r.Number != c.Number:
		rs.resolution = challenge.ResolutionNumberMismatch
	case r.Claims.Decision == challenge.DecisionApprove:
		rs.state = challenge.StateApproved
	}
	return rs, nil
}

// answerAudits lists the audit events of a device's answer.
func answerAudits(rs *resolution) []audit.Event {
	c, g := rs.c, rs.guard
	dev := audit.Actor{Type: audit.ActorDevice, ID: *rs.device}
	var out []audit.Event
	if rs.resolution == challenge.ResolutionFraud {
		out = append(out, audit.Event{Type: auditFraudReported, Actor: dev, Data: jsonOf(map[string]any{
			"challenge_id": c.ID, "application_id": c.ApplicationID, "ip": c.Context.IP, "reports": g.frauds})})
	}
	if g.lock {
		out = append(out, audit.Event{Type: audit.UserLocked, Actor: audit.Actor{Type: audit.ActorSystem, ID: "fraud_reports"},
			Data: jsonOf(map[string]any{"reason": "fraud", "reports": g.frauds})})
	}
	return append(out, resolvedAudit(c, rs.state, rs.resolution, dev))
}

func resolvedAudit(c challenge.Challenge, state, resolution string, by audit.Actor) audit.Event {
	return audit.Event{Type: auditChallengeResolved, Actor: by, Data: jsonOf(map[string]any{"challenge_id": c.ID,
		"state": state, "resolution": resolution, "application_id": c.ApplicationID})}
}

// Cancel moves a pending challenge of the application to cancelled.
func (db *DB) Cancel(ctx context.Context, tenantID, appID, id string, by audit.Actor) (challenge.Challenge, error) {
	var c challenge.Challenge
	err := db.piped(ctx, func(p *pipe) error {
		var found, hook bool
		var devs []string
		p.Queue(`SELECT `+challengeColumns+`, a.webhook_url IS NOT NULL,
				array(SELECT o.id::text FROM devices o WHERE o.user_id = c.user_id AND o.state = 'active'
					AND o.push_provider <> 'none')
			FROM challenges c JOIN users u ON u.id = c.user_id JOIN applications a ON a.id = c.application_id
			WHERE c.id = $1 AND c.tenant_id = $2 AND c.application_id = $3`, id, tenantID, appID).
			QueryRow(func(row pgx.Row) error {
				err := row.Scan(append(challengeDest(&c), &hook, &devs)...)
				found = err == nil
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				return err
			})
		if err := p.Send(ctx); err != nil {
			return err
		}
		if !found {
			return errs.NotFoundf("challenge not found")
		}
		rs := &resolution{c: c, state: challenge.StateCancelled, resolution: challenge.ResolutionCancelled,
			notify: devs, hook: hook}
		rs.audits = []audit.Event{resolvedAudit(c, rs.state, rs.resolution, by)}
		var out resolved
		db.queueResolve(p, rs, &out)
		if err := p.Send(ctx); err != nil {
			return err
		}
		if out.at == nil {
			return out.refusal()
		}
		if err := db.finishResolve(ctx, p, &out); err != nil {
			return err
		}
		c = rs.applied(*out.at)
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("cancel challenge: %w", err)
	}
	return c, nil
}

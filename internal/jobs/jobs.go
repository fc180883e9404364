// Package jobs runs the service's durable background work on River, in the
// same PostgreSQL database: push deliveries, webhooks, the expiry sweeps,
// pruning expired JWT ids and sealing the audit chain.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/webhook"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// Intervals of the periodic jobs. The audit scan runs often so that every
// event is sealed within seconds of its commit.
const (
	pruneInterval      = time.Minute
	auditScanInterval  = 2 * time.Second
	auditHeadsInterval = 10 * time.Minute
	expireInterval     = time.Minute
	// Waiting relying parties see expiry at once (they compute it); the
	// sweep records it and fires webhooks within seconds.
	challengeSweepInterval = 2 * time.Second
	// fetchPollInterval is how often idle queues look for jobs whose
	// notification was missed.
	fetchPollInterval = 5 * time.Second

	pushWorkers               = 100
	pushFetchCooldown         = 2 * time.Millisecond
	housekeepingFetchCooldown = 100 * time.Millisecond
	// pushPollInterval is how late a push retry may start: River makes a
	// retry due within its scheduler interval (5 s) available at once but
	// sends no wake-up when it falls due, so the push queue polls this
	// often rather than let a 1 s backoff become 5 s.
	pushPollInterval = time.Second
	// jobTimeout bounds a job without a timeout of its own.
	jobTimeout = 20 * time.Second
	// rescueStuckJobsAfter is when River's rescuer retries a job left
	// running by a dead process (on its own 30 s round). Pushes do not
	// wait for it: the sweep stands in for them after pushStuckAfter.
	rescueStuckJobsAfter = time.Minute
)

// Config is what the workers need.
type Config struct {
	DB      *postgres.DB
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// MaxWorkers bounds concurrent jobs in this process, per queue.
	MaxWorkers int
	// Push picks the provider of each push (the logging provider for a
	// service without credentials).
	Push push.Router
	// Webhook calls applications back.
	Webhook *webhook.Client
	// Settled, when set, reports a challenge this process knows to have
	// resolved or expired by now: the dispatcher skips its pushes (River's
	// worker reads the database instead).
	Settled func(challengeID string, now time.Time) bool
}

// NewClient builds the River client with every worker and periodic job. The
// caller starts and stops it.
func NewClient(cfg Config) (*river.Client[pgx.Tx], error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &pruneJTIsWorker{db: cfg.DB, logger: cfg.Logger})
	river.AddWorker(workers, &auditScanWorker{db: cfg.DB})
	river.AddWorker(workers, &auditSealWorker{db: cfg.DB, metrics: cfg.Metrics, logger: cfg.Logger})
	river.AddWorker(workers, &auditHeadsWorker{db: cfg.DB, metrics: cfg.Metrics, logger: cfg.Logger})
	river.AddWorker(workers, &expireEnrollmentsWorker{db: cfg.DB})
	river.AddWorker(workers, &deliverWorker{db: cfg.DB, pusher: &pusher{push: cfg.Push, metrics: cfg.Metrics, logger: cfg.Logger}})
	river.AddWorker(workers, &webhookWorker{db: cfg.DB, client: cfg.Webhook, logger: cfg.Logger})
	river.AddWorker(workers, &expireChallengesWorker{db: cfg.DB, logger: cfg.Logger})

	maxWorkers := cfg.MaxWorkers
	if maxWorkers <= 0 {
		maxWorkers = 20
	}
	periodic := func(every time.Duration, args river.JobArgs) *river.PeriodicJob {
		return river.NewPeriodicJob(river.PeriodicInterval(every),
			func() (river.JobArgs, *river.InsertOpts) { return args, nil },
			&river.PeriodicJobOpts{RunOnStart: true})
	}
	client, err := river.NewClient(riverpgxv5.New(cfg.DB.Pool()), &river.Config{
		Logger: slog.New(warnOnly{cfg.Logger.Handler()}),
		// River reports a job's error at info level, below what its
		// logger passes on: without this, a worker failing at every
		// attempt would leave no line in the log.
		ErrorHandler: jobErrorLogger{cfg.Logger},
		Queues: map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: maxWorkers, FetchCooldown: housekeepingFetchCooldown},
			// Pushes start the instant their challenge commits: a NOTIFY
			// after the commit wakes the queue, and a short cooldown lets
			// the next batch be fetched at once. Sends wait on the network,
			// not the CPU, so many run at a time.
			queue.QueuePush: {MaxWorkers: pushWorkers, FetchCooldown: pushFetchCooldown,
				FetchPollInterval: pushPollInterval},
			queue.QueueWebhook: {MaxWorkers: maxWorkers, FetchCooldown: housekeepingFetchCooldown},
		},
		// The client's cooldown is also how often River's own inserts
		// NOTIFY a queue. Pushes and webhooks do not depend on it: a
		// notification follows every commit that queues them
		// (internal/postgres/waker.go).
		FetchCooldown:        housekeepingFetchCooldown,
		JobTimeout:           jobTimeout,
		RescueStuckJobsAfter: rescueStuckJobsAfter,
		Workers:              workers,
		// New jobs wake the workers at once through LISTEN/NOTIFY; the poll
		// is only a fallback, and each poll is a transaction per queue.
		FetchPollInterval: fetchPollInterval,
		PeriodicJobs: []*river.PeriodicJob{
			periodic(pruneInterval, PruneJTIsArgs{}),
			periodic(auditScanInterval, AuditScanArgs{}),
			periodic(auditHeadsInterval, AuditHeadsArgs{}),
			periodic(expireInterval, ExpireEnrollmentsArgs{}),
			periodic(challengeSweepInterval, ExpireChallengesArgs{}),
		},
		// Finished housekeeping jobs are of no interest for long.
		CompletedJobRetentionPeriod: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return client, nil
}

// jobErrorLogger logs the error of each failed job attempt, which River
// then retries or gives up on as the job's policy says.
type jobErrorLogger struct{ logger *slog.Logger }

func (l jobErrorLogger) HandleError(ctx context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	l.logger.WarnContext(ctx, "job attempt failed", "job_kind", job.Kind, "job_id", job.ID, "attempt", job.Attempt,
		"max_attempts", job.MaxAttempts, "error", err.Error())
	return nil
}

func (l jobErrorLogger) HandlePanic(ctx context.Context, job *rivertype.JobRow, panicVal any, trace string) *river.ErrorHandlerResult {
	l.logger.ErrorContext(ctx, "job panicked", "job_kind", job.Kind, "job_id", job.ID, "attempt", job.Attempt,
		"panic", fmt.Sprint(panicVal), "trace", trace)
	return nil
}

// warnOnly keeps River's routine info lines out of the service log.
type warnOnly struct{ slog.Handler }

func (h warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

// PruneJTIsArgs deletes expired JWT ids.
type PruneJTIsArgs struct{}

// Kind names the job.
func (PruneJTIsArgs) Kind() string { return "prune_jtis" }

type pruneJTIsWorker struct {
	river.WorkerDefaults[PruneJTIsArgs]
	db     *postgres.DB
	logger *slog.Logger
}

func (w *pruneJTIsWorker) Work(ctx context.Context, _ *river.Job[PruneJTIsArgs]) error {
	n, err := w.db.PruneJTIs(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		w.logger.Debug("pruned expired JWT ids", "count", n)
	}
	return nil
}

// AuditScanArgs finds tenants with unsealed audit events and queues a seal
// job for each.
type AuditScanArgs struct{}

// Kind names the job.
func (AuditScanArgs) Kind() string { return "audit_seal_scan" }

type auditScanWorker struct {
	river.WorkerDefaults[AuditScanArgs]
	db *postgres.DB
}

func (w *auditScanWorker) Work(ctx context.Context, _ *river.Job[AuditScanArgs]) error {
	tenants, err := w.db.TenantsWithUnsealedAudit(ctx)
	if err != nil || len(tenants) == 0 {
		return err
	}
	params := make([]river.InsertManyParams, len(tenants))
	for i, t := range tenants {
		params[i] = river.InsertManyParams{Args: AuditSealArgs{TenantID: t}}
	}
	_, err = river.ClientFromContext[pgx.Tx](ctx).InsertMany(ctx, params)
	return err
}

// AuditSealArgs chains one tenant's unsealed audit events. It is unique per
// tenant while queued or running, so one tenant's sealing never piles up.
type AuditSealArgs struct {
	TenantID string `json:"tenant_id"`
}

// Kind names the job.
func (AuditSealArgs) Kind() string { return "audit_seal" }

// InsertOpts makes the job unique per tenant.
func (AuditSealArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
		rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
		rivertype.JobStateRetryable, rivertype.JobStateScheduled,
	}}}
}

type auditSealWorker struct {
	river.WorkerDefaults[AuditSealArgs]
	db      *postgres.DB
	metrics *metrics.Metrics
	logger  *slog.Logger
}

func (w *auditSealWorker) Work(ctx context.Context, job *river.Job[AuditSealArgs]) error {
	n, head, err := w.db.SealAudit(ctx, job.Args.TenantID)
	if err != nil {
		return err
	}
	if n > 0 {
		w.metrics.AuditSealed.Add(float64(n))
		exportHead(w.metrics, w.logger, head)
	}
	return nil
}

// AuditHeadsArgs exports every tenant's chain head now and then, so a head
// is on record even when nothing new was sealed.
type AuditHeadsArgs struct{}

// Kind names the job.
func (AuditHeadsArgs) Kind() string { return "audit_heads" }

type auditHeadsWorker struct {
	river.WorkerDefaults[AuditHeadsArgs]
	db      *postgres.DB
	metrics *metrics.Metrics
	logger  *slog.Logger
}

func (w *auditHeadsWorker) Work(ctx context.Context, _ *river.Job[AuditHeadsArgs]) error {
	heads, err := w.db.AuditHeads(ctx)
	if err != nil {
		return err
	}
	for _, h := range heads {
		exportHead(w.metrics, w.logger, h)
	}
	return nil
}

// exportHead publishes a chain head as a log line and a metric, so it can be
// anchored outside the database.
func exportHead(m *metrics.Metrics, logger *slog.Logger, h postgres.AuditHead) {
	hash := audit.Hex(h.Hash)
	m.SetAuditHead(h.TenantID, h.Seq, hash)
	logger.Info("audit chain head", "tenant", h.TenantSlug, "tenant_id", h.TenantID, "head_seq", h.Seq, "head_hash", hash)
}

// ExpireEnrollmentsArgs marks lapsed enrollments expired and erases their
// sealed codes.
type ExpireEnrollmentsArgs struct{}

// Kind names the job.
func (ExpireEnrollmentsArgs) Kind() string { return "expire_enrollments" }

type expireEnrollmentsWorker struct {
	river.WorkerDefaults[ExpireEnrollmentsArgs]
	db *postgres.DB
}

func (w *expireEnrollmentsWorker) Work(ctx context.Context, _ *river.Job[ExpireEnrollmentsArgs]) error {
	_, err := w.db.ExpireEnrollments(ctx)
	return err
}

type deliverWorker struct {
	river.WorkerDefaults[queue.DeliverArgs]
	*pusher
	db *postgres.DB
}

// Times of a push attempt: the send's own deadline (within which the
// Firebase SDK redials a failed connection itself), and the job's, which
// leaves room to record the outcome.
const (
	sendTimeout    = 10 * time.Second
	deliverTimeout = 15 * time.Second
	// pushStuckAfter is when a deliver job still running must belong to a
	// process that died: a live one ends at deliverTimeout.
	pushStuckAfter = deliverTimeout + 2*time.Second
)

// Timeout bounds one attempt.
func (w *deliverWorker) Timeout(*river.Job[queue.DeliverArgs]) time.Duration { return deliverTimeout }

// NextRetry backs off from 1 s, doubling, at most a minute apart, with
// jitter so that a provider coming back is not hit by every retry at once.
func (w *deliverWorker) NextRetry(job *river.Job[queue.DeliverArgs]) time.Time {
	return time.Now().Add(deliveryBackoff(job.Attempt))
}

func deliveryBackoff(attempt int) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < time.Minute; i++ {
		d *= 2
	}
	d = min(d, time.Minute)
	return d - d/5 + time.Duration(rand.Int64N(int64(d*2/5)+1))
}

// Work sends one delivery and records what happened. A delivery already
// settled is not sent again (a retried or rescued job, or one whose push
// the dispatcher sent); one whose device was revoked or lost its token
// since, or whose challenge resolved or expired, is skipped. What an
// attempt means is attempt's to say; Work records it and tells River.
func (w *deliverWorker) Work(ctx context.Context, job *river.Job[queue.DeliverArgs]) error {
	d, err := w.db.Delivery(ctx, job.Args.DeliveryID)
	if err != nil || d.Done {
		return err
	}
	m := d.Message
	skip := func(reason string) error { return w.db.RecordDelivery(ctx, w.skip(m, reason)) }
	switch {
	case d.Gone:
		return skip("the device was revoked or has no push token")
	case d.Stale && m.Kind == push.KindChallenge:
		return skip(reasonChallengeOver)
	case d.Stale:
		return skip("the notification is no longer worth sending")
	}

	v := w.attempt(ctx, d, job.Attempt, job.MaxAttempts, sendTimeout)
	switch {
	case v.invalidate:
		return w.db.InvalidatePushToken(ctx, d, v.outcome)
	case v.retryIn > 0:
		if err := w.db.RecordDelivery(ctx, v.outcome); err != nil {
			return err
		}
		if v.asked {
			// As the provider asked; the push's expiry bounds the snoozes.
			return river.JobSnooze(v.retryIn)
		}
		return v.cause
	case v.cause != nil:
		if err := w.db.RecordDelivery(ctx, v.outcome); err != nil {
			return err
		}
		return river.JobCancel(v.cause)
	}
	// Should recording fail after a successful send, the job retries and
	// the device may get the push twice: delivery is at least once, and the
	// collapse id makes a repeat harmless.
	return w.db.RecordDelivery(ctx, v.outcome)
}

// verdict is what one attempt at a push came to.
type verdict struct {
	// outcome is what to record on the delivery.
	outcome postgres.DeliveryOutcome
	// invalidate: the service refused the token; the device goes
	// poll-only (postgres.InvalidatePushToken records the outcome).
	invalidate bool
	// retryIn, when positive, is when to try again: a transient failure
	// while the push is still worth it. asked says it is the provider's
	// Retry-After.
	retryIn time.Duration
	asked   bool
	// cause is the failure, nil when sent.
	cause error
}

// pusher makes attempts at pushes, for River's worker and the dispatcher
// alike, and counts and logs what they come to.
type pusher struct {
	push    push.Router
	metrics *metrics.Metrics
	logger  *slog.Logger
}

// attempt sends one push, the attempt-th, within timeout (and never past
// the push's expiry), and says what it came to: a refused token switches
// the device to poll-only; a fault of our own toward the provider
// (credentials, topic) changes no device and is not retried; a transient
// failure is retried with backoff (or after the provider's Retry-After)
// while the push is still worth sending and attempts remain.
func (w *pusher) attempt(ctx context.Context, d postgres.PendingDelivery, attempt, maxAttempts int, timeout time.Duration) verdict {
	m := d.Message
	provider := w.push.For(m.Provider)
	// A send that outlives the push is no use: it ends with the push, and
	// so do the client library's own reconnects within it.
	sendCtx, cancel := context.WithDeadline(ctx, earliest(time.Now().Add(timeout), m.Expires))
	id, err := provider.Send(sendCtx, m)
	cancel()
	if err == nil {
		w.count(provider.Name(), postgres.OutcomeSent)
		// From the commit's acknowledgement when this process saw it, else
		// from the delivery's row, written just before its commit.
		from := d.Queued
		if !d.Committed.IsZero() {
			from = d.Committed
		}
		w.metrics.PushCommitToProvider.WithLabelValues(provider.Name()).Observe(time.Since(from).Seconds())
		return verdict{outcome: postgres.DeliveryOutcome{ID: m.DeliveryID, Provider: provider.Name(),
			Outcome: postgres.OutcomeSent, ProviderMessageID: id, Attempted: true}}
	}

	e := push.Classify(provider.Name(), err)
	v := verdict{cause: e, outcome: postgres.DeliveryOutcome{ID: m.DeliveryID, Provider: provider.Name(),
		Outcome: postgres.OutcomeFailed, Reason: e.Error(), Attempted: true}}
	log := w.logger.With("delivery_id", m.DeliveryID, "device_id", m.DeviceID, "provider", provider.Name(),
		"status", e.Status, "reason", e.Reason)
	switch e.Class {
	case push.TokenInvalid:
		v.outcome.Outcome, v.invalidate = postgres.OutcomeTokenInvalid, true
		w.count(provider.Name(), v.outcome.Outcome)
		log.Info("push token refused: the device is poll-only until it registers a new one")
		return v
	case push.ProviderFault:
		w.count(provider.Name(), v.outcome.Outcome)
		w.metrics.PushProviderFaults.WithLabelValues(provider.Name(), e.Reason).Inc()
		log.Error("push provider refused our credentials or configuration; no device is at fault")
		return v
	case push.Rejected:
		w.count(provider.Name(), v.outcome.Outcome)
		log.Warn("push refused")
		return v
	}

	// Transient: try again while the push is worth it.
	wait := e.RetryAfter
	if wait <= 0 {
		wait = deliveryBackoff(attempt)
	}
	if attempt >= maxAttempts && e.RetryAfter <= 0 || time.Now().Add(wait).After(m.Expires) {
		v.outcome.Reason = "gave up: " + e.Error()
		w.count(provider.Name(), v.outcome.Outcome)
		log.Warn("push failed for good")
		return v
	}
	v.outcome.Outcome, v.retryIn, v.asked = postgres.OutcomeRetrying, wait, e.RetryAfter > 0
	w.count(provider.Name(), v.outcome.Outcome)
	return v
}

// reasonChallengeOver is why a challenge's push is skipped once it is over.
const reasonChallengeOver = "the challenge resolved or expired before the push was sent"

// skip counts a push not sent, and returns its outcome to record.
func (w *pusher) skip(m push.Message, reason string) postgres.DeliveryOutcome {
	w.count(m.Provider, postgres.OutcomeSkipped)
	return postgres.DeliveryOutcome{ID: m.DeliveryID, Provider: m.Provider, Outcome: postgres.OutcomeSkipped, Reason: reason}
}

func (w *pusher) count(provider, outcome string) {
	w.metrics.PushDeliveries.WithLabelValues(provider, outcome).Inc()
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// ExpireChallengesArgs sweeps pending challenges past their time.
type ExpireChallengesArgs struct{}

// Kind names the job.
func (ExpireChallengesArgs) Kind() string { return "expire_challenges" }

// expireChallengesWorker is the two-second sweep: it records the expiry of
// challenges past their time, and stands in for pushes whose worker died
// with its process.
type expireChallengesWorker struct {
	river.WorkerDefaults[ExpireChallengesArgs]
	db     *postgres.DB
	logger *slog.Logger
}

func (w *expireChallengesWorker) Work(ctx context.Context, _ *river.Job[ExpireChallengesArgs]) error {
	_, n, err := w.db.Sweep(ctx, pushStuckAfter)
	if n > 0 {
		w.logger.Warn("pushes left running by a process that stopped are queued again", "pushes", n)
	}
	return err
}

type webhookWorker struct {
	river.WorkerDefaults[queue.WebhookArgs]
	db     *postgres.DB
	client *webhook.Client
	logger *slog.Logger
}

// NextRetry backs off exponentially from 10 s, doubling, at most an hour
// apart, with jitter so a receiver coming back is not hit all at once; with
// queue.WebhookAttempts this spans about a day.
func (w *webhookWorker) NextRetry(job *river.Job[queue.WebhookArgs]) time.Time {
	d := 10 * time.Second
	for i := 1; i < job.Attempt && d < time.Hour; i++ {
		d *= 2
	}
	d = min(d, time.Hour)
	jitter := time.Duration(rand.Int64N(int64(d / 5)))
	return time.Now().Add(d - d/10 + jitter)
}

// Timeout leaves room for the call's own 5 s limit.
func (w *webhookWorker) Timeout(*river.Job[queue.WebhookArgs]) time.Duration { return 30 * time.Second }

func (w *webhookWorker) Work(ctx context.Context, job *river.Job[queue.WebhookArgs]) error {
	call, err := w.db.WebhookCall(ctx, job.Args.DeliveryID)
	if err != nil || call.Done {
		return err
	}
	if call.Gone {
		return w.db.RecordWebhookAttempt(ctx, postgres.WebhookAttempt{DeliveryID: call.DeliveryID, Outcome: "failed",
			Error: "the application was deleted or no longer has a webhook"})
	}
	c := call.Challenge
	body, err := json.Marshal(wire.WebhookEvent{Type: "challenge.resolved", Challenge: wire.WebhookChallenge{
		ID: c.ID, ApplicationID: c.ApplicationID, User: c.UserName, State: c.State, Resolution: c.Resolution,
		Fraud: c.Fraud, CreatedAt: c.CreatedAt.UTC(), ResolvedAt: utcp(c.ResolvedAt)}})
	if err != nil {
		return err
	}
	res, err := w.client.Post(ctx, call.URL, call.Secret, body, time.Now())
	if err == nil {
		return w.db.RecordWebhookAttempt(ctx, postgres.WebhookAttempt{DeliveryID: call.DeliveryID, Outcome: "delivered", Status: res.Status})
	}
	outcome := "retrying"
	if job.Attempt >= job.MaxAttempts {
		outcome = "failed"
	}
	// A destination that is not public will not become public by waiting.
	permanent := errors.Is(err, webhook.ErrForbiddenAddress)
	if permanent {
		outcome = "failed"
	}
	if rerr := w.db.RecordWebhookAttempt(ctx, postgres.WebhookAttempt{DeliveryID: call.DeliveryID, Outcome: outcome,
		Status: res.Status, Error: err.Error()}); rerr != nil {
		w.logger.Warn("record webhook attempt", "delivery_id", call.DeliveryID, "error", rerr)
	}
	if permanent {
		return river.JobCancel(err)
	}
	return err
}

func utcp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

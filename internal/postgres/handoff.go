package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

// A challenge's pushes are sent by the process that created it, the
// instant its transaction commits, and recorded in batches: River's job for
// each is written in that same transaction, as ever, but due only after a
// grace period, and deleted once the push is recorded. So in the common
// case a push costs no River fetch, no job completion, no read of its
// delivery and no commit of its own; and a process that dies before it
// records a push leaves a job that any replica's River runs when the grace
// ends (a push sent but not yet recorded is then sent twice, which its
// collapse id makes harmless).
//
// The job is written 'available' with its scheduled_at in the future, the
// shape River's own completer gives a retry due soon: River's fetch takes
// it once due, without waiting for its scheduler.

// Dispatcher sends the pushes handed to it, in process. Dispatch must not
// block on the network: it runs in the request that created the challenge,
// after the commit.
type Dispatcher interface {
	Dispatch(handoffs []Handoff)
}

// UseDispatcher has challenges' pushes handed to d once their transaction
// commits; their River jobs fall due after grace. It must outlast the
// longest a handed-off push can take to be sent and recorded, or the job
// sends a push the dispatcher is still sending. The server sets it once,
// before it serves.
func (db *DB) UseDispatcher(d Dispatcher, grace time.Duration) {
	db.dispatcher, db.grace = d, grace
}

// Handoff is a push handed to a Dispatcher: its delivery, the device's
// token opened, and its River job, to be settled with SettleHandoffs.
type Handoff struct {
	PendingDelivery
	JobID int64
}

// handoffs opens the tokens of a created challenge's pushes.
func (db *DB) handoffs(c *challengeWrite) ([]Handoff, []int64) {
	hs := make([]Handoff, 0, len(c.jobs))
	var unopened []int64
	for i, job := range c.jobs {
		d := c.devices[i]
		if job == 0 {
			continue // not written: the device is gone
		}
		if d.keyID == "" {
			unopened = append(unopened, job)
			continue
		}
		h := Handoff{JobID: job, PendingDelivery: PendingDelivery{Queued: c.queued[i], sealedToken: d.token,
			Message: push.Message{DeliveryID: c.deliveries[i], DeviceID: d.id, Provider: d.provider,
				Kind: push.KindChallenge, ChallengeID: c.challenge.ID, Expires: c.challenge.ExpiresAt}}}
		t, err := db.keys.Open(seal.Box{KeyID: d.keyID, Data: d.token}, seal.Place{Table: "devices", Column: "push_token", Row: d.id})
		if err != nil {
			// River's worker reads the device again and says why.
			db.logger.Warn("open push token: the push is left to the job queue", "device_id", d.id, "error", err)
			unopened = append(unopened, job)
			continue
		}
		h.Message.Token = string(t)
		hs = append(hs, h)
	}
	return hs, unopened
}

// Settlement is what became of a handed-off push.
type Settlement struct {
	JobID int64
	// Outcome is the attempt to record on the delivery; without one (the
	// push was never tried here, or its outcome was recorded already) the
	// delivery is left as it is.
	Outcome DeliveryOutcome
	// At is when the attempt ended.
	At time.Time
	// RetryAt, when set, hands the push to River's job, due then: a
	// transient failure, or a push this process did not get to send. Else
	// the job is deleted: the push is done with.
	RetryAt time.Time
}

// settleSQL records the outcomes of handed-off pushes and deletes or
// reschedules their jobs, for a whole batch at once. A delivery settled
// meanwhile (by River's job, should the grace have run out) keeps its
// outcome, and a job River has started is left to River.
const settleSQL = `WITH s AS (
		SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::timestamptz[], $8::timestamptz[], $10::bool[]) AS s(job, delivery, provider, outcome, message_id, reason, at, retry_at, attempted)
	), recorded AS (
		UPDATE deliveries x SET provider = s.provider, outcome = s.outcome,
			provider_message_id = coalesce(nullif(s.message_id, ''), x.provider_message_id), reason = nullif(s.reason, ''),
			attempts = x.attempts + CASE WHEN s.attempted THEN 1 ELSE 0 END, updated_at = s.at, sent_at = CASE WHEN s.outcome = 'sent' THEN s.at END
		FROM s WHERE x.id = s.delivery AND s.outcome <> '' AND x.outcome IN ('pending', 'retrying')
	), done AS (
		DELETE FROM river_job j USING s WHERE j.id = s.job AND s.retry_at IS NULL AND j.state = 'available'
	)
	UPDATE river_job j SET scheduled_at = s.retry_at,
		state = CASE WHEN s.retry_at > now() + make_interval(secs => $9) THEN 'scheduled' ELSE 'available' END::river_job_state
	FROM s WHERE j.id = s.job AND s.retry_at IS NOT NULL AND j.state = 'available'`

// schedulerInterval is River's (maintenance.JobSchedulerIntervalDefault):
// as River's completer does, a retry due within it is made available at
// once, and a later one scheduled for River's scheduler to make available.
const schedulerInterval = 5 * time.Second

// SettleHandoffs records what became of handed-off pushes, in one
// statement, and wakes the push queue when it handed River a push due now.
func (db *DB) SettleHandoffs(ctx context.Context, ss []Settlement) error {
	if len(ss) == 0 {
		return nil
	}
	n := len(ss)
	jobs, deliveries := make([]int64, n), make([]*string, n)
	providers, outcomes, ids, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	at, retry, attempted := make([]time.Time, n), make([]*time.Time, n), make([]bool, n)
	due := false
	for i, s := range ss {
		jobs[i], at[i] = s.JobID, s.At
		if s.Outcome.Outcome != "" {
			deliveries[i] = &ss[i].Outcome.ID
			providers[i], outcomes[i] = s.Outcome.Provider, s.Outcome.Outcome
			ids[i], reasons[i] = truncate(s.Outcome.ProviderMessageID, 256), truncate(s.Outcome.Reason, 512)
			attempted[i] = s.Outcome.Attempted
		}
		if !s.RetryAt.IsZero() {
			retry[i] = &ss[i].RetryAt
			due = due || time.Until(s.RetryAt) < time.Second
		}
	}
	// Planned afresh each time (an unnamed statement): a plan cached while
	// the tables were small would scan them whole, at a cost that grows
	// with every push recorded, until the next ANALYZE.
	if _, err := db.pool.Exec(ctx, settleSQL, pgx.QueryExecModeExec, jobs, deliveries, providers, outcomes, ids, reasons, at, retry,
		schedulerInterval.Seconds(), attempted); err != nil {
		return fmt.Errorf("settle %d handed-off pushes: %w", n, err)
	}
	if due {
		db.waker.wake(wakeups([]river.InsertManyParams{{Args: queue.DeliverArgs{}}}))
	}
	return nil
}

// handOver gives jobs straight to River, due now.
func (db *DB) handOver(jobs []int64) {
	if len(jobs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now()
	ss := make([]Settlement, len(jobs))
	for i, j := range jobs {
		ss[i] = Settlement{JobID: j, At: now, RetryAt: now}
	}
	if err := db.SettleHandoffs(ctx, ss); err != nil {
		// The jobs still fall due when the grace ends.
		db.logger.Warn("hand pushes to the job queue", "jobs", len(jobs), "error", err)
	}
}

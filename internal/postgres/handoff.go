package postgres

import (
	"context"
	"fmt"
	"time"

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
	committed := time.Now() // just after the commit returned
	for i, job := range c.jobs {
		d := c.devices[i]
		if job == 0 {
			continue // not written: the device is gone
		}
		if d.keyID == "" {
			unopened = append(unopened, job)
			continue
		}
		h := Handoff{JobID: job, PendingDelivery: PendingDelivery{Queued: c.queued[i], Committed: committed, sealedToken: d.token,
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

// HandOver is the settlement that gives a push, untried here, to its River
// job, due at once.
func HandOver(jobID int64, at time.Time) Settlement {
	return Settlement{JobID: jobID, At: at, RetryAt: at}
}

// settleSQL records what became of one handed-off push: the outcome on its
// delivery, unless that was settled meanwhile (by River's job, should the
// grace have run out), and its job deleted, or rescheduled for a retry,
// unless River has started it. Every row is found by its primary key, one
// statement a push: a single statement joining a whole batch let the
// planner pick its join order from statistics in which nearly every
// delivery is long settled, and it then scanned the deliveries table once
// per push of the batch (seconds a batch, on a table with history). A job's
// state is compared as text so that it cannot steer a cached plan to River's
// fetching index (state first): planned while the table was small, that
// plan walked every available job of a burst (thousands) for each push.
const settleSQL = `WITH recorded AS (
		UPDATE deliveries SET provider = $3, outcome = $4,
			provider_message_id = coalesce(nullif($5, ''), provider_message_id), reason = nullif($6, ''),
			attempts = attempts + CASE WHEN $10 THEN 1 ELSE 0 END, updated_at = $7,
			sent_at = CASE WHEN $4 = 'sent' THEN $7::timestamptz END
		WHERE id = $2 AND $4 <> '' AND outcome IN ('pending', 'retrying')
	), done AS (
		DELETE FROM river_job WHERE id = $1 AND $8::timestamptz IS NULL AND state::text = 'available'
	)
	UPDATE river_job SET scheduled_at = $8,
		state = CASE WHEN $8 > now() + make_interval(secs => $9) THEN 'scheduled' ELSE 'available' END::river_job_state
	WHERE id = $1 AND $8 IS NOT NULL AND state::text = 'available'`

// schedulerInterval is River's (maintenance.JobSchedulerIntervalDefault):
// as River's completer does, a retry due within it is made available at
// once, and a later one scheduled for River's scheduler to make available.
const schedulerInterval = 5 * time.Second

// SettleHandoffs records what became of handed-off pushes, in one
// transaction and one round trip, and wakes the push queue when it handed
// River a push due now.
func (db *DB) SettleHandoffs(ctx context.Context, ss []Settlement) error {
	if len(ss) == 0 {
		return nil
	}
	due := false
	err := db.piped(ctx, func(p *pipe) error {
		for _, s := range ss {
			var delivery *string
			var retry *time.Time
			if s.Outcome.Outcome != "" {
				delivery = &s.Outcome.ID
			}
			if !s.RetryAt.IsZero() {
				retry = &s.RetryAt
				due = due || time.Until(s.RetryAt) < time.Second
			}
			p.Queue(settleSQL, s.JobID, delivery, s.Outcome.Provider, s.Outcome.Outcome, truncate(s.Outcome.ProviderMessageID, 256),
				truncate(s.Outcome.Reason, 512), s.At, retry, schedulerInterval.Seconds(), s.Outcome.Attempted)
		}
		return p.Commit(ctx)
	})
	if err != nil {
		return fmt.Errorf("settle %d handed-off pushes: %w", len(ss), err)
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
		ss[i] = HandOver(j, now)
	}
	if err := db.SettleHandoffs(ctx, ss); err != nil {
		// The jobs still fall due when the grace ends.
		db.logger.Warn("hand pushes to the job queue", "jobs", len(jobs), "error", err)
	}
}

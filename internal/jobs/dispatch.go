package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/queue"
)

// The dispatcher's bounds. A handed-off push is started within
// dispatchStartBy or given to River, sent within dispatchSendTimeout, and
// recorded soon after: all well inside DispatchGrace, when its River job
// falls due, so a live process never races its own job.
const (
	// DispatchGrace is how long a handed-off push's job waits before River
	// runs it: after a crash, pushes the dead process did not record go
	// out this late (plus the push queue's poll).
	DispatchGrace       = 10 * time.Second
	dispatchStartBy     = 2 * time.Second
	dispatchSendTimeout = 5 * time.Second
	// dispatchSenders bounds the sends in flight. Sends wait on the
	// network; APNs and FCM multiplex them over HTTP/2.
	dispatchSenders = 128
	// dispatchBacklog bounds the pushes waiting for a sender; past it they
	// go to River at once.
	dispatchBacklog = 4096
	// settleBatch bounds the outcomes one transaction records, and
	// dispatchRecorders how many such transactions run at once: a push is
	// a keyed statement, and senders wait when the recorders fall behind.
	settleBatch       = 256
	dispatchRecorders = 4
)

// Dispatcher sends challenges' pushes in the process that created them,
// the instant their transaction commits (postgres.Dispatcher), and records
// what became of them in batches (postgres.SettleHandoffs). A push it
// cannot send at once, or that fails for now, goes to its River job; one
// it never records, should the process die, is sent by that job when
// DispatchGrace ends.
type Dispatcher struct {
	db     *postgres.DB
	pusher *pusher
	logger *slog.Logger
	intake chan handoff
	settle chan postgres.Settlement
	// settled reports challenges known to be over (Config.Settled).
	settled func(challengeID string, now time.Time) bool
	// maxAttempts is the River job's, which counts this attempt too.
	maxAttempts int
}

// handoff is a push waiting for a sender, and since when.
type handoff struct {
	postgres.Handoff
	at time.Time
}

// NewDispatcher returns a dispatcher sending through cfg.Push. Run runs it.
func NewDispatcher(cfg Config) *Dispatcher {
	return &Dispatcher{db: cfg.DB, logger: cfg.Logger, settled: cfg.Settled,
		pusher:      &pusher{push: cfg.Push, metrics: cfg.Metrics, logger: cfg.Logger},
		intake:      make(chan handoff, dispatchBacklog),
		settle:      make(chan postgres.Settlement, dispatchBacklog),
		maxAttempts: queue.DeliverArgs{}.InsertOpts().MaxAttempts}
}

// Dispatch queues pushes for the senders and never blocks on the network:
// when the backlog is full, the pushes go to their River jobs at once.
func (d *Dispatcher) Dispatch(hs []postgres.Handoff) {
	now := time.Now()
	var over []postgres.Settlement
	for _, h := range hs {
		select {
		case d.intake <- handoff{h, now}:
		default:
			over = append(over, postgres.HandOver(h.JobID, now))
		}
	}
	if len(over) > 0 {
		d.logger.Warn("push senders busy: pushes go to the job queue", "pushes", len(over))
		d.store(over)
	}
}

// Run sends and records until ctx ends. Then the sends in flight finish
// (each within its own timeout), the pushes no sender took go to River,
// and every outcome is recorded before Run returns. Pushes dispatched
// after that are sent by their jobs when the grace ends.
func (d *Dispatcher) Run(ctx context.Context) {
	var recorders sync.WaitGroup
	for range dispatchRecorders {
		recorders.Go(d.record)
	}
	var senders sync.WaitGroup
	for range dispatchSenders {
		senders.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case h := <-d.intake:
					d.settle <- d.send(context.WithoutCancel(ctx), h)
				}
			}
		})
	}
	senders.Wait()
left:
	for {
		select {
		case h := <-d.intake:
			d.settle <- postgres.HandOver(h.JobID, time.Now())
		default:
			break left
		}
	}
	close(d.settle)
	recorders.Wait()
}

// send makes the first attempt at a handed-off push.
func (d *Dispatcher) send(ctx context.Context, h handoff) postgres.Settlement {
	if time.Since(h.at) > dispatchStartBy {
		// Too late to be sure of settling it within the grace.
		return postgres.HandOver(h.JobID, time.Now())
	}
	if d.settled != nil && d.settled(h.Message.ChallengeID, time.Now()) {
		// Answered or cancelled in the moment since its commit.
		return postgres.Settlement{JobID: h.JobID, At: time.Now(), Outcome: d.pusher.skip(h.Message, reasonChallengeOver)}
	}
	v := d.pusher.attempt(ctx, h.PendingDelivery, 1, d.maxAttempts, dispatchSendTimeout)
	now := time.Now()
	s := postgres.Settlement{JobID: h.JobID, At: now, Outcome: v.outcome}
	switch {
	case v.invalidate:
		// Rare, and a transaction of its own: the device changes too.
		s.Outcome = postgres.DeliveryOutcome{}
		if err := d.db.InvalidatePushToken(ctx, h.PendingDelivery, v.outcome); err != nil {
			d.logger.Warn("record a refused push token: the job queue tries the push again", "delivery_id",
				h.Message.DeliveryID, "error", err)
			s.RetryAt = now
		}
	case v.retryIn > 0:
		s.RetryAt = now.Add(v.retryIn)
	}
	return s
}

// record writes outcomes as they come, as many to a transaction as have
// come meanwhile, until the settle channel closes.
func (d *Dispatcher) record() {
	batch := make([]postgres.Settlement, 0, settleBatch)
	for s := range d.settle {
		batch = append(batch[:0], s)
	fill:
		for len(batch) < settleBatch {
			select {
			case s, ok := <-d.settle:
				if !ok {
					break fill
				}
				batch = append(batch, s)
			default:
				break fill
			}
		}
		d.store(batch)
	}
}

// store records a batch, trying a few times: outcomes it fails to record
// are sent again by their jobs when the grace ends.
func (d *Dispatcher) store(batch []postgres.Settlement) {
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = d.db.SettleHandoffs(ctx, batch)
		cancel()
		if err == nil {
			return
		}
	}
	d.logger.Warn("record pushes: their jobs send them again when the grace ends", "pushes", len(batch), "error", err)
}

// Compile-time check that the dispatcher is what the store hands pushes to.
var _ postgres.Dispatcher = (*Dispatcher)(nil)

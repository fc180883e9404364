package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/queue"
)

// wakeSQL sends River's own insert notification for each payload (River's
// format, from wakeups): the workers of those queues fetch at once.
//
// River notifies its queues of inserts itself, but at most once per queue
// per client FetchCooldown, and it decides at insert time: a job whose
// insert went unannounced, and that commits after the fetch another job's
// notification caused, waits for the queue's next poll. A push must not.
// So the acts that queue pushes and webhooks see that a notification
// follows every commit (internal/jobs tests that River's workers answer
// it).
const wakeSQL = `SELECT pg_notify(current_schema() || '.river_insert', p) FROM unnest($1::text[]) AS p`

// wakeups is wakeSQL's argument for the queues of these jobs, one payload
// a queue, in River's own format (so that PostgreSQL folds it with River's
// when both are sent in one transaction).
func wakeups(params []river.InsertManyParams) []string {
	var payloads []string
	seen := map[string]bool{}
	for _, p := range params {
		q := queue.Of(p)
		if !seen[q] {
			seen[q] = true
			payloads = append(payloads, fmt.Sprintf("{\"queue\": %q}", q))
		}
	}
	return payloads
}

// wakeGap is the least time between two wake-ups the waker sends. Each
// NOTIFY costs every listening session work and each wake-up a fetch, and
// a NOTIFY in a writing transaction serializes its commit with every other
// such (PostgreSQL holds one lock for them through the commit's flush): one
// in each challenge's creation cost a fifth of the burst's throughput. A
// commit within a gap is covered by the wake-up sent at its end.
const wakeGap = 5 * time.Millisecond

// A waker sends wake-ups after the transactions that queued jobs commit,
// coalescing those that come close together. Sent after the commit, a
// wake-up always finds the jobs it announces. Should the process die
// between a commit and its wake-up, the queue's poll finds the jobs.
type waker struct {
	logger  *slog.Logger
	mu      sync.Mutex
	pending map[string]bool // payloads
	kick    chan struct{}
}

func newWaker(logger *slog.Logger) *waker {
	return &waker{logger: logger, pending: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// wake asks for these payloads to be sent soon; it never blocks.
func (w *waker) wake(payloads []string) {
	w.mu.Lock()
	for _, p := range payloads {
		w.pending[p] = true
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// take empties the pending payloads.
func (w *waker) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	payloads := make([]string, 0, len(w.pending))
	for p := range w.pending {
		payloads = append(payloads, p)
	}
	clear(w.pending)
	return payloads
}

// RunWaker sends the wake-ups that committed acts ask for until ctx ends.
// The server runs one; without it, queued jobs wait for their queue's poll.
func (db *DB) RunWaker(ctx context.Context) {
	w := db.waker
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		gap := wakeGap
		if payloads := w.take(); len(payloads) > 0 {
			// Its own short deadline, not to hang on a lost connection.
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			if _, err := db.pool.Exec(sctx, wakeSQL, payloads); err != nil && ctx.Err() == nil {
				// Tried again a second later; meanwhile the queues' poll
				// finds the jobs.
				w.logger.Warn("wake job queues", "error", err)
				w.wake(payloads)
				gap = time.Second
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
	}
}

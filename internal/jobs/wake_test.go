package jobs

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

// probeArgs is a job of the push queue that only reports that it ran.
type probeArgs struct {
	N int `json:"n"`
}

func (probeArgs) Kind() string { return "wake_probe" }

func (probeArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: queue.QueuePush} }

type probeWorker struct {
	river.WorkerDefaults[probeArgs]
	ran chan int
}

func (w *probeWorker) Work(_ context.Context, job *river.Job[probeArgs]) error {
	w.ran <- job.Args.N
	return nil
}

// TestWakeStartsUnannouncedJobs checks queue.WakeSQL against River itself:
// River announces a queue's inserts at most once per cooldown, so a job
// whose insert it did not announce waits for the queue's poll; the wake-up
// the store sends with every push it queues starts it at once. River here
// announces one insert an hour and never polls, so only a notification can
// start a job.
func TestWakeStartsUnannouncedJobs(t *testing.T) {
	t.Parallel()
	tdb := pgtest.New(t)
	ctx := context.Background()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, _ := seal.NewKeyring(key)
	logger := slog.New(slog.DiscardHandler)
	db := postgres.New(tdb.Pool, keys, logger)

	probe := &probeWorker{ran: make(chan int, 10)}
	client, err := newClient(Config{DB: db, Metrics: metrics.New(), Logger: logger}, func(c *river.Config) {
		river.AddWorker(c.Workers, probe)
		c.FetchCooldown = time.Hour
		c.FetchPollInterval = 2 * time.Hour
		push := c.Queues[queue.QueuePush]
		push.FetchPollInterval = 2 * time.Hour
		c.Queues[queue.QueuePush] = push
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop(ctx) //nolint:errcheck

	insert := func(n int, wake bool) {
		t.Helper()
		tx, err := tdb.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		params := []river.InsertManyParams{{Args: probeArgs{N: n}}}
		if wake {
			if _, err := tx.Exec(ctx, queue.WakeSQL, queue.Wakeups(params)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.InsertManyTx(ctx, tx, params); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want ...int) {
		t.Helper()
		got := map[int]bool{}
		timeout := time.After(15 * time.Second) // a bound on a hang, not a measurement
		for len(got) < len(want) {
			select {
			case n := <-probe.ran:
				got[n] = true
			case <-timeout:
				t.Fatalf("jobs run: %v, want %v", got, want)
			}
		}
		for _, n := range want {
			if !got[n] {
				t.Fatalf("jobs run: %v, want %v", got, want)
			}
		}
	}

	insert(1, false) // the hour's one announced insert
	expect(1)

	insert(2, false) // unannounced: nothing starts it
	select {
	case n := <-probe.ran:
		t.Fatalf("job %d ran with no notification: River now wakes its queues by itself, and queue.WakeSQL may be needless", n)
	case <-time.After(time.Second):
	}

	insert(3, true) // the wake-up starts it, and the one left waiting
	expect(2, 3)
}

package postgres_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/challenge"
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

// deliverProbe stands in for the deliver worker: it reports a push job
// that ran as the number pushRan.
type deliverProbe struct {
	river.WorkerDefaults[queue.DeliverArgs]
	ran chan int
}

const pushRan = 100

func (w *deliverProbe) Work(context.Context, *river.Job[queue.DeliverArgs]) error {
	w.ran <- pushRan
	return nil
}

// TestWakeStartsUnannouncedJobs holds the wake-ups against River's real
// workers: River announces a queue's inserts at most once per cooldown, so
// a job whose insert it did not announce waits for the queue's poll. Here
// River announces one insert an hour and never polls, so only a wake-up
// can start a job, whether a hot act's (a pipe, through the waker) or a
// rare one's (in its transaction).
func TestWakeStartsUnannouncedJobs(t *testing.T) {
	t.Parallel()
	tdb := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, _ := seal.NewKeyring(key)
	db := postgres.New(tdb.Pool, keys, slog.New(slog.DiscardHandler))

	probe := &probeWorker{ran: make(chan int, 10)}
	workers := river.NewWorkers()
	river.AddWorker(workers, probe)
	river.AddWorker(workers, &deliverProbe{ran: probe.ran})
	// A user with a push device, whose challenges queue a push job in
	// their own statement (not through River's client).
	tenant := defaultTenant(t, db)
	app, _, err := db.CreateApplication(ctx, admin, tenant, account.NewApplication{Name: "VPN"})
	if err != nil {
		t.Fatal(err)
	}
	enrolledWith(t, db, tenant, "pat", "fcm", "pats-token")
	create := func() {
		t.Helper()
		if _, _, err := db.CreateChallenge(ctx, postgres.NewChallenge{TenantID: tenant, ApplicationID: app.ID,
			AppName: app.Name, AppMatching: app.NumberMatching, Request: challenge.Request{User: "pat"}, By: admin,
			Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	client, err := river.NewClient(riverpgxv5.New(tdb.Pool), &river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		FetchCooldown:     time.Hour,
		FetchPollInterval: 2 * time.Hour,
		Queues:            map[string]river.QueueConfig{queue.QueuePush: {MaxWorkers: 5, FetchCooldown: time.Millisecond}},
		Workers:           workers,
	})
	if err != nil {
		t.Fatal(err)
	}
	params := func(n int) []river.InsertManyParams { return []river.InsertManyParams{{Args: probeArgs{N: n}}} }
	plain := func(n int) { // River's insert, and nothing more
		t.Helper()
		if err := pgx.BeginFunc(ctx, tdb.Pool, func(tx pgx.Tx) error {
			_, err := client.InsertManyTx(ctx, tx, params(n))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	piped := func(n int) { // as resolving a challenge queues its jobs
		t.Helper()
		if err := db.EnqueuePiped(ctx, params(n)); err != nil {
			t.Fatal(err)
		}
	}
	inTx := func(n int) { // as device news does
		t.Helper()
		if err := db.Enqueue(ctx, params(n)); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want ...int) {
		t.Helper()
		var got []int
		timeout := time.After(15 * time.Second) // a bound on a hang, not a measurement
		for len(got) < len(want) {
			select {
			case n := <-probe.ran:
				got = append(got, n)
			case <-timeout:
				t.Fatalf("jobs run: %v, want %v", got, want)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("jobs run: %v, want %v", got, want)
		}
	}
	nothing := func(why string) {
		t.Helper()
		select {
		case n := <-probe.ran:
			t.Fatalf("job %d ran %s: River now wakes its queues by itself, and the wake-ups may be needless", n, why)
		case <-time.After(time.Second):
		}
	}

	// The hour's one announced insert, before anything listens: the
	// queue's first fetch, as it starts, finds the job, and no fetch is
	// left to come.
	plain(1)
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop(context.Background()) //nolint:errcheck
	db.UseQueue(client)
	go db.RunWaker(ctx)
	expect(1)
	plain(2)
	nothing("unannounced")
	piped(3) // wakes the queue: 3 runs, and 2 that was left waiting
	expect(2, 3)
	plain(4)
	nothing("unannounced")
	inTx(5)
	expect(4, 5)
	plain(6)
	nothing("unannounced")
	create() // its push job, and the waker's wake-up after its commit
	expect(6, pushRan)
	for n := 7; n < 10; n++ { // close together: the waker's gap covers them all
		piped(n)
	}
	expect(7, 8, 9)
}

func TestWakeups(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params []river.InsertManyParams
		want   []string
	}{
		{"none", nil, nil},
		{"one payload a queue", []river.InsertManyParams{
			{Args: queue.DeliverArgs{DeliveryID: "a"}}, {Args: queue.DeliverArgs{DeliveryID: "b"}},
		}, []string{`{"queue": "push"}`}},
		{"each queue", []river.InsertManyParams{
			{Args: queue.DeliverArgs{}}, {Args: queue.WebhookArgs{}}, {Args: queue.DeliverArgs{}, InsertOpts: queue.RescueOpts()},
		}, []string{`{"queue": "push"}`, `{"queue": "webhook"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := postgres.Wakeups(tt.params); !slices.Equal(got, tt.want) {
				t.Errorf("wakeups = %q, want %q", got, tt.want)
			}
		})
	}
}
